"""The package's layout (``python -m tools.layout``): no import runs from a lower room to a
higher one, and no import circle exists — today, and the check sees both when they appear."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from clihelpers import REPO

from tools import layout  # the repository's own tools: on the import path (pyproject's pythonpath)


def test_the_package_keeps_its_layout() -> None:
    problems = layout.problems_of(layout.load())
    assert problems == [], "\n".join(problems)


def test_every_room_is_on_a_floor() -> None:
    rooms = {m.room for m in layout.load().values()}
    for room in rooms:
        layout.floor_of(room)  # raises SystemExit naming a room on no floor


def tiny_package(tmp_path: Path, files: dict[str, str]) -> Path:
    """A package ``pkg`` with rooms as folders, from ``{"stores/x.py": "source"}``."""
    root = tmp_path / "pkg"
    for name, source in {"__init__.py": "", **files}.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source)
        init = path.parent / "__init__.py"
        if not init.exists():
            init.write_text("")
    return root


def test_an_import_from_a_lower_room_to_a_higher_one_is_found(tmp_path: Path) -> None:
    root = tiny_package(tmp_path, {
        "engine/engine.py": "X = 1\n",
        "stores/base.py": "def f():\n    from pkg.engine.engine import X\n    return X\n",
    })
    problems = layout.problems_of(layout.load(root))
    assert problems == ["pkg/stores/base.py:2: stores imports pkg.engine.engine (engine), a higher room"]


def test_rooms_of_one_floor_kept_apart_are_found(tmp_path: Path) -> None:
    root = tiny_package(tmp_path, {"runtime/a.py": "from pkg.reading import b\n", "reading/b.py": ""})
    assert layout.problems_of(layout.load(root)) == [
        "pkg/runtime/a.py:1: runtime imports pkg.reading.b (reading), a room it must keep apart from"]


def test_an_import_circle_is_found(tmp_path: Path) -> None:
    root = tiny_package(tmp_path, {"stores/a.py": "from pkg.stores import b\n",
                                   "stores/b.py": "from pkg.stores.a import thing\n"})
    assert layout.problems_of(layout.load(root)) == ["import circle: pkg.stores.a -> pkg.stores.b"]


@pytest.mark.parametrize("argv", [["--quiet"], []])
def test_the_command_exits_0_on_the_package(argv: list[str]) -> None:
    done = subprocess.run([sys.executable, "-m", "tools.layout", *argv], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    if not argv:
        assert "floor 0 ground" in done.stdout and "largest class:" in done.stdout
