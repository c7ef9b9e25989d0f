"""One config system for every job: typed dataclasses, loadable from YAML, overridable
from the command line.

Every leaf field of a (nested) config dataclass becomes a flag named by its dotted path
(``--decode.max_duration_s 600``); ``--config file.yaml`` loads a YAML file first, and
flags given on the command line win over it. Help text comes from each field's
``metadata={"help": ...}``.

Why not tyro/OmegaConf: what we need is ~150 lines (dataclass <-> dict <-> argparse) and
the same code validates YAML and flags with one set of rules; a dependency would add its
own conventions (hyphenated flags, interpolation) that the cluster docs must then explain.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import math
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml

C = TypeVar("C")


def field(default: Any = dataclasses.MISSING, help: str = "", *, ge: float | None = 0, gt: float | None = None,  # noqa: A002
          le: float | None = None, lt: float | None = None, **kw: Any) -> Any:
    """A dataclass field with help text; mutable defaults go through default_factory.

    A number given in YAML or on the command line must be finite and within the field's bounds:
    ``ge=0`` unless the field says otherwise (``ge=None`` lifts it), so a negative size, a zero
    width (``gt=0``) or a NaN learning rate is a ConfigError before any work starts."""
    bounds = {k: v for k, v in (("ge", ge), ("gt", gt), ("le", le), ("lt", lt)) if v is not None}
    metadata = {"help": help, "bounds": bounds}
    if isinstance(default, (list, dict, set)) or dataclasses.is_dataclass(default):
        value = default
        return dataclasses.field(default_factory=lambda: copy.deepcopy(value), metadata=metadata, **kw)
    return dataclasses.field(default=default, metadata=metadata, **kw)


_BOUND_CHECKS = {"ge": (lambda v, b: v >= b, ">="), "gt": (lambda v, b: v > b, ">"),
                 "le": (lambda v, b: v <= b, "<="), "lt": (lambda v, b: v < b, "<")}


def check_bounds(value: Any, f: dataclasses.Field, where: str) -> None:
    """Finite, and within the field's declared bounds (numbers only; None passes)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    bounds = f.metadata.get("bounds", {})
    if not math.isfinite(value) or not all(_BOUND_CHECKS[k][0](value, b) for k, b in bounds.items()):
        rule = " and ".join(f"{_BOUND_CHECKS[k][1]} {b:g}" for k, b in bounds.items())
        kind = "" if isinstance(value, int) else "a finite number "
        raise ConfigError(f"{where} must be {kind}{rule}, got {value!r}".replace(" , got", ", got"))


NAME_PATTERN = r"[A-Za-z0-9._-]{1,128}"


def check_name(value: str, what: str) -> str:
    """A name that becomes a folder, an MLflow tag searched for, a Ray Train run: letters, digits and
    ``._-`` only (a quote would reach a search filter, a slash another folder)."""
    import re

    if not re.fullmatch(NAME_PATTERN, value) or value in (".", ".."):
        raise ConfigError(f"{what} may hold only letters, digits, '.', '_' and '-' (at most 128), got {value!r}")
    return value


class ConfigError(ValueError):
    """A config that cannot be valid: raised before any work starts."""


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Turn a YAML or command-line value into the field's declared type, or fail clearly."""
    tp, optional = _unwrap_optional(tp)
    if value is None or (optional and isinstance(value, str) and value.lower() in ("none", "null", "")):
        if optional:
            return None
        raise ConfigError(f"{where}: a value is required")
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return from_dict(tp, value, where)
    origin = typing.get_origin(tp)
    if origin in (list, tuple):
        (item_tp, *_) = typing.get_args(tp) or (Any,)
        if isinstance(value, str):
            value = [v for v in (s.strip() for s in value.split(",")) if v]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        items = [_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is typing.Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise ConfigError(f"{where}: {value!r} is not one of {list(choices)}")
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if tp in (int, float, str):
        try:
            if tp is int and isinstance(value, float) and not value.is_integer():
                raise ValueError
            return tp(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected {tp.__name__}, got {value!r}") from None
    if tp is Any:
        return value
    raise ConfigError(f"{where}: unsupported field type {tp!r}")


def from_dict(cls: type[C], data: dict[str, Any], where: str = "config") -> C:
    """Build a config dataclass from a plain mapping; unknown keys are an error (typos)."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = set(data) - names
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}; known: {sorted(names)}")
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}") for k, v in data.items()}
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for k, v in kwargs.items():
        check_bounds(v, fields[k], f"{where}.{k}")
    try:
        obj = cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    validate = getattr(obj, "validate", None)
    if callable(validate):
        validate()
    return obj


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def flatten(cfg: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted-path view of a config (what MLflow gets as parameters)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            out.update(flatten(value, key + "."))
        else:
            out[key] = value
    return out


def _leaf_fields(cls: type, prefix: str = "") -> list[tuple[str, dataclasses.Field, Any]]:
    hints = typing.get_type_hints(cls)
    leaves = []
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        inner, _ = _unwrap_optional(tp)
        if dataclasses.is_dataclass(inner):
            leaves.extend(_leaf_fields(inner, f"{prefix}{f.name}."))
        else:
            leaves.append((f"{prefix}{f.name}", f, tp))
    return leaves


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = data
    for p in parents:
        node = node.setdefault(p, {})
    node[leaf] = value


def _type_name(tp: Any) -> str:
    inner, optional = _unwrap_optional(tp)
    origin = typing.get_origin(inner)
    if origin is typing.Literal:
        name = "|".join(str(a) for a in typing.get_args(inner))
    elif origin in (list, tuple):
        name = "list,of,values"
    else:
        name = getattr(inner, "__name__", str(inner))
    return f"{name} or none" if optional else name


def _bounds_text(f: dataclasses.Field, tp: Any) -> str:
    if _unwrap_optional(tp)[0] not in (int, float):
        return ""
    signs = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
    return "".join(f"; {signs[k]} {b:g}" for k, b in f.metadata.get("bounds", {}).items())


def parse_args(cls: type[C], argv: list[str] | None = None, description: str = "",
               prepare: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> C:
    """Command line -> config: ``--config x.yaml`` then one flag per leaf field; ``prepare`` may fill in
    what the fields derive from each other before the config is built and validated."""
    parser = argparse.ArgumentParser(
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Flags override the YAML file given with --config. Lists are comma-separated.",
    )
    parser.add_argument("--config", type=Path, help="YAML file with any subset of the fields below")
    defaults = to_dict(cls())
    for dotted, f, tp in _leaf_fields(cls):
        default: Any = defaults
        for part in dotted.split("."):
            default = default.get(part) if isinstance(default, dict) else None
        is_bool = _unwrap_optional(tp)[0] is bool
        parser.add_argument(
            f"--{dotted}",
            dest=dotted,
            nargs="?" if is_bool else None,
            const="true" if is_bool else None,
            default=argparse.SUPPRESS,
            # choices as the parser takes them (lower case); other types in capitals, argparse's convention
            metavar=_type_name(tp) if typing.get_origin(_unwrap_optional(tp)[0]) is typing.Literal
            else _type_name(tp).upper().replace(" ", "_"),
            help=f"{f.metadata.get('help', '')} (default: {default!r}{_bounds_text(f, tp)})",
        )
    ns = vars(parser.parse_args(argv))
    config_path = ns.pop("config", None)
    data: dict[str, Any] = {}
    if config_path is not None:
        loaded = yaml.safe_load(Path(config_path).read_text()) or {}
        if not isinstance(loaded, dict):
            parser.error(f"{config_path}: top level must be a mapping")
        data = _unshared(loaded)  # YAML anchors share one object: an override of one section must not reach the others
    for dotted, value in ns.items():
        _set_dotted(data, dotted, value)
    try:
        return from_dict(cls, prepare(data) if prepare else data)
    except ConfigError as exc:
        parser.error(str(exc))
        raise  # unreachable: parser.error exits


def _unshared(value: Any) -> Any:
    """A copy in which no two places are one object (``copy.deepcopy`` keeps YAML aliases shared)."""
    if isinstance(value, dict):
        return {k: _unshared(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unshared(v) for v in value]
    return value


def load_yaml(cls: type[C], path: str | Path) -> C:
    return from_dict(cls, yaml.safe_load(Path(path).read_text()) or {}, str(path))
