"""Layer 3 — a machine that runs one user-mode program, and its run loop.

This is where the pieces meet: a VM with one vCPU in 64-bit long mode, the
kernel area of :mod:`minikvm.cpu.layout` (GDT, IDT, TSS, stubs), the page
tables of an :class:`~minikvm.machine.mm.AddressSpace`, and the loop that runs the
guest until it needs the host.

The guest program runs at CPL 3 and never leaves it for long:

* ``syscall`` jumps to the stub at LSTAR, whose ``out`` exits to the host.
  The host reads the system call from the registers (synced through
  ``kvm_run``, no ioctl), lets Python handle it, writes RAX, and the guest
  resumes after its ``syscall`` — see :meth:`Machine.run`.
* Any exception goes through the IDT to a stub on the IST stack, whose
  ``out`` names the vector; the host reads the CPU's frame and builds a
  crash report (:mod:`minikvm.machine.crash`).

On PVM hosts (``kvm_pvm``) ``syscall`` does not enter ring 0, ``sysretq``
is not emulated, and CPL 0 code is slow; so the host returns the guest
from the syscall itself.  On hardware VMX/SVM the stub's ``sysretq`` does
it.  The CPL seen at the exit tells which case we are in.
"""

from __future__ import annotations

import ctypes
import signal
from types import MethodType
from typing import Callable

from minikvm import ioctl as k, x86
from minikvm.cpu.gdt import GDT_LIMIT, build_long_mode_gdt, tss_kvm_segment
from minikvm.cpu.guestcode import (CALL_RETURN_OFFSET, EXCEPTION_STUB_SIZE, SYSCALL_EXIT_OFFSET,
                                   assemble, call_return, exception_stubs, syscall_entry)
from minikvm.cpu.idt import IDT_LIMIT, Gate, build_idt
from minikvm.cpu.layout import (DEFAULT_MEMORY_SIZE, EXCEPTION_PORT_BASE, EXCEPTION_STUBS_ADDRESS,
                                GDT_ADDRESS, IDT_ADDRESS, IST_STACK_BOTTOM, IST_STACK_TOP,
                                PATCHED_SYSCALL_PORT, SYSCALL_PORT, SYSCALL_STUB_ADDRESS,
                                TSS_ADDRESS)
from minikvm.cpu.segments import KERNEL_CODE64, KERNEL_DATA64, USER_CODE64, USER_DATA64
from minikvm.cpu.tss import Tss
from minikvm.kvm.memory import GuestMemory
from minikvm.kvm.system import Kvm
from minikvm.machine.guest_clock import GuestClock
from minikvm.machine.crash import ExceptionFrame, Symbolizer, describe_exception
from minikvm.machine.mm import AddressSpace
from minikvm.machine.outside import FORWARDED, OutsideSignals
from minikvm.machine.stops import (RegistersLoaded, Stop, StopKind, SyscallHandler, ThreadSwitched,
                                   TimeLimitReached)
from minikvm.machine.syscall_sites import PATCH_SIZE, SyscallSites, patching_enabled
from minikvm.paging import pte_flags
from minikvm.x86 import (PAGE_SIZE, CPUID_EBX_FSGSBASE, CPUID_ECX_XSAVE, CPUID_EXTENDED_FEATURES,
                         CPUID_FEATURES, CPUID_XSAVE_STATE)

MEMORY_SLOT = 0
#: A one-page slot just above the guest's memory, never mapped by any page
#: table: removing it and adding it back is how :meth:`Machine.flush_translations`
#: makes KVM drop every translation (x86 KVM zaps all its shadow pages, or
#: EPT/NPT entries, when any slot goes: ``KVM_X86_QUIRK_SLOT_ZAP_ALL``), at a
#: fraction of the cost of re-adding the big slot, and without touching that
#: slot's dirty log.
FLUSH_SLOT = 1
USER_CPL = 3     # CS.DPL of user code: where a PVM guest still is at the stub's exit
IST_INDEX = 1  # every exception gate uses IST1
#: Where the syscall stub's ``out`` leaves RIP: the sign of a genuine syscall.
SYSCALL_EXIT_RIP = SYSCALL_STUB_ADDRESS + SYSCALL_EXIT_OFFSET
#: Where a function the host calls returns to (see :func:`minikvm.cpu.guestcode.call_return`).
CALL_RETURN_ADDRESS = SYSCALL_STUB_ADDRESS + CALL_RETURN_OFFSET
#: RFLAGS bits a program may set (like SYSRET's mask, minus IOPL, which a
#: hostile guest could otherwise smuggle in through R11).
USER_RFLAGS_MASK = (x86.RFLAGS_CF | x86.RFLAGS_PF | 1 << 4 | x86.RFLAGS_ZF | x86.RFLAGS_SF
                    | x86.RFLAGS_TF | x86.RFLAGS_DF | x86.RFLAGS_OF | x86.RFLAGS_AC
                    | x86.RFLAGS_ID)
#: SYSCALL clears these RFLAGS bits on entry (MSR_SYSCALL_MASK), as Linux does.
SYSCALL_MASK = x86.RFLAGS_TF | x86.RFLAGS_DF | x86.RFLAGS_IF | x86.RFLAGS_AC | x86.RFLAGS_NT
#: STAR: SYSCALL takes CS from bits 47:32 (SS = +8); SYSRET takes bits 63:48
#: and uses +16 for CS and +8 for SS (Intel SDM Vol. 2B "SYSRET").
STAR_VALUE = (KERNEL_DATA64.selector << 48) | (KERNEL_CODE64.selector << 32)
MXCSR_DEFAULT = 0x1F80   # all SIMD exceptions masked, round to nearest
FCW_DEFAULT = 0x037F     # x87: all exceptions masked, 64-bit precision
PAT_DEFAULT = 0x0007_0406_0007_0406
#: The time limit's signal repeats every this many seconds once due.
TIME_LIMIT_TICK = 0.01
#: How many ticks a system call may go on after the time limit before it
#: is interrupted: plenty for a call that does not wait to finish normally.
TIME_LIMIT_GRACE_TICKS = 20
#: The host memory a run may hold beyond its guest's (``--memory``), with
#: ``--max-fds`` at most :data:`HOST_MEMORY_FDS_COVERED` and
#: ``--max-threads`` at most :data:`HOST_MEMORY_THREADS_COVERED`.  It
#: covers the interpreter and minikvm themselves (~24 MiB resident,
#: measured), and every record a guest can make the host keep, each
#: bounded by a Linux limit: mappings by ``vm.max_map_count``
#: (:data:`~minikvm.machine.mm.MAX_MAP_COUNT`, ~13 MiB), the bytes in its
#: pipes (:data:`~minikvm.process.fdtable.PIPE_BUFFERS_LIMIT`, 16 MiB), its
#: epoll registrations (:data:`~minikvm.process.fdtable.EPOLL_MAX_WATCHES`,
#: ~13 MiB), its open files, and its threads with the host fds each one
#: waiting in ``poll`` watches (8 bytes a fd) — the first three at once
#: measured at 47 MiB.  A guest buffer, however large, is reached through
#: views or copied in bounded chunks, never whole.  ``minikvm serve``
#: holds one response more per request, up to
#: :data:`~minikvm.syscalls.requests.MAX_RESPONSE`.  tests/test_hostile.py
#: checks a run's peak resident memory (VmHWM) against ``--memory`` plus
#: this, for every amplifier it knows.
HOST_MEMORY_OVERHEAD = 96 << 20
#: The open files and threads :data:`HOST_MEMORY_OVERHEAD` covers (the
#: threads: ``--max-threads``' default).
HOST_MEMORY_FDS_COVERED = 4096
HOST_MEMORY_THREADS_COVERED = 256
#: What each open file beyond those may add: its host object and fd-table
#: entry (~300 bytes; a pipe's two ends ~800).
HOST_MEMORY_PER_FD = 1 << 10
#: What each thread beyond those may add: its record, saved registers and
#: FPU state (~5 KiB).
HOST_MEMORY_PER_THREAD = 16 << 10
#: What each (thread, fd) pair beyond those may add: one watched host fd of
#: a thread waiting in poll (:data:`minikvm.process.threads.WATCH_ENTRY`).
HOST_MEMORY_PER_WATCH = 8


def host_memory_bound(memory_size: int, max_fds: int,
                      max_threads: int = HOST_MEMORY_THREADS_COVERED) -> int:
    """The most host memory (bytes) a run with *memory_size* bytes of guest
    memory, *max_fds* open files and *max_threads* threads may hold:
    :data:`HOST_MEMORY_OVERHEAD` beyond the guest's own, and more only for
    limits raised above those it covers."""
    covered_pairs = HOST_MEMORY_FDS_COVERED * HOST_MEMORY_THREADS_COVERED
    return (memory_size + HOST_MEMORY_OVERHEAD
            + max(0, max_fds - HOST_MEMORY_FDS_COVERED) * HOST_MEMORY_PER_FD
            + max(0, max_threads - HOST_MEMORY_THREADS_COVERED) * HOST_MEMORY_PER_THREAD
            + max(0, max_fds * max_threads - covered_pairs) * HOST_MEMORY_PER_WATCH)


class Machine:
    """A VM, its memory and one vCPU, set up to run a 64-bit user program."""

    def __init__(self, memory_size: int = DEFAULT_MEMORY_SIZE, *, kvm: Kvm | None = None,
                 dirty_logging: bool = False, manual_protect: bool = False,
                 memory: GuestMemory | None = None,
                 mm: AddressSpace | None = None, cpuid: object | None = None,
                 anonymous_memory: bool = False) -> None:
        """A fresh machine; or, given *memory* and *mm* (a snapshot's copy,
        see :mod:`minikvm.snapshot.snapshot`), a machine over memory that already
        holds the kernel area and page tables: only CPUID is set, and the
        caller loads the registers.  *cpuid* saves asking KVM again.
        *dirty_logging* logs the guest's writes (:meth:`take_dirty_log`);
        *manual_protect* also leaves the logged pages writable until
        :meth:`protect_again` names them (KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2).
        *anonymous_memory*: new memory that is no memfd
        (:class:`~minikvm.kvm.memory.GuestMemory`), for a machine whose
        processes fork and of which no snapshot is taken."""
        self.kvm = kvm or Kvm()
        self.vm = self.kvm.create_vm()
        self.memory = memory or GuestMemory(memory_size, anonymous=anonymous_memory)
        self.slot_flags = k.KVM_MEM_LOG_DIRTY_PAGES if dirty_logging else 0
        self.manual_protect = dirty_logging and manual_protect
        if self.manual_protect:
            # Before the slot exists, so that it is created in this mode.
            self.vm.enable_cap(k.KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2,
                               k.KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE)
        self.vm.set_user_memory_region(MEMORY_SLOT, self.memory, self.slot_flags)
        self._flush_page = GuestMemory(PAGE_SIZE, self.memory.base + self.memory.size,
                                       anonymous=True)
        self.vm.set_user_memory_region(FLUSH_SLOT, self._flush_page)
        if mm is None:
            self.mm = AddressSpace(self.memory)
            self._install_kernel_area()
            self.vcpu = self.vm.create_vcpu(0)
            self._setup_cpu()
        else:
            self.mm = mm
            self.vcpu = self.vm.create_vcpu(0)
            self.vcpu.set_cpuid2(cpuid if cpuid is not None else self.kvm.get_supported_cpuid())
        self.vcpu.enable_sync_regs(k.KVM_SYNC_X86_REGS | k.KVM_SYNC_X86_SREGS)
        self.symbolize: Symbolizer | None = None
        #: The guest TSC's clock line (:mod:`minikvm.machine.guest_clock`), made
        #: by the vDSO of the first process that has one.
        self.guest_clock: GuestClock | None = None
        #: The program's system-call sites, patched to exit once
        #: (:mod:`minikvm.machine.syscall_sites`); not over a snapshot's memory.
        self.syscall_sites = SyscallSites(enabled=mm is None and patching_enabled())
        self.exits = 0
        self._timed_out = False
        #: Called at an exception exit from user mode with the CPU's frame;
        #: True when it resumed the program in a signal handler instead of
        #: the crash being reported
        #: (:func:`minikvm.syscalls.signal_handlers.deliver_fault`).
        self.on_fault: Callable[[ExceptionFrame], bool] | None = None
        #: Called once :mod:`minikvm.process.threads` put another guest thread on the
        #: vCPU, its registers in ``kvm_run``: the signal code runs the
        #: handlers of the signals that thread was sent.  Wired, like
        #: :attr:`on_fault`, by the dispatcher (a lower layer cannot call the
        #: signal code), so the thread table stays plain data.
        self.on_switch_in: Callable[[], None] | None = None
        #: Time slices (:meth:`start_time_slices`): their length, None when
        #: the guest has one thread; the function that switches threads.
        self.time_slice: float | None = None
        self.on_preempt: Callable[[], None] | None = None
        #: Signals sent to minikvm from outside (:meth:`forward_outside_signals`),
        #: None when they act on minikvm itself; and the signal code's function
        #: that hands them to the guest, called at an interrupted KVM_RUN
        #: (wired by the dispatcher, as :attr:`on_switch_in`).
        self.outside: OutsideSignals | None = None
        self.on_outside_signal: Callable[[], None] | None = None
        #: Called at every interrupted KVM_RUN, after the above: a debugger
        #: that asked to stop the program (:mod:`minikvm.debug.session`)
        #: stops it there, where ``kvm_run`` holds its registers.
        self.on_interrupted: Callable[[], None] | None = None
        self._slice_over = False
        self._slices_armed = False
        self._previous_profiler: object = None

    def close(self) -> None:
        """Free the vCPU, the VM and the guest memory."""
        self.vm.close()
        self.mm.page_tables.words.release()
        self.memory.close()
        self._flush_page.close()
        self.kvm.close()

    def start_over_after_fork(self, memory_fd: int | None, cpuid: object) -> None:
        """In a host process just forked from this machine's owner: run on a
        VM and vCPU of its own.

        KVM ties a VM to the host process that made it (every ioctl of it
        from another address space fails with EIO), so a child cannot go on
        with its parent's.  Anonymous memory is the child's already — the
        host's fork made it a copy-on-write copy at the same addresses; a
        memfd's is moved onto *memory_fd*, a copy, at the same host
        addresses (:meth:`GuestMemory.take_over`).  The new VM gets the same
        memory slot and the new vCPU the same CPUID — the caller then loads
        the registers (the vCPU starts in reset state).  The parent's fds
        are only closed here: the parent's VM goes on in the parent."""
        if memory_fd is not None:
            self.memory.take_over(memory_fd)
        self.vm.close()
        self.vm = self.kvm.create_vm()
        self.vm.set_user_memory_region(MEMORY_SLOT, self.memory, self.slot_flags)
        self.vm.set_user_memory_region(FLUSH_SLOT, self._flush_page)
        self.vcpu = self.vm.create_vcpu(0)
        self.vcpu.set_cpuid2(cpuid)
        self.vcpu.enable_sync_regs(k.KVM_SYNC_X86_REGS | k.KVM_SYNC_X86_SREGS)
        # Facts about the parent's vCPU and timers: measured again, armed again.
        self.guest_clock = None
        self.time_slice = None
        self.on_preempt = None
        self._slices_armed = False
        self._timed_out = False

    def __enter__(self) -> "Machine":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the kernel area ------------------------------------------------------
    def _install_kernel_area(self) -> None:
        """Write GDT, IDT, TSS and stubs, and map them (supervisor-only,
        except the syscall stub, which CPL 3 must be able to execute on PVM)."""
        tss = Tss(rsp0=IST_STACK_TOP, ist=[IST_STACK_TOP] + [0] * 6,
                  user_ports=frozenset({SYSCALL_PORT, PATCHED_SYSCALL_PORT}))
        self.tss_size = tss.size
        self.memory.write(GDT_ADDRESS, build_long_mode_gdt(TSS_ADDRESS, tss.size))
        gates = {vector: Gate(offset=EXCEPTION_STUBS_ADDRESS + vector * EXCEPTION_STUB_SIZE,
                              selector=KERNEL_CODE64.selector, ist=IST_INDEX)
                 for vector in range(x86.NUM_EXCEPTION_VECTORS)}
        self.memory.write(IDT_ADDRESS, build_idt(gates))
        self.memory.write(TSS_ADDRESS, tss.encode())
        self.memory.write(SYSCALL_STUB_ADDRESS, assemble(syscall_entry()))
        self.memory.write(CALL_RETURN_ADDRESS, assemble(call_return()))
        self.memory.write(EXCEPTION_STUBS_ADDRESS, exception_stubs())
        data = pte_flags(read=True, write=True, execute=False, user=False)
        tables = self.mm.page_tables
        tables.map(GDT_ADDRESS, GDT_ADDRESS, PAGE_SIZE, data)
        tables.map(IDT_ADDRESS, IDT_ADDRESS, PAGE_SIZE, data)
        tables.map(TSS_ADDRESS, TSS_ADDRESS, PAGE_SIZE, data)
        tables.map(SYSCALL_STUB_ADDRESS, SYSCALL_STUB_ADDRESS, PAGE_SIZE,
                   pte_flags(read=True, write=False, execute=True, user=True))
        tables.map(EXCEPTION_STUBS_ADDRESS, EXCEPTION_STUBS_ADDRESS, PAGE_SIZE,
                   pte_flags(read=True, write=False, execute=True, user=False))
        tables.map(IST_STACK_BOTTOM, IST_STACK_BOTTOM, IST_STACK_TOP - IST_STACK_BOTTOM, data)

    # -- the CPU -------------------------------------------------------------
    def _setup_cpu(self) -> None:
        cpuid = self.kvm.get_supported_cpuid()
        self.vcpu.set_cpuid2(cpuid)
        leaves = {(e.function, e.index): e for e in cpuid.entries[:cpuid.nent]}
        has_xsave = bool(leaves[(CPUID_FEATURES, 0)].ecx & CPUID_ECX_XSAVE)
        extended = leaves.get((CPUID_EXTENDED_FEATURES, 0))
        has_fsgsbase = bool(extended and extended.ebx & CPUID_EBX_FSGSBASE)

        sregs = self.vcpu.get_sregs()
        sregs.cr0 = x86.CR0_PE | x86.CR0_MP | x86.CR0_ET | x86.CR0_NE | x86.CR0_WP | x86.CR0_PG
        sregs.cr4 = x86.CR4_PAE | x86.CR4_OSFXSR | x86.CR4_OSXMMEXCPT
        if has_xsave:
            sregs.cr4 |= x86.CR4_OSXSAVE
        if has_fsgsbase:
            sregs.cr4 |= x86.CR4_FSGSBASE
        sregs.cr3 = self.mm.page_tables.root
        sregs.efer = x86.EFER_SCE | x86.EFER_LME | x86.EFER_LMA | x86.EFER_NXE
        sregs.gdt.base, sregs.gdt.limit = GDT_ADDRESS, GDT_LIMIT
        sregs.idt.base, sregs.idt.limit = IDT_ADDRESS, IDT_LIMIT
        sregs.cs = USER_CODE64.kvm_segment()
        for name in ("ds", "es", "ss", "fs", "gs"):
            setattr(sregs, name, USER_DATA64.kvm_segment())
        sregs.tr = tss_kvm_segment(TSS_ADDRESS, self.tss_size)
        self.vcpu.set_sregs(sregs)

        self.vcpu.set_msrs({
            x86.MSR_STAR: STAR_VALUE,
            x86.MSR_LSTAR: SYSCALL_STUB_ADDRESS,
            x86.MSR_CSTAR: SYSCALL_STUB_ADDRESS,
            x86.MSR_SYSCALL_MASK: SYSCALL_MASK,
            x86.MSR_FS_BASE: 0,
            x86.MSR_GS_BASE: 0,
            x86.MSR_KERNEL_GS_BASE: 0,
            x86.MSR_IA32_CR_PAT: PAT_DEFAULT,
        })
        if has_xsave:
            state = leaves.get((CPUID_XSAVE_STATE, 0))
            supported = state.eax if state else x86.XCR0_X87 | x86.XCR0_SSE
            self.vcpu.set_xcr0(supported & (x86.XCR0_X87 | x86.XCR0_SSE | x86.XCR0_AVX
                                            | x86.XCR0_OPMASK | x86.XCR0_ZMM_HI256
                                            | x86.XCR0_HI16_ZMM))
        fpu = k.kvm_fpu(fcw=FCW_DEFAULT, mxcsr=MXCSR_DEFAULT)
        self.vcpu.set_fpu(fpu)

    def withhold_random_instructions(self) -> bool:
        """Clear RDRAND and RDSEED from the vCPU's CPUID (``--deterministic``):
        libraries that ask CPUID first (OpenSSL, libstdc++'s random_device)
        then take their randomness from ``getrandom``, which the host
        answers.  The instructions themselves still run for a program that
        does not ask.  Before the first KVM_RUN only: KVM refuses a CPUID
        change after it.

        Returns whether KVM took the change.  PVM does not: its
        ``KVM_GET_CPUID2`` reads back the host's leaves whatever was set
        (measured: no bit of leaf 1 can be cleared), and the guest's
        ``cpuid`` shows them."""
        cpuid = self.vcpu.get_cpuid2()
        for index in range(cpuid.nent):
            entry = cpuid.entries[index]     # a view (a slice would be copies)
            if entry.function == CPUID_FEATURES:
                entry.ecx &= ~x86.CPUID_ECX_RDRAND
            elif entry.function == CPUID_EXTENDED_FEATURES and entry.index == 0:
                entry.ebx &= ~x86.CPUID_EBX_RDSEED
        self.vcpu.set_cpuid2(cpuid)
        shown = self.vcpu.get_cpuid2()
        return not any(shown.entries[index].function == CPUID_FEATURES
                       and shown.entries[index].ecx & x86.CPUID_ECX_RDRAND
                       for index in range(shown.nent))

    def set_entry(self, rip: int, rsp: int, **registers: int) -> None:
        """Point the vCPU at the program's first instruction and stack."""
        regs = k.kvm_regs(rip=rip, rsp=rsp, rflags=x86.RFLAGS_FIXED)
        for name, value in registers.items():
            setattr(regs, name, value)
        self.vcpu.set_regs(regs)

    def set_fs_base(self, value: int) -> None:
        """Set FS.base (the thread pointer, for ``arch_prctl(ARCH_SET_FS)``)."""
        self.vcpu.set_msrs({x86.MSR_FS_BASE: value})

    def set_gs_base(self, value: int) -> None:
        """Set GS.base (``arch_prctl(ARCH_SET_GS)``)."""
        self.vcpu.set_msrs({x86.MSR_GS_BASE: value})

    def flush_translations(self, carry_dirty_log: bool = True) -> None:
        """Make the vCPU forget every cached translation.

        After the host removes or weakens a mapping, KVM's copy of it (the
        shadow page tables on PVM, the guest TLB on hardware) may still
        allow the old access: the host wrote the page tables itself, which
        KVM does not see.  Removing a memory slot makes KVM drop everything
        it derived from guest memory; the slot removed and added back is
        the one-page :data:`FLUSH_SLOT`, not the guest's memory: measured
        on PVM, 0.18 ms against 1.8 ms for the 1 GiB slot (whose re-adding
        allocates its per-page metadata again), and an exec pays two.  The
        dirty log of the guest's memory is untouched; with
        *carry_dirty_log* False (a reset that has just restored every page
        in it) it is read and dropped, as a new slot's would be empty.
        """
        if (self.slot_flags & k.KVM_MEM_LOG_DIRTY_PAGES and not carry_dirty_log
                and not self.manual_protect):
            self.vm.get_dirty_log(MEMORY_SLOT)
        self.vm.delete_user_memory_region(FLUSH_SLOT)
        self.vm.set_user_memory_region(FLUSH_SLOT, self._flush_page)
        self.mm.stale_translations = False

    def take_dirty_log(self) -> bytes:
        """The pages the *guest* wrote since the last call: a bitmap, bit
        ``n`` for guest-physical page ``n`` (KVM_GET_DIRTY_LOG; needs
        ``dirty_logging=True``).  Reading it clears it — with
        *manual_protect*, only :meth:`protect_again` does, so the bitmap
        holds every page written since then.  Writes the host makes are
        not in it: KVM only sees the guest's own stores."""
        return self.vm.get_dirty_log(MEMORY_SLOT)

    def protect_again(self, bitmap: bytes) -> None:
        """With *manual_protect*: clear the pages of *bitmap* from the dirty
        log and write-protect them, so that the guest's next write to one
        is logged (KVM_CLEAR_DIRTY_LOG)."""
        self.vm.clear_dirty_log(MEMORY_SLOT, bitmap)

    def return_from_syscall(self) -> None:
        """Finish a system call outside :meth:`run`, exactly as the run loop
        does after ``on_syscall``: on PVM the host returns the guest to RCX
        with RFLAGS from R11; on hardware the stub's ``sysretq`` will.  Used
        when the host answers a pending call later (a snapshot resumed at a
        ``minikvm_wait_request``, a function the host calls).  RAX must
        already hold the result."""
        state = self.vcpu.run_state
        regs = state.s.regs.regs
        if state.s.regs.sregs.cs.dpl == 3:
            regs.rip = regs.rcx
            regs.rflags = (regs.r11 & USER_RFLAGS_MASK) | x86.RFLAGS_FIXED
        state.kvm_dirty_regs = k.KVM_SYNC_X86_REGS

    def enter_user_mode(self) -> None:
        """Put CS and SS back to the user selectors if the vCPU is at CPL 0
        — in an exception stub, or (hardware) in the syscall stub before its
        ``sysretq`` — so that the host can resume the program at a RIP of
        its choosing (a signal handler, ``rt_sigreturn``).  One
        KVM_GET_SREGS/KVM_SET_SREGS pair, only when needed."""
        state = self.vcpu.run_state
        if state.s.regs.sregs.cs.dpl == USER_CPL:
            return
        sregs = self.vcpu.get_sregs()
        sregs.cs = USER_CODE64.kvm_segment()
        sregs.ss = USER_DATA64.kvm_segment()
        self.vcpu.set_sregs(sregs)
        # Mirror them in kvm_run, which return_from_syscall and the run loop read.
        ctypes.memmove(ctypes.addressof(state.s.regs.sregs), ctypes.addressof(sregs),
                       ctypes.sizeof(sregs))

    # -- running ---------------------------------------------------------------
    def run(self, on_syscall: SyscallHandler, timeout: float | None = None) -> Stop:
        """Run the guest until it crashes, times out or KVM fails.

        For each system call, ``on_syscall(regs)`` is called (see
        :class:`~minikvm.machine.stops.SyscallHandler`): it stores the
        result in ``regs.rax`` and the guest resumes after its ``syscall``.
        To end the run (exit), the handler raises a
        :class:`~minikvm.machine.stops.RunLoopExit`; other than the two the
        loop handles itself, it propagates out of here.
        """
        self._timed_out = False
        if timeout is not None:
            self._arm_timer(timeout)
        if self.time_slice is not None:
            self._arm_time_slices()
        try:
            while True:
                try:
                    return self._run_loop(on_syscall)
                except (ThreadSwitched, RegistersLoaded):
                    # Another thread's registers are in kvm_run: run it.  Caught
                    # here, outside the loop, so a system call pays nothing for it.
                    self.vcpu.run_state.kvm_dirty_regs |= k.KVM_SYNC_X86_REGS
        except TimeLimitReached:
            return Stop(StopKind.TIMEOUT, "the time limit was reached")
        finally:
            if timeout is not None:
                self._disarm_timer()
            self._disarm_time_slices()

    def _run_loop(self, on_syscall: SyscallHandler) -> Stop:
        # One pass per guest system call: everything the pass needs is bound
        # to a local first, and nothing is allocated in it (measured in
        # docs/explanation/performance.md).
        vcpu = self.vcpu
        enter = vcpu.enter                  # KVM_RUN, fd and request bound
        state = vcpu.run_state
        regs = state.s.regs.regs
        io = state.io
        mm = self.mm
        sync_regs_dirty = k.KVM_SYNC_X86_REGS
        exit_io = k.KVM_EXIT_IO
        rflags_fixed = x86.RFLAGS_FIXED
        cs = state.s.regs.sregs.cs          # a view on kvm_run: always current
        # An object with a Python ``__call__`` (a Dispatcher) is called
        # through its type's call slot, which looks ``__call__`` up and builds
        # an argument tuple every time; its bound method is called directly
        # (~3 µs less per system call on PVM).  Functions stay as they are.
        handle = getattr(on_syscall, "__call__", None)
        if not isinstance(handle, MethodType):
            handle = on_syscall
        sites = self.syscall_sites
        consider = sites.consider if sites.enabled else None
        patched_port = PATCHED_SYSCALL_PORT
        exit_io_out = k.KVM_EXIT_IO_OUT
        rflags_resume = x86.RFLAGS_RF
        rflags_interrupts = x86.RFLAGS_IF
        syscall_mask = SYSCALL_MASK
        while True:
            if mm.stale_translations:
                self.flush_translations()
            reason = state.exit_reason if enter() >= 0 else vcpu.run_failed()
            self.exits += 1
            if reason == exit_io and io.port == SYSCALL_PORT and regs.rip == SYSCALL_EXIT_RIP:
                # The CPL at *this* exit says who returns the guest (see the
                # module docstring): CPL 3 on PVM — or a program that jumped
                # into the stub itself, which the stub's sysretq would fault
                # on — so the host returns it; CPL 0 (hardware), the stub
                # does.  Asked at every exit, before the handler (which may
                # move the guest to user mode itself): a verdict cached from
                # the first exit would let a program that first jumps into
                # the stub at CPL 3 make the host "return" later CPL 0
                # system calls to its own RCX — in ring 0.
                host_returns = cs.dpl == USER_CPL
                if host_returns and consider is not None:
                    consider(mm, regs.rcx)      # this site exits once from now on
                handle(regs)
                if host_returns:  # syscall stayed in CPL 3; return for the stub
                    regs.rip = regs.rcx
                    regs.rflags = (regs.r11 & USER_RFLAGS_MASK) | rflags_fixed
                state.kvm_dirty_regs = sync_regs_dirty
                continue
            if (reason == exit_io and io.port == patched_port and cs.dpl == USER_CPL
                    and io.direction == exit_io_out and io.count == 1
                    and regs.rip - PATCH_SIZE in mm.patched_sites):
                # A patched site: do what the ``syscall`` it replaced does
                # (RCX = the next instruction, R11 = RFLAGS without RF, the
                # SFMASK bits cleared), then the same as above.  User mode
                # always runs with IF set; PVM reports it clear at this exit,
                # so R11 gets it back.
                regs.rcx = regs.rip
                regs.r11 = (regs.rflags & ~rflags_resume) | rflags_interrupts
                regs.rflags &= ~syscall_mask
                handle(regs)
                regs.rip = regs.rcx
                regs.rflags = (regs.r11 & USER_RFLAGS_MASK) | rflags_fixed
                state.kvm_dirty_regs = sync_regs_dirty
                continue
            stop = self._unusual_exit(reason)
            if stop is not None:
                return stop

    def _unusual_exit(self, reason: int) -> Stop | None:
        """Everything but a system call: a crash, a timeout, or a failure.

        An interruption (KVM_RUN failing with EINTR, or KVM_EXIT_INTR: the
        time limit's or a time slice's signal) is told by its integer,
        because with threads it happens every slice.  Every other exit is
        decoded into the typed objects of :mod:`minikvm.kvm.exits` — the
        vocabulary the tutorials and ``minikvm doctor`` use — and each kind
        gets its report here.  (The system-call exit never comes here: the
        run loop reads its two integers directly, on every call.)"""
        state = self.vcpu.run_state
        if reason < 0 or reason == k.KVM_EXIT_INTR:
            state.immediate_exit = 0
            if self._timed_out:
                return Stop(StopKind.TIMEOUT, "the time limit was reached")
            if self._slice_over and self.on_preempt is not None:
                self._slice_over = False
                self.on_preempt()   # may load another thread's registers
            if self.outside is not None and self.on_outside_signal is not None \
                    and self.outside.pending():
                self.on_outside_signal()   # may run a handler, end or stop the run
            if self.on_interrupted is not None:
                self.on_interrupted()
            return None  # some other signal: its Python handler has run; resume
        # Imported here: building its dataclasses costs ~4 ms of start-up
        # that a run which never crashes should not pay.
        from minikvm.kvm.exits import (FailEntryExit, HltExit, InternalErrorExit, IoExit,
                                       ShutdownExit, decode_exit)
        exit = decode_exit(state)
        if isinstance(exit, IoExit):
            if EXCEPTION_PORT_BASE <= exit.port < EXCEPTION_PORT_BASE + x86.NUM_EXCEPTION_VECTORS:
                return self._crash(exit.port - EXCEPTION_PORT_BASE)
            regs = state.s.regs.regs
            frame = ExceptionFrame(x86.VECTOR_GP, 0, regs.rip, state.s.regs.sregs.cs.selector,
                                   regs.rflags, regs.rsp, 0)
            report = describe_exception(frame, self.symbolize)
            report.what = f"general protection fault (port I/O on port {exit.port:#x})"
            return Stop(StopKind.CRASH, report.one_line(), report)
        if isinstance(exit, ShutdownExit):
            return self._failure("triple fault: an exception happened while the CPU was "
                                 "delivering another one, so the guest could not even report it")
        if isinstance(exit, FailEntryExit):
            return self._failure(f"KVM could not enter the guest (hardware reason "
                                 f"{exit.hardware_reason:#x}): the vCPU's register state is "
                                 "invalid")
        if isinstance(exit, InternalErrorExit):
            return self._failure(f"KVM internal error {exit.suberror} ({exit.explain()}): KVM "
                                 "could not emulate or deliver what the guest did (on PVM "
                                 "hosts, e.g., a hypercall instruction)")
        if isinstance(exit, HltExit):
            return self._failure("the guest halted")
        return self._failure(f"unexpected VM exit {exit.name}")

    def _failure(self, message: str) -> Stop:
        regs = self.vcpu.run_state.s.regs.regs
        symbol = self.symbolize(regs.rip) if self.symbolize else None
        where = f" at rip={regs.rip:#x}" + (f" <{symbol}>" if symbol else "")
        return Stop(StopKind.FAILURE, f"SIGKILL: {message}{where}")

    def _crash(self, vector: int) -> Stop:
        """Read the frame the CPU pushed on the IST stack (below our stub's
        pushed-or-CPU error code) and describe the crash."""
        top = IST_STACK_TOP
        error_code, rip, cs, rflags, rsp, ss = (
            self.memory.read_u64(top - 48 + 8 * i) for i in range(6))
        cr2 = self.vcpu.run_state.s.regs.sregs.cr2
        frame = ExceptionFrame(vector, error_code, rip, cs, rflags, rsp, ss, cr2)
        if self.on_fault is not None and frame.from_user_mode and self.on_fault(frame):
            return None  # the program's signal handler runs instead
        report = describe_exception(frame, self.symbolize)
        return Stop(StopKind.CRASH, report.one_line(), report)

    # -- signals from outside ------------------------------------------------------
    def forward_outside_signals(self, signals: tuple[int, ...] = FORWARDED) -> OutsideSignals:
        """Catch the signals a user sends ``minikvm run`` (Ctrl-C, SIGTERM,
        a window resize …: :data:`~minikvm.machine.outside.FORWARDED`, or
        the fewer *signals*) for the guest, until :meth:`stop_forwarding`;
        see :mod:`minikvm.machine.outside`."""
        if self.outside is None:
            self.outside = OutsideSignals(self.vcpu.run_state, lambda: self._timed_out, signals)
            self.outside.install()
        return self.outside

    def stop_forwarding(self) -> None:
        """Let the signals of :meth:`forward_outside_signals` act on minikvm again."""
        if self.outside is not None:
            self.outside.uninstall()
            self.outside = None

    @property
    def stopping(self) -> bool:
        """Whether the run is being stopped (its time limit passed)."""
        return self._timed_out

    # -- the time limit ----------------------------------------------------------
    def _arm_timer(self, seconds: float) -> None:
        """SIGALRM after *seconds*, then every 10 ms until disarmed.

        A signal makes KVM_RUN return with EINTR.  The handler also sets
        ``kvm_run.immediate_exit``, so a signal that lands just before
        KVM_RUN starts still stops it; the repeating interval covers the
        last gap (a signal between our check and the ioctl).

        A system call the host is still handling when the limit comes ends
        on its own and the vCPU then stops — unless it waits in the host
        for something that never happens (a guest can ``read`` a stdin
        nobody writes to).  So if the run has not stopped after
        :data:`TIME_LIMIT_GRACE_TICKS` more ticks, the handler raises
        :class:`TimeLimitReached` out of the waiting call."""
        self._timed_out = False
        self._may_interrupt = True
        state = self.vcpu.run_state
        overdue = 0

        def on_alarm(signum: int, frame: object) -> None:
            nonlocal overdue
            self._timed_out = True
            state.immediate_exit = 1
            overdue += 1
            if overdue == TIME_LIMIT_GRACE_TICKS and self._may_interrupt:
                raise TimeLimitReached()

        self._previous_alarm = signal.signal(signal.SIGALRM, on_alarm)
        signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.001), TIME_LIMIT_TICK)

    def _disarm_timer(self) -> None:
        self._may_interrupt = False   # first: never raise out of the clean-up
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, self._previous_alarm)
        self.vcpu.run_state.immediate_exit = 0

    # -- time slices ---------------------------------------------------------------
    def start_time_slices(self, seconds: float, on_preempt: Callable[[], None]) -> None:
        """Interrupt the guest after every *seconds* of CPU time and call
        *on_preempt* at that exit (:mod:`minikvm.process.threads` switches threads
        there, so a thread spinning on a lock lets the holder run).

        The clock is ``ITIMER_PROF``, the CPU time of this process: a guest
        that computes uses it, a host that sleeps because every thread waits
        does not, so only a running thread is ever interrupted.  SIGPROF
        makes KVM_RUN return with EINTR; unlike the time limit it does not
        set ``immediate_exit``, so a slice that ends while the host is busy
        only delays the switch to the next slice — and never makes a host
        sleep (:func:`minikvm.syscalls.signals.sleep`) end early."""
        self.time_slice = seconds
        self.on_preempt = on_preempt
        self._arm_time_slices()

    def stop_time_slices(self) -> None:
        """Back to one thread: no more interruptions."""
        self._disarm_time_slices()
        self.time_slice = None
        self.on_preempt = None

    def _arm_time_slices(self) -> None:
        if self._slices_armed or self.time_slice is None:
            return

        def on_slice_end(signum: int, frame: object) -> None:
            self._slice_over = True

        self._previous_profiler = signal.signal(signal.SIGPROF, on_slice_end)
        signal.setitimer(signal.ITIMER_PROF, self.time_slice, self.time_slice)
        self._slices_armed = True

    def _disarm_time_slices(self) -> None:
        if not self._slices_armed:
            return
        signal.setitimer(signal.ITIMER_PROF, 0)
        if self._previous_profiler is not None:
            signal.signal(signal.SIGPROF, self._previous_profiler)  # type: ignore[arg-type]
        self._slices_armed = False
        self._slice_over = False
