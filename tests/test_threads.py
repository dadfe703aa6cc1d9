"""POSIX threads under minikvm: the same output as natively, and the limits.

``tests/programs/threads.c`` runs its parts — a mutex-protected counter,
a condition-variable queue, ``pthread_join`` values, ``__thread``
variables, a thread spinning on a flag another thread sets (only a time
slice can end that spin), a barrier, a detached thread, semaphores, 100
threads at a time, timed waits, thread ids, the main thread leaving first —
natively and under ``minikvm run``, in every static variant; stdout,
stderr and the exit status must agree.

Then what only minikvm does, on purpose: ``clone`` of a process makes a
child in the sandbox (:mod:`minikvm.tree`), a thread bomb meets the thread limit (EAGAIN), a deadlock ends the
run with a report, spinning threads still stop at ``--timeout``, and a
``clone`` with a garbage stack or tid pointers gets Linux's answers, never
a Python traceback.  Nothing is timed.
"""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import pytest

from minikvm.process.threads import DEFAULT_MAX_THREADS
from tests.guest_runs import run_minikvm, run_native, shell_status, start_minikvm
from tests.programs.build import STATIC_VARIANTS, program

GUEST_TIMEOUT_SECONDS = 120
SUBPROCESS_TIMEOUT_SECONDS = 180
ENV = {"LANG": "C"}
#: How long after starting the guest the stdin test writes its line.
LINE_DELAY_SECONDS = 0.5

pytestmark = pytest.mark.kvm


def built(variant: str) -> Path:
    return program("threads", variant)


def native(executable: Path, *parts: str) -> subprocess.CompletedProcess[bytes]:
    return run_native([executable, *parts], env=ENV, timeout=SUBPROCESS_TIMEOUT_SECONDS)


def minikvm(executable: Path, *parts: str, timeout: float = GUEST_TIMEOUT_SECONDS,
            options: tuple[str, ...] = ()) -> subprocess.CompletedProcess[bytes]:
    return run_minikvm(["--clearenv", "--env=LANG=C", f"--timeout={timeout}", *options,
                        "--", executable, *parts], timeout=SUBPROCESS_TIMEOUT_SECONDS)


def assert_same(guest: subprocess.CompletedProcess[bytes],
                host: subprocess.CompletedProcess[bytes]) -> None:
    assert guest.stdout.decode() == host.stdout.decode()
    assert guest.stderr.decode() == host.stderr.decode()
    assert shell_status(guest.returncode) == shell_status(host.returncode)


# -- the same as natively -------------------------------------------------------------------------
@pytest.mark.parametrize("variant", STATIC_VARIANTS)
def test_threads_same_as_native(variant: str) -> None:
    executable = built(variant)
    host = native(executable)
    assert host.returncode == 0, host.stdout.decode() + host.stderr.decode()
    assert host.stdout.count(b"\n") == 16   # every part printed its line
    assert_same(minikvm(executable), host)


@pytest.mark.parametrize("variant", STATIC_VARIANTS)
def test_the_main_thread_may_exit_first(variant: str) -> None:
    executable = built(variant)
    host = native(executable, "main-exit")
    assert host.stdout.decode().splitlines() == [
        "main-exit: main thread calls pthread_exit",
        "main-exit: the last thread ends the process"]
    assert_same(minikvm(executable, "main-exit"), host)


@pytest.mark.parametrize("variant", STATIC_VARIANTS)
def test_a_crash_in_a_thread_ends_the_process(variant: str) -> None:
    executable = built(variant)
    host = native(executable, "hostile-crash")
    guest = minikvm(executable, "hostile-crash")
    assert guest.stdout == host.stdout == b"crash: a thread pushes onto a garbage stack\n"
    assert shell_status(guest.returncode) == shell_status(host.returncode) == 139
    assert re.fullmatch(r"SIGSEGV: page fault writing 0xfff8 at rip=0x[0-9a-f]+ "
                        r"<part_hostile_crash\+\d+>\n", guest.stderr.decode())


# -- minikvm's own answers ----------------------------------------------------------------------
@pytest.mark.parametrize("variant", STATIC_VARIANTS)
def test_hostile_clone_arguments_get_errnos(variant: str) -> None:
    """Linux's answers; a new process is a child in the sandbox (minikvm.tree)."""
    guest = minikvm(built(variant), "hostile-clone")
    assert guest.stderr == b""
    assert guest.stdout.decode().splitlines() == [
        "clone, garbage stack and parent tid: a thread, cleared 0",
        "clone, unwritable child tid: a thread",
        "clone, non-canonical TLS: EPERM",
        "clone, thread without CLONE_SIGHAND: EINVAL",
        "clone, a process: a process that exited",
        "clone3, bad pointer: EFAULT",
        "clone3, 8 bytes: EINVAL",
        "clone3, 8 KiB: E2BIG",
    ]
    assert guest.returncode == 0


@pytest.mark.parametrize("variant", STATIC_VARIANTS)
def test_a_thread_bomb_meets_the_limit(variant: str) -> None:
    guest = minikvm(built(variant), "hostile-bomb")
    assert guest.stderr == b""
    assert guest.stdout.decode() == f"bomb: {DEFAULT_MAX_THREADS - 1} threads, then EAGAIN\n"
    assert guest.returncode == 0


@pytest.mark.parametrize("variant", STATIC_VARIANTS)
def test_a_deadlock_ends_the_run(variant: str) -> None:
    guest = minikvm(built(variant), "hostile-deadlock")
    assert guest.stdout == b"deadlock: two threads take two locks in opposite orders\n"
    report = guest.stderr.decode()
    assert re.fullmatch(r"SIGKILL: deadlock: all 3 threads wait and none can wake another "
                        r"\(thread 1000: FUTEX_WAIT on 0x[0-9a-f]+; "
                        r"thread 1001: FUTEX_WAIT on 0x[0-9a-f]+; "
                        r"thread 1002: FUTEX_WAIT on 0x[0-9a-f]+\)\n", report), report
    assert guest.returncode == 137


@pytest.mark.parametrize("variant", STATIC_VARIANTS)
def test_spinning_threads_stop_at_the_time_limit(variant: str) -> None:
    guest = minikvm(built(variant), "hostile-spin", timeout=1)
    assert guest.stdout == b"spin-forever: two threads spin\n"
    assert guest.stderr == b"minikvm: timed out: the time limit was reached\n"
    assert guest.returncode == 124


def test_max_threads_sets_the_limit() -> None:
    guest = minikvm(built("glibc-static"), "hostile-bomb", options=("--max-threads=10",))
    assert guest.stdout == b"bomb: 9 threads, then EAGAIN\n"
    assert guest.returncode == 0


@pytest.mark.parametrize("variant", STATIC_VARIANTS)
def test_a_thread_polls_a_host_fd_while_the_others_wait(variant: str) -> None:
    """The reading thread polls stdin while the main thread waits in
    pthread_join: the host polls stdin for it.  The line is written a moment
    after the start, so that (usually) the poll is already waiting; the
    test does not depend on it."""
    with start_minikvm(["--timeout=60", "--", built(variant), "stdin"]) as guest:
        try:
            time.sleep(LINE_DELAY_SECONDS)
            stdout, stderr = guest.communicate(b"hello\n", timeout=SUBPROCESS_TIMEOUT_SECONDS)
        finally:
            guest.kill()
    assert stderr == b""
    assert stdout == b"stdin: a thread polled and read: hello\n"
    assert guest.returncode == 0


@pytest.mark.parametrize("variant", STATIC_VARIANTS)
def test_a_thread_reading_a_host_fd_does_not_stop_the_others(variant: str) -> None:
    """One thread reads stdin; the main thread must still run and print
    before the test writes the line — if the read blocked the host, that
    line would never come and the test's timeout would end it."""
    with start_minikvm(["--timeout=60", "--", built(variant), "stdin-read"]) as guest:
        try:
            first = guest.stdout.readline()
            stdout, stderr = guest.communicate(b"hello\n", timeout=SUBPROCESS_TIMEOUT_SECONDS)
        finally:
            guest.kill()
    assert first == b"stdin: the main thread runs while another waits for stdin\n"
    assert stdout == b"stdin: a thread read: hello\n"
    assert stderr == b""
    assert guest.returncode == 0
