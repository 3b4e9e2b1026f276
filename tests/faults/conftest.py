"""Shared pieces of the fault-injection suite: launching the trainer the way a user does (python -m, torchrun, or
two torchrun "nodes" on this machine) with one fault armed, reading what a run left behind, and the uninterrupted
reference runs every case is compared with (made once per pytest run, shared by the xdist workers)."""

import importlib.util
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from filelock import FileLock

LINGUA_ROOT = Path(__file__).resolve().parents[2] / "lingua_modified"
HOOK = Path(__file__).resolve().parent / "hook"
DEBUG_YAML = LINGUA_ROOT / "apps" / "main" / "configs" / "debug.yaml"
TIMEOUT = 300


def write_text_data(root: Path) -> Path:
    """The trainer tests' small text source (tests/lingua_modified/conftest.py)."""
    spec = importlib.util.spec_from_file_location(
        "lingua_test_data", Path(__file__).parents[1] / "lingua_modified" / "conftest.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.write_text_data(root)


@dataclass(frozen=True)
class Setup:
    """How the processes of a run are laid out, and its length: `steps` steps, a checkpoint every `every`."""

    name: str
    nproc: int  # processes per node
    nodes: int
    steps: int
    every: int

    @property
    def world(self) -> int:
        return self.nproc * self.nodes

    @property
    def reference(self) -> str:
        """Runs of the same world size and length train identically, so they share one reference."""
        return f"world{self.world}-steps{self.steps}"


ONE = Setup("1proc", 1, 1, 24, 6)
TWO = Setup("2proc", 2, 1, 12, 4)
NODES = Setup("2nodes", 1, 2, 12, 4)
# long enough that a kill in the data loader, which runs up to 16 batches ahead, lands after a checkpoint
TWO_LONG = Setup("2proc-long", 2, 1, 32, 4)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_arguments(setup: Setup, dump: Path, data_root: Path, *extra: str) -> list[str]:
    return [
        "-m", "apps.main.train", f"config={DEBUG_YAML}", f"dump_dir={dump}", f"data.root_dir={data_root}",
        f"steps={setup.steps}", f"checkpoint.dump.every={setup.every}", "checkpoint.dump.keep=0",
        "checkpoint.eval.every=1000", *extra,
    ]  # fmt: skip


def command(setup: Setup, arguments: list[str]) -> list[str]:
    if setup.world == 1:
        return [sys.executable, *arguments]
    torchrun = [sys.executable, "-m", "torch.distributed.run"]
    if setup.nodes == 1:
        return [*torchrun, "--standalone", f"--nproc-per-node={setup.nproc}", *arguments]
    # one torchrun agent per "node", meeting through torchrun's c10d rendezvous on this machine; bash waits for both
    # and fails when either does
    port = free_port()
    agents = [
        shlex.join([*torchrun, f"--nnodes={setup.nodes}", f"--nproc-per-node={setup.nproc}", "--rdzv-backend=c10d",
                    f"--rdzv-endpoint=127.0.0.1:{port}", "--rdzv-id=faults", *arguments])
        for _ in range(setup.nodes)
    ]  # fmt: skip
    script = " ".join(f"{agent} & pids+=($!);" for agent in agents)
    script += ' status=0; for pid in "${pids[@]}"; do wait "$pid" || status=1; done; exit $status'
    return ["bash", "-c", script]


@dataclass
class Outcome:
    returncode: int
    stdout: str
    stderr: str
    fired: list[str]  # the FAULT_LOG lines: the armed fault acted

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def run(setup: Setup, dump: Path, data_root: Path, *extra: str, fault: str = "", env: dict | None = None) -> Outcome:
    """Run the trainer in its own process group with `fault` armed (see hook/sitecustomize.py); `env` adds
    variables."""
    fault_log = dump.parent / f"{dump.name}.faults"
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(HOOK), str(LINGUA_ROOT)]), OMP_NUM_THREADS="1", FAULT=fault,
        FAULT_LOG=str(fault_log), FAULT_TEST_PID=str(os.getpid()), **(env or {}),
    )  # fmt: skip
    fired_before = len(fault_log.read_text().splitlines()) if fault_log.exists() else 0
    process = subprocess.Popen(
        command(setup, train_arguments(setup, dump, data_root, *extra)), cwd=LINGUA_ROOT, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        out, err = process.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        out, err = process.communicate()
        pytest.fail(f"the run did not end within {TIMEOUT} s:\n{err[-3000:]}")
    fired = fault_log.read_text().splitlines()[fired_before:] if fault_log.exists() else []
    return Outcome(process.returncode, out, err, fired)


def metric_lines(dump: Path) -> list[tuple[int, float]]:
    """(global_step, loss) of every line of metrics.jsonl, in file order (runs append)."""
    path = dump / "metrics.jsonl"
    if not path.exists():
        return []
    return [(r["global_step"], r["loss/out"]) for r in map(json.loads, path.read_text().splitlines())]


def checkpoint_steps(dump: Path) -> list[int]:
    folder = dump / "checkpoints"
    return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit()) if folder.is_dir() else []


def consolidated_weights(folder: Path) -> dict:
    from lingua.checkpoint import consolidate_checkpoint

    target = consolidate_checkpoint(folder)
    return torch.load(target / "consolidated.pth", weights_only=True)["model"]


def train_states(folder: Path, world: int) -> list[dict]:
    return [json.loads((folder / f"train_state_{rank:05d}.json").read_text()) for rank in range(world)]


@dataclass
class Reference:
    """An uninterrupted run: its per-step losses, its checkpoints, the final train states and weights."""

    setup: Setup
    dump: Path
    losses: dict[int, float]
    final_states: list[dict]
    final_weights: dict


@pytest.fixture(scope="session")
def fault_data(tmp_path_factory) -> Path:
    """The data root shared by every run (the loader state stores absolute paths, so all runs read the same files)."""
    root = shared_folder(tmp_path_factory) / "data"
    with FileLock(str(root) + ".lock"):
        if not root.exists():
            write_text_data(root)
            # held-out documents for the in-training evaluation (validation NLL) of test_faults
            (root / "debug" / "debug.val.jsonl").write_text("".join(f'{{"text": "{w} {w} {w}."}}\n' for w in "ab"))
    return root


def shared_folder(tmp_path_factory) -> Path:
    """A folder shared by the xdist workers of this pytest run (each worker has its own basetemp below it)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@pytest.fixture(scope="session")
def reference(tmp_path_factory, fault_data):
    """reference(setup) -> the Reference of the setup's world size, trained once per pytest run."""
    made = {}

    def get(setup: Setup) -> Reference:
        if setup.reference not in made:
            base = shared_folder(tmp_path_factory)
            standard = Setup("reference", setup.world, 1, setup.steps, setup.every)  # nodes train as processes
            dump = base / f"reference-{setup.reference}"
            final = dump / "checkpoints" / f"{standard.steps:010d}"
            with FileLock(str(dump) + ".lock"):  # one worker trains and consolidates, the others wait and read
                if not (dump / "done").exists():
                    outcome = run(standard, dump, fault_data)
                    assert outcome.returncode == 0, outcome.stderr[-3000:]
                    (dump / "done").write_text("")
                weights = consolidated_weights(final)
            losses = dict(metric_lines(dump))
            assert sorted(losses) == list(range(1, standard.steps + 1))
            made[setup.reference] = Reference(standard, dump, losses, train_states(final, setup.world), weights)
        return made[setup.reference]

    return get


def assert_resumed_exactly(setup: Setup, dump: Path, reference: Reference, resumed_from: int, lines_before: int):
    """The resumed run (the metric lines after the first `lines_before`) logged exactly the steps after
    `resumed_from`, with the reference's losses bit for bit; the final train states (step, data loader, scheduler)
    and the consolidated final weights equal the reference's."""
    assert setup.steps == reference.setup.steps
    lines = metric_lines(dump)
    before, after = lines[:lines_before], lines[lines_before:]
    assert after, "the resumed run logged nothing"
    assert after[0][0] == resumed_from + 1, f"the resumed run started at step {after[0][0]}, not {resumed_from + 1}"
    assert [step for step, _ in after] == list(range(resumed_from + 1, setup.steps + 1))
    for step, loss in before + after:
        assert loss == reference.losses[step], f"step {step}: loss {loss!r} != {reference.losses[step]!r}"
    final = dump / "checkpoints" / f"{setup.steps:010d}"
    assert train_states(final, setup.world) == reference.final_states
    weights = consolidated_weights(final)
    assert weights.keys() == reference.final_weights.keys()
    for name, tensor in weights.items():
        assert torch.equal(tensor, reference.final_weights[name]), f"final weights differ in {name}"
