"""The synthetic pretraining playground (Depo, Brevo, Mano so far): generators, verifiers and one CLI."""

from .brevo import BrevoParams, brevo_sample, verify_brevo
from .depo import DepoParams, depo_sample, verify_depo
from .generators import GENERATORS, make_sample
from .mano import ManoParams, mano_sample, verify_mano
from .writer import write_dataset

__all__ = [
    "GENERATORS",
    "BrevoParams",
    "DepoParams",
    "ManoParams",
    "brevo_sample",
    "depo_sample",
    "make_sample",
    "mano_sample",
    "verify_brevo",
    "verify_depo",
    "verify_mano",
    "write_dataset",
]
