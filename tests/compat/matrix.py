"""`make compat`: the Hugging Face model tests against every transformers release the project supports.

For each release of the matrix (the newest 5.x resolved when this runs), an environment is built under `.compat/`
that holds that transformers with its own dependencies, pytest, and the project's CPU torch shared by links (torch is
never downloaded again). The project is not installed there: the tests import it from the checkout, and the
remote-code round trip runs its child process without the checkout on the path. Prints a table release x test group
and exits non-zero when any cell failed; each cell's pytest output is kept in `.compat/logs/`.

    python tests/compat/matrix.py [--only 4.47.1 ...] [--workers 2]
"""

import argparse
import glob
import os
import shutil
import subprocess
import sys
import time
from xml.etree import ElementTree

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WORK = os.path.join(REPO, ".compat")

# what a release spec resolves to is printed in the table; "~=4.57.0" is the last 4.57.x, "<6" the newest 5.x
RELEASES = ["==4.47.1", "==4.53.3", "~=4.57.0", "==5.0.0", "==5.23.0", "<6"]
TEST_PACKAGES = ["pytest", "pytest-xdist"]
# test group -> the test files (or folders) it covers; every group runs in one pytest call per release
GROUPS = {
    "llama": ["tests/huggingface"],
    "linear": ["tests/huggingface_linear"],
    "remote-code": ["tests/huggingface/test_auto_class.py", "tests/huggingface_linear/test_auto_class.py"],
}
LEFT_OUT = [
    "--ignore=tests/huggingface/test_canon.py",  # the Canon conv kernels: plain torch, no transformers involved
    "--ignore=tests/huggingface_linear/test_recurrences.py",  # likewise the recurrences
    "--ignore=tests/huggingface_linear/test_fla_oracle.py",  # fla pins its own transformers
    "-k",
    "not -k2- and not -k3-",  # the kernel sizes 2 and 3 of the decoding matrix meet no transformers code
]


def group_of(test_file):
    """The group of a test file: the most specific path of GROUPS that contains it."""
    best = max((p for paths in GROUPS.values() for p in paths if test_file.startswith(p)), key=len)
    return next(name for name, paths in GROUPS.items() if best in paths)


# torch and what it imports, shared from the project's environment (pure-Python dependencies included so that no
# newer copy of them is pulled in)
TORCH_FILES = ["torch", "torchgen", "functorch", "torch-*.dist-info", "sympy", "sympy-*.dist-info", "mpmath",
               "mpmath-*.dist-info", "networkx", "networkx-*.dist-info", "jinja2", "jinja2-*.dist-info", "markupsafe",
               "markupsafe-*.dist-info", "fsspec", "fsspec-*.dist-info", "filelock", "filelock-*.dist-info",
               "typing_extensions.py", "typing_extensions-*.dist-info"]  # fmt: skip


def site_packages():
    import torch

    return os.path.dirname(os.path.dirname(torch.__file__))


def shared_torch_dir():
    """A folder of links to the installed torch and its dependencies."""
    target = os.path.join(WORK, "torch")
    if os.path.isdir(target):
        return target
    os.makedirs(WORK, exist_ok=True)
    partial = target + ".partial"
    shutil.rmtree(partial, ignore_errors=True)
    os.makedirs(partial)
    source = site_packages()
    for pattern in TORCH_FILES:
        for path in glob.glob(os.path.join(source, pattern)):
            os.symlink(path, os.path.join(partial, os.path.basename(path)))
    os.rename(partial, target)
    return target


def base_python():
    """The interpreter this environment was made from, outside any virtual environment."""
    return os.path.join(sys.base_prefix, "bin", f"python{sys.version_info.major}.{sys.version_info.minor}")


def environment(spec):
    """(python, env vars, resolved version) of the environment for `transformers{spec}`, built on first use; a
    floating spec ("<6", "~=") is resolved again on every run."""
    label = "transformers" + spec.replace("=", "").replace("<", "lt").replace("~", "compat")
    root = os.path.join(WORK, label)
    packages = os.path.join(root, "packages")
    floating = not spec.startswith("==")
    if floating or not os.path.isdir(packages):
        partial = packages + ".partial"
        shutil.rmtree(partial, ignore_errors=True)
        pip = subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--target", partial,
             "--upgrade", f"transformers{spec}", *TEST_PACKAGES],
            capture_output=True, text=True,
        )  # fmt: skip
        if pip.returncode:
            raise RuntimeError(f"installing transformers{spec} failed:\n{pip.stdout}{pip.stderr}")
        shutil.rmtree(packages, ignore_errors=True)
        os.rename(partial, packages)
    venv = os.path.join(root, "venv")
    if not os.path.exists(os.path.join(venv, "bin", "python")):
        subprocess.run([base_python(), "-m", "venv", "--without-pip", venv], check=True)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PYTHONPATH"] = os.pathsep.join([REPO, packages, shared_torch_dir()])
    env.update(HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", COMPAT_MATRIX="1")
    python = os.path.join(venv, "bin", "python")
    version = subprocess.run(
        [python, "-c", "import transformers; print(transformers.__version__)"],
        env=env, capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    return python, env, version


def run_release(python, env, version, workers):
    """One pytest call over every group; returns {group: (passed?, summary)} and the log's path."""
    os.makedirs(os.path.join(WORK, "logs"), exist_ok=True)
    log, report = (os.path.join(WORK, "logs", f"{version}.{ext}") for ext in ("log", "xml"))
    paths = sorted({p for paths in GROUPS.values() for p in paths if not p.endswith(".py")})
    command = [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={report}", *paths, *LEFT_OUT]
    if workers > 1:
        command += ["-n", str(workers)]
    with open(log, "w") as out:
        code = subprocess.run(command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT).returncode
    counts = {group: {"passed": 0, "failed": 0, "skipped": 0} for group in GROUPS}
    if os.path.exists(report):
        for case in ElementTree.parse(report).iter("testcase"):
            test_file = case.get("file") or case.get("classname", "").replace(".", "/") + ".py"
            outcome = "passed"
            if case.find("failure") is not None or case.find("error") is not None:
                outcome = "failed"
            elif case.find("skipped") is not None:
                outcome = "skipped"
            counts[group_of(test_file)][outcome] += 1
    cells = {}
    for group, c in counts.items():
        ok = c["failed"] == 0 and c["passed"] > 0 and code in (0, 1)
        cells[group] = (ok, f"{c['passed']} passed, {c['failed']} failed, {c['skipped']} skipped")
    if code not in (0, 1):  # pytest itself broke (collection, usage): no cell counts as passed
        cells = {group: (False, f"pytest exited with {code}") for group in GROUPS}
    return cells, log


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="*", help="release specs to run (default: the whole matrix)")
    parser.add_argument("--workers", type=int, default=2, help="pytest-xdist workers per cell")
    args = parser.parse_args(argv)
    specs = [s if s[0] in "=<~>" else "==" + s for s in args.only] if args.only else RELEASES
    rows, failed = [], []
    for spec in specs:
        start = time.time()
        python, env, version = environment(spec)
        print(f"transformers{spec} -> {version} (environment ready in {time.time() - start:.0f} s)", flush=True)
        start = time.time()
        results, log = run_release(python, env, version, args.workers)
        cells = []
        for group, (ok, summary) in results.items():
            cells.append("passed" if ok else "FAILED")
            print(f"  {group:12s} {cells[-1]:7s} {summary}", flush=True)
            if not ok:
                failed.append(f"{version} {group}: see {log}")
        print(f"  ({time.time() - start:.0f} s)", flush=True)
        rows.append((version, cells))
    width = max(len("transformers"), *(len(v) for v, _ in rows))
    print(f"\n| {'transformers':{width}s} | " + " | ".join(f"{g:11s}" for g in GROUPS) + " |")
    print(f"|{'-' * (width + 2)}|" + "|".join("-" * 13 for _ in GROUPS) + "|")
    for version, cells in rows:
        print(f"| {version:{width}s} | " + " | ".join(f"{c:11s}" for c in cells) + " |")
    if failed:
        print("\n" + "\n".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
