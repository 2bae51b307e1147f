"""A tiny HTML builder that escapes by construction: text is escaped unless it is ``Html``.

Pages are built by pure functions from these pieces, never by pasting strings, so a run id,
a state value or a question that holds ``<script>`` is shown, not run.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from html import escape
from typing import Union

#: What may be a child of an element: text (escaped), markup, nothing, or a sequence of these.
Child = Union["Html", str, int, float, None, Iterable["Child"]]


class Html(str):
    """Text that is already HTML (the output of ``h`` or ``esc``): never escaped again."""

    __slots__ = ()


def esc(value: object) -> Html:
    """``value`` as HTML text (``<`` and quotes escaped); ``Html`` stays as it is."""
    if isinstance(value, Html):
        return value
    return Html(escape(str(value), quote=True))


def render(children: Child) -> Html:
    """Children as one piece of HTML: text escaped, markup kept, ``None`` dropped, sequences joined."""
    if children is None:
        return Html("")
    if isinstance(children, str | int | float):
        return esc(children)
    return Html("".join(render(child) for child in children))


def _attributes(attrs: Mapping[str, object]) -> str:
    parts = []
    for name, value in attrs.items():
        name = name.rstrip("_").replace("_", "-")  # class_ -> class, aria_label -> aria-label
        if value is None or value is False:
            continue
        parts.append(f" {name}" if value is True else f' {name}="{esc(value)}"')
    return "".join(parts)


_VOID = frozenset({"br", "hr", "img", "input", "meta", "link", "col", "wbr"})


def h(tag: str, attrs: Mapping[str, object] | None = None, *children: Child) -> Html:
    """The element ``<tag attrs>children</tag>``; attribute values and text are escaped.

    Example::

        h("a", {"href": f"/runs/{run_id}", "class_": "run"}, run_id)
    """
    opening = f"<{tag}{_attributes(attrs or {})}>"
    if tag in _VOID:
        return Html(opening)
    return Html(f"{opening}{render(children)}</{tag}>")
