"""Static Go programs under minikvm: the same output as natively.

Go's runtime is a demanding guest: it starts several threads at once
(``clone``), parks them on futexes with timeouts, waits in ``epoll_wait``
for timers and I/O (its network poller watches a pipe, edge-triggered),
installs a handler for every signal on an alternate signal stack, and
sends ``SIGURG`` to its own threads (``tgkill``) to preempt goroutines.
The programs in ``tests/programs/go`` — built with ``CGO_ENABLED=0 go
build`` (:func:`tests.programs.build.go_program`; skipped, naming the
package, when ``go`` is missing) — exercise that:

* ``hello.go`` — start-up and exit;
* ``goroutines.go`` — a mutex counter across 8 goroutines, a channel
  pipeline, ``time.Sleep``, ``select`` with ``time.After``, a ticker, a
  worker pool, and a goroutine spinning with ``GOMAXPROCS(1)`` that only a
  ``SIGURG`` to its thread can preempt;
* ``files.go`` — ``os.WriteFile``/``ReadFile``/``ReadDir``, ``bufio``,
  ``strconv``, ``sort`` and maps in the granted directory;
* ``crash.go`` — a write to a nil map: the panic message, the goroutine
  trace and exit status 2.

Each runs natively and under ``minikvm run --here`` in its own fresh
directory; stdout, stderr and the exit status must agree.  Nothing is
timed.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.guest_runs import run_minikvm, run_native, shell_status
from tests.programs.build import go_program

GUEST_TIMEOUT_SECONDS = 60
SUBPROCESS_TIMEOUT_SECONDS = 90
ENV = {"LANG": "C"}
#: Go's exit status after an unrecovered panic
GO_PANIC_STATUS = 2

pytestmark = pytest.mark.kvm


def run_both(name: str, tmp_path: Path) -> tuple[subprocess.CompletedProcess[bytes],
                                                 subprocess.CompletedProcess[bytes]]:
    """The program natively and under minikvm, each in its own empty directory."""
    executable = go_program(name)
    native_dir, guest_dir = tmp_path / "native", tmp_path / "guest"
    native_dir.mkdir()
    guest_dir.mkdir()
    host = run_native([executable], cwd=native_dir, env=ENV, timeout=SUBPROCESS_TIMEOUT_SECONDS)
    guest = run_minikvm(["--here", "--clearenv", "--env=LANG=C",
                         f"--timeout={GUEST_TIMEOUT_SECONDS}", "--", executable],
                        cwd=guest_dir, timeout=SUBPROCESS_TIMEOUT_SECONDS)
    return host, guest


def assert_same(host: subprocess.CompletedProcess[bytes],
                guest: subprocess.CompletedProcess[bytes]) -> None:
    assert guest.stdout.decode() == host.stdout.decode()
    assert guest.stderr.decode() == host.stderr.decode()
    assert shell_status(guest.returncode) == shell_status(host.returncode)


@pytest.mark.parametrize("name", ["hello", "goroutines", "files"])
def test_go_program_same_as_native(name: str, tmp_path: Path) -> None:
    host, guest = run_both(name, tmp_path)
    assert host.returncode == 0, host.stdout.decode() + host.stderr.decode()
    assert host.stdout                      # the program printed its results
    assert_same(host, guest)


def test_go_goroutines_finish_every_part(tmp_path: Path) -> None:
    """What goroutines.go prints is the same on any machine."""
    _, guest = run_both("goroutines", tmp_path)
    assert guest.stdout.decode().splitlines() == [
        "counter: 80000", "pipeline: sum of squares 385", "sleep: at least 20ms: true",
        "select: time.After won", "ticker: ticks 3", "workers: 20 results, first 0 last 38",
        "preemption: the spinning goroutine was interrupted: true", "done"]


def test_go_panic_same_as_native(tmp_path: Path) -> None:
    host, guest = run_both("crash", tmp_path)
    assert shell_status(host.returncode) == GO_PANIC_STATUS
    assert re.match(r"panic: assignment to entry in nil map\n\ngoroutine 1 \[running\]:\n",
                    guest.stderr.decode())
    assert_same(host, guest)
