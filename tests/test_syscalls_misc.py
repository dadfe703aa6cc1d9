"""The process, signal, time and info families in real guests, against Linux.

* ``abort()`` — glibc unblocks SIGABRT and calls ``tgkill``; musl blocks
  every signal, calls ``tkill`` and dies when it restores the mask.  Both
  must end with status 134 and a ``SIGABRT: …`` report naming where.
* ``signal_ends.c`` — the other ways a signal ends a program (or does not),
  compared with the same program run natively.
* ``misc_calls.c`` — the small calls about the process itself: its lines
  marked ``same:`` must match Linux; its ``guest:`` lines are what
  minikvm's one-process, one-CPU sandbox answers by design.
* The support table: every entry has a status, and every non-supported
  entry says why.

Nothing is timed: guests run with a time limit only so a wrong jump cannot
hang the suite.
"""

from __future__ import annotations

import errno
import signal
import subprocess
from pathlib import Path

import pytest

from minikvm.syscalls.base import PARTIAL, REFUSED, SUPPORTED
from minikvm.syscalls.table import FAMILIES, TABLE_BY_NUMBER
from tests.guest_runs import run_minikvm, run_native, shell_status
from tests.programs.build import DEFAULT_BUILD_DIR, SOURCE_DIR, available_variants, build

GUEST_TIMEOUT_SECONDS = 60
SUBPROCESS_TIMEOUT_SECONDS = 120
#: For the programs that only a time limit can end.
SHORT_LIMIT_SECONDS = 1
EXIT_TIMEOUT = 124


def compiled(name: str, variant: str) -> Path:
    return build(SOURCE_DIR / f"{name}.c", DEFAULT_BUILD_DIR, variant)


def minikvm_run(*arguments: str, limit: float = GUEST_TIMEOUT_SECONDS,
                cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return run_minikvm(["--timeout", limit, *arguments], cwd=cwd, text=True,
                       timeout=SUBPROCESS_TIMEOUT_SECONDS)


def native_run(*arguments: str) -> subprocess.CompletedProcess[str]:
    return run_native(list(arguments), text=True, timeout=SUBPROCESS_TIMEOUT_SECONDS)


# --- abort() -------------------------------------------------------------------------------

@pytest.mark.kvm
@pytest.mark.parametrize("variant", available_variants())
def test_abort_ends_with_sigabrt(variant: str) -> None:
    program = str(compiled("abort", variant))
    native = native_run(program)
    guest = minikvm_run(program)
    assert shell_status(native.returncode) == 128 + signal.SIGABRT
    assert guest.returncode == 128 + signal.SIGABRT == 134
    assert guest.stdout == native.stdout == "calling abort()\n"
    report = guest.stderr.strip().splitlines()[-1]
    assert report.startswith("SIGABRT: sent by the program itself"), report
    assert " at rip=0x" in report and "<" in report, "names where, with the symbol"


# --- signals that end programs ------------------------------------------------------------------

#: mode -> the signal that must end it, natively and in the guest (None: exits 0)
ENDINGS = {
    "raise-term": signal.SIGTERM,
    "kill-usr1": signal.SIGUSR1,
    "blocked": signal.SIGTERM,
    "alarm-pause": signal.SIGALRM,
    "itimer-sleep": signal.SIGALRM,
    "sigsuspend": signal.SIGALRM,
    "ignored-alarm": None,
    "sigreturn": signal.SIGSEGV,
    "handler": None,
}


@pytest.mark.kvm
@pytest.mark.parametrize("variant", available_variants())
@pytest.mark.parametrize("mode", list(ENDINGS))
def test_signal_endings_match_native(variant: str, mode: str) -> None:
    program = str(compiled("signal_ends", variant))
    native = native_run(program, mode)
    guest = minikvm_run(program, mode)
    expected = ENDINGS[mode]
    status = 0 if expected is None else 128 + expected
    assert shell_status(native.returncode) == status, native.stdout + native.stderr
    assert guest.returncode == status, guest.stderr
    assert guest.stdout == native.stdout
    if expected is not None:
        assert guest.stderr.strip().splitlines()[-1].startswith(f"{expected.name}: ")
    else:
        assert guest.stderr == ""


@pytest.mark.kvm
@pytest.mark.parametrize("variant", available_variants())
def test_a_realtime_signal_ends_with_its_number(variant: str) -> None:
    """glibc's SIGRTMIN is 34, musl's 35: the program raises SIGRTMIN+1,
    whatever that is, and the status says which."""
    program = str(compiled("signal_ends", variant))
    native = native_run(program, "realtime")
    guest = minikvm_run(program, "realtime")
    number = shell_status(native.returncode) - 128
    assert 35 <= number <= 36
    assert guest.returncode == 128 + number
    name = f"SIGRTMIN+{number - signal.SIGRTMIN}"
    assert guest.stderr.strip().splitlines()[-1].startswith(f"{name}: ")


@pytest.mark.kvm
@pytest.mark.parametrize("variant", available_variants())
def test_stop_signals_do_not_stop_a_sandboxed_program(variant: str) -> None:
    guest = minikvm_run(str(compiled("signal_ends", variant)), "stop")
    assert (guest.returncode, guest.stdout) == (0, "continued after SIGTSTP\n")


@pytest.mark.kvm
@pytest.mark.parametrize("mode", ["pause", "sleep"])
def test_the_time_limit_ends_a_waiting_program(mode: str) -> None:
    """A program asleep in the host (pause, a long sleep) still stops at the limit."""
    variant = available_variants()[0]
    guest = minikvm_run(str(compiled("signal_ends", variant)), mode, limit=SHORT_LIMIT_SECONDS)
    assert guest.returncode == EXIT_TIMEOUT, guest.stderr
    assert "timed out" in guest.stderr


# --- the small calls ------------------------------------------------------------------------

#: What minikvm answers where the machine decides: one process under a
#: shell (pid 1000, parent 999), one CPU, the memory limit as RAM.
GUEST_LINES = """\
guest: pid 1000, parent 999, group 1000, session 999
guest: setsid: EPERM
guest: setpgid(0, 0): ok
guest: setuid to another user: EPERM
guest: setgroups: EPERM
guest: setgroups to the groups it has: ok
guest: sched_setscheduler(SCHED_FIFO): EPERM
guest: setpriority -5: EACCES
guest: CPUs: 1
guest: affinity to CPU 1 only: EINVAL
guest: affinity to CPUs 0 and 1: ok
guest: getcpu: cpu 0 node 0
guest: membarrier query: 0x1f
guest: membarrier global: 0
guest: clock_settime: EPERM
guest: sysinfo: 1016 MiB of RAM, 1 process
guest: nodename minikvm
guest: kill(another pid, 0): ESRCH
guest: mlockall: ok
guest: setitimer(ITIMER_PROF): EINVAL
"""


@pytest.mark.kvm
@pytest.mark.parametrize("variant", available_variants())
def test_small_calls_match_native_and_the_sandbox_model(variant: str) -> None:
    program = str(compiled("misc_calls", variant))
    native = native_run(program)
    guest = minikvm_run(program, "guest")
    assert native.returncode == 0 and guest.returncode == 0, guest.stderr
    assert guest.stderr == ""
    same = [line for line in guest.stdout.splitlines(keepends=True) if line.startswith("same:")]
    assert "".join(same) == native.stdout
    rest = [line for line in guest.stdout.splitlines(keepends=True) if not line.startswith("same:")]
    assert "".join(rest) == GUEST_LINES


# --- the table ---------------------------------------------------------------------------------

def test_every_entry_states_its_status() -> None:
    for family, entries in FAMILIES.items():
        for entry in entries:
            assert entry.status in (SUPPORTED, PARTIAL, REFUSED), entry
            if entry.status == PARTIAL:
                assert entry.note, f"{entry.name} ({family}) is partial but does not say how"
            if entry.status == REFUSED:
                assert entry.note and entry.errno, f"{entry.name} is refused without errno/note"
            assert entry.handler is not None, entry.name


@pytest.mark.parametrize("name", [
    "getpgrp", "getpgid", "setpgid", "getsid", "setsid", "getgroups", "getresuid", "getresgid",
    "times", "getrusage", "clock_getres", "clock_nanosleep", "alarm", "setitimer", "getitimer",
    "prctl", "personality", "membarrier", "wait4", "sched_setaffinity", "sched_getscheduler",
    "sched_get_priority_max", "sched_get_priority_min", "getcpu", "sigaltstack", "pause",
    "rt_sigpending", "rt_sigsuspend", "rt_sigtimedwait", "mincore", "msync", "mlock",
])
def test_common_calls_are_in_the_table(name: str) -> None:
    assert name in {entry.name for entry in TABLE_BY_NUMBER.values()}


def test_refusals_name_a_real_errno() -> None:
    for entry in TABLE_BY_NUMBER.values():
        if entry.status == REFUSED:
            assert entry.errno in errno.errorcode, entry
