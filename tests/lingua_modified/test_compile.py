"""The trainer's model under torch.compile: Canon sites take canon.py's shifted formulation there, which must compute
what the eager paths compute (loss and every gradient), and a compiled run must still resume exactly. Also: the
trainer's library imports no transformers (its Canon layer is the torch-only lingua/canon.py)."""

import json
import os
import shutil
import subprocess
import sys

import torch

from apps.main.transformer import LMTransformer, LMTransformerArgs
from lingua import canon

from .test_train import LINGUA_ROOT, losses, run_train


def test_the_trainer_library_imports_no_transformers():
    code = (
        "import sys; import lingua.transformer, lingua.training, apps.main.train; "
        "assert 'transformers' not in sys.modules, 'transformers imported'"
    )
    env = dict(os.environ, PYTHONPATH=str(LINGUA_ROOT))
    result = subprocess.run([sys.executable, "-c", code], cwd=LINGUA_ROOT, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]


def test_compiled_model_equals_eager_loss_and_gradients(monkeypatch):
    """Canon kernel 3 on all four sites with QK-norm, partial RoPE and GQA: the compiled step's loss and gradients
    equal the eager step's, which runs the chunked recomputing Functions."""
    args = LMTransformerArgs(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, hidden_dim=48, vocab_size=61,
                             canon_set="ABCD", canon_kernel=3, qk_norm=True, rope_dim=4)  # fmt: skip
    torch.manual_seed(0)
    model = LMTransformer(args)
    model.init_weights()
    tokens = torch.randint(0, 61, (2, 17))
    seen = []
    real_choose = canon.choose_path
    monkeypatch.setattr(canon, "choose_path", lambda *a, **k: seen.append(real_choose(*a, **k)) or seen[-1])

    def loss_and_grads(module):
        model.zero_grad(set_to_none=True)
        loss = module(tokens, tokens.roll(-1, 1))
        loss.backward()
        return [loss.detach()] + [p.grad.clone() for p in model.parameters()]

    eager = loss_and_grads(model)
    assert set(seen) == {"recompute"}
    seen.clear()
    torch._dynamo.reset()
    compiled = loss_and_grads(torch.compile(model))
    assert set(seen) == {"shifted"}  # traced once, under compile
    for a, b in zip(compiled, eager, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_compiled_training_resumes_exactly(data):
    """Six compiled steps in one go, and the same run restarted from its step-3 checkpoint: equal losses."""
    dump = data / "run"
    common = ["steps=6", "checkpoint.dump.every=3", "checkpoint.eval.every=1000", "distributed.compile=true",
              "data.load_async=false"]  # fmt: skip
    result = run_train(data, dump, *common)
    assert result.returncode == 0, result.stderr[-3000:]
    straight = losses(dump)
    assert sorted(straight) == list(range(1, 7))
    # back to the state after step 3: its checkpoint is the newest, the log stops there
    shutil.rmtree(dump / "checkpoints" / "0000000006")
    records = (dump / "metrics.jsonl").read_text().splitlines()
    (dump / "metrics.jsonl").write_text("".join(r + "\n" for r in records if json.loads(r)["global_step"] <= 3))
    result = run_train(data, dump, *common)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "0000000003" in result.stderr + (dump / "train.log").read_text()  # resumed, not restarted
    resumed = losses(dump)
    assert resumed == straight
