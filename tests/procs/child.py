"""Run one tinywf command in a fresh interpreter: ``python tests/procs/child.py COMMAND ARGS...``.

The state directory is ``$TINYWF_STATE_DIR``; ``$TINYWF_TEST_KILL_AT`` (``boundary:N``) makes the
process SIGKILL itself at a write boundary (see ``proc_harness``).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from proc_harness import child_main

if __name__ == "__main__":
    sys.exit(child_main(sys.argv[1:]))
