"""Shared pytest setup: tests are CPU-only and offline."""

import os

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

if os.environ.get("PYTEST_XDIST_WORKER"):
    # one intra-op thread per xdist worker: oneDNN's OpenMP threads spin-wait, and two workers x two threads on a
    # two-core machine made the suite three times slower
    torch.set_num_threads(1)
