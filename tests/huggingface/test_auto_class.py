import json
import os
import subprocess
import sys
import textwrap

import torch

CHILD = textwrap.dedent(
    """
    import importlib.abc, sys

    class BlockProject(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "huggingface" or name.startswith("huggingface."):
                raise ImportError("the project is not installed in this process")

    sys.meta_path.insert(0, BlockProject())
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    folder, ids_path, out_path = sys.argv[1:4]
    config = AutoConfig.from_pretrained(folder, trust_remote_code=True)
    model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True, local_files_only=True).eval()
    assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
    assert "huggingface" not in sys.modules
    ids = torch.load(ids_path)
    with torch.no_grad():
        logits = model(ids).logits
    generated = model.generate(ids, max_new_tokens=4, num_beams=2, do_sample=False, eos_token_id=None)
    torch.save({"logits": logits, "generated": generated, "canon_set": config.canon_set}, out_path)
    """
)


def test_save_pretrained_then_trust_remote_code_in_a_process_without_the_project(tmp_path, make_model):
    model = make_model(canon_set="ABCD", qk_norm=True, rope_dim=4)
    folder = tmp_path / "model"
    model.save_pretrained(folder)
    files = set(os.listdir(folder))
    assert {"model.safetensors", "config.json", "configuration_llama_canon.py", "modeling_llama_canon.py",
            "canon_helper.py"} <= files  # fmt: skip
    auto_map = json.loads((folder / "config.json").read_text())["auto_map"]
    assert auto_map["AutoModelForCausalLM"] == "modeling_llama_canon.LlamaCanonForCausalLM"

    ids = torch.randint(3, 61, (2, 7))
    torch.save(ids, tmp_path / "ids.pt")
    (tmp_path / "child.py").write_text(CHILD)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf_home"))
    run = subprocess.run(
        [sys.executable, str(tmp_path / "child.py"), str(folder), str(tmp_path / "ids.pt"), str(tmp_path / "out.pt")],
        cwd=tmp_path, env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    child = torch.load(tmp_path / "out.pt")
    assert child["canon_set"] == "ABCD"
    with torch.no_grad():
        torch.testing.assert_close(child["logits"], model(ids).logits)
    expected = model.generate(ids, max_new_tokens=4, num_beams=2, do_sample=False, eos_token_id=None)
    assert torch.equal(child["generated"], expected)
