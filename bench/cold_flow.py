"""A one-action flow: what ``tinywf run`` starts in the cold-start benchmark."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from tinywf_cli import Workflow, step


def echo(value: int) -> int:
    """A side effect that returns its input."""
    return value


class OneAction(Workflow[dict[str, Any]]):
    """Runs one action and finishes."""

    @step
    def only(self) -> Generator[Any, Any, Any]:
        yield self.action("one", echo, 1)
        return None
