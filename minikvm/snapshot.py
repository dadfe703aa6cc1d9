"""Layer 10 — snapshots: freeze a running program, fork it, reset it.

A program that calls ``minikvm_wait_request`` (``include/minikvm.h``) has
finished its start-up and is about to handle a request: that is the *ready
point*.  A :class:`Snapshot` taken there holds everything needed to be that
program again, at that instant:

* the **vCPU**: general registers, segments and control registers, the
  x87/SSE/AVX state (XSAVE), XCR0, the MSRs the guest depends on (STAR,
  LSTAR, CSTAR, SFMASK, FS/GS base, KERNEL_GS_BASE, PAT) and pending events;
* the **guest memory**: a frozen copy in a new memfd (only the pages that
  hold data are copied — ``SEEK_DATA``/``SEEK_HOLE`` and
  ``copy_file_range``, no byte passes through Python);
* the **host-side process state**: the VMA list, page pools and break, the
  page-table root, the fd table (with duplicated host fds), cwd, umask,
  signal dispositions, limits — every attribute of the
  :class:`~minikvm.process.Process`.

A :class:`Fork` is a new VM and vCPU started from a snapshot.  Its memory
is the snapshot's memfd mapped ``MAP_PRIVATE``: every page is shared with
the snapshot (and every other fork) until the fork writes it, when the host
kernel gives the fork its own copy.  After a request, :meth:`Fork.reset`
puts the fork back to the snapshot with work proportional to the pages the
request dirtied, by one of two mechanisms (``mechanism=``):

``"cow"`` — copy-on-write
    ``madvise(MADV_DONTNEED)`` on each dirtied range drops the fork's
    private copies; the next access sees the snapshot's page again.

``"copy"`` — dirty log
    the dirtied pages are copied back from the snapshot, in place.

Both need to know *which* pages were dirtied.  The guest's own stores are
in KVM's dirty log (``KVM_GET_DIRTY_LOG`` on a slot added with
``KVM_MEM_LOG_DIRTY_PAGES``).  Stores the *host* makes into guest memory —
a ``read()`` copying file data out, ``getrandom``, zeroing on ``munmap``,
page-table edits — bypass the guest's MMU and are not in that log, so the
host records them itself (:attr:`GuestMemory.host_writes
<minikvm.memory.GuestMemory.host_writes>`, and a counter of mapping
changes for the page tables); the reset uses the union.  When the page
tables were restored, the vCPU's cached translations are flushed
(:meth:`Machine.flush_translations <minikvm.machine.Machine.flush_translations>`):
PVM's shadow MMU would otherwise keep entries for mappings that no longer exist.

:meth:`Fork.request` hands one request to a fork and returns its response;
:meth:`Fork.call` calls a function of the program by its symbol, with the
System V calling convention.  :func:`save` and :func:`load` write a
snapshot to a file and read it back.

What a snapshot cannot make fresh: every fork starts with the same memory,
so state a program derived from randomness *before* the ready point is the
same in every fork — a PRNG it seeded, glibc's stack-protector canary and
pointer guard (from ``AT_RANDOM``).  ``getrandom`` and ``/dev/urandom``
give fresh bytes in every fork and after every reset; seed after the wait.
"""

from __future__ import annotations

import base64
import copy
import ctypes
import errno
import fcntl
import hashlib
import json
import os
import stat as stat_module
import struct
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from minikvm import ioctl as k
from minikvm import x86
from minikvm.elf import ElfImage, load_elf
from minikvm.errors import KvmError, MinikvmError, SyscallError
from minikvm.fdtable import DeviceFile, FdEntry, FdTable, HostFile, OpenFile, Pipe, PipeEnd
from minikvm.layout import PAGE_SIZE
from minikvm.machine import (CALL_RETURN_ADDRESS, SYSCALL_EXIT_RIP, USER_RFLAGS_MASK, Machine,
                             Stop)
from minikvm.memory import GuestMemory
from minikvm.mm import AddressSpace, PagePool, Vma
from minikvm.process import Process, ProcessExit, ProcessKilled
from minikvm.segments import USER_CODE64, USER_DATA64
from minikvm.syscalls.base import MASK64, signed64
from minikvm.syscalls.dispatch import Dispatcher
from minikvm.syscalls.trace import Tracer

#: The MSRs a snapshot keeps.  A program at CPL 3 can change FS/GS base
#: (``arch_prctl``, ``wrfsbase``); the others are the machine's set-up, kept
#: so that a snapshot file describes the whole CPU.  The TSC is not kept:
#: the guest's clock keeps running forward across a reset, as a real one does.
SAVED_MSRS = (x86.MSR_STAR, x86.MSR_LSTAR, x86.MSR_CSTAR, x86.MSR_SYSCALL_MASK,
              x86.MSR_FS_BASE, x86.MSR_GS_BASE, x86.MSR_KERNEL_GS_BASE, x86.MSR_IA32_CR_PAT)
MECHANISMS = ("cow", "copy")
#: Bytes below RSP that a function may use without moving RSP (System V
#: ABI §3.2.2); a host call puts its arguments below it.
RED_ZONE = 128
STACK_ALIGNMENT = 16
MAX_REGISTER_ARGUMENTS = 6
MADV_DONTNEED = 4
MFD_ALLOW_SEALING = 2
F_ADD_SEALS = 1033
F_SEAL_SHRINK = 0x0002
F_SEAL_GROW = 0x0004
F_SEAL_FUTURE_WRITE = 0x0010
SEEK_DATA = 3
SEEK_HOLE = 4
COPY_CHUNK = 1 << 30

_libc = ctypes.CDLL(None, use_errno=True)
_libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]


class SnapshotError(MinikvmError):
    """A snapshot cannot be taken, forked, saved or loaded (the message says why)."""


class GuestCallError(SnapshotError):
    """A function called with :meth:`Fork.call` did not return: it crashed,
    timed out or exited.  ``reply`` tells how."""

    def __init__(self, message: str, reply: "Reply") -> None:
        super().__init__(message)
        self.reply = reply


# ---------------------------------------------------------------------------
# Leaving Machine.run at the points the host cares about
# ---------------------------------------------------------------------------

class WaitingForRequest(BaseException):
    """The guest called ``minikvm_wait_request(buffer, size)``: it is ready
    for the next request.  A BaseException, like ProcessExit, so it passes
    the dispatcher's handler-bug net and leaves :meth:`Machine.run`; the
    vCPU stays at the syscall's exit, to be answered later."""

    def __init__(self, buffer: int, size: int) -> None:
        super().__init__(buffer, size)
        self.buffer = buffer
        self.size = size


class CallReturned(BaseException):
    """A function the host called returned (through the call-return stub)."""

    def __init__(self, value: int) -> None:
        super().__init__(value)
        self.value = value


class RequestChannel:
    """The request channel of a snapshotted process (see
    :mod:`minikvm.syscalls.requests`): waits leave the run loop, responses
    are collected here."""

    def __init__(self) -> None:
        self.response: list[bytes] = []
        self.calling = False

    def wait(self, proc: Process, buffer: int, size: int) -> int:
        raise WaitingForRequest(buffer, size)

    def respond(self, proc: Process, data: bytes) -> None:
        self.response.append(data)

    def call_returned(self, proc: Process, value: int) -> int:
        raise CallReturned(value)


@dataclass
class Reply:
    """How one request (or call) ended.

    ``status`` is ``"ok"`` (the program answered and waits for the next
    request), ``"exit"`` (it exited; ``exit_status``), ``"crash"`` (a CPU
    exception or a fatal signal), ``"timeout"`` or ``"failure"`` (KVM could
    not run it).  ``response`` is what the program passed to
    ``minikvm_respond``, ``message`` the one-line report when not ok.
    """
    status: str
    response: bytes = b""
    message: str = ""
    exit_status: int | None = None
    value: int | None = None       # a call's return value

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def run_until_stop(process: Process, dispatcher: Dispatcher,
                   timeout: float | None) -> tuple[str, Any]:
    """Run *process* until it waits for a request, a host call returns, it
    exits, crashes or times out.  Returns ``(kind, detail)``: ``("wait",
    (buffer, size))``, ``("return", value)``, ``("exit", status)``,
    ``("crash", message)``, ``("timeout", message)``, ``("failure", message)``.

    Unlike :meth:`Process.run` this keeps the process usable afterwards
    (its files stay open): the caller snapshots or resets it."""
    try:
        stop: Stop = process.machine.run(dispatcher, timeout)
    except WaitingForRequest as waiting:
        # Not the exception itself: its traceback holds the run loop's
        # frames, which hold views of kvm_run and would keep it mapped.
        return "wait", (waiting.buffer, waiting.size)
    except CallReturned as returned:
        return "return", returned.value
    except ProcessExit as done:
        return "exit", done.status & 0xFF
    except ProcessKilled as killed:
        return "crash", f"{killed.signal.name}: {killed.reason}"
    if stop.kind == "timeout":
        return "timeout", f"timed out: {stop.message}"
    return stop.kind, stop.message


# ---------------------------------------------------------------------------
# The vCPU
# ---------------------------------------------------------------------------

@dataclass
class CpuState:
    """Everything KVM keeps about the vCPU that the guest can observe,
    as the kernel's structs (raw bytes, so a file can carry them)."""
    regs: bytes                    # kvm_regs
    sregs: bytes                   # kvm_sregs
    fpu: bytes                     # kvm_xsave when ``xsave``, else kvm_fpu
    xsave: bool
    xcrs: bytes | None             # kvm_xcrs, when KVM_CAP_XCRS
    msrs: dict[int, int]
    events: bytes                  # kvm_vcpu_events

    @classmethod
    def capture(cls, machine: Machine) -> "CpuState":
        """Read the vCPU's state (at an exit: the registers the run loop
        sees in ``kvm_run``, including any the host changed since)."""
        vcpu = machine.vcpu
        if machine.exits:
            regs = bytes(vcpu.run_state.s.regs.regs)
        else:
            regs = bytes(vcpu.get_regs())
        try:
            fpu, xsave = bytes(vcpu.get_xsave()), True
        except KvmError:
            fpu, xsave = bytes(vcpu.get_fpu()), False
        try:
            xcrs: bytes | None = bytes(vcpu.get_xcrs())
        except KvmError:
            xcrs = None
        return cls(regs, bytes(vcpu.get_sregs()), fpu, xsave, xcrs,
                   vcpu.get_msrs(SAVED_MSRS), bytes(vcpu.get_vcpu_events()))

    @property
    def at_syscall(self) -> bool:
        """True when taken at a system call's exit (RIP after the stub's ``out``)."""
        return k.kvm_regs.from_buffer_copy(self.regs).rip == SYSCALL_EXIT_RIP

    def restore(self, machine: Machine) -> None:
        """Load all of it into *machine*'s vCPU (a fork's first start, or a
        reset after a crash, a timeout or an exit)."""
        vcpu = machine.vcpu
        sregs = k.kvm_sregs.from_buffer_copy(self.sregs)
        vcpu.set_sregs(sregs)
        if self.xcrs is not None:
            xcrs = k.kvm_xcrs.from_buffer_copy(self.xcrs)
            if xcrs.nr_xcrs:
                _set_xcrs(vcpu, xcrs)
        self.restore_fpu(machine)
        vcpu.set_msrs(self.msrs)
        vcpu.set_vcpu_events(k.kvm_vcpu_events.from_buffer_copy(self.events))
        vcpu.set_regs(k.kvm_regs.from_buffer_copy(self.regs))
        # Mirror them in kvm_run, which the run loop and return_from_syscall
        # read (KVM loads only the classes marked dirty: the registers).
        state = vcpu.run_state
        ctypes.memmove(ctypes.addressof(state.s.regs.sregs), self.sregs, len(self.sregs))
        self.restore_regs(machine)

    def restore_regs(self, machine: Machine) -> None:
        """Put the general registers back through ``kvm_run`` (no ioctl:
        KVM loads them on the next KVM_RUN)."""
        state = machine.vcpu.run_state
        ctypes.memmove(ctypes.addressof(state.s.regs.regs), self.regs, len(self.regs))
        state.kvm_dirty_regs |= k.KVM_SYNC_X86_REGS

    def restore_fpu(self, machine: Machine) -> None:
        if self.xsave:
            machine.vcpu.set_xsave(k.kvm_xsave.from_buffer_copy(self.fpu))
        else:
            machine.vcpu.set_fpu(k.kvm_fpu.from_buffer_copy(self.fpu))


def _set_xcrs(vcpu: Any, xcrs: k.kvm_xcrs) -> None:
    from minikvm.kvm import ioctl
    ioctl(vcpu.fd, k.KVM_SET_XCRS, xcrs)


# ---------------------------------------------------------------------------
# Memory
# ---------------------------------------------------------------------------

def data_extents(fd: int, size: int) -> list[tuple[int, int]]:
    """The ``(offset, length)`` runs of *fd* that hold data (tmpfs reports
    pages never written as holes): ``lseek(SEEK_DATA)`` / ``SEEK_HOLE``."""
    extents = []
    offset = 0
    while offset < size:
        try:
            start = os.lseek(fd, offset, SEEK_DATA)
        except OSError as error:
            if error.errno == errno.ENXIO:  # no data after offset
                break
            raise
        end = min(os.lseek(fd, start, SEEK_HOLE), size)
        extents.append((start, end - start))
        offset = end
    return extents


def _new_memfd(size: int, name: str) -> int:
    fd = os.memfd_create(name, os.MFD_CLOEXEC | MFD_ALLOW_SEALING)
    os.ftruncate(fd, size)
    return fd


def _copy_range(source: int, target: int, offset: int, length: int,
                target_offset: int | None = None) -> None:
    """Copy ``length`` bytes between files in the kernel, not through Python:
    ``copy_file_range``, or ``sendfile`` where the kernel refuses to copy
    across file systems (memfd to a disk file, ``EXDEV``)."""
    target_offset = offset if target_offset is None else target_offset
    done = 0
    while done < length:
        try:
            moved = os.copy_file_range(source, target, min(length - done, COPY_CHUNK),
                                       offset + done, target_offset + done)
        except OSError as error:
            if error.errno not in (errno.EXDEV, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOSYS):
                raise
            os.lseek(target, target_offset + done, os.SEEK_SET)
            moved = os.sendfile(target, source, offset + done, min(length - done, COPY_CHUNK))
        if moved == 0:
            raise SnapshotError(f"copying stopped at {offset + done:#x}: the source is "
                                f"shorter than expected")
        done += moved


def _allocated(pool: PagePool) -> list[tuple[int, int]]:
    """The runs of *pool* in use: the complement of its free runs."""
    runs = []
    cursor = pool.start
    for address, size in pool.free_runs:
        if address > cursor:
            runs.append((cursor, address - cursor))
        cursor = address + size
    if cursor < pool.end:
        runs.append((cursor, pool.end - cursor))
    return runs


def _allocated_end(pool: PagePool) -> int:
    """The end of the highest allocated page of *pool* (its start if none is)."""
    if pool.free_runs and pool.free_runs[-1][0] + pool.free_runs[-1][1] == pool.end:
        return pool.free_runs[-1][0]
    return pool.end


def freeze_memory(memory: GuestMemory, mm: AddressSpace) -> int:
    """A new memfd with the same contents as *memory* (a frozen copy).

    The owner's memfd is copied extent by extent with ``copy_file_range``
    (holes stay holes).  A fork's memory is a private mapping whose file is
    another snapshot: its pages are written from the mapping — the ranges
    that can hold data, that is the file's data and every allocated page."""
    fd = _new_memfd(memory.size, "minikvm-snapshot")
    try:
        if memory.shared:
            for offset, length in data_extents(memory.fd, memory.size):
                _copy_range(memory.fd, fd, offset, length)
        else:
            ranges = [(offset + memory.base, length)
                      for offset, length in data_extents(memory.fd, memory.size)]
            ranges += _allocated(mm.table_pool) + _allocated(mm.user_pool)
            for start, length in _merge_runs(ranges):
                os.pwrite(fd, memory.view(start, length), start - memory.base)
        fcntl.fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _seal_frozen(fd: int) -> None:
    """No writable shared mapping of the frozen copy may be made any more
    (the snapshot's own read view was made before): forks map it private."""
    fcntl.fcntl(fd, F_ADD_SEALS, F_SEAL_FUTURE_WRITE)


def _merge_runs(runs: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sort ``(start, length)`` runs and merge overlapping or touching ones."""
    merged: list[list[int]] = []
    for start, length in sorted(runs):
        if merged and start <= merged[-1][0] + merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], start + length - merged[-1][0])
        else:
            merged.append([start, length])
    return [(start, length) for start, length in merged]


#: The dirty bitmap is searched in chunks of this many bytes: an all-zero
#: chunk is skipped by one comparison (a memcmp in C).
BITMAP_CHUNK = 512
_ZERO_CHUNK = bytes(BITMAP_CHUNK)


def bitmap_runs(bitmap: bytes) -> list[tuple[int, int]]:
    """Runs of set bits ``(first_page, count)`` in a dirty bitmap (bit *n*
    of the little-endian bitmap is page *n*).  All-zero chunks are skipped
    by a comparison done in C; a non-zero chunk is taken apart as one
    integer, a run of ones at a time.  So the cost follows the dirty pages
    (and, slightly, the memory size: 64 comparisons for 1 GiB)."""
    runs = []
    for offset in range(0, len(bitmap), BITMAP_CHUNK):
        chunk = bitmap[offset:offset + BITMAP_CHUNK]
        if chunk == _ZERO_CHUNK[:len(chunk)]:
            continue
        bits = int.from_bytes(chunk, "little")
        position = offset * 8
        while bits:
            skip = (bits & -bits).bit_length() - 1        # zeros before the next one
            bits >>= skip
            position += skip
            ones = (~bits & (bits + 1)).bit_length() - 1  # length of this run of ones
            runs.append((position, ones))
            bits >>= ones
            position += ones
    return runs


def page_runs(pages: Iterable[int]) -> list[tuple[int, int]]:
    """``(first_page, count)`` runs of consecutive page numbers."""
    runs: list[list[int]] = []
    for page in sorted(pages):
        if runs and runs[-1][0] + runs[-1][1] == page:
            runs[-1][1] += 1
        elif not runs or page >= runs[-1][0] + runs[-1][1]:
            runs.append([page, 1])
    return [(first, count) for first, count in runs]


# ---------------------------------------------------------------------------
# Host-side process state
# ---------------------------------------------------------------------------

#: Process attributes that are not copied: the machine and its memory
#: manager (a fork has its own), the read-only program image and policy
#: (shared), the fd table (copied with duplicated host fds, below), the
#: entropy source (fresh per fork) and the request channel (per fork).
#: Every other attribute is plain data and is copied, so a field someone
#: adds to Process is part of snapshots without a change here.
NOT_COPIED = frozenset({"machine", "mm", "image", "policy", "fds", "random", "requests"})
_IMMUTABLE = (int, float, str, bytes, bool, type(None), frozenset)
_MISSING = object()
#: File kinds whose whole state is their attributes and their host fd's
#: position: a reset may keep them when those did not change.
_PLAIN_FILE_KINDS = ("host", "device")


def capture_process_state(process: Process) -> dict[str, Any]:
    """Every plain-data attribute of *process*, deep-copied."""
    state = {}
    for name, value in vars(process).items():
        if name in NOT_COPIED:
            continue
        try:
            state[name] = value if isinstance(value, _IMMUTABLE) else copy.deepcopy(value)
        except Exception as error:
            raise SnapshotError(f"cannot snapshot process attribute {name!r} "
                                f"({type(value).__name__}): {error}") from None
    return state


def restore_process_state(process: Process, state: dict[str, Any]) -> None:
    """Put the snapshot's values back; one still equal to the snapshot's is
    left alone (it is the process's own copy already), so a reset after a
    request that changed nothing copies nothing."""
    current = vars(process)
    immutable = {name: value for name, value in state.items() if isinstance(value, _IMMUTABLE)}
    current.update(immutable)
    for name, value in state.items():
        if name not in immutable and current.get(name, _MISSING) != value:
            current[name] = copy.deepcopy(value)


def duplicate_host_fd(host_fd: int) -> int:
    """A host fd for a copy of an open file.

    A regular file or a directory is *reopened* through ``/proc/self/fd``
    (its own file offset, set to the original's), so a fork reading a file
    does not move the snapshot's or another fork's position.  Anything else
    (a pipe, a terminal, a socket) is ``dup``'d: it has no position to keep
    apart.  If reopening is not possible (no /proc), ``dup`` is used."""
    mode = os.fstat(host_fd).st_mode
    if stat_module.S_ISREG(mode) or stat_module.S_ISDIR(mode):
        flags = fcntl.fcntl(host_fd, fcntl.F_GETFL) & ~(os.O_CREAT | os.O_TRUNC | os.O_EXCL)
        try:
            fresh = os.open(f"/proc/self/fd/{host_fd}", flags | os.O_CLOEXEC)
        except OSError:
            return os.dup(host_fd)
        if stat_module.S_ISREG(mode):
            os.lseek(fresh, os.lseek(host_fd, 0, os.SEEK_CUR), os.SEEK_SET)
        return fresh
    return os.dup(host_fd)


def copy_fd_entries(entries: dict[int, FdEntry]) -> dict[int, FdEntry]:
    """Copies of the fd table's entries, with host fds of their own.  One
    ``deepcopy`` memo for the whole table keeps what was shared shared
    (the two ends of a pipe, dup'd fds)."""
    memo: dict[int, Any] = {}
    copies: dict[int, FdEntry] = {}
    fresh_host_fds: dict[int, OpenFile] = {}
    try:
        for fd, entry in sorted(entries.items()):
            file = entry.file
            if id(file) not in memo and file.host_fd is not None:
                original_fd = file.host_fd
                clone = copy.deepcopy(file, memo)
                clone.host_fd = duplicate_host_fd(original_fd)
                fresh_host_fds[id(clone)] = clone
            else:
                clone = copy.deepcopy(file, memo)
            copies[fd] = FdEntry(clone, entry.cloexec)
    except SnapshotError:
        raise
    except Exception as error:
        for clone in fresh_host_fds.values():
            clone.close()
        raise SnapshotError(f"cannot copy the fd table: {type(error).__name__}: {error}") from None
    return copies


def install_fd_entries(table: FdTable, entries: dict[int, FdEntry]) -> None:
    """Put copied entries into *table* (which must be empty)."""
    for fd, entry in entries.items():
        table.install_at(fd, entry.file, entry.cloexec)


def close_fd_entries(entries: dict[int, FdEntry]) -> None:
    closed: set[int] = set()
    for entry in entries.values():
        if id(entry.file) not in closed:
            closed.add(id(entry.file))
            entry.file.close()


# ---------------------------------------------------------------------------
# The snapshot
# ---------------------------------------------------------------------------

class Snapshot:
    """A frozen program: memory, vCPU and host state.  Take one with
    :meth:`take` (or :func:`load` one from a file); start copies with
    :meth:`fork`.  Close it when done: it holds a memfd and host fds."""

    def __init__(self, *, memory: GuestMemory, mm: AddressSpace, cpu: CpuState,
                 cpuid: ctypes.Structure, process_state: dict[str, Any],
                 fds: dict[int, FdEntry], max_fds: int, image: ElfImage, policy: Any,
                 wait: tuple[int, int] | None) -> None:
        self.memory = memory
        self.mm = mm
        self.cpu = cpu
        self.cpuid = cpuid
        self.process_state = process_state
        self.fds = fds
        self.max_fds = max_fds
        self.image = image
        self.policy = policy
        #: ``(buffer, size)`` of the ``minikvm_wait_request`` the program is
        #: in, or None when the snapshot was taken elsewhere.
        self.wait = wait
        #: The read view of the frozen pages, for the ``"copy"`` reset.
        self.pristine = memory.buffer

    @classmethod
    def take(cls, process: Process, wait: tuple[int, int] | None = None) -> "Snapshot":
        """Freeze *process*, which must not be running (between two runs,
        e.g. after :func:`run_until_stop` returned ``"wait"``).  It can go
        on running afterwards: the snapshot is a copy."""
        machine = process.machine
        cpu = CpuState.capture(machine)
        fd = freeze_memory(machine.memory, process.mm)
        memory = GuestMemory(machine.memory.size, machine.memory.base, fd=fd, shared=True)
        memory.owns_fd = True
        _seal_frozen(fd)
        try:
            cpuid = machine.vcpu.get_cpuid2()
            fds = copy_fd_entries(process.fds.entries)
        except BaseException:
            memory.close()
            raise
        try:
            state = capture_process_state(process)
        except BaseException:
            close_fd_entries(fds)
            memory.close()
            raise
        return cls(memory=memory, mm=process.mm.clone(memory), cpu=cpu, cpuid=cpuid,
                   process_state=state, fds=fds, max_fds=process.fds.max_fds,
                   image=process.image, policy=process.policy, wait=wait)

    def fork(self, mechanism: str = "cow", tracer: Tracer | None = None) -> "Fork":
        """A new VM running a copy of this snapshot (see :class:`Fork`)."""
        return Fork(self, mechanism, tracer)

    @property
    def memory_size(self) -> int:
        return self.memory.size

    def resident_bytes(self) -> int:
        """Bytes of guest memory the frozen copy holds (its data extents)."""
        return sum(length for _, length in data_extents(self.memory.fd, self.memory.size))

    def close(self) -> None:
        """Free the frozen memory and the duplicated host fds."""
        if self.memory is not None:
            self.mm.page_tables.words.release()
            self.pristine = None
            self.memory.close()
            self.memory = None
            close_fd_entries(self.fds)
            self.fds = {}

    def __enter__(self) -> "Snapshot":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def snapshot_at_ready_point(process: Process, dispatcher: Dispatcher | None = None,
                            timeout: float | None = None) -> tuple[Snapshot | None, Reply]:
    """Run *process* to its first ``minikvm_wait_request`` and snapshot it
    there.  Returns ``(snapshot, reply)``; the snapshot is None (and the
    reply says why) when the program exited, crashed or timed out first."""
    process.requests = process.requests or RequestChannel()
    dispatcher = dispatcher or Dispatcher(process)
    kind, detail = run_until_stop(process, dispatcher, timeout)
    if kind == "wait":
        return Snapshot.take(process, detail), Reply("ok")
    if kind == "exit":
        return None, Reply("exit", message=f"the program exited with status {detail} before "
                                            "its first minikvm_wait_request",
                           exit_status=detail)
    return None, Reply(kind, message=str(detail))


# ---------------------------------------------------------------------------
# A fork
# ---------------------------------------------------------------------------

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

    def __init__(self, snapshot: Snapshot, mechanism: str = "cow",
                 tracer: Tracer | None = None) -> None:
        if mechanism not in MECHANISMS:
            raise ValueError(f"reset mechanism {mechanism!r}: expected one of {MECHANISMS}")
        if snapshot.memory is None:
            raise SnapshotError("this snapshot is closed")
        self.snapshot = snapshot
        self.mechanism = mechanism
        source = snapshot.memory
        memory = GuestMemory(source.size, source.base, fd=source.fd, shared=False)
        try:
            mm = snapshot.mm.clone(memory)
            self.machine = Machine(memory=memory, mm=mm, dirty_logging=True,
                                   cpuid=snapshot.cpuid)
        except BaseException:
            memory.close()
            raise
        memory.host_writes = set()
        try:
            snapshot.cpu.restore(self.machine)
            state = snapshot.process_state
            self.process = Process(self.machine, snapshot.image, snapshot.policy,
                                   state.get("argv", []), state.get("env", []),
                                   state.get("exe_path", snapshot.image.name),
                                   state.get("cwd", "/"))
            self.process.fds.max_fds = snapshot.max_fds
            self._files: dict[int, tuple[FdEntry, bool, dict[str, Any]]] | None = None
            self._rewind: list[tuple[int, int]] = []
            self._restore_host_state()
        except BaseException:
            self.machine.close()
            raise
        self.process.random = os.urandom  # fresh entropy in every fork
        self.channel = RequestChannel()
        self.process.requests = self.channel
        self.dispatcher = Dispatcher(self.process, tracer)
        #: ``(buffer, size)`` of the wait the fork is in, or None after an
        #: exit/crash/timeout (then only :meth:`reset` helps).
        self.wait = snapshot.wait
        self.last_reset = ResetStats(full=True)

    # -- state -------------------------------------------------------------------
    def _restore_host_state(self) -> None:
        restore_process_state(self.process, self.snapshot.process_state)
        self._restore_files()

    def _restore_files(self) -> None:
        """The fd table as in the snapshot.  When the request left it as the
        last reset made it (same entries, same attributes) only the file
        positions are rewound; otherwise it is rebuilt from the snapshot."""
        table = self.process.fds
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
                    or entry.file.kind not in _PLAIN_FILE_KINDS
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
        limit = max(_allocated_end(mm.user_pool), _allocated_end(snapshot.mm.user_pool))
        runs = bitmap_runs(machine.take_dirty_log()[:-(-limit // (PAGE_SIZE * 8))])
        stats.guest_pages = sum(count for _, count in runs)
        if memory.host_writes:
            host = page_runs(memory.host_writes)
            stats.host_pages = sum(count for _, count in host)
            runs += host
            memory.host_writes.clear()
        tables_changed = mm.mapping_changes != snapshot.mm.mapping_changes
        if tables_changed:
            tables = [(address // PAGE_SIZE, size // PAGE_SIZE) for address, size in
                      _allocated(mm.table_pool) + _allocated(snapshot.mm.table_pool)]
            stats.table_pages = sum(count for _, count in _merge_runs(tables))
            runs += tables
        merged = _merge_runs(runs)
        stats.runs = len(merged)
        if self.mechanism == "cow":
            base = memory.host_address
            for first, count in merged:
                if _libc.madvise(base + first * PAGE_SIZE, count * PAGE_SIZE, MADV_DONTNEED):
                    raise SnapshotError(f"madvise(MADV_DONTNEED) of pages {first:#x}+{count}"
                                        f" failed: {os.strerror(ctypes.get_errno())}")
        else:
            for first, count in merged:
                self._copy_back(first * PAGE_SIZE, (first + count) * PAGE_SIZE)
        if tables_changed or mm.stale_translations:
            mm.assign(snapshot.mm)
            machine.flush_translations()
            stats.flushed = True
        if stats.full:
            snapshot.cpu.restore(machine)
        else:
            self._quick_cpu_reset()
        self._restore_host_state()
        self.process.random = os.urandom
        self.channel.response = []
        self.channel.calling = False
        self.wait = snapshot.wait
        self.last_reset = stats
        return stats

    def _copy_back(self, start: int, end: int) -> None:
        """Copy ``[start, end)`` (offsets in guest memory) back from the
        snapshot.  Holes of the snapshot's memfd are zeroed instead of
        copied: reading a hole through a shared mapping would make the
        kernel give the frozen copy a page of zeros it does not need."""
        target, source, fd = self.machine.memory.buffer, self.snapshot.pristine, \
            self.snapshot.memory.fd
        while start < end:
            try:
                data = os.lseek(fd, start, SEEK_DATA)
            except OSError:   # ENXIO: only holes from here to the end of the file
                data = end
            if data > start:
                ctypes.memset(self.machine.memory.host_address + start, 0, min(data, end) - start)
                start = min(data, end)
                continue
            stop = min(os.lseek(fd, start, SEEK_HOLE), end)
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
        self.channel.response = []
        try:
            self.process.mm.write(buffer, data)
        except SyscallError as error:
            return self._finish(Reply("crash", message=f"the request buffer {buffer:#x} is no "
                                                       f"longer writable: {error}"), reset)
        regs = self.machine.vcpu.run_state.s.regs.regs
        regs.rax = len(data)
        self.machine.return_from_syscall()
        kind, detail = run_until_stop(self.process, self.dispatcher, timeout)
        response = b"".join(self.channel.response)
        if kind == "wait":
            self.wait = detail
            return self._finish(Reply("ok", response), reset)
        self.wait = None
        if kind == "exit":
            reply = Reply("exit", response, f"the program exited with status {detail}",
                          exit_status=detail)
        elif kind == "return":
            reply = Reply("crash", response, "the program returned to the call-return stub "
                                             "outside a host call")
        else:
            reply = Reply(kind, response, str(detail))
        return self._finish(reply, True)

    def end(self, timeout: float | None = None) -> Reply:
        """Tell the program there are no more requests (its pending
        ``minikvm_wait_request`` returns 0) and run it to its exit.  The
        fork is then reset, ready for more."""
        if self.wait is None:
            raise SnapshotError("this fork is not waiting for a request: reset() it first")
        self.channel.response = []
        self.machine.vcpu.run_state.s.regs.regs.rax = 0
        self.machine.return_from_syscall()
        kind, detail = run_until_stop(self.process, self.dispatcher, timeout)
        response = b"".join(self.channel.response)
        self.wait = None
        if kind == "exit":
            reply = Reply("exit", response, "", exit_status=detail)
        elif kind == "wait":
            reply = Reply("crash", response, "the program waited for a request again after "
                                             "being told there are none")
        else:
            reply = Reply(kind if kind != "return" else "crash", response, str(detail))
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
        if kind == "return":
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
        if kind == "wait":
            message = f"{name}() called minikvm_wait_request instead of returning"
        elif kind == "exit":
            message = f"{name}() exited with status {detail}"
        else:
            message = f"{name}() did not return: {detail}"
        reply = Reply(kind if kind != "wait" else "crash", b"", message,
                      exit_status=detail if kind == "exit" else None)
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
        return self.machine.vcpu.run_state.s.regs.regs.rip == SYSCALL_EXIT_RIP

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


# ---------------------------------------------------------------------------
# Snapshot files
# ---------------------------------------------------------------------------
#
# A snapshot file, version 1 (all integers little-endian)::
#
#     offset  size  what
#     0       8     magic "MKVMSNAP"
#     8       4     format version (1)
#     12      4     flags (0)
#     16      8     H: length of the header
#     24      H     header: JSON, UTF-8 (what the sections are, the
#                   host-side state, the policy)
#     24+H    P     payload: the sections, back to back (their offsets
#                   and lengths, relative to the payload, are in the
#                   header; P is header["payload_length"])
#     24+H+P  32    SHA-256 of every byte before it
#
# The memory section holds the data extents of the frozen memfd, in the
# order of header["memory"]["extents"]; holes are not stored.  Loading
# checks the size, the magic, the version and the checksum before it
# creates anything, so a truncated or corrupted file is refused whole.

MAGIC = b"MKVMSNAP"
FORMAT_VERSION = 1
PREAMBLE = struct.Struct("<8sIIQ")
DIGEST_SIZE = hashlib.sha256().digest_size
READ_CHUNK = 1 << 20
MAX_HEADER = 64 << 20
#: The policy fields a file records, so ``snapshot run`` sandboxes the
#: program exactly as it was when the snapshot was taken.
STDIO_PREFIX = "<stdio "


def _encode(value: Any, where: str) -> Any:
    """Plain data as JSON, tagging what JSON lacks (bytes, tuples, int keys)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (bytes, bytearray)):
        return {"$bytes": base64.b64encode(bytes(value)).decode()}
    if isinstance(value, tuple):
        return {"$tuple": [_encode(v, where) for v in value]}
    if isinstance(value, list):
        return [_encode(v, where) for v in value]
    if isinstance(value, (set, frozenset)):
        return {"$set": [_encode(v, where) for v in sorted(value, key=repr)],
                "frozen": isinstance(value, frozenset)}
    if isinstance(value, dict):
        return {"$dict": [[_encode(k, where), _encode(v, where)] for k, v in value.items()]}
    raise SnapshotError(f"{where} holds a {type(value).__name__}: a snapshot file can only "
                        f"store plain data")


def _decode(value: Any) -> Any:
    if isinstance(value, list):
        return [_decode(v) for v in value]
    if not isinstance(value, dict):
        return value
    if "$bytes" in value:
        return base64.b64decode(value["$bytes"])
    if "$tuple" in value:
        return tuple(_decode(v) for v in value["$tuple"])
    if "$set" in value:
        items = [_decode(v) for v in value["$set"]]
        return frozenset(items) if value.get("frozen") else set(items)
    if "$dict" in value:
        return {_decode(k): _decode(v) for k, v in value["$dict"]}
    raise SnapshotError(f"unknown tagged value in the header: {sorted(value)}")


def _pool_state(pool: PagePool) -> dict[str, Any]:
    return {"start": pool.start, "end": pool.end, "used": pool.used,
            "free_runs": [list(run) for run in pool.free_runs]}


def _load_pool(state: dict[str, Any]) -> PagePool:
    pool = PagePool(state["start"], state["end"])
    pool.free_runs = [tuple(run) for run in state["free_runs"]]
    pool.used = state["used"]
    return pool


def _mm_state(mm: AddressSpace) -> dict[str, Any]:
    other = {}
    for name, value in vars(mm).items():
        if name in ("memory", "page_tables", "vmas", "_starts") or isinstance(value, PagePool):
            continue
        other[name] = _encode(value, f"the address space's {name!r}")
    return {"vmas": [[v.start, v.end, v.prot, v.phys, v.name] for v in mm.vmas],
            "pools": {name: _pool_state(value) for name, value in vars(mm).items()
                      if isinstance(value, PagePool)},
            "root": mm.page_tables.root, "other": other}


def _load_mm(memory: GuestMemory, state: dict[str, Any]) -> AddressSpace:
    """An AddressSpace with the file's record.  Made *before* the memory
    is filled: the constructor zeroes a page-table page, the file's pages
    then overwrite it."""
    mm = AddressSpace(memory)
    mm.vmas = [Vma(start, end, prot, phys, name) for start, end, prot, phys, name in state["vmas"]]
    mm._starts = [vma.start for vma in mm.vmas]
    for name, pool in state["pools"].items():
        setattr(mm, name, _load_pool(pool))
    for name, value in state["other"].items():
        setattr(mm, name, _decode(value))
    mm.page_tables.root = state["root"]
    return mm


def _fd_records(snapshot: Snapshot) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The fd table as JSON: stdio by index, files by path and position,
    devices by name, pipes with their contents.  Anything else cannot
    outlive this process, and is refused."""
    records, pipes = [], []
    pipe_index: dict[int, int] = {}
    for fd, entry in sorted(snapshot.fds.items()):
        file = entry.file
        record: dict[str, Any] = {"fd": fd, "cloexec": entry.cloexec,
                                  "status_flags": file.status_flags, "path": file.path}
        if isinstance(file, HostFile) and file.path.startswith(STDIO_PREFIX):
            record["kind"] = "stdio"
            record["index"] = int(file.path[len(STDIO_PREFIX):].rstrip(">"))
        elif isinstance(file, HostFile):
            mode = os.fstat(file.host_fd).st_mode
            if not (stat_module.S_ISREG(mode) or stat_module.S_ISDIR(mode)):
                raise SnapshotError(f"fd {fd} ({file.path}) is not a file or a directory: a "
                                    f"snapshot file cannot carry it (close it before the "
                                    f"ready point)")
            record["kind"] = "file"
            record["directory"] = stat_module.S_ISDIR(mode)
            record["offset"] = os.lseek(file.host_fd, 0, os.SEEK_CUR)
            record["attributes"] = _encode({name: value for name, value in vars(file).items()
                                            if name not in ("host_fd", "path", "status_flags")},
                                           f"fd {fd}")
        elif isinstance(file, DeviceFile):
            record["kind"] = "device"
            record["name"] = file.name
        elif isinstance(file, PipeEnd):
            if id(file.pipe) not in pipe_index:
                pipe_index[id(file.pipe)] = len(pipes)
                pipes.append({"data": _encode(bytes(file.pipe.data), "a pipe"),
                              "readers": file.pipe.readers, "writers": file.pipe.writers})
            record["kind"] = "pipe"
            record["pipe"] = pipe_index[id(file.pipe)]
            record["writing"] = file.writing
        else:
            raise SnapshotError(f"fd {fd} is a {file.kind}: a snapshot file cannot carry it "
                                f"(close it before the ready point)")
        records.append(record)
    return records, pipes


def _reopen_fds(records: list[dict[str, Any]], pipes: list[dict[str, Any]], policy: Any,
                stdio: Sequence[int]) -> dict[int, FdEntry]:
    """The fd table of a loaded snapshot: stdio attached to *stdio*, files
    reopened through the policy (so a file outside it is refused), pipes
    and devices rebuilt."""
    entries: dict[int, FdEntry] = {}
    shared_pipes = [Pipe(bytearray(_decode(p["data"])), p["readers"], p["writers"])
                    for p in pipes]
    ends: dict[tuple[int, bool], PipeEnd] = {}
    try:
        for record in records:
            fd, kind = record["fd"], record["kind"]
            flags = record["status_flags"]
            if kind == "stdio":
                file: OpenFile = HostFile(os.dup(stdio[record["index"]]), record["path"], flags)
            elif kind == "file":
                if policy is None:
                    raise SnapshotError(f"fd {fd} ({record['path']}) needs a policy to reopen it")
                open_flags = flags & (os.O_ACCMODE | os.O_APPEND | os.O_NONBLOCK)
                if record["directory"]:
                    open_flags |= os.O_DIRECTORY
                try:
                    host_fd = policy.open(record["path"], open_flags, 0, "/", syscall="snapshot")
                except (OSError, MinikvmError) as error:
                    raise SnapshotError(f"fd {fd}: cannot reopen {record['path']}: {error}") \
                        from None
                file = HostFile(host_fd, record["path"], flags)
                for name, value in _decode(record["attributes"]).items():
                    setattr(file, name, value)
                if not record["directory"]:
                    os.lseek(host_fd, record["offset"], os.SEEK_SET)
            elif kind == "device":
                file = DeviceFile(record["name"], record["path"], flags)
            elif kind == "pipe":
                key = (record["pipe"], record["writing"])
                if key not in ends:
                    end = PipeEnd(shared_pipes[record["pipe"]], record["writing"], 0)
                    end.status_flags = flags
                    ends[key] = end
                file = ends[key]
            else:
                raise SnapshotError(f"fd {fd}: unknown kind {kind!r} in the file")
            entries[fd] = FdEntry(file, record["cloexec"])
    except BaseException:
        close_fd_entries(entries)
        raise
    return entries


def _policy_record(policy: Any) -> dict[str, Any] | None:
    grants = getattr(policy, "grants", None)
    if policy is None or grants is None:
        return None
    return {"read": [g.path for g in grants if not g.writable],
            "write": [g.path for g in grants if g.writable],
            "connect": [str(e) for e in getattr(policy, "endpoints", ())],
            "max_fds": getattr(policy, "max_fds", 1024),
            "max_file_size": getattr(policy, "max_file_size", None)}


def _cpuid_bytes(cpuid: ctypes.Structure) -> bytes:
    entry_size = ctypes.sizeof(k.kvm_cpuid_entry2)
    header = ctypes.sizeof(cpuid) - entry_size * len(cpuid.entries)
    return bytes(cpuid)[:header + cpuid.nent * entry_size]


def _cpuid_from(data: bytes) -> ctypes.Structure:
    entry_size = ctypes.sizeof(k.kvm_cpuid_entry2)
    nent = struct.unpack_from("<I", data)[0]
    cpuid = k.kvm_cpuid2_with(nent)
    if len(data) != ctypes.sizeof(cpuid):
        raise SnapshotError(f"the cpuid section is {len(data)} bytes, expected "
                            f"{ctypes.sizeof(cpuid)} for {nent} entries of {entry_size}")
    ctypes.memmove(ctypes.addressof(cpuid), data, len(data))
    return cpuid


def save(snapshot: Snapshot, path: str | os.PathLike[str]) -> int:
    """Write *snapshot* to *path* (atomically: a temporary file renamed into
    place).  Returns the file's size.  Raises SnapshotError when the
    snapshot holds something a file cannot carry (a socket, a pipe to
    another process)."""
    if snapshot.memory is None:
        raise SnapshotError("this snapshot is closed")
    state = snapshot.process_state
    exe_path = state.get("exe_path", snapshot.image.name)
    try:
        with open(exe_path, "rb") as program:
            elf = program.read()
    except OSError as error:
        raise SnapshotError(f"cannot read the program {exe_path} to store it in the snapshot: "
                            f"{error.strerror}") from None
    fd_records, pipes = _fd_records(snapshot)
    extents = data_extents(snapshot.memory.fd, snapshot.memory.size)
    blobs = [("elf", elf), ("regs", snapshot.cpu.regs), ("sregs", snapshot.cpu.sregs),
             ("fpu", snapshot.cpu.fpu), ("xcrs", snapshot.cpu.xcrs or b""),
             ("events", snapshot.cpu.events), ("cpuid", _cpuid_bytes(snapshot.cpuid))]
    sections: dict[str, list[int]] = {}
    offset = sum(length for _, length in extents)
    sections["memory"] = [0, offset]
    for name, blob in blobs:
        sections[name] = [offset, len(blob)]
        offset += len(blob)
    header = {
        "format": "minikvm snapshot", "version": FORMAT_VERSION, "payload_length": offset,
        "sections": sections,
        "memory": {"size": snapshot.memory.size, "base": snapshot.memory.base,
                   "extents": [list(e) for e in extents]},
        "cpu": {"xsave": snapshot.cpu.xsave, "has_xcrs": snapshot.cpu.xcrs is not None,
                "msrs": {str(index): value for index, value in snapshot.cpu.msrs.items()}},
        "mm": _mm_state(snapshot.mm),
        "process": _encode({name: value for name, value in state.items()}, "the process"),
        "fds": fd_records, "pipes": pipes, "max_fds": snapshot.max_fds,
        "policy": _policy_record(snapshot.policy),
        "image": {"name": snapshot.image.name, "bias": snapshot.image.load_bias},
        "wait": list(snapshot.wait) if snapshot.wait else None,
    }
    header_bytes = json.dumps(header, separators=(",", ":")).encode()
    target = os.fspath(path)
    partial = f"{target}.{os.getpid()}.partial"
    try:
        with open(partial, "wb") as out:
            out.write(PREAMBLE.pack(MAGIC, FORMAT_VERSION, 0, len(header_bytes)))
            out.write(header_bytes)
            out.flush()
            position = out.tell()
            for start, length in extents:
                _copy_range(snapshot.memory.fd, out.fileno(), start, length, position)
                position += length
            out.seek(position)
            for _, blob in blobs:
                out.write(blob)
        with open(partial, "r+b") as out:
            digest = hashlib.sha256()
            while chunk := out.read(READ_CHUNK):
                digest.update(chunk)
            out.write(digest.digest())
            size = out.tell()
        os.replace(partial, target)
    except BaseException:
        if os.path.exists(partial):
            os.unlink(partial)
        raise
    return size


def read_header(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Check the file whole (size, magic, version, checksum) and return its
    header.  Raises SnapshotError saying what is wrong."""
    name = os.fspath(path)
    try:
        with open(name, "rb") as file:
            return _check_file(file, name)
    except OSError as error:
        raise SnapshotError(f"{name}: {error.strerror}") from None


def _check_file(file: Any, name: str) -> dict[str, Any]:
    size = os.fstat(file.fileno()).st_size
    if size < PREAMBLE.size + DIGEST_SIZE:
        raise SnapshotError(f"{name}: {size} bytes is too short to be a snapshot file")
    magic, version, _, header_length = PREAMBLE.unpack(file.read(PREAMBLE.size))
    if magic != MAGIC:
        raise SnapshotError(f"{name}: not a minikvm snapshot (it starts with {magic!r}, not "
                            f"{MAGIC!r})")
    if version != FORMAT_VERSION:
        raise SnapshotError(f"{name}: snapshot format version {version}; this minikvm reads "
                            f"version {FORMAT_VERSION}")
    if header_length > min(MAX_HEADER, size - PREAMBLE.size - DIGEST_SIZE):
        raise SnapshotError(f"{name}: truncated or corrupted (a header of {header_length} "
                            f"bytes does not fit in {size} bytes)")
    header_bytes = file.read(header_length)
    digest = hashlib.sha256()
    file.seek(0)
    remaining = size - DIGEST_SIZE
    while remaining:
        chunk = file.read(min(READ_CHUNK, remaining))
        digest.update(chunk)
        remaining -= len(chunk)
    stored = file.read(DIGEST_SIZE)
    try:
        header = json.loads(header_bytes)
        expected = PREAMBLE.size + header_length + header["payload_length"] + DIGEST_SIZE
    except (ValueError, KeyError, TypeError):
        header, expected = None, None
    if expected is not None and size < expected:
        raise SnapshotError(f"{name}: truncated: {size} bytes, the header says {expected}")
    if digest.digest() != stored:
        raise SnapshotError(f"{name}: checksum mismatch: the file is corrupted or truncated "
                            f"(SHA-256 of its contents differs from the one stored at its end)")
    if header is None or expected != size:
        raise SnapshotError(f"{name}: the header is inconsistent with the file's size")
    payload_length = header["payload_length"]
    for section, (offset, length) in header["sections"].items():
        if offset < 0 or length < 0 or offset + length > payload_length:
            raise SnapshotError(f"{name}: section {section} lies outside the payload")
    return header


def load(path: str | os.PathLike[str], *, policy: Any = "saved",
         stdio: Sequence[int] = (0, 1, 2)) -> Snapshot:
    """Read a snapshot file back.  The file is checked whole first; nothing
    is created for a file that does not pass.  *policy* is the sandbox
    policy to run it under: by default the one recorded in the file (a
    :class:`~minikvm.policy.Policy` rebuilt from its grants).  Open files
    are reopened through that policy; the program's stdin, stdout and stderr
    become *stdio*."""
    name = os.fspath(path)
    header = read_header(name)
    if policy == "saved":
        policy = _rebuild_policy(header.get("policy"))
    with open(name, "rb") as file:
        payload_start = PREAMBLE.size + PREAMBLE.unpack(file.read(PREAMBLE.size))[3]

        def section(section_name: str) -> bytes:
            offset, length = header["sections"][section_name]
            return os.pread(file.fileno(), length, payload_start + offset) if length else b""

        try:
            image = load_elf(section("elf"), bias=header["image"]["bias"],
                             name=header["image"]["name"])
        except MinikvmError as error:
            raise SnapshotError(f"{name}: the stored program cannot be loaded: {error}") from None
        cpu_header = header["cpu"]
        cpu = CpuState(section("regs"), section("sregs"), section("fpu"), cpu_header["xsave"],
                       section("xcrs") if cpu_header["has_xcrs"] else None,
                       {int(index): value for index, value in cpu_header["msrs"].items()},
                       section("events"))
        cpuid = _cpuid_from(section("cpuid"))
        layout = header["memory"]
        fd = _new_memfd(layout["size"], "minikvm-snapshot")
        memory = GuestMemory(layout["size"], layout["base"], fd=fd, shared=True)
        memory.owns_fd = True
        try:
            mm = _load_mm(memory, header["mm"])
            position = payload_start + header["sections"]["memory"][0]
            for start, length in layout["extents"]:
                _copy_range(file.fileno(), fd, position, length, start)
                position += length
            _seal_frozen(fd)
            process_state = _decode(header["process"])
            fds = _reopen_fds(header["fds"], header["pipes"], policy, stdio)
        except BaseException:
            memory.close()
            raise
    wait = tuple(header["wait"]) if header["wait"] else None
    return Snapshot(memory=memory, mm=mm, cpu=cpu, cpuid=cpuid, process_state=process_state,
                    fds=fds, max_fds=header["max_fds"], image=image, policy=policy,
                    wait=wait)  # type: ignore[arg-type]


def _rebuild_policy(record: dict[str, Any] | None) -> Any:
    if record is None:
        return None
    from minikvm.policy import Policy
    return Policy(read=record["read"], write=record["write"], connect=record["connect"],
                  max_fds=record["max_fds"], max_file_size=record["max_file_size"])
