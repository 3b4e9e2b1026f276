"""Training runs of the demo, started side by side: each is the real trainer (`python -m apps.main.train`) as its own
single process with one thread, so a pair of runs keeps the two cores of a small machine busy without the
synchronisation a two-process torchrun pays at every step.

While they run, this process follows each run's metrics.jsonl (the trainer appends a line every `logging.freq`
steps) and draws one progress bar per run: step, loss, elapsed and remaining time.
"""

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

LINGUA_ROOT = Path(__file__).resolve().parents[2]
REFRESH_SECONDS = 0.5
STOP_SECONDS = 60  # how long a stopped trainer may take to save its checkpoint before it is killed


class DemoError(RuntimeError):
    """A demo that cannot go on; the message is one sentence that names what failed and where to look."""


@dataclass
class TrainingRun:
    label: str  # what the progress bar and the error messages call it, e.g. "LlamaCanon" or "LlamaCanon seed 1"
    dump_dir: Path
    log: Path  # the trainer's stdout and stderr
    overrides: list[str]  # key=value settings on top of the config file
    steps: int


class MetricsFollower:
    """Reads the complete lines a trainer has appended to metrics.jsonl since the last call."""

    def __init__(self, path: Path):
        self.path, self.offset, self.partial = path, 0, ""

    def new_lines(self) -> list[dict]:
        if not self.path.exists():
            return []  # the trainer creates it after its start-up
        with open(self.path) as f:
            f.seek(self.offset)
            text = f.read()
            self.offset = f.tell()
        *complete, self.partial = (self.partial + text).split("\n")
        return [json.loads(line) for line in complete if line.strip()]


def start(run: TrainingRun, config: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "apps.main.train", f"config={config}", f"dump_dir={run.dump_dir}", *run.overrides]
    # one thread per run: two runs on two cores, none waiting for the other
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(LINGUA_ROOT), *sys.path]))
    with open(run.log, "w") as log:
        return subprocess.Popen(command, cwd=LINGUA_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def train_together(runs: list[TrainingRun], config: Path) -> None:
    """Run every training at the same time with a progress bar each; when one fails, stop the others and raise one
    DemoError naming the failed run's log."""
    processes, bars = [], []
    try:
        for position, run in enumerate(runs):
            processes.append(start(run, config))
            bars.append(tqdm(total=run.steps, desc=run.label, unit="step", position=position, dynamic_ncols=True))
        followers = [MetricsFollower(run.dump_dir / "metrics.jsonl") for run in runs]
        while True:
            for follower, bar in zip(followers, bars, strict=True):
                lines = follower.new_lines()
                if lines:
                    bar.n = lines[-1]["global_step"]
                    bar.set_postfix(loss=f"{lines[-1]['loss/out']:.3f}", refresh=False)
                bar.refresh()  # also when nothing was logged, so that elapsed and remaining stay current
            codes = [process.poll() for process in processes]
            for run, code in zip(runs, codes, strict=True):
                if code:
                    raise DemoError(f"training {run.label} failed (exit {code}); see {run.log}")
            if all(code == 0 for code in codes):
                break
            time.sleep(REFRESH_SECONDS)
        for run, bar in zip(runs, bars, strict=True):
            bar.n = run.steps
            bar.refresh()
    finally:
        for process in processes:
            if process.poll() is None:  # a sibling failed or the user interrupted: leave no trainer behind
                process.terminate()  # the trainer saves a checkpoint at the end of its step and exits
                try:
                    process.wait(timeout=STOP_SECONDS)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        for bar in bars:
            bar.close()
