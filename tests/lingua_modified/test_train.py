"""End-to-end training with apps.main.train on CPU: loss goes down, the run layout, keep policy, two processes with
FSDP, config errors, loss masking. Kills, signals, damaged checkpoints, full disks and non-finite losses, each
compared with an uninterrupted run, are in tests/faults."""

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import torch

LINGUA_ROOT = Path(__file__).resolve().parents[2] / "lingua_modified"
DEBUG_YAML = LINGUA_ROOT / "apps" / "main" / "configs" / "debug.yaml"
TIMEOUT = 300


def run_train(tmp_path: Path, dump_dir: Path, *overrides: str, nproc: int = 1):
    command = [sys.executable, "-m", "apps.main.train", f"config={DEBUG_YAML}", f"dump_dir={dump_dir}"]
    if nproc > 1:
        command = [
            sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
            "-m", "apps.main.train", *command[3:],
        ]  # fmt: skip
    command += [f"data.root_dir={tmp_path / 'data'}", *overrides]
    env = dict(os.environ, PYTHONPATH=str(LINGUA_ROOT), OMP_NUM_THREADS="1")
    return subprocess.run(command, cwd=LINGUA_ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUT)


def losses(dump_dir: Path) -> dict[int, float]:
    """Per-step loss of metrics.jsonl."""
    return {
        r["global_step"]: r["loss/out"] for r in map(json.loads, (dump_dir / "metrics.jsonl").read_text().splitlines())
    }


def test_training_lowers_the_loss_and_writes_the_run_layout(data):
    dump = data / "run"
    result = run_train(data, dump, "steps=30")
    assert result.returncode == 0, result.stderr[-3000:]
    per_step = losses(dump)
    assert sorted(per_step) == list(range(1, 31))
    assert per_step[30] < 0.5 * per_step[1]
    assert (dump / "config.yaml").exists() and (dump / "train.log").exists()
    line = json.loads((dump / "metrics.jsonl").read_text().splitlines()[-1])
    assert list(line)[:3] == ["global_step", "acc_step", "speed/wps"] and line["created_at"].endswith("+00:00")
    assert line["optim/total_tokens"] == 30 * 4 * 64
    # dump every 10 keep 2, eval every 20 keep all; the final step 30 is on the dump grid
    assert sorted(p.name for p in (dump / "checkpoints").iterdir()) == ["0000000020", "0000000030"]
    folder = dump / "checkpoints" / "0000000030"
    assert json.loads((folder / "params.json").read_text())["model"]["canon_set"] == "ABCD"
    assert json.loads((folder / "train_state_00000.json").read_text())["step"] == 30


def test_two_processes_full_shard_train_checkpoint_and_consolidate(data):
    dump = data / "run"
    result = run_train(data, dump, "steps=12", "distributed.fsdp_type=full_shard", nproc=2)
    assert result.returncode == 0, result.stderr[-3000:]
    assert losses(dump)[12] < losses(dump)[1]
    folder = dump / "checkpoints" / "0000000012"
    assert {p.name for p in folder.iterdir()} >= {".metadata", "params.json", "train_state_00000.json",
                                                   "train_state_00001.json"}  # fmt: skip
    consolidate = subprocess.run(
        [sys.executable, "-m", "lingua.checkpoint", "consolidate", str(folder)],
        cwd=LINGUA_ROOT, capture_output=True, text=True, timeout=TIMEOUT,
    )  # fmt: skip
    assert consolidate.returncode == 0, consolidate.stderr
    state = torch.load(folder / "consolidated" / "consolidated.pth", weights_only=True)["model"]
    assert state["tok_embeddings.weight"].shape == (258, 64)  # full, unsharded tensors
    assert state["layers.1.feed_forward.canonD.weight"].shape[-1] == 4

    from huggingface import LlamaCanonForCausalLM

    model = LlamaCanonForCausalLM.from_pretrained(str(folder), variant="consolidated")
    assert model.config.num_hidden_layers == 2 and model.config.canon_set == "ABCD"


def test_config_errors_are_one_clear_line_and_write_nothing(data):
    dump = data / "run"
    result = run_train(data, dump, "model.dimm=3")
    assert result.returncode == 1
    assert "unknown config key 'model.dimm'; did you mean 'model.dim'?" in result.stderr
    result = run_train(data, dump, "data.sources={missing: 1.0}")
    assert result.returncode == 1 and "missing" in result.stderr
    assert not dump.exists()


def test_resume_at_or_past_the_last_step_finishes_cleanly(data):
    dump = data / "run"
    assert run_train(data, dump, "steps=5").returncode == 0
    again = run_train(data, dump, "steps=5")
    assert again.returncode == 0, again.stderr[-3000:]
    assert sorted(p.name for p in (dump / "checkpoints").iterdir()) == ["0000000005"]


def test_labels_mask_the_loss(tmp_path):
    """Records {"tokens", "labels"}: only labelled positions are trained. The context is random noise and the one
    labelled token is predictable, so a masked run ends far below an unmasked one (which also fits the noise)."""
    rng = random.Random(0)
    for name, masked in (("masked", True), ("plain", False)):
        source = tmp_path / name / "data" / "debug"
        source.mkdir(parents=True)
        with open(source / "debug.chunk.00.jsonl", "w") as f:
            for _ in range(600):
                tokens = [9999, *(rng.randrange(100, 200) for _ in range(7)), 9000, 42]
                labels = [0] * (len(tokens) - 1) + [1] if masked else [1] * len(tokens)
                f.write(json.dumps({"tokens": tokens, "labels": labels}) + "\n")
    final = {}
    for name in ("masked", "plain"):
        dump = tmp_path / name / "run"
        result = run_train(tmp_path / name, dump, "steps=60", "data.tokenizer.name=tokens", "data.add_bos=false",
                           "data.add_eos=false", "optim.lr=1e-2")  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
        final[name] = losses(dump)[60]
    assert final["masked"] < 0.3 * final["plain"]
