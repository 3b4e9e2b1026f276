"""Configuration: a dataclass tree with defaults, then a YAML file, then `key.sub=value` command-line overrides.

Merging goes through OmegaConf's structured configs, so types are checked and an unknown key anywhere inside a
dataclass subtree is an error. Fields typed `Optional[Any]` (such as `TrainArgs.eval`) accept any nested map.
"""

import difflib
import sys
from dataclasses import fields
from typing import TypeVar

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from .atomic import write_atomic  # also imported from here by the apps

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration that does not fit the dataclass tree (unknown key, wrong type, unreadable file)."""


def _closest_key(base: DictConfig, dotted: str) -> str | None:
    """The valid key closest to an unknown dotted key, among the keys of its parent node."""
    prefix, _, name = dotted.rpartition(".")
    parent = OmegaConf.select(base, prefix) if prefix else base
    if not isinstance(parent, DictConfig):
        return None
    match = difflib.get_close_matches(name, [str(k) for k in parent.keys()], n=1, cutoff=0.5)
    return f"{prefix}.{match[0]}" if match and prefix else (match[0] if match else None)


def dataclass_from_dict(cls: type[T], data, strict: bool = True) -> T:
    """An instance of `cls` built from its defaults with `data` (a dict or DictConfig) merged on top.

    strict=True: an unknown key is a ConfigError naming it and the closest valid key; strict=False: unknown keys are
    dropped (used for free-form option maps).
    """
    base = OmegaConf.structured(cls())
    if not strict:
        known = {f.name for f in fields(cls)}
        data = {
            k: v
            for k, v in (OmegaConf.to_container(data) if isinstance(data, DictConfig) else data).items()
            if k in known
        }
    try:
        merged = OmegaConf.merge(base, data)
        return OmegaConf.to_object(merged)
    except ConfigKeyError as error:
        key = error.full_key or str(error.key)
        hint = _closest_key(base, key)
        raise ConfigError(
            f"unknown config key {key!r}"
            + (f"; did you mean {hint!r}?" if hint else "; it is not a field of the config")
        ) from None
    except OmegaConfBaseException as error:
        first_line = str(error).splitlines()[0]
        raise ConfigError(f"bad value for config key {error.full_key!r}: {first_line}") from None


def load_yaml(path: str) -> dict:
    try:
        with open(path) as f:
            data = yaml.safe_load(f)
    except OSError as error:
        raise ConfigError(f"cannot read config file {path!r} ({error.strerror})") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"config file {path!r} is not valid YAML: {error}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path!r} holds a {type(data).__name__}; expected a mapping of keys")
    return data


def cli_overrides(argv: list[str]) -> tuple[str | None, dict]:
    """(config path, the other `key=value` arguments as a nested dict) from a command line."""
    for arg in argv:
        if "=" not in arg:
            raise ConfigError(
                f"argument {arg!r} is not of the form key=value (e.g. config=apps/main/configs/debug.yaml)"
            )
    try:
        cli = OmegaConf.to_container(OmegaConf.from_dotlist(argv))
    except OmegaConfBaseException as error:
        raise ConfigError(f"cannot parse the command line: {str(error).splitlines()[0]}") from None
    return cli.pop("config", None), cli


def merge_sources(*sources: dict) -> dict:
    """Later sources win key by key; nested maps merge; lists are replaced."""
    return OmegaConf.to_container(OmegaConf.merge(*(OmegaConf.create(s) for s in sources)), resolve=True)


def parse_args(cls: type[T], argv: list[str] | None = None) -> T:
    """`cls` defaults <- the YAML named by `config=` <- the remaining `key.sub=value` arguments.

    `config=[recipe.yaml,overlay.yaml]` merges several files in order (e.g. a recipe, then a scaled-down overlay).
    """
    path, cli = cli_overrides(sys.argv[1:] if argv is None else argv)
    if path is None:
        raise ConfigError("missing config=<path to a YAML file>")
    paths = path if isinstance(path, list) else [path]
    return dataclass_from_dict(cls, merge_sources(*(load_yaml(str(p)) for p in paths), cli))


def dataclass_to_dict(obj) -> dict:
    return obj if isinstance(obj, dict) else OmegaConf.to_container(OmegaConf.structured(obj), resolve=True)


def dump_config(config, path: str) -> None:
    """Write the full config (defaults included) as YAML, atomically."""
    text = yaml.safe_dump(dataclass_to_dict(config), sort_keys=False)
    write_atomic(path, text)


def flatten_dict(d: dict, parent_key: str = "", sep: str = "_") -> dict:
    items = {}
    for key, value in d.items():
        name = f"{parent_key}{sep}{key}" if parent_key else key
        if isinstance(value, dict):
            items.update(flatten_dict(value, name, sep))
        else:
            items[name] = value
    return items
