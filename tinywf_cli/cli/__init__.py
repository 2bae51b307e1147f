"""The ``tinywf`` command (``tinywf_cli.cli:main`` is its entry point)."""

from tinywf_cli.cli.main import app, main

__all__ = ["app", "main"]
