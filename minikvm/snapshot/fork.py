"""Layer 7 — a fork: a VM started from a snapshot, its reset, its requests and calls.

A :class:`Fork` is a new VM and vCPU started from a snapshot.  Its memory
is the snapshot's memfd mapped ``MAP_PRIVATE``: every page is shared with
the snapshot (and every other fork) until the fork writes it, when the host
kernel gives the fork its own copy.  Starting one is mostly the host
kernel's work (a VM, its memory slot, a vCPU: ~1 ms on a PVM host);
:meth:`Snapshot.prepare_forks` does it ahead of time, on request.  After a
request, :meth:`Fork.reset` puts the fork back to the snapshot with work
proportional to the pages the request dirtied, by one of three mechanisms
(``mechanism=``):

``"cow"`` — copy-on-write
    ``madvise(MADV_DONTNEED)`` on each dirtied range drops the fork's
    private copies; the next access sees the snapshot's page again.

``"copy"`` — dirty log
    the dirtied pages are copied back from the snapshot, in place.

``"keep"`` — a working set, left writable
    as ``"copy"``, but the pages stay writable after the reset
    (``KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2``: reading the dirty log does not
    write-protect them again), so the next request writes them at full
    speed instead of taking a logged fault on each; the price is that the
    reset copies the whole working set back every time, since KVM can no
    longer say which of its pages were written.  Every
    :data:`RELEARN_RESETS` resets the set is write-protected again and
    relearned from the requests that follow.  Best for a handler that
    writes the same pages on every request.

All three need to know *which* pages were dirtied.  The guest's own stores are
in KVM's dirty log (``KVM_GET_DIRTY_LOG`` on a slot added with
``KVM_MEM_LOG_DIRTY_PAGES``).  Stores the *host* makes into guest memory —
a ``read()`` copying file data out, ``getrandom``, zeroing on ``munmap``,
page-table edits — bypass the guest's MMU and are not in that log, so the
host records them itself (:attr:`GuestMemory.host_writes
<minikvm.kvm.memory.GuestMemory.host_writes>`, and a counter of mapping
changes for the page tables); the reset uses the union.  When the page
tables were restored, the vCPU's cached translations are flushed
(:meth:`Machine.flush_translations <minikvm.machine.machine.Machine.flush_translations>`):
PVM's shadow MMU would otherwise keep entries for mappings that no longer exist.
The host-side state is put back whole at every reset, whatever the request
did: the process's attributes, its threads (a thread started by a request
is gone, and with it the time slices), the address-space record (the break
too, when it moved inside its page), the fd table.

:meth:`Fork.request` hands one request to a fork and returns its response;
:meth:`Fork.call` calls a function of the program by its symbol, with the
System V calling convention.
"""

from __future__ import annotations

import bisect
import enum
import functools
import ctypes
import os
import stat as stat_module
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

from minikvm import ioctl as k, x86
from minikvm.cpu.segments import USER_CODE64, USER_DATA64
from minikvm.errors import SnapshotError, SyscallError
from minikvm.kvm.memory import GuestMemory
from minikvm.kvm.system import Kvm
from minikvm.linux_abi import STACK_ALIGNMENT
from minikvm.machine.machine import CALL_RETURN_ADDRESS, SYSCALL_EXIT_RIP, USER_RFLAGS_MASK, Machine
from minikvm.machine.stops import StopKind
from minikvm.machine.syscall_sites import after_patched_site
from minikvm.process import vdso
from minikvm.process.fdtable import FdEntry
from minikvm.process.process import Process
from minikvm.snapshot.channel import (RESPONSE_TOO_LARGE, LastRequestChannel, Reply,
                                      RequestChannel, run_until_stop)
from minikvm.snapshot.frozen import (allocated_end, allocated_runs, bitmap_runs, merge_runs,
                                     page_runs)
from minikvm.snapshot.process_state import (PLAIN_FILE_KINDS, copy_fd_entries, install_fd_entries,
                                            restore_process_state)
from minikvm.syscalls.base import MASK64, signed64
from minikvm.syscalls.dispatch import Dispatcher
from minikvm.syscalls.trace import Tracer
from minikvm.x86 import PAGE_SIZE

if TYPE_CHECKING:
    # A fork is started by its snapshot (Snapshot.fork), so the snapshot's
    # module imports this one; here the class is only named in hints.
    from minikvm.snapshot.snapshot import Snapshot


class ResetMechanism(str, enum.Enum):
    """How a fork's reset puts memory back (see the module docstring)."""
    COW = "cow"      # drop the fork's copy-on-write pages
    COPY = "copy"    # copy the dirty pages back from the frozen memory
    KEEP = "keep"    # copy the working set back, left writable between requests


#: The mechanisms' names, for command-line choices and messages.
MECHANISMS = tuple(mechanism.value for mechanism in ResetMechanism)
#: ``"keep"`` write-protects its working set again every this many resets,
#: so that pages a request stopped writing leave it: a page dirtied once
#: is copied back at most this many times, and a page written by every
#: request costs one logged write fault per this many requests.
RELEARN_RESETS = 16
#: Bytes below RSP that a function may use without moving RSP (System V
#: ABI §3.2.2); a host call puts its arguments below it.
RED_ZONE = 128
MAX_REGISTER_ARGUMENTS = 6
MADV_DONTNEED = 4

def effective_mechanism(mechanism: str) -> str:
    """*mechanism* checked, as this host runs it: ``"keep"`` needs
    ``KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2`` (Linux 5.8 on; PVM has it) and
    is ``"copy"`` without it, which restores the same pages, only slower."""
    if mechanism not in MECHANISMS:
        raise ValueError(f"reset mechanism {mechanism!r}: expected one of {MECHANISMS}")
    if mechanism == ResetMechanism.KEEP and not _manual_protect_available():
        return ResetMechanism.COPY.value
    return str(ResetMechanism(mechanism).value)


@functools.cache
def _manual_protect_available() -> bool:
    with Kvm() as kvm:
        supported = kvm.check_extension(k.KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2)
    return bool(supported & k.KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE)


_libc = ctypes.CDLL(None, use_errno=True)
_libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]


class GuestCallError(SnapshotError):
    """A function called with :meth:`Fork.call` did not return: it crashed,
    timed out or exited.  ``reply`` tells how."""

    def __init__(self, message: str, reply: "Reply") -> None:
        super().__init__(message)
        self.reply = reply


@dataclass
class ResetStats:
    """What one reset did (for the benchmarks and the curious)."""
    guest_pages: int = 0       # pages in KVM's dirty log
    host_pages: int = 0        # pages the host wrote
    table_pages: int = 0       # page-table pages restored (mappings changed)
    runs: int = 0              # contiguous ranges restored
    full: bool = False         # the whole vCPU state was reloaded
    flushed: bool = False      # the vCPU's translations were flushed

    @property
    def pages(self) -> int:
        return self.guest_pages + self.host_pages + self.table_pages


class Fork:
    """A new VM and vCPU started from a :class:`Snapshot`.

    Its memory maps the snapshot's memfd ``MAP_PRIVATE``, so starting one
    copies no guest memory; its files are copies of the snapshot's (host
    fds duplicated); ``getrandom`` gives it fresh bytes.  Use it with
    :meth:`request` and :meth:`call`; :meth:`reset` returns it to the
    snapshot.  *mechanism* chooses how a reset restores memory: ``"cow"``
    (drop the private copies) or ``"copy"`` (copy the pages back)."""

    def __init__(self, snapshot: Snapshot, mechanism: str = ResetMechanism.COW,
                 tracer: Tracer | None = None) -> None:
        mechanism = effective_mechanism(mechanism)
        if snapshot.memory is None:
            raise SnapshotError("this snapshot is closed")
        self.snapshot = snapshot
        self.mechanism = mechanism
        source = snapshot.memory
        memory = GuestMemory(source.size, source.base, fd=source.fd, shared=False)
        try:
            mm = snapshot.mm.clone(memory)
            self.machine = Machine(memory=memory, mm=mm, dirty_logging=True,
                                   manual_protect=mechanism == ResetMechanism.KEEP,
                                   cpuid=snapshot.cpuid)
        except BaseException:
            memory.close()
            raise
        #: Resets since ``"keep"`` last write-protected its working set.
        self._resets_since_protect = 0
        memory.host_writes = set()
        try:
            snapshot.cpu.restore(self.machine)
            state = snapshot.process_state
            self.process = Process(self.machine, snapshot.image, snapshot.policy,
                                   state.get("argv", []), state.get("env", []),
                                   state.get("exe_path", snapshot.image.name),
                                   state.get("cwd", "/"))
            self._files: dict[int, tuple[FdEntry, bool, dict[str, Any]]] | None = None
            self._rewind: list[tuple[int, int]] = []
            self._restore_host_state()
        except BaseException:
            self.machine.close()
            raise
        self.channel = RequestChannel()
        self.process.requests = self.channel
        self.dispatcher = Dispatcher(self.process, tracer)
        #: ``(buffer, size)`` of the wait the fork is in, or None after an
        #: exit/crash/timeout (then only :meth:`reset` helps).
        self.wait = snapshot.wait
        self.last_reset = ResetStats(full=True)

    # -- state -------------------------------------------------------------------
    def _restore_host_state(self) -> None:
        """Everything the host keeps for the process, as in the snapshot:
        every captured attribute (:func:`~minikvm.snapshot.process_state.restore_process_state`:
        signal state, alarm, cwd, umask, the thread table …), the machine's
        time slices (there are none for one thread), the fd table, and a
        fresh entropy source; and the vDSO's data page, which the memory's
        reset put back as it was at the snapshot, made current again."""
        process = self.process
        restore_process_state(process, self.snapshot.process_state)
        if len(process.threads) < 2:
            self.machine.stop_time_slices()
        self._restore_files()
        # Fresh entropy in every fork and after every reset — or, for a
        # snapshot taken under --deterministic, the seeded sources exactly as
        # they were at the snapshot (restored above with the rest).
        process.use_determinism(process.determinism)
        vdso.after_restore(process)

    def _restore_files(self) -> None:
        """The fd table as in the snapshot.  When the request left it as the
        last reset made it (same entries, same attributes) only the file
        positions are rewound; otherwise it is rebuilt from the snapshot."""
        table = self.process.fds
        table.max_fds = self.snapshot.max_fds
        if self._files_unchanged():
            for host_fd, offset in self._rewind:
                os.lseek(host_fd, offset, os.SEEK_SET)
            return
        table.close_all()
        install_fd_entries(table, copy_fd_entries(self.snapshot.fds))
        self._files = {fd: (entry, entry.cloexec, dict(vars(entry.file)))
                       for fd, entry in table.entries.items()}
        self._rewind = []
        for entry in table.entries.values():
            host_fd = entry.file.host_fd
            if host_fd is not None and stat_module.S_ISREG(os.fstat(host_fd).st_mode):
                self._rewind.append((host_fd, os.lseek(host_fd, 0, os.SEEK_CUR)))

    def _files_unchanged(self) -> bool:
        entries = self.process.fds.entries
        if self._files is None or len(entries) != len(self._files):
            return False
        for fd, (entry, cloexec, attributes) in self._files.items():
            if (entries.get(fd) is not entry or entry.cloexec != cloexec
                    or entry.file.kind not in PLAIN_FILE_KINDS
                    or vars(entry.file) != attributes):
                return False
        return True

    def reset(self, full: bool = False) -> ResetStats:
        """Put the fork back to the snapshot: memory, vCPU and host state.

        Memory work is proportional to the pages dirtied since the last
        reset (the guest's, from KVM's dirty log, and the host's own
        writes), plus the page-table pages when mappings changed.  *full*
        reloads every vCPU register (needed after a crash, a timeout or an
        exit, done automatically then); otherwise only what a program at
        CPL 3 can change is reloaded: the general registers (through
        ``kvm_run``), the FPU/SSE state and, if they moved, FS/GS base."""
        machine = self.machine
        snapshot = self.snapshot
        memory = machine.memory
        mm = machine.mm
        stats = ResetStats(full=full or self.wait is None)
        # Only pages below the highest one allocated (now or at the snapshot)
        # can be dirty: above it every page is free, and freeing zeroes.
        limit = max(allocated_end(mm.user_pool), allocated_end(snapshot.mm.user_pool))
        dirty_log = machine.take_dirty_log()
        runs = bitmap_runs(dirty_log[:-(-limit // (PAGE_SIZE * 8))])
        stats.guest_pages = sum(count for _, count in runs)
        if memory.host_writes:
            host = page_runs(memory.host_writes)
            stats.host_pages = sum(count for _, count in host)
            runs += host
            memory.host_writes.clear()
        tables_changed = mm.mapping_changes != snapshot.mm.mapping_changes
        if tables_changed:
            tables = [(address // PAGE_SIZE, size // PAGE_SIZE) for address, size in
                      allocated_runs(mm.table_pool) + allocated_runs(snapshot.mm.table_pool)]
            stats.table_pages = sum(count for _, count in merge_runs(tables))
            runs += tables
        merged = merge_runs(runs)
        stats.runs = len(merged)
        if self.mechanism == ResetMechanism.COW:
            base = memory.host_address
            for first, count in merged:
                if _libc.madvise(base + first * PAGE_SIZE, count * PAGE_SIZE, MADV_DONTNEED):
                    raise SnapshotError(f"madvise(MADV_DONTNEED) of pages {first:#x}+{count}"
                                        f" failed: {os.strerror(ctypes.get_errno())}")
        else:
            for first, count in merged:
                self._copy_back(first * PAGE_SIZE, (first + count) * PAGE_SIZE)
        if self.mechanism == ResetMechanism.KEEP:
            self._resets_since_protect += 1
            if self._resets_since_protect >= RELEARN_RESETS:
                machine.protect_again(dirty_log)
                self._resets_since_protect = 0
        flush = tables_changed or mm.stale_translations
        # The record always (VMAs, pools, the break: a break moved inside its
        # page changes no mapping); it is a few short lists.
        mm.assign(snapshot.mm)
        if flush:
            # Every page the log held was restored above: nothing to carry.
            machine.flush_translations(carry_dirty_log=False)
            stats.flushed = True
        if stats.full:
            snapshot.cpu.restore(machine)
        else:
            self._quick_cpu_reset()
        self._restore_host_state()
        self.channel.clear_response()
        self.channel.calling = False
        self.wait = snapshot.wait
        self.last_reset = stats
        return stats

    def _copy_back(self, start: int, end: int) -> None:
        """Copy ``[start, end)`` (offsets in guest memory) back from the
        snapshot.  Holes of the snapshot's memfd are zeroed instead of
        copied: reading a hole through a shared mapping would make the
        kernel give the frozen copy a page of zeros it does not need."""
        target, source = self.machine.memory.buffer, self.snapshot.pristine
        extents = self.snapshot.extents
        # The last extent starting at or before *start* (or the first one).
        index = max(0, bisect.bisect_right(extents, (start, end)) - 1)
        while start < end:
            while index < len(extents) and extents[index][1] <= start:
                index += 1
            data = extents[index][0] if index < len(extents) else end
            if data > start:
                ctypes.memset(self.machine.memory.host_address + start, 0, min(data, end) - start)
                start = min(data, end)
                continue
            stop = min(extents[index][1], end)
            target[start:stop] = source[start:stop]
            start = stop

    def _quick_cpu_reset(self) -> None:
        """After a request that ended in a wait, at CPL 3: registers, the
        FPU/SSE state, FS/GS base if they moved; nothing else can change."""
        cpu = self.snapshot.cpu
        machine = self.machine
        cpu.restore_regs(machine)
        cpu.restore_fpu(machine)
        synced = machine.vcpu.run_state.s.regs.sregs
        fs_base, gs_base = cpu.msrs[x86.MSR_FS_BASE], cpu.msrs[x86.MSR_GS_BASE]
        if synced.fs.base != fs_base or synced.gs.base != gs_base:
            machine.vcpu.set_msrs({x86.MSR_FS_BASE: fs_base, x86.MSR_GS_BASE: gs_base})
            synced.fs.base, synced.gs.base = fs_base, gs_base

    # -- requests --------------------------------------------------------------
    def request(self, data: bytes, timeout: float | None = None, reset: bool = True) -> Reply:
        """Hand *data* to the program's pending ``minikvm_wait_request`` and
        run it until it waits again (the reply's ``response`` is what it
        passed to ``minikvm_respond`` meanwhile), exits, crashes or runs
        out of *timeout* seconds.  Then, if *reset*, reset the fork (always
        after a failure)."""
        if self.wait is None:
            raise SnapshotError("this fork is not waiting for a request (it exited, crashed "
                                "or timed out, or the snapshot was not taken at a "
                                "minikvm_wait_request): reset() it first")
        buffer, size = self.wait
        if len(data) > size:
            raise SnapshotError(f"request of {len(data)} bytes does not fit the program's "
                                f"buffer of {size} bytes")
        self.channel.clear_response()
        try:
            self.process.mm.write(buffer, data)
        except SyscallError as error:
            return self._finish(Reply(StopKind.CRASH, message=f"the request buffer {buffer:#x} is no "
                                                       f"longer writable: {error}"), reset)
        regs = self.machine.vcpu.run_state.s.regs.regs
        regs.rax = len(data)
        self.machine.return_from_syscall()
        kind, detail = run_until_stop(self.process, self.dispatcher, timeout)
        response = self.channel.take_response()
        if response is None:
            self.wait = detail if kind == StopKind.WAIT else None
            return self._finish(Reply(StopKind.FAILURE, message=RESPONSE_TOO_LARGE), reset)
        if kind == StopKind.WAIT:
            self.wait = detail
            return self._finish(Reply(StopKind.WAIT, response), reset)
        self.wait = None
        if kind == StopKind.EXIT:
            reply = Reply(StopKind.EXIT, response, f"the program exited with status {detail}",
                          exit_status=detail)
        elif kind == StopKind.RETURN:
            reply = Reply(StopKind.CRASH, response, "the program returned to the call-return stub "
                                             "outside a host call")
        else:
            reply = Reply(kind, response, str(detail))
        return self._finish(reply, True)

    def hand_over(self, data: bytes) -> None:
        """Give *data* to the pending ``minikvm_wait_request`` and say that
        no request follows (:class:`~minikvm.snapshot.channel.LastRequestChannel`),
        without running: the caller runs the process to its end itself —
        under a debugger (``snapshot run --gdb``).  SnapshotError when the
        fork does not wait or *data* does not fit."""
        if self.wait is None:
            raise SnapshotError("this fork is not waiting for a request: reset() it first")
        buffer, size = self.wait
        if len(data) > size:
            raise SnapshotError(f"request of {len(data)} bytes does not fit the program's "
                                f"buffer of {size} bytes")
        try:
            self.process.mm.write(buffer, data)
        except SyscallError as error:
            raise SnapshotError(f"the request buffer {buffer:#x} is no longer writable: "
                                f"{error}") from None
        self.channel = LastRequestChannel()      # this fork serves no request after it
        self.process.requests = self.channel
        self.machine.vcpu.run_state.s.regs.regs.rax = len(data)
        self.machine.return_from_syscall()
        self.wait = None

    def end(self, timeout: float | None = None) -> Reply:
        """Tell the program there are no more requests (its pending
        ``minikvm_wait_request`` returns 0) and run it to its exit.  The
        fork is then reset, ready for more."""
        if self.wait is None:
            raise SnapshotError("this fork is not waiting for a request: reset() it first")
        self.channel.clear_response()
        self.machine.vcpu.run_state.s.regs.regs.rax = 0
        self.machine.return_from_syscall()
        kind, detail = run_until_stop(self.process, self.dispatcher, timeout)
        response = self.channel.take_response()
        if response is None:
            self.wait = None
            return self._finish(Reply(StopKind.FAILURE, message=RESPONSE_TOO_LARGE), True)
        self.wait = None
        if kind == StopKind.EXIT:
            reply = Reply(StopKind.EXIT, response, "", exit_status=detail)
        elif kind == StopKind.WAIT:
            reply = Reply(StopKind.CRASH, response, "the program waited for a request again after "
                                             "being told there are none")
        else:
            reply = Reply(kind if kind != StopKind.RETURN else StopKind.CRASH, response, str(detail))
        return self._finish(reply, True)

    def _finish(self, reply: Reply, reset: bool) -> Reply:
        if reset:
            self.reset()
        return reply

    # -- calling the program's functions ------------------------------------------
    def call(self, symbol: str | int, *args: int | bytes | bytearray | str,
             timeout: float | None = None, reset: bool = True) -> int:
        """Call the program's function *symbol* (a name from its symbol
        table, or an address) with the System V AMD64 calling convention
        and return its RAX as a signed 64-bit integer.

        Integers (and pointers) go in RDI, RSI, RDX, RCX, R8, R9.  Bytes
        and str (encoded UTF-8, with a NUL added) are copied onto the
        program's stack, below its red zone, and their address is passed.
        The function starts with RSP + 8 a multiple of 16, as the ABI
        requires, and returns to the call-return stub, whose system call
        brings its result back.

        The fork must be stopped at a system call (as it is at the ready
        point).  With *reset* the fork is reset afterwards; without, the
        function's memory effects stay and the registers are put back as
        they were, so the program continues where it was.  If the function
        crashes, times out or exits, the fork is reset and
        :class:`GuestCallError` raised."""
        if self.wait is None and not self._at_syscall():
            raise SnapshotError("the fork is not stopped at a system call: reset() it first")
        if len(args) > MAX_REGISTER_ARGUMENTS:
            raise TypeError(f"call() passes at most {MAX_REGISTER_ARGUMENTS} arguments (in "
                            f"registers); got {len(args)}")
        address = self._function_address(symbol)
        machine = self.machine
        state = machine.vcpu.run_state
        regs = state.s.regs.regs
        saved = bytes(regs)
        saved_fpu = bytes(machine.vcpu.get_xsave()) if self.snapshot.cpu.xsave else None
        saved_sregs = None if state.s.regs.sregs.cs.dpl == 3 else machine.vcpu.get_sregs()
        values, stack = self._place_arguments(args, regs.rsp)
        stack -= 8
        self.process.mm.write_u64(stack, CALL_RETURN_ADDRESS)
        assert (stack + 8) % STACK_ALIGNMENT == 0, "the ABI wants RSP + 8 aligned to 16"
        for name, value in zip(("rdi", "rsi", "rdx", "rcx", "r8", "r9"), values):
            setattr(regs, name, value)
        regs.rax = 0                       # no vector registers used (variadic callees)
        regs.rsp = stack
        self._enter_user_function(address, saved_sregs)
        self.channel.calling = True
        try:
            kind, detail = run_until_stop(self.process, self.dispatcher, timeout)
        finally:
            self.channel.calling = False
        if kind == StopKind.RETURN:
            if reset:
                self.reset()
            else:
                if saved_sregs is not None:
                    machine.vcpu.set_sregs(saved_sregs)
                ctypes.memmove(ctypes.addressof(regs), saved, len(saved))
                state.kvm_dirty_regs |= k.KVM_SYNC_X86_REGS
                if saved_fpu is not None:
                    machine.vcpu.set_xsave(k.kvm_xsave.from_buffer_copy(saved_fpu))
            return signed64(detail)
        name = symbol if isinstance(symbol, str) else hex(symbol)
        if kind == StopKind.WAIT:
            message = f"{name}() called minikvm_wait_request instead of returning"
        elif kind == StopKind.EXIT:
            message = f"{name}() exited with status {detail}"
        else:
            message = f"{name}() did not return: {detail}"
        reply = Reply(kind if kind != StopKind.WAIT else StopKind.CRASH, b"", message,
                      exit_status=detail if kind == StopKind.EXIT else None)
        self.wait = None
        self.reset(full=True)
        raise GuestCallError(message, reply)

    def _enter_user_function(self, address: int, kernel_sregs: k.kvm_sregs | None) -> None:
        """Leave the pending system call for *address* instead of its caller.

        On PVM the vCPU is already at CPL 3: setting RIP is enough.  On
        hardware the exit left it at CPL 0 in the syscall stub, about to
        ``sysretq`` to RCX; RCX is the fourth argument here, so the host
        switches CS and SS to user mode itself rather than through sysretq."""
        state = self.machine.vcpu.run_state
        regs = state.s.regs.regs
        if kernel_sregs is not None:
            user = k.kvm_sregs.from_buffer_copy(bytes(kernel_sregs))
            user.cs = USER_CODE64.kvm_segment()
            user.ss = USER_DATA64.kvm_segment()
            self.machine.vcpu.set_sregs(user)
        regs.rip = address
        # RFLAGS as the program had them at its syscall (R11), with DF clear
        # as the ABI requires at a function's entry.
        regs.rflags = (regs.r11 & USER_RFLAGS_MASK & ~x86.RFLAGS_DF) | x86.RFLAGS_FIXED
        state.kvm_dirty_regs |= k.KVM_SYNC_X86_REGS

    def _at_syscall(self) -> bool:
        """Stopped at a system call's exit: after the stub's ``out``, or
        after a patched site's (:mod:`minikvm.machine.syscall_sites`)."""
        regs = self.machine.vcpu.run_state.s.regs.regs
        return regs.rip == SYSCALL_EXIT_RIP or after_patched_site(self.machine.mm, regs.rip,
                                                                  regs.rcx)

    def _function_address(self, symbol: str | int) -> int:
        if isinstance(symbol, int):
            return symbol
        symbols = self.snapshot.image.symbols
        try:
            address = symbols.address_of(symbol)
        except KeyError as error:
            raise SnapshotError(str(error.args[0])) from None
        found = symbols.lookup(address)
        if found is not None and found[0].kind == "ifunc":
            raise SnapshotError(f"{symbol} is an IFUNC resolver, not the function: call the "
                                f"implementation it selects instead")
        return address

    def _place_arguments(self, args: Sequence[int | bytes | bytearray | str],
                         rsp: int) -> tuple[list[int], int]:
        """Register values for *args*; buffers are copied below the red zone.
        Returns the values and the new (16-byte aligned) stack top."""
        top = rsp - RED_ZONE
        stack_vma = self.process.mm.find(rsp - 1)
        values = []
        for argument in args:
            if isinstance(argument, bool) or not isinstance(argument, (int, bytes, bytearray,
                                                                      memoryview, str)):
                raise TypeError(f"call() arguments are int, bytes or str, not "
                                f"{type(argument).__name__}")
            if isinstance(argument, int):
                values.append(argument & MASK64)
                continue
            data = argument.encode() + b"\0" if isinstance(argument, str) else bytes(argument)
            top = (top - len(data)) & ~(STACK_ALIGNMENT - 1)
            if stack_vma is None or top - PAGE_SIZE < stack_vma.start:
                raise SnapshotError(f"call() arguments of {len(data)} bytes do not fit on the "
                                    f"program's stack")
            self.process.mm.write(top, data)
            values.append(top)
        return values, top & ~(STACK_ALIGNMENT - 1)

    # -- lifetime ----------------------------------------------------------------
    def close(self) -> None:
        """Free the VM, its private memory and its files."""
        if self.machine is not None:
            self.process.close()
            self.machine = None

    def __enter__(self) -> "Fork":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
