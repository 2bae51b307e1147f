"""``tinywf new``: a flow file and its test, written from a ``FlowSpec``.

The flow file keeps the control flow (the Workflow class: state model, steps, transitions,
waits and timers) apart from the functions it calls: one stub per task, to fill in, and one
per step that has several ways to go, to choose the next. Every transition is written out as
``return "name"`` so that ``tinywf graph`` draws the spec's. The test walks a run through the
flow in memory as the stubs are written, and passes as generated.

Both files keep to 88 columns, pass ruff and ``mypy --strict``, and are written atomically;
neither replaces a file unless asked (``force``).
"""

from __future__ import annotations

import ast
import contextlib
import os
import textwrap
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from tinywf_cli.authoring.spec import EventWait, FlowSpec, PlannedStep, TimerWait, Walk
from tinywf_cli.errors import Conflict, StorageError
from tinywf_cli.stores.files.fileio import fsync_dir, problem

#: The widest line either file has (the width most formatters keep to).
WIDTH = 88
_INDENT = "    "


# -- writing --------------------------------------------------------------------------------


@dataclass(frozen=True)
class NewFlow:
    """What ``tinywf new`` wrote: the flow, its test, as the paths were given."""

    flow: Path
    test: Path
    spec: FlowSpec


def new_flow(spec: FlowSpec, directory: Path, tests: Path = Path("tests"), *, force: bool = False) -> NewFlow:
    """Write ``DIR/NAME.py`` and ``tests/test_NAME.py`` for ``spec``; ``Conflict`` (exit 4) when
    one exists and ``force`` is not given, with nothing written."""
    flow = directory / f"{spec.name}.py"
    test = tests / f"test_{spec.name}.py"
    for path in (flow, test):
        if path.is_dir():
            raise Conflict(f"{path} is a directory; nothing was written")
        if not force and (path.exists() or path.is_symlink()):
            raise Conflict(f"{path} exists; nothing was written (--force replaces it)")
    first_party = (directory.resolve().parent / "tinywf_cli").is_dir()
    texts = {flow: flow_source(spec, flow, test, first_party),
             test: test_source(spec, flow, test)}
    written: list[Path] = []
    try:
        for path, text in texts.items():
            if write_file(path, text, force=force):
                written.append(path)
    except BaseException:
        for path in written:  # the other file was new: take it back, so that nothing is left half done
            with contextlib.suppress(OSError):
                path.unlink()
        raise
    return NewFlow(flow, test, spec)


def write_file(path: Path, text: str, *, force: bool) -> bool:
    """Write ``text`` to ``path`` atomically and durably (a temp file, synced, then linked or
    renamed into place); True when the file is new. Without ``force`` an existing file is never
    replaced, even one made meanwhile."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(path.parent, f"cannot make the directory: {problem(exc)}") from None
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    data = text.encode("utf-8")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        new = not path.exists()
        if force:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)  # fails when the file appeared since it was looked for
        fsync_dir(path.parent)
    except FileExistsError:
        raise Conflict(f"{path} exists; nothing was written (--force replaces it)") from None
    except OSError as exc:
        raise StorageError(path, f"cannot write: {problem(exc)}") from None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
    return new


# -- the flow file --------------------------------------------------------------------------


def flow_source(spec: FlowSpec, flow: Path, test: Path, first_party: bool = False) -> str:
    """The flow file's text. ``first_party``: tinywf_cli is the project's own package (this
    repository), so its import is a section of its own, as isort sorts it there."""
    steps = spec.steps
    events = [s.wait for s in steps if isinstance(s.wait, EventWait)]
    timed = any(isinstance(s.wait, TimerWait) for s in steps) or any(e.timeout is not None for e in events)
    names = _type_names([*(f.type for f in spec.fields), *(e.type for e in events)])
    dates = [n for n in ("date", "datetime") if n in names] + (["timedelta"] if timed else [])
    typing = ["Any", *(["Literal"] if any(s.choice for s in steps) else [])]
    tinywf = [*(["EventTimeout"] if any(e.timeout is not None for e in events) else []), "Workflow", "step"]
    lines = [
        *_docstring(f"{spec.workflow}: {_lower_first(spec.doc)}", 0, more=[
            *_wrapped(f"Made by `{_command(spec)}`: the control flow is the {spec.workflow} class at the "
                      "end; the tasks it calls are the functions above it, stubs to fill in (each has a "
                      "TODO). A task's work is done once per step visit and recorded; a step's own code "
                      "runs again on replay, so it only decides.", 0),
            "",
            f"    tinywf run {flow}",
            f"    tinywf graph {flow}",
            f"    pytest {test}",
        ]),
        "",
        "from __future__ import annotations",
        "",
        "from collections.abc import Generator",
        *([f"from datetime import {', '.join(sorted(dates))}"] if dates else []),
        f"from typing import {', '.join(typing)}",
        "",
        "from pydantic import BaseModel",
        *([""] if first_party else []),
        f"from tinywf_cli import {', '.join(tinywf)}",
        "",
        "#: A step: yields tinywf commands, returns the next step's name (None ends the run).",
        "Steps = Generator[Any, Any, str | None]",
        "",
        "",
        f"class {spec.state_model}(BaseModel):",
        *_docstring(f"The state of one {spec.workflow} run: what its steps and tasks read and change.", 1),
        *([""] if spec.fields else []),
        *(f"    {f.name}: {f.type} = {f.default}" for f in spec.fields),
        *_tasks(spec),
        *_choices(spec),
        "",
        "",
        _rule("the control flow"),
        "",
        "",
        *_call("", f"class {spec.workflow}", [f"Workflow[{spec.state_model}]"], close="):"),
        *_docstring(spec.doc, 1),
    ]
    for planned in steps:
        lines += ["", *_step(planned)]
    return "\n".join(lines) + "\n"


def _tasks(spec: FlowSpec) -> Iterator[str]:
    tasks = spec.tasks()
    if not tasks:
        return
    yield from ["", "", _rule("tasks: the work, done once per step visit and recorded; fill them in")]
    for task, callers in tasks.items():
        steps = ", ".join(f"'{s}'" for s in callers)
        yield from [
            "", "",
            *_def(task, f"state: {spec.state_model}", [spec.state_model]),
            *_docstring(f"A task of step{'s' if len(callers) > 1 else ''} {steps}.", 1),
            *_wrapped(f"TODO: {task.replace('_', ' ')}; change `state` and return it", 1, "# "),
            "    return state",
        ]


def _choices(spec: FlowSpec) -> Iterator[str]:
    choosing = [s for s in spec.steps if s.choice]
    if not choosing:
        return
    yield from ["", "", _rule("choices: which step comes next, decided from the state")]
    for planned in choosing:
        options = [_quote(n) for n in planned.next]
        yield from [
            "", "",
            *_def(str(planned.choice), f"state: {spec.state_model}", options, literal=True),
            *_docstring(f"The step after '{planned.name}': {' or '.join(options)}.", 1),
            *_wrapped("TODO: choose from the state alone (asked again on replay; work belongs in a task)",
                      1, "# "),
            f"    return {_quote(spec.default_next(planned) or '')}",
        ]


def _step(planned: PlannedStep) -> list[str]:
    body: list[str] = []
    for task in planned.tasks:
        body += _call("        ", "self.state = yield self.action", [_quote(task), task, "self.state"])
    wait = planned.wait
    if isinstance(wait, TimerWait):
        body += _call("        ", "yield self.sleep", [_quote(wait.key), _timedelta(wait.duration)])
    elif isinstance(wait, EventWait):
        args = [_quote(wait.key), f"type={wait.type}",
                *([f"timeout={_timedelta(wait.timeout)}"] if wait.timeout is not None else []),
                f"question={_quote(wait.question)}"]
        if wait.timeout is None:
            body += _call("        ", f"self.state.{wait.key} = yield self.wait_event", args)
        else:
            body += ["        try:", *_call("            ", f"self.state.{wait.key} = yield self.wait_event", args),
                     "        except EventTimeout:  # no answer in time: logged, and the run goes on",
                     *_call("            ", "self.log", [_quote("no_answer"), f"event={_quote(wait.key)}"])]
    if not planned.next:
        body.append("        return None")
    elif planned.choice is None:
        body.append(f"        return {_quote(planned.next[0])}")
    else:
        body += ["        # each way out is written out, so that `tinywf graph` can draw it",
                 f"        match {planned.choice}(self.state):"]
        for index, target in enumerate(planned.next):
            last = index == len(planned.next) - 1
            body += [f"            case {'_' if last else _quote(target)}:", f"                return {_quote(target)}"]
    returns = "Steps" if planned.tasks or wait is not None else "str | None"
    return ["    @step", f"    def {planned.name}(self) -> {returns}:", *body]


# -- the test file --------------------------------------------------------------------------


def test_source(spec: FlowSpec, flow: Path, test: Path) -> str:
    """The test's text: a run walked through the flow in memory, as the stubs are written."""
    walk = spec.walk()
    timers = any(isinstance(s.wait, TimerWait) for s in walk.stops)
    timeout = next((s for s in walk.stops if isinstance(s.wait, EventWait) and s.wait.timeout is not None), None)
    lines = [
        *_wrapped(f'"""The test `{_command(spec)}` wrote for {flow}: a run walked through it in '
                  "memory, its clock moved by hand. It passes with the stubs as written; keep it passing as "
                  'you fill them in."""', 0),
        "",
        *(["from datetime import timedelta"] if timers or timeout else []),
        "from pathlib import Path",
        "",
        "from tinywf_cli.testing import MemoryRuntime",
        "",
        *_path_from(test, flow),
        "",
        "",
        *_walk_test(walk),
    ]
    if timeout is not None:
        lines += ["", "", *_timeout_test(walk, timeout)]
    return "\n".join(lines) + "\n"


def _walk_test(walk: Walk) -> list[str]:
    title = "def test_a_run_goes_to_the_end() -> None:" if walk.ends else "def test_a_run_goes_round() -> None:"
    lines = [title, "    rt = MemoryRuntime()", "    run = rt.start(FLOW)"]
    for stop in walk.stops:
        wait = stop.wait
        lines += ['    assert run.status == "waiting"', f"    assert run.step == {_quote(stop.name)}"]
        if isinstance(wait, EventWait):
            lines += _call("    ", "run = rt.resolve", ["run.run_id", _quote(wait.key), wait.sample])
        elif isinstance(wait, TimerWait):
            lines += [f"    rt.clock.advance({_timedelta(wait.duration)})", "    rt.tick()",
                      "    run = rt.get(run.run_id)"]
    if walk.ends:
        lines.append('    assert run.status == "finished"')
    else:
        lines += ['    assert run.status == "waiting"', f"    assert run.step == {_quote(walk.steps[-1])}"]
    lines += ["    logs = rt.get(run.run_id).logs",
              *_call("    ", "assert [e.values[\"to\"] for e in logs if e.type == \"transition\"] == ",
                     [_quote(s) for s in walk.steps[1:]], open_="[", close="]")]
    return lines


def _timeout_test(walk: Walk, timed: PlannedStep) -> list[str]:
    wait = timed.wait
    assert isinstance(wait, EventWait) and wait.timeout is not None
    lines = [f"def test_no_answer_to_{wait.key}_is_logged() -> None:",
             "    rt = MemoryRuntime()", "    run = rt.start(FLOW)"]
    for stop in walk.stops[: walk.stops.index(timed)]:
        if isinstance(stop.wait, EventWait):
            lines += _call("    ", "run = rt.resolve", ["run.run_id", _quote(stop.wait.key), stop.wait.sample])
        elif isinstance(stop.wait, TimerWait):
            lines += [f"    rt.clock.advance({_timedelta(stop.wait.duration)})", "    rt.tick()"]
    lines += [f"    rt.clock.advance({_timedelta(wait.timeout)})", "    rt.tick()",
              "    logs = rt.get(run.run_id).logs",
              *_call("    ", 'assert [e.values for e in logs if e.type == "no_answer"] == ',
                     [f"{{\"event\": {_quote(wait.key)}}}"], open_="[", close="]")]
    return lines


def _path_from(test: Path, flow: Path) -> list[str]:
    """``FLOW = Path(__file__).resolve().parent.parent / "flows" / "x.py"``: the flow, found from its test."""
    relative = Path(os.path.relpath(flow.resolve(), test.resolve().parent))
    parts = relative.parts
    ups = 0
    while ups < len(parts) and parts[ups] == "..":
        ups += 1
    terms = ["Path(__file__).resolve().parent" + ".parent" * ups, *map(_quote, parts[ups:])]
    one = "FLOW = " + " / ".join(terms)
    if len(one) <= WIDTH:
        return [one]
    return ["FLOW = (", f"{_INDENT}{terms[0]}", *(f"{_INDENT}/ {t}" for t in terms[1:]), ")"]


# -- writing Python ---------------------------------------------------------------------------


def _call(indent: str, head: str, args: Iterable[str], *, open_: str = "(", close: str = ")") -> list[str]:
    """``head(args)`` on one line when it fits, else its arguments on lines of their own."""
    args = list(args)
    one = f"{indent}{head}{open_}{', '.join(args)}{close}"
    if len(one) <= WIDTH:
        return [one]
    inner = indent + _INDENT
    middle = inner + ", ".join(args)
    if len(middle) <= WIDTH:
        return [f"{indent}{head}{open_}", middle, f"{indent}{close}"]
    return [f"{indent}{head}{open_}", *(f"{inner}{a}," for a in args), f"{indent}{close}"]


def _wrapped(text: str, level: int, prefix: str = "") -> list[str]:
    """``text`` filled to the width at an indentation ``level``, each line starting with ``prefix``."""
    indent = _INDENT * level + prefix
    return textwrap.wrap(text, WIDTH, initial_indent=indent, subsequent_indent=indent,
                         break_long_words=False, break_on_hyphens=False) or [indent.rstrip()]


def _docstring(text: str, level: int, more: list[str] | None = None) -> list[str]:
    """A docstring of ``text`` (then the lines ``more``, after a blank one): one line when it
    fits, else filled, closed on a line of its own."""
    indent = _INDENT * level
    safe = text.replace("\\", "\\\\").replace('"""', '\\"\\"\\"')
    one = f'{indent}"""{safe}"""'
    if len(one) <= WIDTH and not safe.endswith('"') and not more:
        return [one]
    lines = textwrap.wrap(safe, WIDTH - 3, initial_indent=indent, subsequent_indent=indent,
                          break_long_words=False, break_on_hyphens=False)
    lines[0] = indent + '"""' + lines[0][len(indent):]
    return [*lines, *(["", *more] if more else []), f'{indent}"""']


def _def(name: str, parameter: str, returns: list[str], *, literal: bool = False) -> list[str]:
    """A function's ``def`` line: ``def name(parameter) -> returns:`` (``Literal[...]`` of them when
    ``literal``), wrapped as formatters wrap it when it is too wide."""
    result = f"Literal[{', '.join(returns)}]" if literal else returns[0]
    one = f"def {name}({parameter}) -> {result}:"
    if len(one) <= WIDTH:
        return [one]
    if len(f") -> {result}:") <= WIDTH:
        return [f"def {name}(", f"{_INDENT}{parameter},", f") -> {result}:"]
    return [f"def {name}(", f"{_INDENT}{parameter},", ") -> Literal[", *(f"{_INDENT}{r}," for r in returns), "]:"]


def _type_names(types: Iterable[str]) -> set[str]:
    """The names the types use (``list[datetime] | None``: list, datetime)."""
    return {node.id for text in types for node in ast.walk(ast.parse(text, mode="eval"))
            if isinstance(node, ast.Name)}


def _rule(title: str) -> str:
    head = f"# -- {title} "
    return head + "-" * max(3, WIDTH - len(head))


def _quote(text: str) -> str:
    """A Python string literal of ``text``, double-quoted."""
    body = text.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + "".join(c if c.isprintable() else f"\\u{ord(c):04x}" for c in body) + '"'


def _timedelta(duration: timedelta) -> str:
    """``timedelta(days=1, hours=12)``: a duration as a reader writes it."""
    seconds = duration.total_seconds()
    parts = []
    for unit, size in (("days", 86400), ("hours", 3600), ("minutes", 60)):
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{unit}={int(count)}")
    if seconds:
        parts.append(f"seconds={seconds:g}")
    return f"timedelta({', '.join(parts) or '0'})"


def _command(spec: FlowSpec) -> str:
    return " ".join(["tinywf new", spec.name, *([spec.options] if spec.options else [])])


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:] if text[1:2].islower() or len(text) == 1 else text
