"""lingua.stool and training under SLURM.

Unit tests (no cluster): the files stool writes (submit.slurm directives, base_config.yaml with the command-line
overrides, the code snapshot), run with launcher=bash and a stand-in `srun` that records how it was called; bad input
is one clear error with nothing written. End to end on the single-node cluster of tests/slurm/start_cluster.sh: a
job runs to completion; a job signalled with SIGUSR2 checkpoints, requeues itself, resumes and ends with the same
losses as an uninterrupted run; a non-existent partition is SLURM's error in one line; an async evaluation is its
own SLURM job whose results match the same evaluation run in-process.
"""

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from lingua.stool import (
    StoolArgs,
    StoolError,
    eval_job_shape,
    launch_job,
    main,
    parse_slurm_megabytes,
    parse_slurm_minutes,
    parse_stool_args,
    partition_minutes,
    scrubbed_environ,
)

REPO = Path(__file__).resolve().parents[2]
LINGUA_ROOT = REPO / "lingua_modified"
DEBUG_YAML = LINGUA_ROOT / "apps" / "main" / "configs" / "debug.yaml"
START_CLUSTER = REPO / "tests" / "slurm" / "start_cluster.sh"
TIMEOUT = 600
FINISHED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE"}
# a model and batch small enough that a run of a hundred steps takes seconds on a busy CPU
TINY = ("model.dim=32", "model.n_layers=1", "data.batch_size=2", "data.seq_len=32", "data.load_async=false")


@pytest.fixture(autouse=True)
def in_lingua_root(monkeypatch):
    """stool runs from lingua_modified/ (it snapshots the current folder and imports the script from it)."""
    monkeypatch.chdir(LINGUA_ROOT)


def stool_args(dump: Path, data_root: Path, *extra: str):
    return parse_stool_args([
        "script=apps.main.train", f"config={DEBUG_YAML}", "nodes=1", "ngpu=0", "ncpu=1", "time=30",
        "partition=", f"dump_dir={dump}", f"data.root_dir={data_root}", *extra,
    ])  # fmt: skip


# ----------------------------------------------------------------------------------------------------------------
# Without a cluster
# ----------------------------------------------------------------------------------------------------------------


@pytest.fixture
def fake_srun(tmp_path, monkeypatch):
    """An `srun` on PATH that records its working folder, its arguments and the job's exported variables."""
    folder = tmp_path / "bin"
    folder.mkdir()
    record = tmp_path / "srun.json"
    script = folder / "srun"
    script.write_text(
        "#!/bin/bash\n"
        f'{shlex.quote(sys.executable)} -c \'import json, os, sys; json.dump({{"cwd": os.getcwd(), '
        f'"argv": sys.argv[1:], "DUMP_DIR": os.environ["DUMP_DIR"], '
        f'"LAUNCH_WITH": os.environ["LAUNCH_WITH"]}}, open("{record}", "w"))\' "$@"\n'
    )
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    return record


def test_bash_launcher_writes_the_job_files_and_runs_srun_in_the_code_snapshot(data, fake_srun):
    dump = data / "run"
    args = stool_args(dump, data / "data", "launcher=bash", "partition=debug", "steps=7", "optim.lr=0.01",
                      "config.model.dim=48")  # fmt: skip
    assert launch_job(args) is None

    submit = (dump / "submit.slurm").read_text()
    directives = [line for line in submit.splitlines() if line.startswith("#SBATCH")]
    assert directives == [
        "#SBATCH --job-name=debug", "#SBATCH --nodes=1", "#SBATCH --ntasks-per-node=1", "#SBATCH --cpus-per-task=1",
        "#SBATCH --time=30", "#SBATCH --mem=0", "#SBATCH --partition=debug",
        f"#SBATCH --output={dump}/logs/%j.stdout", f"#SBATCH --error={dump}/logs/%j.stderr",
        "#SBATCH --open-mode=append", "#SBATCH --signal=USR2@120", "#SBATCH --distribution=block",
    ]  # fmt: skip
    assert "--gres" not in submit

    # the overrides (plain and config.-prefixed) reach the job; everything else is the YAML as written
    config = yaml.safe_load((dump / "base_config.yaml").read_text())
    expected = yaml.safe_load(DEBUG_YAML.read_text())
    expected["steps"], expected["optim"]["lr"], expected["model"]["dim"] = 7, 0.01, 48
    expected["dump_dir"], expected["data"]["root_dir"] = str(dump), str(data / "data")
    assert config == expected

    call = json.loads(fake_srun.read_text())
    assert call["cwd"] == str(dump / "code")
    assert call["argv"] == ["-o", f"{dump}/logs/%j_%t.out", "-e", f"{dump}/logs/%j_%t.err", "-n", "1", "-N", "1",
                            sys.executable, "-u", "-m", "apps.main.train",
                            f"config={dump}/base_config.yaml"]  # fmt: skip
    assert (call["DUMP_DIR"], call["LAUNCH_WITH"]) == (str(dump), "SBATCH")

    # the snapshot holds the code and the configs, byte for byte, and no caches
    for name in ("lingua/training.py", "lingua/stool.py", "apps/main/train.py", "apps/main/configs/debug.yaml"):
        assert (dump / "code" / name).read_bytes() == (LINGUA_ROOT / name).read_bytes()
    assert not list((dump / "code").rglob("__pycache__")) and not list((dump / "code").rglob("*.md"))


def test_gpu_jobs_ask_for_gpus_and_one_task_per_gpu(data, fake_srun):
    dump = data / "run"
    venv = data / "venv"  # python_env may name an environment folder: its bin/python runs the job
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to(sys.executable)
    args = stool_args(dump, data / "data", "launcher=bash", "nodes=2", "ngpu=4", "ncpu=6", "account=lab", "qos=high",
                      "constraint=h100", "exclusive=true", "mem=200G", "signal_time=300", "stdout=true",
                      f"python_env={venv}")  # fmt: skip
    launch_job(args)
    submit = (dump / "submit.slurm").read_text()
    for line in ("--nodes=2", "--ntasks-per-node=4", "--gres=gpu:4", "--cpus-per-gpu=6", "--mem=200G",
                 "--account=lab", "--qos=high", "--constraint=h100", "--exclusive", "--signal=USR2@300"):  # fmt: skip
        assert f"#SBATCH {line}\n" in submit
    assert "--cpus-per-task" not in submit and "--exclude" not in submit
    argv = json.loads(fake_srun.read_text())["argv"]
    assert argv[:5] == ["-n", "8", "-N", "2", str(venv / "bin" / "python")]  # stdout=true: no per-task log files


def test_relative_paths_are_made_absolute_against_the_launch_folder(data, fake_srun, monkeypatch):
    monkeypatch.chdir(data)
    shutil.copytree(LINGUA_ROOT / "lingua", data / "lingua")
    shutil.copytree(LINGUA_ROOT / "apps", data / "apps", ignore=shutil.ignore_patterns("__pycache__"))
    launch_job(stool_args(Path("run"), Path("data"), "launcher=bash", "checkpoint.init_ckpt_path=old/ckpt"))
    config = yaml.safe_load((data / "run" / "base_config.yaml").read_text())
    assert config["dump_dir"] == str(data / "run") and config["data"]["root_dir"] == str(data / "data")
    assert config["checkpoint"]["init_ckpt_path"] == str(data / "old" / "ckpt")
    assert not (data / "run" / "code" / "run").exists()  # the run folder itself is not part of the snapshot


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["model.dimm=3"], "unknown config key 'model.dimm'; did you mean 'model.dim'?"),
        (["ngpus=2"], "unknown key 'ngpus': neither a stool option nor a field of TrainArgs; did you mean 'ngpu'?"),
        (["nodes=two"], "bad value for config key 'nodes'"),
        (["nodes=0"], "nodes=0; expected the number of nodes (at least 1)"),
        (["dump_dir="], "the config has no dump_dir"),
        (["steps=1.5"], "bad value for config key 'steps'"),
        (["config=/nonexistent.yaml"], "cannot read config file '/nonexistent.yaml'"),
        (["python_env=/nonexistent"], "python_env='/nonexistent' is neither a python executable nor an environment"),
    ],
)
def test_bad_input_is_one_clear_error_and_writes_nothing(data, capsys, arguments, message):
    dump = data / "run"
    argv = ["script=apps.main.train", f"config={DEBUG_YAML}", "nodes=1", "ngpu=0", "time=5", "launcher=false",
            f"dump_dir={dump}", *arguments]  # fmt: skip
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and err.startswith("error: ")
    assert not dump.exists()


def test_an_existing_dump_dir_is_refused_unless_allowed(data, fake_srun, capsys):
    dump = data / "run"
    dump.mkdir()
    (dump / "mine.txt").write_text("keep")
    argv = ["script=apps.main.train", f"config={DEBUG_YAML}", "nodes=1", "ngpu=0", "time=5", "launcher=bash",
            f"dump_dir={dump}", f"data.root_dir={data / 'data'}"]  # fmt: skip
    assert main(argv) == 1
    assert "already exists" in capsys.readouterr().err and sorted(os.listdir(dump)) == ["mine.txt"]
    assert main([*argv, "dirs_exists_ok=true"]) == 0
    assert (dump / "mine.txt").read_text() == "keep" and (dump / "submit.slurm").exists()


def test_a_yaml_that_does_not_parse_is_one_clear_error(data, capsys):
    bad = data / "bad.yaml"
    bad.write_text("model: [dim: 3\n")
    assert main(["script=apps.main.train", f"config={bad}", "nodes=1"]) == 1
    assert f"config file '{bad}' is not valid YAML" in capsys.readouterr().err


def test_an_empty_partition_means_the_clusters_default_and_is_the_default(data, fake_srun):
    dump = data / "run"
    argv = ["script=apps.main.train", f"config={DEBUG_YAML}", "nodes=1", "ngpu=0", "ncpu=1", "time=5", "partition=",
            "launcher=bash", f"dump_dir={dump}", f"data.root_dir={data / 'data'}"]  # fmt: skip
    args = parse_stool_args(argv)
    assert args.partition == "" and StoolArgs().partition == ""
    launch_job(args)
    assert "--partition" not in (dump / "submit.slurm").read_text()  # sbatch then uses the cluster's default


def test_slurm_memory_sizes():
    assert [parse_slurm_megabytes(t) for t in ("500", "500M", "64G", "1T", "2048K", "0")] == [
        500, 500, 65536, 2**20, 2, None,
    ]  # fmt: skip
    with pytest.raises(StoolError, match="mem='lots'; expected a SLURM memory size"):
        parse_slurm_megabytes("lots")


def test_slurm_durations_and_eval_job_shapes():
    assert [parse_slurm_minutes(t) for t in ("30", "30:00", "2:00:00", "1-00:00:00", "0:30", "infinite")] == [
        30, 30, 120, 1440, 1, None,
    ]  # fmt: skip
    # async_eval_gpus below 8 gives one node with that many GPUs (never 0 nodes), 0 a CPU task
    assert [eval_job_shape(n) for n in (0, 1, 4, 8, 16, 24)] == [(1, 0), (1, 1), (1, 4), (1, 8), (2, 8), (3, 8)]
    for bad in (-1, 12):
        with pytest.raises(ValueError, match=f"async_eval_gpus={bad}"):
            eval_job_shape(bad)


def test_a_job_submitted_from_a_job_does_not_inherit_its_identity(monkeypatch):
    for name in ("SLURM_JOB_ID", "SLURM_PROCID", "SLURMD_NODENAME", "SRUN_DEBUG", "SBATCH_PARTITION", "WANDB_RUN_ID",
                 "MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK", "TORCHELASTIC_RUN_ID"):  # fmt: skip
        monkeypatch.setenv(name, "1")
    monkeypatch.setenv("SLURM_CONF", "/etc/slurm/slurm.conf")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    env = scrubbed_environ()
    assert not [name for name in env if name.startswith(("SLURM_JOB", "SLURM_PROCID", "SLURMD", "SRUN", "SBATCH"))]
    assert not {"MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK", "WANDB_RUN_ID"} & set(env)
    assert env["SLURM_CONF"] == "/etc/slurm/slurm.conf" and env["HF_HUB_OFFLINE"] == "1"


# ----------------------------------------------------------------------------------------------------------------
# On the test cluster
# ----------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def slurm():
    """The single-node SLURM of tests/slurm/start_cluster.sh (started here if it is not up)."""
    if os.geteuid() != 0:
        pytest.skip("starting the test SLURM cluster needs root (tests/slurm/start_cluster.sh)")
    if shutil.which("slurmctld") is None and shutil.which("apt-get") is None:
        pytest.skip("SLURM is not installed and there is no apt-get to install slurm-wlm")
    result = subprocess.run(["bash", str(START_CLUSTER)], capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 0, f"start_cluster.sh failed:\n{result.stdout}\n{result.stderr}"


def job_field(job_id: str, name: str) -> str:
    text = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True).stdout
    match = re.search(rf"\b{name}=(\S+)", text)
    return match.group(1) if match else ""


def wait_for_job(job_id: str, dump: Path, until=None) -> str:
    """Poll the job until it has finished (or `until()` holds); returns its state."""
    deadline = time.time() + TIMEOUT
    while True:
        state = job_field(job_id, "JobState")
        if state in FINISHED or (until is not None and until()):
            return state
        assert time.time() < deadline, f"job {job_id} still {state}:\n{logs(dump)}"
        time.sleep(0.25)


def logs(dump: Path) -> str:
    return "\n".join(f"== {p.name}\n{p.read_text()[-3000:]}" for p in sorted((dump / "logs").glob("*")))


def losses(dump: Path) -> dict[int, float]:
    """Per-step loss of metrics.jsonl."""
    return {r["global_step"]: r["loss/out"] for r in map(json.loads, (dump / "metrics.jsonl").read_text().splitlines())}


def test_a_submitted_job_trains_to_the_end(slurm, data, capsys):
    dump = data / "run"
    job_id = launch_job(stool_args(dump, data / "data", "steps=8", "checkpoint.dump.every=4", *TINY))
    assert f"submitted job {job_id} (debug)" in capsys.readouterr().out
    assert wait_for_job(job_id, dump) == "COMPLETED", logs(dump)
    assert sorted(losses(dump)) == list(range(1, 9))
    assert sorted(p.name for p in (dump / "checkpoints").iterdir()) == ["0000000004", "0000000008"]
    state = json.loads((dump / "checkpoints" / "0000000008" / "train_state_00000.json").read_text())
    assert state["step"] == 8
    assert (dump / "logs" / f"{job_id}.stdout").exists() and (dump / "logs" / f"{job_id}_0.err").exists()


def test_sigusr2_checkpoints_requeues_and_resumes_exactly(slurm, data):
    steps = ("steps=100", "checkpoint.dump.every=1000", "checkpoint.eval.every=1000", *TINY)
    dump = data / "preempted"
    job_id = launch_job(stool_args(dump, data / "data", *steps))
    # the same run without interruption, as a plain local process, at the same time
    straight = data / "straight"
    command = [sys.executable, "-m", "apps.main.train", f"config={DEBUG_YAML}", f"dump_dir={straight}",
               f"data.root_dir={data / 'data'}", *steps]  # fmt: skip
    local = subprocess.Popen(command, cwd=LINGUA_ROOT, env=dict(os.environ, OMP_NUM_THREADS="1"),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip

    def mid_run() -> bool:
        metrics = dump / "metrics.jsonl"
        return metrics.exists() and len(metrics.read_text().splitlines()) >= 20

    assert wait_for_job(job_id, dump, until=mid_run) == "RUNNING", logs(dump)
    subprocess.run(["scancel", "--signal=USR2", job_id], check=True)
    assert wait_for_job(job_id, dump) == "COMPLETED", logs(dump)
    assert local.wait(timeout=TIMEOUT) == 0, local.stderr.read()[-3000:]

    assert job_field(job_id, "Restarts") == "1"
    assert f"requeued SLURM job {job_id}" in (dump / "train.log").read_text()
    saved = sorted(int(p.name) for p in (dump / "checkpoints").iterdir())
    assert len(saved) == 2 and 20 <= saved[0] < 100 and saved[1] == 100  # the SIGUSR2 save, then the final one
    assert (
        f"resumed from {dump / 'checkpoints' / f'{saved[0]:010d}'} at step {saved[0]}"
        in (dump / "train.log").read_text()
    )
    # the requeued job logged only the steps after its checkpoint (a restart from step 0 would log 1.. again), each
    # with the uninterrupted run's loss, bitwise
    logged = [
        (r["global_step"], r["loss/out"]) for r in map(json.loads, (dump / "metrics.jsonl").read_text().splitlines())
    ]
    assert [step for step, _ in logged] == list(range(1, 101))
    assert dict(logged) == losses(straight)


@pytest.mark.parametrize(
    "request_, asked",
    [
        (["ncpu=4096"], "1 node(s) with 4096 CPUs (ncpu=4096), 0 GPUs and all of its memory"),
        (["ncpu=1", "ngpu=1"], "1 node(s) with 1 CPUs (ncpu=1 per GPU x ngpu=1), 1 GPUs and all of its memory"),
        (["ncpu=1", "mem=1000T"], "1 node(s) with 1 CPUs (ncpu=1), 0 GPUs and 1048576000 MB (mem=1000T)"),
        (["ncpu=1", "nodes=2"], "2 node(s) with 1 CPUs (ncpu=1), 0 GPUs and all of its memory"),
    ],
)
def test_a_request_the_partition_cannot_hold_is_refused_with_the_numbers(slurm, data, capsys, request_, asked):
    """The default partition (debug, one node) is compared with what sinfo reports before anything is written."""
    dump = data / "run"
    argv = ["script=apps.main.train", f"config={DEBUG_YAML}", "nodes=1", "ngpu=0", "time=5", f"dump_dir={dump}",
            f"data.root_dir={data / 'data'}", *request_]  # fmt: skip
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert (
        err.startswith(f"error: partition 'debug' cannot run this job: it asks for {asked}, but ") and "\n" == err[-1]
    )
    assert "node(s) fit (the largest has " in err and " CPUs, 0 GPUs and " in err and "lower ncpu, ngpu, mem" in err
    assert not dump.exists()


def test_a_partition_that_does_not_exist_is_slurms_error_in_one_line(slurm, data, capsys):
    dump = data / "run"
    argv = ["script=apps.main.train", f"config={DEBUG_YAML}", "nodes=1", "ngpu=0", "ncpu=1", "partition=nosuchpart",
            f"dump_dir={dump}", f"data.root_dir={data / 'data'}"]  # fmt: skip
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err == "error: sbatch did not submit the job: sbatch: error: Batch job submission failed: " \
                  "Invalid partition name specified\n"  # fmt: skip
    assert not dump.exists()  # nothing half-made is left behind: the same command works once fixed
    # time=-1 takes the partition's limit: debug has none (14 days then), an unknown partition gets 3 days
    assert partition_minutes("debug") == 14 * 24 * 60 and partition_minutes("nosuchpart") == 3 * 24 * 60


def test_async_eval_is_a_cpu_job_whose_results_match_an_in_process_evaluation(slurm, data):
    tasks = data / "tasks"
    tasks.mkdir()
    docs = [{"question": "alpha alpha", "choices": [" alpha.", " omega."], "answer": 0},
            {"question": "beta beta beta", "choices": [" gamma", " beta"], "answer": 1},
            {"question": "delta", "choices": [" delta delta.", " alpha", " beta."], "answer": 0}]  # fmt: skip
    (tasks / "tiny_choice.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    task = {"task": "tiny_choice", "dataset_path": "json", "test_split": "test", "output_type": "multiple_choice",
            "dataset_kwargs": {"data_files": {"test": str(tasks / "tiny_choice.jsonl")}}, "doc_to_target": "answer",
            "doc_to_text": "{{question}}", "doc_to_choice": "choices", "metric_list": [{"metric": "acc"}]}  # fmt: skip
    (tasks / "tiny_choice.yaml").write_text(yaml.safe_dump(task))
    dump = data / "run"
    evaluation = ("async_eval_gpus=0", "eval.harness.tasks=[tiny_choice]", f"eval.harness.include_path={tasks}",
                  "eval.harness.include_defaults=false", "eval.harness.bootstrap_iters=0",
                  "eval.generator.dtype=fp32", "eval.generator.device=cpu")  # fmt: skip
    job_id = launch_job(stool_args(dump, data / "data", "steps=6", "checkpoint.eval.every=6", *TINY, *evaluation))
    assert wait_for_job(job_id, dump) == "COMPLETED", logs(dump)

    submitted = re.search(r"submitted SLURM job (\d+) to evaluate step 6", (dump / "train.log").read_text())
    assert submitted, (dump / "train.log").read_text()[-3000:]
    eval_dir = dump / "evals" / "0000000006"
    eval_job = submitted.group(1)
    assert wait_for_job(eval_job, eval_dir) == "COMPLETED", logs(eval_dir)
    submit = (eval_dir / "submit.slurm").read_text()
    assert "--gres" not in submit and "#SBATCH --partition=debug\n" in submit and " -n 1 -N 1 " in submit
    assert f"cd {dump / 'code'}\n" in submit  # the evaluation runs the code the training job runs

    line = json.loads((dump / "metrics.eval.jsonl").read_text())  # one line, appended by the eval job
    assert line["global_step"] == 6
    job_results = json.loads((eval_dir / "results.json").read_text())

    from apps.main.eval import main as eval_main

    local = data / "local_eval"
    assert eval_main([f"config={eval_dir / 'base_config.yaml'}", f"dump_dir={local}", "metric_log_dir=null"]) == 0
    local_results = json.loads((local / "results.json").read_text())
    assert line["tiny_choice"]["acc,none"] == local_results["results"]["tiny_choice"]["acc,none"]
    per_doc = {s["doc_id"]: s["filtered_resps"] for s in local_results["samples"]["tiny_choice"]}
    assert {s["doc_id"]: s["filtered_resps"] for s in job_results["samples"]["tiny_choice"]} == per_doc
