"""Faults injected into real training runs (real processes, signals and files), each ending in a comparison with an
uninterrupted run of the same config: per-step losses bitwise equal, the final train states (step, data loader,
scheduler) equal and the final consolidated weights bitwise equal.

Every case first checks that its fault really happened (the exit status, the fault hook's own note, the checkpoint
being written absent) and that the resumed process started where it should: the first step it logs is the one after
the checkpoint it resumed from, so a run that silently restarts from step 0 fails.

Kill points are drawn from a seeded RNG (SEED) once, at import, and appear in the test ids.
"""

import json
import random
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from .conftest import (
    NODES,
    ONE,
    TWO,
    TWO_LONG,
    assert_resumed_exactly,
    checkpoint_steps,
    metric_lines,
    run,
)

SEED = 1404
RNG = random.Random(SEED)


def kill_steps(setup, count):
    """Steps to kill in, one drawn in each of the first `count` checkpoint intervals after the first checkpoint (so
    resuming differs from restarting, and each point resumes from a different checkpoint), never the last step."""
    starts = range(setup.every, setup.steps, setup.every)[:count]
    return [RNG.randrange(start + 2, min(start + setup.every, setup.steps - 1) + 1) for start in starts]


KILLS = [(ONE, k) for k in kill_steps(ONE, 3)] + [(TWO, *kill_steps(TWO, 1)), (NODES, *kill_steps(NODES, 1))]
SAVES = [(ONE, RNG.choice([2, 3])), (TWO, 2), (NODES, 2)]  # which save dies: the n-th one, at step n * every
PREFETCH = RNG.randint(22, 24)  # the loader's n-th batch (see test_sigkill_in_the_data_loader_process)
STOPS = [(name, RNG.choice([k for k in range(ONE.every + 1, ONE.steps) if k % ONE.every])) for name in ("term", "usr2")]
NAN_STEP = RNG.choice(range(ONE.every + 1, ONE.steps + 1))
EVAL_KILL = RNG.choice([2, 3])  # the n-th evaluation (of step 6 n) dies
# preemption of a 2-process run: every rank gets the signal at the same step, off the checkpoint grid
STOPS += [(name, RNG.choice([k for k in range(TWO.every + 1, TWO.steps) if k % TWO.every])) for name in ("term",)]
STOP_SETUPS = [ONE, ONE, TWO]
PREFETCH_TWO = RNG.randint(28, 30)  # a rank's loader batch in the 32-step 2-process run


def ids(cases):
    return [f"{setup.name}-{point}" for setup, point in cases]


def assert_killed(outcome, fault):
    assert outcome.fired, f"the fault {fault} never fired:\n{outcome.stderr[-3000:]}"
    assert outcome.returncode == -signal.SIGKILL, f"exit status {outcome.returncode}:\n{outcome.stderr[-3000:]}"


def resume(setup, dump, data, reference, resumed_from):
    lines_before = len(metric_lines(dump))
    outcome = run(setup, dump, data)
    assert outcome.returncode == 0, outcome.stderr[-3000:]
    assert f"resumed from {dump / 'checkpoints' / f'{resumed_from:010d}'}" in outcome.output
    assert_resumed_exactly(setup, dump, reference(setup), resumed_from, lines_before)
    return outcome


@pytest.mark.parametrize("setup, kill_at", KILLS, ids=ids(KILLS))
def test_sigkill_at_a_step(setup, kill_at, tmp_path, fault_data, reference):
    dump = tmp_path / "run"
    outcome = run(setup, dump, fault_data, fault=f"kill:{kill_at}")
    assert_killed(outcome, f"kill:{kill_at}")
    # killed inside step kill_at: every checkpoint before it was written, none after
    assert checkpoint_steps(dump) == list(range(setup.every, kill_at, setup.every))
    assert [step for step, _ in metric_lines(dump)] == list(range(1, kill_at))
    resume(setup, dump, fault_data, reference, (kill_at - 1) // setup.every * setup.every)


@pytest.mark.parametrize("setup, nth", SAVES, ids=ids(SAVES))
def test_sigkill_during_a_checkpoint_save(setup, nth, tmp_path, fault_data, reference):
    dump = tmp_path / "run"
    outcome = run(setup, dump, fault_data, fault=f"save:{nth}")
    assert_killed(outcome, f"save:{nth}")
    dying = nth * setup.every
    # the save in progress wrote its model and optimizer files into its temporary folder, never under its step name
    assert checkpoint_steps(dump) == list(range(setup.every, dying, setup.every))
    partial = dump / "checkpoints" / f".partial-{dying:010d}"
    assert (partial / ".metadata").exists() and not (dump / "checkpoints" / f"{dying:010d}").exists()
    resume(setup, dump, fault_data, reference, dying - setup.every)
    assert not partial.exists()  # the interrupted save's leftovers are gone


@pytest.mark.parametrize(
    "setup, nth, every",
    [(ONE, PREFETCH, 3), (TWO_LONG, PREFETCH_TWO, 4)],
    ids=ids([(ONE, PREFETCH), (TWO_LONG, PREFETCH_TWO)]),
)
def test_sigkill_in_the_data_loader_process(setup, nth, every, tmp_path, fault_data, reference):
    """A background loader (in a 2-process run: the first one to get there) kills the run as it makes its n-th batch.
    It runs up to 16 batches ahead of training, so this lands somewhere after step n - 18, when a checkpoint (every
    3 or 4 steps) exists."""
    dump, checkpoints = tmp_path / "run", (f"checkpoint.dump.every={every}",)
    outcome = run(setup, dump, fault_data, *checkpoints, fault=f"prefetch:{nth}")
    assert_killed(outcome, f"prefetch:{nth}")
    steps = checkpoint_steps(dump)
    assert steps and steps[-1] < setup.steps, f"checkpoints {steps}: the kill did not land inside the run"
    lines_before = len(metric_lines(dump))
    outcome = run(setup, dump, fault_data, *checkpoints)
    assert outcome.returncode == 0, outcome.stderr[-3000:]
    assert_resumed_exactly(setup, dump, reference(setup), steps[-1], lines_before)


@pytest.mark.parametrize(
    "setup, name, stop_at",
    [(setup, *stop) for setup, stop in zip(STOP_SETUPS, STOPS, strict=True)],
    ids=[f"{setup.name}-{name}-{k}" for setup, (name, k) in zip(STOP_SETUPS, STOPS, strict=True)],
)
def test_preemption_signal_checkpoints_exits_cleanly_and_resumes(setup, name, stop_at, tmp_path, fault_data, reference):
    dump = tmp_path / "run"
    outcome = run(setup, dump, fault_data, fault=f"{name}:{stop_at}")
    assert outcome.fired and outcome.returncode == 0, outcome.stderr[-3000:]
    assert f"received signal SIG{name.upper()}" in outcome.output
    assert f"stopped on request at step {stop_at}" in outcome.output
    # the signal's own checkpoint, off the every-6 grid, and nothing after it
    assert checkpoint_steps(dump) == [*range(setup.every, stop_at, setup.every), stop_at]
    assert metric_lines(dump)[-1][0] == stop_at
    resume(setup, dump, fault_data, reference, stop_at)


def corrupt(folder: Path, how: str) -> str:
    """Damage a checkpoint folder; returns the reason the trainer should give for skipping it."""
    if how == "truncated-distcp":
        [shard] = folder.glob("*.distcp")
        size = shard.stat().st_size
        with open(shard, "r+b") as f:
            f.truncate(size // 2)
        return f"{shard.name} is truncated ({size // 2} bytes"
    if how == "missing-metadata":
        (folder / ".metadata").unlink()
        return "no .metadata file"
    (folder / "train_state_00000.json").write_text('{"step": 12, "acc_step": 0, "data_loader_st')
    return "train_state_00000.json does not parse"


@pytest.mark.parametrize("how", ["truncated-distcp", "missing-metadata", "bad-train-state"])
def test_a_corrupted_newest_checkpoint_is_skipped_with_the_reason(how, tmp_path, fault_data, reference):
    """A run stopped after step 12 whose newest checkpoint (12) was damaged afterwards: the restart resumes from
    6, says why it skipped 12, and keeps the damaged folder aside."""
    setup, ref = ONE, reference(ONE)
    dump = tmp_path / "run"
    shutil.copytree(ref.dump, dump, ignore=shutil.ignore_patterns("consolidated"))
    for step in checkpoint_steps(dump):
        if step > 12:
            shutil.rmtree(dump / "checkpoints" / f"{step:010d}")
    metrics = dump / "metrics.jsonl"
    metrics.write_text("".join(metrics.read_text().splitlines(keepends=True)[:12]))
    reason = corrupt(dump / "checkpoints" / "0000000012", how)

    outcome = resume(setup, dump, fault_data, reference, 6)
    assert f"skipped checkpoint {dump / 'checkpoints' / '0000000012'}: {reason}" in outcome.output
    assert (dump / "checkpoints" / "corrupted-0000000012").is_dir()


def test_a_nan_loss_stops_the_run_and_keeps_every_checkpoint_before_it(tmp_path, fault_data, reference):
    setup, ref, dump = ONE, reference(ONE), tmp_path / "run"
    outcome = run(setup, dump, fault_data, fault=f"nan:{NAN_STEP}")
    assert outcome.fired and outcome.returncode == 1, outcome.stderr[-3000:]
    assert f"error: loss is nan at step {NAN_STEP}" in outcome.stderr and "Traceback" not in outcome.stderr
    # nothing of step NAN_STEP was logged or saved; every earlier checkpoint is byte for byte the reference's
    assert [step for step, _ in metric_lines(dump)] == list(range(1, NAN_STEP))
    assert checkpoint_steps(dump) == list(range(setup.every, NAN_STEP, setup.every))
    for step in checkpoint_steps(dump):
        assert_same_files(dump / "checkpoints" / f"{step:010d}", ref.dump / "checkpoints" / f"{step:010d}")


def assert_same_files(folder: Path, reference_folder: Path) -> None:
    """The checkpoint is complete and its data files are byte for byte the reference's (.metadata and params.json
    hold the run's own paths)."""
    from lingua.checkpoint import checkpoint_problem

    assert checkpoint_problem(folder, 0) is None
    names = sorted(p.name for p in reference_folder.iterdir() if p.is_file())
    assert names == sorted(p.name for p in folder.iterdir() if p.is_file())
    for name in names:
        if name not in (".metadata", "params.json"):
            assert (folder / name).read_bytes() == (reference_folder / name).read_bytes(), f"{folder / name} differs"


@pytest.fixture
def small_disk(tmp_path):
    """mount(size) -> a fresh tmpfs of that size under tmp_path (root only), unmounted afterwards."""
    mounted = []

    def mount(size: str) -> Path:
        target = tmp_path / f"disk{len(mounted)}"
        target.mkdir()
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(target)],
                                capture_output=True, text=True)  # fmt: skip
        if result.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({result.stderr.strip() or 'mount failed'}); needs root")
        mounted.append(target)
        return target

    yield mount
    for target in mounted:
        subprocess.run(["umount", "-l", str(target)], check=False)


@pytest.mark.parametrize("how", ["before", "during"])
def test_a_full_disk_stops_with_one_clear_error_and_keeps_earlier_checkpoints(how, small_disk, fault_data, reference):
    """before: a 6 MB disk holds two checkpoints (2.3 MB each); the third is refused before anything is written.
    during: the disk fills up while the second save writes (the fault hook takes all the free space)."""
    setup, ref = ONE, reference(ONE)
    disk = small_disk("6m" if how == "before" else "32m")
    dump = disk / "run"
    outcome = run(setup, dump, fault_data, fault="fill:2" if how == "during" else "")
    assert outcome.returncode == 1, outcome.stderr[-3000:]
    failed = 3 if how == "before" else 2
    wanted = f"error: {'not enough space to' if how == 'before' else 'could not'} save checkpoint"
    error_lines = [line for line in outcome.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and error_lines[0].startswith(wanted), outcome.stderr[-3000:]
    assert f"{dump / 'checkpoints' / f'{failed * setup.every:010d}'}" in error_lines[0]
    assert (
        f"{dump / 'checkpoints'} has " in error_lines[0] and " MB free and a checkpoint needs about " in error_lines[0]
    )
    if how == "during":
        assert "the disk is full" in error_lines[0] and outcome.fired
    assert "Traceback" not in outcome.stderr
    assert checkpoint_steps(dump) == list(range(setup.every, failed * setup.every, setup.every))
    assert not list((dump / "checkpoints").glob(".partial-*"))
    for step in checkpoint_steps(dump):
        assert_same_files(dump / "checkpoints" / f"{step:010d}", ref.dump / "checkpoints" / f"{step:010d}")


EVAL = ("eval.harness=null", "eval.generator.dtype=fp32", "eval.generator.device=cpu")


def validation_steps(dump: Path) -> list[int]:
    path = dump / "metrics.validation.jsonl"
    return [json.loads(line)["global_step"] for line in path.read_text().splitlines()] if path.exists() else []


@pytest.mark.parametrize("setup, nth", [(ONE, EVAL_KILL), (TWO, 2)], ids=ids([(ONE, EVAL_KILL), (TWO, 2)]))
def test_sigkill_during_an_in_training_evaluation_then_the_evaluation_is_redone(setup, nth, tmp_path, fault_data,
                                                                                reference):  # fmt: skip
    """An evaluation (validation NLL) with every checkpoint; the n-th one is killed after loading its checkpoint. The
    resumed run evaluates that step again, then trains on as if nothing happened."""
    dump, every = tmp_path / "run", setup.every
    evaluations = (f"checkpoint.eval.every={every}", *EVAL)
    outcome = run(setup, dump, fault_data, *evaluations, fault=f"evalkill:{nth}")
    assert_killed(outcome, f"evalkill:{nth}")
    killed_at = nth * every
    assert checkpoint_steps(dump) == list(range(every, killed_at + 1, every))  # saved before evaluating
    assert validation_steps(dump) == list(range(every, killed_at, every))
    lines_before = len(metric_lines(dump))
    outcome = run(setup, dump, fault_data, *evaluations)
    assert outcome.returncode == 0, outcome.stderr[-3000:]
    assert f"step {killed_at} has no evaluation results; evaluating" in outcome.output
    assert validation_steps(dump) == list(range(every, setup.steps + 1, every))  # each once, the killed one redone
    assert_resumed_exactly(setup, dump, reference(setup), killed_at, lines_before)


# ----------------------------------------------------------------------------------------------------------------
# Bad data: a clear error naming the file (and line), or a counted skip that leaves the data order as if the bad line
# were not there
# ----------------------------------------------------------------------------------------------------------------


def text_lines(words: str, count: int) -> list[bytes]:
    return [json.dumps({"text": f"{words} {i} {words}."}).encode() for i in range(count)]


def write_source(root: Path, files: dict[str, list[bytes]]) -> Path:
    for name, lines in files.items():
        path = root / "debug" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"".join(line + b"\n" for line in lines))
    return root


def assert_one_error(outcome, message: str) -> None:
    assert outcome.returncode == 1, outcome.stderr[-3000:]
    errors = [line for line in outcome.stderr.splitlines() if line.startswith("error:")]
    assert errors == [errors[0]] and errors[0].startswith(f"error: {message}"), outcome.stderr[-3000:]
    assert "Traceback" not in outcome.stderr


def test_token_ids_outside_the_vocabulary_are_one_error_naming_file_and_line(tmp_path):
    lines = [json.dumps({"tokens": [1, 2, 3, 4] * 8}).encode()] * 2 + [json.dumps({"tokens": [5, 64, 6]}).encode()]
    root = write_source(tmp_path / "data", {"debug.chunk.00.jsonl": lines * 20})
    outcome = run(ONE, tmp_path / "run", root, "data.tokenizer.name=tokens", "data.tokenizer.vocab_size=64")
    chunk = root / "debug" / "debug.chunk.00.jsonl"
    assert_one_error(outcome, f"{chunk}:3: token id 64 is outside the tokenizer's vocabulary 0..63")


def test_a_source_of_empty_files_is_one_error(tmp_path):
    root = write_source(tmp_path / "data", {"debug.chunk.00.jsonl": [], "debug.chunk.01.jsonl": []})
    assert_one_error(run(ONE, tmp_path / "run", root), "no usable line in a whole pass over")


def test_a_malformed_line_is_an_error_when_strict(tmp_path):
    root = write_source(tmp_path / "data", {"debug.chunk.00.jsonl": text_lines("alpha", 4) + [b'{"text": "\xff\xfe"}']})
    outcome = run(ONE, tmp_path / "run", root, "data.error_on_malformed=true")
    assert_one_error(outcome, f"{root / 'debug' / 'debug.chunk.00.jsonl'}:5: malformed line")


def batches_of(root: Path, count: int) -> list:
    from lingua.data import BatchStream, DataArgs, init_dataloader_state_from_args

    args = DataArgs(root_dir=str(root), sources={"debug": 1.0}, batch_size=2, seq_len=16, prefetch_size=2)
    stream = BatchStream(init_dataloader_state_from_args(args, 0, 1), strict=False)
    try:
        return [next(stream) for _ in range(count)]
    finally:
        stream.close()


def test_skipped_lines_and_empty_files_leave_the_data_order_unchanged(tmp_path, caplog):
    """Non-UTF-8 bytes, bad JSON and an empty file among good ones: the batches are those of the same data without
    them (over several epochs), and every skipped line is counted in the loader state and logged as file:line."""
    good = [text_lines("alpha", 30), text_lines("beta", 20)]
    clean = write_source(tmp_path / "clean", {"debug.chunk.00.jsonl": good[0], "debug.chunk.01.jsonl": good[1]})
    bad = good[0][:7] + [b'{"text": "caf\xe9"}'] + good[0][7:] + [b"{not json"]
    dirty = write_source(
        tmp_path / "dirty",
        {"debug.chunk.00.jsonl": bad, "debug.chunk.01.jsonl": [], "debug.chunk.02.jsonl": good[1]},
    )
    expected, got = batches_of(clean, 60), batches_of(dirty, 60)
    for (tokens, mask, _), (dirty_tokens, dirty_mask, _) in zip(expected, got, strict=True):
        assert (tokens == dirty_tokens).all() and (mask == dirty_mask).all()
    reader = got[-1][2]["it_state"]["it_state"]["it_state"]["source_to_state"]["debug"]
    assert reader["current_iter"] >= 2 and reader["skipped"] >= 2 * reader["current_iter"]
    chunk = dirty / "debug" / "debug.chunk.00.jsonl"
    assert f"{chunk}:8: skipped malformed line" in caplog.text and f"{chunk}:32: skipped malformed line" in caplog.text


def test_a_chunk_deleted_mid_run_is_one_error_and_resuming_without_it_too(tmp_path):
    """The loader deletes the second chunk while it reads the first; when it gets there the run stops with one error
    naming the file. Restarting then refuses to resume a data order that needs the missing file."""
    # about 60 batches in the first chunk: the loader, up to 16 batches ahead, reaches the second after step 40
    root = write_source(tmp_path / "data", {"debug.chunk.00.jsonl": text_lines("alpha", 1000),
                                            "debug.chunk.01.jsonl": text_lines("beta", 100)})  # fmt: skip
    gone = root / "debug" / "debug.chunk.01.jsonl"
    dump = tmp_path / "run"
    outcome = run(ONE, dump, root, "steps=200", fault="unlink:1", env={"FAULT_FILE": str(gone)})
    assert outcome.fired and not gone.exists()
    assert_one_error(outcome, f"data file {gone} is gone: it was there when this data order was made")
    assert checkpoint_steps(dump), "the run stopped before its first checkpoint"
    assert_one_error(run(ONE, dump, root, "steps=200"), f"{gone} (in the saved loader state) is missing")


def test_a_checkpoint_damaged_for_one_rank_only_is_skipped_by_every_rank(tmp_path, fault_data, reference):
    """Two processes; rank 1's train state of the newest checkpoint (8) is broken, rank 0's is fine: both ranks
    agree to skip it and resume from 4."""
    setup, ref = TWO, reference(TWO)
    dump = tmp_path / "run"
    shutil.copytree(ref.dump, dump, ignore=shutil.ignore_patterns("consolidated"))
    shutil.rmtree(dump / "checkpoints" / f"{setup.steps:010d}")
    metrics = dump / "metrics.jsonl"
    metrics.write_text("".join(metrics.read_text().splitlines(keepends=True)[:8]))
    (dump / "checkpoints" / "0000000008" / "train_state_00001.json").write_text("{")

    outcome = resume(setup, dump, fault_data, reference, 4)
    skipped = f"skipped checkpoint {dump / 'checkpoints' / '0000000008'}: "
    assert f"{skipped}train_state_00001.json does not parse" in outcome.output
    assert f"{skipped}damaged on another rank" in outcome.output
