"""Layer 7 — a program run under gdb: where it stops, and how it goes on.

``minikvm run --gdb ADDRESS`` runs the program as usual, with three hooks
in the run loop that turn events into stops gdb sees
(:class:`DebugSession`):

* **Before the first instruction**: the vCPU's registers are the entry
  point's; gdb gets ``T05`` (SIGTRAP, as after ``execve`` under ptrace).
* **CPU exceptions** (the machine's ``on_fault``), which is how
  breakpoints and steps arrive without any KVM debug support, so they
  work the same on PVM and on hardware VMX/SVM:

  - a breakpoint is an ``int3`` written over the instruction.  minikvm's
    IDT gate for vector 3 is for the kernel only, so on hardware the CPU
    raises #GP with error code ``(3 << 3) | 2`` ("IDT entry 3", SDM Vol.
    3A, 6.13 "Error Code") and RIP *on* the ``int3``; PVM delivers #BP,
    a trap, with RIP one byte after it.  Either way the stop is reported
    at the address gdb planted it at, with ``swbreak``, so gdb does not
    adjust RIP again;
  - a single step sets RFLAGS.TF; after one instruction the CPU raises
    #DB (a trap: RIP is the next instruction; SDM Vol. 3B, 17.3.1.4
    "Single-Step Exception Condition").  A ``syscall`` instruction is not
    stepped by TF — it would trap one instruction late, after the host
    returned the guest — but stopped right after the host handled it;
  - any other exception is the signal Linux would send (SIGSEGV, SIGFPE
    …): gdb stops there, at the faulting instruction, and the signal goes
    to the program only if gdb passes it on (``C0b``).

* **System calls** (a wrapper around the dispatcher): a call that kills
  the program with a signal (``abort``'s ``tgkill``) stops first, so
  ``bt`` shows where; and a stepped ``syscall`` stops after it.

At each stop the exception is undone — RIP, RSP and RFLAGS put back from
the frame the CPU pushed, CS and SS to user mode — so gdb reads and
writes the program's own registers, and resuming is just the next
``KVM_RUN``.  Threads are the guest's threads (one vCPU runs them in
turn): the thread that stopped is current; the others' registers are
their saved copies in the thread table.  A stop stops them all, as gdb's
all-stop mode expects.  The stub never changes what the guest may do:
memory is reached through the process's own mappings, selectors stay
minikvm's user segments, and only the program itself can be killed."""

from __future__ import annotations

import ctypes
import select
import signal as signal_module
import socket
import sys
import threading
from typing import Callable

from minikvm import ioctl as k, x86
from minikvm.cpu.segments import USER_CODE64, USER_DATA64
from minikvm.debug.memory import read_memory, write_memory
from minikvm.debug.registers import (FXSAVE_SIZE, RegisterFile, fxsave_from_kvm_fpu,
                                     kvm_fpu_from_fxsave)
from minikvm.debug.signals import to_gdb
from minikvm.debug.stub import GdbStub
from minikvm.machine.crash import ExceptionFrame, describe_exception
from minikvm.machine.machine import USER_RFLAGS_MASK
from minikvm.machine.stops import ProcessKilled, RegistersLoaded, signal_status
from minikvm.process.process import Process, RunResult
from minikvm.syscalls.dispatch import Dispatcher

#: ``int3``, and the #GP error code it raises through a kernel-only gate:
#: IDT entry 3 (index 3 << 3, bit 1 "IDT").
INT3 = 0xCC
INT3_GP_ERROR_CODE = (x86.VECTOR_BP << 3) | 2
#: ``syscall`` (0F 05): stepped by the host, not by TF.
SYSCALL_INSTRUCTION = b"\x0f\x05"
#: XSAVE header: the XSTATE_BV word, and its x87 and SSE bits (SDM Vol. 1,
#: 13.4.2 "XSAVE Header").  A clear bit means "in its initial state".
XSTATE_BV_OFFSET = 512
XSTATE_X87, XSTATE_SSE = 1, 2
#: The signal the Ctrl-C watcher sends minikvm's main thread to make
#: KVM_RUN return (one minikvm does not otherwise use or forward).
INTERRUPT_SIGNAL = signal_module.SIGURG
#: How often the watcher looks for gdb's Ctrl-C, and kicks again while the
#: stop it asked for has not happened (the vCPU was in a stub, at CPL 0).
INTERRUPT_POLL_SECONDS = 0.05
#: The most auxv entries read from the initial stack (Linux has ~25).
MAX_AUXV_ENTRIES = 64
#: The most argv + envp pointers skipped on the initial stack to reach it.
MAX_STACK_POINTERS = 1 << 20


class DebugSession:
    """gdb's view of one process, and the hooks that stop it.

    Built after the dispatcher (it wraps the ``on_fault`` the dispatcher
    installed) and before the run: :meth:`run` replaces ``process.run``."""

    def __init__(self, process: Process, dispatcher: Dispatcher,
                 connection: socket.socket) -> None:
        self.process = process
        self.machine = process.machine
        self.dispatcher = dispatcher
        self.stub = GdbStub(connection, self)
        #: address → the byte the ``int3`` replaced
        self.breakpoints: dict[int, int] = {}
        #: The thread whose RFLAGS.TF we set, and the one stepping a ``syscall``.
        self.stepping: int | None = None
        self.stepping_syscall: int | None = None
        self._auxv: bytes | None = None
        self._deliver_fault: Callable[[ExceptionFrame], bool] | None = self.machine.on_fault
        self.machine.on_fault = self._on_fault
        self.machine.on_interrupted = self._on_interrupted
        self.interrupts = InterruptWatch(connection, self.machine.vcpu.run_state)
        # gdb must see the program's own code: no site may be rewritten to
        # exit once (minikvm.machine.syscall_sites), and breakpoint bytes
        # must stay where gdb put them.
        self.machine.syscall_sites.enabled = False

    @property
    def attached(self) -> bool:
        return self.stub.connected

    # -- the run -----------------------------------------------------------------
    def run(self, timeout: float | None = None) -> RunResult:
        """The program's whole run under gdb, ending with ``W``/``X``."""
        self._mirror_registers()
        self._auxv = self._read_auxv()
        try:
            self._stop(signal_module.SIGTRAP)
        except ProcessKilled as killed:         # gdb killed it before it ran
            self.process.fds.close_all()
            result = RunResult(signal_status(killed.signal), f"{killed.signal.name}: "
                               f"{killed.reason}", signal=int(killed.signal))
            self.stub.report_end(b"X%02x" % to_gdb(killed.signal))
            return result
        self.interrupts.start()
        try:
            result = self.process.run(self._on_syscall, timeout)
        finally:
            self.interrupts.stop()
        if result.signal is not None:
            self.stub.report_end(b"X%02x" % to_gdb(result.signal))
        else:
            self.stub.report_end(b"W%02x" % (result.exit_status & 0xFF))
        return result

    def _mirror_registers(self) -> None:
        """Before the first KVM_RUN, ``kvm_run``'s synced registers are
        not filled in yet (KVM writes them at an exit): copy them from the
        vCPU, so that every stop reads the same place.  Registers already
        written there for the next KVM_RUN (marked dirty: a snapshot's fork
        returning from its ``minikvm_wait_request``) are the newer: kept."""
        state = self.machine.vcpu.run_state
        if not state.kvm_dirty_regs & k.KVM_SYNC_X86_REGS:
            regs = self.machine.vcpu.get_regs()
            ctypes.memmove(ctypes.addressof(state.s.regs.regs), ctypes.addressof(regs),
                           ctypes.sizeof(regs))
        sregs = self.machine.vcpu.get_sregs()
        ctypes.memmove(ctypes.addressof(state.s.regs.sregs), ctypes.addressof(sregs),
                       ctypes.sizeof(sregs))
        state.kvm_dirty_regs |= k.KVM_SYNC_X86_REGS

    # -- stops ----------------------------------------------------------------------
    def _stop(self, signal: int, *, breakpoint: bool = False) -> int | None:
        """Report a stop of the current thread and wait for gdb; carry out
        how it resumes.  The signal gdb passes on is returned (None: none).
        Kill raises :class:`ProcessKilled` (SIGKILL); detach lets the
        program run on without breakpoints."""
        self._clear_step()
        if not self.attached:
            return signal
        thread = self.current_thread()
        reason = b"swbreak:;" if breakpoint else b""
        self.interrupts.pause()             # the stub reads the socket now
        resume = self.stub.wait_for_resume(b"T%02xthread:%x;%s" % (to_gdb(signal), thread, reason))
        if resume.action == "kill":
            self._remove_all_breakpoints()
            self.stub.close()
            raise ProcessKilled(signal_module.SIGKILL, "killed from gdb")
        if resume.action == "detach":
            self._remove_all_breakpoints()
            self.stub.close()
            return signal if signal != signal_module.SIGTRAP else None
        if resume.action == "step":
            self._start_step(resume.thread if resume.thread in self.threads()
                             else thread)
        self.interrupts.resume()
        return resume.signal

    def _on_fault(self, frame: ExceptionFrame) -> bool:
        """The machine's ``on_fault``: a breakpoint or a step is ours; a
        fault stops in gdb, then goes to the program's signal code."""
        deliver = self._deliver_fault
        if not self.attached or not frame.from_user_mode:
            return deliver(frame) if deliver is not None else False
        address = self._breakpoint_hit(frame)
        if address is not None:
            self._undo_exception(frame, rip=address)
            self._stop(signal_module.SIGTRAP, breakpoint=True)
            return True
        if frame.vector == x86.VECTOR_DB and self.stepping == self.current_thread():
            self._undo_exception(frame, rip=frame.rip)
            self._stop(signal_module.SIGTRAP)
            return True
        if deliver is not None and _is_vsyscall(frame) and deliver(frame):
            return True                    # a legacy vsyscall call, emulated
        fault_signal = int(describe_exception(frame).signal)
        self._undo_exception(frame, rip=frame.rip)
        passed = self._stop(fault_signal)
        if passed is None:
            return True                     # gdb dropped it: the instruction runs again
        # Passed on: the program's handler, or the crash report.
        return deliver(frame) if deliver is not None else False

    def _on_interrupted(self) -> None:
        """The machine's ``on_interrupted``: gdb's Ctrl-C stops the program
        where it is, if it is in user mode (else the watcher kicks again)."""
        state = self.machine.vcpu.run_state
        if not self.attached or not self.interrupts.requested \
                or state.s.regs.sregs.cs.dpl != 3:
            return
        self.interrupts.requested = False
        self._stop(signal_module.SIGINT)

    def _on_syscall(self, regs: k.kvm_regs) -> None:
        """The run's system-call handler: the dispatcher, plus the stops
        that happen at a system call."""
        stepped = self.stepping_syscall is not None \
            and self.stepping_syscall == self.current_thread()
        try:
            self.dispatcher(regs)
        except ProcessKilled as killed:
            if not self.attached or killed.outside or killed.signal == signal_module.SIGKILL:
                raise
            self._return_from_syscall()
            passed = self._stop(killed.signal)
            if passed is not None:
                raise
            raise RegistersLoaded() from None   # gdb dropped the signal: go on
        if stepped and self.attached:
            self.stepping_syscall = None
            self._return_from_syscall()
            self._stop(signal_module.SIGTRAP)
            raise RegistersLoaded()

    # -- the CPU state at a stop ---------------------------------------------------
    def _undo_exception(self, frame: ExceptionFrame, rip: int) -> None:
        """Put the program's registers back as they were before the CPU
        entered minikvm's exception stub (the stub changes only RIP, RSP,
        RFLAGS, CS and SS; it saves no general register it uses)."""
        state = self.machine.vcpu.run_state
        regs = state.s.regs.regs
        regs.rip, regs.rsp = rip, frame.rsp
        regs.rflags = (frame.rflags & USER_RFLAGS_MASK) | x86.RFLAGS_FIXED
        self.machine.enter_user_mode()
        state.kvm_dirty_regs |= k.KVM_SYNC_X86_REGS

    def _return_from_syscall(self) -> None:
        """Finish the current system call as the run loop would (RIP =
        RCX, RFLAGS = R11), in user mode, so gdb sees the program after it."""
        state = self.machine.vcpu.run_state
        regs = state.s.regs.regs
        regs.rip = regs.rcx
        regs.rflags = (regs.r11 & USER_RFLAGS_MASK) | x86.RFLAGS_FIXED
        self.machine.enter_user_mode()
        state.kvm_dirty_regs |= k.KVM_SYNC_X86_REGS

    def _breakpoint_hit(self, frame: ExceptionFrame) -> int | None:
        """The address of our ``int3`` that raised *frame*, or None.  Through
        a kernel-only gate it is #GP with RIP on it; where the host lets it
        reach the gate anyway (PVM does), #BP, a trap, with RIP after it."""
        if frame.vector == x86.VECTOR_GP and frame.error_code == INT3_GP_ERROR_CODE:
            address = frame.rip
        elif frame.vector == x86.VECTOR_BP:
            address = frame.rip - 1
        else:
            return None
        return address if address in self.breakpoints else None

    def _start_step(self, thread: int) -> None:
        file = self.register_file(thread)
        if self.read_memory(file.regs.rip, 2) == SYSCALL_INSTRUCTION:
            self.stepping_syscall = thread
            return
        file.regs.rflags |= x86.RFLAGS_TF
        self.store_registers(thread, file)
        self.stepping = thread

    def _clear_step(self) -> None:
        """Take TF off the thread we stepped, wherever it is now."""
        thread, self.stepping, self.stepping_syscall = self.stepping, None, None
        if thread is not None and thread in self.threads():
            file = self.register_file(thread)
            if file.regs.rflags & x86.RFLAGS_TF:
                file.regs.rflags &= ~x86.RFLAGS_TF
                self.store_registers(thread, file)

    # -- the Debuggee the stub reads ------------------------------------------------
    def threads(self) -> list[int]:
        return list(self.process.threads.threads)

    def current_thread(self) -> int:
        return self.process.threads.current

    def register_file(self, thread: int) -> RegisterFile:
        state = self.machine.vcpu.run_state
        sregs = state.s.regs.sregs
        selectors = {"cs": USER_CODE64.selector, "ss": USER_DATA64.selector,
                     "ds": sregs.ds.selector, "es": sregs.es.selector,
                     "fs": sregs.fs.selector, "gs": sregs.gs.selector}
        if thread == self.current_thread():
            regs = k.kvm_regs.from_buffer_copy(state.s.regs.regs)
            return RegisterFile(regs, selectors, sregs.fs.base, sregs.gs.base,
                                fxsave_from_kvm_fpu(self.machine.vcpu.get_fpu()))
        saved = self.process.threads.threads[thread]
        regs = k.kvm_regs.from_buffer_copy(saved.regs)
        return RegisterFile(regs, selectors, saved.fs_base, saved.gs_base,
                            _fxsave_of_saved(saved.fpu))

    def store_registers(self, thread: int, file: RegisterFile) -> None:
        state = self.machine.vcpu.run_state
        if thread == self.current_thread():
            ctypes.memmove(ctypes.addressof(state.s.regs.regs), ctypes.addressof(file.regs),
                           ctypes.sizeof(file.regs))
            state.kvm_dirty_regs |= k.KVM_SYNC_X86_REGS
            sregs = state.s.regs.sregs
            if file.fs_base != sregs.fs.base:
                self.machine.set_fs_base(file.fs_base)
                sregs.fs.base = file.fs_base
            if file.gs_base != sregs.gs.base:
                self.machine.set_gs_base(file.gs_base)
                sregs.gs.base = file.gs_base
            current = fxsave_from_kvm_fpu(self.machine.vcpu.get_fpu())
            if current[:FXSAVE_SIZE] != file.fxsave[:FXSAVE_SIZE]:
                self.machine.vcpu.set_fpu(kvm_fpu_from_fxsave(file.fxsave))
            return
        saved = self.process.threads.threads[thread]
        saved.regs = bytes(file.regs)
        saved.fs_base, saved.gs_base = file.fs_base, file.gs_base
        saved.fpu = _saved_with_fxsave(saved.fpu, file.fxsave)

    def read_memory(self, address: int, size: int) -> bytes:
        return read_memory(self.process.mm, address, size)

    def write_memory(self, address: int, data: bytes) -> bool:
        return write_memory(self.process.mm, address, data)

    def insert_breakpoint(self, address: int) -> bool:
        if address in self.breakpoints:
            return True
        original = self.read_memory(address, 1)
        if len(original) != 1 or not write_memory(self.process.mm, address, bytes([INT3])):
            return False
        self.breakpoints[address] = original[0]
        return True

    def remove_breakpoint(self, address: int) -> bool:
        original = self.breakpoints.pop(address, None)
        if original is None:
            return True
        # After an execve the address may hold new code: restore only our int3.
        if self.read_memory(address, 1) == bytes([INT3]):
            write_memory(self.process.mm, address, bytes([original]))
        return True

    def let_child_go(self) -> None:
        """In a child process (:mod:`minikvm.tree.fork`): gdb follows the
        parent only, as gdb's own ``follow-fork-mode parent`` with
        ``detach-on-fork on`` does.  The child's copy of the memory loses
        the breakpoints, its registers the trap flag, its machine the
        debugger's hooks; the connection is the parent's (this process's
        copy of the socket is closed, the parent's stays open)."""
        self._remove_all_breakpoints()
        regs = self.machine.vcpu.run_state.s.regs.regs
        regs.rflags &= ~x86.RFLAGS_TF
        self.stepping = self.stepping_syscall = None
        self.machine.on_fault = self._deliver_fault
        self.machine.on_interrupted = None
        self.stub.connected = False
        self.stub.connection.close()

    def _remove_all_breakpoints(self) -> None:
        for address in list(self.breakpoints):
            self.remove_breakpoint(address)

    def auxv(self) -> bytes:
        return self._auxv or b""

    def _read_auxv(self) -> bytes:
        """The auxiliary vector on the initial stack: past argc, argv and
        envp (each list ends with a NULL), up to and with AT_NULL."""
        mm = self.process.mm
        pointer = self.machine.vcpu.run_state.s.regs.regs.rsp
        argc = int.from_bytes(read_memory(mm, pointer, 8), "little")
        pointer += 8 * (min(argc, MAX_STACK_POINTERS) + 2)      # argc, argv[], NULL
        for _ in range(MAX_STACK_POINTERS):                   # envp[], NULL
            word = read_memory(mm, pointer, 8)
            pointer += 8
            if len(word) < 8 or word == bytes(8):
                break
        entries = read_memory(mm, pointer, 16 * MAX_AUXV_ENTRIES)
        for end in range(0, len(entries) - 15, 16):
            if entries[end:end + 8] == bytes(8):                # AT_NULL
                return entries[:end + 16]
        return b""


class InterruptWatch:
    """gdb's Ctrl-C while the program runs: a lone 0x03 on the connection.

    While the program runs nobody reads the socket, so a host thread
    watches it; when gdb sends something, the thread sets
    :attr:`requested`, sets ``kvm_run.immediate_exit`` and signals the
    main thread, so that KVM_RUN returns (or the host's system call
    finishes and the next KVM_RUN returns at once) and the machine calls
    :meth:`DebugSession._on_interrupted`.  While the program is stopped
    the stub reads the socket itself, so the watch is paused under a
    lock: a byte the stub will read is never taken for a Ctrl-C."""

    def __init__(self, connection: socket.socket, run_state: k.kvm_run) -> None:
        self.connection = connection
        self.run_state = run_state
        self.requested = False
        self._lock = threading.Lock()
        self._running = False
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        self._main = threading.get_ident()
        self._previous: object = None

    def start(self) -> None:
        self._previous = signal_module.signal(INTERRUPT_SIGNAL, lambda signum, frame: None)
        self._running = True
        self._thread = threading.Thread(target=self._watch, name="gdb-interrupt", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.pause()
        self._done.set()
        if self._thread is not None:
            self._thread.join()
            signal_module.signal(INTERRUPT_SIGNAL, self._previous)  # type: ignore[arg-type]

    def pause(self) -> None:
        with self._lock:
            self._running = False
            self.requested = False

    def resume(self) -> None:
        with self._lock:
            self._running = True

    def _watch(self) -> None:
        while not self._done.is_set():
            with self._lock:
                watching = self._running and not self.requested
            if not watching:
                with self._lock:
                    kick = self._running and self.requested
                if kick:                     # asked, but no stop yet: again
                    self._kick()
                self._done.wait(INTERRUPT_POLL_SECONDS)
                continue
            try:
                readable, _, _ = select.select([self.connection], [], [],
                                               INTERRUPT_POLL_SECONDS)
            except (OSError, ValueError):
                return                       # the connection was closed
            if readable:
                with self._lock:
                    if self._running:
                        self.requested = True
                        self._kick()

    def _kick(self) -> None:
        self.run_state.immediate_exit = 1
        try:
            signal_module.pthread_kill(self._main, INTERRUPT_SIGNAL)
        except (OSError, ValueError):
            pass


def _fxsave_of_saved(state: bytes) -> bytearray:
    """The FXSAVE area of a thread's saved FPU state: a ``kvm_fpu``, or an
    XSAVE area (:mod:`minikvm.process.threads` keeps whichever KVM gives),
    with the x87 and SSE parts an XSAVE header marks as initial set to their
    initial values (SDM Vol. 1, 13.6 "Processor Tracking of XSAVE-Managed
    State")."""
    if len(state) == ctypes.sizeof(k.kvm_fpu):
        return fxsave_from_kvm_fpu(k.kvm_fpu.from_buffer_copy(state))
    area = bytearray(state[:FXSAVE_SIZE].ljust(FXSAVE_SIZE, b"\0"))
    present = int.from_bytes(state[XSTATE_BV_OFFSET:XSTATE_BV_OFFSET + 8], "little")
    if len(state) >= XSTATE_BV_OFFSET + 8 and not present & XSTATE_X87:
        area[0:24] = bytes(24)
        area[0:2] = (0x037F).to_bytes(2, "little")          # FCW's initial value
        area[32:160] = bytes(128)
    if len(state) >= XSTATE_BV_OFFSET + 8 and not present & XSTATE_SSE:
        area[160:416] = bytes(256)
    return area


def _saved_with_fxsave(state: bytes, area: bytes) -> bytes:
    """A thread's saved FPU state with its x87/SSE part replaced by *area*."""
    if len(state) == ctypes.sizeof(k.kvm_fpu):
        return bytes(kvm_fpu_from_fxsave(area))
    new = bytearray(state)
    new[:FXSAVE_SIZE] = area[:FXSAVE_SIZE]
    if len(new) >= XSTATE_BV_OFFSET + 8:
        present = int.from_bytes(new[XSTATE_BV_OFFSET:XSTATE_BV_OFFSET + 8], "little")
        new[XSTATE_BV_OFFSET:XSTATE_BV_OFFSET + 8] = (
            present | XSTATE_X87 | XSTATE_SSE).to_bytes(8, "little")
    return bytes(new)


def _is_vsyscall(frame: ExceptionFrame) -> bool:
    from minikvm.syscalls.vsyscall import is_vsyscall_fetch
    return is_vsyscall_fetch(frame)


def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket for gdb on *host*:*port* (before the walls
    go up; the connection is accepted after)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    server = socket.socket(family, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((host, port))
    server.listen(1)
    return server


def accept(server: socket.socket, program: str) -> socket.socket:
    """Wait for gdb on *server*, saying where on stderr; one connection."""
    host, port = server.getsockname()[:2]
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    print(f"minikvm: waiting for gdb on {where} "
          f"(gdb {program} -ex 'target remote {where}')", file=sys.stderr, flush=True)
    connection, _ = server.accept()
    server.close()
    connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return connection
