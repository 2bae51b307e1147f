"""Tags, and the filters that pick runs out of many: ``list``, and ``cancel``/``retry``/``pause``/
``resume`` by filter.

A run's tags are a flat ``{key: value}`` of strings, given at its start (``run --tag``,
``Runtime.start(tags=)``) or by ``self.tag(...)`` in a step. A ``RunFilter`` is the AND of
everything a command was given; ``matches`` asks it about one run's head fields, so the read
path (plain dicts) and the runtime (``RunHead``) select alike.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from tinywf_cli.clock import parse_duration
from tinywf_cli.errors import BadInput

#: A tag's key: what a keyword argument may be, and dots and dashes (``--tag team.name=x``).
TAG_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}", re.ASCII)
#: The longest tag value kept.
MAX_TAG_VALUE = 256
#: The most tags one run carries.
MAX_TAGS = 32
#: Statuses a run is ``--stuck`` in when it has not changed for long.
STUCK_STATUSES = frozenset({"running", "waiting"})


def checked_tags(tags: Mapping[str, Any], where: str, *, have: Mapping[str, str] | None = None) -> dict[str, str]:
    """``tags`` as stored (``{str: str}``), or TypeError naming ``where`` and what is wrong.

    ``have``: the tags the run already carries (the limit counts the union).
    """
    if not isinstance(tags, Mapping):
        raise TypeError(f"{where}: tags are a {{key: value}} mapping of strings, not {tags!r}")
    out: dict[str, str] = {}
    for key, value in tags.items():
        if not isinstance(key, str) or TAG_KEY.fullmatch(key) is None:
            raise TypeError(f"{where}: tag key {key!r} must be a letter or _ then up to 63 letters, digits, "
                            "'_', '.' or '-'")
        if not isinstance(value, str):
            raise TypeError(f"{where}: tag {key}={value!r}: a tag's value is a string (str(...) it)")
        if len(value) > MAX_TAG_VALUE:
            raise TypeError(f"{where}: tag {key}: a value is at most {MAX_TAG_VALUE} characters")
        if any(ord(c) < 32 or ord(c) == 127 for c in value):
            raise TypeError(f"{where}: tag {key}: a value holds no control characters")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise TypeError(f"{where}: tag {key}: a value is UTF-8 text") from None
        out[key] = value
    if len({**(have or {}), **out}) > MAX_TAGS:
        raise TypeError(f"{where}: a run carries at most {MAX_TAGS} tags")
    return out


def parse_tag_options(given: Iterable[str], option: str = "--tag") -> dict[str, str]:
    """``["customer=acme", "tier=gold"]`` from the command line as tags; BadInput (exit 2) naming the bad one."""
    tags: dict[str, str] = {}
    for text in given:
        key, sep, value = text.partition("=")
        if not sep:
            raise BadInput(f"{option} takes KEY=VALUE, not {text!r}")
        try:
            tags.update(checked_tags({key: value}, option, have=tags))
        except TypeError as exc:
            raise BadInput(str(exc)) from None
    return tags


@dataclass(frozen=True, slots=True)
class RunFilter:
    """Which runs a command is about: every given part must hold (AND).

    ``since``/``stuck_before`` are instants: updated at or after ``since``; ``running`` or
    ``waiting`` and not updated since ``stuck_before``.
    """

    tags: Mapping[str, str] = field(default_factory=dict)
    statuses: frozenset[str] = frozenset()
    flow: str | None = None
    since: datetime | None = None
    stuck_before: datetime | None = None

    @property
    def empty(self) -> bool:
        """Whether nothing was given: such a filter selects every run (bulk commands refuse it)."""
        return not (self.tags or self.statuses or self.flow or self.since or self.stuck_before)

    @property
    def lists_unreadable(self) -> bool:
        """Whether records that cannot be read are listed: with no filter, or ``--status unreadable``
        (alone or with other statuses); never with a filter on the fields such a record hides."""
        if self.tags or self.flow or self.since or self.stuck_before:
            return False
        return not self.statuses or "unreadable" in self.statuses

    def matches(self, status: str, workflow: str, tags: Mapping[str, str], updated_at: datetime | None,
                flow_file: str | None = None) -> bool:
        """Whether a run with these fields is selected."""
        if self.statuses and status not in self.statuses:
            return False
        if self.flow is not None and not _flow_matches(self.flow, workflow, flow_file):
            return False
        for key, value in self.tags.items():
            if tags.get(key) != value:
                return False
        if self.since is not None and (updated_at is None or updated_at < self.since):
            return False
        return self.stuck_before is None or (status in STUCK_STATUSES and updated_at is not None
                                             and updated_at < self.stuck_before)


def _flow_matches(wanted: str, workflow: str, flow_file: str | None) -> bool:
    """``--flow`` names the workflow as ``list`` shows it (``checkout.py:Checkout``), its class
    (``Checkout``) or its file (``flows/checkout.py``: the end of the absolute path the run keeps),
    with or without ``:Class``."""
    own_class = workflow.rpartition(":")[2]
    if wanted in (workflow, own_class):
        return True
    path, colon, cls = wanted.rpartition(":")
    if not colon:
        path = wanted
    elif cls != own_class:
        return False
    path = path.removeprefix("./")
    if flow_file is None or not path:
        return False
    return flow_file == path or flow_file.endswith("/" + path)


def statuses_of(text: str | None) -> frozenset[str]:
    """``--status S[,S…]`` as a set (none given: empty)."""
    return frozenset(s.strip() for s in (text or "").split(",") if s.strip())


def run_filter(now: datetime, *, tags: Iterable[str] = (), status: str | None = None, flow: str | None = None,
               since: str | None = None, stuck: str | None = None, statuses: Iterable[str] = ()) -> RunFilter:
    """The filter of a command's options (``--tag`` texts, ``--status S[,S…]``, ``--flow``,
    ``--since AGE``, ``--stuck AGE``); BadInput for any that does not parse."""
    chosen = statuses_of(status)
    unknown = sorted(chosen - frozenset(statuses)) if statuses else []
    if unknown:
        raise BadInput(f"--status must be one of {', '.join(statuses)}, not {', '.join(map(repr, unknown))}")

    def age(text: str | None, option: str) -> timedelta | None:
        if text is None:
            return None
        try:
            return parse_duration(text, "age")
        except BadInput as exc:
            raise BadInput(f"{option}: {exc.message}") from None

    since_age, stuck_age = age(since, "--since"), age(stuck, "--stuck")
    return RunFilter(tags=parse_tag_options(tags), statuses=chosen, flow=flow or None,
                     since=None if since_age is None else now - since_age,
                     stuck_before=None if stuck_age is None else now - stuck_age)
