"""Layer 6 — signals: numbers, sets and actions, and what a signal sent does.

Every signal path starts here: what a signal number and a sigset are, the
action (disposition) recorded for each signal, and :func:`deliver` — what
happens to a signal the moment it is raised.  The system calls that change
actions and masks, and wait for signals, are in
:mod:`minikvm.syscalls.signal_actions`; running a handler (its frame on the
stack, ``rt_sigreturn``, the alternate stack, faults) is
:mod:`minikvm.syscalls.signal_handlers`.  Both build on this module, and
the file, time, poll and futex calls reach it for :func:`sleep` and
:func:`broken_pipe`.

Signals follow Linux, because C libraries and programs lean on them:

* A signal the program sends itself (``kill``, ``tgkill``, ``raise``), its
  alarm (``alarm``, ``setitimer``), SIGPIPE before an EPIPE, and a fault
  of the CPU (SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP) take their
  *action*: ignored (``SIG_IGN``, or a signal whose default is to be
  ignored) it vanishes; blocked it waits in :attr:`Process.signal_pending`;
  with the default action it ends the run, reported like a shell would
  (``SIGABRT: … at rip=… <raise+…>``, exit 128+N); with a handler, the
  handler runs (:mod:`minikvm.syscalls.signal_handlers`).
* **When** a handler starts: a signal only becomes *ready*; it is acted on
  where Linux would, on the way back to user mode — after the system call
  that raised or unblocked it (the dispatcher checks
  :attr:`Process.signal_work`, see
  :func:`~minikvm.syscalls.signal_handlers.deliver_on_return`), or right
  away for a fault (:func:`~minikvm.syscalls.signal_handlers.deliver_fault`,
  called by the machine at an exception exit).  Several ready signals
  stack several frames, the highest-numbered handler running first, as on
  Linux.
* Waiting (``pause``, ``rt_sigsuspend``, ``nanosleep``, ``poll``, futex
  waits) is done by :func:`sleep`, which delivers a due alarm and returns
  EINTR when a signal with a handler is ready.

* Signals sent to ``minikvm run`` from outside — Ctrl-C, ``kill -TERM``, a
  window resize, Ctrl-Z, ``fg`` (:data:`minikvm.machine.outside.FORWARDED`)
  — are the program's: :func:`take_outside_signals` delivers each as
  above, with ``si_pid`` 0 (the sender is outside the sandbox, as a
  process outside a pid namespace shows).  A default *stop* action
  (SIGTSTP, SIGTTIN, SIGTTOU, SIGSTOP) of a signal from outside stops
  minikvm itself, so the user's shell sees the job stopped, and ``fg``
  continues it with SIGCONT.  A stop the program sends *itself* is
  discarded (Linux does the same for an orphaned process group): stopping
  minikvm would stop the clock of its ``--timeout`` too.
* A wait on a host fd (a read of a terminal or of a pipe from the host:
  :func:`wait_for_host_fd`) that a signal with a handler interrupts is
  *restarted* after the handler when its action has ``SA_RESTART``, and
  fails with EINTR otherwise; one interrupted by a signal with no handler
  (it stopped the program, say) is restarted — Linux's ``-ERESTARTSYS``
  (:data:`ERESTARTSYS`, turned into one or the other by
  :func:`~minikvm.syscalls.signal_handlers.deliver_on_return`).  Sleeps,
  ``poll`` and futex waits return EINTR, as they do on Linux.

Limits, each a difference a program could see: the alarm is noticed at
system calls and while waiting, not in a loop that makes none (there is no
timer interrupt into the guest); and a realtime signal does not queue (one
instance pends, like a standard signal).

Signal *n* is bit ``n - 1`` of a 64-bit set (``sigset_t`` in the kernel's
x86-64 ABI is 8 bytes).
"""

from __future__ import annotations

import errno
import os
import select
import signal as signal_module
import time
from typing import TYPE_CHECKING, Union

from minikvm.errors import SyscallError
from minikvm.machine.stops import ProcessKilled
from minikvm.process import sigframe, threads

if TYPE_CHECKING:
    from minikvm.process.process import Process

NSIG = 64
SIG_DFL, SIG_IGN = 0, 1
SIGKILL, SIGSEGV, SIGPIPE, SIGALRM, SIGSTOP = 9, 11, 13, 14, 19
# sa_flags (include/uapi/asm-generic/signal-defs.h, arch/x86/include/uapi/asm/signal.h)
SA_NOCLDSTOP = 0x0000_0001
SA_NOCLDWAIT = 0x0000_0002
SA_SIGINFO = 0x0000_0004
SA_RESTORER = 0x0400_0000
SA_ONSTACK = 0x0800_0000
SA_RESTART = 0x1000_0000
SA_NODEFER = 0x4000_0000
SA_RESETHAND = 0x8000_0000
#: ``siginfo_t`` is 128 bytes.
SIGINFO_SIZE = sigframe.SIGINFO_SIZE
# si_code values (include/uapi/asm-generic/siginfo.h); a fault's own are in
# minikvm.syscalls.signal_handlers
SI_USER = 0          # kill()
SI_KERNEL = 0x80     # the kernel: alarm timers, #GP, int3
SI_TKILL = -6        # tkill()/tgkill(), so raise()
#: Signals whose default action is to do nothing (signal(7)).
IGNORED_BY_DEFAULT = frozenset({17, 18, 23, 28})     # SIGCHLD SIGCONT SIGURG SIGWINCH
#: Signals whose default action is to stop the process: under ``minikvm
#: run`` it stops minikvm (job control, :func:`deliver`); elsewhere (a
#: library's run, ``serve``) there is nobody to continue it, and the program
#: goes on.
STOP_BY_DEFAULT = frozenset({19, 20, 21, 22})        # SIGSTOP SIGTSTP SIGTTIN SIGTTOU
STOP_BITS = sum(1 << (sig - 1) for sig in STOP_BY_DEFAULT)
UNBLOCKABLE = (1 << (SIGKILL - 1)) | (1 << (SIGSTOP - 1))
#: SIGCONT, which ends a stop and discards the stop signals still pending.
SIGCONT = 18
#: The kernel's "interrupted: restart the call if the handler allows"
#: (include/linux/errno.h, never seen by a program): a handler raises it as
#: an errno, and :func:`~minikvm.syscalls.signal_handlers.deliver_on_return`
#: turns it into EINTR or a restart before the program sees it.
ERESTARTSYS = 512
#: What a report says of a signal sent to minikvm from outside.
OUTSIDE_SENDER = "sent to minikvm from outside"
#: How long one slice of a guest's sleep lasts: the granularity with which a
#: sleeping guest notices the run's time limit.
SLEEP_SLICE_SECONDS = 0.05


class RealtimeSignal(int):
    """A signal number Python's :class:`signal.Signals` has no member for
    (32, 33 and 35–63), with the name Linux tools print for it."""

    @property
    def name(self) -> str:
        if int(self) > int(signal_module.SIGRTMIN):
            return f"SIGRTMIN+{int(self) - int(signal_module.SIGRTMIN)}"
        return f"SIG{int(self)}"


SignalNumber = Union[signal_module.Signals, RealtimeSignal]


def signal_number(sig: int) -> SignalNumber:
    """*sig* as a named signal; EINVAL outside 1..64."""
    if not 1 <= sig <= NSIG:
        raise SyscallError(errno.EINVAL, f"signal {sig} is not in 1..{NSIG}")
    try:
        return signal_module.Signals(sig)
    except ValueError:
        return RealtimeSignal(sig)


def bit(sig: int) -> int:
    """Signal *sig*'s bit in a sigset."""
    return 1 << (sig - 1)


def action_of(proc: Process, sig: int) -> tuple[int, int, int, int]:
    """``(handler, flags, restorer, mask)`` of signal *sig*."""
    return proc.signal_actions.get(sig, (SIG_DFL, 0, 0, 0))


def has_handler(handler: int) -> bool:
    """Whether *handler* (an action's first field) is a function to run."""
    return handler not in (SIG_DFL, SIG_IGN)


def ready(proc: Process) -> int:
    """The pending signals the mask does not block."""
    return proc.signal_pending & ~proc.signal_mask


def refresh_work(proc: Process) -> None:
    """Whether the dispatcher must call
    :func:`~minikvm.syscalls.signal_handlers.deliver_on_return` after each
    system call: a signal is ready, or an alarm is set (its deadline is
    compared there)."""
    proc.signal_work = bool(ready(proc)) or proc.alarm_deadline is not None


def sent_info(proc: Process, sig: int, code: int = SI_USER) -> bytes:
    """The ``siginfo_t`` of a signal the process sent itself: its pid and uid."""
    return sigframe.siginfo(sig, code, pid=proc.pid, uid=os.getuid())


# -- the action of a signal ------------------------------------------------------
def deliver(proc: Process, sig: int, sender: str = "sent by the program itself",
            info: bytes | None = None, *, outside: bool = False) -> int:
    """Apply signal *sig* to the process (0 for a signal that was ignored,
    left pending, or is 0 itself — kill's "does it exist?" probe).  A
    signal with a handler is left pending: the handler starts when the
    current system call returns
    (:func:`~minikvm.syscalls.signal_handlers.deliver_on_return`).  *info*
    is its ``siginfo_t`` (default: sent by the process itself, SI_USER)."""
    if sig == 0:
        return 0
    signum = signal_number(sig)
    handler = action_of(proc, sig)[0]
    if sig == SIGCONT:      # it continues the process: the stops still pending are void
        proc.signal_pending &= ~STOP_BITS
    unstoppable = sig in (SIGKILL, SIGSTOP)
    if not unstoppable and (handler == SIG_IGN
                            or handler == SIG_DFL and sig in IGNORED_BY_DEFAULT):
        return 0
    if not unstoppable and (proc.signal_mask & bit(sig) or has_handler(handler)):
        if not proc.signal_pending & bit(sig):   # standard signals do not queue
            proc.signal_pending |= bit(sig)
            proc.signal_info[sig] = info if info is not None else sent_info(proc, sig)
        refresh_work(proc)
        return 0
    if sig in STOP_BY_DEFAULT and (handler == SIG_DFL or unstoppable):
        # Job control: the user's shell sees it stop.  Only a stop sent from
        # outside stops minikvm; one the program sends itself is discarded,
        # or a guest could freeze its own --timeout (it runs in minikvm).
        if proc.family is not None and not proc.family.is_root:
            proc.family.stop(sig)      # a child stops; its parent's wait4 sees it stopped
        elif outside and proc.machine.outside is not None:
            proc.machine.outside.stop_self(sig)
        return 0
    _die(proc, signum, sender, outside=outside)
    return 0  # not reached


def deliver_to_thread(proc: Process, tid: int, sig: int, sender: str, info: bytes) -> int:
    """``tgkill``: signal *sig* for thread *tid*.  The current thread takes
    it as :func:`deliver` does.  Another thread's handler must run in that
    thread (Go's runtime preempts a goroutine by signalling the thread that
    runs it, and checks which thread the handler ran on), so a signal with
    a handler waits in the thread's record until it is on the vCPU
    (``minikvm.process.threads._swap_signal_state``, then
    :func:`~minikvm.syscalls.signal_handlers.deliver_switched_in`); any
    other action is the process's."""
    thread = proc.threads.threads[tid]
    handler = action_of(proc, sig)[0] if 0 < sig <= NSIG else SIG_DFL
    if tid == proc.threads.current or sig == 0 or not has_handler(handler):
        return deliver(proc, sig, sender, info)
    signal_number(sig)                       # EINVAL for a bad number
    thread.signals.setdefault(sig, info)     # standard signals do not queue
    if not thread.signal_mask & bit(sig):
        threads.interrupt(thread)            # a wait it is in ends with EINTR
    return 0


def _die(proc: Process, signum: SignalNumber, sender: str, outside: bool = False) -> None:
    """End the run as if *signum* had killed the process."""
    regs = proc.machine.vcpu.run_state.s.regs.regs
    # At a system-call exit RCX holds where the program's ``syscall`` returns
    # to (RIP is inside minikvm's stub), so RCX says where the program was.
    where = f"rip={regs.rcx:#x}"
    symbol = proc.image.symbols.symbolize(regs.rcx)
    if symbol:
        where += f" <{symbol}>"
    raise ProcessKilled(signum, f"{sender} at {where}",  # type: ignore[arg-type]
                        outside=outside)


def deliver_pending(proc: Process) -> None:
    """Act on the pending signals the mask no longer blocks: those with
    the default action end the run now; those with a handler stay pending
    for :func:`~minikvm.syscalls.signal_handlers.deliver_on_return`."""
    waiting = ready(proc)
    while waiting:
        sig = (waiting & -waiting).bit_length()
        waiting &= ~bit(sig)
        if not has_handler(action_of(proc, sig)[0]):
            proc.signal_pending &= ~bit(sig)
            proc.signal_info.pop(sig, None)
            deliver(proc, sig, "sent by the program itself, delivered when its mask "
                               "unblocked it")
    refresh_work(proc)


def broken_pipe(proc: Process) -> None:
    """What Linux does before a write to a pipe or socket nobody reads
    fails with EPIPE: it sends the writer SIGPIPE, which ends the program
    (status 141, as in ``yes | head -1``) unless it ignores, blocks or
    handles the signal — then the write just fails (and the handler runs
    after it).  For the file and socket calls to call before raising
    EPIPE (``send`` with MSG_NOSIGNAL does not)."""
    deliver(proc, SIGPIPE, "wrote to a pipe with no reader")


# -- the alarm, and waiting -------------------------------------------------------
def deliver_due_alarm(proc: Process, now: float | None = None) -> None:
    """Send SIGALRM if the alarm (``alarm``, ``setitimer(ITIMER_REAL)``) is due."""
    deadline = proc.alarm_deadline
    if deadline is None:
        return
    now = time.monotonic() if now is None else now
    if now < deadline:
        return
    if proc.alarm_interval > 0:
        missed = int((now - deadline) // proc.alarm_interval) + 1
        proc.alarm_deadline = deadline + missed * proc.alarm_interval
    else:
        proc.alarm_deadline = None
    # The kernel's timer sends it (kill_pid_info with SEND_SIG_PRIV): SI_KERNEL.
    deliver(proc, SIGALRM, "the alarm timer expired", sigframe.siginfo(SIGALRM, SI_KERNEL))
    refresh_work(proc)


def sleep(proc: Process, seconds: float | None) -> None:
    """Sleep *seconds* (None: until a signal ends the program or its handler
    must run).

    A due alarm, and the signals sent from outside, are delivered on the
    way; EINTR when a signal with a handler is ready (the handler runs as
    the call returns).  The sleep stops early when the run's time limit is
    reached — the machine then stops before the guest resumes.  Python
    retries a sleep its own SIGALRM handler interrupts, so the sleep is cut
    into slices to notice the limit; a signal from outside ends a slice at
    once (it writes to the wakeup fd the slice waits on).
    """
    deadline = None if seconds is None else time.monotonic() + seconds
    machine = proc.machine
    woken = False
    while True:
        now = time.monotonic()
        take_outside_signals(proc, woken)
        deliver_due_alarm(proc, now)
        if ready(proc):
            raise SyscallError(errno.EINTR, "interrupted by a signal with a handler")
        if machine.stopping or deadline is not None and now >= deadline:
            return
        wake = [t for t in (deadline, proc.alarm_deadline) if t is not None]
        woken = _wait_for_wakeup(proc, max(0.0, min([now + SLEEP_SLICE_SECONDS, *wake]) - now))


def _wait_for_wakeup(proc: Process, seconds: float) -> bool:
    """Sleep up to *seconds*, less if a signal comes from outside (True then)."""
    outside = proc.machine.outside
    if outside is None:
        time.sleep(seconds)
        return False
    poller = select.poll()
    poller.register(outside.wakeup_fd, select.POLLIN)
    return bool(poller.poll(seconds * 1000))


# -- signals from outside ----------------------------------------------------------
#: What a terminal sends its foreground process group (Ctrl-C, Ctrl-\\, Ctrl-Z):
#: every host process of a sandbox gets them, as all are in minikvm's host
#: group; the sandbox's own foreground group (tcsetpgrp) is the one that takes them.
TERMINAL_SIGNALS = (2, 3, 20)       # SIGINT, SIGQUIT, SIGTSTP


def take_outside_signals(proc: Process, woken: bool = False) -> None:
    """Deliver the signals sent to minikvm from outside since the last look
    (:class:`minikvm.machine.outside.OutsideSignals`) as the program's own:
    with ``si_code`` SI_USER and ``si_pid`` 0, the sender being outside
    the sandbox — or, for a signal another process of the sandbox sent
    through the table's mailbox, ``si_pid`` its pid and ``si_uid`` the user's.  *woken*: a wait just saw the wakeup fd readable (the
    flags may not be set yet: look anyway).  Nothing to do — one look at a
    flag — when minikvm does not forward signals or none came."""
    outside = proc.machine.outside
    if outside is None or not (woken or outside.pending()):
        return
    for sig in outside.take():
        if (sig in TERMINAL_SIGNALS and sig not in outside.from_mailbox
                and proc.family is not None and proc.family.in_background(proc.pgid)):
            continue    # the terminal's Ctrl-C or Ctrl-Z: for its foreground group only
        if sig in outside.from_mailbox:     # from another process of the sandbox
            sender = outside.senders.get(sig, 0)
            deliver(proc, sig, f"sent by process {sender} (kill)",
                    sigframe.siginfo(sig, SI_USER, pid=sender, uid=os.getuid()), outside=True)
        else:
            deliver(proc, sig, OUTSIDE_SENDER, sigframe.siginfo(sig, SI_USER), outside=True)
    refresh_work(proc)


def interrupted(proc: Process) -> bool:
    """For a host wait that looks between slices (a socket's): deliver what
    came from outside, then whether the wait must end — a signal's handler
    must run (EINTR), or the run is being stopped."""
    take_outside_signals(proc)
    return proc.machine.stopping or bool(ready(proc))


def wait_for_host_fd(proc: Process, host_fd: int, events: int) -> None:
    """Wait until *host_fd* is ready for *events* (``select.POLLIN``,
    ``POLLOUT``), as a blocking read or write of a terminal or of a host
    pipe waits in Linux — without blocking the host for good: the wait
    watches the wakeup fd of the signals from outside too, and looks at the
    alarm and the time limit every :data:`SLEEP_SLICE_SECONDS`.

    A signal whose handler must run ends it with :data:`ERESTARTSYS` (EINTR,
    or the call made again after the handler with ``SA_RESTART``); the
    time limit with EINTR.  A signal that is ignored, or stops and then
    continues the program, does not end it: the call goes on waiting, as a
    restarted call does on Linux.  Data that is ready counts before a
    signal that came at the same time, as on Linux."""
    outside = proc.machine.outside
    poller = select.poll()
    poller.register(host_fd, events)
    if outside is not None:
        poller.register(outside.wakeup_fd, select.POLLIN)
    milliseconds = 0.0
    while True:
        woken = False
        for fd, _ in poller.poll(milliseconds):
            if fd == host_fd:
                return
            woken = True
        take_outside_signals(proc, woken)
        deliver_due_alarm(proc)
        if ready(proc):
            proc.signal_work = True        # so that the dispatcher turns ERESTARTSYS around
            raise SyscallError(ERESTARTSYS, "interrupted by a signal with a handler")
        if proc.machine.stopping:
            raise SyscallError(errno.EINTR, "interrupted: the run is being stopped")
        milliseconds = SLEEP_SLICE_SECONDS * 1000
