"""Config keys that used to be accepted and then silently do nothing: each is now honoured or refused with one error
naming the key and what is expected."""

import json
from pathlib import Path

import pytest

from apps.gla.train import TrainArgs as GlaTrainArgs
from apps.gla.transformer import LMTransformerArgs, check_args, hf_config
from apps.main.train import TrainArgs
from lingua.args import parse_args
from lingua.data import DataArgs, build_dataloader_from_args, init_dataloader_state_from_args
from lingua.tokenizer import build_tokenizer
from lingua.training import validate_train_args

REPO = Path(__file__).resolve().parents[2]
LINGUA_ROOT = REPO / "lingua_modified"
GLA_CONFIGS = LINGUA_ROOT / "apps" / "gla" / "configs"


def mamba2(**fields) -> LMTransformerArgs:
    return LMTransformerArgs(model_name="Mamba2", mlp_type="mlp10", dim=32, n_heads=4, vocab_size=64, **fields)


@pytest.mark.parametrize("size", [None, 64, 128, 256])
def test_mamba_ssm_sizes_that_mamba2_takes_are_honoured(size):
    args = mamba2(mamba_ssm=size)
    check_args(args)
    assert hf_config(args).state_size == (size or 256)


@pytest.mark.parametrize("size", [8, 16, 512])
def test_other_mamba_ssm_sizes_are_refused(size):
    with pytest.raises(ValueError, match=rf"model\.mamba_ssm={size}; expected one of 64, 128, 256"):
        check_args(mamba2(mamba_ssm=size))


def test_mamba_ssm_on_a_model_without_an_ssm_and_mamba2_norm_eps_are_refused():
    with pytest.raises(ValueError, match=r"model\.mamba_ssm=128 but only Mamba2 has an SSM state; expected null"):
        check_args(LMTransformerArgs(model_name="GLA5", dim=32, n_heads=2, vocab_size=64, mamba_ssm=128))
    with pytest.raises(ValueError, match=r"model\.norm_eps=1e-06 but Mamba2 keeps its norms' epsilon at 1e-05"):
        check_args(mamba2(norm_eps=1e-6))


@pytest.mark.parametrize("key, value", [("rope_theta", 500000.0), ("multiple_of", 64)])
def test_llama_only_keys_in_a_linear_model_section_are_refused(key, value):
    with pytest.raises(ValueError, match=rf"model fields \['{key}'\] are set but the linear models do not use them"):
        check_args(LMTransformerArgs(model_name="GDN2", dim=32, n_heads=2, vocab_size=64, **{key: value}))


def test_the_published_linear_configs_still_load():
    """Every linear recipe's lingua model JSON and the apps/gla YAML configs parse and pass the model checks."""
    jsons = sorted((REPO / "canon_linear_recipes").glob("*_model_lingua.json"))
    assert len(jsons) == 48
    for path in jsons:
        check_args(LMTransformerArgs(**dict(json.loads(path.read_text()), vocab_size=32000)))
    for path in sorted(GLA_CONFIGS.glob("*.yaml")):
        if "model_name" not in path.read_text():  # not a training config (e.g. an evaluation one)
            continue
        args = parse_args(GlaTrainArgs, [f"config={path}"])
        args.model.vocab_size = 258
        check_args(args.model)


def test_spawn_method_starts_the_loader_process_and_fork_is_refused(data):
    args = DataArgs(root_dir=str(data / "data"), sources={"debug": 1.0}, batch_size=2, seq_len=16, prefetch_size=2)
    state = init_dataloader_state_from_args(args, 0, 1)
    for method, popen in (("spawn", "popen_spawn_posix"), ("forkserver", "popen_forkserver")):
        with build_dataloader_from_args(args, state, method) as batches:
            next(batches)
            assert type(batches.process._popen).__module__ == f"multiprocessing.{popen}"
    train_args = parse_args(TrainArgs, [f"config={LINGUA_ROOT / 'apps/main/configs/debug.yaml'}",
                                        f"data.root_dir={data / 'data'}", "distributed.spawn_method=fork"])  # fmt: skip
    with pytest.raises(ValueError, match=r"distributed\.spawn_method='fork'; expected one of forkserver, spawn"):
        validate_train_args(train_args, build_tokenizer(train_args.data.tokenizer), 1)


def train_args(data, *overrides):
    argv = [f"config={LINGUA_ROOT / 'apps/main/configs/debug.yaml'}", f"data.root_dir={data / 'data'}", *overrides]
    args = parse_args(TrainArgs, argv)
    validate_train_args(args, build_tokenizer(args.data.tokenizer), 1)
    return args


def test_wandb_name_and_resume_keep_what_the_user_wrote(data):
    args = train_args(data, "name=run1", "logging.wandb.name=mine", "logging.wandb.resume=true")
    assert args.logging.wandb.name == "mine" and args.logging.wandb.resume is True
    args = train_args(data, "name=run1", "logging.wandb.project=p", "logging.wandb.resume=allow")
    assert args.logging.wandb.name == "run1" and args.logging.wandb.resume == "allow"  # no name: the run's
    with pytest.raises(ValueError, match=r"logging\.wandb\.resume='True'; expected true, false or one of allow"):
        train_args(data, "logging.wandb.resume='True'")
