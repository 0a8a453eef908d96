"""Which process is which, in a way a zombie or a reused pid cannot fake: a pid with its start time.

A child asks whether its orchestrator still lives; a resumed orchestrator ends the children a killed one
left behind. `os.kill(pid, 0)` answers yes for a process that was killed but not yet reaped (a zombie)
and for any later process that got the same pid; /proc/<pid>/stat says both: state Z, another start time."""
from __future__ import annotations

import os
import signal
import threading
import time


def _stat(pid: int) -> tuple[str, str] | None:
    """(state, start time in clock ticks since boot) from /proc, or None when no such process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()   # the name (in parentheses) may hold spaces
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None
    return fields[0], fields[19]


def identity(pid: int | None = None) -> str:
    """"pid@starttime" of `pid` (default: this process); "pid" alone where there is no /proc."""
    pid = os.getpid() if pid is None else pid
    if not os.path.isdir("/proc/self"):
        return str(pid)
    st = _stat(pid)
    return f"{pid}@{st[1] if st else '-'}"   # "-": already gone, so nothing later with its pid matches


def alive(ident: str) -> bool:
    """The process `ident` names runs (or sleeps): not gone, not a zombie, not another holder of its pid."""
    pid, _, start = ident.partition("@")
    if not start:   # no /proc where it was taken: the weaker test is all there is
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
        return True
    st = _stat(int(pid))
    return st is not None and st[0] not in ("Z", "X", "x") and st[1] == start


def watch(ident: str, on_gone, every: float = 1.0) -> None:
    """Call `on_gone()` from a daemon thread once the process `ident` is no longer alive."""
    def loop():
        while alive(ident):
            time.sleep(every)
        on_gone()

    threading.Thread(target=loop, daemon=True, name="lifeline").start()


def end(ident: str, wait_s: float = 10.0) -> bool:
    """Kill the process `ident` if it is still the one named, and wait until it is gone; True if it was alive."""
    if not ident or not alive(ident):
        return False
    try:
        os.kill(int(ident.partition("@")[0]), signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        return False
    deadline = time.monotonic() + wait_s
    while alive(ident) and time.monotonic() < deadline:
        time.sleep(0.05)
    return True
