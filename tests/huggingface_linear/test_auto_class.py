"""save_pretrained copies the flat files; a process without this project loads them with trust_remote_code."""

import json
import os

from ..remote_code import check_remote_code_round_trip
from .conftest import ARCHS

FILES = {
    "gla": ("configuration_gla_canon.py", "modeling_gla_canon.py"),
    "gdn": ("configuration_gated_deltanet_canon.py", "modeling_gated_deltanet_canon.py"),
    "mamba2": ("configuration_mamba2_canon.py", "modeling_mamba2_canon.py"),
}
SHARED = {"canon_fields.py", "canon.py", "linear_common.py", "linear_recurrences.py", "transformers_compat.py"}


def test_save_pretrained_then_trust_remote_code_in_a_process_without_the_project(tmp_path, make_model):
    models = []
    for arch in ARCHS:
        model = make_model(arch, "AbbCD")
        folder = tmp_path / arch
        model.save_pretrained(folder)
        files = set(os.listdir(folder))
        assert {"model.safetensors", "config.json", *FILES[arch]} | SHARED <= files, files
        auto_map = json.loads((folder / "config.json").read_text())["auto_map"]
        assert auto_map["AutoModelForCausalLM"] == FILES[arch][1][:-3] + "." + type(model).__name__
        models.append(model)

    check_remote_code_round_trip(tmp_path, dict(zip(ARCHS, models, strict=True)), vocab=37)
