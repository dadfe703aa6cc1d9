"""Layer 3 — how a run stops: the run-loop protocol in one place.

:meth:`Machine.run <minikvm.machine.machine.Machine.run>` enters the vCPU,
hands every system-call exit to a dispatcher and goes on, until something
ends the loop.  There are exactly two ways to end it, and this module names
both:

* **The loop returns a** :class:`Stop` — the machine itself could not go on:
  the guest crashed (a CPU exception with no handler), the time limit
  passed, or KVM failed.  :class:`StopKind` says which.
* **A handler raises a** :class:`RunLoopExit` — a system call decided that
  control must leave the loop (the program exited or was killed, it waits
  for a request, a host call returned) or that the loop must *not* finish
  the call in the usual way (another thread's registers were loaded, the
  handler loaded all registers itself, the time limit cut a host wait
  short).

``RunLoopExit`` derives from ``BaseException``, not ``Exception``: the
dispatcher catches ``Exception`` around every handler to turn a bug into
a clean "internal error" stop, and these must pass through that net.  The
table says who raises each one and who catches it::

    exception           raised by                   caught by
    ------------------  --------------------------  ---------------------------------
    RegistersLoaded     rt_sigreturn                Machine.run: resume as loaded
    ThreadSwitched      the thread scheduler        Machine.run: run the new thread
    TimeLimitReached    the time limit's SIGALRM    Machine.run: Stop(TIMEOUT)
    ProcessExit         exit, exit_group            Process.run, run_until_stop
    ProcessKilled       a fatal signal              Process.run, run_until_stop
    WaitingForRequest   minikvm_wait_request        run_until_stop (snapshots, serve)
    CallReturned        the call-return stub        run_until_stop (Snapshot.call)

And how the command line reports the end of a run, as a shell would: the
program's own status, ``128 + N`` for signal N, and the few statuses of
:data:`EXIT_TIMEOUT`, :data:`EXIT_CANNOT_RUN` and :data:`EXIT_NOT_FOUND`
that ``timeout(1)`` and the shell use.
"""

from __future__ import annotations

import enum
import signal as signal_module
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from minikvm.ioctl import kvm_regs
    from minikvm.machine.crash import CrashReport

# --- exit statuses, as coreutils' timeout(1) and POSIX shells report them -----
#: The time limit ended the run (``timeout(1)``'s status).
EXIT_TIMEOUT = 124
#: The file exists but cannot be run (the shell's status for ``EACCES``/``ENOEXEC``).
EXIT_CANNOT_RUN = 126
#: The file does not exist (the shell's "command not found").
EXIT_NOT_FOUND = 127
#: A signal N ended the run: the status is ``EXIT_SIGNAL_BASE + N``.
EXIT_SIGNAL_BASE = 128


def signal_status(signal: int) -> int:
    """The exit status a shell reports for a run ended by *signal*."""
    return EXIT_SIGNAL_BASE + int(signal)


class StopKind(str, enum.Enum):
    """Why a run stopped.  A ``str`` enum, so that a kind is also its name
    in a message, in JSON and in a test (``StopKind.TIMEOUT == "timeout"``)."""
    #: The program called ``exit``/``exit_group``; the status is its own.
    EXIT = "exit"
    #: A CPU exception or a fatal signal ended the program.
    CRASH = "crash"
    #: ``--timeout`` (or a request's time limit) passed.
    TIMEOUT = "timeout"
    #: KVM could not run the guest (an internal error, an unexpected exit).
    FAILURE = "failure"
    #: The program waits for the next request (``minikvm_wait_request``).
    WAIT = "wait"
    #: A function the host called returned (``Snapshot.call``).
    RETURN = "return"


@dataclass
class Stop:
    """What :meth:`Machine.run` returns: it stopped by itself (``kind`` is
    CRASH, TIMEOUT or FAILURE), with a one-line *message* and, for a crash,
    the report."""
    kind: StopKind
    message: str
    crash: "CrashReport | None" = None


class SyscallHandler(Protocol):
    """What :meth:`Machine.run` calls for every system call of the guest
    (a :class:`~minikvm.syscalls.dispatch.Dispatcher`, or a tutorial's own
    function).  *regs* are the live synced registers of ``kvm_run``: the
    number in RAX, the arguments in RDI, RSI, RDX, R10, R8, R9.  The handler
    stores the result in ``regs.rax`` and returns, and the guest resumes
    after its ``syscall``; or it raises a :class:`RunLoopExit`."""

    def __call__(self, regs: "kvm_regs") -> None: ...


class RunLoopExit(BaseException):
    """Raised by a system-call handler to leave, or to bend, the run loop
    (see the table in this module's docstring).  A ``BaseException``, so the
    dispatcher's ``except Exception`` for handler bugs lets it through."""


class RegistersLoaded(RunLoopExit):
    """The handler loaded the program's *whole* register state into
    ``kvm_run`` itself (``rt_sigreturn``, which must restore RCX and R11
    too): the run loop must not finish the call (no result in RAX, no
    return to RCX); it marks the registers dirty and resumes as they are."""


class TimeLimitReached(RunLoopExit):
    """Raised by the time limit's signal handler when a system-call handler
    is still running :data:`~minikvm.machine.machine.TIME_LIMIT_GRACE_TICKS`
    ticks after the limit: it is waiting in the host (a read from a pipe
    nobody writes, a ``connect`` to a silent address).  Python retries such
    a call after a signal handler returns (PEP 475), so raising is the only
    way to cut it short.  :meth:`Machine.run` turns it into a TIMEOUT stop."""


class ThreadSwitched(RunLoopExit):
    """The handler put *another* guest thread's registers in ``kvm_run``
    (see :mod:`minikvm.process.threads`): the call it handles finishes later,
    for the thread that now waits.  The run loop must not finish it; it
    marks the registers dirty and runs the new thread."""


class ProcessExit(RunLoopExit):
    """``exit``/``exit_group`` ended the program with *status*."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class ProcessKilled(RunLoopExit):
    """The program got a signal whose action is to terminate it
    (``abort()``, ``raise(SIGTERM)``, ``kill(getpid(), …)``).  *outside*:
    the signal was sent to minikvm from outside (Ctrl-C, ``kill``), which
    ``minikvm run`` then ends by, as a native program would
    (:func:`minikvm.machine.outside.raise_on_self`)."""

    def __init__(self, signal: signal_module.Signals, reason: str = "",
                 outside: bool = False) -> None:
        super().__init__(signal)
        self.signal = signal
        self.reason = reason
        self.outside = outside


class WaitingForRequest(RunLoopExit):
    """The guest called ``minikvm_wait_request(buffer, size)``: it is ready
    for the next request.  The vCPU stays at the syscall's exit, to be
    answered later."""

    def __init__(self, buffer: int, size: int) -> None:
        super().__init__(buffer, size)
        self.buffer = buffer
        self.size = size


class CallReturned(RunLoopExit):
    """A function the host called returned (through the call-return stub)."""

    def __init__(self, value: int) -> None:
        super().__init__(value)
        self.value = value
