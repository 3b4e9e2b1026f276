"""The synthetic pretraining playground (Depo, Brevo so far): generators, verifiers and one CLI."""

from .brevo import BrevoParams, brevo_sample, verify_brevo
from .depo import DepoParams, depo_sample, verify_depo
from .generators import GENERATORS, make_sample
from .writer import write_dataset

__all__ = [
    "GENERATORS",
    "BrevoParams",
    "DepoParams",
    "brevo_sample",
    "depo_sample",
    "make_sample",
    "verify_brevo",
    "verify_depo",
    "write_dataset",
]
