"""Lingua checkpoint folders, wherever they are: finding one (a local folder or a Hub repo in that layout), reading it,
checking a renamed state dict against the model, and casting and placing the loaded model.

A Lingua folder holds `params.json` (the run's configuration, with a `model` section) and `consolidated.pth`
(`{"model": state_dict}`), either directly or in a variant sub-folder ("default" unless another is named; the
trainer's own consolidated checkpoints are the variant "consolidated"). Each model package has its own
`lingua_bridge.py` for what differs between them (parameter names, params.json -> config); this file is what they
share. Torch only; `huggingface_linear/lingua_checkpoint.py` is a link to it.
"""

import json
import os

import torch

LOADING_KEYWORDS = ("dtype", "torch_dtype", "device_map", "attn_implementation", "local_files_only", "token")


def find_lingua_folder(path, variant=None, local_files_only=False, token=None):
    """The folder holding params.json + consolidated.pth for `path`; None when `path` is None or a Hugging Face folder
    or repo (config.json), which the standard loader reads.

    A local folder that is neither raises one clear error. A Hub id is downloaded when its repo holds
    `<variant>/params.json` + `consolidated.pth`; any other repo (or no network) is left to the standard loader.
    """
    if path is None:  # config + state_dict given directly: nothing to look up
        return None
    path = os.fspath(path)
    subfolder = variant or "default"
    if os.path.isdir(path):
        if os.path.isfile(os.path.join(path, "config.json")):
            return None
        for folder in (os.path.join(path, subfolder), path):
            has_params = os.path.isfile(os.path.join(folder, "params.json"))
            has_weights = os.path.isfile(os.path.join(folder, "consolidated.pth"))
            if has_params and has_weights:
                return folder
            if has_weights:
                raise FileNotFoundError(f"lingua folder {folder} has consolidated.pth but no params.json")
            if has_params:
                raise FileNotFoundError(f"lingua folder {folder} has params.json but no consolidated.pth")
        raise FileNotFoundError(
            f"{path} is neither a Hugging Face folder (config.json) nor a Lingua folder "
            f"({subfolder}/params.json + consolidated.pth)"
        )
    if os.path.exists(path) or local_files_only:
        return None
    return download_lingua_folder(path, subfolder, token)


def download_lingua_folder(repo_id, subfolder, token=None):
    """The local copy of `<subfolder>/` of a Hub repo in the Lingua layout, or None when the repo is not one."""
    try:
        from huggingface_hub import hf_hub_download

        params = hf_hub_download(repo_id=repo_id, filename=f"{subfolder}/params.json", token=token)
        hf_hub_download(repo_id=repo_id, filename=f"{subfolder}/consolidated.pth", token=token)
    except Exception:  # not a Lingua-layout repo, or no network: the standard loader decides and reports
        return None
    return os.path.dirname(params)


def read_lingua_folder(folder):
    """(params, state_dict) of a Lingua folder: params.json as a dict and the model's state from consolidated.pth."""
    with open(os.path.join(folder, "params.json")) as f:
        params = json.load(f)
    if "model" not in params:
        raise ValueError(
            f"{folder}/params.json has no 'model' section (keys: {sorted(params)}); expected a Lingua dump"
        )
    state = torch.load(os.path.join(folder, "consolidated.pth"), map_location="cpu", weights_only=True)
    return params, state["model"] if "model" in state else state


def pop_loading_keywords(kwargs: dict) -> dict:
    """Remove from `kwargs` the from_pretrained keywords that are not config fields; return them by name (dtype
    under "dtype" whichever of dtype / torch_dtype was given)."""
    found = {name: kwargs.pop(name) for name in LOADING_KEYWORDS if name in kwargs}
    if "torch_dtype" in found:
        found.setdefault("dtype", found.pop("torch_dtype"))
    return found


def load_checked(model, mapped: dict, unexpected=(), strict=True):
    """Load `mapped` (this model's parameter names) into `model`. Missing: the model's keys not in `mapped`
    (lm_head.weight may be absent when tied to the embedding); with strict, one error lists the missing and
    `unexpected` keys before anything is loaded. Returns (missing, unexpected), both sorted."""
    expected = set(model.state_dict())
    if model.config.tie_word_embeddings:
        expected.discard("lm_head.weight")
    missing, unexpected = sorted(expected - set(mapped)), sorted(unexpected)
    if strict and (missing or unexpected):
        raise KeyError(f"lingua state dict does not match this model: missing {missing}, unexpected {unexpected}")
    model.load_state_dict(mapped, strict=False)
    return missing, unexpected


def cast_and_place(model, dtype=None, device=None):
    """`model` in eval mode, cast to `dtype` (a torch.dtype or its name) and moved to `device` (a device or its name);
    None or "auto" leaves either as it is."""
    if isinstance(dtype, str) and dtype != "auto":
        dtype = getattr(torch, dtype)
    if isinstance(dtype, torch.dtype):
        model = model.to(dtype)
    if isinstance(device, (str, torch.device)) and device != "auto":
        model = model.to(device)
    return model.eval()
