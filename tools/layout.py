"""The package's rooms and the imports between them: ``python -m tools.layout``.

Every module of ``tinywf_cli`` belongs to one room: a sub-package (``engine``, ``stores``, …)
or, for the few modules every room shares, the ground floor. Rooms stand on floors; a room
may import from its own floor's rooms only where the floor says so, and from any lower
floor, never from a higher one. The check reads every ``import`` statement of every module
(at the top, inside functions, and under ``TYPE_CHECKING``: each is a dependency, whenever
it is paid for) and fails, naming the file and line, on

- an import from a lower room to a higher one (``stores`` importing ``engine``, say);
- an import circle between modules (found over the imports made at the top of a module,
  which are the ones that run when it is imported; a package's ``__init__`` handing on a
  name of its own module is no circle).

It prints each room with its lines and what it imports. Example::

    python -m tools.layout            # the rooms, their imports, and any problem (exit 1)
    python -m tools.layout --quiet    # only the problems
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

PACKAGE = "tinywf_cli"
ROOT = Path(__file__).resolve().parent.parent / PACKAGE

#: The floors, from the ground up. A room imports only from rooms on its own floor or lower;
#: ``ground`` is the modules directly in the package (errors, clock, JSON, models, names,
#: interrupts), which every room may use. ``cli`` stands above ``web`` (``tinywf serve``
#: starts the server), and the package's faces above everything.
FLOORS: list[tuple[str, ...]] = [
    ("ground",),
    ("analysis", "stores", "schedules"),
    ("authoring",),
    ("engine",),
    ("runtime", "reading"),
    ("web",),
    ("cli",),
    ("face",),
]
#: Rooms of one floor that must not import each other (the rest of a floor may).
APART: set[frozenset[str]] = {
    frozenset({"analysis", "stores"}),
    frozenset({"schedules", "stores"}),
    frozenset({"analysis", "schedules"}),
    frozenset({"runtime", "reading"}),
}
#: The package's public faces: ``tinywf_cli/__init__.py`` (lazy re-exports of every room),
#: ``__main__`` and ``testing``, which sit above everything.
FACES = {"__init__", "__main__", "testing"}


def floor_of(room: str) -> int:
    """The floor a room stands on."""
    for number, rooms in enumerate(FLOORS):
        if room in rooms:
            return number
    raise SystemExit(f"tools.layout: room {room!r} is on no floor; add it to FLOORS")


@dataclass
class Module:
    """One module of the package: its dotted name, room, lines and imports."""

    name: str
    path: Path
    room: str
    lines: int
    #: The longest class it defines: (lines, name), or (0, "") when it defines none.
    biggest: tuple[int, str] = (0, "")
    #: (imported module, line, at the top of the module)
    imports: list[tuple[str, int, bool]] = field(default_factory=list)


def largest_class(tree: ast.Module) -> tuple[int, str]:
    """The longest class a module defines, at any depth: (lines, name)."""
    sizes = [((node.end_lineno or node.lineno) - node.lineno + 1, node.name)
             for node in ast.walk(tree) if isinstance(node, ast.ClassDef)]
    return max(sizes, default=(0, ""))


def room_of(name: str, root: Path) -> str:
    """``tinywf_cli.stores.files.record`` → ``stores``; top-level modules → ``ground`` or ``face``."""
    parts = name.split(".")
    if len(parts) == 1:
        return "face"
    if (root / parts[1]).is_dir():
        return parts[1]
    return "face" if parts[1] in FACES else "ground"


def module_name(path: Path, root: Path) -> str:
    """The dotted name of a file of the package."""
    relative = path.relative_to(root.parent).with_suffix("")
    parts = list(relative.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def resolve(name: str, known: set[str]) -> str | None:
    """The package module an imported name lives in (``a.b.c`` may be a module or a name in ``a.b``)."""
    while name:
        if name in known:
            return name
        name = name.rpartition(".")[0]
    return None


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def read_imports(module: Module, known: set[str]) -> None:
    """Fill ``module.imports`` from its source."""
    tree = ast.parse(module.path.read_text(encoding="utf-8"), str(module.path))
    package = module.name if module.path.name == "__init__.py" else module.name.rpartition(".")[0]

    def visit(node: ast.AST, top: bool) -> None:
        for child in ast.iter_child_nodes(node):
            # imports inside functions and under TYPE_CHECKING are dependencies too, but
            # not ones that run when the module is imported
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) or (
                    isinstance(child, ast.If) and _type_checking(child)):
                visit(child, False)
            elif isinstance(child, ast.Import):
                for alias in child.names:
                    add(alias.name, child.lineno, top)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = package.split(".")[: len(package.split(".")) - child.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                for alias in child.names:
                    add(f"{base}.{alias.name}", child.lineno, top)
            else:
                visit(child, top)

    def add(name: str, line: int, top: bool) -> None:
        package_name = module.name.split(".")[0]
        if name != package_name and not name.startswith(package_name + "."):
            return
        target = resolve(name, known)
        if target is not None and target != module.name:
            module.imports.append((target, line, top))

    visit(tree, True)


def load(root: Path = ROOT) -> dict[str, Module]:
    """Every module of the package at ``root``, with its imports."""
    modules: dict[str, Module] = {}
    for path in sorted(root.rglob("*.py")):
        name = module_name(path, root)
        source = path.read_text(encoding="utf-8")
        modules[name] = Module(name, path, room_of(name, root), len(source.splitlines()),
                               largest_class(ast.parse(source, str(path))))
    known = set(modules)
    for module in modules.values():
        read_imports(module, known)
    return modules


def upward(modules: dict[str, Module]) -> list[str]:
    """Each import from a lower room to a higher one (or between rooms kept apart)."""
    problems = []
    # the package itself may be imported from anywhere (``__version__``) while it imports
    # nothing of its own at the top: its names are re-exported lazily, on first use
    package = min(modules, key=len)
    root_is_lazy = not any(top for _, _, top in modules[package].imports)
    for module in modules.values():
        for target, line, _ in module.imports:
            here, there = module.room, modules[target].room
            if here == there or here == "face" or (target == package and root_is_lazy):
                continue
            if floor_of(there) > floor_of(here) or frozenset({here, there}) in APART:
                where = module.path.relative_to(module.path.parents[len(module.name.split(".")) - 1])
                what = "a room it must keep apart from" if floor_of(there) == floor_of(here) else "a higher room"
                problems.append(f"{where}:{line}: {here} imports {target} ({there}), {what}")
    return problems


def circles(modules: dict[str, Module]) -> list[list[str]]:
    """The import circles among modules, over the imports made at the top (Tarjan's algorithm)."""
    graph = {name: sorted({t for t, _, top in m.imports if top}) for name, m in modules.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def strong(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                strong(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for node in graph:
        if node not in index:
            strong(node)
    return found


def report(modules: dict[str, Module]) -> str:
    """The rooms from the top floor down: lines, modules, and the rooms each imports."""
    rooms: dict[str, list[Module]] = defaultdict(list)
    for module in modules.values():
        rooms[module.room].append(module)
    out = []
    for number in range(len(FLOORS) - 1, -1, -1):
        for room in FLOORS[number]:
            members = rooms.get(room, [])
            if not members:
                continue
            total = sum(m.lines for m in members)
            uses = sorted({modules[t].room for m in members for t, _, _ in m.imports} - {room})
            out.append(f"floor {number} {room:<10} {total:>6} lines  imports: {', '.join(uses) or '-'}")
            for m in sorted(members, key=lambda m: m.name):
                biggest = f"  (class {m.biggest[1]}: {m.biggest[0]})" if m.biggest[0] >= 100 else ""
                out.append(f"    {m.name:<44} {m.lines:>5}{biggest}")
    module = max(modules.values(), key=lambda m: m.lines)
    owner = max(modules.values(), key=lambda m: m.biggest)
    out.append(f"largest module: {module.name} ({module.lines} lines); largest class: "
               f"{owner.biggest[1]} in {owner.name} ({owner.biggest[0]} lines)")
    return "\n".join(out)


def problems_of(modules: dict[str, Module]) -> list[str]:
    """Every import that runs up a floor, and every import circle."""
    found = upward(modules)
    for circle in circles(modules):
        found.append("import circle: " + " -> ".join(circle))
    return found


def main(argv: list[str] | None = None) -> int:
    """Print the layout; exit 1 when an import runs up a floor or a circle exists."""
    parser = argparse.ArgumentParser(prog="python -m tools.layout", description=__doc__.splitlines()[0])
    parser.add_argument("--quiet", action="store_true", help="print only the problems")
    parser.add_argument("--root", type=Path, default=ROOT, help="the package folder (default: tinywf_cli/)")
    args = parser.parse_args(argv)
    modules = load(args.root.resolve())
    if not args.quiet:
        print(report(modules))
    problems = problems_of(modules)
    for problem in problems:
        print(f"layout: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
