"""Signals sent to ``minikvm run`` from outside reach the program (issue 11, item 6).

Each case runs ``tests/programs/outside_signals.c`` natively and under
minikvm the same way — started as a child, a signal sent once it printed
``ready`` — and compares what a shell would see: stdout and the return
code (a death by signal is ``-N`` for both: minikvm re-raises the signal
on itself, see :func:`minikvm.machine.outside.raise_on_self`).  No timed
assertion: the tests wait for output markers, and for a blocking read they
wait until the process sleeps in the kernel (``/proc/PID/syscall``: read
natively, poll under minikvm), so the signal cannot come before the read.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from tests.guest_runs import minikvm_command, minikvm_environment
from tests.programs.build import DEFAULT_BUILD_DIR, SOURCE_DIR, available_variants, build

#: The backstop for a run that hangs (not an assertion on speed).
BACKSTOP_SECONDS = 120
#: Host system calls a process blocked in a read of a pipe sleeps in:
#: read(2) natively, poll(2) in minikvm's wait.
BLOCKED_IN = {"0", "7"}


@pytest.fixture(scope="module")
def program() -> str:
    if "glibc-static" not in available_variants():
        pytest.skip("no static glibc toolchain")
    return str(build(SOURCE_DIR / "outside_signals.c", DEFAULT_BUILD_DIR, "glibc-static"))


def start(argv: list[str], native: bool) -> subprocess.Popen[bytes]:
    command = argv if native else minikvm_command(["--", *argv])
    return subprocess.Popen(command, env=minikvm_environment(), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def wait_for(process: subprocess.Popen[bytes], marker: bytes) -> bytes:
    """Read stdout until *marker* (or the end); what was read."""
    seen = b""
    assert process.stdout is not None
    while marker not in seen:
        chunk = os.read(process.stdout.fileno(), 4096)
        if not chunk:
            break
        seen += chunk
    return seen


def wait_until_blocked(process: subprocess.Popen[bytes]) -> None:
    while True:
        with open(f"/proc/{process.pid}/syscall") as file:
            if file.read().split()[0] in BLOCKED_IN:
                return
        time.sleep(0.01)


def finish(process: subprocess.Popen[bytes], seen: bytes) -> tuple[int, bytes, bytes]:
    out, err = process.communicate(timeout=BACKSTOP_SECONDS)
    return process.returncode, seen + out, err


def both(case) -> tuple[tuple[int, bytes, bytes], tuple[int, bytes, bytes]]:
    return case(True), case(False)


@pytest.mark.parametrize("mode, sig", [("handler", signal.SIGINT), ("handler", signal.SIGHUP),
                                       ("handler", signal.SIGQUIT), ("spin", signal.SIGUSR1),
                                       ("handler", signal.SIGWINCH)])
def test_a_handler_runs(program: str, mode: str, sig: signal.Signals) -> None:
    def case(native: bool):
        process = start([program, mode, str(int(sig))], native)
        seen = wait_for(process, b"ready\n")
        process.send_signal(sig)
        return finish(process, seen)
    native, guest = both(case)
    assert guest[:2] == native[:2] == (0, f"ready\nin handler\nhandled {int(sig)}\n".encode())
    assert guest[2] == b""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR2])
def test_a_default_action_ends_the_run_as_natively(program: str, sig: signal.Signals) -> None:
    """Killed by the signal, silently: the shell sees what it sees natively."""
    def case(native: bool):
        process = start([program, "default"], native)
        seen = wait_for(process, b"ready\n")
        process.send_signal(sig)
        return finish(process, seen)
    native, guest = both(case)
    assert guest[0] == native[0] == -sig
    assert guest[1] == native[1] == b"ready\n"
    assert guest[2] == b""


@pytest.mark.parametrize("restart, expected", [("restart", b"read 5: data\n"),
                                               ("eintr", b"read -1 EINTR\n")])
def test_a_read_interrupted_by_a_signal(program: str, restart: str, expected: bytes) -> None:
    """SA_RESTART makes the read go on after the handler; without it, EINTR."""
    def case(native: bool):
        process = start([program, "read", restart], native)
        seen = wait_for(process, b"ready\n")
        wait_until_blocked(process)
        process.send_signal(signal.SIGUSR1)
        seen += wait_for(process, b"in handler\n")
        try:
            assert process.stdin is not None
            process.stdin.write(b"data\n")
            process.stdin.flush()
        except BrokenPipeError:
            pass                  # it returned EINTR and exited already
        return finish(process, seen)
    native, guest = both(case)
    assert guest[:2] == native[:2] == (0, b"ready\nin handler\n" + expected)


def test_stop_and_continue(program: str) -> None:
    """SIGTSTP's default stops minikvm (its parent sees it stopped); SIGCONT
    continues it and the program's SIGCONT handler runs."""
    def case(native: bool):
        command = [program, "stop"] if native else minikvm_command(["--", program, "stop"])
        process = subprocess.Popen(command, env=minikvm_environment(), stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, process_group=0)
        seen = wait_for(process, b"ready\n")
        process.send_signal(signal.SIGTSTP)
        _, status = os.waitpid(process.pid, os.WUNTRACED)
        stopped = os.WIFSTOPPED(status)
        process.send_signal(signal.SIGCONT)
        result = finish(process, seen)
        return stopped, result
    native, guest = both(case)
    assert native[0] and guest[0]
    assert guest[1][:2] == native[1][:2] == (0, b"ready\nin handler\ncontinued\n")


def test_a_flood_of_signals_coalesces(program: str) -> None:
    """Thousands of signals: no traceback, the handler ran, the run ends cleanly."""
    process = start([program, "flood"], False)
    seen = wait_for(process, b"ready\n")
    for _ in range(2000):
        process.send_signal(signal.SIGUSR1)
        process.send_signal(signal.SIGWINCH)
    process.send_signal(signal.SIGTERM)
    status, out, err = finish(process, seen)
    assert (status, out) == (0, b"ready\nflooded yes\n"), err
    assert b"Traceback" not in err and err == b""
