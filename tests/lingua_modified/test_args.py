"""Config merging: defaults <- YAML <- command line, strict keys with a hint, clear errors."""

from dataclasses import dataclass, field

import pytest
import yaml

from lingua.args import ConfigError, dataclass_from_dict, flatten_dict, parse_args


@dataclass
class Inner:
    lr: float = 3e-4
    steps: int = 10
    sources: dict[str, float] = field(default_factory=dict)


@dataclass
class Outer:
    name: str = "run"
    inner: Inner = field(default_factory=Inner)
    eval: dict | None = None


def write(tmp_path, data) -> str:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_later_sources_win_and_maps_merge(tmp_path):
    path = write(tmp_path, {"name": "yaml", "inner": {"lr": "1e-3", "sources": {"a": 1.0}}})
    args = parse_args(Outer, [f"config={path}", "inner.steps=7", "inner.sources.b=0.5", "eval.tasks=[x,y]"])
    assert args.name == "yaml"
    assert args.inner.lr == pytest.approx(1e-3)  # a YAML string "1e-3" becomes a float
    assert args.inner.steps == 7
    assert args.inner.sources == {"a": 1.0, "b": 0.5}  # a command-line key adds to a free-form map
    assert args.eval == {"tasks": ["x", "y"]}


def test_several_config_files_merge_in_order(tmp_path):
    first = write(tmp_path, {"name": "recipe", "inner": {"steps": 100, "lr": 0.1}})
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text(yaml.safe_dump({"inner": {"steps": 20}}))
    args = parse_args(Outer, [f"config=[{first},{overlay}]", "inner.lr=0.5"])
    assert (args.name, args.inner.steps, args.inner.lr) == ("recipe", 20, 0.5)


def test_unknown_key_names_the_closest_valid_one(tmp_path):
    path = write(tmp_path, {"inner": {"stepz": 3}})
    with pytest.raises(ConfigError, match=r"unknown config key 'inner\.stepz'; did you mean 'inner\.steps'"):
        parse_args(Outer, [f"config={path}"])


def test_wrong_type_and_bad_command_lines(tmp_path):
    path = write(tmp_path, {})
    with pytest.raises(ConfigError, match="inner.steps"):
        parse_args(Outer, [f"config={path}", "inner.steps=2.5"])
    with pytest.raises(ConfigError, match="missing config="):
        parse_args(Outer, ["inner.steps=2"])
    with pytest.raises(ConfigError, match="not of the form key=value"):
        parse_args(Outer, [f"config={path}", "steps"])
    with pytest.raises(ConfigError, match="cannot read config file"):
        parse_args(Outer, [f"config={tmp_path / 'missing.yaml'}"])
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        parse_args(Outer, [f"config={tmp_path / 'list.yaml'}"])


def test_non_strict_drops_unknown_keys():
    assert dataclass_from_dict(Inner, {"lr": 0.1, "nope": 1}, strict=False) == Inner(lr=0.1)


def test_flatten_dict():
    assert flatten_dict({"a": {"b": 1, "c": {"d": 2}}, "e": 3}, sep="/") == {"a/b": 1, "a/c/d": 2, "e": 3}
