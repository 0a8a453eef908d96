"""A child ends when its orchestrator is gone, and a zombie (killed, not yet reaped) or another process
with the same pid does not pass for the orchestrator (core/lifeline.py)."""
import os
import signal
import subprocess
import sys
import time

import pytest

from autofix.core import lifeline

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs /proc (Linux)")


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


def _zombie():
    """A process killed and left unreaped: its pid still answers os.kill(pid, 0)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    ident = lifeline.identity(proc.pid)
    assert lifeline.alive(ident)
    os.kill(proc.pid, signal.SIGKILL)
    deadline = time.time() + 10
    while _state(proc.pid) != "Z" and time.time() < deadline:
        time.sleep(0.05)
    assert _state(proc.pid) == "Z"
    return proc, ident


def test_a_zombie_and_a_reused_pid_are_not_alive():
    proc, ident = _zombie()
    try:
        os.kill(proc.pid, 0)   # the old test: no error, so a zombie passed for a live orchestrator
        assert not lifeline.alive(ident)
    finally:
        proc.wait()
    assert not lifeline.alive(ident)   # reaped: gone
    pid, _, start = lifeline.identity().partition("@")
    assert lifeline.alive(f"{pid}@{start}") and not lifeline.alive(f"{pid}@{int(start) + 1}")


def test_a_child_ends_when_its_orchestrator_is_killed_and_left_unreaped():
    orchestrator, ident = _zombie()
    code = "from autofix.remediate.child import _watch_parent; import time; _watch_parent(); time.sleep(60)"
    child = subprocess.Popen([sys.executable, "-c", code], env={**os.environ, "AUTOFIX_WATCH_PARENT": ident})
    try:
        assert child.wait(timeout=60) == 3   # the watcher's exit, not the 60 s sleep running out
    finally:
        child.kill()
        orchestrator.wait()


def test_end_kills_the_process_it_names_and_no_other():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        pid, _, start = lifeline.identity(proc.pid).partition("@")
        assert not lifeline.end(f"{pid}@{int(start) + 1}")   # same pid, another start: someone else's
        assert proc.poll() is None
        assert lifeline.end(f"{pid}@{start}")
        assert proc.wait(timeout=10) == -signal.SIGKILL
    finally:
        proc.kill()
        proc.wait()
