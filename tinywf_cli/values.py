"""Values crossing the durable boundary: JSON round trips and pydantic type adapters.

Everything a step receives from the engine has been through JSON, on the first run as on
replay, so both see the same value; a type (an action's return annotation, a wait's
``type=``) restores what JSON cannot say (tuples, datetimes, models).
"""

from __future__ import annotations

import functools
import json
import math
import typing
from collections.abc import Callable
from typing import Any

from pydantic import TypeAdapter, ValidationError
from pydantic_core import PydanticSerializationError, to_jsonable_python

_PLAIN = (str, int, bool, type(None))


class NotJSON(ValueError):
    """A value that cannot be stored as JSON."""


def to_json_value(value: Any) -> Any:
    """The value as it comes back from JSON (tuples become lists, models dicts); raises NotJSON."""
    kind = type(value)
    if kind in _PLAIN:
        return value
    if kind is float:
        if math.isfinite(value):
            return value
        raise NotJSON(f"{value!r} is not a JSON number")
    try:
        return json.loads(json.dumps(to_jsonable_python(value), allow_nan=False))
    except (PydanticSerializationError, TypeError, ValueError) as exc:
        raise NotJSON(f"{type(value).__name__} value is not JSON: {exc}") from None


def dumps(value: Any) -> str:
    """Compact JSON text of a JSON value."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


@functools.lru_cache(maxsize=1024)
def _adapter_for_type(tp: Any) -> TypeAdapter[Any] | None:
    if tp is object or tp is Any:
        return None
    return TypeAdapter(tp)


def adapter_for_type(tp: Any) -> TypeAdapter[Any] | None:
    """A cached pydantic adapter for ``tp``; ``None`` for ``object``/``Any`` (no validation)."""
    try:
        return _adapter_for_type(tp)
    except TypeError:  # unhashable type expression
        return None if tp is object or tp is Any else TypeAdapter(tp)


@functools.lru_cache(maxsize=1024)
def _return_adapter(fn: Callable[..., Any]) -> TypeAdapter[Any] | None:
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # unresolvable forward references: fall back to the raw annotation
        hints = dict(getattr(fn, "__annotations__", {}) or {})
    annotation = hints.get("return", inspect_empty)
    if annotation is inspect_empty or isinstance(annotation, str) or annotation in (Any, object):
        return None
    if annotation is None or annotation is type(None):
        return None
    try:
        return TypeAdapter(annotation)
    except Exception:  # not a type pydantic understands: keep the JSON value
        return None


inspect_empty = object()


def return_adapter(fn: Callable[..., Any]) -> TypeAdapter[Any] | None:
    """The adapter of ``fn``'s return annotation, when pydantic understands it."""
    target = getattr(fn, "__func__", fn)
    try:
        return _return_adapter(target)
    except TypeError:  # unhashable callable
        return None


def restore(adapter: TypeAdapter[Any] | None, stored: Any) -> Any:
    """The value a step receives for a stored JSON value; raises pydantic's ValidationError."""
    if adapter is None:
        return stored
    return adapter.validate_python(stored)


def validation_message(exc: ValidationError) -> str:
    """A one-line summary of a pydantic validation error."""
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ()))
        parts.append(f"{where}: {err['msg']}" if where else str(err["msg"]))
    return "; ".join(parts) or str(exc)
