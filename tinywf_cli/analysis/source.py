"""A flow file read from its source, never run: its workflows, steps, transitions and keys.

``tinywf graph`` draws what this finds (``tinywf_cli.analysis.graph``), and the loader
refuses a flow whose step returns a name that is not a step. Everything here is pure:
source text in, frozen dataclasses out.

What a step can return is read from its ``return`` statements: ``return self.ship``,
``return "ship"``, ``return None`` (or a bare ``return``, or the end of the method) and
conditional expressions of these. Anything else (``return self.pick()``, a variable) is
*computed*: drawn as ``?``, never guessed.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass, field

from tinywf_cli.analysis.flow import (
    COMMAND_KINDS,
    Command,
    FlowAnalysis,
    Problem,
    StepInfo,
    Transition,
    WorkflowInfo,
)
from tinywf_cli.errors import FlowLoadError
from tinywf_cli.names import WORKFLOW_API

# How a name is defined in a class body: a step, a signal, a plain method (returning it as
# the next step fails for sure), or something else (an attribute, a property: unknown).
_STEP, _SIGNAL, _METHOD, _OTHER = "step", "signal", "method", "other"
_PLAIN_DECORATORS = frozenset({"staticmethod", "classmethod"})
# Bases that add nothing a flow's steps depend on.
_NEUTRAL_BASES = frozenset({"object", "Generic", "typing.Generic", "ABC", "abc.ABC"})
_TINYWF_MODULES = ("tinywf_cli", "tinywf_cli.authoring.workflow")


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
