"""The local processes `tiered dev` and the demo start, found and checked with psutil.

Both keep their processes' state directory in the command line, so "ours" means: alive (a zombie is not) and
naming that directory.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path

import psutil


def cmdline(pid: int) -> str:
    """The process's command line joined by spaces, or "" when it is gone or unreadable."""
    try:
        return " ".join(psutil.Process(pid).cmdline())
    except psutil.Error:
        return ""


def alive(pid: int) -> bool:
    """True for a running process; a zombie child of ours is reaped and counts as gone."""
    try:
        proc = psutil.Process(pid)
        if proc.status() != psutil.STATUS_ZOMBIE:
            return True
    except psutil.Error:
        return False
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)
    return False


def names(marker: Path, command_line: str) -> bool:
    """`marker` (a directory) occurs in `command_line` as a whole path: `/x/.dev` names `/x/.dev/etcd` and
    `/x/.dev`, not `/x/.dev-demo/etcd`."""
    return re.search(re.escape(str(marker)) + r"(?=/|\s|$)", command_line) is not None


def is_ours(pid: int, marker: Path) -> bool:
    """Alive, and `marker` (a state directory) is in its command line."""
    return pid > 0 and alive(pid) and names(marker, cmdline(pid))


def find_ours(marker: Path) -> list[int]:
    """Every live process whose command line names `marker`, this process excluded, by pid."""
    me = os.getpid()
    found = []
    for proc in psutil.process_iter(["pid", "cmdline", "status"]):
        info = proc.info
        if (
            info["pid"] != me
            and info["status"] != psutil.STATUS_ZOMBIE
            and names(marker, " ".join(info["cmdline"] or ()))
        ):
            found.append(int(info["pid"]))
    return sorted(found)
