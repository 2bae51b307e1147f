"""A newcomer's path, for real: a fresh virtual environment, the README's first command, then the
commands of docs/getting-started.md in order, each printing what the page shows.

The virtual environment is made with ``python -m venv`` (no ``--system-site-packages``: the test
venv's packages would hide a dependency missing from pyproject.toml, which is what this test is
for) in a copy of the repository's files as a clone has them; ``pip install -e .`` then really
installs tinywf and its runtime dependencies with the machine's pip configuration and cache, as
a newcomer's would. That is the slow part: about 25 s of the test's 45 s or so on 2 CPUs (the
page's commands take the rest). It is marked ``slow`` and runs in CI with the rest of the suite.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from clihelpers import REPO
from docexamples import page_env, run_page

pytestmark = pytest.mark.slow

#: A fresh install may take this long (a cold cache, a slow mirror) before the test gives up.
INSTALL_TIMEOUT = 600


def clone(repo: Path, target: Path) -> None:
    """The files of ``repo`` a clone would have: those git tracks, and new ones it does not ignore
    (so that the test sees the working tree, uncommitted changes included)."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=repo,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = repo / name
        if source.is_file():  # a tracked file deleted in the working tree is not there
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)


def first_command(readme: str) -> str:
    """The README's first one-line command: ``pip install -e . && tinywf run flows/...``."""
    found = re.search(r"^(pip install -e \. && tinywf run \S+)", readme, re.MULTILINE)
    assert found is not None, "the README starts with `pip install -e . && tinywf run flows/...`"
    return found.group(1)


def test_a_fresh_venv_the_readmes_first_command_then_getting_started(tmp_path: Path) -> None:
    if shutil.which("git") is None:
        pytest.skip("needs git, to copy the repository's files as a clone has them")
    workspace, venv = tmp_path / "tinywf", tmp_path / "venv"
    clone(REPO, workspace)
    base = getattr(sys, "_base_executable", sys.executable)  # the interpreter under the test's venv
    subprocess.run([base, "-m", "venv", str(venv)], check=True, timeout=120)
    bin_dir = venv / "bin"
    assert not (bin_dir / "tinywf").exists()

    command = first_command((REPO / "README.md").read_text(encoding="utf-8"))
    env = page_env("2026-11-22T09:14:02Z", bin_dir)
    env.pop("PYTHONPATH", None)
    done = subprocess.run(["bash", "-c", command], cwd=workspace, env=env, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=INSTALL_TIMEOUT, check=False)
    assert done.returncode == 0, f"`{command}` exited {done.returncode}\n{done.stdout}\n{done.stderr}"
    assert (bin_dir / "tinywf").is_file()
    assert "tinywf resolve" in done.stdout and "Traceback" not in done.stderr, done.stdout + done.stderr
    # the runtime dependencies only: none of the extras came along
    extras = subprocess.run([str(bin_dir / "python"), "-c", "import importlib.util as u; "
                             "print([m for m in ('fastapi', 'psycopg', 'pytest', 'mkdocs') if u.find_spec(m)])"],
                            capture_output=True, text=True, env=env, check=True)
    assert extras.stdout.strip() == "[]"
    # and the tinywf it runs is the clone's, not the test's
    where = subprocess.run([str(bin_dir / "python"), "-c", "import tinywf_cli; print(tinywf_cli.__file__)"],
                           cwd=tmp_path, capture_output=True, text=True, env=env, check=True).stdout.strip()
    assert Path(where).is_relative_to(workspace), where

    report = run_page(REPO / "docs" / "getting-started.md", REPO, workspace, bin_dir=bin_dir)
    print(report.summary())
    assert report.failures == [], report.summary()
    assert report.count("compared") >= 4 and report.count("skipped") == 0, report.summary()
