"""Layer 7 — a snapshot: a program frozen at its ready point, from which forks start.

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
  signal dispositions, masks, pending signals and alternate stack, the
  alarm, the thread table — every attribute of the
  :class:`~minikvm.process.process.Process` (:mod:`minikvm.snapshot.process_state`).

A :class:`~minikvm.snapshot.fork.Fork` is a new VM and vCPU started from a
snapshot, its memory shared copy-on-write with it; resetting a fork,
handing it a request and calling the program's functions are in
:mod:`minikvm.snapshot.fork`.  :func:`~minikvm.snapshot.file.save` and
:func:`~minikvm.snapshot.file.load` (in :mod:`minikvm.snapshot.file`) write a
snapshot to a file and read it back.

What a snapshot cannot make fresh: every fork starts with the same memory,
so state a program derived from randomness *before* the ready point is the
same in every fork — a PRNG it seeded, glibc's stack-protector canary and
pointer guard (from ``AT_RANDOM``).  ``getrandom`` and ``/dev/urandom``
give fresh bytes in every fork and after every reset; seed after the wait.
"""

from __future__ import annotations

import ctypes
from typing import Any

from minikvm.errors import SnapshotError
from minikvm.kvm.memory import GuestMemory
from minikvm.machine.mm import AddressSpace
from minikvm.machine.stops import StopKind
from minikvm.process.elf import ElfImage
from minikvm.process.fdtable import FdEntry, MemFd
from minikvm.process.process import Process
from minikvm.sandbox.policy import Policy
from minikvm.snapshot.channel import Reply, RequestChannel, run_until_stop
from minikvm.snapshot.cpu_state import CpuState
from minikvm.snapshot.fork import Fork, ResetMechanism, effective_mechanism
from minikvm.snapshot.frozen import data_extents, freeze_memory, seal_frozen
from minikvm.snapshot.process_state import (capture_process_state, close_fd_entries,
                                            copy_fd_entries)
from minikvm.syscalls.dispatch import Dispatcher
from minikvm.syscalls.trace import Tracer


class Snapshot:
    """A frozen program: memory, vCPU and host state.  Take one with
    :meth:`take` (or :func:`load` one from a file); start copies with
    :meth:`fork`.  Close it when done: it holds a memfd and host fds."""

    def __init__(self, *, memory: GuestMemory, mm: AddressSpace, cpu: CpuState,
                 cpuid: ctypes.Structure, process_state: dict[str, Any],
                 fds: dict[int, FdEntry], max_fds: int, image: ElfImage, policy: Policy,
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
        #: The frozen memory's data extents as ``(start, end)`` offsets, for
        #: the ``"copy"`` reset, found once: ``lseek(SEEK_HOLE)`` on tmpfs
        #: walks the extent page by page, so asking at every reset would cost
        #: time proportional to the memory, not to the pages dirtied.  A page
        #: outside them is zeros in the snapshot (a fork's fault may later
        #: allocate a hole's page in the memfd, but that page is zeros too).
        self.extents = [(start, start + length)
                        for start, length in data_extents(memory.fd, memory.size)]
        #: Forks started ahead of time by :meth:`prepare_forks`, handed out
        #: by :meth:`fork` (empty unless asked for).
        self.spare_forks: list[Fork] = []

    @classmethod
    def take(cls, process: Process, wait: tuple[int, int] | None = None) -> "Snapshot":
        """Freeze *process*, which must not be running (between two runs,
        e.g. after :func:`run_until_stop` returned WAIT).  It can go
        on running afterwards: the snapshot is a copy.  Only a program with
        one thread can be frozen: the vCPU holds one thread's registers, and
        a fork starts with that thread alone (its record — ``set_tid_address``,
        the robust list — is copied with the rest of the process)."""
        if len(process.threads) > 1:
            raise SnapshotError(f"the program has {len(process.threads)} threads: a snapshot "
                                "can only be taken while it has one (before it starts threads)")
        for fd, entry in sorted(process.fds.entries.items()):
            if isinstance(entry.file, MemFd):
                raise SnapshotError(f"fd {fd} is a memfd: the snapshot and the run would share "
                                    "its data, so a reset could not put it back (close it "
                                    "before the snapshot is taken)")
        machine = process.machine
        cpu = CpuState.capture(machine)
        fd = freeze_memory(machine.memory, process.mm)
        memory = GuestMemory(machine.memory.size, machine.memory.base, fd=fd, shared=True)
        memory.owns_fd = True
        seal_frozen(fd)
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

    def fork(self, mechanism: str = ResetMechanism.COW, tracer: Tracer | None = None) -> "Fork":
        """A new VM running a copy of this snapshot (see :class:`Fork`).

        If :meth:`prepare_forks` started some ahead of time, one of those is
        handed out instead of starting one now: it has never run, so it is
        the same as a new one."""
        wanted = effective_mechanism(mechanism)
        keep = ResetMechanism.KEEP.value
        for index, spare in enumerate(self.spare_forks):
            # "keep" sets its VM up differently (the dirty log's manual
            # protection): a spare made for it serves only it; "cow" and
            # "copy" differ only in how the reset works, so serve each other.
            if spare.mechanism == wanted or keep not in (spare.mechanism, wanted):
                fork = self.spare_forks.pop(index)
                fork.mechanism = wanted
                if tracer is not None:
                    fork.dispatcher = Dispatcher(fork.process, tracer)
                return fork
        return Fork(self, mechanism, tracer)

    def prepare_forks(self, count: int, mechanism: str = ResetMechanism.COW) -> None:
        """Start forks now so that the next *count* calls of :meth:`fork`
        return at once.

        Most of a fork's start is the host kernel's: creating the VM, adding
        its memory slot (KVM allocates its tables for the slot's whole
        size, ~0.5 ms for 1 GiB on a PVM host) and creating the vCPU.  A
        server can pay that while it is idle — after sending an answer —
        rather than while a request waits.  Opt-in, because a spare costs
        while it waits: a VM with its kernel tables, a vCPU, duplicated host
        fds.  Prepare forks in the thread that will run them (KVM wants a
        vCPU's ioctls from one thread).  :meth:`close` closes the unused
        ones."""
        if self.memory is None:
            raise SnapshotError("this snapshot is closed")
        while len(self.spare_forks) < count:
            self.spare_forks.append(Fork(self, mechanism))

    @property
    def memory_size(self) -> int:
        return self.memory.size

    def resident_bytes(self) -> int:
        """Bytes of guest memory the frozen copy holds (its data extents)."""
        return sum(length for _, length in data_extents(self.memory.fd, self.memory.size))

    def close(self) -> None:
        """Free the frozen memory, the duplicated host fds and the forks
        :meth:`prepare_forks` started that were not handed out."""
        while self.spare_forks:
            self.spare_forks.pop().close()
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
    if kind == StopKind.WAIT:
        return Snapshot.take(process, detail), Reply(StopKind.WAIT)
    if kind == StopKind.EXIT:
        return None, Reply(StopKind.EXIT, message=f"the program exited with status {detail} before "
                                            "its first minikvm_wait_request",
                           exit_status=detail)
    return None, Reply(kind, message=str(detail))
