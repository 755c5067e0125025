"""Frozen config dataclasses: load from TOML with overrides, save as JSON beside what they produced."""

from __future__ import annotations

import dataclasses
import json
import tomllib
import typing
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def _coerce(value: Any, annotation: Any) -> Any:
    # TOML has arrays, not tuples; frozen configs use tuples so they stay hashable and immutable.
    origin = typing.get_origin(annotation)
    if isinstance(value, list) and (annotation is tuple or origin is tuple):
        return tuple(tuple(v) if isinstance(v, list) else v for v in value)
    if isinstance(value, dict) and dataclasses.is_dataclass(annotation):
        return from_dict(annotation, value)
    return value


def from_dict(cls: type[T], values: dict[str, Any]) -> T:
    """Build `cls` from a mapping; unknown keys are an error (a typo must not be silently ignored)."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}")
    return cls(**{k: _coerce(v, hints.get(k)) for k, v in values.items()})


def load_config(cls: type[T], toml_path: str | Path | None = None, section: str | None = None, **overrides) -> T:
    """Defaults of `cls`, then the TOML file (optionally one [section] of it), then keyword overrides."""
    values: dict[str, Any] = {}
    if toml_path is not None:
        path = Path(toml_path)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as error:
            raise ValueError(f"{path}: cannot read config: {error}") from None
        if section is not None:
            data = data.get(section, {})
        values.update(data)
    values.update({k: v for k, v in overrides.items() if v is not None})
    return from_dict(cls, values)


def config_to_dict(config: Any) -> dict[str, Any]:
    """JSON-ready dict of a (possibly nested) dataclass."""
    return json.loads(json.dumps(dataclasses.asdict(config), default=str))


def save_config(config: Any, path: str | Path) -> None:
    Path(path).write_text(json.dumps(config_to_dict(config), indent=2) + "\n", encoding="utf-8")
