"""Dataclass configs with a YAML overlay and command-line overrides.

Every stage (teacher training, distillation, pre-training, transfer) is configured by a dataclass. A run is
configured in three layers, later ones winning: the dataclass defaults, a YAML file (``--config file.yaml``, or the
name of a shipped config: ``--config krr_st_cifar100``, :mod:`hf_ssdd.configs`), and
``--key value`` flags (dotted keys reach nested dataclasses: ``--optim.lr 0.1``). Unknown keys and values of the
wrong type fail early with a message that names the key.

Open sections: a config whose set of sections is not fixed when it is written (the distillation run: one section per
registered method) declares a field ``sections: dict[str, Any]`` and a classmethod ``config_sections()`` returning
``{name: (config class, default overrides)}``. In YAML, on the command line, in ``--help`` and in the saved config
each such section reads like a nested field (``krr_st: {...}``, ``--krr_st.outer_steps``).

Longer than most modules on purpose: one config system (parsing, coercion, open sections, help, range checks)
that every command shares.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

import yaml

from hf_ssdd.configs import list_configs, resolve_config

T = TypeVar("T")


Tracker = Literal[
    "tensorboard", "wandb", "trackio", "comet_ml", "aim", "mlflow", "clearml", "dvclive", "swanlab", "all"
]
"""Experiment trackers of ``accelerate`` (``log_with``); their logs go to ``<output_dir>/logs``."""


class ConfigError(ValueError):
    """A configuration key or value is invalid."""


def require_at_least(config: Any, minimum: float, *names: str) -> None:
    """Raise ``ValueError`` naming the first option among ``names`` that is set (not None) and below ``minimum``."""
    for name in names:
        value = getattr(config, name)
        if value is not None and value < minimum:
            raise ValueError(f"--{name} must be at least {minimum}, got {value}")


def require_positive(config: Any, *names: str) -> None:
    """Raise ``ValueError`` naming the first option among ``names`` that is set (not None) and not above 0."""
    for name in names:
        value = getattr(config, name)
        if value is not None and not value > 0:
            raise ValueError(f"--{name} must be positive, got {value}")


def require_fractions(config: Any, *names: str) -> None:
    """Raise ``ValueError`` naming the first list option among ``names`` (unset ones skipped) holding a value
    outside (0, 1]."""
    for name in names:
        values = getattr(config, name) or []
        if any(not 0 < v <= 1 for v in values):
            raise ValueError(f"--{name} needs fractions in (0, 1], got {list(values)}")


def require_nonempty(config: Any, *names: str) -> None:
    """Raise ``ValueError`` naming the first list option among ``names`` that is empty."""
    for name in names:
        if not getattr(config, name):
            raise ValueError(f"--{name} needs at least one value")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Convert ``value`` (from YAML or a command-line string) to the annotated type ``tp``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            if type(None) in args:
                return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as e:
                errors.append(str(e))
        if len(errors) == 1:  # X | None: X's own message names the choices or the expected type
            raise ConfigError(f"{errors[0]} (or none)")
        raise ConfigError(f"{key}: cannot interpret {value!r} as {type_name(tp)}")
    if origin is Literal:
        for choice in args:
            if value == choice or (isinstance(value, str) and str(choice) == value):
                return choice
        raise ConfigError(f"{key}: {value!r} is not one of {', '.join(map(str, args))}")
    if dataclasses.is_dataclass(tp):
        assert isinstance(tp, type)  # a type hint: a dataclass, never an instance
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping for {tp.__name__}, got {value!r}")
        return config_from_dict(tp, value, prefix=f"{key}.")
    if origin in (list, tuple, Sequence) or tp in (list, tuple):
        if isinstance(value, str):
            value = yaml.safe_load(value)
        if not isinstance(value, (list, tuple)):
            value = [value]
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], key) for v in value)
        if origin is tuple and args:
            if len(args) != len(value):
                raise ConfigError(f"{key}: expected {len(args)} values, got {len(value)}")
            return tuple(_coerce(v, a, key) for v, a in zip(value, args))
        inner = args[0] if args else Any
        seq = [_coerce(v, inner, key) for v in value]
        return tuple(seq) if (origin is tuple or tp is tuple) else seq
    if origin is dict or tp is dict:
        if isinstance(value, str):
            value = yaml.safe_load(value)
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("false", "0", "no", "off"):
            return False
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        try:
            as_float = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: expected an integer, got {value!r}") from None
        if not as_float.is_integer():
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return int(as_float)
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: expected a number, got {value!r}") from None
    if tp is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return str(value)
    return value


SECTIONS_FIELD = "sections"


def open_sections(cls: type) -> dict[str, tuple[type, Mapping[str, Any]]]:
    """The open sections of a config class, ``{name: (config class, default overrides)}`` (none for most)."""
    provider = getattr(cls, "config_sections", None)
    return dict(provider()) if callable(provider) else {}


def section_config(
    name: str, value: Any, sections: Mapping[str, tuple[type, Mapping[str, Any]]], prefix: str = ""
) -> Any:
    """The open section ``name`` built from ``value``: an instance of its class, or a mapping over its defaults."""
    if name not in sections:
        raise ConfigError(f"unknown section {prefix + name!r}; known: {sorted(sections)}")
    klass, defaults = sections[name]
    if isinstance(value, klass):
        return value
    if not isinstance(value, Mapping):
        raise ConfigError(f"{prefix + name}: expected a mapping for {klass.__name__}, got {value!r}")
    return config_from_dict(klass, _merge(dict(defaults), dict(value)), prefix=f"{prefix}{name}.")


def _plain_fields(cls: type) -> list[dataclasses.Field[Any]]:
    """The fields a user sets (the ``sections`` holder of a class with open sections is not one)."""
    hidden = SECTIONS_FIELD if open_sections(cls) else None
    return [f for f in dataclasses.fields(cls) if f.init and f.name != hidden]


def config_from_dict(cls: type[T], data: dict[str, Any], prefix: str = "") -> T:
    """Build the dataclass ``cls`` from a (possibly nested) mapping, checking keys and types."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in _plain_fields(cls)}
    sections = open_sections(cls)
    unknown = sorted(set(data) - set(fields) - set(sections))
    if unknown:
        raise ConfigError(
            f"unknown config key(s) {[prefix + k for k in unknown]} for {cls.__name__}; "
            f"valid keys: {sorted(prefix + k for k in [*fields, *sections])}"
        )
    kwargs = {
        name: _coerce(value, hints[name], prefix + name) for name, value in data.items() if name in fields
    }
    if sections:
        kwargs[SECTIONS_FIELD] = {
            name: section_config(name, value, sections, prefix)
            for name, value in data.items()
            if name in sections
        }
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{cls.__name__}: {e}") from e


def config_to_dict(cfg: Any, all_sections: bool = False) -> dict[str, Any]:
    """The config as plain YAML-safe Python values (tuples become lists).

    Open sections appear as nested fields: the ones that are set, or with ``all_sections`` every known one (those
    not set with their defaults).
    """

    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            out = {f.name: plain(getattr(v, f.name)) for f in _plain_fields(type(v))}
            sections = open_sections(type(v))
            if sections:  # each open section as if it were a nested field
                given = getattr(v, SECTIONS_FIELD)
                names = list(sections) if all_sections else list(given)
                out.update(
                    {n: plain(given[n] if n in given else section_config(n, {}, sections)) for n in names}
                )
            return out
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {str(k): plain(x) for k, x in v.items()}
        if isinstance(v, Path):
            return str(v)
        return v

    return plain(cfg)


def config_to_hparams(cfg: Any) -> dict[str, int | float | str | bool]:
    """The config flattened for experiment trackers: dotted keys, scalar values (others written as YAML text)."""
    flat: dict[str, int | float | str | bool] = {}

    def walk(node: dict[str, Any], prefix: str) -> None:
        for key, value in node.items():
            if isinstance(value, dict) and value:
                walk(value, f"{prefix}{key}.")
            elif isinstance(value, (int, float, str, bool)):
                flat[prefix + key] = value
            else:
                flat[prefix + key] = (
                    yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()
                )

    walk(config_to_dict(cfg), "")
    return flat


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    node = data
    *parents, last = dotted.split(".")
    for p in parents:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--{dotted}: {p} is not a nested config")
    node[last] = value


def _parse_cli_value(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def parse_overrides(argv: Sequence[str]) -> tuple[str | None, dict[str, Any]]:
    """Split ``--config FILE`` and ``--key value`` / ``--key=value`` / bare ``--flag`` pairs."""
    config_path: str | None = None
    overrides: dict[str, Any] = {}
    items = list(argv)
    i = 0
    while i < len(items):
        item = items[i]
        if not item.startswith("--"):
            raise ConfigError(f"unexpected argument {item!r}; options look like --key value")
        key, eq, value = item[2:].partition("=")
        key = key.replace("-", "_")
        if not eq:
            if i + 1 < len(items) and not items[i + 1].startswith("--"):
                value = items[i + 1]
                i += 1
            else:
                value = "true"
        if key == "config":
            config_path = value
        else:
            _set_dotted(overrides, key, _parse_cli_value(value))
        i += 1
    return config_path, overrides


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_yaml(path: str | Path) -> dict[str, Any]:
    """The mapping in a YAML config file: a path, or the name of a shipped config (:mod:`hf_ssdd.configs`)."""
    path = resolve_config(path)
    if not path.is_file():
        raise ConfigError(
            f"config file {path} does not exist; pass a YAML path or a shipped config name "
            f"({', '.join(list_configs())}; see hf-ssdd configs)"
        )
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return data


def parse_config(cls: type[T], argv: Sequence[str] | None = None, base: dict[str, Any] | None = None) -> T:
    """Parse ``argv`` (``--config FILE`` plus ``--key value`` overrides) into the dataclass ``cls``.

    Args:
        cls: the config dataclass.
        argv: command-line arguments (without the program name); ``None`` means no arguments.
        base: values applied before the YAML file (e.g. a recipe's own defaults).
    """
    config_path, overrides = parse_overrides(argv or [])
    data: dict[str, Any] = dict(base or {})
    if config_path:
        data = _merge(data, load_yaml(config_path))
    data = _merge(data, overrides)
    return config_from_dict(cls, data)


def save_config(cfg: Any, path: str | Path) -> None:
    """Write the resolved config as YAML (atomically)."""
    from hf_ssdd.io import atomic_write_text  # imports torch: not needed to parse a config or print --help

    atomic_write_text(path, yaml.safe_dump(config_to_dict(cfg), sort_keys=False))


def type_name(tp: Any) -> str:
    """A config type as help shows it: ``int``, ``{a, b}`` for a ``Literal``, ``list[float]``, ``str | None``."""
    if typing.get_origin(tp) is Literal:
        return "{" + ", ".join(map(str, typing.get_args(tp))) + "}"
    if typing.get_origin(tp) in (Union, types.UnionType):
        return " | ".join("None" if a is type(None) else type_name(a) for a in typing.get_args(tp))
    if typing.get_args(tp):
        inner = ", ".join("..." if a is Ellipsis else type_name(a) for a in typing.get_args(tp))
        return f"{typing.get_origin(tp).__name__}[{inner}]"
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def field_help(cls: type) -> dict[str, str]:
    """The descriptions of a config dataclass's fields, from the ``Attributes:`` section of its docstring.

    Google style: ``name: text`` one level below ``Attributes:``; deeper-indented lines continue the text.
    """
    lines = inspect.cleandoc(cls.__doc__ or "").splitlines()
    starts = [i for i, line in enumerate(lines) if line.strip() == "Attributes:"]
    if not starts:
        return {}
    base = len(lines[starts[0]]) - len(lines[starts[0]].lstrip())
    helps: dict[str, list[str]] = {}
    entry_indent, name = None, None
    for line in lines[starts[0] + 1 :]:
        indent = len(line) - len(line.lstrip())
        if line.strip() and indent <= base:
            break
        if not line.strip():
            continue
        entry_indent = indent if entry_indent is None else entry_indent
        key, colon, text = line.strip().partition(":")
        if indent == entry_indent and colon and key.isidentifier():
            name = key
            helps[name] = [text.strip()]
        elif name is not None:
            helps[name].append(line.strip())
    return {key: " ".join(words).strip() for key, words in helps.items()}


def config_fields(
    cls: type, prefix: str = "", defaults: Mapping[str, Any] | None = None
) -> list[tuple[str, str, Any, str]]:
    """``(dotted key, type name, default, description)`` of every settable key, nested dataclasses and open
    sections expanded; ``defaults`` overrides the class's defaults of top-level keys."""
    hints = typing.get_type_hints(cls)
    helps = field_help(cls)
    rows = []
    for f in _plain_fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            assert isinstance(tp, type)  # a type hint: a dataclass, never an instance
            rows += config_fields(tp, prefix=f"{prefix}{f.name}.")
            continue
        if defaults and f.name in defaults:
            default = defaults[f.name]
        elif f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = "(required)"
        rows.append((prefix + f.name, type_name(tp), default, helps.get(f.name, "")))
    for name, (klass, overrides) in open_sections(cls).items():
        rows += config_fields(klass, prefix=f"{prefix}{name}.", defaults=overrides)
    return rows


def config_help(cls: type, hide: Sequence[str] = ()) -> str:
    """Two lines per config key: ``--key (type) = default``, then its description (dotted keys for nested configs).

    Keys that start with one of ``hide`` (e.g. ``"mkdt."``: another method's section) are left out.
    """
    lines = []
    for key, tp, default, text in config_fields(cls):
        if key.startswith(tuple(hide)):
            continue
        lines.append(f"  --{key} ({tp}) = {default!r}")
        text = re.sub(r":\w+:`~?([^`]+)`", r"\1", text).replace("``", "")  # reST markup → plain text
        lines.append(f"      {text}" if text else "      (no description)")
    return "\n".join(lines)
