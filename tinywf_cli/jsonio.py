"""JSON as tinywf reads and writes it, with nothing heavier than the standard library.

Strict parsing (no ``NaN``, no ``Infinity``, no number too large for a float), the one
compact encoder every checkpoint uses, and ``TextValue``: a value typed on a command line.
Read commands import this module, never pydantic.
"""

from __future__ import annotations

import json
import math
from json.encoder import c_make_encoder, encode_basestring  # type: ignore[attr-defined]
from typing import Any


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text} is too large")
    return value


_STRICT = json.JSONDecoder(parse_constant=_no_constant, parse_float=_finite)


class TooDeep(ValueError):
    """JSON nested too deeply for the parser: it may well be JSON, but no value can be read from it."""


def strict_loads(text: str | bytes) -> Any:
    """``json.loads`` of JSON as written: no ``NaN``/``Infinity``, no number too large for a
    float; ValueError for anything else (text that is no UTF-8 included; ``TooDeep`` for
    nesting too deep to parse)."""
    try:
        return _STRICT.decode(text.decode("utf-8") if isinstance(text, bytes) else text)
    except RecursionError:
        raise TooDeep("it is nested too deeply") from None


class TextValue:
    """A value typed on a command line: taken as JSON when it parses and fits the wait's
    type, else as the text itself (so ``1234`` answers a ``type=str`` wait with ``"1234"``)."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return f"TextValue({self.text!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TextValue) and other.text == self.text

    def __hash__(self) -> int:
        return hash(("TextValue", self.text))


def _not_json(value: Any) -> Any:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


# The C encoder ``json.dumps`` builds on every call, built once (compact, UTF-8, no NaN). A
# value that contains itself raises RecursionError (there is no circular-reference check).
_ENCODE = c_make_encoder(None, _not_json, encode_basestring, None, ":", ",", False, False, False) \
    if c_make_encoder is not None else None
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def dumps(value: Any) -> str:
    """Compact JSON text of a JSON value (one shared encoder: this is on every checkpoint)."""
    if _ENCODE is None:  # a Python without the C accelerator
        return _ENCODER.encode(value)
    return "".join(_ENCODE(value, 0))
