"""Layer 3 — signals sent to minikvm from outside, caught so that the guest gets them.

A user who presses Ctrl-C, resizes the window, or runs ``kill -TERM`` on
``minikvm run`` means the *program*: natively the terminal's driver or
``kill`` would have signalled it.  So while a run goes on, minikvm catches
the signals in :data:`FORWARDED` instead of dying of them, and the signal
code (:func:`minikvm.syscalls.signals.take_outside_signals`) hands each to
the guest as its own signal: its handler runs, or its default action
applies — ending the run, or stopping it (:meth:`OutsideSignals.stop_self`).

Catching is the easy half; being *noticed* is the other.  A signal may
arrive at any of three moments, and each has its way to reach the guest:

* **The vCPU is in KVM_RUN.**  KVM_RUN returns with EINTR; the run loop
  asks :attr:`Machine.on_outside_signal
  <minikvm.machine.machine.Machine.on_outside_signal>` at that exit.
* **The host is between two KVM_RUNs** (handling a system call).  The
  Python handler sets ``kvm_run.immediate_exit``, so the next KVM_RUN
  returns EINTR at once instead of running a guest that may never exit
  again (a loop with no system call).
* **The host waits** for the guest (a ``read`` of a terminal, a ``poll``, a
  ``nanosleep``).  Python's handler cannot cut a wait short (PEP 475
  retries it), so the waits watch :attr:`OutsideSignals.wakeup_fd` too:
  the C-level handler writes a byte there (``signal.set_wakeup_fd``) and
  the wait ends; the signal code then decides, as Linux does, whether the
  call fails with EINTR, is restarted (``SA_RESTART``), or goes on waiting
  (an ignored signal).

What arrived is one flag per signal (:attr:`OutsideSignals.arrived`):
standard signals do not queue, so a flood of them costs nothing but the
flag — no list grows, and the wakeup pipe, once full, drops bytes
(``warn_on_full_buffer=False``) without losing a signal, since the flags
are what counts.

Only ``minikvm run`` installs this (:func:`minikvm.cli.main.run_command`);
``minikvm serve`` keeps its own SIGINT/SIGTERM handlers, which stop the
server, and a library user's process keeps its own.
"""

from __future__ import annotations

import os
import signal
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from minikvm.ioctl import kvm_run

#: The signals a user sends a program through ``minikvm run``: the
#: terminal's (Ctrl-C, Ctrl-\\, Ctrl-Z, a hang-up, a resize), ``kill``'s
#: usual ones, and SIGCONT (``fg``, ``bg``).  SIGKILL and SIGSTOP cannot be
#: caught and act on minikvm itself, which is what they do to a native
#: program too; SIGPIPE of minikvm's own writes is Python's (ignored: the
#: write fails with EPIPE, and the guest gets *its* SIGPIPE from that).
#: SIGCHLD too: a guest process's child runs in a host child of minikvm
#: (:mod:`minikvm.tree`), whose end or stop the host reports so.
FORWARDED = (signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2,
             signal.SIGTERM, signal.SIGCHLD, signal.SIGTSTP, signal.SIGCONT, signal.SIGWINCH)
#: The signal another process of the sandbox sends to say "look in your
#: mailbox" (:class:`minikvm.tree.table.ProcessTable`): the guest signal it
#: carries may be one the host must not get for real (SIGSEGV, SIGALRM, which
#: minikvm's own timer uses), so it travels in the table and this wakes the
#: receiver, whatever it is doing, as the signals above do.
MAILBOX_SIGNAL = signal.SIGRTMIN + 3
#: The most bytes :meth:`OutsideSignals.take` reads from the wakeup pipe at once.
WAKEUP_DRAIN = 4096


class OutsideSignals:
    """The handlers for :data:`FORWARDED`, installed by :meth:`install`
    and removed by :meth:`uninstall`, and what arrived since the last
    :meth:`take`.  *run_state* is the vCPU's ``kvm_run`` (its
    ``immediate_exit`` is set by each handler); *stopping* says whether
    the run is being stopped (the time limit), when ``immediate_exit``
    must stay set."""

    def __init__(self, run_state: "kvm_run", stopping: Callable[[], bool],
                 signals: tuple[int, ...] = FORWARDED) -> None:
        self.run_state = run_state
        self.stopping = stopping
        #: The signals caught for the guest: :data:`FORWARDED`, or fewer for
        #: a host process that keeps the others (a ``serve`` worker keeps
        #: SIGTERM and SIGINT for its graceful stop; its requests' processes
        #: need only SIGCHLD and the mailbox).
        self.signals = signals
        #: ``arrived[n]`` is 1 when signal *n* came and was not taken yet: one
        #: store in the handler, so it never interrupts a half-done update.
        self.arrived = bytearray(signal.NSIG)
        self.wakeup_fd = -1
        self._write_fd = -1
        self._previous: dict[int, Any] = {}
        self._previous_wakeup = -1
        #: Empties this process's mailbox (:data:`MAILBOX_SIGNAL`), giving the
        #: signals in it as a mask (bit n-1 for signal n) and the pid that
        #: sent each; None when the process is alone (no process table).
        self.mailbox: Callable[[], tuple[int, dict[int, int]]] | None = None
        #: The signals the last :meth:`take` found in the mailbox (sent by
        #: the sandbox's processes, not by the terminal or the user).
        self.from_mailbox: list[int] = []
        #: Who sent each of :attr:`from_mailbox` (signal → the sender's pid).
        self.senders: dict[int, int] = {}

    # -- installing -------------------------------------------------------------------
    def install(self) -> None:
        """Catch :data:`FORWARDED` (from the main thread, as Python requires)."""
        self.wakeup_fd, self._write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._previous_wakeup = signal.set_wakeup_fd(self._write_fd, warn_on_full_buffer=False)
        for sig in (*self.signals, MAILBOX_SIGNAL):
            self._previous[sig] = signal.signal(sig, self._on_signal)

    def uninstall(self) -> None:
        """Put the previous handlers back; signals arriving from now on act
        on minikvm itself."""
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
        if self._write_fd >= 0:
            signal.set_wakeup_fd(self._previous_wakeup)
            os.close(self._write_fd)
            os.close(self.wakeup_fd)
            self._write_fd = self.wakeup_fd = -1

    def renew_after_fork(self, run_state: "kvm_run") -> None:
        """In a host process just forked (:mod:`minikvm.tree.fork`): the
        handlers stay — a signal arriving now must find them, never the
        default action — but the wakeup pipe was the parent's, so a signal
        to one would wake the other: this process gets a pipe of its own.
        *run_state* is the new vCPU's ``kvm_run``.  What arrived before the
        fork was the parent's; the mailbox is looked at once, in case a
        signal was posted before this process knew its own pid."""
        os.close(self._write_fd)
        os.close(self.wakeup_fd)
        self.wakeup_fd, self._write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(self._write_fd, warn_on_full_buffer=False)
        self.run_state = run_state
        self.arrived[:] = bytes(len(self.arrived))
        self.arrived[MAILBOX_SIGNAL] = 1
        run_state.immediate_exit = 1

    @property
    def installed(self) -> bool:
        return self._write_fd >= 0

    def _on_signal(self, signum: int, frame: object) -> None:
        self.arrived[signum] = 1
        self.run_state.immediate_exit = 1

    # -- taking what arrived ------------------------------------------------------------
    def take(self) -> list[int]:
        """The signals that arrived since the last call, lowest first, each
        once however often it came; clears them and ``immediate_exit``
        (unless the run is being stopped)."""
        try:
            while os.read(self.wakeup_fd, WAKEUP_DRAIN):
                pass
        except (BlockingIOError, OSError):
            pass
        # A byte in the pipe may be ahead of its Python handler: the C part
        # of the handler ran, the Python part waits for the interpreter.
        # pthread_sigmask runs pending Python handlers before it returns.
        signal.pthread_sigmask(signal.SIG_BLOCK, ())
        if not self.stopping():
            self.run_state.immediate_exit = 0
        taken = []
        for sig in self.signals:
            if self.arrived[sig]:
                self.arrived[sig] = 0   # a new one arriving now sets it again: not lost
                taken.append(int(sig))
        self.from_mailbox = []
        if self.arrived[MAILBOX_SIGNAL]:
            self.arrived[MAILBOX_SIGNAL] = 0
            mail, self.senders = self.mailbox() if self.mailbox is not None else (0, {})
            self.from_mailbox = [sig for sig in range(1, signal.NSIG) if mail >> (sig - 1) & 1]
            taken += [sig for sig in self.from_mailbox if sig not in taken]
            taken.sort()
        return taken

    def pending(self) -> bool:
        """Whether a signal arrived that was not taken yet."""
        return any(self.arrived)

    # -- stopping -------------------------------------------------------------------------
    def stop_self(self, sig: int) -> None:
        """Stop minikvm as a default stop action stops a process (SIGTSTP,
        SIGTTIN, SIGTTOU, SIGSTOP): the user's shell sees its job stopped;
        ``fg`` or ``kill -CONT`` continues it, and then this returns (the
        SIGCONT is caught on the way, so the guest gets it too).

        The signal is raised again on minikvm with the default action;
        SIGSTOP is used for SIGSTOP itself, which cannot be caught."""
        if sig == signal.SIGSTOP:
            os.kill(os.getpid(), signal.SIGSTOP)
            return
        caught = sig in self._previous
        previous = signal.signal(sig, signal.SIG_DFL)
        try:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, (sig,))
            os.kill(os.getpid(), sig)      # stops here, until SIGCONT
        finally:
            signal.signal(sig, self._on_signal if caught else previous)


def raise_on_self(sig: int) -> None:
    """End minikvm by signal *sig*, with its default action, after the run
    is over and cleaned up: the user's shell then sees what it sees when a
    native program dies of *sig* (``WIFSIGNALED``).  That matters beyond
    the message: a ``bash`` script whose command dies of SIGINT stops,
    as the user who pressed Ctrl-C wants, while one that only exits 130 goes
    on to the next command.  Core dumps are turned off first: the core
    would be of minikvm's interpreter, not of the program.  Returns only if
    the signal did not end the process (it is blocked or ignored by the
    kernel)."""
    import resource
    try:
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    except (OSError, ValueError):
        pass
    signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, (sig,))
    os.kill(os.getpid(), sig)
