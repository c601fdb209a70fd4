"""The subprocess helpers keep every line a server logged: a start-up failure logged in the same write as the
'listening on' line used to be lost (read ahead by `readline`, then skipped by `communicate(timeout=...)`), which made
the exit-code tests flaky."""

from __future__ import annotations

import subprocess
import sys

from slm_helpers import ServerProcess, finish_process

SCRIPT = ("import sys; sys.stdout.write('listening on http://127.0.0.1:1\\nrefusing to start (exit code 3): x\\n'); "
          "sys.stdout.flush(); sys.exit(3)")  # fmt: skip


def test_a_line_written_with_the_listening_line_reaches_the_log() -> None:
    process = subprocess.Popen([sys.executable, "-c", SCRIPT], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)  # fmt: skip
    assert process.stdout is not None
    first = process.stdout.readline()  # as start_server_process reads, buffering what follows
    code, log = finish_process(ServerProcess(process, "http://127.0.0.1:1", [first]))
    assert code == 3
    assert log.endswith("refusing to start (exit code 3): x\n"), log
