"""A flow file read from its source, never run: its workflows, steps, transitions and keys.

``tinywf graph`` draws what this finds (Mermaid ``stateDiagram-v2`` or Graphviz DOT), and
the loader refuses a flow whose step returns a name that is not a step. Everything here is
pure: source text in, frozen dataclasses and diagram text out.

What a step can return is read from its ``return`` statements: ``return self.ship``,
``return "ship"``, ``return None`` (or a bare ``return``, or the end of the method) and
conditional expressions of these. Anything else (``return self.pick()``, a variable) is
*computed*: drawn as ``?``, never guessed.
"""

from __future__ import annotations

import ast
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from tinywf_cli.errors import FlowLoadError
from tinywf_cli.names import WORKFLOW_API

if TYPE_CHECKING:
    from tinywf_cli.model import ShowDocument

#: Where a run starts and finishes, in edges: Mermaid's ``[*]``.
END = "[*]"
#: The target of a transition that only the running code knows.
COMPUTED = "?"

#: The ``self.<kind>(key, ...)`` calls listed per step.
COMMAND_KINDS = ("action", "sleep", "sleep_until", "wait_event", "parallel", "child", "start_child")

#: How a step ends: at a step, at the end of the run, somewhere computed, or at a name that is no step.
TransitionKind = Literal["step", "end", "computed", "missing"]

# How a name is defined in a class body: a step, a signal, a plain method (returning it as
# the next step fails for sure), or something else (an attribute, a property: unknown).
_STEP, _SIGNAL, _METHOD, _OTHER = "step", "signal", "method", "other"
_PLAIN_DECORATORS = frozenset({"staticmethod", "classmethod"})
# Bases that add nothing a flow's steps depend on.
_NEUTRAL_BASES = frozenset({"object", "Generic", "typing.Generic", "ABC", "abc.ABC"})
_TINYWF_MODULES = ("tinywf_cli", "tinywf_cli.authoring.workflow")
# Step names Mermaid would read as a keyword (its lexer ignores case; "default" even as a prefix).
_MERMAID_WORDS = frozenset({"note", "state", "class", "classdef", "scale", "direction", "hide", "end", "click",
                            "style", "linkstyle", "acctitle", "accdescr"})
_MERMAID_PREFIXES = ("default", "statediagram")


# -- what a flow is made of ------------------------------------------------------------------


@dataclass(frozen=True)
class Command:
    """Something a step yields, as written in its source: ``wait_event ask_{count}``."""

    #: ``action``, ``sleep``, ``sleep_until``, ``wait_event``, ``parallel``, ``child`` or ``start_child``.
    kind: str
    #: The key as written; f-string placeholders kept (``ask_{count}``); ``?`` when there is none.
    #: For ``parallel``: the keys of the actions written inside it, else its argument.
    key: str
    #: Line in the flow file.
    line: int
    #: The helper method (``yield from self.notify(...)``) the command is written in, if not the step.
    via: str | None = None
    #: ``parallel``: the keys of the actions written inside the call.
    actions: tuple[str, ...] = ()

    def describe(self) -> str:
        """``action send_receipt_email_{receipt.cycle}``, with ``(via helper)`` when in a helper."""
        text = f"{self.kind} {self.key}"
        return f"{text} (via {self.via})" if self.via else text


@dataclass(frozen=True)
class Transition:
    """One way a step can end: to a step, to the end of the run, or to a name known only at run time."""

    #: ``step`` (names a step), ``end`` (finishes the run), ``computed`` (not readable from the
    #: source) or ``missing`` (names something that is not a step: the run would fail).
    kind: TransitionKind
    #: The step named (``step``) or the name that is no step (``missing``); ``None`` otherwise.
    target: str | None
    #: The returned expression as written (``self.step_end``, ``None``), or ``end of step``.
    source: str
    #: Line in the flow file.
    line: int

    @property
    def to(self) -> str:
        """The target as an edge end: the step, ``[*]`` for the end, ``?`` when computed, or the bad name."""
        if self.kind == "end":
            return END
        if self.kind == "computed":
            return COMPUTED
        return self.target or COMPUTED


@dataclass(frozen=True)
class StepInfo:
    """A step of a workflow: where it may lead and what it yields, in source order."""

    name: str
    #: Line of its ``def``.
    line: int
    #: Whether runs start here.
    start: bool
    #: The class that defines it (a base class, for an inherited step).
    defined_in: str
    transitions: tuple[Transition, ...]
    commands: tuple[Command, ...]

    @property
    def next_steps(self) -> tuple[str, ...]:
        """Where the step may lead, each once, in source order: step names, ``[*]``, ``?``."""
        return tuple(dict.fromkeys(t.to for t in self.transitions))


@dataclass(frozen=True)
class Problem:
    """A mistake the source shows for sure: a step returning a name that is not a step."""

    line: int
    #: ``step 'check' returns 'chek', which is not a step of GuessGame``.
    message: str


@dataclass(frozen=True)
class WorkflowInfo:
    """A workflow class as its source shows it."""

    name: str
    #: Line of its ``class``.
    line: int
    #: The first line of its docstring.
    doc: str | None
    #: The state model as written in ``Workflow[...]`` (``None`` for a plain ``Workflow``).
    model: str | None
    #: The step runs start at: the one marked ``start=True``, else the first.
    start: str | None
    steps: tuple[StepInfo, ...]
    #: Its ``@signal`` methods.
    signals: tuple[str, ...]
    #: Workflow classes of the same file it derives from.
    bases: tuple[str, ...] = ()
    #: False when a base or decorator from elsewhere may add steps the source does not show.
    complete: bool = True
    problems: tuple[Problem, ...] = ()

    def step(self, name: str) -> StepInfo:
        """The step called ``name``; KeyError when there is none."""
        for info in self.steps:
            if info.name == name:
                return info
        raise KeyError(name)

    @property
    def step_names(self) -> tuple[str, ...]:
        """The steps' names, in order."""
        return tuple(s.name for s in self.steps)

    def edges(self) -> list[tuple[str, str]]:
        """Every transition once: ``("[*]", start)``, then ``(step, next)`` in source order."""
        found: dict[tuple[str, str], None] = {}
        if self.start is not None:
            found[(END, self.start)] = None
        for info in self.steps:
            for target in info.next_steps:
                found[(info.name, target)] = None
        return list(found)


@dataclass(frozen=True)
class FlowAnalysis:
    """Everything read from one flow file."""

    #: The file, as shown in messages.
    path: str
    #: Its workflow classes (those with steps), in definition order.
    workflows: tuple[WorkflowInfo, ...]

    def workflow(self, name: str | None = None) -> WorkflowInfo:
        """The workflow ``name``, or the file's only one; FlowLoadError naming the choices otherwise."""
        if name is not None:
            for info in self.workflows:
                if info.name == name:
                    return info
            known = ", ".join(w.name for w in self.workflows) or "none"
            raise FlowLoadError(f"{self.path} has no workflow class '{name}' (workflows: {known})")
        if not self.workflows:
            raise FlowLoadError(f"{self.path} defines no workflow (a Workflow subclass with @step methods)")
        if len(self.workflows) > 1:
            names = ", ".join(w.name for w in self.workflows)
            raise FlowLoadError(f"{self.path} defines {len(self.workflows)} workflows ({names}): "
                                f"name one, e.g. {self.path}:{self.workflows[0].name}")
        return self.workflows[0]

    def problems(self) -> list[Problem]:
        """Mistakes that fail runs, in workflows no other class of the file derives from.

        A base class may return a step only its subclasses define; the subclasses, which
        inherit the step, are checked instead.
        """
        derived = {base for info in self.workflows for base in info.bases}
        found = [p for info in self.workflows if info.name not in derived for p in info.problems]
        return sorted(dict.fromkeys(found), key=lambda p: p.line)


def analyze_source(source: str | bytes, path: str = "<flow>") -> FlowAnalysis:
    """Read a flow's source (never running it); FlowLoadError when it is not valid Python."""
    try:
        tree = ast.parse(source, filename=path)
    except SyntaxError as exc:
        raise FlowLoadError(f"{syntax_where(path, exc)}: syntax error: {exc.msg}") from None
    except ValueError as exc:  # NUL bytes, undecodable text
        raise FlowLoadError(f"cannot read flow file '{path}': {exc}") from None
    except (RecursionError, MemoryError):
        raise FlowLoadError(f"{path}: nested too deeply to be read (split the deepest expression)") from None
    try:
        return FlowAnalysis(path, _ModuleReader(tree).workflows())
    except RecursionError:
        raise FlowLoadError(f"{path}: nested too deeply to be read") from None


def syntax_where(path: str, exc: SyntaxError) -> str:
    """``path:line`` of a syntax error (just ``path`` when Python gives no line)."""
    return f"{path}:{exc.lineno}" if exc.lineno is not None else path


# -- reading the module ------------------------------------------------------------------------


def _dotted(node: ast.expr) -> str | None:
    """``a.b.c`` for a name or attribute chain, else None."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(node.id)
    return ".".join(reversed(parts))


class _Names:
    """How the module refers to tinywf's ``Workflow``, ``step`` and ``signal``."""

    def __init__(self, tree: ast.Module) -> None:
        modules = set(_TINYWF_MODULES)
        self.refs: dict[str, set[str]] = {n: {n} for n in ("Workflow", "step", "signal")}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name in _TINYWF_MODULES and alias.asname:
                        modules.add(alias.asname)
            elif isinstance(node, ast.ImportFrom) and node.module in _TINYWF_MODULES:
                for alias in node.names:
                    if alias.name in self.refs:
                        self.refs[alias.name].add(alias.asname or alias.name)
                    elif alias.name == "workflow":
                        modules.add(alias.asname or alias.name)
        for name, refs in self.refs.items():
            refs.update(f"{module}.{name}" for module in modules)

    def means(self, node: ast.expr, name: str) -> bool:
        """Whether ``node`` refers to tinywf's ``name``."""
        return _dotted(node) in self.refs[name]


@dataclass
class _Definition:
    kind: str
    node: ast.FunctionDef | ast.AsyncFunctionDef | None
    owner: str
    start: bool = False


@dataclass
class _ClassNode:
    node: ast.ClassDef
    bases: list[str] = field(default_factory=list)  # classes of the same file
    is_workflow: bool = False
    model: str | None = None
    has_model: bool = False  # names its own Workflow[...] (or plain Workflow)
    open: bool = False  # a base or decorator from elsewhere
    definitions: dict[str, _Definition] = field(default_factory=dict)
    attributes: set[str] = field(default_factory=set)  # assigned on the instance: self.x = ...


class _ModuleReader:
    """Finds the workflow classes of a module and reads each."""

    def __init__(self, tree: ast.Module) -> None:
        self.names = _Names(tree)
        self.classes: dict[str, _ClassNode] = {}
        self.order: list[_ClassNode] = []
        for node in tree.body:
            if isinstance(node, ast.ClassDef):
                info = self._read_class(node)
                self.classes[node.name] = info
                self.order.append(info)

    def _read_class(self, node: ast.ClassDef) -> _ClassNode:
        info = _ClassNode(node, open=bool(node.decorator_list))
        for base in node.bases:
            target = base.value if isinstance(base, ast.Subscript) else base
            dotted = _dotted(target)
            if self.names.means(target, "Workflow"):
                info.is_workflow = info.has_model = True
                if isinstance(base, ast.Subscript):
                    model = ast.unparse(base.slice)
                    info.model = None if model in ("dict", "Any", "typing.Any") or model.startswith("dict[") else model
            elif dotted is not None and dotted in self.classes:
                info.bases.append(dotted)
                info.is_workflow = info.is_workflow or self.classes[dotted].is_workflow
            elif dotted not in _NEUTRAL_BASES:
                info.open = True
        for statement in node.body:
            for name, definition in self._definitions(statement, node.name):
                if name in ("__getattr__", "__getattribute__", "__init_subclass__"):
                    info.open = True
                info.definitions[name] = definition
        info.attributes.update(_instance_attributes(node))
        return info

    def _definitions(self, statement: ast.stmt, owner: str) -> Iterator[tuple[str, _Definition]]:
        if isinstance(statement, ast.FunctionDef | ast.AsyncFunctionDef):
            yield statement.name, self._function_kind(statement, owner)
        elif isinstance(statement, ast.Assign):
            for target in statement.targets:
                for name in ast.walk(target):
                    if isinstance(name, ast.Name):
                        yield name.id, _Definition(_OTHER, None, owner)
        elif isinstance(statement, ast.AnnAssign | ast.AugAssign) and isinstance(statement.target, ast.Name):
            if not isinstance(statement, ast.AnnAssign) or statement.value is not None:
                yield statement.target.id, _Definition(_OTHER, None, owner)
        elif isinstance(statement, ast.ClassDef):
            yield statement.name, _Definition(_OTHER, None, owner)
        elif isinstance(statement, ast.Import | ast.ImportFrom):
            for alias in statement.names:
                yield (alias.asname or alias.name).split(".")[0], _Definition(_OTHER, None, owner)

    def _function_kind(self, node: ast.FunctionDef | ast.AsyncFunctionDef, owner: str) -> _Definition:
        kind = _METHOD
        start = False
        for decorator in node.decorator_list:
            call = decorator if isinstance(decorator, ast.Call) else None
            target = call.func if call is not None else decorator
            if self.names.means(target, "step"):
                kind = _STEP
                if call is not None:
                    start = any(k.arg == "start" and isinstance(k.value, ast.Constant) and bool(k.value.value)
                                for k in call.keywords)
            elif self.names.means(target, "signal"):
                kind = _SIGNAL if kind != _STEP else kind
            elif _dotted(target) not in _PLAIN_DECORATORS and kind == _METHOD:
                kind = _OTHER
        return _Definition(kind, node, owner, start)

    def _mro(self, name: str) -> list[_ClassNode]:
        """The class and its same-file bases in method resolution order (C3)."""
        seen: dict[str, list[str]] = {}

        def linearize(current: str, path: tuple[str, ...]) -> list[str]:
            if current in seen:
                return seen[current]
            if current in path:  # a name reused for another class; stop rather than loop
                return [current]
            bases = self.classes[current].bases
            sequences = [linearize(b, (*path, current)) for b in bases] + [list(bases)]
            result = [current]
            while any(sequences):
                sequences = [s for s in sequences if s]
                head = next((s[0] for s in sequences if not any(s[0] in t[1:] for t in sequences)), None)
                if head is None:  # inconsistent: Python itself refuses the class; keep depth-first order
                    result += [n for s in sequences for n in s if n not in result]
                    break
                result.append(head)
                sequences = [s[1:] if s[0] == head else s for s in sequences]
            seen[current] = result
            return result

        return [self.classes[n] for n in dict.fromkeys(linearize(name, ()))]

    def workflows(self) -> tuple[WorkflowInfo, ...]:
        """Every workflow class with steps, in definition order (the last of a reused name)."""
        found = []
        for info in self.order:
            if info.is_workflow and self.classes.get(info.node.name) is info:
                workflow = _WorkflowReader(info, self._mro(info.node.name)).read()
                if workflow.steps:
                    found.append(workflow)
        return tuple(found)


# -- reading one workflow class --------------------------------------------------------------------


class _WorkflowReader:
    """Reads the steps of one workflow class, inherited ones included, as the engine would see them."""

    def __init__(self, info: _ClassNode, mro: list[_ClassNode]) -> None:
        self.info = info
        self.mro = mro
        self.name = info.node.name
        self.complete = not any(c.open for c in mro)
        self.attributes = {name for c in mro for name in c.attributes}
        # the engine's rule: a later class's definition replaces an earlier one's, in place
        self.definitions: dict[str, _Definition] = {}
        steps: dict[str, _Definition] = {}
        for klass in reversed(mro):
            for name, definition in klass.definitions.items():
                self.definitions[name] = definition
                if definition.kind == _STEP:
                    steps[name] = definition
                else:
                    steps.pop(name, None)
        self.steps = steps

    def read(self) -> WorkflowInfo:
        """The workflow: its steps, start, signals, model and problems."""
        starts = [name for name, d in self.steps.items() if d.start]
        start = starts[0] if starts else next(iter(self.steps), None)
        steps = tuple(self._step(name, d, name == start) for name, d in self.steps.items())
        problems = tuple(
            Problem(t.line, f"step '{s.name}' returns '{t.target}', which is not a step of {self.name}")
            for s in steps for t in s.transitions if t.kind == "missing"
        )
        model = next((c.model for c in self.mro if c.has_model), None)
        node = self.info.node
        doc = ast.get_docstring(node)
        return WorkflowInfo(
            name=self.name, line=node.lineno, doc=doc.strip().splitlines()[0] if doc and doc.strip() else None,
            model=model, start=start, steps=steps,
            signals=tuple(n for n, d in self.definitions.items() if d.kind == _SIGNAL),
            bases=tuple(self.info.bases), complete=self.complete, problems=problems,
        )

    def _step(self, name: str, definition: _Definition, start: bool) -> StepInfo:
        node = definition.node
        assert node is not None  # steps are always functions
        return StepInfo(name=name, line=node.lineno, start=start, defined_in=definition.owner,
                        transitions=tuple(self._transitions(node)),
                        commands=tuple(self._commands(node, None, frozenset({name}))))

    # -- transitions ---------------------------------------------------------------------------

    def _transitions(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> Iterator[Transition]:
        owner = _self_name(node)
        returns = sorted((n for n in _own_nodes(node) if isinstance(n, ast.Return)),
                         key=lambda n: (n.lineno, n.col_offset))
        for statement in returns:
            if statement.value is None:
                yield Transition("end", None, "return", statement.lineno)
                continue
            for expression in _alternatives(statement.value):
                yield self._transition(expression, owner, statement.lineno)
        if not _leaves(node.body):
            yield Transition("end", None, "end of step", node.end_lineno or node.lineno)

    def _transition(self, expression: ast.expr, owner: str | None, line: int) -> Transition:
        source = ast.unparse(expression)
        if isinstance(expression, ast.Constant) and expression.value is None:
            return Transition("end", None, source, line)
        if isinstance(expression, ast.Constant) and isinstance(expression.value, str):
            name = expression.value
            if name in self.steps:
                return Transition("step", name, source, line)
            known = self.definitions.get(name)
            sure = self.complete and (known is None or known.kind != _OTHER)
            return Transition("missing" if sure else "computed", name if sure else None, source, line)
        if (isinstance(expression, ast.Attribute) and isinstance(expression.value, ast.Name)
                and expression.value.id in {owner, self.name}):
            name = expression.attr
            if name in self.steps:
                return Transition("step", name, source, line)
            known = self.definitions.get(name)
            if known is not None:
                sure = self.complete and known.kind in (_METHOD, _SIGNAL)
            else:
                sure = self.complete and name not in self.attributes and name not in WORKFLOW_API
            return Transition("missing" if sure else "computed", name if sure else None, source, line)
        return Transition("computed", None, source, line)

    # -- commands ------------------------------------------------------------------------------

    def _commands(self, node: ast.FunctionDef | ast.AsyncFunctionDef, via: str | None,
                  seen: frozenset[str]) -> Iterator[Command]:
        owner = _self_name(node)
        if owner is None:
            return
        calls = sorted((n for n in _own_nodes(node) if isinstance(n, ast.Call)),
                       key=lambda n: (n.lineno, n.col_offset))
        inside_parallel: set[int] = set()
        for call in calls:
            method = _method_called(call, owner)
            if method is None or id(call) in inside_parallel:
                continue
            if method == "parallel":
                yield self._parallel(call, owner, via, inside_parallel)
            elif method in COMMAND_KINDS:
                yield Command(method, _key_of(call), call.lineno, via)
            else:
                helper = self.definitions.get(method)
                if (helper is not None and helper.kind == _METHOD and helper.node is not None
                        and method not in seen):
                    yield from self._commands(helper.node, method, seen | {method})

    def _parallel(self, call: ast.Call, owner: str, via: str | None, inside: set[int]) -> Command:
        argument = call.args[0] if call.args else next((k.value for k in call.keywords if k.arg == "actions"), None)
        actions: list[str] = []
        values: list[ast.expr] = []
        if isinstance(argument, ast.Dict):
            values = list(argument.values)
        elif isinstance(argument, ast.DictComp):
            values = [argument.value]
        for value in values:
            if isinstance(value, ast.Call) and _method_called(value, owner) == "action":
                actions.append(_key_of(value))
                inside.add(id(value))
        if actions and len(actions) == len(values):
            key = ", ".join(actions)
        else:
            key = "?" if argument is None else ast.unparse(argument)
        return Command("parallel", key, call.lineno, via, tuple(actions))




def _instance_attributes(node: ast.ClassDef) -> Iterator[str]:
    """Names its methods assign on the instance: ``self.x = ...`` (``return self.x`` is then computed)."""
    for method in node.body:
        if not isinstance(method, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        owner = _self_name(method)
        for current in _own_nodes(method):
            targets: list[ast.expr] = []
            if isinstance(current, ast.Assign):
                targets = current.targets
            elif isinstance(current, ast.AnnAssign | ast.AugAssign):
                targets = [current.target]
            for target in targets:
                for part in ast.walk(target):
                    if (isinstance(part, ast.Attribute) and isinstance(part.value, ast.Name)
                            and part.value.id == owner):
                        yield part.attr


def _self_name(node: ast.FunctionDef | ast.AsyncFunctionDef) -> str | None:
    """The name a method calls its instance (``self``)."""
    arguments = [*node.args.posonlyargs, *node.args.args]
    return arguments[0].arg if arguments else None


def _own_nodes(node: ast.FunctionDef | ast.AsyncFunctionDef) -> Iterator[ast.AST]:
    """Every node of a function's body, not entering nested functions, lambdas or classes."""
    stack: list[ast.AST] = list(reversed(node.body))
    while stack:
        current = stack.pop()
        yield current
        if isinstance(current, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda | ast.ClassDef):
            continue
        stack.extend(reversed(list(ast.iter_child_nodes(current))))


def _method_called(call: ast.Call, owner: str) -> str | None:
    """``x`` for a call ``self.x(...)``."""
    func = call.func
    if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id == owner:
        return func.attr
    return None


def _key_of(call: ast.Call) -> str:
    """A command's key as written: text, f-string with placeholders, ``{expression}``, or ``?``."""
    key = call.args[0] if call.args else next((k.value for k in call.keywords if k.arg == "key"), None)
    if key is None:
        return "?"
    if isinstance(key, ast.Constant):
        return key.value if isinstance(key.value, str) else repr(key.value)
    if isinstance(key, ast.JoinedStr):
        return _fstring_text(key)
    return "{" + ast.unparse(key) + "}"


def _fstring_text(node: ast.JoinedStr) -> str:
    """``f"ask_{count}"`` -> ``ask_{count}``."""
    parts: list[str] = []
    for value in node.values:
        if isinstance(value, ast.Constant):
            parts.append(str(value.value))
        elif isinstance(value, ast.FormattedValue):
            text = ast.unparse(value.value)
            if value.conversion != -1:
                text += "!" + chr(value.conversion)
            if isinstance(value.format_spec, ast.JoinedStr):
                text += ":" + _fstring_text(value.format_spec)
            parts.append("{" + text + "}")
    return "".join(parts)


def _alternatives(expression: ast.expr) -> Iterator[ast.expr]:
    """The values an expression may take: both arms of ``a if c else b``, each operand of ``a or b``."""
    stack = [expression]
    while stack:
        current = stack.pop()
        if isinstance(current, ast.IfExp):
            stack += [current.orelse, current.body]
        elif isinstance(current, ast.BoolOp):
            stack += reversed(current.values)
        else:
            yield current


def _leaves(body: list[ast.stmt]) -> bool:
    """Whether running ``body`` always ends in a return or raise (or never ends): no falling off."""
    return any(_statement_leaves(statement) for statement in body)


def _statement_leaves(statement: ast.stmt) -> bool:
    if isinstance(statement, ast.Return | ast.Raise):
        return True
    if isinstance(statement, ast.If):
        return _leaves(statement.body) and _leaves(statement.orelse)
    if isinstance(statement, ast.While):
        endless = isinstance(statement.test, ast.Constant) and bool(statement.test.value)
        return not _breaks(statement.body) and (endless or _leaves(statement.orelse))
    if isinstance(statement, ast.For | ast.AsyncFor):
        return not _breaks(statement.body) and _leaves(statement.orelse)
    if isinstance(statement, ast.With | ast.AsyncWith):
        return _leaves(statement.body)
    if isinstance(statement, ast.Try | ast.TryStar):
        if _leaves(statement.finalbody):
            return True
        return ((_leaves(statement.body) or _leaves(statement.orelse))
                and all(_leaves(handler.body) for handler in statement.handlers))
    if isinstance(statement, ast.Match):
        cases = statement.cases
        catch_all = bool(cases) and cases[-1].guard is None and (
            isinstance(cases[-1].pattern, ast.MatchAs) and cases[-1].pattern.pattern is None)
        return catch_all and all(_leaves(case.body) for case in cases)
    return False


def _breaks(body: list[ast.stmt]) -> bool:
    """Whether a ``break`` in ``body`` leaves the loop whose body it is."""
    stack: list[ast.AST] = list(body)
    while stack:
        current = stack.pop()
        if isinstance(current, ast.Break):
            return True
        if isinstance(current, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda | ast.ClassDef):
            continue
        if isinstance(current, ast.For | ast.AsyncFor | ast.While):
            stack.extend(current.orelse)  # a break in an inner loop's body ends that loop only
            continue
        stack.extend(ast.iter_child_nodes(current))
    return False


# -- what a run did ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunTrace:
    """What one run did, to draw on its flow: visits per step and transitions taken."""

    run_id: str
    #: The run's workflow, as runs show it (``flows/guess_game.py:GuessGame``).
    workflow: str
    status: str
    #: The step the run is at (its last step, once ended).
    step: str | None
    #: Visits per step, from the audit log's start and transitions.
    visits: Mapping[str, int]
    #: How often each ``(from, to)`` was taken; ``(step, "[*]")`` once the run finished.
    taken: Mapping[tuple[str, str], int]

    @classmethod
    def of(cls, doc: ShowDocument) -> RunTrace:
        """The trace of a run as ``Runtime.get`` shows it."""
        visits: Counter[str] = Counter()
        taken: Counter[tuple[str, str]] = Counter()
        for entry in doc.logs:
            if entry.type == "start" and entry.step:
                visits[entry.step] += 1
                taken[(END, entry.step)] += 1
            elif entry.type == "transition":
                source, target = entry.values.get("from"), entry.values.get("to")
                if isinstance(target, str):
                    visits[target] += 1
                    if isinstance(source, str):
                        taken[(source, target)] += 1
        if doc.status == "finished" and doc.step:
            taken[(doc.step, END)] += 1
        return cls(doc.run_id, doc.workflow, doc.status, doc.step, dict(visits), dict(taken))

    @property
    def active(self) -> str | None:
        """The step the run is in, while it has not finished or been cancelled."""
        return self.step if self.status in ("running", "waiting", "failed") else None

    def mismatches(self, workflow: WorkflowInfo) -> list[str]:
        """Why this run may not be a run of ``workflow``: a different class, steps it does not have."""
        found = []
        run_class = self.workflow.rpartition(":")[2]
        if run_class and run_class != workflow.name:
            found.append(f"run '{self.run_id}' is a run of {self.workflow}, not of {workflow.name}")
        unknown = [name for name in self.visits if name not in workflow.step_names]
        if unknown:
            found.append(f"run '{self.run_id}' visited steps {workflow.name} does not define: {', '.join(unknown)}")
        return found

    def document(self) -> dict[str, Any]:
        """The trace as JSON: ``{"run_id", "workflow", "status", "step", "visits", "transitions"}``."""
        return {
            "run_id": self.run_id, "workflow": self.workflow, "status": self.status, "step": self.step,
            "visits": dict(self.visits),
            "transitions": [{"from": a, "to": b, "count": n} for (a, b), n in self.taken.items()],
        }


def visits_text(count: int) -> str:
    """``visited once`` / ``visited 3 times``."""
    return "visited once" if count == 1 else f"visited {count} times"


def _json_fields(fields: list[tuple[str, Any]]) -> dict[str, Any]:
    """Dataclass fields as JSON values: tuples become lists."""
    return {name: list(value) if isinstance(value, tuple) else value for name, value in fields}


def flow_document(workflow: WorkflowInfo, shown: str, run: RunTrace | None = None) -> dict[str, Any]:
    """What ``tinywf graph --json`` prints: the workflow as read, and the run's trace if any."""
    steps = []
    for step in workflow.steps:
        document = asdict(step, dict_factory=_json_fields)
        document["next"] = list(step.next_steps)
        steps.append(document)
    return {
        "workflow": shown, "class": workflow.name, "doc": workflow.doc, "model": workflow.model,
        "start": workflow.start, "complete": workflow.complete, "signals": list(workflow.signals),
        "steps": steps, "problems": [asdict(p) for p in workflow.problems],
        "run": run.document() if run is not None else None,
    }


# -- Mermaid ---------------------------------------------------------------------------------------------


def _mermaid_keyword(name: str) -> bool:
    lower = name.lower()
    return lower in _MERMAID_WORDS or lower.startswith(_MERMAID_PREFIXES)


class _Ids:
    """Mermaid node ids: a step's name unless Mermaid would misread it, and fresh ids for extra nodes."""

    def __init__(self, names: Iterable[str]) -> None:
        names = tuple(names)
        self.taken: set[str] = {n for n in names if not _mermaid_keyword(n)}
        self.ids: dict[str, str] = {}
        for name in names:
            self.ids[name] = name if name in self.taken else self.fresh(f"s_{name}")

    def fresh(self, wanted: str) -> str:
        """An unused id like ``wanted``."""
        candidate = wanted
        while candidate in self.taken or _mermaid_keyword(candidate):
            candidate = "s_" + candidate + "_"
        self.taken.add(candidate)
        return candidate

    def __getitem__(self, name: str) -> str:
        return self.ids[name]


def _mermaid_label(text: str) -> str:
    """Text safe after ``:`` on a Mermaid transition (no ``:``, ``;``, ``#``, ``%`` or newline)."""
    return " ".join("".join(" " if c in ":;#%\n\r" else c for c in text).split())


def _note_line(text: str) -> str:
    """A line safe inside a Mermaid note."""
    return " ".join(text.replace("\n", " ").split()).replace("end note", "end-note").replace("END NOTE", "END-NOTE")


def to_mermaid(workflow: WorkflowInfo, run: RunTrace | None = None) -> str:
    """A Mermaid ``stateDiagram-v2`` of the workflow, its steps' actions and waits in notes.

    With ``run``, the steps it visited are styled (``classDef visited``), its current step
    too, and each note says how often the step was visited.
    """
    names = workflow.step_names
    ids = _Ids(names)
    declarations: list[str] = [f'    state "{n}" as {ids[n]}' for n in names if ids[n] != n]
    edges: list[str] = []
    mentioned: set[str] = set()
    if workflow.start is not None:
        edges.append(f"    [*] --> {ids[workflow.start]}")
        mentioned.add(workflow.start)
    for step in workflow.steps:
        source = ids[step.name]
        computed = [t.source for t in step.transitions if t.kind == "computed"]
        for target in step.next_steps:
            mentioned.add(step.name)
            if target == END:
                edges.append(f"    {source} --> [*]")
            elif target == COMPUTED:
                node = ids.fresh(f"{source}__next")
                declarations.append(f'    state "?" as {node}')
                label = _mermaid_label(" or ".join(dict.fromkeys(computed)))
                edges.append(f"    {source} --> {node}" + (f": {label}" if label else ""))
            elif target in names:
                mentioned.add(target)
                edges.append(f"    {source} --> {ids[target]}")
            else:
                node = ids.fresh(f"{source}__{target}")
                declarations.append(f'    state "{target} (not a step)" as {node}')
                edges.append(f"    {source} --> {node}")
    lines = ["stateDiagram-v2", *declarations, *edges]
    lines += [f"    {ids[n]}" for n in names if n not in mentioned]
    for step in workflow.steps:
        body = [c.describe() for c in step.commands]
        if run is not None and run.visits.get(step.name):
            body.insert(0, visits_text(run.visits[step.name]))
        if body:
            lines += ["", f"    note right of {ids[step.name]}"]
            lines += [f"      {_note_line(text)}" for text in body]
            lines.append("    end note")
    if run is not None:
        lines += _mermaid_classes(workflow, run, ids)
    return "\n".join(lines) + "\n"


_RUN_STYLES = {
    "visited": ("fill:#dff0d8,stroke:#3c763d", "#dff0d8"),
    "current": ("fill:#fcf8e3,stroke:#8a6d3b,stroke-width:3px", "#fcf8e3"),
    "failed": ("fill:#f2dede,stroke:#a94442,stroke-width:3px", "#f2dede"),
}


def _run_classes(workflow: WorkflowInfo, run: RunTrace) -> dict[str, str]:
    """Style class per step the run touched: ``visited``, and ``current`` / ``failed`` for where it is."""
    classes = {name: "visited" for name in workflow.step_names if run.visits.get(name)}
    if run.active in workflow.step_names:
        classes[run.active] = "failed" if run.status == "failed" else "current"
    return classes


def _mermaid_classes(workflow: WorkflowInfo, run: RunTrace, ids: _Ids) -> list[str]:
    classes = _run_classes(workflow, run)
    lines: list[str] = []
    for style in _RUN_STYLES:
        members = [ids[name] for name, c in classes.items() if c == style]
        if members:
            lines += [f"    classDef {style} {_RUN_STYLES[style][0]}", f"    class {','.join(members)} {style}"]
    return ["", *lines] if lines else []


# -- Graphviz DOT ---------------------------------------------------------------------------------------


_TIMES = "\u00d7"  # the multiplication sign, after a count of transitions taken


def _dot_string(text: str) -> str:
    """A DOT quoted string."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def to_dot(workflow: WorkflowInfo, run: RunTrace | None = None) -> str:
    """A Graphviz ``digraph`` of the workflow; each step's label lists its actions and waits.

    With ``run``, visited steps are filled and labelled with their visit count, the run's
    current step stands out, and the transitions it took are drawn bold with their count.
    """
    start_node, end_node = "[*] start", "[*] end"
    lines = [f"digraph {_dot_string(workflow.name)} {{",
             '    node [shape=box, style="rounded", fontname="Helvetica"];',
             '    edge [fontname="Helvetica", fontsize=10];',
             f'    {_dot_string(start_node)} [shape=circle, style=filled, fillcolor=black, label="", width=0.2];']
    classes = _run_classes(workflow, run) if run is not None else {}
    for step in workflow.steps:
        label = [step.name, *(c.describe() for c in step.commands)]
        if run is not None and run.visits.get(step.name):
            label.append(visits_text(run.visits[step.name]))
        attributes = [f"label={_dot_string(chr(10).join(label))}"]
        style = classes.get(step.name)
        if style is not None:
            attributes += ['style="rounded,filled"', f'fillcolor="{_RUN_STYLES[style][1]}"']
        if style in ("current", "failed"):
            attributes.append("penwidth=3")
        lines.append(f"    {_dot_string(step.name)} [{', '.join(attributes)}];")
    if any(END in s.next_steps for s in workflow.steps):
        lines.append(f'    {_dot_string(end_node)} [shape=doublecircle, style=filled, fillcolor=black, label="", '
                     "width=0.15];")
    for source, target in workflow.edges():
        tail = start_node if source == END else source
        attributes = []
        if target == END:
            head = end_node
        elif target == COMPUTED:
            head = f"{source} ?"
            computed = [t.source for t in workflow.step(source).transitions if t.kind == "computed"]
            lines.append(f'    {_dot_string(head)} [label="?", shape=diamond, style=dashed];')
            attributes.append(f"label={_dot_string(' or '.join(dict.fromkeys(computed)))}")
        elif target in workflow.step_names:
            head = target
        else:
            head = f"{source} -> {target}"
            lines.append(f"    {_dot_string(head)} [label={_dot_string(target + chr(10) + '(not a step)')}, "
                         'color=red, fontcolor=red, style="rounded,dashed"];')
            attributes.append("color=red")
        count = run.taken.get((source, target), 0) if run is not None else 0
        if count:
            attributes += ['color="#3c763d"', "penwidth=2", f"label={_dot_string(str(count) + _TIMES)}"]
        suffix = f" [{', '.join(attributes)}]" if attributes else ""
        lines.append(f"    {_dot_string(tail)} -> {_dot_string(head)}{suffix};")
    lines.append("}")
    return "\n".join(lines) + "\n"
