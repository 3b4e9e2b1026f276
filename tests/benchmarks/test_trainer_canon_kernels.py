"""benchmarks/trainer_canon.py --kernels: under torch.compile the Canon sites fold into the loops around them.

The script compiles one TransformerBlock three ways and counts what inductor generates. The guarantee: with Canon-ABCD
in the shifted formulation the block has exactly Llama's kernels and library calls, forward and backward, while the
same block with the Canon sites forced onto the eager Functions has more (which is what the count would show if the
compiled path fell back to opaque kernels)."""

import re
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "trainer_canon.py"
ROW = re.compile(r"^(.+?)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)$")


def test_compiled_canon_sites_add_no_kernel_to_a_block():
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--kernels"], capture_output=True, text=True, timeout=600, check=True
    )
    rows = {}
    for line in result.stdout.splitlines():
        match = ROW.match(line.strip())
        if match:
            rows[match.group(1)] = tuple(int(n) for n in match.groups()[1:])
    llama = rows["Llama (no Canon)"]
    ours = rows["LlamaCanon-ABCD, shifted formulation (ours)"]
    opaque = rows["LlamaCanon-ABCD, eager Functions in the graph"]
    assert ours == llama, result.stdout
    assert opaque[0] > llama[0] and opaque[2] > llama[2], result.stdout
