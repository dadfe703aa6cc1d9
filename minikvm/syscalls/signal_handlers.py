"""Layer 6 — running a signal handler: its frame, FPU state, rt_sigreturn, the alternate stack.

A signal whose action is a handler (:mod:`minikvm.syscalls.signals` decides
that) ends up here, because entering and leaving a handler is one piece of
work with one fragile invariant — the frame written on the way in is the
frame checked on the way out — and it is what Linux's
``arch/x86/kernel/signal.c`` does:

* **Entering**: the registers, the mask and the FPU state of the
  interrupted code go into a ``struct rt_sigframe`` on its stack (or the
  ``sigaltstack``; the byte layout is :mod:`minikvm.process.sigframe`), and
  the vCPU resumes at the handler with RDI = the signal, RSI =
  ``&siginfo``, RDX = ``&ucontext``, and RSP pointing at ``sa_restorer``.
  The handler's mask adds ``sa_mask`` and the signal itself (unless
  SA_NODEFER); SA_RESETHAND resets the action.  It happens at three
  points: as a system call returns (:func:`deliver_on_return`, called by
  the dispatcher), when another thread is put on the vCPU
  (:func:`deliver_switched_in`), and at a CPU exception
  (:func:`deliver_fault`, called by the machine at an exception exit).
* **Leaving**: when the handler returns, ``sa_restorer`` calls
  :func:`sys_rt_sigreturn`, which loads everything back from the frame —
  checked first: RFLAGS keeps only the bits a program may change, CS and
  SS stay the user selectors, a frame or FPU state that cannot be read or
  loaded ends the run with SIGSEGV, as on Linux.  ``rt_sigsuspend``'s
  caller's mask comes back only then, as Linux does.
* **Where**: :func:`sys_sigaltstack` sets the alternate stack that
  SA_ONSTACK handlers run on, and ``rt_sigreturn`` restores it from the
  frame.

Limits, each a difference a program could see: SS_AUTODISARM is accepted
but not applied, and a bad frame at ``rt_sigreturn`` ends the run rather
than running a SIGSEGV handler.

On hardware hosts (VMX/SVM) the exit of a system call leaves the vCPU at
CPL 0 in minikvm's stub, about to ``sysretq``; entering a handler there
needs nothing more (``sysretq`` goes to RCX), and ``rt_sigreturn`` and
fault delivery switch CS and SS back to user mode first
(:meth:`minikvm.machine.machine.Machine.enter_user_mode`).  This host kind is not
exercised by the tests here (they run on PVM).
"""

from __future__ import annotations

import ctypes
import errno
import signal as signal_module
import struct
from typing import TYPE_CHECKING

from minikvm import ioctl as k, x86
from minikvm.cpu.segments import USER_CODE64, USER_DATA64
from minikvm.errors import KvmError, SyscallError
from minikvm.machine.crash import ExceptionFrame, describe_exception
from minikvm.machine.machine import USER_RFLAGS_MASK
from minikvm.machine.stops import RegistersLoaded, ProcessKilled
from minikvm.process import sigframe
from minikvm.process import threads
from minikvm.process.threads import SYSCALL_INSTRUCTION_SIZE
from minikvm.syscalls.base import MASK64, PARTIAL, Syscall
from minikvm.syscalls.signals import (ERESTARTSYS, SA_NODEFER, SA_ONSTACK, SA_RESETHAND,
                                      SA_RESTART, SA_RESTORER, SI_KERNEL, SIG_DFL, SIGINFO_SIZE,
                                      UNBLOCKABLE, action_of, bit, deliver, deliver_due_alarm,
                                      has_handler, ready, refresh_work, sent_info, signal_number,
                                      take_outside_signals)
from minikvm.x86 import CANONICAL_LIMIT, CPUID_XSAVE_STATE

if TYPE_CHECKING:
    from minikvm.process.process import Process

#: ``stack_t``: ss_sp, ss_flags (int, then 4 bytes of padding), ss_size.
STACK_T_FORMAT = "<Qi4xQ"
SS_ONSTACK = 1
SS_DISABLE = 2
SS_AUTODISARM = 1 << 31
MINSIGSTKSZ = 2048
# a fault's si_code values (include/uapi/asm-generic/siginfo.h)
SEGV_MAPERR = 1      # no mapping at the address
SEGV_ACCERR = 2      # a mapping, but not that access
FPE_INTDIV = 1
ILL_ILLOPN = 2
BUS_ADRALN = 1
TRAP_TRACE = 2       # a single step (RFLAGS.TF)
#: RFLAGS bits the handler starts with cleared (``handle_signal``): the
#: string direction the ABI wants at a call, no single-stepping, no RF.
HANDLER_CLEARS_RFLAGS = x86.RFLAGS_DF | x86.RFLAGS_TF | x86.RFLAGS_RF
USER_RPL = 3         # the requested privilege level in a user selector
OPCODE_INT3 = 0xCC   # int3: one byte
OPCODE_INT_N = 0xCD  # int $n: two bytes
FCW_INITIAL = 0x037F
MXCSR_INITIAL = 0x1F80


# -- running handlers --------------------------------------------------------------
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
    refresh_work(proc)


def deliver_outside(proc: Process) -> None:
    """KVM_RUN was interrupted and a signal came from outside (Ctrl-C, a
    resize …: :mod:`minikvm.machine.outside`): deliver it, and run its
    handler now if the vCPU stopped between two of the program's
    instructions — a program in a loop that makes no system call gets it
    at once.  Otherwise (it stopped in minikvm's stub, say) the handler
    waits for the next system call's return."""
    take_outside_signals(proc, woken=True)
    if ready(proc) and threads.at_user_instruction(proc.machine):
        deliver_switched_in(proc)


def deliver_on_return(proc: Process, regs: k.kvm_regs, number: int = -1) -> None:
    """Run the handlers of the ready signals as a system call returns.

    The dispatcher calls this after the result is in RAX, when
    :attr:`Process.signal_work` is set.  The interrupted context is the
    program right after its ``syscall``: RIP = RCX, RFLAGS = R11.  The
    handler is entered the same way the program would have been returned
    to — RCX and R11 say where and with which flags — so the run loop
    (PVM) or the stub's ``sysretq`` (hardware) does the rest; RCX and R11
    are scratch registers at a handler's entry anyway.

    A result of ``-ERESTARTSYS`` (a wait a signal interrupted, call
    *number*) becomes what Linux's ``handle_signal`` makes of it: EINTR
    when the first handler to run lacks ``SA_RESTART``; otherwise the call
    is made again — RIP back onto the ``syscall`` instruction, RAX its
    number — after the handler returns, or at once when no handler runs."""
    deliver_due_alarm(proc)
    if regs.rax == -ERESTARTSYS & MASK64:
        _restart_or_eintr(proc, regs, number)
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
    refresh_work(proc)


def _restart_or_eintr(proc: Process, regs: k.kvm_regs, number: int) -> None:
    """Turn an ``-ERESTARTSYS`` result into EINTR or a restart of call *number*."""
    waiting = ready(proc)
    first = (waiting & -waiting).bit_length()
    handler, flags = action_of(proc, first)[:2] if first else (SIG_DFL, 0)
    if (has_handler(handler) and not flags & SA_RESTART) or number < 0:
        regs.rax = -errno.EINTR & MASK64
        return
    regs.rax = number
    regs.rcx = (regs.rcx - SYSCALL_INSTRUCTION_SIZE) & MASK64


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
            if not has_handler(action_of(proc, sig)[0]):
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
    handler, flags, restorer, sa_mask = action_of(proc, sig)
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
    if not frame.from_user_mode or not has_handler(action_of(proc, sig)[0]) \
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
    refresh_work(proc)
    return True


def _load(regs: k.kvm_regs, context: sigframe.sigcontext_64) -> None:
    """Every register of *context* into *regs*, RIP and RFLAGS included."""
    for field, name in sigframe.REGISTERS:
        setattr(regs, name, getattr(context, field))
    regs.rflags = (context.flags & USER_RFLAGS_MASK) | x86.RFLAGS_FIXED


# -- leaving a handler ------------------------------------------------------------
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
    refresh_work(proc)
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


# -- the alternate stack ----------------------------------------------------------
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
    Syscall(15, "rt_sigreturn", sys_rt_sigreturn, ()),
    Syscall(131, "sigaltstack", sys_sigaltstack, ("ptr", "ptr"), PARTIAL,
            "SS_AUTODISARM is accepted but not applied"),
]
