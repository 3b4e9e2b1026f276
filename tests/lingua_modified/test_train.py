"""End-to-end training with apps.main.train on CPU: loss goes down, exact resume after SIGKILL (one and two
processes), atomic saves, keep policy, stop on signal, non-finite loss, config errors, loss masking."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

LINGUA_ROOT = Path(__file__).resolve().parents[2] / "lingua_modified"
DEBUG_YAML = LINGUA_ROOT / "apps" / "main" / "configs" / "debug.yaml"
TIMEOUT = 300


def run_train(tmp_path: Path, dump_dir: Path, *overrides: str, nproc: int = 1, wait: bool = True, env=None):
    command = [sys.executable, "-m", "apps.main.train", f"config={DEBUG_YAML}", f"dump_dir={dump_dir}"]
    if nproc > 1:
        command = [
            sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
            "-m", "apps.main.train", *command[3:],
        ]  # fmt: skip
    command += [f"data.root_dir={tmp_path / 'data'}", *overrides]
    full_env = dict(os.environ, PYTHONPATH=str(LINGUA_ROOT), OMP_NUM_THREADS="1", **(env or {}))
    process = subprocess.Popen(
        command, cwd=LINGUA_ROOT, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    if not wait:
        return process
    out, err = process.communicate(timeout=TIMEOUT)
    return subprocess.CompletedProcess(command, process.returncode, out, err)


def losses(dump_dir: Path) -> dict[int, float]:
    """Per-step loss; a step logged twice (before a kill and after the resume) keeps its latest value."""
    result = {}
    for line in (dump_dir / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        result[record["global_step"]] = record["loss/out"]
    return result


def kill_when_saved(process: subprocess.Popen, checkpoint: Path) -> None:
    """SIGKILL the whole process group as soon as `checkpoint` exists (it is renamed into place when complete)."""
    deadline = time.time() + TIMEOUT
    while not checkpoint.exists():
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.time() < deadline
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)
    process.communicate()


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


@pytest.mark.parametrize("nproc", [1, 2])
def test_resume_after_sigkill_is_exact(data, nproc):
    straight, resumed = data / "straight", data / "resumed"
    args = ("steps=24", "checkpoint.dump.every=6", "checkpoint.eval.every=1000", "checkpoint.dump.keep=0")
    result = run_train(data, straight, *args, nproc=nproc)
    assert result.returncode == 0, result.stderr[-3000:]

    process = run_train(data, resumed, *args, nproc=nproc, wait=False)
    kill_when_saved(process, resumed / "checkpoints" / "0000000012")
    result = run_train(data, resumed, *args, nproc=nproc)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resumed from" in result.stdout + result.stderr

    assert losses(resumed) == losses(straight)  # bitwise: same floats, same data order
    final = "0000000024"
    for rank in range(nproc):
        name = f"train_state_{rank:05d}.json"
        a = json.loads((straight / "checkpoints" / final / name).read_text())
        b = json.loads((resumed / "checkpoints" / final / name).read_text())
        assert a == b


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


def test_a_kill_during_a_save_resumes_from_the_previous_checkpoint(data):
    dump = data / "run"
    args = ("steps=12", "checkpoint.dump.every=4", "checkpoint.eval.every=1000", "checkpoint.dump.keep=0")
    # the second save dies (SIGKILL) after its model/optimizer files are written but before it completes
    hook = (
        "import os, signal, lingua.checkpoint as c; saves = []; original = c.write_atomic\n"
        "def dying(path, text):\n"
        "    saves.append(path)\n"
        "    if 'train_state' in path and len(saves) > 1: os.kill(os.getpid(), signal.SIGKILL)\n"
        "    original(path, text)\n"
        "c.write_atomic = dying\n"
        "import runpy, sys; sys.argv = ['train'] + sys.argv[1:]\n"
        "runpy.run_module('apps.main.train', run_name='__main__')"
    )
    command = [sys.executable, "-c", hook, f"config={DEBUG_YAML}", f"dump_dir={dump}",
               f"data.root_dir={data / 'data'}", *args]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=str(LINGUA_ROOT))
    killed = subprocess.run(command, cwd=LINGUA_ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    assert killed.returncode == -signal.SIGKILL
    assert [p.name for p in (dump / "checkpoints").iterdir() if not p.name.startswith(".")] == ["0000000004"]

    result = run_train(data, dump, *args)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resumed from" in result.stdout + result.stderr and "0000000004" in result.stdout + result.stderr
    names = sorted(p.name for p in (dump / "checkpoints").iterdir())
    assert names == ["0000000004", "0000000008", "0000000012"]  # the interrupted save's leftovers are gone


def test_sigterm_saves_and_exits_cleanly(data):
    dump = data / "run"
    process = run_train(data, dump, "steps=100000", "checkpoint.dump.every=1000000", "checkpoint.eval.every=1000000",
                        wait=False)  # fmt: skip
    deadline = time.time() + TIMEOUT
    while not (dump / "metrics.jsonl").exists() or len((dump / "metrics.jsonl").read_text().splitlines()) < 3:
        assert process.poll() is None and time.time() < deadline
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGTERM)
    out, err = process.communicate(timeout=TIMEOUT)
    assert process.returncode == 0, err[-3000:]
    saved = [p.name for p in (dump / "checkpoints").iterdir()]
    assert len(saved) == 1 and int(saved[0]) >= 3


def test_a_non_finite_loss_stops_the_run_and_keeps_the_last_checkpoint(data):
    dump = data / "run"
    result = run_train(data, dump, "steps=40", "optim.lr=1e12", "optim.warmup=0", "optim.clip=1e30",
                       "checkpoint.dump.every=1", "checkpoint.dump.keep=0")  # fmt: skip
    assert result.returncode == 1
    assert "loss is nan" in result.stderr or "loss is inf" in result.stderr
    steps = [int(p.name) for p in (dump / "checkpoints").iterdir() if not p.name.startswith(".")]
    bad_step = max(losses(dump), default=0) + 1
    assert steps and max(steps) < bad_step + 1


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
