"""Layer 3 — the memory manager: the program's address space, and the only
way the host reaches a guest pointer.

The host keeps its own record of what it mapped: a sorted list of
:class:`Vma` (virtual memory areas), each a page-aligned virtual range with
its protection and the guest-physical pages behind it.  The page tables
(:mod:`minikvm.paging`) are derived from this record, never the other way
round: when a system call hands us a pointer, we translate it with the VMA
list — not with the guest's page tables, which live in memory the guest
might corrupt — and every access is bounds-checked.  A bad pointer becomes
``EFAULT`` for the guest; it can never make the host touch memory outside
the guest's.

Physical pages come from two :class:`~minikvm.machine.pages.PagePool` s (see the memory map in
:mod:`minikvm.cpu.layout`): one for page tables, one for the program.  Each VMA
is backed by one physically contiguous run, so translating a pointer is an
addition and a guest buffer is one zero-copy ``memoryview`` slice.

Removing or weakening a mapping needs the vCPU's cached translations
dropped too; :attr:`AddressSpace.stale_translations` tells the machine to
do that before the guest runs again.

Every change is all or nothing (:meth:`AddressSpace.all_or_nothing`): an
``mmap``, ``munmap``, ``mprotect`` or ``mremap`` that fails half-way — the
memory limit, the page-table pool, a file that cannot be read — leaves
the VMAs, the page tables, the pools and the pages' contents exactly as
they were.  A hostile program must not be able to make the record and
the page tables disagree (an area gone from the record whose page stays
reachable), nor lose memory to a call that failed.
"""

from __future__ import annotations

import bisect
import copy
import errno
import struct
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Iterator

from minikvm.cpu.layout import (MMAP_MIN_ADDR, MMAP_TOP, PAGE_TABLE_POOL_END, PAGE_TABLE_POOL_START,
                                USER_POOL_START, USER_SPACE_END)
from minikvm.errors import SyscallError
from minikvm.kvm.memory import GuestMemory
from minikvm.linux_abi import UIO_MAXIOV
from minikvm.machine.pages import PagePool
from minikvm.paging import PageTables, pte_flags
from minikvm.x86 import HUGE_PAGE_SIZE, PAGE_SIZE

# <sys/mman.h> protection bits, as the guest passes them.
PROT_NONE = 0
PROT_READ = 1
PROT_WRITE = 2
PROT_EXEC = 4
PROT_MASK = PROT_READ | PROT_WRITE | PROT_EXEC
#: A fresh writable anonymous mapping up to this size gets its host pages
#: allocated at ``mmap`` (:meth:`AddressSpace.populate`).  Measured on PVM:
#: a first touch costs ~13 µs a page when the guest faults the host page
#: in, ~2 µs when it is already there, and populating costs ~4 µs a page —
#: a gain once a third of the pages are used, which a buffer a program
#: asked for usually is.  Above the limit, a mostly unused reservation
#: would cost too much at mmap (and hold host memory early).
POPULATE_LIMIT = 64 << 20
#: The most VMAs an address space may hold: Linux's ``vm.max_map_count``
#: default (``DEFAULT_MAX_MAP_COUNT``, 65530).  Each VMA is a host object
#: (~200 bytes with its index entry), and a PROT_NONE mapping costs the
#: guest no memory at all, so without this a program mapping every other
#: page would grow the host's record without bound.  Beyond it ``mmap``,
#: ``mprotect`` and ``munmap`` that would add a VMA fail with ENOMEM, as
#: on Linux: ~13 MiB of host memory at most.
MAX_MAP_COUNT = 65530


def page_align_up(value: int) -> int:
    """Round up to a page boundary."""
    return (value + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)


def page_align_down(value: int) -> int:
    """Round down to a page boundary."""
    return value & ~(PAGE_SIZE - 1)


@dataclass(frozen=True)
class Vma:
    """One mapped range ``[start, end)`` of the program's address space.

    ``phys`` is where its pages start in guest-physical memory, or None for
    a reservation that has never been accessible (PROT_NONE): those cost no
    memory until ``mprotect`` opens them.
    """
    start: int
    end: int
    prot: int
    phys: int | None
    name: str = ""

    @property
    def size(self) -> int:
        return self.end - self.start

    def physical(self, address: int) -> int:
        """The guest-physical address behind *address* (inside this VMA)."""
        return self.phys + (address - self.start)  # type: ignore[operator]


@dataclass
class _Change:
    """What one all-or-nothing change must be able to undo (see
    :meth:`AddressSpace.all_or_nothing`)."""
    brk: tuple[int, int]
    #: each pool with its ``used`` and ``peak`` before, and its journal
    pools: list[tuple["PagePool", int, int, list[tuple[str, int, int]]]]
    #: VMAs inserted ("insert") and removed ("remove"), in order
    vma_log: list[tuple[str, Vma]] = field(default_factory=list)
    journal: list[tuple[int, bytes]] = field(default_factory=list)
    #: runs of program pages taken during the change: free again on undo,
    #: and possibly written (a file copied in), so zeroed then
    taken: list[tuple[int, int]] = field(default_factory=list)
    #: runs of program pages given up during the change: they keep their
    #: contents (and stay out of the pool) until the change succeeds
    released: list[tuple[int, int]] = field(default_factory=list)


class AddressSpace:
    """The program's virtual memory: VMAs, the page tables, the page pools."""

    def __init__(self, memory: GuestMemory) -> None:
        self.memory = memory
        # (clamped to the memory there is: a machine smaller than the pool's
        # end must run out of tables, never place one outside guest memory)
        self.table_pool = PagePool(PAGE_TABLE_POOL_START,
                                   min(PAGE_TABLE_POOL_END, memory.base + memory.size))
        self.user_pool = PagePool(USER_POOL_START, memory.base + memory.size)
        self.page_tables = PageTables(memory, self._allocate_table, self._free_table)
        self.vmas: list[Vma] = []
        self._starts: list[int] = []
        self.brk_start = 0
        self.brk_end = 0
        #: True when a translation the vCPU may have cached was removed or
        #: weakened; the machine flushes before the next KVM_RUN.
        self.stale_translations = False
        #: Counts changes to the mappings, hence to the page tables (which
        #: the host writes as plain memory): a snapshot's reset compares it
        #: to know whether the page tables need restoring too.
        self.mapping_changes = 0
        #: The ``syscall`` sites the host rewrote to exit directly
        #: (:mod:`minikvm.machine.syscall_sites`): only an ``out`` at one of
        #: these is a system call.  Part of the address space because the
        #: patched bytes are: a snapshot and its forks carry both.
        self.patched_sites: set[int] = set()
        #: The all-or-nothing change in progress, or None.
        self._change: _Change | None = None

    # -- copies (snapshots) -----------------------------------------------------
    def clone(self, memory: GuestMemory) -> "AddressSpace":
        """This address space over *memory*, a copy of this one's memory
        (a snapshot, or a copy-on-write fork of one): the same VMAs, break
        and page pools, and the page tables already in *memory* at the same
        root.  Nothing is written to *memory*."""
        twin = copy.copy(self)
        twin.memory = memory
        twin.page_tables = copy.copy(self.page_tables)
        twin.page_tables.memory = memory
        twin.page_tables.words = memory.buffer.cast("Q")
        twin.page_tables._allocate_table = twin._allocate_table
        twin.page_tables._free_table = twin._free_table
        twin.assign(self)
        return twin

    def assign(self, source: "AddressSpace") -> None:
        """Make this record equal to *source*'s (a snapshot's), whose memory
        holds the same page tables.  Every attribute but the memory and the
        page-table object is copied, so a field added later is not missed."""
        for name, value in vars(source).items():
            if name in ("memory", "page_tables"):
                continue
            if name in ("vmas", "_starts"):
                value = list(value)  # of frozen Vmas and ints: a shallow copy is a copy
            elif isinstance(value, set):
                value = set(value)   # of ints: cheaper than a deepcopy at every reset
            elif isinstance(value, PagePool):
                pool = copy.copy(value)
                pool.free_runs = list(value.free_runs)
                value = pool
            elif not isinstance(value, (int, str, bool, type(None))):
                value = copy.deepcopy(value)
            setattr(self, name, value)
        self.page_tables.root = source.page_tables.root

    # -- page-table pages ----------------------------------------------------
    def _allocate_table(self) -> int:
        return self.table_pool.allocate(PAGE_SIZE)

    def _free_table(self, address: int) -> None:
        self.table_pool.free(address, PAGE_SIZE)

    # -- all or nothing --------------------------------------------------------
    @contextmanager
    def all_or_nothing(self) -> Iterator[None]:
        """Run a change of the address space that either happens entirely
        or not at all.  If anything raises inside, the VMA list, the break,
        both page pools and every page-table entry written are put back as
        they were, the program pages taken are zeroed and freed again, and
        the pages given up were never touched: the failed call leaves
        nothing behind.  Pages given up are zeroed and returned to the pool
        only when the change succeeds — so inside one change they cannot be
        reused (a ``MAP_FIXED`` mapping over a populated one needs room for
        both for that moment).

        Nested uses join the outermost one (``sys_mmap`` makes its unmap,
        map, file copy and protect one change)."""
        if self._change is not None:
            yield
            return
        change = _Change((self.brk_start, self.brk_end),
                         [(pool, pool.used, pool.peak, []) for pool in (self.table_pool,
                                                                       self.user_pool)])
        for pool, _, _, journal in change.pools:
            pool.journal = journal
        self._change = change
        self.page_tables.journal = change.journal
        try:
            yield
        except BaseException:
            self._undo(change)
            raise
        else:
            for phys, size in change.released:
                self.memory.discard(phys, size)
                self.user_pool.free(phys, size)
        finally:
            self._change = None
            self.page_tables.journal = None
            for pool, _, _, _ in change.pools:
                pool.journal = None

    def _undo(self, change: _Change) -> None:
        """Put back what *change* did, last step first (each record's own
        undo: the cost is that of the change, not of the address space)."""
        self._change = None
        self.page_tables.roll_back(change.journal)
        for what, vma in reversed(change.vma_log):
            if what == "insert":
                self._remove(vma)
            else:
                self._insert(vma)
        self.brk_start, self.brk_end = change.brk
        for pool, used, peak, journal in change.pools:
            pool.roll_back(journal, used, peak)
        for phys, size in change.taken:
            self.memory.discard(phys, size)  # free pages read as zero
        self.mapping_changes += 1            # the tables were written (and restored)

    def _take_pages(self, size: int, align: int = PAGE_SIZE) -> int:
        """A run of program pages (ENOMEM at the memory limit), recorded so
        that a failed change gives it back."""
        phys = self.user_pool.allocate(size, align)
        if self._change is not None:
            self._change.taken.append((phys, size))
        return phys

    def _take_pages_at(self, phys: int, size: int) -> bool:
        """Exactly ``[phys, phys + size)`` if free (see :meth:`_take_pages`)."""
        if not self.user_pool.allocate_at(phys, size):
            return False
        if self._change is not None:
            self._change.taken.append((phys, size))
        return True

    # -- the VMA list ---------------------------------------------------------
    def find(self, address: int) -> Vma | None:
        """The VMA containing *address*, or None."""
        i = bisect.bisect_right(self._starts, address) - 1
        if i >= 0 and address < self.vmas[i].end:
            return self.vmas[i]
        return None

    def _insert(self, vma: Vma) -> None:
        i = bisect.bisect_left(self._starts, vma.start)
        self.vmas.insert(i, vma)
        self._starts.insert(i, vma.start)
        if self._change is not None:
            self._change.vma_log.append(("insert", vma))

    def find_all(self, start: int, end: int) -> list[Vma]:
        """Every VMA overlapping ``[start, end)``, in address order."""
        return self._overlapping(start, end)

    def _overlapping(self, start: int, end: int) -> list[Vma]:
        i = max(bisect.bisect_right(self._starts, start) - 1, 0)
        found = []
        while i < len(self.vmas) and self.vmas[i].start < end:
            if self.vmas[i].end > start:
                found.append(self.vmas[i])
            i += 1
        return found

    def _remove(self, vma: Vma) -> None:
        i = bisect.bisect_left(self._starts, vma.start)
        del self.vmas[i]
        del self._starts[i]
        if self._change is not None:
            self._change.vma_log.append(("remove", vma))

    def is_free(self, start: int, end: int) -> bool:
        """True when no VMA overlaps ``[start, end)``."""
        return not self._overlapping(start, end)

    def find_free(self, size: int, align: int = PAGE_SIZE, top: int = MMAP_TOP) -> int:
        """The highest free range of *size* bytes below *top* (mmap's
        top-down search, like Linux's default layout)."""
        end = top
        for vma in reversed(self.vmas):
            if vma.start >= end:
                continue
            candidate = (end - size) // align * align
            if candidate >= vma.end:
                return candidate
            end = min(end, vma.start)
        candidate = (end - size) // align * align
        if candidate >= MMAP_MIN_ADDR:
            return candidate
        raise SyscallError(errno.ENOMEM, "no free virtual range that large")

    # -- mapping -----------------------------------------------------------------
    def map(self, start: int, size: int, prot: int, name: str = "") -> Vma:
        """Create a VMA at ``[start, start + size)`` (which must be free),
        backed by fresh zeroed pages unless *prot* is PROT_NONE.  Returns the
        VMA now covering *start* (it may have merged with a neighbour).

        When guest memory or page-table pages run out this raises ENOMEM
        and changes nothing: a program that allocates until malloc fails
        sees NULL, never a broken address space."""
        self._check_user_range(start, size)
        self._check_map_count(start, start + size, adding=1)
        with self.all_or_nothing():
            phys = None
            if prot != PROT_NONE:
                phys = self._allocate_backing(start, size)
                self._install(start, phys, size, prot)
            self._insert(Vma(start, start + size, prot, phys, name))
            self.mapping_changes += 1
            self._coalesce(start)
            self._coalesce(start + size)
        return self.find(start)  # type: ignore[return-value]

    def populate(self, start: int, size: int) -> None:
        """Allocate the host pages behind the fresh mapping ``[start, start +
        size)`` now, in one call, instead of one fault per page at the
        guest's first touch (see :data:`POPULATE_LIMIT`).  The contents do
        not change: fresh pages read as zero either way."""
        vma = self.find(start)
        if vma is not None and vma.phys is not None and start + size <= vma.end:
            self.memory.populate(vma.physical(start), size)

    def advise_huge(self, start: int, size: int) -> None:
        """Ask the host for 2 MiB pages behind the whole 2 MiB blocks of the
        fresh mapping ``[start, start + size)`` (:meth:`GuestMemory.advise_huge
        <minikvm.kvm.memory.GuestMemory.advise_huge>`): one host fault per
        2 MiB instead of 512 when the guest first touches it.  Only for a
        mapping of at least 2 MiB, which a program asked for to use: a huge
        page for every small one would hold up to 512 times the host memory
        the guest touches."""
        if size < HUGE_PAGE_SIZE:
            return
        vma = self.find(start)
        if vma is not None and vma.phys is not None and start + size <= vma.end:
            self.memory.advise_huge(vma.physical(start), size)

    def _allocate_backing(self, start: int, size: int) -> int:
        """Physical pages for a new mapping: 2 MiB aligned when the mapping
        can use huge pages; right after the previous VMA's pages when that
        keeps a growing heap contiguous."""
        previous = self.find(start - 1) if start > 0 else None
        if previous is not None and previous.phys is not None:
            after = previous.physical(start)
            if self._take_pages_at(after, size):
                return after
        align = HUGE_PAGE_SIZE if size >= HUGE_PAGE_SIZE and start % HUGE_PAGE_SIZE == 0 else PAGE_SIZE
        return self._take_pages(size, align)

    def _install(self, start: int, phys: int, size: int, prot: int) -> None:
        """Write the page-table entries of ``[start, start + size)`` (none
        for PROT_NONE).  If page-table pages run out half-way, the change
        this is part of (:meth:`all_or_nothing`) takes back the entries
        written so far."""
        if prot != PROT_NONE:
            self.page_tables.map(start, phys, size, _leaf_flags(prot))

    def _coalesce(self, address: int) -> None:
        """Merge the VMAs ending and starting at *address* when they are
        alike — same protection and name, pages physically contiguous (or
        both without pages) — as Linux merges neighbouring mappings.  So a
        heap grown by many ``brk`` calls, or a mapping grown in place by
        ``mremap``, is one VMA again, and a later ``mremap`` of all of it
        finds one mapping.  The page tables do not change."""
        before = self.find(address - 1) if address > 0 else None
        after = self.find(address)
        if before is None or after is None or before is after:
            return
        if before.prot != after.prot or before.name != after.name:
            return
        if (before.phys is None) != (after.phys is None):
            return
        if before.phys is not None and before.physical(address) != after.phys:
            return
        self._remove(before)
        self._remove(after)
        self._insert(replace(before, end=after.end))

    def _check_map_count(self, start: int, end: int, adding: int = 0) -> None:
        """ENOMEM if changing ``[start, end)`` — splitting the VMAs that
        straddle its ends, and adding *adding* more — could pass
        :data:`MAX_MAP_COUNT` (Linux's ``map_count >= sysctl_max_map_count``
        checks in ``do_mmap`` and ``__split_vma``)."""
        splits = 0
        for edge in (start, end):
            vma = self.find(edge)
            if vma is not None and vma.start < edge:
                splits += 1
        if len(self.vmas) + splits + adding > MAX_MAP_COUNT:
            raise SyscallError(errno.ENOMEM, f"{len(self.vmas)} mappings already: at most "
                                             f"{MAX_MAP_COUNT} (vm.max_map_count); unmap some "
                                             f"or map larger areas")

    def unmap(self, start: int, size: int) -> None:
        """Remove every mapping in the range (munmap); holes are fine.
        Splitting a 2 MiB page at an end of the range needs a page table:
        ENOMEM when the pool is empty, and then nothing is removed."""
        self._check_map_count(start, start + size)
        with self.all_or_nothing():
            for piece in self._cut(start, start + size):
                if piece.phys is not None:
                    self._release(piece.phys, piece.size)

    def _cut(self, start: int, end: int) -> list[Vma]:
        """Take ``[start, end)`` out of the VMA list and the page tables.
        Returns the pieces removed, their pages still allocated (``unmap``
        frees them; ``remap`` moves them)."""
        pieces = []
        for vma in self._overlapping(start, end):
            self._remove(vma)
            self.mapping_changes += 1
            cut_start, cut_end = max(vma.start, start), min(vma.end, end)
            if vma.start < cut_start:
                self._insert(replace(vma, end=cut_start))
            if cut_end < vma.end:
                self._insert(replace(vma, start=cut_end, phys=None if vma.phys is None
                                     else vma.physical(cut_end)))
            piece = replace(vma, start=cut_start, end=cut_end,
                            phys=None if vma.phys is None else vma.physical(cut_start))
            if piece.phys is not None:
                self.page_tables.unmap(cut_start, cut_end - cut_start)
                self.stale_translations = True
            pieces.append(piece)
        return pieces

    def _release(self, phys: int, size: int) -> None:
        """Give pages back to the pool.  They are zeroed (their host memory
        returned) on the way: free pages always read as zero, which is what
        lets a new mapping skip clearing.  Inside a change, that waits for
        the change to succeed (:meth:`all_or_nothing`)."""
        if self._change is not None:
            self._change.released.append((phys, size))
            return
        self.memory.discard(phys, size)
        self.user_pool.free(phys, size)

    def check_mapped(self, start: int, size: int) -> None:
        """ENOMEM unless every page of ``[start, start + size)`` is mapped
        (with any protection) — Linux's answer for mprotect, madvise, msync,
        mincore and mlock over a hole."""
        end = start + size
        covered = start
        for vma in self._overlapping(start, end):
            if vma.start > covered:
                break
            covered = vma.end
        if covered < end:
            raise SyscallError(errno.ENOMEM, f"no mapping at {covered:#x} "
                                             f"(inside {start:#x}+{size:#x})")

    def discard(self, start: int, size: int) -> None:
        """Make ``[start, start + size)`` read as zeros again and give its
        host memory back (``madvise(MADV_DONTNEED)`` on private memory)."""
        self.check_mapped(start, size)
        end = start + size
        for vma in self._overlapping(start, end):
            if vma.phys is not None:
                low, high = max(vma.start, start), min(vma.end, end)
                self.memory.discard(vma.physical(low), high - low)

    def protect(self, start: int, size: int, prot: int) -> None:
        """Change the protection of ``[start, start + size)`` (mprotect).
        Every page in the range must be mapped (ENOMEM otherwise, as Linux).
        A PROT_NONE reservation gets its pages when it is first opened."""
        end = start + size
        self.check_mapped(start, size)
        self._check_map_count(start, end)
        with self.all_or_nothing():
            affected = self._overlapping(start, end)
            for vma in affected:
                self._protect_vma(vma, max(vma.start, start), min(vma.end, end), prot)
            for boundary in sorted({start, end, *(vma.end for vma in affected if vma.end < end)}):
                self._coalesce(boundary)

    def _protect_vma(self, vma: Vma, start: int, end: int, prot: int) -> None:
        # (part of protect's all-or-nothing change: a later VMA that runs
        # out of memory undoes this one too)
        phys = None if vma.phys is None else vma.physical(start)
        if phys is None and prot != PROT_NONE:
            phys = self._allocate_backing(start, end - start)
            self._install(start, phys, end - start, prot)
        elif phys is not None and prot == PROT_NONE:
            self.page_tables.unmap(start, end - start)
        elif phys is not None:
            self.page_tables.map(start, phys, end - start, _leaf_flags(prot))
        self._remove(vma)
        self.mapping_changes += 1
        if vma.start < start:
            self._insert(replace(vma, end=start))
        if end < vma.end:
            self._insert(replace(vma, start=end,
                                 phys=None if vma.phys is None else vma.physical(end)))
        self._insert(Vma(start, end, prot, phys, vma.name))
        if vma.phys is not None and vma.prot & ~prot:
            self.stale_translations = True  # a permission was taken away: cached translations lie

    def remap(self, old: int, old_size: int, new_size: int, may_move: bool,
              new_address: int | None = None) -> int:
        """Grow, shrink or move a mapping (mremap); returns its address.

        ``[old, old + old_size)`` must lie in one VMA (EFAULT otherwise).
        The pages travel with the mapping — a move rewrites page tables, it
        copies nothing — unless a grown mapping's new pages cannot follow
        the old ones physically; then the contents are copied into a new
        run.  ENOMEM, with nothing changed, when memory runs out or the
        mapping must move and *may_move* is False.
        """
        vma = self.find(old)
        if vma is None or old + old_size > vma.end:
            raise SyscallError(errno.EFAULT, f"{old:#x}+{old_size:#x} is not inside one mapping")
        with self.all_or_nothing():
            if new_address is None and new_size <= old_size:
                if new_size < old_size:
                    self.unmap(old + new_size, old_size - new_size)
                return old
            if new_address is None and self._grow_in_place(vma, old, old_size, new_size):
                return old
            if not may_move:
                raise SyscallError(errno.ENOMEM, f"cannot grow {old:#x} in place and may "
                                                 "not move it")
            return self._move(vma, old, old_size, new_size, new_address)

    def _grow_in_place(self, vma: Vma, old: int, old_size: int, new_size: int) -> bool:
        """Extend the mapping over the free range after it, with pages right
        after its own; False when either is taken."""
        end, new_end = old + old_size, old + new_size
        if end != vma.end or new_end > USER_SPACE_END or not self.is_free(end, new_end):
            return False
        grow = new_size - old_size
        self._check_map_count(end, new_end, adding=1)
        phys = None
        if vma.phys is not None:
            phys = vma.physical(end)
            if not self._take_pages_at(phys, grow):
                return False
            self._install(end, phys, grow, vma.prot)
        self._insert(Vma(end, new_end, vma.prot, phys, vma.name))
        self.mapping_changes += 1
        self._coalesce(end)
        return True

    def _move(self, vma: Vma, old: int, old_size: int, new_size: int,
              new_address: int | None) -> int:
        if new_address is None:
            new_address = self.find_free(new_size, HUGE_PAGE_SIZE if new_size >= HUGE_PAGE_SIZE
                                         else PAGE_SIZE)
        elif new_address < old + old_size and old < new_address + new_size:
            raise SyscallError(errno.EINVAL, "the new range overlaps the old one")
        self._check_bounds(new_address, new_size)
        self._check_map_count(old, old + old_size, adding=1)
        self._check_map_count(new_address, new_address + new_size, adding=1)
        # Decide where the pages come from before changing anything.
        phys = None if vma.phys is None else vma.physical(old)
        copy_from = None
        if phys is not None and new_size > old_size and not self._take_pages_at(
                phys + old_size, new_size - old_size):
            copy_from = phys
            phys = self._take_pages(new_size, HUGE_PAGE_SIZE if new_size >= HUGE_PAGE_SIZE
                                    and new_address % HUGE_PAGE_SIZE == 0 else PAGE_SIZE)
            self.memory.view(phys, old_size)[:] = self.memory.view(copy_from, old_size)
            self.memory.note_written(phys, old_size)
        self.unmap(new_address, new_size)  # MREMAP_FIXED replaces what was there
        self._cut(old, old + old_size)
        if copy_from is not None:
            self._release(copy_from, old_size)
        elif phys is not None and new_size < old_size:
            self._release(phys + new_size, old_size - new_size)
        if phys is not None:
            self._install(new_address, phys, new_size, vma.prot)
        self._insert(Vma(new_address, new_address + new_size, vma.prot, phys, vma.name))
        self.mapping_changes += 1
        self._coalesce(new_address)
        self._coalesce(new_address + new_size)
        return new_address

    def set_brk(self, new_end: int) -> int:
        """Move the program break (brk); returns the break now in force.
        Linux returns the old break, not an error, when it cannot move."""
        if new_end < self.brk_start:
            return self.brk_end
        old_top, new_top = page_align_up(self.brk_end), page_align_up(new_end)
        try:
            if new_top > old_top:
                if not self.is_free(old_top, new_top):
                    return self.brk_end
                self.map(old_top, new_top - old_top, PROT_READ | PROT_WRITE, "[heap]")
            elif new_top < old_top:
                self.unmap(new_top, old_top - new_top)
        except SyscallError:
            return self.brk_end
        self.brk_end = new_end
        return self.brk_end

    def _check_bounds(self, start: int, size: int) -> None:
        """A page-aligned, non-empty range a program may map."""
        if start % PAGE_SIZE or size <= 0 or size % PAGE_SIZE:
            raise SyscallError(errno.EINVAL, f"unaligned or empty range {start:#x}+{size:#x}")
        if start < MMAP_MIN_ADDR or start + size > USER_SPACE_END:
            raise SyscallError(errno.ENOMEM, f"{start:#x}+{size:#x} is outside the user "
                                             f"address range [{MMAP_MIN_ADDR:#x}, "
                                             f"{USER_SPACE_END:#x})")

    def _check_user_range(self, start: int, size: int) -> None:
        self._check_bounds(start, size)
        if not self.is_free(start, start + size):
            raise SyscallError(errno.EEXIST, f"{start:#x}+{size:#x} is already mapped")

    # -- guest pointers: copy-in / copy-out ---------------------------------------
    def views(self, address: int, size: int, write: bool = False) -> list[memoryview]:
        """Zero-copy windows on the guest range ``[address, address + size)``,
        one per VMA it crosses.  EFAULT if any byte is unmapped, or not
        writable when *write*.  The host never sees memory outside the guest."""
        if size == 0:
            return []
        if address < 0 or size < 0 or address + size > USER_SPACE_END:
            raise SyscallError(errno.EFAULT, f"bad address {address:#x}")
        chunks = []
        end = address + size
        while address < end:
            vma = self.find(address)
            if vma is None or vma.phys is None or vma.prot == PROT_NONE:
                raise SyscallError(errno.EFAULT, f"unmapped address {address:#x}")
            if write and not vma.prot & PROT_WRITE:
                raise SyscallError(errno.EFAULT, f"read-only address {address:#x}")
            stop = min(end, vma.end)
            chunks.append(self.memory.view(vma.physical(address), stop - address))
            if write and self.memory.host_writes is not None:
                self.memory.note_written(vma.physical(address), stop - address)
            address = stop
        return chunks

    def read(self, address: int, size: int) -> bytes:
        """Copy *size* bytes in from the guest."""
        return b"".join(self.views(address, size))

    def write(self, address: int, data: bytes) -> None:
        """Copy *data* out to the guest."""
        offset = 0
        for chunk in self.views(address, len(data), write=True):
            chunk[:] = data[offset:offset + len(chunk)]
            offset += len(chunk)

    def read_cstring(self, address: int, limit: int = 4096) -> bytes:
        """A NUL-terminated string of at most *limit* bytes (ENAMETOOLONG
        beyond it, like Linux's PATH_MAX check)."""
        result = bytearray()
        while len(result) < limit:
            vma = self.find(address)
            if vma is None or vma.phys is None or vma.prot == PROT_NONE:
                raise SyscallError(errno.EFAULT, f"unmapped string at {address:#x}")
            # read up to the end of this page at most: the string may end there
            stop = min(vma.end, (address | (PAGE_SIZE - 1)) + 1, address + limit - len(result))
            piece = self.memory.view(vma.physical(address), stop - address)
            nul = bytes(piece).find(b"\0")
            if nul >= 0:
                result += piece[:nul]
                return bytes(result)
            result += piece
            address = stop
        raise SyscallError(errno.ENAMETOOLONG, f"string longer than {limit} bytes")

    def read_u64(self, address: int) -> int:
        return struct.unpack("<Q", self.read(address, 8))[0]

    def write_u64(self, address: int, value: int) -> None:
        self.write(address, struct.pack("<Q", value & 0xFFFF_FFFF_FFFF_FFFF))

    def read_struct(self, address: int, fmt: str) -> tuple:
        """Unpack a C struct (``struct`` module format) from guest memory."""
        return struct.unpack(fmt, self.read(address, struct.calcsize(fmt)))

    def write_struct(self, address: int, fmt: str, *values: object) -> None:
        """Pack a C struct into guest memory."""
        self.write(address, struct.pack(fmt, *values))

    def read_iovec(self, address: int, count: int) -> list[tuple[int, int]]:
        """A ``struct iovec[count]`` array: (base, length) pairs.  EINVAL
        for a length that is negative as a ``ssize_t``, as Linux's
        ``iovec_from_user`` answers, before any buffer is looked at."""
        if count < 0 or count > UIO_MAXIOV:
            raise SyscallError(errno.EINVAL, f"iovec count {count}")
        raw = self.read(address, 16 * count)
        pairs = [struct.unpack_from("<QQ", raw, 16 * i) for i in range(count)]
        for base, length in pairs:
            if length >> 63:
                raise SyscallError(errno.EINVAL, f"iovec length {length:#x} is negative")
        return pairs




def _leaf_flags(prot: int) -> int:
    return pte_flags(read=True, write=bool(prot & PROT_WRITE), execute=bool(prot & PROT_EXEC))
