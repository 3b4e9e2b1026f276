"""The registry of generators: presets, one-sample functions and their verifiers, by name."""

from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import cache

from . import brevo, capo, depo, lano, mano
from .common import sample_rng


@dataclass(frozen=True)
class Generator:
    presets: dict
    sample: Callable  # (params, rng, split) -> record; with `indexed`: (params, split, seed, index) -> record
    verify: Callable  # record -> None | reason
    indexed: bool = False  # the sample derives its own randomness from (seed, index) (Capo: shared people set)


GENERATORS = {
    "depo": Generator(depo.PRESETS, depo.depo_sample, depo.verify_depo),
    "brevo": Generator(brevo.PRESETS, brevo.brevo_sample, brevo.verify_brevo),
    "mano": Generator(mano.PRESETS, mano.mano_sample, mano.verify_mano),
    "capo": Generator(capo.PRESETS, capo.capo_sample, capo.verify_capo, indexed=True),
    "lano": Generator(lano.PRESETS, lano.lano_sample, lano.verify_lano),
}
SPLITS = ("train", "test")


@cache
def resolve(generator: str, preset: str, split: str):
    """The Generator and checked params for a request; one clear error for anything unknown."""
    if generator not in GENERATORS:
        raise ValueError(f"unknown generator {generator!r}; expected one of {sorted(GENERATORS)}")
    spec = GENERATORS[generator]
    if preset not in spec.presets:
        raise ValueError(f"unknown {generator} preset {preset!r}; expected one of {sorted(spec.presets)}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    params = spec.presets[preset]
    params.check()
    return spec, params


def make_sample(generator: str, preset: str, split: str, seed: int, index: int) -> dict:
    """Sample number `index` of (generator, preset, split, seed): the same record wherever it is computed."""
    spec, params = resolve(generator, preset, split)
    if spec.indexed:
        record = spec.sample(params, split, seed, index)
    else:
        record = spec.sample(params, sample_rng(generator, preset, split, seed, index), split)
    meta = dict(params=dict(_params_dict(params)), generator=generator, preset=preset, split=split, seed=seed)
    record["meta"].update(meta, index=index)
    return record


@cache
def _params_dict(params) -> dict:
    return asdict(params)
