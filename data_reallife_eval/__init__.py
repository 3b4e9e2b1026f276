"""Real-life evaluation tasks: multi-hop birth-year retrieval and Babilong."""

from .babilong import babilong_prompt, compare_answers, load_babilong
from .background import load_background
from .multihop import MultihopBuilder, MultihopSample, is_correct

__all__ = [
    "MultihopBuilder",
    "MultihopSample",
    "babilong_prompt",
    "compare_answers",
    "is_correct",
    "load_babilong",
    "load_background",
]
