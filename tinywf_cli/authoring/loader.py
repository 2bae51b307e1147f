"""Flow files to workflow classes, with errors that say what to fix.

A flow file is compiled from its source on every load (never a stale bytecode cache),
registered in ``sys.modules`` before it runs (so pydantic resolves its annotations), and
its folder is put on the import path so it can import modules beside it.

Loading is safe across threads (``tick --concurrency N`` advances runs in N threads): one
lock, for the whole process, guards compiling and executing a flow file, ``sys.modules``
and ``sys.path``, and every loader's caches, so that two threads never load one file twice
nor see a class half made.
"""

from __future__ import annotations

import hashlib
import importlib
import sys
import threading
import types
from pathlib import Path
from typing import Any

from tinywf_cli.analysis.flow import WorkflowInfo
from tinywf_cli.analysis.source import analyze_source, syntax_where
from tinywf_cli.authoring.workflow import Workflow
from tinywf_cli.errors import FlowDefinitionError, FlowLoadError
from tinywf_cli.interrupts import is_interrupt
from tinywf_cli.model import FlowRef

WorkflowClass = type[Workflow[Any]]

#: Held while a flow is loaded or looked up: ``sys.modules`` and ``sys.path`` are the whole
#: process's, and a flow file's code runs once per change. Reentrant: a flow file may import
#: a module beside it, or name a child flow, while it loads.
_LOADING = threading.RLock()


def split_flow_spec(spec: str) -> tuple[str, str | None]:
    """``"flows/a.py:Cls"`` -> ``("flows/a.py", "Cls")``; a bare path names no class."""
    head, sep, tail = spec.rpartition(":")
    if sep and head and tail.isidentifier() and not tail.startswith("\\"):
        return head, tail
    return spec, None


def module_name_for(path: Path) -> str:
    """A stable, unique module name for a flow file."""
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:10]
    stem = "".join(c if c.isalnum() else "_" for c in path.stem)
    return f"tinywf_flow_{stem}_{digest}"


def flow_path(spec: str) -> tuple[Path, str | None]:
    """``path.py[:Class]`` -> (absolute path, class name or None); ``flows/simple`` finds ``flows/simple.py``."""
    raw_path, name = split_flow_spec(spec)
    if not raw_path.endswith(".py") and not Path(raw_path).is_file() and Path(raw_path + ".py").is_file():
        raw_path += ".py"
    return Path(raw_path).expanduser().resolve(), name


def read_source(path: Path) -> bytes:
    """A flow file's source; FlowLoadError saying why it cannot be read."""
    shown = display_path(path)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise FlowLoadError(f"flow file '{shown}' not found") from None
    except IsADirectoryError:
        raise FlowLoadError(f"'{shown}' is a directory, not a flow file") from None
    except OSError as exc:
        raise FlowLoadError(f"cannot read flow file '{shown}': {exc.strerror}") from None


def read_flow(spec: str) -> tuple[WorkflowInfo, str]:
    """The workflow ``path.py[:Class]`` read from its source, never run; and its name to show."""
    path, name = flow_path(spec)
    shown = display_path(path)
    workflow = analyze_source(read_source(path), shown).workflow(name)
    return workflow, f"{shown}:{workflow.name}"


def check_transitions(source: bytes, shown: str) -> None:
    """Refuse a flow whose step returns a name that is not a step (``return "chek"``)."""
    problems = analyze_source(source, shown).problems()
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise FlowDefinitionError(f"{shown}:{problems[0].line}: {problems[0].message}{more}")


def load_module(path: Path) -> types.ModuleType:
    """Execute a flow file as a fresh module (replacing any earlier load of it).

    Before it runs, its source is read for transitions to names that are not steps.
    """
    shown = display_path(path)
    source = read_source(path)
    try:
        code = compile(source, str(path), "exec", dont_inherit=True)
    except SyntaxError as exc:
        raise FlowLoadError(f"{syntax_where(shown, exc)}: syntax error: {exc.msg}") from None
    except ValueError as exc:  # e.g. NUL bytes
        raise FlowLoadError(f"cannot load flow file '{shown}': {exc}") from None
    except (RecursionError, MemoryError):
        raise FlowLoadError(f"{shown}: nested too deeply to be read (split the deepest expression)") from None
    check_transitions(source, shown)
    folder = str(path.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    name = module_name_for(path)
    module = types.ModuleType(name)
    module.__file__ = str(path)
    module.__tinywf_code__ = code_id(source)  # type: ignore[attr-defined]
    sys.modules[name] = module
    try:
        exec(code, module.__dict__)
    except FlowDefinitionError as exc:
        sys.modules.pop(name, None)
        raise FlowDefinitionError(f"{shown}: {exc.message}") from None
    except Exception as exc:
        sys.modules.pop(name, None)
        raise FlowLoadError(f"cannot load flow file '{shown}': {type(exc).__name__}: {exc}") from exc
    except SystemExit as exc:
        sys.modules.pop(name, None)
        raise FlowLoadError(f"cannot load flow file '{shown}': it called exit({exc.code})") from None
    except BaseException as exc:
        sys.modules.pop(name, None)
        if is_interrupt(exc):
            raise
        raise FlowLoadError(f"cannot load flow file '{shown}': {type(exc).__name__}: {exc}") from None
    return module


def code_id(source: bytes) -> str:
    """A short id of a flow file's source: runs name the code they ran with in their history."""
    return hashlib.sha256(source).hexdigest()[:12]


def code_of(cls: type) -> str | None:
    """The id of the flow file source a workflow class was loaded from (None for classes of
    ordinary modules)."""
    module = sys.modules.get(cls.__module__)
    code = getattr(module, "__tinywf_code__", None)
    return code if isinstance(code, str) else None


def _stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        info = path.stat()
    except OSError:
        return None
    return info.st_mtime_ns, info.st_size, info.st_ino


def workflows_in(module: types.ModuleType) -> list[WorkflowClass]:
    """The workflow classes (with steps) a module defines itself, in definition order."""
    found = []
    for value in vars(module).values():
        if (isinstance(value, type) and issubclass(value, Workflow) and value is not Workflow
                and value.__module__ == module.__name__ and value.__tinywf_steps__):
            found.append(value)
    return found


def pick_workflow(module: types.ModuleType, shown: str, name: str | None) -> WorkflowClass:
    """The class ``name`` of a flow module, or its only workflow."""
    classes = workflows_in(module)
    if name is not None:
        value = getattr(module, name, None)
        if isinstance(value, type) and issubclass(value, Workflow) and value.__tinywf_steps__:
            return value
        known = ", ".join(c.__name__ for c in classes) or "none"
        raise FlowLoadError(f"{shown} has no workflow class '{name}' (workflows: {known})")
    if not classes:
        raise FlowLoadError(f"{shown} defines no workflow (a Workflow subclass with @step methods)")
    if len(classes) > 1:
        names = ", ".join(c.__name__ for c in classes)
        raise FlowLoadError(
            f"{shown} defines {len(classes)} workflows ({names}): name one, e.g. {shown}:{classes[0].__name__}")
    return classes[0]


def import_root(file: Path, module: str) -> Path | None:
    """The folder a module was imported from: ``/app/flows`` for ``sub.kid`` at
    ``/app/flows/sub/kid.py``; None when the file does not sit where its name says."""
    where = file.parent if file.stem == "__init__" else file.with_suffix("")
    for part in reversed(module.split(".")):
        if where.name != part:
            return None
        where = where.parent
    return where


def display_path(path: Path) -> str:
    """A path as people should see it: relative to the working directory when inside it."""
    try:
        relative = path.resolve().relative_to(Path.cwd())
    except ValueError:
        return str(path)
    return str(relative)


class FlowLoader:
    """Loads flow files and workflow references; a flow file is loaded again when it changed
    (a long-running worker picks up a deploy)."""

    def __init__(self) -> None:
        self._modules: dict[Path, tuple[tuple[int, int, int] | None, types.ModuleType]] = {}
        self._classes: dict[tuple[str | None, str | None, str], WorkflowClass] = {}
        self._registered: dict[WorkflowClass, tuple[FlowRef, str]] = {}

    def load(self, spec: str) -> tuple[WorkflowClass, FlowRef, str]:
        """``path.py[:Class]`` -> (class, reference to store, name to show)."""
        path, name = flow_path(spec)
        with _LOADING:
            module = self.module(path)
        cls = pick_workflow(module, display_path(path), name)
        return cls, FlowRef(file=str(path), cls=cls.__name__), f"{display_path(path)}:{cls.__name__}"

    def module(self, path: Path) -> types.ModuleType:
        """The flow module of ``path``: loaded once, and again when the file changed."""
        with _LOADING:
            stamp = _stamp(path)
            known = self._modules.get(path)
            if known is not None and (known[0] == stamp or stamp is None):
                return known[1]
            module = load_module(path)
            self._modules[path] = (stamp, module)
            return module

    def register(self, cls: WorkflowClass) -> tuple[FlowRef, str]:
        """Remember a class given directly; returns its reference and display name.

        A class of a flow file is referred to by its file; a class of an importable module by
        the module and its file, so that a later process can import it from the same folder
        (``from kid import Kid`` beside a flow), and a child named by a relative path is
        looked for beside it.
        """
        with _LOADING:
            return self._register(cls)

    def _register(self, cls: WorkflowClass) -> tuple[FlowRef, str]:
        known = self._registered.get(cls)
        if known is not None:
            return known
        name = cls.__module__
        file = getattr(sys.modules.get(name), "__file__", None)
        if name.startswith("tinywf_flow_") and file:
            ref = FlowRef(file=file, cls=cls.__qualname__)
            shown = f"{display_path(Path(file))}:{cls.__qualname__}"
        else:
            where = str(Path(file).resolve()) if isinstance(file, str) else None
            ref = FlowRef(file=where, module=name, cls=cls.__qualname__)
            shown = f"{name}:{cls.__qualname__}"
        self._classes[(ref.file, ref.module, ref.cls)] = cls
        self._registered[cls] = ref, shown
        return ref, shown

    def resolve(self, ref: FlowRef, run_id: str) -> WorkflowClass:
        """The class a stored run refers to (from its flow file as it is now)."""
        with _LOADING:
            return self._resolve(ref, run_id)

    def _resolve(self, ref: FlowRef, run_id: str) -> WorkflowClass:
        known = self._classes.get((ref.file, ref.module, ref.cls))
        if known is not None and (ref.file is None or self._fresh(Path(ref.file), known)):
            return known
        target: Any
        if ref.module is not None:
            target = self._import(ref, run_id)
        elif ref.file is not None:
            path = Path(ref.file)
            if not path.exists():
                raise FlowLoadError(f"run '{run_id}': its flow file {ref.file} no longer exists")
            target = self.module(path)
        else:
            raise FlowLoadError(f"run '{run_id}': its record names no flow file or module for {ref.cls}")
        for part in ref.cls.split("."):
            target = getattr(target, part, None)
        if not (isinstance(target, type) and issubclass(target, Workflow)):
            if ref.module == "__main__":  # a script's class: no other process can import it
                raise FlowLoadError(f"run '{run_id}': workflow class {ref.cls} was defined in a script run as "
                                    f"__main__{f' ({ref.file})' if ref.file else ''}, which no other process "
                                    "can import: put the flow in a file of its own")
            raise FlowLoadError(f"run '{run_id}': workflow class {ref.cls} not found in "
                                f"{ref.file or ref.module}")
        self._classes[(ref.file, ref.module, ref.cls)] = target
        return target

    def _import(self, ref: FlowRef, run_id: str) -> types.ModuleType:
        """The module of a reference, imported from the folder it was imported from when it was
        recorded (put back on the import path, as the flow that imported it had it)."""
        name = ref.module or ""
        file = Path(ref.file) if ref.file is not None else None
        root = import_root(file, name) if file is not None else None
        if root is not None and str(root) not in sys.path:
            sys.path.append(str(root))  # last: it is there to find this module, not to shadow others
        try:
            module = importlib.import_module(name)
        except Exception as exc:
            where = f" (from {display_path(file)})" if file is not None else ""
            raise FlowLoadError(f"run '{run_id}': cannot import module {name!r}{where}: {exc}") from None
        found = getattr(module, "__file__", None)
        if (file is not None and name != "__main__" and isinstance(found, str) and Path(found).resolve() != file
                and file.exists()):
            # the name is another file's in this process (two flow folders, each with its own
            # `kid.py`): the run's own file is the one it names
            return self.module(file)
        return module

    def _fresh(self, path: Path, cls: WorkflowClass) -> bool:
        """Whether a class known for ``path`` still comes from the file as it is now."""
        known = self._modules.get(path)
        if known is None:
            return True  # registered directly, from a module tinywf did not load
        return known[1].__name__ == cls.__module__ and known[0] == _stamp(path)
