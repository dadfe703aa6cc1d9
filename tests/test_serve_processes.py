"""``minikvm serve --max-processes``: a request may run a helper in a
process of its own (a CGI-style handler), and the processes a request
made end with its reset.

``tests/guests/cgi_handler.c`` forks and execs itself as the helper (or
``posix_spawn``s it), reads its output through a pipe and waits for it; a
``/leave`` request forks a child that never ends.  The test checks each
answer, that the next request no longer sees the left child (in the
sandbox's table) and that the worker has no host child left, and that
without ``--max-processes`` a request still cannot fork.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.guests import guest
from tests.test_serve import get, start_server, stop_server, worker_pids

pytestmark = pytest.mark.kvm

#: How long the worker's host children may take to be reaped after the answer.
GONE_WITHIN_SECONDS = 10.0
HELPER_ANSWER = 'child 1001 said "helper 1001 of 1000" and exited 5'


def start(program: Path, *options: str) -> tuple[int, subprocess.Popen]:
    """``minikvm serve`` of *program* (one worker) on an ephemeral port,
    its directory readable: ``(port, process)``."""
    port, process, _ = start_server(program, 1, 20,
                                    options=("--allow-read", str(program.parent), *options))
    return port, process


@pytest.fixture
def handler(tmp_path: Path) -> Path:
    """The handler in a directory of its own (the grant), as it execs itself."""
    copy = tmp_path / "cgi_handler"
    shutil.copy(guest("cgi_handler"), copy)
    return copy


def host_children(pid: int) -> list[int]:
    return [int(child) for child in
            Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def test_a_request_runs_helpers_and_its_processes_end_with_it(handler: Path) -> None:
    port, server = start(handler, "--max-processes", "8")
    try:
        for _ in range(3):      # the same pids every time: each request starts anew
            assert get(port, "/spawn")[2].decode() == HELPER_ANSWER
            assert get(port, "/posix_spawn")[2].decode() == HELPER_ANSWER
        assert get(port, "/missing")[2] == b"posix_spawn: No such file or directory"
        status, _, body = get(port, "/leave")
        assert (status, body) == (200, b"left 1001")
        assert get(port, "/probe-1001")[2] == b"No such process"
        assert get(port, "/count")[2] == b"1 processes"
        (worker,) = worker_pids(server.pid)
        deadline = time.monotonic() + GONE_WITHIN_SECONDS
        while host_children(worker) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert host_children(worker) == []
    finally:
        stop_server(server)


def test_without_max_processes_a_request_cannot_fork(handler: Path) -> None:
    port, server = start(handler)
    try:
        assert get(port, "/spawn")[2] == b"fork: Operation not permitted"
        assert get(port, "/probe-1000")[2] == b"alive"
    finally:
        stop_server(server)
