"""The registry of generators: presets, one-sample functions and their verifiers, by name."""

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import cache

from . import brevo, capo, capo_check, depo, lano, mano
from .common import sample_hash, sample_rng


@dataclass(frozen=True)
class Generator:
    presets: dict
    sample: Callable  # (params, randomness, split) -> record; with `indexed`: (params, split, seed, index) -> record
    verify: Callable  # record -> None | reason
    indexed: bool = False  # the sample derives its own randomness from (seed, index) (Capo: shared people set)
    # (generator, preset, split, seed, index) -> the sample's randomness: a seeded random.Random, or for generators
    # with few draws per sample a blake2b state (seeding a Mersenne Twister costs about 5 us)
    randomness: Callable = sample_rng
    # record -> (reason, key, facts): what a record states about an entity (key), for checks across records
    statements: Callable | None = None


GENERATORS = {
    "depo": Generator(depo.PRESETS, depo.depo_sample, depo.verify_depo),
    "brevo": Generator(brevo.PRESETS, brevo.brevo_sample, brevo.verify_brevo),
    "mano": Generator(mano.PRESETS, mano.mano_sample, mano.verify_mano, randomness=sample_hash),
    "capo": Generator(
        capo.PRESETS, capo.capo_sample, capo_check.verify_capo, indexed=True, statements=capo_check.statements
    ),
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
        expected = getattr(spec.presets, "help", None) or f"one of {sorted(spec.presets)}"
        raise ValueError(f"unknown {generator} preset {preset!r}; expected {expected}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    params = spec.presets[preset]
    params.check()
    return spec, params


def make_sample(generator: str, preset: str, split: str, seed: int, index: int) -> dict:
    """Sample number `index` of (generator, preset, split, seed): the same record wherever it is computed."""
    record = _record(generator, preset, split, seed, index)
    meta = record["meta"]
    meta.update(_meta(generator, preset, split, seed), index=index)
    meta["params"] = dict(meta["params"])  # every record gets its own copy
    return record


def sample_line(generator: str, preset: str, split: str, seed: int, index: int) -> str:
    """The JSON line of `make_sample(...)`, compact. The record is only encoded, never handed out, so it shares the
    request's meta keys instead of copying them as make_sample does."""
    record = _record(generator, preset, split, seed, index)
    record["meta"] = {**record["meta"], **_meta(generator, preset, split, seed), "index": index}
    return _to_json(record) + "\n"


def _record(generator: str, preset: str, split: str, seed: int, index: int) -> dict:
    spec, params = resolve(generator, preset, split)
    if spec.indexed:
        return spec.sample(params, split, seed, index)
    return spec.sample(params, spec.randomness(generator, preset, split, seed, index), split)


@cache
def _meta(generator: str, preset: str, split: str, seed: int) -> dict:
    """The meta keys every sample of a request shares."""
    return dict(params=asdict(resolve(generator, preset, split)[1]), generator=generator, preset=preset, split=split,
                seed=seed)  # fmt: skip


# json.dumps(..., separators=(",", ":")) without building a new encoder for every line
_to_json = json.JSONEncoder(separators=(",", ":")).encode
