"""save_pretrained copies the flat files; a process without this project loads them with trust_remote_code."""

import json
import os

from ..remote_code import check_remote_code_round_trip


def test_save_pretrained_then_trust_remote_code_in_a_process_without_the_project(tmp_path, make_model):
    model = make_model(canon_set="ABCD", qk_norm=True, rope_dim=4)
    folder = tmp_path / "model"
    model.save_pretrained(folder)
    files = set(os.listdir(folder))
    assert {"model.safetensors", "config.json", "configuration_llama_canon.py", "modeling_llama_canon.py",
            "canon.py", "transformers_compat.py"} <= files  # fmt: skip
    auto_map = json.loads((folder / "config.json").read_text())["auto_map"]
    assert auto_map["AutoModelForCausalLM"] == "modeling_llama_canon.LlamaCanonForCausalLM"

    check_remote_code_round_trip(tmp_path, {"model": model}, vocab=61)
