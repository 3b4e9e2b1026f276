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

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WORK = os.path.join(REPO, ".compat")

# what a release spec resolves to is printed in the table; "~=4.57.0" is the last 4.57.x, "<6" the newest 5.x
RELEASES = ["==4.47.1", "==4.53.3", "~=4.57.0", "==5.0.0", "==5.23.0", "<6"]
TEST_PACKAGES = ["pytest", "pytest-xdist"]
GROUPS = {
    "llama": ["tests/huggingface", "--ignore=tests/huggingface/test_auto_class.py"],
    "linear": [
        "tests/huggingface_linear",
        "--ignore=tests/huggingface_linear/test_recurrences.py",  # plain-torch kernels: no transformers involved
        "--ignore=tests/huggingface_linear/test_fla_oracle.py",  # fla pins its own transformers
        "--ignore=tests/huggingface_linear/test_auto_class.py",
    ],
    "remote-code": ["tests/huggingface/test_auto_class.py", "tests/huggingface_linear/test_auto_class.py"],
}
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


def run_group(python, env, version, group, workers):
    os.makedirs(os.path.join(WORK, "logs"), exist_ok=True)
    log = os.path.join(WORK, "logs", f"{version}-{group}.log")
    command = [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", *GROUPS[group]]
    if workers > 1:
        command += ["-n", str(workers)]
    start = time.time()
    with open(log, "w") as out:
        code = subprocess.run(command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT).returncode
    with open(log) as f:
        summary = [line.strip() for line in f if " passed" in line or " failed" in line or " error" in line]
    return code == 0, (summary[-1] if summary else f"pytest exited with {code}"), time.time() - start, log


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
        cells = []
        for group in GROUPS:
            ok, summary, seconds, log = run_group(python, env, version, group, args.workers)
            cells.append("passed" if ok else "FAILED")
            print(f"  {group:12s} {cells[-1]:7s} {seconds:5.0f} s  {summary}", flush=True)
            if not ok:
                failed.append(f"{version} {group}: see {log}")
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
