"""Negative controls for the fault suite: each guarantee is broken on purpose in a scratch copy of the trainer, and the
test that guards it must then fail.

    .venv/bin/python tests/faults/mutations.py             # every mutation (about 3 minutes on 2 cores)
    .venv/bin/python tests/faults/mutations.py resume-as-restart atomic-rename-removed
    .venv/bin/python tests/faults/mutations.py --baseline  # first check that the chosen tests pass unbroken

Exit status 0 when every mutation made its test fail ("caught"); 1 when one survived. The scratch copy holds
lingua_modified/, tests/faults/, the two conftest files the suite imports and pyproject.toml (pytest's settings).
"""

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
COPIED = ["lingua_modified", "tests/faults", "tests/conftest.py", "tests/lingua_modified/conftest.py", "pyproject.toml"]


@dataclass
class Mutation:
    name: str
    guarantee: str
    path: str  # relative to the repository
    old: str  # must occur exactly once
    new: str
    test: str  # the -k expression of the tests in tests/faults/test_faults.py that must fail


MUTATIONS = [
    Mutation(
        "resume-as-restart",
        "a restarted run resumes from its newest checkpoint (load becomes a no-op that still logs 'resumed from')",
        "lingua_modified/lingua/checkpoint.py",
        "        folder = self.newest()\n        if folder is not None:\n",
        "        folder = self.newest()\n        if folder is not None:\n"
        '            logger.info(f"resumed from {folder} at step {train_state.step}")\n            return folder\n'
        "        if folder is not None:\n",
        "test_sigkill_at_a_step and 1proc",
    ),
    Mutation(
        "atomic-rename-removed",
        "a save is written under a temporary name and renamed when complete",
        "lingua_modified/lingua/checkpoint.py",
        'temp = self.path / f".partial-{step_folder_name(step)}"',
        "temp = final",
        "test_sigkill_during_a_checkpoint_save and 1proc",
    ),
    Mutation(
        "corruption-fallback-removed",
        "resume skips a damaged newest checkpoint for the newest complete one",
        "lingua_modified/lingua/checkpoint.py",
        "problem = checkpoint_problem(folder, self.dp_rank)",
        "problem = None",
        "test_a_corrupted_newest_checkpoint and truncated",
    ),
    Mutation(
        "optimizer-not-restored",
        "resume restores the optimizer state, not only the weights",
        "lingua_modified/lingua/checkpoint.py",
        "            load_model_and_optimizer(model, optimizer, folder)\n",
        "            load_model_and_optimizer(model, None, folder)\n",
        "test_sigkill_at_a_step and 1proc",
    ),
    Mutation(
        "data-order-not-restored",
        "resume restores the data loader's position (same batches in the same order)",
        "lingua_modified/lingua/training.py",
        '        self.data_loader_state = state["data_loader_state"]\n',
        "",
        "test_preemption_signal and term",
    ),
    Mutation(
        "nan-check-removed",
        "a non-finite loss stops the run before anything of that step is saved",
        "lingua_modified/lingua/training.py",
        "nonfinite = not math.isfinite(loss_value.item())",
        "nonfinite = False",
        "test_a_nan_loss",
    ),
    Mutation(
        "evaluation-not-redone",
        "an in-training evaluation interrupted by a kill is run again when the run resumes",
        "lingua_modified/lingua/training.py",
        "if resumed is not None and on_eval_grid and not evaluated(args, state.step):",
        "if False:",
        "test_sigkill_during_an_in_training_evaluation",
    ),
    Mutation(
        "disk-full-not-handled",
        "a save that fills the disk is one clear error and leaves no partial files",
        "lingua_modified/lingua/checkpoint.py",
        "except (Exception, dcp.CheckpointException) as exception:",
        "except OSError as exception:",
        "test_a_full_disk and during",
    ),
]


def scratch_copy(target: Path) -> None:
    for item in COPIED:
        source, destination = REPO / item, target / item
        destination.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, destination, ignore=shutil.ignore_patterns("__pycache__", "runs", ".pytest_cache"))
        else:
            shutil.copy2(source, destination)


def run_test(folder: Path, test: str) -> tuple[bool, float, str]:
    start = time.time()
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:xdist", "-p", "no:cacheprovider", "-x", "-q",
         "tests/faults/test_faults.py", "-k", test],
        cwd=folder, capture_output=True, text=True,
    )  # fmt: skip
    tail = [line for line in result.stdout.splitlines() if line.startswith(("FAILED", "ERROR", "E "))][:3]
    return result.returncode == 0, time.time() - start, "\n".join(tail)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help=f"mutations to apply (default: all of {[m.name for m in MUTATIONS]})")
    parser.add_argument("--baseline", action="store_true", help="first run each chosen test on the unbroken copy")
    args = parser.parse_args(argv)
    unknown = set(args.names) - {m.name for m in MUTATIONS}
    if unknown:
        parser.error(f"unknown mutation(s) {sorted(unknown)}; expected some of {[m.name for m in MUTATIONS]}")
    chosen = [m for m in MUTATIONS if not args.names or m.name in args.names]
    survived = 0
    with tempfile.TemporaryDirectory(prefix="fault-mutations-") as scratch:
        folder = Path(scratch)
        scratch_copy(folder)
        if args.baseline:
            for test in dict.fromkeys(m.test for m in chosen):
                passed, seconds, tail = run_test(folder, test)
                print(f"baseline  {'passed' if passed else 'FAILED'}  {seconds:5.0f} s  {test}", flush=True)
                if not passed:
                    print(tail)
                    return 1
        for mutation in chosen:
            path = folder / mutation.path
            original = path.read_text()
            if original.count(mutation.old) != 1:
                print(
                    f"{mutation.name}: the text to replace is not in {mutation.path} exactly once; update mutations.py"
                )
                return 1
            path.write_text(original.replace(mutation.old, mutation.new))
            try:
                passed, seconds, tail = run_test(folder, mutation.test)
            finally:
                path.write_text(original)
            verdict = "SURVIVED" if passed else "caught"
            survived += passed
            print(
                f"{mutation.name:28s} {verdict:8s} {seconds:5.0f} s  {mutation.test}\n    breaks: {mutation.guarantee}"
            )
            if tail:
                print("    " + tail.replace("\n", "\n    "))
            sys.stdout.flush()
    print(f"{len(chosen) - survived} of {len(chosen)} mutations caught")
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())
