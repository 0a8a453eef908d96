"""Named points where a test kills the orchestrator (AUTOFIX_CRASH_AT=<point>), to show that a kill -9
at any of them loses nothing and counts nothing twice. Unset, they do nothing."""
from __future__ import annotations

import os
import signal

# each point sits inside a window between two state changes that a kill could split
POINTS = ("plan", "requeue", "result", "promote", "verdicts")


def crash_point(name: str) -> None:
    if os.environ.get("AUTOFIX_CRASH_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)
