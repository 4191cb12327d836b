"""How one TOML table becomes a frozen dataclass (for :mod:`component.config`).

Types are checked against the dataclass's annotations (lists become tuples), unknown
and missing keys are named, and a secret may be read from a ``*_file`` instead. The
sections themselves, their ranges and defaults live in :mod:`component.config`.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

from component.errors import ConfigError

T = TypeVar("T")


def coerce(section: str, key: str, value: Any, annotation: Any) -> Any:
    """Check ``value`` against the field's type; lists become tuples.

    :raises ConfigError: naming ``[section] key`` and the type expected.
    """
    where = f"[{section}] {key}"
    origin = get_origin(annotation)
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if annotation is str or origin is Literal:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where}: expected a list of strings, got {value!r}")
        return tuple(value)
    if origin is dict:
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise ConfigError(f"{where}: expected a table of strings, got {value!r}")
        return dict(value)
    if origin in (typing.Union, types.UnionType) and type(None) in get_args(annotation):
        return value
    raise ConfigError(f"{where}: unsupported type")  # pragma: no cover - programming error


def build_section(
    cls: type[T],
    raw: dict[str, Any],
    name: str,
    base_dir: Path,
    secret_keys: Iterable[str] = (),
) -> T:
    """Build the dataclass ``cls`` from the table ``raw[name]``.

    :param secret_keys: keys that may come from a file instead (``secret_file = "..."``,
        relative to ``base_dir``).
    :raises ConfigError: not a table, an unknown, missing or ill-typed key, or a secret
        file that cannot be read.
    """
    data = raw.get(name, {})
    if not isinstance(data, dict):
        raise ConfigError(f"[{name}] must be a table")
    data = dict(data)
    for secret_key in secret_keys:
        file_key = f"{secret_key}_file"
        if file_key in data:
            if secret_key in data:
                raise ConfigError(f"[{name}] give either {secret_key} or {file_key}, not both")
            path = base_dir / str(data.pop(file_key))
            try:
                data[secret_key] = path.read_text().strip()
            except OSError as exc:
                raise ConfigError(f"[{name}] {file_key}: cannot read {path}: {exc}") from exc
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"[{name}] unknown key {unknown[0]!r}")
    kwargs = {k: coerce(name, k, v, hints[k]) for k, v in data.items()}
    missing = [
        f.name
        for f in fields.values()
        if f.name not in kwargs
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(f"[{name}] missing key {missing[0]!r}")
    return cls(**kwargs)
