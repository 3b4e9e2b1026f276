"""benchmarks/gpu_check.sh on a machine without a GPU: one line, exit 0; its embedded Python parses."""

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.sh"


def test_without_a_gpu_it_says_so_in_one_line_and_exits_0(tmp_path):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", PYTHON=sys.executable, GPU_CHECK_DIR=str(tmp_path / "logs"))
    result = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "gpu_check: no CUDA GPU here (torch.cuda.is_available() is False); nothing to check"
    ]
    assert not (tmp_path / "logs").exists()  # nothing started


def test_the_script_and_its_python_parse():
    assert subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True).returncode == 0
    for block in re.findall(r"<<'EOF'; then\n(.*?)\nEOF\n", SCRIPT.read_text(), re.S):
        ast.parse(block)
