"""The synthetic pretraining playground (Depo, Brevo, Mano, Capo, Lano): generators, verifiers and one CLI."""

from .brevo import BrevoParams, brevo_sample, verify_brevo
from .capo import CapoParams, capo_sample, generate_bior, person
from .capo_check import verify_capo
from .depo import DepoParams, depo_sample, verify_depo
from .generators import GENERATORS, make_sample
from .lano import LanoParams, derive, lano_sample, verify_lano
from .lano_builder import build_grammar
from .lano_dp import count_parses, is_member, kl_divergence, min_substitutions, next_token_probs, parse
from .lano_grammar import Grammar, load_grammar
from .mano import ManoParams, mano_sample, verify_mano
from .writer import write_dataset

__all__ = [
    "BrevoParams",
    "CapoParams",
    "DepoParams",
    "GENERATORS",
    "Grammar",
    "LanoParams",
    "ManoParams",
    "brevo_sample",
    "build_grammar",
    "capo_sample",
    "count_parses",
    "depo_sample",
    "derive",
    "generate_bior",
    "is_member",
    "kl_divergence",
    "lano_sample",
    "load_grammar",
    "make_sample",
    "mano_sample",
    "min_substitutions",
    "next_token_probs",
    "parse",
    "person",
    "verify_brevo",
    "verify_capo",
    "verify_depo",
    "verify_lano",
    "verify_mano",
    "write_dataset",
]
