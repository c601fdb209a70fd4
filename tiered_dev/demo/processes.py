"""The demo's own processes (operator, cloud stand-in, Prometheus, SLM server, router): start, reuse, stop.

Every process the demo starts carries the demo's state directory in its command line, the same rule the local
control plane follows: `is_ours` then tells our processes from everyone else's without a pid file being
trustworthy, `reuse_or_start` makes a re-run reuse what still runs, and `stop_all` finds strays even when the
state file was lost. Nothing here kills by name.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from tiered_dev.procs import alive, cmdline, find_ours, is_ours


@dataclass(frozen=True)
class Started:
    """A process the demo needs: its pid and whether this run started it (False: reused from a previous run)."""

    name: str
    pid: int
    started: bool


class ProcessFailed(RuntimeError):
    """A process exited or never became healthy; the message carries the tail of its log."""


def log_tail(path: Path, lines: int = 25) -> str:
    if not path.exists():
        return "(no log)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


class Registry:
    """The processes the demo recorded (`processes.json` in its directory): name → pid and a fingerprint of the
    command line and environment it was started with, so a changed configuration restarts the process."""

    def __init__(self, demo_dir: Path) -> None:
        self.demo_dir = demo_dir
        self.path = demo_dir / "processes.json"

    def load(self) -> dict[str, dict[str, object]]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        if not isinstance(data, dict):
            return {}
        return {str(k): dict(v) for k, v in data.items() if isinstance(v, dict)}

    def save(self, entries: Mapping[str, Mapping[str, object]]) -> None:
        self.demo_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({k: dict(v) for k, v in entries.items()}, indent=2, sort_keys=True))
        tmp.replace(self.path)

    def pid(self, name: str) -> int | None:
        value = self.load().get(name, {}).get("pid")
        return int(value) if isinstance(value, int) else None

    def running(self, name: str) -> int | None:
        pid = self.pid(name)
        return pid if pid is not None and is_ours(pid, self.demo_dir) else None

    def fingerprint(self, name: str) -> str | None:
        value = self.load().get(name, {}).get("fingerprint")
        return str(value) if value is not None else None

    def record(self, name: str, pid: int, fingerprint: str) -> None:
        entries = self.load()
        entries[name] = {"pid": pid, "fingerprint": fingerprint}
        self.save(entries)


def fingerprint(argv: Sequence[str], env: Mapping[str, str] | None, inputs: Sequence[Path] = ()) -> str:
    digest = hashlib.sha256(json.dumps([list(argv), sorted((env or {}).items())]).encode())
    for path in inputs:
        digest.update(path.read_bytes() if path.exists() else b"<missing>")
    return digest.hexdigest()[:16]


def http_ok(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return bool(200 <= response.status < 300)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def wait_until(
    check: Callable[[], bool], timeout: float, what: str, pid: int | None = None, log: Path | None = None
) -> None:
    """Poll `check` (every 0.25 s) until it holds; fail early when the process behind it died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if pid is not None and not alive(pid):
            raise ProcessFailed(f"{what}: the process exited\n--- {log} ---\n{log_tail(log) if log else ''}")
        time.sleep(0.25)
    tail = f"\n--- {log} ---\n{log_tail(log)}" if log else ""
    raise ProcessFailed(f"{what}: not ready after {timeout:.0f}s{tail}")


def reuse_or_start(
    registry: Registry,
    name: str,
    argv: Sequence[str],
    log: Path,
    health: Callable[[], bool],
    env: Mapping[str, str] | None = None,
    timeout: float = 60.0,
    inputs: Sequence[Path] = (),
) -> Started:
    """Reuse the recorded process `name` if it is ours, alive, healthy and started with the same command line,
    environment and `inputs` (files it reads only at start); otherwise (re)start `argv` and wait.

    `argv` must contain the demo directory (that is how the process is recognised later).
    """
    if not any(str(registry.demo_dir) in a for a in argv):
        raise ValueError(f"{name}: the command line must name {registry.demo_dir} so `demo down` can find it")
    wanted = fingerprint(argv, env, inputs)
    pid = registry.running(name)
    if pid is not None and registry.fingerprint(name) == wanted:
        wait_until(health, timeout, name, pid, log)
        return Started(name, pid, started=False)
    if pid is not None:
        stop(pid)  # ours, but started with another configuration
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        out.write(f"\n=== {time.strftime('%Y-%m-%dT%H:%M:%S')} starting {name}: {' '.join(argv)}\n".encode())
        proc = subprocess.Popen(
            list(argv),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # not killed by the terminal's Ctrl-C: `demo down` owns the lifecycle
            env={**os.environ, **(env or {})},
        )
    registry.record(name, proc.pid, wanted)
    wait_until(health, timeout, name, proc.pid, log)
    return Started(name, proc.pid, started=True)


def stop(pid: int, grace: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after `grace` seconds."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)


def stop_all(registry: Registry, order: Sequence[str]) -> list[tuple[str, int]]:
    """Stop the recorded processes in `order`, then any stray that still names the demo directory."""
    stopped: list[tuple[str, int]] = []
    for name in order:
        pid = registry.running(name)
        if pid is not None:
            stop(pid)
            stopped.append((name, pid))
    for pid in find_ours(registry.demo_dir):
        name = Path(cmdline(pid).split(" ", 1)[0]).name or "stray"
        stop(pid)
        stopped.append((name, pid))
    registry.save({})
    return stopped
