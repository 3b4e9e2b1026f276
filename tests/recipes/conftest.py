"""Recipes and results: the trainer (lingua_modified/) and the two generator scripts are importable from the tests."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
for folder in ("lingua_modified", "canon_llama_recipes", "canon_llama_results", "canon_linear_recipes"):
    if str(ROOT / folder) not in sys.path:
        sys.path.insert(0, str(ROOT / folder))
