"""``GET /metrics``: the store's runs, limits and breakers in Prometheus's text format.

Every figure is read from the store at the scrape (nothing is counted in the server's memory,
so several servers over one store agree, and a restart loses nothing):

- ``tinywf_runs{status}``: runs per status (every status, 0 included; ``unreadable`` records too);
- ``tinywf_runs_waiting{kind}``: waiting runs per kind of pending resume (a run waiting on an
  event and a timer counts under both);
- ``tinywf_limit_in_flight``, ``tinywf_limit_waiting``, ``tinywf_limit_concurrency`` per limit and key;
- ``tinywf_breaker_state{breaker, state}`` (1 for the state it is in, 0 for the others) and
  ``tinywf_breaker_failures{breaker}``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from tinywf_cli.model import BreakerList, LimitList

#: The media type of Prometheus's text exposition format.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
STATUSES = ("running", "waiting", "paused", "blocked", "finished", "failed", "cancelled", "unreadable")
KINDS = ("event", "timer", "retry", "child", "limit", "breaker")
BREAKER_STATES = ("closed", "open", "half_open")


def _label(value: str) -> str:
    """A label value, escaped as the format wants (backslash, quote, newline)."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(**labels: str | None) -> str:
    shown = ",".join(f'{key}="{_label(value)}"' for key, value in labels.items() if value is not None)
    return "{" + shown + "}" if shown else ""


def _family(name: str, help_text: str, samples: Iterable[tuple[str, float]]) -> list[str]:
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} gauge"]
    lines += [f"{name}{labels} {value:g}" for labels, value in samples]
    return lines


def metrics_text(statuses: Iterable[str], waiting_kinds: Iterable[str], limits: LimitList,
                 breakers: BreakerList) -> str:
    """The exposition: ``statuses`` has one item per run, ``waiting_kinds`` one per waiting run
    and kind it waits on."""
    per_status = Counter(statuses)
    per_kind = Counter(waiting_kinds)
    lines = _family("tinywf_runs", "Runs in the store, per status.",
                    ((_labels(status=s), per_status.get(s, 0)) for s in STATUSES))
    lines += _family("tinywf_runs_waiting", "Waiting runs, per kind of pending resume.",
                     ((_labels(kind=k), per_kind.get(k, 0)) for k in KINDS))
    lines += _family("tinywf_limit_in_flight", "Attempts holding a slot of the limit.",
                     ((_labels(limit=r.name, key=r.key), r.in_flight) for r in limits.limits))
    lines += _family("tinywf_limit_waiting", "Runs waiting for room under the limit.",
                     ((_labels(limit=r.name, key=r.key), r.waiting) for r in limits.limits))
    lines += _family("tinywf_limit_concurrency", "The limit's concurrency (absent: none).",
                     ((_labels(limit=r.name, key=r.key), r.concurrency) for r in limits.limits
                      if r.concurrency is not None))
    lines += _family("tinywf_breaker_state", "1 for the state the breaker is in, 0 for the others.",
                     ((_labels(breaker=b.name, state=state), float(b.state == state))
                      for b in breakers.breakers for state in BREAKER_STATES))
    lines += _family("tinywf_breaker_failures", "Failures the breaker counts now.",
                     ((_labels(breaker=b.name), b.failures) for b in breakers.breakers))
    return "\n".join(lines) + "\n"
