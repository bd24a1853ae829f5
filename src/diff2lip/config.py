"""Typed dataclass configs: strict loading (unknown keys are errors), YAML/JSON round trips.

Every model and trainer config is a (possibly nested) ``@dataclass``. ``from_dict`` rebuilds it,
recursing into nested dataclass fields and converting lists back to tuples where the field is a tuple,
and raises :class:`~diff2lip.errors.Diff2LipError` naming the unknown or mistyped key.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from diff2lip.errors import Diff2LipError
from diff2lip.fileio import write_text_atomic

T = TypeVar("T")


def to_dict(cfg: Any) -> dict[str, Any]:
    """Dataclass → plain dict of JSON/YAML-safe values (tuples become lists)."""

    def convert(v: Any) -> Any:
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            return {f.name: convert(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [convert(x) for x in v]
        if isinstance(v, dict):
            return {k: convert(x) for k, x in v.items()}
        return v

    return convert(cfg)


def _coerce(tp: Any, value: Any, where: str) -> Any:
    """Convert ``value`` to the annotated type ``tp`` where a lossless conversion exists."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise Diff2LipError(f"config key '{where}' must be a mapping, got {type(value).__name__}")
        return from_dict(tp, value, _prefix=f"{where}.")
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        non_none = [a for a in args if a is not type(None)]
        for a in non_none:
            try:
                return _coerce(a, value, where)
            except (Diff2LipError, TypeError, ValueError):
                continue
        raise Diff2LipError(f"config key '{where}' has an invalid value {value!r}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise Diff2LipError(f"config key '{where}' must be a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], v, where) for v in value)
        if args and len(args) != len(value):
            raise Diff2LipError(f"config key '{where}' must have {len(args)} items, got {len(value)}")
        return tuple(_coerce(a, v, where) for a, v in zip(args, value)) if args else tuple(value)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise Diff2LipError(f"config key '{where}' must be a list, got {value!r}")
        return [_coerce(args[0], v, where) for v in value] if args else list(value)
    if origin is dict or tp is Any or origin is typing.Literal:
        if origin is typing.Literal and value not in args:
            raise Diff2LipError(f"config key '{where}' must be one of {list(args)}, got {value!r}")
        return value
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if tp is bool and isinstance(value, bool):
        return value
    if tp is str and isinstance(value, str):
        return value
    if tp in (int, float, bool, str):
        raise Diff2LipError(f"config key '{where}' must be {tp.__name__}, got {value!r}")
    return value


def from_dict(cls: type[T], data: dict[str, Any], _prefix: str = "") -> T:
    """Build dataclass ``cls`` from ``data``; unknown keys and wrong types are errors."""
    if not isinstance(data, dict):
        raise Diff2LipError(f"config must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise Diff2LipError(
            f"unknown config key '{_prefix}{unknown[0]}' (known: {', '.join(sorted(fields))})"
        )
    kwargs = {k: _coerce(hints[k], v, f"{_prefix}{k}") for k, v in data.items()}
    try:
        return cls(**kwargs)
    except TypeError as e:  # missing required fields
        raise Diff2LipError(f"config {_prefix or cls.__name__}: {e}") from None


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML (or JSON) mapping, with a one-line error naming the file."""
    p = Path(path)
    if not p.is_file():
        raise Diff2LipError("config file not found", p)
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise Diff2LipError(f"invalid YAML: {str(e).splitlines()[0]}", p) from None
    if not isinstance(data, dict):
        raise Diff2LipError("config file must contain a mapping", p)
    return data


def load_config(cls: type[T], path: str | Path) -> T:
    """Load dataclass ``cls`` from a YAML/JSON file (strict)."""
    try:
        return from_dict(cls, load_yaml(path))
    except Diff2LipError as e:
        if e.path is None:
            raise Diff2LipError(str(e), path) from None
        raise


def save_json(cfg: Any, path: str | Path) -> None:
    """Write ``cfg`` as JSON, atomically (a temporary sibling renamed into place)."""
    write_text_atomic(path, json.dumps(to_dict(cfg), indent=2, sort_keys=False) + "\n")


def save_yaml(cfg: Any, path: str | Path) -> None:
    """Write ``cfg`` as YAML (keys in field order), atomically (a temporary sibling renamed into place)."""
    write_text_atomic(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))


def config_path(path_or_name: str | Path, what: str = "config") -> Path:
    """A config file: an existing path, else the packaged config of that name (``synthetic``,
    ``syncnet_synthetic``, ``paper``, ...); a one-line error for neither."""
    p = Path(path_or_name)
    if p.is_file():
        return p
    if p.suffix or len(p.parts) > 1:
        raise Diff2LipError(f"{what} file not found", p)
    return packaged_config_path(str(path_or_name))


def packaged_config_path(name: str) -> Path:
    """Path of a config shipped with the package (``paper``, ``tiny``, ``synthetic``, ...)."""
    p = Path(__file__).parent / "configs" / f"{name}.yaml"
    if not p.is_file():
        raise Diff2LipError(f"no packaged config named '{name}'")
    return p
