"""save_pretrained copies the flat files; a process without this project loads them with trust_remote_code."""

import json
import os
import subprocess
import sys
import textwrap

import torch

from .conftest import ARCHS

CHILD = textwrap.dedent(
    """
    import importlib.abc, sys

    class BlockProject(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("huggingface", "huggingface_linear"):
                raise ImportError("the project is not installed in this process")

    sys.meta_path.insert(0, BlockProject())
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    ids_path, out_path, folders = sys.argv[1], sys.argv[2], sys.argv[3:]
    ids = torch.load(ids_path)
    results = []
    for folder in folders:
        config = AutoConfig.from_pretrained(folder, trust_remote_code=True)
        model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True, local_files_only=True).eval()
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        with torch.no_grad():
            logits = model(ids).logits
        generated = model.generate(ids, max_new_tokens=4, num_beams=2, do_sample=False, eos_token_id=None)
        results.append({"logits": logits, "generated": generated, "model_type": config.model_type})
    assert not any(name.split(".")[0] in ("huggingface", "huggingface_linear") for name in sys.modules)
    torch.save(results, out_path)
    """
)
FILES = {
    "gla": ("configuration_gla_canon.py", "modeling_gla_canon.py"),
    "gdn": ("configuration_gated_deltanet_canon.py", "modeling_gated_deltanet_canon.py"),
    "mamba2": ("configuration_mamba2_canon.py", "modeling_mamba2_canon.py"),
}
SHARED = {"canon_fields.py", "canon_helper.py", "linear_common.py", "linear_recurrences.py"}


def test_save_pretrained_then_trust_remote_code_in_a_process_without_the_project(tmp_path, make_model):
    models, folders = [], []
    for arch in ARCHS:
        model = make_model(arch, "AbbCD")
        folder = tmp_path / arch
        model.save_pretrained(folder)
        files = set(os.listdir(folder))
        assert {"model.safetensors", "config.json", *FILES[arch]} | SHARED <= files, files
        auto_map = json.loads((folder / "config.json").read_text())["auto_map"]
        assert auto_map["AutoModelForCausalLM"] == FILES[arch][1][:-3] + "." + type(model).__name__
        models.append(model)
        folders.append(str(folder))

    ids = torch.randint(3, 37, (2, 7))
    torch.save(ids, tmp_path / "ids.pt")
    (tmp_path / "child.py").write_text(CHILD)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf_home"), OMP_NUM_THREADS="1")
    run = subprocess.run(
        [sys.executable, str(tmp_path / "child.py"), str(tmp_path / "ids.pt"), str(tmp_path / "out.pt"), *folders],
        cwd=tmp_path, env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    for model, child in zip(models, torch.load(tmp_path / "out.pt"), strict=True):
        assert child["model_type"] == model.config.model_type
        with torch.no_grad():
            torch.testing.assert_close(child["logits"], model(ids).logits)
        expected = model.generate(ids, max_new_tokens=4, num_beams=2, do_sample=False, eos_token_id=None)
        assert torch.equal(child["generated"], expected)
