"""Layer 7 — a vfork child's stores reach its parent: the pages it wrote go back.

On Linux a ``vfork`` child (and the ``CLONE_VM|CLONE_VFORK`` child of
``posix_spawn``) *borrows* its parent's memory until it execs or exits:
what it stores there, the parent sees when it resumes.  glibc's
``posix_spawn`` relies on it — its child stores the ``execve`` error in a
variable of the parent's, and the parent returns that error.  In minikvm
the child runs in a host process and a VM of its own over a copy of the
memory (:mod:`minikvm.tree.fork`), so its stores would stay in the copy.

So the child *gives the pages back*.  From its first instruction it
records which pages it writes: the guest's own stores in KVM's dirty log
(its memory slot is added with ``KVM_MEM_LOG_DIRTY_PAGES``), the stores the
host makes on its behalf (a ``read`` into its buffer, a result struct) in
:attr:`GuestMemory.host_writes <minikvm.kvm.memory.GuestMemory.host_writes>`
— the two sources a snapshot's reset uses too (:mod:`minikvm.snapshot.fork`).
When it execs (before the new image is loaded) or ends, it writes those
pages into the pipe its parent waits on, as records::

    u64 gpa     guest-physical address of the first page
    u32 pages   how many pages follow
    u32 pad
    pages × 4096 bytes

and the parent, still suspended, copies them into its own memory before it
returns from ``vfork``.  Then the child stops logging (the exec'd program
runs at full speed).

Only pages of the program's memory pool that were in use at the fork are
given back — the memory the parent's address space holds.  A page the child
took from the pool itself, or a page of the page tables or of the kernel
area, is the child's own business: the parent's record of its address space
is not the child's, and a free page of the parent's pool must stay zero.
For the same reason the child patches no system-call site
(:mod:`minikvm.machine.syscall_sites`) until it execs: the parent would
get the patched code page back without its record of the patch.
So a vfork child's ``mmap``/``munmap`` does not reach the parent, as it would
on Linux; its stores to the memory it borrowed do.  The parent checks each
record against its own pool before writing (the pipe is another process's
word).
"""

from __future__ import annotations

import bisect
import os
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING

from minikvm import ioctl as k
from minikvm.snapshot.frozen import bitmap_runs, page_runs
from minikvm.x86 import PAGE_SIZE

if TYPE_CHECKING:
    from minikvm.machine.machine import Machine
    from minikvm.machine.pages import PagePool
    from minikvm.process.process import Process

#: gpa, pages, pad (see the module docstring)
RUN = struct.Struct("<QII")


@dataclass
class Lending:
    """What a vfork child remembers of the memory it borrowed: the program
    pool's free runs at the fork (the parent's, unchanged while it waits)."""
    free_runs: list[tuple[int, int]]
    pool_start: int
    pool_end: int
    #: whether the machine patched system-call sites before the fork
    patching: bool


def log_stores(machine: Machine, vfork: bool) -> None:
    """In a new child, before its VM's memory slot is made: a vfork child's
    slot logs the guest's stores (:meth:`Machine.start_over_after_fork
    <minikvm.machine.machine.Machine.start_over_after_fork>` adds it with
    the machine's :attr:`~minikvm.machine.machine.Machine.slot_flags`);
    any other child's logs nothing, even when its parent's did (a ``serve``
    fork's, for its reset) — the host's record of its writes goes too."""
    machine.memory.host_writes = None
    if vfork:
        machine.slot_flags |= k.KVM_MEM_LOG_DIRTY_PAGES
    else:
        machine.slot_flags &= ~k.KVM_MEM_LOG_DIRTY_PAGES


def lend(proc: Process) -> Lending:
    """In a vfork child, just before its guest runs: from now on the host's
    stores are recorded too.  What :func:`give_back` needs."""
    pool = proc.mm.user_pool
    machine = proc.machine
    machine.memory.host_writes = set()
    # A patched site is a code page the parent would get back without its
    # record of the patch (AddressSpace.patched_sites): the child patches none.
    patching, machine.syscall_sites.enabled = machine.syscall_sites.enabled, False
    return Lending(list(pool.free_runs), pool.start, pool.end, patching)


def _in_use(free_runs: list[tuple[int, int]], start: int, end: int, gpa: int) -> bool:
    """Whether page *gpa* is in ``[start, end)`` and in none of *free_runs*."""
    if not start <= gpa < end:
        return False
    index = bisect.bisect_right(free_runs, (gpa, float("inf"))) - 1
    return index < 0 or not free_runs[index][0] <= gpa < sum(free_runs[index])


def give_back(proc: Process, lending: Lending, fd: int) -> int:
    """In a vfork child that execs or ends: write the borrowed pages it
    stored to into *fd* (its parent reads them), then stop recording.
    How many pages it sent."""
    machine = proc.machine
    memory = machine.memory
    pages = {first + offset for first, count in bitmap_runs(machine.take_dirty_log())
             for offset in range(count)}
    pages |= memory.host_writes or set()
    memory.host_writes = None
    machine.slot_flags &= ~k.KVM_MEM_LOG_DIRTY_PAGES
    machine.flush_translations(carry_dirty_log=False)   # the slot again, without the log
    machine.syscall_sites.enabled = lending.patching
    sent = 0
    for first, count in page_runs(page for page in pages if _in_use(
            lending.free_runs, lending.pool_start, lending.pool_end,
            memory.base + page * PAGE_SIZE)):
        gpa = memory.base + first * PAGE_SIZE
        _write_all(fd, RUN.pack(gpa, count, 0))
        _write_all(fd, memory.view(gpa, count * PAGE_SIZE))
        sent += count
    return sent


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def take_back(machine: Machine, pool: PagePool, data: bytes) -> int:
    """In the vfork parent, before it resumes: copy the pages its child gave
    back (*data*, the records read from the pipe) into its own memory.
    Records that name memory outside the pool's pages in use, or that are
    cut short (a child killed while it wrote), are left out.  How many
    pages were copied."""
    memory = machine.memory
    offset = copied = 0
    while offset + RUN.size <= len(data):
        gpa, count, _ = RUN.unpack_from(data, offset)
        offset += RUN.size
        size = count * PAGE_SIZE
        if offset + size > len(data):
            break
        for page in range(count):
            address = gpa + page * PAGE_SIZE
            if address % PAGE_SIZE == 0 and _in_use(pool.free_runs, pool.start, pool.end,
                                                    address):
                start = offset + page * PAGE_SIZE
                memory.write(address, data[start:start + PAGE_SIZE])
                copied += 1
        offset += size
    return copied


__all__ = ["Lending", "log_stores", "lend", "give_back", "take_back"]
