"""Layer 6 — the dispatcher: from a system-call exit to a handler and back.

For every ``syscall`` the guest executes, :class:`Dispatcher` is called
with the synced registers (``kvm_run.s.regs.regs``, no ioctl).  It looks
the number up in a flat list, passes as many argument registers as the
handler takes, and puts the result — or ``-errno`` — in RAX.  This is the
one place where an error becomes ``-errno``.

This runs once per guest system call, so it does as little as it can
(measured in ``docs/explanation/performance.md``): each table slot holds a
*caller* made once, when the entry is added, that reads exactly the
argument registers its handler takes — no tuple of six registers built and
sliced per call.  Tracing and counting take a separate, slower path.

Linux's register convention (``arch/x86/entry/entry_64.S``): number in RAX,
arguments in RDI, RSI, RDX, R10, R8, R9; the result in RAX.
"""

from __future__ import annotations

import errno
import sys
import time
from typing import TYPE_CHECKING, Callable

from minikvm.errors import SyscallError
from minikvm.machine.stops import RegistersLoaded
from minikvm.process import threads
from minikvm.process.vdso import refresh_if_due
from minikvm.syscalls.base import MASK64, Syscall, signed64
from minikvm.syscalls.signal_handlers import (deliver_fault, deliver_on_return, deliver_outside,
                                              deliver_switched_in)
from minikvm.syscalls.signals import sleep
from minikvm.syscalls.table import TABLE_BY_NUMBER
from minikvm.syscalls.trace import Tracer
from minikvm.syscalls.vsyscall import emulate_vsyscall

if TYPE_CHECKING:
    from minikvm.ioctl import kvm_regs
    from minikvm.process.process import Process

TABLE_SIZE = 512  # syscall numbers on x86-64 stay below this
#: How many distinct unknown numbers Process.unknown_syscalls records; the
#: rest still get ENOSYS, uncounted (a guest may try all 2**64).
MAX_UNKNOWN_SYSCALLS_RECORDED = 64

#: A time.monotonic_ns() that never comes: no clock line to refresh.
NEVER = 1 << 100

#: A caller: ``caller(process, regs) -> result`` (see :func:`make_caller`).
Caller = Callable[["Process", "kvm_regs"], int]


def make_caller(handler: Callable[..., int], arity: int) -> Caller:
    """A function that calls *handler* with the process and the first
    *arity* argument registers, read straight from ``kvm_regs``.

    One small function per arity instead of ``handler(process, *args)``
    over a tuple: reading a ctypes field costs about as much as a Python
    call, so reading only the registers a handler takes matters."""
    if arity == 0:
        return lambda process, r: handler(process)
    if arity == 1:
        return lambda process, r: handler(process, r.rdi)
    if arity == 2:
        return lambda process, r: handler(process, r.rdi, r.rsi)
    if arity == 3:
        return lambda process, r: handler(process, r.rdi, r.rsi, r.rdx)
    if arity == 4:
        return lambda process, r: handler(process, r.rdi, r.rsi, r.rdx, r.r10)
    if arity == 5:
        return lambda process, r: handler(process, r.rdi, r.rsi, r.rdx, r.r10, r.r8)
    return lambda process, r: handler(process, r.rdi, r.rsi, r.rdx, r.r10, r.r8, r.r9)


def _default_table() -> tuple[list[Syscall | None], list[Caller | None]]:
    """The entries and callers of :data:`~minikvm.syscalls.table.TABLE_BY_NUMBER`,
    indexed by number."""
    entries: list[Syscall | None] = [None] * TABLE_SIZE
    callers: list[Caller | None] = [None] * TABLE_SIZE
    for number, entry in TABLE_BY_NUMBER.items():
        entries[number] = entry
        callers[number] = make_caller(entry.handler, len(entry.args))
    return entries, callers


#: The whole table's entries and callers, made once: every dispatcher
#: starts from copies of these lists (a snapshot's fork makes a dispatcher
#: each time, and making ~200 callers cost ~0.1 ms of it).  A caller does
#: not depend on the process (it is the caller's first argument), so
#: sharing them is safe; :meth:`Dispatcher.add` changes one dispatcher's copy.
DEFAULT_ENTRIES, DEFAULT_CALLERS = _default_table()


class Dispatcher:
    """Calls the handler for each system call of one process."""

    def __init__(self, process: Process, tracer: Tracer | None = None,
                 count: bool = False) -> None:
        self.process = process
        self.tracer = tracer
        self.counts: dict[str, list[float]] | None = {} if count else None
        #: Whether calls take the slower, observed path (:meth:`_call_observed`):
        #: traced, counted, or ``--deterministic`` (every call ticks the
        #: process's virtual clock, and with threads its schedule may switch:
        #: :mod:`minikvm.process.determinism`) — one test per call for all three.
        self.observed = (tracer is not None or count
                         or (process is not None and process.determinism is not None))
        self.entries: list[Syscall | None] = list(DEFAULT_ENTRIES)
        #: ``callers[n]`` calls ``entries[n].handler`` (kept in step by :meth:`add`).
        self.callers: list[Caller | None] = list(DEFAULT_CALLERS)
        #: When the vDSO's clock line is next measured again (time.monotonic_ns()).
        self.clock_refresh_due = 0
        if process is not None:
            # A CPU exception in the program goes to its signal handler, if any;
            # a thread put on the vCPU runs the handlers of signals sent to it.
            # (A fetch in the legacy vsyscall page is a call, emulated first.)
            process.machine.on_fault = lambda frame: (emulate_vsyscall(self, frame)
                                                      or deliver_fault(process, frame))
            process.machine.on_switch_in = lambda: deliver_switched_in(process)
            # A signal sent to minikvm from outside, noticed at an interrupted KVM_RUN.
            process.machine.on_outside_signal = lambda: deliver_outside(process)

    def add(self, entry: Syscall, *, replace: bool = False) -> None:
        """Handle one more system call in this dispatcher only (the table
        itself is unchanged), e.g. to try a handler before it joins a family::

            dispatcher.add(Syscall(285, "fallocate", sys_fallocate,
                                   ("fd", "int", "long", "long")))

        ``ValueError`` if the number is outside the table, or already handled
        and *replace* is not set.
        """
        if not 0 <= entry.number < TABLE_SIZE:
            raise ValueError(f"syscall number {entry.number} ({entry.name}) is outside "
                             f"0..{TABLE_SIZE - 1}")
        current = self.entries[entry.number]
        if current is not None and not replace:
            raise ValueError(f"syscall {entry.number} is already handled by {current.name}; "
                             "pass replace=True to replace it")
        self._install(entry)

    def _install(self, entry: Syscall) -> None:
        self.entries[entry.number] = entry
        self.callers[entry.number] = make_caller(entry.handler, len(entry.args))

    def __call__(self, regs: "kvm_regs") -> None:
        number = regs.rax
        caller = self.callers[number] if number < TABLE_SIZE else None
        if caller is None:
            self._unknown(regs, number)
            return
        if self.observed:
            entry = self.entries[number]
            args = (regs.rdi, regs.rsi, regs.rdx, regs.r10, regs.r8, regs.r9)[:len(entry.args)]
            result = self._call_observed(entry, args)
            regs.rax = result & MASK64
            process = self.process
            determinism = process.determinism
            if determinism is not None:
                determinism.after_call()
                if (len(process.threads) > 1 and determinism.switch_now()
                        and not process.signal_work):
                    threads.end_turn(process, result, lambda s: sleep(process, s))
            if process.signal_work:
                deliver_on_return(process, regs, number)
            return
        try:
            result = caller(self.process, regs)
        except SyscallError as error:
            result = -error.errno
        except OSError as error:
            result = -(error.errno or errno.EIO)
        except Exception as error:  # a bug in a handler; exits are BaseException
            result = self._handler_bug(self.entries[number], error)
        regs.rax = result & MASK64
        if time.monotonic_ns() >= self.clock_refresh_due:
            self._refresh_clock()
        if self.process.signal_work:   # a signal's handler to run, or an alarm set
            deliver_on_return(self.process, regs, number)

    def _refresh_clock(self) -> None:
        """Measure the vDSO's clock line again (:func:`minikvm.process.vdso.refresh_if_due`):
        checked after every call, one clock read (~50 ns of a ~40 µs call)."""
        process = self.process
        refresh_if_due(process, time.monotonic_ns())
        clock = process.machine.guest_clock
        self.clock_refresh_due = clock.refresh_due if clock is not None and clock.line else NEVER

    def _call_observed(self, entry: Syscall, args: tuple[int, ...]) -> int:
        """The same call, traced and/or timed (``--trace``, ``--summary``)."""
        before = self.tracer.before(self.process, entry, args) if self.tracer else None
        start = time.perf_counter()
        reason = ""
        try:
            result = entry.handler(self.process, *args)  # type: ignore[misc]
        except SyscallError as error:
            result, reason = -error.errno, error.reason
        except OSError as error:
            result = -(error.errno or errno.EIO)
        except Exception as error:  # a bug in a handler; exits are BaseException
            result = self._handler_bug(entry, error)
        except RegistersLoaded:
            # The call returns, with the registers it loaded: a fork's child
            # (RAX 0), execve (0), rt_sigreturn (the restored RAX) — strace
            # shows that value, not "?".
            if self.tracer:
                rax = self.process.machine.vcpu.run_state.s.regs.regs.rax
                self.tracer.after(self.process, entry, args, before, signed64(rax), "")
            raise
        except BaseException:
            if self.tracer:
                self.tracer.unfinished(entry, before)
            raise
        if self.counts is not None:
            stats = self.counts.setdefault(entry.name, [0, 0.0, 0])
            stats[0] += 1
            stats[1] += time.perf_counter() - start
            stats[2] += result < 0
        if self.tracer:
            self.tracer.after(self.process, entry, args, before, result, reason)
        if time.monotonic_ns() >= self.clock_refresh_due:
            self._refresh_clock()
        return result

    def _unknown(self, regs: "kvm_regs", number: int) -> None:
        if self.tracer:
            self.tracer.unknown(number)
        if self.counts is not None:
            # Keyed by the number only inside the table: the guest picks any
            # 64-bit number, and one entry each would be a host-memory leak.
            name = f"syscall_{number}" if number < TABLE_SIZE else "syscall_beyond_the_table"
            stats = self.counts.setdefault(name, [0, 0.0, 0])
            stats[0] += 1
            stats[2] += 1
        recorded = self.process.unknown_syscalls
        if number in recorded or len(recorded) < MAX_UNKNOWN_SYSCALLS_RECORDED:
            recorded[number] = recorded.get(number, 0) + 1
        regs.rax = -errno.ENOSYS & MASK64

    def _handler_bug(self, entry: Syscall, error: Exception) -> int:
        """A handler raised where it should have raised an errno: a bug in
        minikvm, not the guest's fault.  Say so once, give the guest EINVAL."""
        print(f"minikvm: internal error in {entry.name}: {type(error).__name__}: {error} "
              "(please report this); returning EINVAL to the guest", file=sys.stderr)
        return -errno.EINVAL
