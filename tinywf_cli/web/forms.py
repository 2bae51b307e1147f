"""The form that answers a pending event, chosen from what the event accepts.

The engine describes each wait's ``type`` for people (``boolean``, ``one of "a", "b"``,
``integer (0..10)``; see ``values.describe_schema``); the form follows from it: two buttons
for a ``bool``, one button per value of an enum or ``Literal``, a text field for the rest.
What is typed is read as the CLI reads a VALUE: as JSON when the event does not take text.
Pure functions, no web framework.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from tinywf_cli.engine.values import NO_JSON, NotJSON, json_of_text
from tinywf_cli.errors import InvalidValue

#: The most buttons a form shows; an enum with more values gets a text field.
MAX_BUTTONS = 12


@dataclass(frozen=True)
class Choice:
    """One button: its label, the JSON text it submits, and how it looks."""

    label: str
    value: str
    tone: Literal["approve", "reject", "plain"] = "plain"


@dataclass(frozen=True)
class EventForm:
    """How to ask for an event's value.

    ``buttons``: one click answers (``choices``); ``text``: a field whose text is the value
    (the event takes a string); ``json``: a field read as JSON when it parses, else as text.
    """

    kind: Literal["buttons", "text", "json"]
    choices: tuple[Choice, ...] = ()
    #: What the event accepts, for people (``integer (0..100)``), if known.
    hint: str | None = None
    #: ``number`` for an event that takes a number, else ``text``.
    input_type: Literal["text", "number"] = "text"

    def label_of(self, value: Any) -> str | None:
        """The label of the button that submits ``value`` (``Approve`` for ``true``), if one does."""
        text = json.dumps(value)
        return next((c.label for c in self.choices if c.value == text), None)


def _alternatives(expects: str) -> list[str]:
    """``boolean or null`` -> ``["boolean", "null"]`` (an enum's values are kept whole)."""
    if expects.startswith("one of "):
        return [expects]
    return [part.strip() for part in expects.split(" or ")]


def enum_values(expects: str) -> list[Any] | None:
    """The values of ``one of 1, "a, b", true`` (JSON texts joined by ``, ``); None if it is not one."""
    if not expects.startswith("one of "):
        return None
    decoder = json.JSONDecoder()
    text, position, values = expects[len("one of "):], 0, []
    try:
        while True:
            value, position = decoder.raw_decode(text, position)
            values.append(value)
            if position == len(text):
                return values
            if not text.startswith(", ", position):
                return None
            position += 2
    except ValueError:
        return None


def form_for(expects: str | None) -> EventForm:
    """The form for an event that accepts ``expects`` (its type described; None: any JSON)."""
    if not expects or expects == "any JSON":
        return EventForm("json", hint="any JSON value; plain text is taken as a string")
    values = enum_values(expects)
    if values is not None and 0 < len(values) <= MAX_BUTTONS:
        return EventForm("buttons", tuple(
            Choice(v if isinstance(v, str) else json.dumps(v), json.dumps(v)) for v in values), hint=expects)
    kinds = [part.split(" ", 1)[0] for part in _alternatives(expects)]
    if "boolean" in kinds:
        return EventForm("buttons", (Choice("Approve", "true", "approve"), Choice("Reject", "false", "reject")),
                         hint=expects)
    if kinds == ["string"]:
        return EventForm("text", hint=expects)
    if kinds in (["integer"], ["number"]):
        return EventForm("json", hint=expects, input_type="number")
    return EventForm("json", hint=expects)


def parse_answer(form: EventForm, text: str, event: str | None = None) -> Any:
    """The value a submitted form gives: a button's JSON, the text itself, or the text read as JSON.

    JSON that tinywf could not keep (nested too deeply, text that is no Unicode) is refused
    with InvalidValue (naming ``event``), as the CLI refuses it: never taken as a string.
    """
    if form.kind == "text":
        return text
    try:
        value = json_of_text(text)
    except NotJSON as exc:
        raise InvalidValue(f"invalid value for event '{event}': {exc}" if event else f"invalid value: {exc}") from None
    return text if value is NO_JSON else value  # like the CLI: what is not JSON is a string
