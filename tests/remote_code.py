"""The remote-code round trip both model families are held to: save_pretrained, then a fresh process in which the
project is not importable loads the folder with trust_remote_code=True and must give the saved model's logits, and
cached generation must equal a cache-free greedy loop token for token."""

import os
import subprocess
import sys
import textwrap

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROJECT_PACKAGES = ("huggingface", "huggingface_linear")

CHILD = textwrap.dedent(
    """
    import importlib.abc, importlib.util, os, sys

    PROJECT = ("huggingface", "huggingface_linear")
    installed = any(importlib.util.find_spec(name) for name in PROJECT)
    assert not (installed and os.environ.get("COMPAT_MATRIX")), "the compatibility environment has the project"


    class BlockProject(importlib.abc.MetaPathFinder):  # where it is installed, it must not be used
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in PROJECT:
                raise ImportError("the project is not available in this process")


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
            loop = ids
            for _ in range(6):  # greedy without any cache: the full sequence every step
                step = model(loop, use_cache=False).logits[:, -1].argmax(-1, keepdim=True)
                loop = torch.cat([loop, step], dim=1)
        greedy = model.generate(ids, max_new_tokens=6, do_sample=False, use_cache=True, eos_token_id=None)
        beams = model.generate(ids, max_new_tokens=4, num_beams=2, do_sample=False, eos_token_id=None)
        results.append(dict(logits=logits, loop=loop, greedy=greedy, beams=beams, model_type=config.model_type))
    assert not any(name.split(".")[0] in PROJECT for name in sys.modules)
    torch.save(results, out_path)
    """
)


def child_environment(tmp_path):
    """This environment without the checkout on the path (the project must come from the saved folders only)."""
    env = dict(os.environ)
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and os.path.abspath(p) != REPO]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf_home"), OMP_NUM_THREADS="1")
    return env


def check_remote_code_round_trip(tmp_path, models, vocab):
    """models: {name: model}; each is saved under tmp_path/name and reloaded in a child process."""
    folders = []
    for name, model in models.items():
        model.save_pretrained(tmp_path / name)
        folders.append(str(tmp_path / name))
    ids = torch.randint(3, vocab, (2, 7))
    torch.save(ids, tmp_path / "ids.pt")
    (tmp_path / "child.py").write_text(CHILD)
    run = subprocess.run(
        [sys.executable, str(tmp_path / "child.py"), str(tmp_path / "ids.pt"), str(tmp_path / "out.pt"), *folders],
        cwd=tmp_path, env=child_environment(tmp_path), capture_output=True, text=True,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    for model, child in zip(models.values(), torch.load(tmp_path / "out.pt"), strict=True):
        assert child["model_type"] == model.config.model_type
        with torch.no_grad():
            torch.testing.assert_close(child["logits"], model(ids).logits)
        assert child["greedy"].tolist() == child["loop"].tolist(), "cached generation differs from the cache-free loop"
        expected = model.generate(ids, max_new_tokens=4, num_beams=2, do_sample=False, eos_token_id=None)
        assert torch.equal(child["beams"], expected)
