"""Layer 6 — signals: dispositions, masks, pending sets, and running handlers.

Signals follow Linux, because C libraries and programs lean on them:

* ``rt_sigaction`` records the whole ``struct sigaction``, so a library
  that saves and restores an action gets back what it stored.
* A signal the program sends itself (``kill``, ``tgkill``, ``raise``), its
  alarm (``alarm``, ``setitimer``), SIGPIPE before an EPIPE, and a fault
  of the CPU (SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP) take their
  *action*: ignored (``SIG_IGN``, or a signal whose default is to be
  ignored) it vanishes; blocked it waits in :attr:`Process.signal_pending`;
  with the default action it ends the run, reported like a shell would
  (``SIGABRT: … at rip=… <raise+…>``, exit 128+N); with a handler, the
  handler runs.
* **Running a handler** is what Linux's ``arch/x86/kernel/signal.c`` does:
  the registers, the mask and the FPU state of the interrupted code go
  into a ``struct rt_sigframe`` on its stack (or the ``sigaltstack``; the
  byte layout is :mod:`minikvm.process.sigframe`), and the vCPU resumes at the
  handler with RDI = the signal, RSI = ``&siginfo``, RDX = ``&ucontext``,
  and RSP pointing at ``sa_restorer``.  The handler's mask adds
  ``sa_mask`` and the signal itself (unless SA_NODEFER); SA_RESETHAND
  resets the action.  When the handler returns, ``sa_restorer`` calls
  :func:`sys_rt_sigreturn`, which loads everything back from the frame —
  checked first: RFLAGS keeps only the bits a program may change, CS and
  SS stay the user selectors, a frame or FPU state that cannot be read or
  loaded ends the run with SIGSEGV, as on Linux.
* **When** a handler starts: a signal only becomes *ready*; it is acted on
  where Linux would, on the way back to user mode — after the system call
  that raised or unblocked it (the dispatcher checks
  :attr:`Process.signal_work`, see :func:`deliver_on_return`), or right
  away for a fault (:func:`deliver_fault`, called by the machine at an
  exception exit).  Several ready signals stack several frames, the
  highest-numbered handler running first, as on Linux.
* Waiting (``pause``, ``rt_sigsuspend``, ``nanosleep``, ``poll``, futex
  waits) is done by :func:`sleep`, which delivers a due alarm and returns
  EINTR when a signal with a handler is ready; ``rt_sigsuspend`` restores
  its caller's mask only when the handler returns, as Linux does.

Limits, each a difference a program could see: the alarm is noticed at
system calls and while waiting, not in a loop that makes none (there is no
timer interrupt into the guest); an interrupted call is never restarted
(SA_RESTART changes nothing: the calls that can be interrupted here —
sleeps and waits — return EINTR on Linux too); SS_AUTODISARM is accepted
but not applied; a realtime signal does not queue (one instance pends,
like a standard signal); and a bad frame at ``rt_sigreturn`` ends the run
rather than running a SIGSEGV handler.

On hardware hosts (VMX/SVM) the exit of a system call leaves the vCPU at
CPL 0 in minikvm's stub, about to ``sysretq``; entering a handler there
needs nothing more (``sysretq`` goes to RCX), and ``rt_sigreturn`` and
fault delivery switch CS and SS back to user mode first
(:meth:`minikvm.machine.machine.Machine.enter_user_mode`).  This host kind is not
exercised by the tests here (they run on PVM).

Signal *n* is bit ``n - 1`` of a 64-bit set (``sigset_t`` in the kernel's
x86-64 ABI is 8 bytes).
"""

from __future__ import annotations

import ctypes
import errno
import os
import signal as signal_module
import struct
import time
from typing import TYPE_CHECKING, Union

from minikvm import ioctl as k, x86
from minikvm.cpu.segments import USER_CODE64, USER_DATA64
from minikvm.errors import KvmError, SyscallError
from minikvm.linux_abi import SIGSET_SIZE
from minikvm.machine.crash import ExceptionFrame, describe_exception
from minikvm.machine.machine import USER_RFLAGS_MASK
from minikvm.machine.stops import RegistersLoaded, ProcessKilled
from minikvm.process import sigframe, threads
from minikvm.syscalls.base import PARTIAL, Syscall, signed32
from minikvm.syscalls.timeouts import read_timeout
from minikvm.x86 import CANONICAL_LIMIT, CPUID_XSAVE_STATE

if TYPE_CHECKING:
    from minikvm.process.process import Process

NSIG = 64
SIG_BLOCK, SIG_UNBLOCK, SIG_SETMASK = 0, 1, 2
SIG_DFL, SIG_IGN = 0, 1
SIGKILL, SIGSEGV, SIGPIPE, SIGALRM, SIGSTOP = 9, 11, 13, 14, 19
#: ``struct sigaction`` as the kernel reads it: handler, flags, restorer, mask.
SIGACTION_FORMAT = "<QQQQ"
# sa_flags (include/uapi/asm-generic/signal-defs.h, arch/x86/include/uapi/asm/signal.h)
SA_SIGINFO = 0x0000_0004
SA_RESTORER = 0x0400_0000
SA_ONSTACK = 0x0800_0000
SA_RESTART = 0x1000_0000
SA_NODEFER = 0x4000_0000
SA_RESETHAND = 0x8000_0000
#: ``stack_t``: ss_sp, ss_flags (int, then 4 bytes of padding), ss_size.
STACK_T_FORMAT = "<Qi4xQ"
SS_ONSTACK = 1
SS_DISABLE = 2
SS_AUTODISARM = 1 << 31
MINSIGSTKSZ = 2048
#: ``siginfo_t`` is 128 bytes.
SIGINFO_SIZE = sigframe.SIGINFO_SIZE
# si_code values (include/uapi/asm-generic/siginfo.h)
SI_USER = 0          # kill()
SI_KERNEL = 0x80     # the kernel: alarm timers, #GP, int3
SI_TKILL = -6        # tkill()/tgkill(), so raise()
SEGV_MAPERR = 1      # no mapping at the address
SEGV_ACCERR = 2      # a mapping, but not that access
FPE_INTDIV = 1
ILL_ILLOPN = 2
BUS_ADRALN = 1
TRAP_TRACE = 2       # a single step (RFLAGS.TF)
#: Signals whose default action is to do nothing (signal(7)).
IGNORED_BY_DEFAULT = frozenset({17, 18, 23, 28})     # SIGCHLD SIGCONT SIGURG SIGWINCH
#: Signals whose default action is to stop the process.  There is no job
#: control in a sandbox, so stopping is a no-op: the program continues.
STOP_BY_DEFAULT = frozenset({19, 20, 21, 22})        # SIGSTOP SIGTSTP SIGTTIN SIGTTOU
UNBLOCKABLE = (1 << (SIGKILL - 1)) | (1 << (SIGSTOP - 1))
#: How long one slice of a guest's sleep lasts: the granularity with which a
#: sleeping guest notices the run's time limit.
SLEEP_SLICE_SECONDS = 0.05
#: RFLAGS bits the handler starts with cleared (``handle_signal``): the
#: string direction the ABI wants at a call, no single-stepping, no RF.
HANDLER_CLEARS_RFLAGS = x86.RFLAGS_DF | x86.RFLAGS_TF | x86.RFLAGS_RF
USER_RPL = 3         # the requested privilege level in a user selector
OPCODE_INT3 = 0xCC   # int3: one byte
OPCODE_INT_N = 0xCD  # int $n: two bytes
FCW_INITIAL = 0x037F
MXCSR_INITIAL = 0x1F80


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


def _action(proc: Process, sig: int) -> tuple[int, int, int, int]:
    """``(handler, flags, restorer, mask)`` of signal *sig*."""
    return proc.signal_actions.get(sig, (SIG_DFL, 0, 0, 0))


def _has_handler(handler: int) -> bool:
    return handler not in (SIG_DFL, SIG_IGN)


def ready(proc: Process) -> int:
    """The pending signals the mask does not block."""
    return proc.signal_pending & ~proc.signal_mask


def _refresh_work(proc: Process) -> None:
    """Whether the dispatcher must call :func:`deliver_on_return` after each
    system call: a signal is ready, or an alarm is set (its deadline is
    compared there)."""
    proc.signal_work = bool(ready(proc)) or proc.alarm_deadline is not None


def sent_info(proc: Process, sig: int, code: int = SI_USER) -> bytes:
    """The ``siginfo_t`` of a signal the process sent itself: its pid and uid."""
    return sigframe.siginfo(sig, code, pid=proc.pid, uid=os.getuid())


# -- the action of a signal ------------------------------------------------------
def deliver(proc: Process, sig: int, sender: str = "sent by the program itself",
            info: bytes | None = None) -> int:
    """Apply signal *sig* to the process (0 for a signal that was ignored,
    left pending, or is 0 itself — kill's "does it exist?" probe).  A
    signal with a handler is left pending: the handler starts when the
    current system call returns (:func:`deliver_on_return`).  *info* is
    its ``siginfo_t`` (default: sent by the process itself, SI_USER)."""
    if sig == 0:
        return 0
    signum = signal_number(sig)
    handler = _action(proc, sig)[0]
    unstoppable = sig in (SIGKILL, SIGSTOP)
    if not unstoppable and (handler == SIG_IGN
                            or handler == SIG_DFL and sig in IGNORED_BY_DEFAULT):
        return 0
    if not unstoppable and (proc.signal_mask & bit(sig) or _has_handler(handler)):
        if not proc.signal_pending & bit(sig):   # standard signals do not queue
            proc.signal_pending |= bit(sig)
            proc.signal_info[sig] = info if info is not None else sent_info(proc, sig)
        _refresh_work(proc)
        return 0
    if sig in STOP_BY_DEFAULT and (handler == SIG_DFL or unstoppable):
        return 0
    _die(proc, signum, sender)
    return 0  # not reached


def deliver_to_thread(proc: Process, tid: int, sig: int, sender: str, info: bytes) -> int:
    """``tgkill``: signal *sig* for thread *tid*.  The current thread takes
    it as :func:`deliver` does.  Another thread's handler must run in that
    thread (Go's runtime preempts a goroutine by signalling the thread that
    runs it, and checks which thread the handler ran on), so a signal with
    a handler waits in the thread's record until it is on the vCPU
    (``minikvm.process.threads._swap_signal_state``, then
    :func:`deliver_switched_in`); any other action is the process's."""
    thread = proc.threads.threads[tid]
    handler = _action(proc, sig)[0] if 0 < sig <= NSIG else SIG_DFL
    if tid == proc.threads.current or sig == 0 or not _has_handler(handler):
        return deliver(proc, sig, sender, info)
    signal_number(sig)                       # EINVAL for a bad number
    thread.signals.setdefault(sig, info)     # standard signals do not queue
    if not thread.signal_mask & bit(sig):
        threads.interrupt(thread)            # a wait it is in ends with EINTR
    return 0


def deliver_switched_in(proc: Process) -> None:
    """Another thread was just put on the vCPU, its whole user-mode register
    state in ``kvm_run`` (at CPL 3, as a switch leaves it): run the
    handlers of its ready signals before it resumes, the interrupted
    context being exactly those registers — even in the middle of a loop
    that makes no system call."""
    if not ready(proc):
        return
    state = proc.machine.vcpu.run_state
    regs = state.s.regs.regs
    context = sigframe.sigcontext_64()
    for field, name in sigframe.REGISTERS:
        setattr(context, field, getattr(regs, name))
    context.flags = (regs.rflags & USER_RFLAGS_MASK) | x86.RFLAGS_FIXED
    entry = _run_handlers(proc, context)
    if entry is not None:
        _load(regs, entry)
        state.kvm_dirty_regs |= k.KVM_SYNC_X86_REGS
    _refresh_work(proc)


def _die(proc: Process, signum: SignalNumber, sender: str) -> None:
    """End the run as if *signum* had killed the process."""
    regs = proc.machine.vcpu.run_state.s.regs.regs
    # At a system-call exit RCX holds where the program's ``syscall`` returns
    # to (RIP is inside minikvm's stub), so RCX says where the program was.
    where = f"rip={regs.rcx:#x}"
    symbol = proc.image.symbols.symbolize(regs.rcx)
    if symbol:
        where += f" <{symbol}>"
    raise ProcessKilled(signum, f"{sender} at {where}")  # type: ignore[arg-type]


def deliver_pending(proc: Process) -> None:
    """Act on the pending signals the mask no longer blocks: those with
    the default action end the run now; those with a handler stay pending
    for :func:`deliver_on_return`."""
    waiting = ready(proc)
    while waiting:
        sig = (waiting & -waiting).bit_length()
        waiting &= ~bit(sig)
        if not _has_handler(_action(proc, sig)[0]):
            proc.signal_pending &= ~bit(sig)
            proc.signal_info.pop(sig, None)
            deliver(proc, sig, "sent by the program itself, delivered when its mask "
                               "unblocked it")
    _refresh_work(proc)


def broken_pipe(proc: Process) -> None:
    """What Linux does before a write to a pipe or socket nobody reads
    fails with EPIPE: it sends the writer SIGPIPE, which ends the program
    (status 141, as in ``yes | head -1``) unless it ignores, blocks or
    handles the signal — then the write just fails (and the handler runs
    after it).  For the file and socket calls to call before raising
    EPIPE (``send`` with MSG_NOSIGNAL does not)."""
    deliver(proc, SIGPIPE, "wrote to a pipe with no reader")


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
    _refresh_work(proc)


def sleep(proc: Process, seconds: float | None) -> None:
    """Sleep *seconds* (None: until a signal ends the program or its handler
    must run).

    A due alarm is delivered on the way; EINTR when a signal with a handler
    is ready (the handler runs as the call returns).  The sleep stops early
    when the run's time limit is reached — the machine then stops before
    the guest resumes.  Python retries a sleep its own SIGALRM handler
    interrupts, so the sleep is cut into slices to notice the limit.
    """
    deadline = None if seconds is None else time.monotonic() + seconds
    run_state = proc.machine.vcpu.run_state
    while True:
        now = time.monotonic()
        deliver_due_alarm(proc, now)
        if ready(proc):
            raise SyscallError(errno.EINTR, "interrupted by a signal with a handler")
        if run_state.immediate_exit or deadline is not None and now >= deadline:
            return
        wake = [t for t in (deadline, proc.alarm_deadline) if t is not None]
        time.sleep(max(0.0, min([now + SLEEP_SLICE_SECONDS, *wake]) - now))


# -- running handlers --------------------------------------------------------------
def deliver_on_return(proc: Process, regs: k.kvm_regs) -> None:
    """Run the handlers of the ready signals as a system call returns.

    The dispatcher calls this after the result is in RAX, when
    :attr:`Process.signal_work` is set.  The interrupted context is the
    program right after its ``syscall``: RIP = RCX, RFLAGS = R11.  The
    handler is entered the same way the program would have been returned
    to — RCX and R11 say where and with which flags — so the run loop
    (PVM) or the stub's ``sysretq`` (hardware) does the rest; RCX and R11
    are scratch registers at a handler's entry anyway."""
    deliver_due_alarm(proc)
    if ready(proc):
        context = sigframe.sigcontext_64()
        for field, name in sigframe.REGISTERS:
            setattr(context, field, getattr(regs, name))
        context.ip = regs.rcx
        context.flags = (regs.r11 & USER_RFLAGS_MASK) | x86.RFLAGS_FIXED
        entry = _run_handlers(proc, context)
        if entry is not None:
            for field, name in sigframe.REGISTERS:
                setattr(regs, name, getattr(entry, field))
            regs.rcx = entry.ip
            regs.r11 = entry.flags
    _restore_suspended_mask(proc)
    _refresh_work(proc)


def _restore_suspended_mask(proc: Process) -> None:
    """rt_sigsuspend's caller's mask, when no handler took it into its frame."""
    if proc.signal_saved_mask is not None:
        proc.signal_mask = proc.signal_saved_mask
        proc.signal_saved_mask = None


def _run_handlers(proc: Process, context: sigframe.sigcontext_64,
                  first: tuple[int, bytes] | None = None) -> sigframe.sigcontext_64 | None:
    """Push a frame for each ready signal (after *first*, a fault's
    ``(signal, siginfo)``) and return the registers the last handler
    starts with; None if no handler was due after all.  The FPU state is
    saved into the first frame, then cleared (what a frame stacked on top
    saves) and loaded clean for the handler."""
    fpu = _FpuState(proc)
    entered = False
    while True:
        if first is not None:
            sig, info = first
            first = None
        else:
            waiting = ready(proc)
            if not waiting:
                break
            sig = (waiting & -waiting).bit_length()
            proc.signal_pending &= ~bit(sig)
            info = proc.signal_info.pop(sig, None) or sent_info(proc, sig)
            if not _has_handler(_action(proc, sig)[0]):
                deliver(proc, sig, "a pending signal whose action is now the default")
                continue
        context = _push_frame(proc, context, sig, info, fpu)
        fpu.clear()
        entered = True
    if not entered:
        return None
    fpu.reset_for_handler()
    return context


def _push_frame(proc: Process, context: sigframe.sigcontext_64, sig: int, info: bytes,
                fpu: "_FpuState") -> sigframe.sigcontext_64:
    """Write the signal frame for *sig* below *context*'s stack and return
    the registers its handler starts with (``setup_rt_frame`` and
    ``handle_signal`` in arch/x86/kernel/signal*.c)."""
    handler, flags, restorer, sa_mask = _action(proc, sig)
    signum = signal_number(sig)
    if not flags & SA_RESTORER or handler >= CANONICAL_LIMIT:
        # x86-64 Linux has no default return path (no vDSO trampoline for
        # rt_sigreturn): without sa_restorer the frame cannot be set up.
        raise ProcessKilled(signal_module.SIGSEGV, f"cannot run the handler of {signum.name}: "
                            f"its sigaction has no SA_RESTORER (or a bad handler address "
                            f"{handler:#x})")
    saved_mask = proc.signal_mask if proc.signal_saved_mask is None else proc.signal_saved_mask
    proc.signal_saved_mask = None
    area, xsave = fpu.frame_bytes()
    top = sigframe.signal_stack_top(context.sp, bool(flags & SA_ONSTACK), proc.alternate_stack)
    address, fpstate = sigframe.place_frame(top, len(area))

    frame = sigframe.rt_sigframe(pretcode=restorer)
    uc = frame.uc
    uc.uc_flags = (sigframe.UC_SIGCONTEXT_SS | sigframe.UC_STRICT_RESTORE_SS
                   | (sigframe.UC_FP_XSTATE if xsave else 0))
    base, size = proc.alternate_stack
    uc.uc_stack.ss_sp, uc.uc_stack.ss_size = base, size
    uc.uc_stack.ss_flags = (SS_DISABLE if not size else
                            SS_ONSTACK if sigframe.on_alternate_stack(context.sp,
                                                                     proc.alternate_stack)
                            else 0)
    ctypes.memmove(ctypes.addressof(uc.uc_mcontext), ctypes.addressof(context),
                   ctypes.sizeof(context))
    uc.uc_mcontext.cs, uc.uc_mcontext.ss = USER_CODE64.selector, USER_DATA64.selector
    uc.uc_mcontext.fs = uc.uc_mcontext.gs = 0
    uc.uc_mcontext.fpstate = fpstate
    uc.uc_mcontext.oldmask = saved_mask
    uc.uc_sigmask = saved_mask
    ctypes.memmove(frame.info, info, SIGINFO_SIZE)
    try:
        if area:
            proc.mm.write(fpstate, area)
        proc.mm.write(address, bytes(frame))
    except SyscallError as error:
        # Linux: force_sigsegv() — a handler that cannot start ends the program.
        raise ProcessKilled(signal_module.SIGSEGV,
                            f"cannot write the signal frame of {signum.name} at "
                            f"{address:#x} (the stack is not writable: {error})") from None

    proc.signal_mask |= sa_mask | (0 if flags & SA_NODEFER else bit(sig))
    proc.signal_mask &= ~UNBLOCKABLE
    if flags & SA_RESETHAND:
        proc.signal_actions[sig] = (SIG_DFL, flags, restorer, sa_mask)

    entry = sigframe.sigcontext_64.from_buffer_copy(bytes(context))
    entry.di, entry.si, entry.dx = sig, address + sigframe.INFO_OFFSET, address + sigframe.UC_OFFSET
    entry.ax = 0
    entry.sp = address
    entry.ip = handler
    entry.flags &= ~HANDLER_CLEARS_RFLAGS
    entry.trapno = entry.err = entry.cr2 = 0
    return entry


class _FpuState:
    """The vCPU's x87/SSE/AVX state, read once per delivery (KVM_GET_XSAVE)
    and shaped as Linux stores it in a frame."""

    def __init__(self, proc) -> None:
        self.proc = proc
        self.vcpu = proc.machine.vcpu
        try:
            self.state: bytes | None = bytes(self.vcpu.get_xsave())
        except KvmError:
            self.state = None   # no KVM_CAP_XSAVE: frames carry no FPU state
        self.layout = _xsave_layout(proc)

    def frame_bytes(self) -> tuple[bytes, bool]:
        """The FPU area of the next frame, and whether it is XSAVE-shaped."""
        if self.state is None:
            return b"", False
        size, features, _ = self.layout
        return sigframe.fpstate_for_frame(self.state, size, features), size is not None

    def clear(self) -> None:
        """``fpu__clear_user_states`` after a frame saved the state: a handler
        starts with a clean FPU, and a frame stacked on top saves that."""
        if self.state is not None:
            self.state = sigframe.initial_xsave(len(self.state), FCW_INITIAL, MXCSR_INITIAL,
                                                self.layout[2])

    def reset_for_handler(self) -> None:
        """Load the clean FPU into the vCPU (one KVM_SET_XSAVE)."""
        self.clear()
        if self.state is not None:
            self.vcpu.set_xsave(k.kvm_xsave.from_buffer_copy(self.state))


def _xsave_layout(proc: Process) -> tuple[int | None, int, int]:
    """``(xstate_size, xfeatures, mxcsr_mask)`` of this vCPU's frames: the
    size of the standard XSAVE area for XCR0's components when the guest
    has XSAVE enabled (CR4.OSXSAVE), else ``(None, x87|SSE, …)``: an FXSAVE
    area; and the MXCSR bits the CPU allows.  Asked of KVM once per process
    (XCR0 cannot change: XSETBV needs CPL 0), which saves a KVM_GET_XSAVE
    at every rt_sigreturn."""
    if proc.signal_fpu_layout is not None:
        return proc.signal_fpu_layout
    vcpu = proc.machine.vcpu
    try:
        state = bytes(vcpu.get_xsave())
        mask = struct.unpack_from("<I", state, sigframe.FXSAVE_MXCSR_MASK_OFFSET)[0]
    except KvmError:
        mask = 0
    mask = mask or sigframe.MXCSR_DEFAULT_MASK
    layout: tuple[int | None, int, int] = (None, sigframe.XFEATURE_X87_SSE, mask)
    if vcpu.get_sregs().cr4 & x86.CR4_OSXSAVE:
        xcrs = vcpu.get_xcrs()
        xcr0 = next((xcrs.xcrs[i].value for i in range(xcrs.nr_xcrs) if xcrs.xcrs[i].xcr == 0),
                    sigframe.XFEATURE_X87_SSE)
        cpuid = vcpu.get_cpuid2()
        size = sigframe.FXSAVE_SIZE + sigframe.XSAVE_HEADER_SIZE
        for entry in cpuid.entries[:cpuid.nent]:
            # CPUID 0xD sub-leaf i >= 2: component i's size (EAX) and offset (EBX)
            if entry.function == CPUID_XSAVE_STATE and entry.index >= 2 \
                    and xcr0 & (1 << entry.index) and entry.ebx:
                size = max(size, entry.ebx + entry.eax)
        layout = (size, xcr0, mask)
    proc.signal_fpu_layout = layout
    return layout




# -- faults ------------------------------------------------------------------------
#: vector -> si_code, as arch/x86/kernel/traps.c fills them (SI_KERNEL otherwise)
FAULT_CODES = {x86.VECTOR_DE: FPE_INTDIV, x86.VECTOR_DB: TRAP_TRACE, x86.VECTOR_UD: ILL_ILLOPN,
               17: BUS_ADRALN}
#: the vectors whose si_addr is the faulting instruction
FAULTS_AT_RIP = frozenset({x86.VECTOR_DE, x86.VECTOR_DB, x86.VECTOR_UD, 17, x86.VECTOR_XM})


def deliver_fault(proc: Process, frame: ExceptionFrame) -> bool:
    """Run the program's handler for the signal a CPU exception raises
    (the machine calls this at an exception exit from user mode).  False
    when there is none — or it is blocked, as Linux's ``force_sig`` then
    kills — and the crash is reported as before.  The vCPU is at CPL 0 in
    minikvm's exception stub; it is put back in user mode at the handler."""
    report = describe_exception(frame)
    sig = int(report.signal)
    if not frame.from_user_mode or not _has_handler(_action(proc, sig)[0]) \
            or proc.signal_mask & bit(sig):
        return False
    machine = proc.machine
    regs = machine.vcpu.run_state.s.regs.regs
    context = sigframe.sigcontext_64()
    for field, name in sigframe.REGISTERS:
        setattr(context, field, getattr(regs, name))
    context.ip, context.sp = frame.rip, frame.rsp
    context.flags = (frame.rflags & USER_RFLAGS_MASK) | x86.RFLAGS_FIXED
    context.trapno, context.err = frame.vector, frame.error_code
    if frame.vector == x86.VECTOR_PF:
        context.cr2 = frame.cr2
        code = SEGV_ACCERR if proc.mm.find(frame.cr2) is not None else SEGV_MAPERR
        info = sigframe.siginfo(sig, code, address=frame.cr2)
    elif sig == signal_module.SIGTRAP and frame.vector == x86.VECTOR_GP:
        # minikvm's IDT refuses ``int3`` from user mode (#GP naming vector 3),
        # leaving RIP on it; Linux's int3 is a trap: RIP is after it.
        opcode = proc.mm.read(frame.rip, 1)[0]
        context.ip += 1 if opcode == OPCODE_INT3 else 2 if opcode == OPCODE_INT_N else 0
        context.trapno, context.err = x86.VECTOR_BP, 0
        info = sigframe.siginfo(sig, SI_KERNEL, address=0)
    else:
        address = frame.rip if frame.vector in FAULTS_AT_RIP else 0
        info = sigframe.siginfo(sig, FAULT_CODES.get(frame.vector, SI_KERNEL), address=address)
    try:
        entry = _run_handlers(proc, context, (sig, info))
    except ProcessKilled as killed:
        # The handler cannot start (no stack for its frame): Linux kills with
        # SIGSEGV.  Say what the fault was, as the crash report would have.
        fault = describe_exception(frame, proc.image.symbols.symbolize).one_line()
        raise ProcessKilled(killed.signal, f"{fault.split(': ', 1)[1]}; its handler could not "
                                           f"start: {killed.reason}") from None
    assert entry is not None
    machine.enter_user_mode()
    _load(regs, entry)
    machine.vcpu.run_state.kvm_dirty_regs |= k.KVM_SYNC_X86_REGS
    _refresh_work(proc)
    return True


def _load(regs: k.kvm_regs, context: sigframe.sigcontext_64) -> None:
    """Every register of *context* into *regs*, RIP and RFLAGS included."""
    for field, name in sigframe.REGISTERS:
        setattr(regs, name, getattr(context, field))
    regs.rflags = (context.flags & USER_RFLAGS_MASK) | x86.RFLAGS_FIXED


# -- the system calls -------------------------------------------------------------
def sys_rt_sigaction(proc: Process, sig: int, action: int, old: int, size: int) -> int:
    """rt_sigaction(2): set or read a signal's disposition.

    Handlers run, with ``SA_SIGINFO``, ``SA_ONSTACK``, ``SA_NODEFER`` and
    ``SA_RESETHAND``; ``SA_RESTART`` restarts nothing (interrupted calls return
    EINTR).  EINVAL for SIGKILL/SIGSTOP or a sigset size other than 8."""
    sig = signed32(sig)
    signal_number(sig)
    if sig in (SIGKILL, SIGSTOP) and action:
        raise SyscallError(errno.EINVAL, f"the action of signal {sig} cannot be changed")
    if size != SIGSET_SIZE:
        raise SyscallError(errno.EINVAL, f"sigset size {size}, expected {SIGSET_SIZE}")
    new = proc.mm.read_struct(action, SIGACTION_FORMAT) if action else None
    if old:
        proc.mm.write_struct(old, SIGACTION_FORMAT, *_action(proc, sig))
    if new is not None:
        proc.signal_actions[sig] = new
        if new[0] == SIG_IGN or new[0] == SIG_DFL and sig in IGNORED_BY_DEFAULT:
            proc.signal_pending &= ~bit(sig)  # POSIX: setting "ignore" discards it
            proc.signal_info.pop(sig, None)
    return 0


def sys_rt_sigprocmask(proc: Process, how: int, new: int, old: int, size: int) -> int:
    """rt_sigprocmask(2): block, unblock or set the calling thread's signal mask.

    Unblocking a pending signal delivers it on the way out of the call."""
    if size != SIGSET_SIZE:
        raise SyscallError(errno.EINVAL, f"sigset size {size}, expected {SIGSET_SIZE}")
    mask = proc.mm.read_struct(new, "<Q")[0] if new else None
    if old:
        proc.mm.write_struct(old, "<Q", proc.signal_mask)
    if mask is None:
        return 0
    how = signed32(how)
    if how == SIG_BLOCK:
        proc.signal_mask |= mask
    elif how == SIG_UNBLOCK:
        proc.signal_mask &= ~mask
    elif how == SIG_SETMASK:
        proc.signal_mask = mask
    else:
        raise SyscallError(errno.EINVAL, f"how {how} is not SIG_BLOCK, SIG_UNBLOCK or SIG_SETMASK")
    proc.signal_mask &= ~UNBLOCKABLE
    deliver_pending(proc)
    return 0


def sys_rt_sigpending(proc: Process, address: int, size: int) -> int:
    """rt_sigpending(2): the signals pending while blocked."""
    if size > SIGSET_SIZE:
        raise SyscallError(errno.EINVAL, f"sigset size {size}")
    proc.mm.write(address, (proc.signal_pending & proc.signal_mask).to_bytes(8, "little")[:size])
    return 0


def _wait_with_mask(proc: Process, mask: int) -> int:
    """Wait under *mask* until a signal's handler must run (EINTR; the
    handler's frame then saves the caller's mask, which comes back when the
    handler returns) or a signal ends the program (rt_sigsuspend, pause)."""
    saved = proc.signal_mask
    proc.signal_mask = mask & ~UNBLOCKABLE
    try:
        deliver_pending(proc)
        sleep(proc, None)
    except SyscallError as error:
        if error.errno == errno.EINTR and ready(proc):
            proc.signal_saved_mask = saved
            _refresh_work(proc)
        else:
            proc.signal_mask = saved
        raise
    except BaseException:
        proc.signal_mask = saved
        raise
    proc.signal_mask = saved
    raise SyscallError(errno.EINTR, "the run's time limit interrupted the wait")


def sys_rt_sigsuspend(proc: Process, address: int, size: int) -> int:
    """rt_sigsuspend(2): wait for a signal with a temporary mask.

    Only a signal the program sends itself, or its alarm, can arrive."""
    if size != SIGSET_SIZE:
        raise SyscallError(errno.EINVAL, f"sigset size {size}, expected {SIGSET_SIZE}")
    return _wait_with_mask(proc, proc.mm.read_struct(address, "<Q")[0])


def sys_pause(proc: Process) -> int:
    """pause(2): wait for a signal (one the program sends itself, or its alarm)."""
    return _wait_with_mask(proc, proc.signal_mask)


def sys_rt_sigtimedwait(proc: Process, address: int, info: int, timeout: int, size: int) -> int:
    """Take a pending signal of the set, waiting up to *timeout*: only the
    alarm can make one arrive while waiting."""
    if size != SIGSET_SIZE:
        raise SyscallError(errno.EINVAL, f"sigset size {size}, expected {SIGSET_SIZE}")
    wanted = proc.mm.read_struct(address, "<Q")[0] & ~UNBLOCKABLE
    seconds = None
    if timeout:
        seconds = read_timeout(proc, timeout)
    deadline = None if seconds is None else time.monotonic() + seconds
    while True:
        taken = proc.signal_pending & wanted
        if taken:
            sig = (taken & -taken).bit_length()
            proc.signal_pending &= ~bit(sig)
            details = proc.signal_info.pop(sig, None) or sent_info(proc, sig)
            if info:
                proc.mm.write(info, details)
            _refresh_work(proc)
            return sig
        now = time.monotonic()
        if deadline is not None and now >= deadline:
            raise SyscallError(errno.EAGAIN, "no signal arrived in time")
        if proc.machine.vcpu.run_state.immediate_exit:
            raise SyscallError(errno.EINTR, "the run's time limit interrupted the wait")
        # sleep() wakes for the alarm and delivers it: blocked, it becomes
        # pending; a handled signal that is not blocked interrupts (EINTR)
        sleep(proc, SLEEP_SLICE_SECONDS if deadline is None
              else min(SLEEP_SLICE_SECONDS, deadline - now))


def _queued_info(proc: Process, sig: int, info: int) -> bytes:
    """The ``siginfo_t`` a program queues to itself, with its signal number."""
    data = bytearray(proc.mm.read(info, SIGINFO_SIZE))
    struct.pack_into("<i", data, 0, sig)
    return bytes(data)


def sys_rt_sigqueueinfo(proc: Process, pid: int, sig: int, info: int) -> int:
    """rt_sigqueueinfo(2): queue a signal with data, to the process itself only
    (ESRCH for any other pid)."""
    if signed32(pid) != proc.pid:
        raise SyscallError(errno.ESRCH, f"no process {signed32(pid)} in this sandbox")
    sig = signed32(sig)
    return deliver(proc, sig, info=_queued_info(proc, sig, info))


def sys_rt_tgsigqueueinfo(proc: Process, tgid: int, tid: int, sig: int, info: int) -> int:
    """rt_tgsigqueueinfo(2): as :func:`sys_rt_sigqueueinfo`, to a thread of the
    process itself."""
    if signed32(tgid) != proc.pid or signed32(tid) != proc.pid:
        raise SyscallError(errno.ESRCH, "no such thread in this sandbox")
    sig = signed32(sig)
    return deliver(proc, sig, info=_queued_info(proc, sig, info))


def sys_rt_sigreturn(proc: Process) -> int:
    """Return from a signal handler: load the registers, the mask and the
    FPU state saved in the frame ``sa_restorer`` sits on (``rt_sigreturn``
    in arch/x86/kernel/signal_64.c).

    The frame is the guest's to scribble on, so everything is checked on
    the way in: only user-changeable RFLAGS bits are kept (never IOPL, IF,
    NT), CS and SS are the user selectors whatever the frame says, a RIP
    outside the user half of the address space, an unreadable frame or
    FPU state, or an FPU state KVM refuses ends the run with SIGSEGV.

    Unlike any other call, this one sets *every* register, RCX and R11
    included — so it cannot return the usual way (RIP = RCX, RFLAGS = R11).
    It loads the registers itself and raises
    :class:`~minikvm.machine.machine.RegistersLoaded`, which tells the run loop to
    resume the vCPU as it is."""
    machine = proc.machine
    regs = machine.vcpu.run_state.s.regs.regs
    address = (regs.rsp - sigframe.PRETCODE_SIZE) & ((1 << 64) - 1)
    try:
        frame = sigframe.decode_frame(proc.mm.read(address, sigframe.FRAME_SIZE))
    except SyscallError:
        _bad_frame(proc, f"no readable signal frame at {address:#x}")
    uc = frame.uc
    context = uc.uc_mcontext
    if context.ip >= CANONICAL_LIMIT:
        _bad_frame(proc, f"the frame's rip {context.ip:#x} is not a user address")
    # Linux loads CS and SS from the frame (with RPL 3): anything but the
    # user's own segments makes its return to user mode fail, with SIGSEGV.
    if (context.cs | USER_RPL) != USER_CODE64.selector or \
            uc.uc_flags & sigframe.UC_STRICT_RESTORE_SS and \
            (context.ss | USER_RPL) != USER_DATA64.selector:
        _bad_frame(proc, f"the frame asks for segments cs={context.cs:#x} ss={context.ss:#x}; "
                         f"only the program's own ({USER_CODE64.selector:#x}, "
                         f"{USER_DATA64.selector:#x}) can be returned to")
    _restore_fpu(proc, context.fpstate)
    proc.signal_mask = uc.uc_sigmask & ~UNBLOCKABLE
    proc.signal_saved_mask = None
    _restore_alternate_stack(proc, uc.uc_stack, regs.rsp)
    context.flags = (context.flags & USER_RFLAGS_MASK) | x86.RFLAGS_FIXED
    context.trapno = context.err = context.cr2 = 0
    deliver_due_alarm(proc)
    if ready(proc):   # unblocked by the restored mask: their handlers run first
        context = _run_handlers(proc, context) or context
    machine.enter_user_mode()
    _load(regs, context)
    _refresh_work(proc)
    raise RegistersLoaded()


def _bad_frame(proc: Process, why: str) -> None:
    """Linux sends SIGSEGV for a frame it cannot use; minikvm ends the run."""
    raise ProcessKilled(signal_module.SIGSEGV, f"rt_sigreturn: {why}")


def _restore_fpu(proc: Process, fpstate: int) -> None:
    """Load the frame's FPU state (``fpu__restore_sig``), checked by
    :func:`minikvm.process.sigframe.xsave_from_frame`; no state (0) is a clean FPU."""
    vcpu = proc.machine.vcpu
    if not fpstate:
        _FpuState(proc).reset_for_handler()
        return
    size, allowed, mxcsr_mask = _xsave_layout(proc)
    try:
        legacy = proc.mm.read(fpstate, sigframe.FXSAVE_SIZE)
        area, features = legacy, sigframe.XFEATURE_X87_SSE
        found = sigframe.xstate_in_frame(legacy, size)
        if found is not None:
            xstate_size, features = found
            whole = proc.mm.read(fpstate, xstate_size + sigframe.FP_XSTATE_MAGIC2_SIZE)
            if struct.unpack_from("<I", whole, xstate_size)[0] == sigframe.FP_XSTATE_MAGIC2:
                area = whole[:xstate_size]
            else:
                features = sigframe.XFEATURE_X87_SSE
    except SyscallError:
        _bad_frame(proc, f"no readable FPU state at {fpstate:#x}")
    try:
        state = sigframe.xsave_from_frame(area, ctypes.sizeof(k.kvm_xsave), mxcsr_mask,
                                          features, allowed)
    except sigframe.BadFpuState as error:
        _bad_frame(proc, f"the frame's FPU state cannot be loaded: {error}")
    try:
        vcpu.set_xsave(k.kvm_xsave.from_buffer_copy(state))
    except KvmError as error:
        _bad_frame(proc, f"KVM refused the frame's FPU state ({error})")


def _restore_alternate_stack(proc: Process, stack: sigframe.stack_t, sp: int) -> None:
    """``restore_altstack``: the sigaltstack as it was when the signal came.
    Like Linux, it is left alone while the frame itself is on it."""
    if sigframe.on_alternate_stack(sp, proc.alternate_stack):
        return
    try:
        _set_alternate_stack(proc, stack.ss_sp, stack.ss_flags & 0xFFFF_FFFF, stack.ss_size)
    except SyscallError:
        pass   # Linux ignores a uc_stack it cannot apply


def _set_alternate_stack(proc: Process, sp: int, flags: int, size: int) -> None:
    if flags & ~(SS_DISABLE | SS_ONSTACK | SS_AUTODISARM):
        raise SyscallError(errno.EINVAL, f"ss_flags {flags:#x}")
    if flags & SS_DISABLE:
        proc.alternate_stack = (0, 0)
    elif size < MINSIGSTKSZ:
        raise SyscallError(errno.ENOMEM, f"ss_size {size} is below MINSIGSTKSZ ({MINSIGSTKSZ})")
    else:
        proc.alternate_stack = (sp, size)


def sys_sigaltstack(proc: Process, new: int, old: int) -> int:
    """Set or read the alternate stack handlers with SA_ONSTACK run on.
    EPERM while running on it, as on Linux."""
    request = proc.mm.read_struct(new, STACK_T_FORMAT) if new else None
    rsp = proc.machine.vcpu.run_state.s.regs.regs.rsp
    on_it = sigframe.on_alternate_stack(rsp, proc.alternate_stack)
    if old:
        sp, size = proc.alternate_stack
        flags = SS_ONSTACK if on_it else 0 if size else SS_DISABLE
        proc.mm.write_struct(old, STACK_T_FORMAT, sp, flags, size)
    if request is not None:
        if on_it:
            raise SyscallError(errno.EPERM, "cannot change the alternate stack while on it")
        sp, flags, size = request
        _set_alternate_stack(proc, sp, flags & 0xFFFF_FFFF, size)
    return 0


SYSCALLS = [
    Syscall(13, "rt_sigaction", sys_rt_sigaction, ("int", "ptr", "ptr", "uint"), PARTIAL,
            "handlers run (SA_SIGINFO, SA_ONSTACK, SA_NODEFER, SA_RESETHAND); SA_RESTART "
            "restarts nothing: the calls signals interrupt here return EINTR"),
    Syscall(14, "rt_sigprocmask", sys_rt_sigprocmask, ("int", "ptr", "ptr", "uint")),
    Syscall(127, "rt_sigpending", sys_rt_sigpending, ("ptr", "uint")),
    Syscall(128, "rt_sigtimedwait", sys_rt_sigtimedwait, ("ptr", "ptr", "ptr", "uint"), PARTIAL,
            "only signals the program sent itself, or its alarm, can arrive"),
    Syscall(129, "rt_sigqueueinfo", sys_rt_sigqueueinfo, ("int", "int", "ptr"), PARTIAL,
            "only to the process itself"),
    Syscall(297, "rt_tgsigqueueinfo", sys_rt_tgsigqueueinfo, ("int", "int", "int", "ptr"),
            PARTIAL, "only to the process itself"),
    Syscall(130, "rt_sigsuspend", sys_rt_sigsuspend, ("ptr", "uint"), PARTIAL,
            "only signals the program sent itself, or its alarm, can arrive"),
    Syscall(34, "pause", sys_pause, (), PARTIAL,
            "only signals the program sent itself, or its alarm, can arrive"),
    Syscall(15, "rt_sigreturn", sys_rt_sigreturn, ()),
    Syscall(131, "sigaltstack", sys_sigaltstack, ("ptr", "ptr"), PARTIAL,
            "SS_AUTODISARM is accepted but not applied"),
]
