"""apps.gla: the linear models (GLA5, GDN2, Mamba2) train with the shared loop, their checkpoints load into
huggingface_linear with the same logits, generation and evaluation go through apps.main's, and the 1B configs build
the published models."""

import json
import os
import subprocess
import sys
from pathlib import Path

import lm_eval
import pytest
import torch
from lm_eval.tasks import TaskManager

from apps.gla.eval import EvalArgs, launch_eval
from apps.gla.generate import LeftPaddedGenerator as PackedCausalTransformerGenerator
from apps.gla.generate import LeftPaddedGeneratorArgs as PackedCausalTransformerGeneratorArgs
from apps.gla.generate import load_consolidated_model_and_tokenizer
from apps.gla.train import MODEL, TrainArgs
from apps.gla.transformer import (
    LMTransformer,
    LMTransformerArgs,
    build_fsdp_grouping_plan,
    get_num_flop_per_token,
    recurrent_state_size,
)
from huggingface_linear import GatedDeltaNetCanonForCausalLM, GLACanonForCausalLM, Mamba2CanonForCausalLM
from lingua import stool
from lingua.args import parse_args
from lingua.checkpoint import consolidate_checkpoint

from .conftest import write_text_data
from .test_eval import harness_args, save_hf_byte_tokenizer, task_dir  # noqa: F401 (task_dir is a fixture)

LINGUA_ROOT = Path(__file__).resolve().parents[2] / "lingua_modified"
CONFIGS = LINGUA_ROOT / "apps" / "gla" / "configs"
HF_CLASSES = {"gla5": GLACanonForCausalLM, "gdn2": GatedDeltaNetCanonForCausalLM, "mamba2": Mamba2CanonForCausalLM}
TINY = {
    "gla5": dict(model_name="GLA5", dim=32, n_layers=2, n_heads=2, canon_set="AbbCD"),
    "gdn2": dict(model_name="GDN2", dim=32, n_layers=2, n_heads=2, canon_set="AbbCD"),
    "mamba2": dict(model_name="Mamba2", dim=32, n_layers=2, n_heads=4, canon_set="AbbCD", mamba_ssm=64,
                   mlp_type="mlp10"),
}  # fmt: skip
# the published parameter counts of GLA5Canon / GDN2Canon / Mamba2Canon 1B (embedding and head included)
PARAMETERS_1B = {"gla5": 1_345_183_744, "gdn2": 1_345_135_360, "mamba2": 1_354_302_592}
TIMEOUT = 300


def train(root: Path, family: str, *overrides: str) -> subprocess.CompletedProcess:
    command = [
        sys.executable, "-m", "apps.gla.train", f"config={CONFIGS / f'{family}_debug.yaml'}",
        f"dump_dir={root / 'run'}", f"data.root_dir={root / 'data'}", *overrides,
    ]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=str(LINGUA_ROOT), OMP_NUM_THREADS="1")
    return subprocess.run(command, cwd=LINGUA_ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUT)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, task_dir):  # noqa: F811
    """trained(family) -> the dump dir of its debug config run for 30 steps (run once, when first asked for). The
    GLA5 run also evaluates its final checkpoint on the tiny local tasks, through the trainer's in-process
    evaluation."""
    evaluation = [
        "eval.harness.tasks=[tiny_mc,tiny_gen]", f"eval.harness.include_path={task_dir}",
        "eval.harness.include_defaults=false", "eval.harness.bootstrap_iters=0", "eval.validation=null",
        "eval.generator.dtype=fp32", "eval.generator.device=cpu", "eval.generator.max_gen_len=8",
    ]  # fmt: skip
    runs = {}

    def run(family):
        if family not in runs:
            root = tmp_path_factory.mktemp(family)
            write_text_data(root / "data")
            result = train(root, family, *(evaluation if family == "gla5" else []))
            assert result.returncode == 0, result.stderr[-3000:]
            runs[family] = root / "run"
        return runs[family]

    return run


def test_two_processes_shard_initialise_and_train_mamba2(data):
    """FSDP2 over two processes: the model is sharded before init_weights, so its decay parameters (A_log, dt_bias)
    are filled as DTensors."""
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m", "apps.gla.train",
        f"config={CONFIGS / 'mamba2_debug.yaml'}", f"dump_dir={data / 'run'}", f"data.root_dir={data / 'data'}",
        "steps=12", "distributed.fsdp_type=full_shard",
    ]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=str(LINGUA_ROOT), OMP_NUM_THREADS="1")
    result = subprocess.run(command, cwd=LINGUA_ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr[-3000:]
    per_step = losses(data / "run")
    assert per_step[12] < 0.8 * per_step[1]
    state = torch.load(consolidate_checkpoint(data / "run" / "checkpoints" / "0000000012") / "consolidated.pth")
    A_log = state["model"]["trans.backbone.layers.0.mixer.A_log"]
    assert A_log.shape == (4,) and torch.isfinite(A_log).all()  # whole, unsharded


def losses(dump_dir: Path) -> dict[int, float]:
    lines = [json.loads(line) for line in (dump_dir / "metrics.jsonl").read_text().splitlines()]
    return {line["global_step"]: line["loss/out"] for line in lines}


def greedy_by_full_forwards(model, prompt: list[int], n: int) -> list[int]:
    tokens = list(prompt)
    for _ in range(n):
        tokens.append(int(model(torch.tensor([tokens]))[0, -1].argmax()))
    return tokens[len(prompt) :]


@pytest.mark.parametrize("family", sorted(HF_CLASSES))
def test_training_lowers_the_loss_and_the_checkpoint_loads_into_huggingface_linear(trained, family):
    run = trained(family)
    per_step = losses(run)
    assert sorted(per_step) == list(range(1, 31))
    assert per_step[30] < 0.5 * per_step[1]

    step = run / "checkpoints" / "0000000030"
    folder = consolidate_checkpoint(step)
    lingua, tokenizer = load_consolidated_model_and_tokenizer(folder, "cpu", "fp32")
    state = torch.load(folder / "consolidated.pth", weights_only=True)["model"]
    assert all(key.startswith("trans.") for key in state)  # a Lingua checkpoint's names: "trans." + the HF names

    cls = HF_CLASSES[family]
    from_folder = cls.from_pretrained(str(step), variant="consolidated")
    from_state = cls(from_folder.config).load_from_lingua_state(state).eval()
    ids = torch.tensor([tokenizer.encode("alpha alpha beta gamma gamma.", add_bos=True, add_eos=False)] * 2)
    with torch.no_grad():
        expected = lingua(ids)
        for hf in (from_folder, from_state):
            torch.testing.assert_close(hf(ids).logits.float(), expected, rtol=0, atol=1e-4)

    # generation through apps.main's generator: left-padded, cached decoding = argmax of repeated full forwards
    generator = PackedCausalTransformerGenerator(
        PackedCausalTransformerGeneratorArgs(dtype="fp32", device="cpu", max_gen_len=12), lingua, tokenizer
    )
    prompts = [generator.encode("gamma gamma"), generator.encode("beta beta beta beta")]
    with torch.no_grad():
        assert generator.generate_tokens(prompts, max_gen_len=12) == [
            greedy_by_full_forwards(lingua, p, 12) for p in prompts
        ]


def test_training_evaluates_through_apps_gla_eval_as_lm_evals_hf_model_does(trained, task_dir, tmp_path):  # noqa: F811
    """The trainer's in-process evaluation of a GLA5 checkpoint (apps.gla.eval) gives lm-eval's own `hf` results on
    the same weights saved as a Hugging Face model."""
    run = trained("gla5")
    [line] = [json.loads(x) for x in (run / "metrics.eval.jsonl").read_text().splitlines()]
    assert line["global_step"] == 30

    hf_dir = tmp_path / "hf"
    model = GLACanonForCausalLM.from_pretrained(str(run / "checkpoints" / "0000000030" / "consolidated"))
    model.save_pretrained(hf_dir)
    save_hf_byte_tokenizer(hf_dir)
    theirs = lm_eval.simple_evaluate(
        model="hf",
        model_args={"pretrained": str(hf_dir), "trust_remote_code": True, "device": "cpu", "dtype": "float32"},
        tasks=["tiny_mc", "tiny_gen"],
        task_manager=TaskManager(include_path=str(task_dir), include_defaults=False),
        bootstrap_iters=0,
    )
    assert line["tiny_mc"]["acc,none"] == theirs["results"]["tiny_mc"]["acc,none"]
    assert line["tiny_gen"]["exact_match,none"] == theirs["results"]["tiny_gen"]["exact_match,none"]

    # and the per-request log-likelihoods agree (the eval CLI on the same checkpoint, samples kept)
    cfg = EvalArgs(
        dump_dir=str(tmp_path / "eval"),
        ckpt_dir=str(run / "checkpoints" / "0000000030"),
        generator=PackedCausalTransformerGeneratorArgs(dtype="fp32", device="cpu", max_gen_len=8),
        harness=harness_args(task_dir, ["tiny_mc"]),
        validation=None,
    )
    ours = launch_eval(cfg)["harness"]
    for a, b in zip(ours["samples"]["tiny_mc"], theirs["samples"]["tiny_mc"], strict=True):
        for (ll_a, greedy_a), (ll_b, greedy_b) in zip(a["filtered_resps"], b["filtered_resps"], strict=True):
            assert ll_a == pytest.approx(ll_b, abs=1e-3) and greedy_a == greedy_b


@pytest.mark.parametrize("family", sorted(TINY))
def test_init_weights_after_to_empty_initialises_every_tensor_reproducibly(family):
    def materialised(seed):
        with torch.device("meta"):
            model = LMTransformer(LMTransformerArgs(vocab_size=64, **TINY[family]))
        model.to_empty(device="cpu")
        torch.manual_seed(seed)
        model.init_weights()
        return model

    a, b, c = materialised(0), materialised(0), materialised(1)
    for (name, x), y, z in zip(a.state_dict().items(), b.state_dict().values(), c.state_dict().values(), strict=True):
        assert torch.isfinite(x).all() and torch.equal(x, y), name
        if "norm" in name:
            assert torch.equal(x, torch.ones_like(x)), name  # every RMSNorm starts at 1
        elif name.endswith("lm_head.weight"):
            assert not torch.equal(x, z)
            std = a.trans.config.initializer_range
            assert 0.8 * std < x.std() < 1.2 * std  # the HF init (normal, initializer_range), not to_empty's garbage


@pytest.mark.parametrize("family", sorted(TINY))
def test_fsdp_plan_names_the_embedding_every_block_and_the_head(family):
    args = LMTransformerArgs(vocab_size=64, **TINY[family])
    with torch.device("meta"):
        model = LMTransformer(args)
    plan = build_fsdp_grouping_plan(args)
    base = "trans.backbone" if family == "mamba2" else "trans.model"
    assert plan == [(f"{base}.embeddings", False), (f"{base}.layers.0", False), (f"{base}.layers.1", False),
                    ("trans.lm_head", True)]  # fmt: skip
    for name, _ in plan:
        model.get_submodule(name)
    tied = LMTransformerArgs(vocab_size=64, weight_tying=True, **TINY[family])
    assert ("trans.lm_head", True) not in build_fsdp_grouping_plan(tied)


@pytest.mark.parametrize("family", sorted(PARAMETERS_1B))
def test_1B_configs_build_the_published_models(family):
    args = parse_args(TrainArgs, [f"config={CONFIGS / f'{family}_canon_1B.yaml'}"])
    args.model.vocab_size = 32000  # the Llama-2 tokenizer's size (the trainer reads it from the file)
    with torch.device("meta"):
        model = LMTransformer(args.model)
    assert sum(p.numel() for p in model.parameters()) == PARAMETERS_1B[family]
    # every recipe's recurrent memory is 256 d per layer (how the published sizes were matched)
    assert recurrent_state_size(model.trans.config) == 256 * args.model.dim
    assert get_num_flop_per_token(0, args.model) == 12 * 24 * 256 * 2048


def test_fields_the_linear_models_do_not_use_are_refused():
    with pytest.raises(ValueError, match=r"model fields \['qk_norm', 'rope_dim'\] are set"):
        LMTransformer(LMTransformerArgs(vocab_size=64, qk_norm=True, rope_dim=8, **TINY["gla5"]))
    with pytest.raises(ValueError, match="model_name='Llama'"):
        LMTransformer(LMTransformerArgs(vocab_size=64, **dict(TINY["gla5"], model_name="Llama")))


def test_eval_account_qos_and_exclude_reach_the_submitted_eval_job(monkeypatch):
    """The linear recipes' TrainArgs keys set the SLURM options of async evaluation jobs; empty keeps the job's own."""
    submitted = []
    monkeypatch.setattr(stool, "launch_job", lambda args, env: submitted.append(args) or "42")
    monkeypatch.setenv("SLURM_JOB_QOS", "normal")
    args = parse_args(TrainArgs, [f"config={CONFIGS / 'gla5_debug.yaml'}", "eval_account=acct", "exclude=node7"])
    assert (
        stool.launch_eval_job({"name": "e", "dump_dir": "x"}, 8, "apps.gla.eval", **MODEL.eval_job_options(args))
        == "42"
    )
    [job] = submitted
    assert (job.account, job.qos, job.exclude, job.script, job.nodes, job.ngpu) == (
        "acct", "normal", "node7", "apps.gla.eval", 1, 8,
    )  # fmt: skip
