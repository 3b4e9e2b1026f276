"""Launch a job on SLURM:

    python -m lingua.stool script=apps.main.train config=apps/main/configs/debug.yaml nodes=1 ngpu=8 \
        [partition=.. time=.. ncpu=.. mem=.. account=.. qos=.. constraint=.. exclude=.. exclusive=true ..] \
        [key.sub=value ...]

Arguments named after a StoolArgs field configure the job; every other `key.sub=value` (or `config.key.sub=value`)
overrides the training config, which is checked against the script's config dataclass before anything is written.
The job's folder is the config's dump_dir:

    dump_dir/base_config.yaml   the YAML merged with the overrides (what the job reads)
    dump_dir/submit.slurm       the batch script (`sbatch dump_dir/submit.slurm` relaunches the same run)
    dump_dir/code/              a snapshot of the *.py and *.yaml files of the current folder; the job runs there
    dump_dir/logs/<job>.stdout|.stderr, <job>_<task>.out|.err

The job asks SLURM for SIGUSR2 `signal_time` seconds before its time limit; training then checkpoints, requeues the
job (`scontrol requeue`) and exits, and the requeued job resumes from that checkpoint. Training also uses this module
to submit evaluation jobs (`launch_eval_job`).
"""

import difflib
import importlib
import logging
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import yaml

from .args import ConfigError, cli_overrides, dataclass_from_dict, load_yaml, merge_sources
from .atomic import publish_folder, write_atomic

logger = logging.getLogger()

# the config dataclass each kind of script reads, found in the script's module
CONFIG_CLASSES = {"train": "TrainArgs", "eval": "EvalArgs"}
# config keys (at any depth) that name files or folders: the job runs in its code snapshot, so relative paths are
# made absolute against the folder stool was started from
PATH_KEYS = {"dump_dir", "root_dir", "path", "init_ckpt_path", "ckpt_dir", "metric_log_dir", "include_path"}
# what a job started from inside another job must not inherit: the parent's SLURM job and torch.distributed identity
SCRUBBED_PREFIXES = ("SLURM_", "SLURMD_", "SRUN_", "SBATCH_", "SUBMITIT_", "WANDB_")
SCRUBBED_NAMES = {"MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE",
                  "TORCHELASTIC_RUN_ID", "DORA_FORCE_DISTRIB"}  # fmt: skip
KEPT_NAMES = {"SLURM_CONF"}  # where the cluster's slurm.conf is: configuration, not job identity
DEFAULT_MINUTES = 3 * 24 * 60  # when sinfo does not know the partition
UNLIMITED_MINUTES = 14 * 24 * 60  # when the partition has no time limit


class StoolError(ValueError):
    """A job that cannot be launched: bad options, an existing dump_dir, or SLURM refusing it."""


@dataclass
class StoolArgs:
    config: Any = None  # the job's config (a dict); must hold dump_dir and name
    launcher: str = "sbatch"  # runs the batch script; "bash" runs it in this shell (inside an salloc)
    script: str = "apps.main.train"  # the python module srun starts
    copy_code: bool = True  # snapshot the code into dump_dir/code and run from there
    dirs_exists_ok: bool = False  # allow an existing dump_dir (its checkpoints are resumed)
    override: bool = False  # ask, then delete the whole dump_dir first
    nodes: int = -1
    ngpu: int = 8  # per node; 0 = a CPU job (one task per node)
    ncpu: int = 16  # per GPU (per task for a CPU job)
    mem: str = ""  # --mem; empty = "0" (all of the node's memory)
    python_env: str = "default"  # a venv/conda folder or a python executable; default: this interpreter
    constraint: str = ""
    exclude: str = ""
    time: int = -1  # minutes; -1 = the partition's limit (sinfo)
    account: str = ""
    qos: str = ""
    partition: str = ""  # empty = the cluster's default partition
    stdout: bool = False  # False: one log file pair per task besides the job's own
    exclusive: bool = False  # whole nodes only
    signal_time: int = 120  # seconds before the time limit at which SLURM sends SIGUSR2


# ----------------------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------------------


def parse_stool_args(argv: list[str]) -> StoolArgs:
    """StoolArgs from a command line; `config` becomes the loaded YAML with the training overrides merged in."""
    stool_fields = {f.name for f in fields(StoolArgs)}
    stool_tokens, overrides = [], []
    for token in argv:
        key = token.split("=", 1)[0]
        if key.startswith("config."):
            overrides.append(token[len("config.") :])
        elif key.split(".")[0] in stool_fields:
            stool_tokens.append(token)
        else:
            overrides.append(token)
    path, options = cli_overrides(stool_tokens)
    if path is None:
        raise ConfigError("missing config=<path to a YAML file>")
    text_fields = {f.name for f in fields(StoolArgs) if f.type is str}
    options = {k: "" if v is None and k in text_fields else v for k, v in options.items()}  # `partition=`: empty
    _, override_map = cli_overrides(overrides)
    paths = path if isinstance(path, list) else [path]
    config = merge_sources(*(load_yaml(str(p)) for p in paths), override_map)
    return dataclass_from_dict(StoolArgs, dict(options, config=config))


def main(argv: list[str] | None = None) -> int:
    try:
        launch_job(parse_stool_args(sys.argv[1:] if argv is None else argv))
    except (ConfigError, StoolError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


# ----------------------------------------------------------------------------------------------------------------
# Checks (nothing is written before they all pass)
# ----------------------------------------------------------------------------------------------------------------


def config_class(script: str) -> type:
    """The config dataclass of `script` (TrainArgs for a *.train module, EvalArgs for a *.eval module)."""
    try:
        module = importlib.import_module(script)
    except ImportError as error:
        raise StoolError(
            f"script={script!r} cannot be imported ({error}); expected a module such as apps.main.train"
        ) from None
    wanted = CONFIG_CLASSES.get(script.rsplit(".", 1)[-1])
    found = [name for name in CONFIG_CLASSES.values() if hasattr(module, name)]
    name = wanted if wanted in found else (found[0] if len(found) == 1 else None)
    if name is None:
        raise StoolError(f"script={script!r} defines no TrainArgs or EvalArgs; cannot check its config")
    return getattr(module, name)


def check_config(config: dict, script: str) -> None:
    """The job's config parses strictly into the script's dataclass; a top-level key that is neither a config field
    nor a stool option is reported with the closest name of either kind."""
    cls = config_class(script)
    known = {f.name for f in fields(cls)}
    for key in config:
        if key not in known:
            options = sorted(known | {f.name for f in fields(StoolArgs)})
            hint = difflib.get_close_matches(key, options, n=1, cutoff=0.5)
            raise ConfigError(
                f"unknown key {key!r}: neither a stool option nor a field of {cls.__name__}"
                + (f"; did you mean {hint[0]!r}?" if hint else "")
            )
    dataclass_from_dict(cls, config)


def absolute_paths(config: Any, base: str) -> Any:
    """`config` with the relative paths under PATH_KEYS made absolute against `base`."""
    if isinstance(config, list):
        return [absolute_paths(v, base) for v in config]
    if not isinstance(config, dict):
        return config
    result = {}
    for key, value in config.items():
        if key in PATH_KEYS and isinstance(value, str) and value and "://" not in value:
            value = os.path.normpath(os.path.join(base, os.path.expanduser(value)))
        result[key] = absolute_paths(value, base)
    return result


def python_executable(python_env: str) -> str:
    if python_env == "default":
        return os.path.abspath(sys.executable)
    candidate = Path(python_env)
    if candidate.is_dir():
        candidate = candidate / "bin" / "python"
    if not (candidate.is_file() and os.access(candidate, os.X_OK)):
        raise StoolError(
            f"python_env={python_env!r} is neither a python executable nor an environment folder with bin/python"
        )
    return str(candidate)


def check_stool_args(args: StoolArgs) -> None:
    if not isinstance(args.config, dict):
        raise StoolError("no job config; expected config=<path to a YAML file>")
    for key in ("dump_dir", "name"):
        if not args.config.get(key):
            raise StoolError(f"the config has no {key}; stool needs it (the job's folder and name)")
    if re.search(r"\s", args.config["dump_dir"]):
        raise StoolError(
            f"dump_dir={args.config['dump_dir']!r} contains whitespace, which SLURM directives cannot hold"
        )
    if args.nodes < 1:
        raise StoolError(f"nodes={args.nodes}; expected the number of nodes (at least 1)")
    if args.ngpu < 0:
        raise StoolError(f"ngpu={args.ngpu}; expected the number of GPUs per node (0 for a CPU job)")
    if args.ncpu < 1:
        raise StoolError(f"ncpu={args.ncpu}; expected at least 1 CPU per GPU (per task for a CPU job)")
    if args.time == 0 or args.time < -1:
        raise StoolError(f"time={args.time}; expected a limit in minutes, or -1 for the partition's limit")
    if args.signal_time < 1:
        raise StoolError(f"signal_time={args.signal_time}; expected seconds before the time limit (at least 1)")
    if not args.launcher.strip():
        raise StoolError("launcher is empty; expected sbatch (or bash inside an salloc)")
    if args.override and args.dirs_exists_ok:
        raise StoolError("override and dirs_exists_ok are both set; expected at most one")


# ----------------------------------------------------------------------------------------------------------------
# The job's files
# ----------------------------------------------------------------------------------------------------------------


def parse_slurm_minutes(text: str) -> int | None:
    """Minutes of a SLURM duration ([days-]hours:minutes:seconds, minutes:seconds or minutes); None if unlimited."""
    text = text.strip()
    if text.lower() in ("infinite", "unlimited"):
        return None
    days, _, clock = text.rpartition("-")
    parts = [int(p) for p in clock.split(":")]
    hours, minutes, seconds = ([0, 0] + parts)[-3:] if len(parts) > 1 else (0, parts[0], 0)
    return max(1, (int(days or 0) * 24 + hours) * 60 + minutes + (seconds > 0))


def partition_minutes(partition: str, env: dict | None = None) -> int:
    """The time limit of `partition` (or of the default one) from sinfo; 3 days when sinfo does not know it."""
    try:
        listing = subprocess.run(
            ["sinfo", "--noheader", "--format=%P %l"], capture_output=True, text=True, env=env, timeout=60
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return DEFAULT_MINUTES
    for line in listing.splitlines():
        name, _, limit = line.partition(" ")
        if (name.rstrip("*") == partition) if partition else name.endswith("*"):
            minutes = parse_slurm_minutes(limit)
            return UNLIMITED_MINUTES if minutes is None else minutes
    return DEFAULT_MINUTES


def parse_slurm_megabytes(text: str) -> float | None:
    """MB of a SLURM memory size (`64G`, `500M`, `1T`, plain numbers are MB); None for 0 (all of the node's)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)B?\s*", text.upper())
    if match is None:
        raise StoolError(f"mem={text!r}; expected a SLURM memory size such as 64G or 500M (empty: all of the node's)")
    value = float(match.group(1)) * {"K": 2**-10, "": 1, "M": 1, "G": 2**10, "T": 2**20}[match.group(2)]
    return value or None


def partition_nodes(partition: str, env: dict | None = None) -> tuple[str, list[tuple[int, int, float]]] | None:
    """(name, [(CPUs, GPUs, memory MB) per node]) of `partition` (empty: the default one) from sinfo; None when
    sinfo is missing or does not know the partition."""
    try:
        if not partition:
            names = subprocess.run(["sinfo", "--noheader", "--format=%P"], capture_output=True, text=True, env=env,
                                   timeout=60).stdout.split()  # fmt: skip
            partition = next((name.rstrip("*") for name in names if name.endswith("*")), "")
            if not partition:
                return None
        listing = subprocess.run(
            ["sinfo", "--noheader", "--Node", f"--partition={partition}", "--format=%N|%c|%G|%m"],
            capture_output=True, text=True, env=env, timeout=60,
        ).stdout  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return None
    nodes = {}
    for line in listing.splitlines():
        parts = line.strip().split("|")
        if len(parts) != 4:
            continue
        name, cpus, gres, memory = parts
        gpus = sum(int(n) for n in re.findall(r"(?:^|,)gpu(?::[^:,(]+)?:(\d+)", gres))
        nodes[name] = (int(re.sub(r"\D", "", cpus) or 0), gpus, float(re.sub(r"[^\d.]", "", memory) or 0))
    return (partition, list(nodes.values())) if nodes else None


def check_resources(args: StoolArgs, env: dict | None = None) -> None:
    """Refuse a job that no set of `nodes` nodes of the partition can hold (SLURM would reject it or leave it pending
    for ever), with the numbers; nothing is checked when sinfo does not know the partition."""
    found = partition_nodes(args.partition, env)
    if found is None:
        return
    partition, nodes = found
    cpus, gpus, memory = args.ncpu * max(args.ngpu, 1), args.ngpu, parse_slurm_megabytes(args.mem or "0")
    fitting = [n for n in nodes if cpus <= n[0] and gpus <= n[1] and (memory is None or memory <= n[2])]
    if len(fitting) >= args.nodes:
        return
    largest = max(nodes, key=lambda n: (n[1], n[0], n[2]))
    per_task = f"ncpu={args.ncpu}" if not gpus else f"ncpu={args.ncpu} per GPU x ngpu={args.ngpu}"
    asked = f"{args.nodes} node(s) with {cpus} CPUs ({per_task}), {gpus} GPUs"
    asked += " and all of its memory" if memory is None else f" and {memory:.0f} MB (mem={args.mem})"
    raise StoolError(
        f"partition {partition!r} cannot run this job: it asks for {asked}, but {len(fitting)} of the partition's "
        f"{len(nodes)} node(s) fit (the largest has {largest[0]} CPUs, {largest[1]} GPUs and {largest[2]:.0f} MB); "
        "lower ncpu, ngpu, mem or nodes, or choose another partition"
    )


def render_submit_script(args: StoolArgs, python: str, workdir: str, minutes: int) -> str:
    dump_dir, name = args.config["dump_dir"], args.config["name"]
    tasks_per_node = max(args.ngpu, 1)
    directives = [f"--job-name={name}", f"--nodes={args.nodes}", f"--ntasks-per-node={tasks_per_node}"]
    if args.ngpu > 0:
        directives += [f"--gres=gpu:{args.ngpu}", f"--cpus-per-gpu={args.ncpu}"]
    else:
        directives.append(f"--cpus-per-task={args.ncpu}")
    directives += [f"--time={minutes}", f"--mem={args.mem or '0'}"]
    optional = {"partition": args.partition, "account": args.account, "qos": args.qos,
                "constraint": args.constraint, "exclude": args.exclude}  # fmt: skip
    directives += [f"--{key}={value}" for key, value in optional.items() if value]
    if args.exclusive:
        directives.append("--exclusive")
    # SLURM does not create folders for its log files, so they sit flat in logs/ (made by stool)
    directives += [
        f"--output={dump_dir}/logs/%j.stdout",
        f"--error={dump_dir}/logs/%j.stderr",
        "--open-mode=append",  # a requeued job appends to the same logs
        f"--signal=USR2@{args.signal_time}",
        "--distribution=block",
    ]
    task_logs = "" if args.stdout else "-o $DUMP_DIR/logs/%j_%t.out -e $DUMP_DIR/logs/%j_%t.err "
    lines = [
        "#!/bin/bash",
        *(f"#SBATCH {d}" for d in directives),
        "",
        f"cd {shlex.quote(workdir)}",
        "export OMP_NUM_THREADS=1",
        "export LAUNCH_WITH=SBATCH",
        f"export DUMP_DIR={shlex.quote(dump_dir)}",
        f"srun {task_logs}-n {args.nodes * tasks_per_node} -N {args.nodes} {shlex.quote(python)} -u -m {args.script} "
        "config=$DUMP_DIR/base_config.yaml",
    ]
    return "\n".join(lines) + "\n"


def is_run_folder(folder: Path) -> bool:
    """A training or stool output folder (not code): its snapshot would copy old snapshots and checkpoints' code."""
    return (folder / "submit.slurm").exists() or (folder / "metrics.jsonl").exists()


def copy_code(source: Path, target: Path, skip: Path) -> None:
    """Copy the *.py and *.yaml/*.yml files under `source` to `target` (written beside it, then renamed), leaving
    out hidden folders, caches, `skip` and run folders."""
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=".partial-code-"))
    for folder, subfolders, files in os.walk(source):
        here = Path(folder)
        subfolders[:] = [
            s for s in subfolders
            if not s.startswith(".") and s != "__pycache__" and here / s != skip and not is_run_folder(here / s)
        ]  # fmt: skip
        wanted = [f for f in files if f.endswith((".py", ".yaml", ".yml"))]
        if wanted:
            destination = staging / here.relative_to(source)
            destination.mkdir(parents=True, exist_ok=True)
            for name in wanted:
                shutil.copy2(here / name, destination / name)
    publish_folder(staging, target, overwrite=True)


# ----------------------------------------------------------------------------------------------------------------
# Launch
# ----------------------------------------------------------------------------------------------------------------


def launch_job(args: StoolArgs, env: dict | None = None) -> str | None:
    """Check everything, write dump_dir/{base_config.yaml, submit.slurm, code/, logs/}, then run
    `<launcher> submit.slurm` with environment `env` (default: this process's). Returns the SLURM job id for sbatch,
    None for other launchers (which run the job in the foreground)."""
    check_stool_args(args)
    cwd = os.getcwd()
    config = absolute_paths(args.config, cwd)
    check_config(config, args.script)
    args.config = config
    python = python_executable(args.python_env)
    dump_dir = Path(config["dump_dir"])
    existed = dump_dir.exists()
    if existed and not (args.dirs_exists_ok or args.override):
        raise StoolError(
            f"dump_dir {dump_dir} already exists; choose a new one, or pass dirs_exists_ok=true to launch into it "
            "(its newest checkpoint is resumed)"
        )
    if os.path.basename(shlex.split(args.launcher)[0]) == "sbatch":  # inside an salloc the allocation exists
        check_resources(args, env)
    minutes = args.time if args.time > 0 else partition_minutes(args.partition, env)

    if existed and args.override:
        answer = input(f"delete {dump_dir} and everything in it before launching? type yes to confirm: ")
        if answer.strip() != "yes":
            raise StoolError(f"not confirmed; {dump_dir} is left as it was")
        shutil.rmtree(dump_dir)
        existed = False
    (dump_dir / "logs").mkdir(parents=True, exist_ok=True)
    workdir = cwd
    if args.copy_code:
        workdir = str(dump_dir / "code")
        copy_code(Path(cwd), Path(workdir), skip=dump_dir)
    write_atomic(str(dump_dir / "base_config.yaml"), yaml.safe_dump(config, sort_keys=False))
    submit = dump_dir / "submit.slurm"
    write_atomic(str(submit), render_submit_script(args, python, workdir, minutes))

    command = f"{args.launcher} {shlex.quote(str(submit))}"
    if os.path.basename(shlex.split(args.launcher)[0]) != "sbatch":
        result = subprocess.run(command, shell=True, env=env)
        if result.returncode != 0:
            raise StoolError(f"{command!r} exited with status {result.returncode}; see {dump_dir}/logs")
        return None
    result = subprocess.run(command, shell=True, env=env, capture_output=True, text=True)
    submitted = re.search(r"Submitted batch job (\d+)", result.stdout)
    if result.returncode != 0 or submitted is None:
        if not existed:  # leave no half-made run behind, so the same command works once the problem is fixed
            shutil.rmtree(dump_dir, ignore_errors=True)
        message = [line for line in (result.stderr + result.stdout).splitlines() if line.strip()]
        raise StoolError(f"{args.launcher} did not submit the job: {message[-1] if message else 'no output'}")
    job_id = submitted.group(1)
    print(f"submitted job {job_id} ({config['name']}) from {submit}")
    print(f"logs: {dump_dir}/logs/{job_id}.stdout and .stderr" + ("" if args.stdout else f", {job_id}_<task>.out/.err"))
    return job_id


def requeue_slurm_job() -> None:
    """Put this SLURM job back in the queue (training's rank 0, after the checkpoint that SIGUSR2 asked for). SLURM
    then ends every task and later runs submit.slurm again, which resumes from that checkpoint."""
    job_id = os.environ["SLURM_JOB_ID"]
    result = subprocess.run(["scontrol", "requeue", job_id], capture_output=True, text=True)
    if result.returncode != 0:
        reason = (result.stderr.strip().splitlines() or ["no output"])[-1]
        logger.error(f"scontrol requeue {job_id} failed ({reason}); relaunch with sbatch <dump_dir>/submit.slurm")
        return
    logger.warning(f"requeued SLURM job {job_id}: it resumes from the checkpoint just saved")


def scrubbed_environ() -> dict:
    """This process's environment without its SLURM job and torch.distributed identity (for submitting a new job
    from inside a running one: sbatch would otherwise pass them on, and the new job would think it is this one)."""
    return {
        name: value
        for name, value in os.environ.items()
        if name in KEPT_NAMES or not (name.startswith(SCRUBBED_PREFIXES) or name in SCRUBBED_NAMES)
    }


def eval_job_shape(gpus: int) -> tuple[int, int]:
    """(nodes, GPUs per node) for an evaluation on `gpus` GPUs: up to 8 on one node, more in whole nodes of 8;
    0 = one CPU task."""
    if gpus < 0 or (gpus > 8 and gpus % 8):
        raise ValueError(f"async_eval_gpus={gpus}; expected 0 (CPU), 1 to 8 (one node) or a multiple of 8")
    return (gpus // 8, 8) if gpus > 8 else (1, gpus)


def launch_eval_job(eval_config: dict, gpus: int, script: str, **options) -> str | None:
    """Submit the evaluation of one checkpoint as its own SLURM job (called by training's rank 0). The job runs
    `python -m <script> config=<its dump_dir>/base_config.yaml` on the code this process runs, in the partition,
    account and qos of the current job when there is one, with as many CPUs per GPU (per task) as this job.
    `options` (StoolArgs fields, e.g. account, qos, exclude) replace those choices where they are not empty."""
    nodes, ngpu = eval_job_shape(gpus)
    cpus = os.environ.get("SLURM_CPUS_PER_GPU" if ngpu else "SLURM_CPUS_PER_TASK")
    args = StoolArgs(
        config=eval_config,
        script=script,
        copy_code=False,
        nodes=nodes,
        ngpu=ngpu,
        ncpu=int(cpus) if cpus else StoolArgs.ncpu,
        partition=os.environ.get("SLURM_JOB_PARTITION", StoolArgs.partition),
        account=os.environ.get("SLURM_JOB_ACCOUNT", ""),
        qos=os.environ.get("SLURM_JOB_QOS", ""),
    )
    args = replace(args, **{name: value for name, value in options.items() if value})
    return launch_job(args, env=scrubbed_environ())


if __name__ == "__main__":
    sys.exit(main())
