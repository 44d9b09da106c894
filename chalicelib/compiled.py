"""The compiled campaign: what a cold start loads instead of the campaign file.

``make validate`` and packaging validate the campaign file with its pydantic schema
(``chalicelib.models``) and compile it (``chalicelib.compiler``) into JSON holding every field,
defaults filled in. A cold start reads that JSON into the read-only records of
``chalicelib.campaign_types`` (generated from the schema: same classes, fields and types) without
PyYAML, pydantic or email-validator, and without validating again: what was validated is what runs.
"""

from __future__ import annotations

import hashlib
import json
import types
import typing
from datetime import time, timedelta
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Optional, Self, TypeVar, Union

from chalicelib.errors import ConfigError

if TYPE_CHECKING:
    from chalicelib.campaign_types import Campaign

# Next to the campaign file: campaigns/<name>.yaml -> campaigns/<name>.compiled.json.
COMPILED_SUFFIX = ".compiled.json"
# Bumped when the compiled layout (not the schema, which the source hash covers) changes.
FORMAT = 1
# What fixes a missing or stale compilation, in every message that finds one.
_COMPILE_AGAIN = "make validate compiles it (python -m chalicelib.validate campaigns/<name>.yaml)"

_R = TypeVar("_R", bound="Record")


def compiled_path(source: Path) -> Path:
    return source.with_name(source.stem + COMPILED_SUFFIX)


def source_digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# A parameter's default for a field whose default is made anew for each record (a list, a dict).
FACTORY: Any = object()


def _restore(cls: type[_R], values: tuple[Any, ...]) -> _R:
    record = cls.__new__(cls)
    for (name, _), value in zip(cls._fields, values, strict=True):
        object.__setattr__(record, name, value)
    return record


class Record:
    """Base of the generated records: read-only, compared and hashed by their fields (as frozen
    dataclasses are), with the part of pydantic's model API tests and the twin use, so a compiled
    campaign stands in wherever the validated one did."""

    __slots__ = ()
    _fields: ClassVar[tuple[tuple[str, str], ...]] = ()  # (name, alias) of each field, in order

    def _values(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name, _ in self._fields)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is read-only: use model_copy(update=...)")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} is read-only")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Record) and type(other) is type(self) and self._values() == other._values()

    def __hash__(self) -> int:
        return hash((type(self), self._values()))

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name, _ in self._fields)
        return f"{type(self).__name__}({fields})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (_restore, (type(self), self._values()))

    def model_copy(self, *, update: Optional[dict[str, Any]] = None) -> Self:
        return type(self)(**{**{name: getattr(self, name) for name, _ in self._fields}, **(update or {})})

    def model_dump(
        self, *, mode: Literal["python", "json"] = "python", by_alias: bool = False, exclude: Optional[set[str]] = None
    ) -> dict[str, Any]:
        data: dict[str, Any] = to_data(self, json_mode=mode == "json", by_alias=by_alias)
        return {key: value for key, value in data.items() if key not in (exclude or ())}


def to_data(value: Any, *, json_mode: bool = True, by_alias: bool = False) -> Any:
    """A record or a pydantic model as plain data: field by field, durations in seconds and times
    as ISO text in JSON mode. The compiler writes a validated campaign with it."""
    if isinstance(value, Record):
        names = list(value._fields)
    elif isinstance(getattr(type(value), "model_fields", None), dict):
        names = [(name, info.alias or name) for name, info in type(value).model_fields.items()]
    elif isinstance(value, (list, tuple)):
        return [to_data(item, json_mode=json_mode, by_alias=by_alias) for item in value]
    elif isinstance(value, dict):
        return {
            to_data(key, json_mode=json_mode): to_data(item, json_mode=json_mode, by_alias=by_alias)
            for key, item in value.items()
        }
    elif json_mode and isinstance(value, Enum):
        return value.value
    elif json_mode and isinstance(value, timedelta):
        seconds = value.total_seconds()
        return int(seconds) if seconds.is_integer() else seconds
    elif json_mode and isinstance(value, time):
        return value.isoformat()
    else:
        return value
    return {
        alias if by_alias else name: to_data(getattr(value, name), json_mode=json_mode, by_alias=by_alias)
        for name, alias in names
    }


def loads(text: str) -> Campaign:
    """The campaign from its compiled JSON."""
    return _from_document(json.loads(text))


def _from_document(document: dict[str, Any]) -> Campaign:
    if document.get("format") != FORMAT:
        raise ConfigError(f"compiled campaign format {document.get('format')!r}, expected {FORMAT}: {_COMPILE_AGAIN}")
    return from_data(document["campaign"])


def from_data(data: dict[str, Any]) -> Campaign:
    """The campaign's records from its plain data (``to_data``'s JSON-mode output)."""
    from chalicelib.campaign_types import Campaign

    return _build(Campaign, data)


def load(path: Path, source: Optional[Path] = None) -> Campaign:
    """The compiled campaign at ``path``. When its campaign file ``source`` is there too, it must
    be the file it was compiled from: an edited file is never served from a stale compilation."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as e:
        raise ConfigError(f"{path}: no compiled campaign: {_COMPILE_AGAIN}") from e
    document = json.loads(text)
    if (
        source is not None
        and source.is_file()
        and document.get("source_sha256") != source_digest(source.read_text(encoding="utf-8"))
    ):
        raise ConfigError(f"{path}: compiled from another version of {source.name}: {_COMPILE_AGAIN}")
    return _from_document(document)


def record_from_data(cls: type[_R], data: dict[str, Any]) -> _R:
    """One record (a segment given inline, as stored) from its plain data; a field it lacks (a
    None the store left out) takes the record's default."""
    hints = _hints(cls)
    return cls(**{name: _convert(hints[name], data[name]) for name, _ in cls._fields if name in data})


def _build(cls: type[_R], data: dict[str, Any]) -> _R:
    hints = _hints(cls)
    return cls(**{name: _convert(hints[name], data[name]) for name, _ in cls._fields})


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def _convert(hint: Any, value: Any) -> Any:
    origin = typing.get_origin(hint)
    if origin is Union or origin is types.UnionType:
        if value is None:
            return None
        members = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        return _convert(members[0], value) if len(members) == 1 else value
    if origin is list:
        (item,) = typing.get_args(hint)
        return [_convert(item, v) for v in value]
    if origin is dict:
        key, item = typing.get_args(hint)
        return {_convert(key, k): _convert(item, v) for k, v in value.items()}
    if origin is Literal or hint in (str, int, bool, Any):
        return value
    if hint is float:
        return float(value)
    if hint is timedelta:
        return timedelta(seconds=value)
    if hint is time:
        return time.fromisoformat(value)
    if isinstance(hint, type) and issubclass(hint, Enum):
        return hint(value)
    if isinstance(hint, type) and issubclass(hint, Record):
        return _build(hint, value)
    raise TypeError(f"no conversion for {hint!r}")
