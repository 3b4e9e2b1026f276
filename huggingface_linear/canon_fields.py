"""The Canon fields shared by the three linear-model configs, and their validation.

`canon_set` is read by membership only: "A" (after the pre-mixer norm), "B" (inside the mixer), "C" (after the
pre-MLP norm), "D" (inside the MLP). The lowercase "b" names the architecture's own short convolution, which the
configs switch with `use_short_conv` (GLA, GDN) or `noconv1d` (Mamba2); in `canon_set` it is informational, so
"AbbCD" == "AbCD" (Canon A, C, D plus the original conv) and "bb" == "b" (the original conv only: the "conv"
baselines). The doubled "bb" exists only so recipe file names differ from "ABCD" on case-insensitive file systems.
"""

CANON_DEFAULTS = {
    "canon_set": "",
    "canon_bias": False,
    "canon_activation": False,
    "canon_kernel": 4,
    "canon_residual": True,
}
CANON_LETTERS = "AbBCD"


def set_canon_fields(config, kwargs: dict) -> None:
    """Pop the canon_* fields from `kwargs` (with the published defaults) onto `config`, and validate them."""
    for name, default in CANON_DEFAULTS.items():
        setattr(config, name, kwargs.pop(name, default))
    unknown = sorted(set(config.canon_set) - set(CANON_LETTERS))
    if unknown:
        raise ValueError(
            f"canon_set={config.canon_set!r} contains {''.join(unknown)!r}; expected letters from {CANON_LETTERS!r} "
            "(A, B, C, D: Canon layers; b: the architecture's own short convolution)"
        )
    if not isinstance(config.canon_kernel, int) or config.canon_kernel < 1:
        raise ValueError(f"canon_kernel={config.canon_kernel!r}; expected an integer >= 1")


def auto_map(stem: str, prefix: str) -> dict:
    """The remote-code entry points of one model: configuration_<stem>.py / modeling_<stem>.py."""
    return {
        "AutoConfig": f"configuration_{stem}.{prefix}Config",
        "AutoModel": f"modeling_{stem}.{prefix}Model",
        "AutoModelForCausalLM": f"modeling_{stem}.{prefix}ForCausalLM",
    }


def check_choice(name: str, value, allowed) -> None:
    """One clear error for a config value outside the supported set."""
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not supported; expected one of {list(allowed)}")


def check_divisible(name: str, value: int, divisor_name: str, divisor: int) -> None:
    if divisor <= 0 or value % divisor:
        raise ValueError(f"{name}={value} must be a positive multiple of {divisor_name}={divisor}")
