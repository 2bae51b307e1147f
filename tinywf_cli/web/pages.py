"""The HTML pages of ``tinywf serve``, as pure functions of run documents.

Every page is one self-contained document: the stylesheet is inlined (the server's
Content-Security-Policy allows exactly that stylesheet by its hash), there is no script and
no external asset, and every form works without JavaScript. Statuses, pending kinds and
document keys are shown as they come, so runs of newer engines render too.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from importlib import resources
from typing import Any
from urllib.parse import quote, urlencode

from tinywf_cli.clock import ago, format_instant
from tinywf_cli.model import PendingResume, RunDocument, RunList, ShowDocument
from tinywf_cli.web.forms import EventForm, form_for
from tinywf_cli.web.html import Child, Html, h

#: Timeline entries per page of a run's page.
TIMELINE_PAGE = 25
#: Statuses after which a run changes no more.
ENDED = ("finished", "cancelled")


@cache
def stylesheet() -> str:
    """The pages' stylesheet (package data)."""
    return resources.files("tinywf_cli.web").joinpath("tinywf.css").read_text(encoding="utf-8")


def stylesheet_hash() -> str:
    """``'sha256-…'``: the Content-Security-Policy source that allows the inlined stylesheet."""
    digest = hashlib.sha256(stylesheet().encode("utf-8")).digest()
    return f"'sha256-{base64.b64encode(digest).decode('ascii')}'"


def run_href(run_id: str) -> str:
    """The path of a run's page."""
    return f"/runs/{quote(run_id, safe='')}"


def page(title: str, *body: Child, nav: bool = True, narrow: bool = False, where: str | None = None,
         refresh: str | None = None) -> Html:
    """A whole HTML document: head with the inlined stylesheet, an optional top bar, ``body``;
    with ``refresh``, a page that goes on to that address at once."""
    top = h("header", {"class_": "top"}, h("a", {"href": "/"}, "tinywf"),
            h("span", {"class_": "where"}, where) if where else None) if nav else None
    return Html("<!doctype html>\n" + h(
        "html", {"lang": "en"},
        h("head", {}, Html('<meta charset="utf-8">'),
          Html('<meta name="viewport" content="width=device-width, initial-scale=1">'),
          Html('<link rel="icon" href="data:,">'),  # no favicon request (a link's page has no token)
          h("meta", {"http-equiv": "refresh", "content": f"0; url={refresh}"}) if refresh else None,
          h("title", {}, f"{title} · tinywf"), h("style", {}, Html(stylesheet()))),
        h("body", {}, top, h("main", {"class_": "narrow" if narrow else None}, *body))))


def badge(status: str) -> Html:
    """A status word as a coloured badge (unknown statuses get the plain look)."""
    return h("span", {"class_": f"badge s-{status}", "data-status": status}, status)


def when(moment: datetime | None, now: datetime) -> Html:
    """A time for people (``3m ago``), the exact instant on hover."""
    if moment is None:
        return h("span", {"class_": "dim"}, "-")
    return h("time", {"datetime": format_instant(moment), "title": format_instant(moment)}, ago(moment, now))


def pretty(value: Any) -> str:
    """JSON for reading: indented, non-ASCII kept."""
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


def compact(value: Any, limit: int = 300) -> str:
    """JSON on one line, cut at ``limit`` characters."""
    text = json.dumps(value, ensure_ascii=False, separators=(", ", ": "), default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


# -- the list of runs ------------------------------------------------------------------------


def runs_page(runs: RunList, *, status: str | None, statuses: Sequence[str], now: datetime,
              where: str | None = None, tags: Sequence[str] = ()) -> Html:
    """``/``: every run (or those in ``status``, with ``tags``: ``KEY=VALUE``), newest first, with a
    filter per status; a run's tags link to the runs that share them."""
    kept = [("tag", t) for t in tags]
    filters = [h("a", {"href": "/" + ("?" + urlencode(kept) if kept else ""),
                       "class_": "on" if status is None else None}, "all")]
    filters += [h("a", {"href": "/?" + urlencode([("status", s), *kept]), "class_": "on" if s == status else None}, s)
                for s in statuses]
    tagged = any(r.tags for r in runs.runs)

    def tag_links(row_tags: Mapping[str, str]) -> Html:
        return h("td", {"class_": "mono"}, *(h("a", {"href": "/?" + urlencode({"tag": f"{k}={v}"}), "class_": "tag"},
                                               f"{k}={v} ") for k, v in row_tags.items()))

    rows = [h("tr", {"data-run": r.run_id},
              h("td", {}, h("a", {"href": run_href(r.run_id)}, r.run_id)),
              h("td", {"class_": "mono"}, r.workflow), h("td", {}, badge(r.status)),
              h("td", {"class_": "mono"}, r.step or "-"), h("td", {}, when(r.updated_at, now)),
              *((tag_links(r.tags),) if tagged else ()))
            for r in runs.runs]
    heads = ("run", "workflow", "status", "step", "updated", *(("tags",) if tagged else ()))
    empty = "No runs" + (f" in status {status}" if status else "") + (f" tagged {', '.join(tags)}" if tags else "")
    table = h("table", {"class_": "runs"},
              h("thead", {}, h("tr", {}, *(h("th", {}, c) for c in heads))),
              h("tbody", {}, *rows)) if rows else h("p", {"class_": "dim"},
                                                    empty + ("." if status or tags else " yet."))
    problems = [h("div", {"class_": "error-box"}, "unreadable: ", p) for p in runs.problems]
    return page("Runs", h("h1", {}, "Runs"), h("nav", {"class_": "filters", "aria-label": "status"}, *filters),
                *problems, table, where=where)


# -- answering an event ------------------------------------------------------------------------


def answer_form(action: str, form: EventForm, *, hidden: Mapping[str, str] | None = None,
                entered: str | None = None, invalid: str | None = None, big: bool = False) -> Html:
    """The form that answers one event: buttons, or a field and a button; the last error under it."""
    fields: list[Child] = [h("input", {"type": "hidden", "name": k, "value": v}) for k, v in (hidden or {}).items()]
    size = " big" if big else ""
    if form.kind == "buttons":
        fields += [h("button", {"type": "submit", "name": "value", "value": c.value,
                                "class_": f"{c.tone}{size}".strip()}, c.label) for c in form.choices]
    else:
        fields.append(h("input", {"type": form.input_type, "name": "value", "value": entered or "",
                                  "step": "any" if form.input_type == "number" else None,
                                  "aria-label": "answer", "placeholder": form.hint or "your answer",
                                  "aria-invalid": "true" if invalid else None, "autocomplete": "off"}))
        fields.append(h("button", {"type": "submit", "class_": f"primary{size}"}, "Answer"))
    if invalid:
        fields.append(h("p", {"class_": "invalid", "role": "alert"}, invalid))
    return h("form", {"method": "post", "action": action, "class_": "answer"}, *fields)


def request_facts(pending: PendingResume) -> Html | None:
    """The event's request without its question, as a list of facts (None when there is nothing more)."""
    rest = {k: v for k, v in (pending.request or {}).items() if k != "question"}
    if not rest:
        return None
    return h("dl", {"class_": "facts"}, *(
        (h("dt", {}, key), h("dd", {}, value if isinstance(value, str) else compact(value)))
        for key, value in rest.items()))


def question_of(pending: PendingResume) -> str:
    """The prompt an event shows: its ``question``, else a sentence naming its key."""
    question = (pending.request or {}).get("question")
    return str(question) if question else f"A value for event “{pending.key}”"


# -- a run --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Graph:
    """The step graph for a run's page: an SVG, or why there is none."""

    svg: Html | None
    note: str | None = None


def _pending_card(doc: RunDocument, pending: PendingResume, now: datetime, csrf: str,
                  invalid: Mapping[str, tuple[str, str]]) -> Html:
    head = h("p", {"class_": "dim mono"}, f"{pending.kind} {pending.key} · {pending.resume_id}")
    due = h("p", {"class_": "dim"}, "due ", when(pending.due_at, now)) if pending.due_at else None
    if pending.kind == "event":
        expects = doc.expects.get(pending.resume_id)
        entered, error = invalid.get(pending.resume_id, (None, None))
        action = f"{run_href(doc.run_id)}/resolve/{quote(pending.resume_id, safe='')}"
        form = answer_form(action, form_for(expects), hidden={"csrf": csrf}, entered=entered, invalid=error)
        hint = h("p", {"class_": "hint"}, f"accepts: {expects}") if expects else None
        return h("div", {"class_": "card pending", "data-resume": pending.resume_id},
                 h("p", {"class_": "question"}, question_of(pending)), head, request_facts(pending), due, form, hint)
    child = (pending.request or {}).get("run_id")
    body: list[Child] = [head, due]
    if isinstance(child, str):
        body.append(h("p", {}, "child run ", h("a", {"href": run_href(child)}, child)))
    elif pending.request:
        body.append(h("pre", {}, pretty(pending.request)))
    if pending.kind in ("timer", "retry", "limit", "breaker"):
        body.append(h("p", {"class_": "hint"}, "`tinywf tick` (cron) or `tinywf worker` carries it on when due"))
    return h("div", {"class_": "card pending", "data-resume": pending.resume_id}, *body)


def timeline(doc: ShowDocument, now: datetime, page_number: int) -> Html:
    """The audit log, newest first, ``TIMELINE_PAGE`` entries per page, with links to the others."""
    entries = list(reversed(doc.logs))
    pages = max(1, -(-len(entries) // TIMELINE_PAGE))
    page_number = min(max(page_number, 1), pages)
    shown = entries[(page_number - 1) * TIMELINE_PAGE: page_number * TIMELINE_PAGE]
    rows = [h("tr", {"class_": "entry", "data-type": e.type},
              h("td", {}, when(e.at, now)), h("td", {"class_": "mono"}, e.step or "-"),
              h("td", {"class_": "mono"}, e.type), h("td", {"class_": "values"}, compact(e.values) if e.values else ""))
            for e in shown]
    table = h("table", {"class_": "timeline"},
              h("thead", {}, h("tr", {}, *(h("th", {}, c) for c in ("when", "step", "entry", "values")))),
              h("tbody", {}, *rows))
    base = run_href(doc.run_id)
    links: list[Child] = []
    if page_number > 1:
        links.append(h("a", {"href": f"{base}?page={page_number - 1}#timeline", "rel": "prev"}, "← newer"))
    links.append(h("span", {"class_": "dim"}, f"page {page_number} of {pages} · {len(entries)} entries"))
    if page_number < pages:
        links.append(h("a", {"href": f"{base}?page={page_number + 1}#timeline", "rel": "next"}, "older →"))
    return h("section", {"id": "timeline"}, h("h2", {}, "Timeline"), table, h("nav", {"class_": "pager"}, *links))


def run_page(doc: ShowDocument, *, now: datetime, graph: Graph, csrf: str, page_number: int = 1,
             children: Sequence[str] = (), invalid: Mapping[str, tuple[str, str]] | None = None,
             where: str | None = None) -> Html:
    """``/runs/{id}``: status, state, pending events with forms, family, graph and timeline.

    ``invalid`` maps a resume id to the text last entered for it and why it was refused.
    """
    facts: list[Child] = [h("dt", {}, "workflow"), h("dd", {"class_": "mono"}, doc.workflow),
                          h("dt", {}, "step"), h("dd", {"class_": "mono"}, doc.step)]
    for key in ("version",):  # keys newer engines add, shown when present
        value = getattr(doc, key, None)
        if value is not None:
            facts += [h("dt", {}, key), h("dd", {}, str(value))]
    facts += [h("dt", {}, "created"), h("dd", {}, when(doc.created_at, now)),
              h("dt", {}, "updated"), h("dd", {}, when(doc.updated_at, now))]
    parent = getattr(doc, "parent", None)
    if parent:
        facts += [h("dt", {}, "parent"), h("dd", {}, h("a", {"href": run_href(str(parent))}, str(parent)))]
    if children:
        facts += [h("dt", {}, "children"),
                  h("dd", {}, *(h("span", {}, h("a", {"href": run_href(c)}, c), " ") for c in children))]
    base = run_href(doc.run_id)
    actions: list[Child] = []
    if doc.status not in ENDED:
        actions.append(h("form", {"method": "post", "action": f"{base}/cancel", "class_": "inline"},
                         h("input", {"type": "hidden", "name": "csrf", "value": csrf}),
                         h("button", {"type": "submit", "class_": "reject"}, "Cancel run")))
    if doc.status in ("failed", "blocked"):
        actions.append(h("form", {"method": "post", "action": f"{base}/retry", "class_": "inline"},
                         h("input", {"type": "hidden", "name": "csrf", "value": csrf}),
                         h("button", {"type": "submit", "class_": "primary"}, "Retry")))
    error = h("div", {"class_": "error-box", "role": "alert"}, h("strong", {}, f"{doc.error.type}: "),
              doc.error.message) if doc.error else None
    pending = [_pending_card(doc, p, now, csrf, invalid or {}) for p in doc.pending]
    graph_part = h("div", {"class_": "graph-wrap"}, graph.svg) if graph.svg is not None else None
    return page(
        doc.run_id,
        h("p", {"class_": "dim"}, h("a", {"href": "/"}, "runs"), " / ", doc.run_id),
        h("h1", {}, doc.run_id, " ", badge(doc.status)),
        h("p", {"class_": "doc"}, doc.doc) if doc.doc else None,
        error,
        h("dl", {"class_": "facts"}, *facts),
        h("div", {"class_": "actions"}, *actions) if actions else None,
        h("section", {"id": "pending"}, h("h2", {}, waiting_heading(doc)), *pending) if pending else None,
        h("section", {"id": "state"}, h("h2", {}, "State"), h("pre", {}, pretty(doc.state))),
        h("section", {"id": "graph"}, h("h2", {}, "Steps"), graph_part,
          h("p", {"class_": "hint"}, graph.note) if graph.note else None),
        timeline(doc, now, page_number),
        where=where,
    )


# -- link pages --------------------------------------------------------------------------------------


def waiting_heading(doc: RunDocument) -> str:
    """The heading of a run's pending resumes: several events, timers and children are a ``first``."""
    if len(doc.pending) > 1 and all(p.kind in ("event", "timer", "child") for p in doc.pending):
        return "Waiting for whichever comes first"
    return "Waiting for"


def link_page(doc: RunDocument, pending: PendingResume, *, action: str, expires_at: datetime, now: datetime,
              entered: str | None = None, invalid: str | None = None) -> Html:
    """What a signed link shows: the question, the request, and the form fit for the event's type."""
    expects = doc.expects.get(pending.resume_id)
    form = answer_form(action, form_for(expects), entered=entered, invalid=invalid, big=True)
    return page(
        question_of(pending),
        h("p", {"class_": "dim"}, doc.workflow),
        h("h1", {"class_": "question"}, question_of(pending)),
        request_facts(pending),
        form,
        h("p", {"class_": "hint"}, f"accepts: {expects}") if expects else None,
        h("p", {"class_": "hint"}, f"Run {doc.run_id}, event {pending.key}. This link works once; it expires ",
          when(expires_at, now), "."),
        nav=False, narrow=True)


def link_done_page(pending: PendingResume, value: Any, doc: RunDocument, form: EventForm | None = None) -> Html:
    """After a link's answer was taken: the question and the answer, by the label of the button
    pressed when it was one of ``form``'s (``Approve``, not ``true``)."""
    label = form.label_of(value) if form is not None else None
    return page(
        "Thank you",
        h("h1", {}, "Thank you — your answer was recorded"),
        h("p", {"class_": "notice"}, question_of(pending), " ",
          h("strong", {}, label if label is not None else compact(value, 120))),
        h("p", {"class_": "dim"}, f"Run {doc.run_id} is now ", badge(doc.status), ". This link no longer works."),
        nav=False, narrow=True)


def message_page(title: str, detail: str, *, nav: bool = False) -> Html:
    """A page that says one thing: a refused link, a missing token, a run not found."""
    return page(title, h("h1", {}, title), h("p", {"class_": "notice"}, detail), nav=nav, narrow=True)


def continue_page(location: str) -> Html:
    """Signed in: goes on to ``location`` (a path on this server) at once, a link to it otherwise."""
    return page("Signed in", h("h1", {}, "Signed in"),
                h("p", {"class_": "notice"}, h("a", {"href": location}, "Continue")),
                nav=False, narrow=True, refresh=location)


def sign_in_page() -> Html:
    """Shown to a browser without the server's token: where to find it, and a field to paste it."""
    return page(
        "Sign in",
        h("h1", {}, "This server needs its token"),
        h("p", {}, "Open the address `tinywf serve` printed when it started (it ends in ",
          h("code", {}, "/?token=…"), "), or paste the token ($TINYWF_API_TOKEN) here:"),
        h("form", {"method": "get", "action": "/", "class_": "answer"},
          h("input", {"type": "text", "name": "token", "aria-label": "token", "autocomplete": "off"}),
          h("button", {"type": "submit", "class_": "primary"}, "Sign in")),
        nav=False, narrow=True)
