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
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import TypeAdapter, ValidationError
from pydantic_core import PydanticSerializationError, to_jsonable_python

from tinywf_cli.errors import InvalidValue
from tinywf_cli.jsonio import TextValue, TooDeep, dumps, strict_loads
from tinywf_cli.model import Via

__all__ = ["NO_JSON", "Answer", "NotJSON", "TextValue", "adapter_for_type", "check_json_value", "describe_schema",
           "describe_type", "dumps", "json_of_text", "kept_form", "restore", "return_adapter", "strict_loads",
           "to_json_value", "validation_message"]


class NotJSON(ValueError):
    """A value that cannot be stored as JSON."""


class _NotPlain(Exception):
    """Raised inside ``_plain_copy`` for anything JSON would change."""


#: Values nested deeper than this are refused: what tinywf writes, every JSON reader must read back.
MAX_DEPTH = 200
#: Integers wider than this are refused (Python reads back at most 4,300 digits: about 14,280 bits).
MAX_INT_BITS = 14_000


def _refuse_int(value: int) -> NotJSON:
    return NotJSON(f"an integer of about {int(value.bit_length() * 0.30103):,} digits is too large to store "
                   f"(the limit is about {int(MAX_INT_BITS * 0.30103):,} digits; store it as a string)")


def _check_text(text: str) -> None:
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise NotJSON(f"text {text[:40]!r} is not valid Unicode (it holds a lone surrogate)") from None


def _plain_copy(value: Any, depth: int = 0) -> Any:
    """A deep copy of a value made only of what JSON keeps as it is; raises _NotPlain otherwise,
    and NotJSON for what no JSON round trip could keep (too deep, too large, not Unicode)."""
    kind = type(value)
    if kind is str:
        _check_text(value)
        return value
    if kind is int:
        if value.bit_length() > MAX_INT_BITS:
            raise _refuse_int(value)
        return value
    if kind is bool or value is None:
        return value
    if kind is float:
        if math.isfinite(value):
            return value
        raise _NotPlain
    if depth >= MAX_DEPTH:
        raise NotJSON(f"the value is nested more than {MAX_DEPTH} levels deep")
    if kind is dict:
        out = {}
        for key, item in value.items():
            if type(key) is not str:
                raise _NotPlain
            _check_text(key)
            out[key] = _plain_copy(item, depth + 1)
        return out
    if kind is list:
        return [_plain_copy(item, depth + 1) for item in value]
    raise _NotPlain


def to_json_value(value: Any) -> Any:
    """The value as it comes back from JSON (tuples become lists, models dicts); raises NotJSON.

    Values already made of JSON's own types are copied directly; anything else goes
    through pydantic's encoder and a real JSON round trip. Either way the result is
    something every JSON reader reads back as it was written.
    """
    try:
        return _plain_copy(value)
    except (_NotPlain, RecursionError):
        pass
    try:
        plain = json.loads(dumps(to_jsonable_python(value)))
    except (PydanticSerializationError, TypeError, ValueError, RecursionError) as exc:
        raise NotJSON(f"{type(value).__name__} value is not JSON: {exc}") from None
    try:
        return _plain_copy(plain)
    except (_NotPlain, RecursionError):
        raise NotJSON(f"the value is nested more than {MAX_DEPTH} levels deep") from None


def _check_plain(value: Any, depth: int = 0) -> None:
    """``_plain_copy`` without the copy: for values made here (a model's JSON dump, at every commit).

    A container's text, booleans, null and floats are checked in one loop over its items
    (most values are made of them); anything else is checked by a call of its own.
    """
    kind = type(value)
    if kind is not dict and kind is not list:
        if kind is str:
            if not value.isascii():
                _check_text(value)
        elif kind is int:
            if value.bit_length() > MAX_INT_BITS:
                raise _refuse_int(value)
        elif kind is float:
            if not _isfinite(value):
                raise _NotPlain
        elif kind is not bool and value is not None:
            raise _NotPlain
        return
    if depth >= MAX_DEPTH:
        raise NotJSON(f"the value is nested more than {MAX_DEPTH} levels deep")
    items = value
    if kind is dict:
        for key in value:
            if type(key) is not str:
                raise _NotPlain
            if not key.isascii():
                _check_text(key)
        items = value.values()
    for item in items:
        kind = type(item)
        if kind is str:
            if not item.isascii():
                _check_text(item)
        elif kind is float:
            if not _isfinite(item):
                raise _NotPlain
        elif kind is not bool and item is not None:
            _check_plain(item, depth + 1)


_isfinite = math.isfinite


def check_json_value(value: Any) -> None:
    """Refuse (NotJSON) a JSON value that could not be read back as written: too deep, an
    integer too large, text that is not Unicode, a float that is not finite."""
    try:
        _check_plain(value)
    except _NotPlain:
        raise NotJSON("the value holds something JSON cannot keep (a number that is not finite?)") from None
    except RecursionError:
        raise NotJSON(f"the value is nested more than {MAX_DEPTH} levels deep") from None


class _NoJSON:
    """The type of ``NO_JSON``."""

    def __repr__(self) -> str:
        return "NO_JSON"


#: What ``json_of_text`` gives for a text that holds no JSON: the text itself is the value.
NO_JSON: Any = _NoJSON()


def json_of_text(text: str) -> Any:
    """The JSON value a text holds (a command line's VALUE, a web form's field), or ``NO_JSON``.

    Raises NotJSON for JSON that tinywf could not keep — nested more than ``MAX_DEPTH``
    levels, text that is no Unicode (``"\\ud800"``), an integer too large — and for text
    that is no Unicode itself: taken as a string instead, it would keep something other
    than was meant. ``--input`` and ``signal`` refuse the same.
    """
    _check_text(text)
    try:
        value = strict_loads(text)
    except TooDeep:
        raise NotJSON(f"the value is nested more than {MAX_DEPTH} levels deep") from None
    except ValueError:
        return NO_JSON
    check_json_value(value)
    return value


def kept_form(key: str, value: Any) -> tuple[Literal["value", "text"], Any]:
    """How a run keeps event ``key``'s value until a wait takes it: ``("text", text)`` for a
    ``TextValue`` (read against the wait's type then), ``("value", json)`` for any other.

    Raises InvalidValue for a value tinywf could not keep (``json_of_text``), whichever way
    it came: a command's VALUE, a form's field, a JSON body, a library call.
    """
    try:
        if isinstance(value, TextValue):
            json_of_text(value.text)
            return "text", value.text
        return "value", to_json_value(value)
    except NotJSON as exc:
        raise InvalidValue(f"invalid value for event '{key}': {exc}") from None


@dataclass(frozen=True)
class Answer:
    """An event's value on its way to the wait it answers (``resolve``, or ``send`` to a waiting run)."""

    #: The wait it answers, and that wait's key.
    resume_id: str
    key: str
    #: The value as given: any JSON value, or a ``TextValue``.
    value: Any
    #: How it came: ``cli``, ``http``, ``link`` or ``runtime``.
    via: Via
    #: How the run keeps it (``kept_form``) should it stop before the wait takes it.
    form: tuple[Literal["value", "text"], Any]

    @classmethod
    def of(cls, resume_id: str, key: str, value: Any, via: Via) -> Answer:
        """The answer, once checked that tinywf can keep it (InvalidValue when not)."""
        return cls(resume_id, key, value, via, kept_form(key, value))


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


_NO_ADAPTER = object()
# Keyed weakly by function: flows that build lambdas on every pass must not fill it for good.
_return_adapters: weakref.WeakKeyDictionary[Callable[..., Any], Any] = weakref.WeakKeyDictionary()


def _build_return_adapter(fn: Callable[..., Any]) -> TypeAdapter[Any] | None:
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # unresolvable forward references: fall back to the raw annotation
        hints = dict(getattr(fn, "__annotations__", {}) or {})
    annotation = hints.get("return", _NO_ADAPTER)
    if annotation is _NO_ADAPTER or isinstance(annotation, str) or annotation in (Any, object):
        return None
    if annotation is None or annotation is type(None):
        return None
    try:
        return TypeAdapter(annotation)
    except Exception:  # not a type pydantic understands: keep the JSON value
        return None


def return_adapter(fn: Callable[..., Any]) -> TypeAdapter[Any] | None:
    """The adapter of ``fn``'s return annotation, when pydantic understands it (cached)."""
    target = getattr(fn, "__func__", fn)
    try:
        cached = _return_adapters.get(target, _NO_ADAPTER)
    except TypeError:  # neither hashable nor weak-referenceable: no cache
        return _build_return_adapter(target)
    if cached is _NO_ADAPTER:
        cached = _return_adapters[target] = _build_return_adapter(target)
    return cached  # type: ignore[no-any-return]


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


def describe_type(tp: Any) -> str | None:
    """A short description of what a wait's ``type`` accepts, for prompts and hints."""
    try:
        adapter = adapter_for_type(tp)
        return "any JSON" if adapter is None else describe_schema(adapter.json_schema())
    except Exception:  # a type pydantic validates but cannot describe
        return getattr(tp, "__name__", None)


def describe_schema(schema: dict[str, Any]) -> str:
    """A short description of a JSON schema, for prompts: ``integer (0..100)``, ``boolean``."""
    if "enum" in schema:
        return "one of " + ", ".join(json.dumps(v) for v in schema["enum"])
    if "const" in schema:
        return f"exactly {json.dumps(schema['const'])}"
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return " or ".join(describe_schema(s) for s in schema[key])
    kind = schema.get("type")
    if kind is None:
        return str(schema.get("title") or "any JSON") if "$ref" not in schema else "object"
    if isinstance(kind, list):
        kind = " or ".join(kind)
    bounds = []
    low = schema.get("minimum", schema.get("exclusiveMinimum"))
    high = schema.get("maximum", schema.get("exclusiveMaximum"))
    if low is not None or high is not None:
        bounds.append(f"{'' if low is None else low}..{'' if high is None else high}")
    if "minLength" in schema or "maxLength" in schema:
        bounds.append(f"length {schema.get('minLength', 0)}..{schema.get('maxLength', '')}")
    if kind == "array" and isinstance(schema.get("items"), dict):
        kind = f"array of {describe_schema(schema['items'])}"
    if kind == "null":
        kind = "null"
    return f"{kind} ({', '.join(bounds)})" if bounds else str(kind)
