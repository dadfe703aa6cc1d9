"""Layer 5 — threads: many guest threads on the one vCPU, switched by the host.

A program's threads share everything but their registers: one address
space, one fd table, one set of signal dispositions.  minikvm gives them one
vCPU and schedules them itself, like a uniprocessor kernel.  The thread on
the vCPU is *current*; every other thread is a :class:`Thread` record
holding what the vCPU would hold for it:

* the general registers (``kvm_regs``, RIP, RSP and RFLAGS included),
* FS.base — its thread pointer (``__thread`` variables live there) — and GS.base,
* the x87/SSE/AVX state (``KVM_GET_XSAVE``; ``KVM_GET_FPU`` where KVM has no
  XSAVE).  A compiler may keep values in vector registers across an inline
  ``syscall``, and a thread may be interrupted inside ``memcpy``: all of it
  must come back.

Switching copies the current thread's registers out of ``kvm_run`` and the
next one's in.  It happens only at these points:

``wait``
    a system call that cannot finish yet — ``futex`` wait, ``nanosleep``,
    ``sched_yield``, a thread's ``exit`` — saves its thread as it will be
    *after* the call (RIP = RCX, RFLAGS = R11, as the run loop returns a
    call) and records how it will finish: RAX = 0 when woken, ``-ETIMEDOUT``
    at its deadline.  The handler then raises
    :class:`~minikvm.machine.stops.ThreadSwitched` so the run loop does not finish
    the call for the thread that now runs.
``retry``
    a call that waits for something only another thread or the host can
    change — a read of an empty in-guest pipe, ``poll``, a read of a host fd
    with nothing to read — does not say what it waits for: its thread steps
    back onto its ``syscall`` instruction (RIP - 2, RAX = the call's number,
    as Linux restarts a call) and makes the call again once another thread
    has run or, for host fds, once the host sees them ready.
``preempt``
    a thread that never makes a system call (a spin lock waiting for a
    thread that is not running) would keep the vCPU for ever.  Once there
    are two threads, the machine interrupts ``KVM_RUN`` after every
    :data:`TIME_SLICE_SECONDS` of CPU time
    (:meth:`~minikvm.machine.machine.Machine.start_time_slices`) and
    :func:`preempt` switches there — but only when the vCPU stopped at CPL 3
    in the program's own code with no exception on its way in, so the
    saved registers are exactly a user thread's.
``turn``
    under ``--deterministic`` (:mod:`minikvm.process.determinism`), after a
    seeded number of system calls the running thread gives way as at
    ``sched_yield`` (:func:`end_turn`), and ``preempt`` only interrupts a
    thread that made no call during its slice: the interleaving follows
    the seed, not the host's timing.
``idle``
    when no thread can run, the host sleeps until the earliest deadline (a
    timed futex wait, a ``nanosleep``, the alarm), polling the host fds a
    retrying thread waits for.  When nothing could ever
    wake any thread, the run ends as a deadlock (``SIGKILL: deadlock: …``).

Nothing here costs a single-threaded program anything: a program that never
calls ``clone`` never switches and is never interrupted.

Thread ids follow the process id: the main thread's tid is the pid (1000),
the next threads get 1001, 1002 …  ``CLONE_CHILD_CLEARTID``
(``set_tid_address``) is honoured at a thread's exit — write 0, wake one
futex waiter — because that is how ``pthread_join`` (glibc) and musl's
thread-list lock learn a thread is gone.  Signal dispositions are the
process's; masks and alternate stacks are each thread's (below).

Each thread has its own signal mask and ``sigaltstack``, as on Linux: the
process's (``Process.signal_mask``, ``Process.alternate_stack``) are the
current thread's, swapped at every switch (``_swap_signal_state``).
A signal sent to one thread (``tgkill``) waits in that thread's record
until it is on the vCPU, where :attr:`Machine.on_switch_in
<minikvm.machine.machine.Machine.on_switch_in>` runs its handler at once — even in a thread that was preempted in a loop, which is
how Go's runtime preempts a goroutine (``SIGURG``).

Left out: the robust-futex list is recorded but not walked when a thread
dies holding a lock; a thread-directed signal that its thread blocks
becomes the process's once the thread runs; a snapshot can only
be taken of a program with one thread
(:meth:`Snapshot.take <minikvm.snapshot.snapshot.Snapshot.take>`).

The table is plain data (:class:`ThreadTable`): a snapshot copies it and a
reset puts the copy back (:mod:`minikvm.snapshot.process_state`), so nothing in it may
be bound to one process — the hook that runs signal handlers at a switch is
the machine's (:attr:`Machine.on_switch_in <minikvm.machine.machine.Machine.on_switch_in>`,
wired by the dispatcher).  The functions below take the process, whose
machine they switch.
"""

from __future__ import annotations

import ctypes
import enum
import errno
import os
import select
import signal
import struct
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from minikvm import ioctl as k, x86
from minikvm.cpu.layout import SYSCALL_STUB_ADDRESS
from minikvm.errors import KvmError, SyscallError
from minikvm.machine.machine import USER_CPL, USER_RFLAGS_MASK, Machine
from minikvm.machine.stops import ProcessExit, ProcessKilled, ThreadSwitched
from minikvm.x86 import PAGE_SIZE

if TYPE_CHECKING:
    from minikvm.process.process import Process

class ThreadState(str, enum.Enum):
    """Where a guest thread is in the host's scheduler.  A ``str`` enum, so
    that snapshot files store it as its name."""
    RUNNABLE = "runnable"
    WAITING = "waiting"      # on a futex word, perhaps with a deadline
    SLEEPING = "sleeping"    # until its deadline (nanosleep)
    RETRYING = "retrying"    # its call is made again once another thread has run (a pipe)


RUNNABLE, WAITING, SLEEPING, RETRYING = (ThreadState.RUNNABLE, ThreadState.WAITING,
                                         ThreadState.SLEEPING, ThreadState.RETRYING)

#: How many threads a guest may have at once (``clone`` fails with EAGAIN
#: beyond it, as at ``RLIMIT_NPROC``): each costs host memory and a slot in
#: every scheduling decision.
DEFAULT_MAX_THREADS = 256
#: CPU time a thread runs before another may take the vCPU.  Linux's CFS
#: gives a few milliseconds; 10 ms keeps the interruptions (each one a VM
#: exit and a few ioctls) far below 1 % of the time.
TIME_SLICE_SECONDS = 0.01
#: ``FUTEX_BITSET_MATCH_ANY``: what plain FUTEX_WAIT/FUTEX_WAKE use.
MATCH_ANY = 0xFFFF_FFFF
#: ``syscall`` is ``0f 05``: RIP - 2 after it makes the call again (Linux's
#: restart of an interrupted call does the same).
SYSCALL_INSTRUCTION_SIZE = 2
#: While every thread waits and one of them polls host fds (a socket, a
#: terminal), the host polls them for this long at most before it looks at
#: deadlines, the alarm and the time limit again.
HOST_POLL_SLICE_SECONDS = 0.05
#: How much of the wakeup pipe one read takes (:func:`_poll_host`).
WAKEUP_READ = 4096

#: A function that sleeps the host for up to *seconds* (None: until a signal
#: ends the program), delivering a due alarm and returning early when the
#: run is being stopped: :func:`minikvm.syscalls.signals.sleep` with the
#: process bound.
Sleep = Callable[[float | None], None]
#: One watched host fd of :attr:`Thread.watch`: the fd and its poll events.
WATCH_ENTRY = struct.Struct("<ii")


@dataclass
class Thread:
    """One guest thread.  ``regs``, ``fpu``, ``fs_base`` and ``gs_base`` are
    its saved state while another thread has the vCPU (``regs`` is empty
    while it runs)."""
    tid: int
    state: ThreadState = RUNNABLE
    regs: bytes = b""
    fpu: bytes = b""
    fs_base: int = 0
    gs_base: int = 0
    #: ``set_tid_address`` / ``CLONE_CHILD_CLEARTID``: cleared and woken at exit.
    clear_child_tid: int = 0
    robust_list: tuple[int, int] = (0, 0)
    #: While WAITING: the futex word and the FUTEX_WAIT_BITSET mask.
    futex: int = 0
    bitset: int = MATCH_ANY
    #: While WAITING or SLEEPING: when it gives up (``time.monotonic()``), or None.
    deadline: float | None = None
    #: RAX when the deadline passes (``-ETIMEDOUT``, or 0 for a sleep); None
    #: for a RETRYING call that is made again then (a timer expired).
    timeout_result: int | None = 0
    #: ``--deterministic``: how far the virtual clock moves when the deadline
    #: passes (the wait's timeout, in ns, from the guest's own arguments).
    virtual_wait_ns: int = 0
    #: RAX when it runs again after a wait: set by whoever ends the wait.
    result: int | None = None
    #: Its saved RIP is on its ``syscall`` instruction (RETRYING): it makes
    #: the call again, unless the wait ends with a ``result`` instead.
    restart: bool = False
    #: RETRYING in poll/select: the host fds, with their poll events, whose
    #: readiness also ends the wait, packed as :data:`WATCH_ENTRY` s (8
    #: bytes each, not a 2-tuple's ~64: every thread may watch every fd).
    watch: bytes = b""
    #: The deadline of its last RETRYING wait, for the call made again.
    kept_deadline: float | None = None
    #: What it waits for, for a deadlock report ("FUTEX_WAIT on 0x…").
    waiting_for: str = ""
    #: Order of arrival among waiters, so futex wakes are first come, first served.
    wait_order: int = 0
    #: Its signal mask and sigaltstack ``(ss_sp, ss_size)`` while it is off
    #: the vCPU (the current thread's are the process's).
    signal_mask: int = 0
    alternate_stack: tuple[int, int] = (0, 0)
    #: Signals sent to this thread (``tgkill``) while it was off the vCPU:
    #: signal number → its ``siginfo_t``.
    signals: dict[int, bytes] = field(default_factory=dict)
    #: :attr:`Machine.exits <minikvm.machine.machine.Machine>` when it was last put on
    #: the vCPU: a RETRYING thread that made only its one call since has
    #: changed nothing another RETRYING thread waits for.
    loaded_at: int = 0


@dataclass
class ThreadTable:
    """Every live thread of a process, by tid, in creation order."""
    main_tid: int
    max_threads: int = DEFAULT_MAX_THREADS
    threads: dict[int, Thread] = field(default_factory=dict)
    current: int = 0
    next_tid: int = 0
    #: The main thread's status if it called ``exit`` while others ran on:
    #: the process's exit status when the last thread is gone (as Linux reports
    #: the thread-group leader's).
    main_status: int | None = None
    waits: int = 0
    #: Whether ``KVM_GET_XSAVE`` works here (None: not tried yet).
    xsave: bool | None = None

    def __post_init__(self) -> None:
        if not self.threads:
            self.threads[self.main_tid] = Thread(self.main_tid)
            self.current = self.main_tid
            self.next_tid = self.main_tid + 1

    @property
    def running(self) -> Thread:
        """The thread on the vCPU."""
        return self.threads[self.current]

    def __len__(self) -> int:
        return len(self.threads)


# -- moving a thread on and off the vCPU ------------------------------------------------
def _user_regs_after_syscall(machine: Machine) -> k.kvm_regs:
    """The current registers as the program sees them once its system call
    returns: RIP = RCX, RFLAGS = R11 (what ``sysretq`` or the PVM run loop
    does).  RAX still holds the call's number."""
    regs = k.kvm_regs.from_buffer_copy(machine.vcpu.run_state.s.regs.regs)
    regs.rip = regs.rcx
    regs.rflags = (regs.r11 & USER_RFLAGS_MASK) | x86.RFLAGS_FIXED
    return regs


def _save_fpu(table: ThreadTable, machine: Machine) -> bytes:
    if table.xsave is not False:
        try:
            state = bytes(machine.vcpu.get_xsave())
            table.xsave = True
            return state
        except KvmError:
            table.xsave = False
    return bytes(machine.vcpu.get_fpu())


def _load_fpu(table: ThreadTable, machine: Machine, state: bytes) -> None:
    if table.xsave:
        machine.vcpu.set_xsave(k.kvm_xsave.from_buffer_copy(state))
    else:
        machine.vcpu.set_fpu(k.kvm_fpu.from_buffer_copy(state))


def _save(table: ThreadTable, machine: Machine, thread: Thread, regs: k.kvm_regs) -> None:
    """Take *thread* (the current one) off the vCPU, to resume at *regs*."""
    sregs = machine.vcpu.run_state.s.regs.sregs
    thread.regs = bytes(regs)
    thread.fs_base = sregs.fs.base
    thread.gs_base = sregs.gs.base
    thread.fpu = _save_fpu(table, machine)


def _load(table: ThreadTable, machine: Machine, thread: Thread) -> None:
    """Put *thread* on the vCPU: its registers into ``kvm_run`` (loaded by the
    next KVM_RUN), its FS/GS base and FPU state by ioctl."""
    state = machine.vcpu.run_state
    sregs = state.s.regs.sregs
    regs = k.kvm_regs.from_buffer_copy(thread.regs)
    if thread.result is not None:
        if thread.restart:               # it ends with a result: past the syscall
            regs.rip += SYSCALL_INSTRUCTION_SIZE
        regs.rax = thread.result & 0xFFFF_FFFF_FFFF_FFFF
        thread.result = None
    thread.restart = False
    # Hardware VMX/SVM: the system call left the vCPU in the stub at CPL 0,
    # about to sysretq for the *old* thread; the new one resumes in user mode.
    machine.enter_user_mode()
    ctypes.memmove(ctypes.addressof(state.s.regs.regs), bytes(regs), ctypes.sizeof(regs))
    state.kvm_dirty_regs |= k.KVM_SYNC_X86_REGS
    bases = {x86.MSR_FS_BASE: thread.fs_base}
    if thread.gs_base != sregs.gs.base:
        bases[x86.MSR_GS_BASE] = thread.gs_base
    machine.vcpu.set_msrs(bases)
    sregs.fs.base, sregs.gs.base = thread.fs_base, thread.gs_base
    _load_fpu(table, machine, thread.fpu)
    thread.regs = thread.fpu = b""
    thread.loaded_at = machine.exits
    table.current = thread.tid


# -- creating threads ---------------------------------------------------------------------
def create(proc: Process, stack: int, tls: int | None, clear_child_tid: int) -> Thread:
    """A new thread that starts where the current one returns from its
    ``clone``: the same registers, except RAX = 0 (the child's result), RSP =
    *stack* (when not 0) and FS.base = *tls* (when not None); the same FPU
    state.  It is runnable but does not run yet: the caller carries on.
    EAGAIN beyond :attr:`ThreadTable.max_threads`."""
    table: ThreadTable = proc.threads
    machine = proc.machine
    if len(table) >= table.max_threads:
        raise SyscallError(errno.EAGAIN, f"the guest already has {len(table)} threads, the "
                                         f"most it may have (--max-threads {table.max_threads})")
    regs = _user_regs_after_syscall(machine)
    regs.rax = 0
    if stack:
        regs.rsp = stack
    sregs = machine.vcpu.run_state.s.regs.sregs
    # In a tree of processes, tids come from the sandbox's one pid space.
    tid = proc.new_id() if proc.new_id is not None else table.next_tid
    thread = Thread(tid, regs=bytes(regs), fpu=_save_fpu(table, machine),
                    fs_base=sregs.fs.base if tls is None else tls, gs_base=sregs.gs.base,
                    clear_child_tid=clear_child_tid, signal_mask=proc.signal_mask)
    table.next_tid = max(table.next_tid, tid) + 1
    table.threads[thread.tid] = thread
    if len(table) == 2:
        machine.start_time_slices(TIME_SLICE_SECONDS, lambda: preempt(proc))
    return thread


# -- choosing who runs ------------------------------------------------------------------------
def _expire(proc: Process, now: float) -> None:
    """Wake every waiting or sleeping thread whose deadline has passed.
    Under ``--deterministic`` the virtual clock moves on by the longest of
    their timeouts: the time they waited for has passed."""
    waited = 0
    for thread in proc.threads.threads.values():
        if thread.state != RUNNABLE and thread.deadline is not None and now >= thread.deadline:
            if thread.timeout_result is not None:
                waited = max(waited, thread.virtual_wait_ns)
            _make_runnable(thread, thread.timeout_result)
    if waited and proc.determinism is not None:
        proc.determinism.clock.advance(waited)


def _make_runnable(thread: Thread, result: int | None) -> None:
    """End *thread*'s wait: with *result* in RAX, or (None, a RETRYING
    thread) by making its call again."""
    thread.state = RUNNABLE
    thread.result = result
    thread.deadline = None
    thread.virtual_wait_ns = 0
    thread.futex = 0
    thread.watch = b""
    thread.waiting_for = ""


def _next_runnable(table: ThreadTable) -> Thread | None:
    """Round robin: the first runnable thread after the current one in
    creation order, the current one last."""
    order = list(table.threads)
    start = order.index(table.current) + 1 if table.current in table.threads else 0
    for tid in order[start:] + order[:start]:
        if table.threads[tid].state == RUNNABLE:
            return table.threads[tid]
    return None


def _retry_others(table: ThreadTable, me: Thread, machine: Machine) -> None:
    """*me* is leaving the vCPU: the RETRYING threads may try their calls
    again — unless *me* only retried a call of its own and failed, which
    changed nothing (otherwise two readers of empty pipes would take turns
    for ever instead of being reported as a deadlock)."""
    if me.state == RETRYING and machine.exits - me.loaded_at <= 1:
        return
    for thread in table.threads.values():
        if thread.state == RETRYING and thread is not me:
            _make_runnable(thread, None)


def _poll_host(watchers: list[Thread], seconds: float, wakeup_fd: int | None = None) -> None:
    """Wait up to *seconds* for a host fd one of *watchers* polls; those
    whose fds are ready make their calls again.  A byte on *wakeup_fd* (a
    signal from outside: :mod:`minikvm.machine.outside`) ends the wait too,
    and is read here: Python writes one for every signal it handles, the
    time slices' SIGALRM too, which no one else takes — left there, it
    ended every later wait at once (an idle Tk program used 60% of a CPU).
    What arrived is in the handlers' flags, which the caller looks at."""
    poller = select.poll()
    if wakeup_fd is not None:
        poller.register(wakeup_fd, select.POLLIN)
    for thread in watchers:
        for host_fd, events in WATCH_ENTRY.iter_unpack(thread.watch):
            poller.register(host_fd, events)
    ready = {host_fd for host_fd, _ in poller.poll(max(0.0, seconds) * 1000)}
    if wakeup_fd is not None and wakeup_fd in ready:
        try:
            while os.read(wakeup_fd, WAKEUP_READ):
                pass
        except OSError:                   # BlockingIOError: empty now
            pass
    for thread in watchers:
        if any(host_fd in ready for host_fd, _ in WATCH_ENTRY.iter_unpack(thread.watch)):
            _make_runnable(thread, None)


def _deadlock(table: ThreadTable) -> BaseException:
    if len(table) == 1:
        thread = next(iter(table.threads.values()))
        return ProcessKilled(signal.SIGKILL, f"deadlock: {thread.waiting_for} with no "
                             "timeout, and no other thread to wake it")
    waits = "; ".join(f"thread {t.tid}: {t.waiting_for}" for t in table.threads.values())
    return ProcessKilled(signal.SIGKILL, f"deadlock: all {len(table)} threads wait and none "
                         f"can wake another ({waits})")


def _choose(proc: Process, me: Thread, sleep: Sleep) -> Thread | None:
    """The thread to run next after *me* (the caller), sleeping the host
    while none can run.  None when the run is being stopped (time limit)
    during that sleep; the process dies on a deadlock.  A signal whose
    handler must run interrupts a wait: *me*'s own (EINTR raised through),
    or, if *me* has exited, the first waiting thread's."""
    table: ThreadTable = proc.threads
    run_state = proc.machine.vcpu.run_state
    _retry_others(table, me, proc.machine)
    while True:
        now = time.monotonic()
        _expire(proc, now)
        thread = _next_runnable(table)
        if thread is not None:
            return thread
        wakes = [t.deadline for t in table.threads.values() if t.deadline is not None]
        if proc.alarm_deadline is not None:
            wakes.append(proc.alarm_deadline)
        watchers = [t for t in table.threads.values() if t.watch]
        if not wakes and not watchers:
            raise _deadlock(table)
        if proc.machine.stopping:
            return None
        try:
            if watchers:
                outside = proc.machine.outside
                _poll_host(watchers, min([now + HOST_POLL_SLICE_SECONDS, *wakes]) - now,
                           None if outside is None else outside.wakeup_fd)
                sleep(0)                        # the alarm, a handler, the time limit
            else:
                sleep(max(0.0, min(wakes) - now))   # delivers the alarm when it is due
        except SyscallError:
            if me.tid in table.threads:
                raise
            _make_runnable(next(iter(table.threads.values())), -errno.EINTR)
            continue
        if proc.machine.stopping:
            return None


def _switch_from_call(proc: Process, me: Thread, sleep: Sleep) -> int:
    """The current thread *me*'s system call cannot finish now (its record
    says how it will): run another thread.  Returns the call's result instead
    when the thread to run next is *me* itself (woken by its own deadline
    while the host slept)."""
    table: ThreadTable = proc.threads
    try:
        chosen = _choose(proc, me, sleep)
    except SyscallError:                 # a signal's handler must run in *me*
        _make_runnable(me, 0)
        me.result = None
        raise
    if chosen is None:                   # the time limit: the machine stops next
        _make_runnable(me, 0)
        me.result = None
        raise SyscallError(errno.EINTR, "interrupted: the run is being stopped")
    machine = proc.machine
    if chosen is me and me.result is None:
        _make_again(machine, me)         # only a RETRYING wait ends without a result
    if chosen is me:
        result = me.result if me.result is not None else 0
        me.result = None
        if result < 0:
            raise SyscallError(-result, "nobody woke the futex before its timeout")
        return result
    if me.tid in table.threads:          # not for a thread that has exited
        regs = _user_regs_after_syscall(machine)
        if me.state == RETRYING:         # back onto its syscall; RAX still holds the number
            regs.rip -= SYSCALL_INSTRUCTION_SIZE
            me.restart = True
        _save(table, machine, me, regs)
    _swap_signal_state(proc, me, chosen)
    _load(table, machine, chosen)
    if machine.on_switch_in is not None:
        machine.on_switch_in()
    raise ThreadSwitched()


def _swap_signal_state(proc: Process, me: Thread, chosen: Thread) -> None:
    """The per-thread signal state: *me*'s mask and sigaltstack into its
    record, *chosen*'s into the process; the signals sent to *chosen* join
    the pending set (clone leaves the new thread's sigaltstack disabled, as
    Linux does for a thread sharing the address space)."""
    me.signal_mask, me.alternate_stack = proc.signal_mask, proc.alternate_stack
    proc.signal_mask, proc.alternate_stack = chosen.signal_mask, chosen.alternate_stack
    for sig, info in chosen.signals.items():
        if not proc.signal_pending & 1 << (sig - 1):
            proc.signal_pending |= 1 << (sig - 1)
            proc.signal_info[sig] = info
    chosen.signals.clear()
    proc.signal_work = proc.signal_work or bool(proc.signal_pending)


# -- the waits the system calls need --------------------------------------------------------------
def wait_on_futex(proc: Process, address: int, bitset: int, deadline: float | None,
                  sleep: Sleep, *, virtual_ns: int = 0) -> int:
    """FUTEX_WAIT: sleep until :func:`wake` names *address* (result 0) or
    *deadline* passes (ETIMEDOUT; the virtual clock of ``--deterministic``
    then moves on by *virtual_ns*).  The caller has checked the word."""
    table: ThreadTable = proc.threads
    me = table.running
    table.waits += 1
    me.state, me.futex, me.bitset, me.deadline = WAITING, address, bitset, deadline
    me.virtual_wait_ns = virtual_ns
    me.timeout_result, me.wait_order = -errno.ETIMEDOUT, table.waits
    me.waiting_for = f"FUTEX_WAIT on {address:#x}"
    return _switch_from_call(proc, me, sleep)


def sleep_until(proc: Process, deadline: float, sleep: Sleep, *, virtual_ns: int = 0) -> int:
    """nanosleep with other threads around: they run while this one sleeps
    (*virtual_ns*: as :func:`wait_on_futex`)."""
    me = proc.threads.running
    me.state, me.deadline, me.timeout_result = SLEEPING, deadline, 0
    me.virtual_wait_ns = virtual_ns
    me.waiting_for = "sleeping"
    return _switch_from_call(proc, me, sleep)


def yield_cpu(proc: Process, sleep: Sleep) -> int:
    """sched_yield: the next runnable thread goes first; 0 when there is none."""
    table: ThreadTable = proc.threads
    if len(table) == 1:
        return 0
    me = table.running
    if all(t.state != RUNNABLE for t in table.threads.values() if t is not me):
        return 0
    me.result = 0           # still runnable: round robin reaches it last
    return _switch_from_call(proc, me, sleep)


def end_turn(proc: Process, result: int, sleep: Sleep) -> int:
    """``--deterministic``: the current thread's turn is over after a call
    that returned *result* (:meth:`Determinism.switch_now
    <minikvm.process.determinism.Determinism.switch_now>`): the next runnable
    thread goes first, as at ``sched_yield``, and this one gets *result*
    when it runs again.  Returns *result* when no other thread can run."""
    table: ThreadTable = proc.threads
    me = table.running
    if all(t.state != RUNNABLE for t in table.threads.values() if t is not me):
        return result
    me.result = result
    return _switch_from_call(proc, me, sleep)


def retry_after_others(proc: Process, what: str, sleep: Sleep, *,
                       deadline: float | None = None, timeout_result: int | None = 0,
                       watch: tuple[tuple[int, int], ...] = (),
                       wake_at: float | None = None, virtual_ns: int = 0) -> int:
    """The current thread's call would block on something only another
    thread can change — an empty in-guest pipe, a full one — or on host fds
    (*watch*: ``(host fd, poll events)``).  Rather than track what each call
    waits for, the thread steps back onto its ``syscall`` instruction and
    makes the call again once another thread has run or a watched fd is
    ready.  At *deadline* the call returns *timeout_result* instead (poll's
    0; None: the call is made again then); a call made again asks
    :func:`kept_deadline` for it.  At *wake_at*,
    when it comes first, the call is made again (a timer it waits for
    expired: :meth:`OpenFile.wakes_at <minikvm.process.fdtable.OpenFile.wakes_at>`).
    *what* names the wait for a deadlock report; *virtual_ns* is as for
    :func:`wait_on_futex`."""
    me = proc.threads.running
    me.state, me.waiting_for = RETRYING, what
    me.watch = b"".join(WATCH_ENTRY.pack(host_fd, events) for host_fd, events in watch)
    me.deadline, me.timeout_result = deadline, timeout_result
    me.virtual_wait_ns = virtual_ns
    if wake_at is not None and (deadline is None or wake_at < deadline):
        me.deadline, me.timeout_result = wake_at, None
    me.kept_deadline = deadline
    return _switch_from_call(proc, me, sleep)


def interrupt(thread: Thread) -> None:
    """A signal with a handler was sent to *thread*, which is not on the
    vCPU: a wait it is in ends with EINTR (Linux's ``signal_wake_up``), so
    the handler can run once the thread is chosen."""
    if thread.state != RUNNABLE:
        _make_runnable(thread, -errno.EINTR)


def _make_again(machine: Machine, me: Thread) -> None:
    """Have the current thread make its system call again, at once: back
    onto its ``syscall`` instruction, RAX still the call's number."""
    regs = _user_regs_after_syscall(machine)
    regs.rip -= SYSCALL_INSTRUCTION_SIZE
    machine.enter_user_mode()
    state = machine.vcpu.run_state
    ctypes.memmove(ctypes.addressof(state.s.regs.regs), bytes(regs), ctypes.sizeof(regs))
    state.kvm_dirty_regs |= k.KVM_SYNC_X86_REGS
    me.loaded_at = machine.exits
    raise ThreadSwitched()


def kept_deadline(proc: Process) -> float | None:
    """The deadline of the call the current thread is making, if this is
    that call made again after :func:`retry_after_others` (a poll keeps its
    original timeout, as Linux's restart of poll does); None otherwise."""
    me = proc.threads.running
    again = me.kept_deadline is not None and proc.machine.exits == me.loaded_at + 1
    return me.kept_deadline if again else None


def wake(proc: Process, address: int, count: int, bitset: int = MATCH_ANY) -> int:
    """FUTEX_WAKE: let up to *count* threads waiting on *address* (with a
    bitset that meets *bitset*) run again, first come first served; how
    many were woken."""
    woken = 0
    for thread in _waiters(proc.threads, address):
        if woken >= count:
            break
        if thread.bitset & bitset:
            _make_runnable(thread, 0)
            woken += 1
    return woken


def requeue(proc: Process, address: int, count: int, target: int, moves: int) -> int:
    """FUTEX_REQUEUE: wake up to *count* waiters of *address*, move up to
    *moves* of the others to wait on *target* instead; woken + moved."""
    done = 0
    for thread in _waiters(proc.threads, address):
        if done < count:
            _make_runnable(thread, 0)
        elif done < count + moves:
            thread.futex = target
            thread.waiting_for = f"FUTEX_WAIT on {target:#x}"
        else:
            break
        done += 1
    return done


def _waiters(table: ThreadTable, address: int) -> list[Thread]:
    waiting = [t for t in table.threads.values() if t.state == WAITING and t.futex == address]
    return sorted(waiting, key=lambda t: t.wait_order)


def exit_thread(proc: Process, status: int, sleep: Sleep) -> int:
    """The current thread ends (``exit``): clear and wake its
    ``clear_child_tid``, then another thread runs.  The last thread's exit
    ends the process (ProcessExit)."""
    table: ThreadTable = proc.threads
    me = table.running
    if me.tid == table.main_tid:
        table.main_status = status
    if len(table) == 1:
        raise ProcessExit(table.main_status if table.main_status is not None else status)
    if me.clear_child_tid:
        try:
            proc.mm.write_struct(me.clear_child_tid, "<I", 0)
            wake(proc, me.clear_child_tid, 1)
        except SyscallError:
            pass        # Linux ignores a bad address here too
    del table.threads[me.tid]
    if len(table) == 1:
        proc.machine.stop_time_slices()
    return _switch_from_call(proc, me, sleep)


# -- preemption -----------------------------------------------------------------------------------
def at_user_instruction(machine: Machine) -> bool:
    """Whether the vCPU, stopped by an interruption of KVM_RUN, is exactly
    between two instructions of the program: at CPL 3, outside minikvm's
    stub page, with no exception or interrupt being delivered — so that
    the registers in ``kvm_run`` are the program's whole user state, which
    may be saved (a thread switch) or interrupted by a signal handler."""
    state = machine.vcpu.run_state
    if state.s.regs.sregs.cs.dpl != USER_CPL:
        return False
    rip = state.s.regs.regs.rip
    if SYSCALL_STUB_ADDRESS <= rip < SYSCALL_STUB_ADDRESS + PAGE_SIZE:
        return False
    events = machine.vcpu.get_vcpu_events()
    return not (events.exception.injected or events.exception.pending
                or events.interrupt.injected or events.nmi.injected)


def preempt(proc: Process) -> None:
    """At the end of a time slice: give the vCPU to the next runnable thread,
    if the current one stopped in a state that can be saved as it is — at
    CPL 3, outside minikvm's stub page, with no exception or interrupt
    being delivered.  Otherwise it keeps running until the next slice."""
    table: ThreadTable = proc.threads
    machine = proc.machine
    regs = machine.vcpu.run_state.s.regs.regs
    if len(table) < 2 or not at_user_instruction(machine):
        return
    if proc.determinism is not None and not proc.determinism.may_preempt():
        return      # switched at its system calls instead, by the seeded schedule
    _expire(proc, time.monotonic())
    me = table.running
    _retry_others(table, me, machine)
    chosen = _next_runnable(table)
    if chosen is None or chosen is me:
        return
    _save(table, machine, me, k.kvm_regs.from_buffer_copy(regs))
    _swap_signal_state(proc, me, chosen)
    _load(table, machine, chosen)
    if machine.on_switch_in is not None:
        machine.on_switch_in()
