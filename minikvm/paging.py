"""Layer 2 — x86-64 4-level page tables, as pure code over guest memory.

The MMU translates a 48-bit virtual address through four tables, each one
4 KiB page of 512 eight-byte entries (Intel SDM Vol. 3A §4.5, AMD APM Vol. 2
§5.3).  Nine bits of the address index each level::

     63     48 47    39 38    30 29    21 20    12 11         0
    +---------+--------+--------+--------+--------+------------+
    | sign ext| PML4   | PDPT   |  PD    |  PT    |   offset   |
    +---------+--------+--------+--------+--------+------------+

A page-table entry (Intel SDM Vol. 3A Table 4-19, the PTE; upper levels
are alike)::

     63  62    52 51                         12 11  9 8 7 6 5 4 3 2 1 0
    +--+---------+------------------------------+-----+-+-+-+-+-+-+-+-+-+
    |NX| ignored |  physical address of page   | ign |G|PS|D|A|CD|WT|U|W|P|
    +--+---------+------------------------------+-----+-+-+-+-+-+-+-+-+-+

A PD entry with PS set maps a 2 MiB page directly (no PT below it).

An upper-level entry must be at least as permissive as every page below
it — the CPU ANDs the W and U bits and ORs NX along the walk — so
directories are created present, writable and user, and the leaf decides.

Nothing here issues an ioctl: the tables live in guest memory and the
tables' own pages come from an allocator the caller passes in.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass
from typing import Callable, Iterator

from minikvm.kvm.memory import GuestMemory
from minikvm.x86 import (PTE_ADDRESS_MASK, PTE_HUGE, PTE_NX, PTE_PRESENT, PTE_USER, PTE_WRITE,
                         CANONICAL_LIMIT, HUGE_PAGE_SIZE, PAGE_SIZE)

ENTRIES_PER_TABLE = 512
LEVEL_NAMES = ("PML4", "PDPT", "PD", "PT")
LEVEL_SHIFTS = (39, 30, 21, 12)
#: What an intermediate entry grants: everything.  The leaf restricts.
TABLE_FLAGS = PTE_PRESENT | PTE_WRITE | PTE_USER


def table_index(vaddr: int, level: int) -> int:
    """The 9-bit index of *vaddr* in the table at *level* (0 = PML4)."""
    return (vaddr >> LEVEL_SHIFTS[level]) & (ENTRIES_PER_TABLE - 1)


def pte_flags(read: bool, write: bool, execute: bool, user: bool = True) -> int:
    """Leaf flags for a page with these permissions.

    x86 has no "not readable" bit: a present page is always readable, so
    PROT_NONE is expressed by *not mapping* the page at all.
    """
    flags = PTE_PRESENT
    if write:
        flags |= PTE_WRITE
    if user:
        flags |= PTE_USER
    if not execute:
        flags |= PTE_NX
    return flags


@dataclass
class WalkStep:
    """One level of a translation: which table, which slot, what it held."""
    level: str
    table_address: int
    index: int
    entry: int

    def describe(self) -> str:
        """The step in words, as tutorial 07 prints it."""
        if not self.entry & PTE_PRESENT:
            return f"{self.level}[{self.index:3}] at {self.table_address:#x}: not present"
        bits = [name for bit, name in ((PTE_WRITE, "W"), (PTE_USER, "U"),
                                       (PTE_HUGE, "PS"), (PTE_NX, "NX")) if self.entry & bit]
        return (f"{self.level}[{self.index:3}] at {self.table_address:#x}: "
                f"{self.entry:#018x} -> {self.entry & PTE_ADDRESS_MASK:#x} "
                f"P {' '.join(bits)}".rstrip())


class PageTables:
    """A 4-level page-table tree rooted at ``self.root`` (what CR3 holds).

    *allocate_table* returns the guest-physical address of a fresh, zeroed
    page for a table; *free_table* takes one back.
    """

    def __init__(self, memory: GuestMemory, allocate_table: Callable[[], int],
                 free_table: Callable[[int], None]) -> None:
        self.memory = memory
        self._allocate_table = allocate_table
        self._free_table = free_table
        # One view of all memory as 64-bit words: entry i of the table at
        # physical address t is words[(t - base) // 8 + i].
        self.words = memory.buffer.cast("Q")
        #: While not None, every entry written records what it held first,
        #: so that :meth:`roll_back` can put the tree back exactly
        #: (:meth:`minikvm.machine.mm.AddressSpace.all_or_nothing`).
        self.journal: list[tuple[int, bytes]] | None = None
        self.root = self._new_table()

    # -- raw entries --------------------------------------------------------
    def _new_table(self) -> int:
        table = self._allocate_table()
        if self.journal is not None:
            first = self._slot(table, 0)
            self.journal.append((first, self.words[first:first + ENTRIES_PER_TABLE].tobytes()))
        self.memory.zero(table, PAGE_SIZE)
        return table

    def _slot(self, table: int, index: int) -> int:
        return (table - self.memory.base) // 8 + index

    def _entry(self, table: int, index: int) -> int:
        return self.words[self._slot(table, index)]

    def _set_entry(self, table: int, index: int, value: int) -> None:
        slot = self._slot(table, index)
        if self.journal is not None:
            self.journal.append((slot, self.words[slot:slot + 1].tobytes()))
        self.words[slot] = value

    def _store(self, first: int, values: array) -> None:
        """Write consecutive entries from slot *first* (journaled)."""
        if self.journal is not None:
            self.journal.append((first, self.words[first:first + len(values)].tobytes()))
        self.words[first:first + len(values)] = values

    def roll_back(self, journal: list[tuple[int, bytes]]) -> None:
        """Undo the writes *journal* recorded, newest first: the tree is
        again what it was when the journal started."""
        for first, old in reversed(journal):
            self.words[first:first + len(old) // 8] = memoryview(old).cast("Q")

    def _child(self, table: int, index: int, create: bool) -> int | None:
        """The table an entry points to, creating it when asked."""
        entry = self._entry(table, index)
        if entry & PTE_PRESENT:
            if entry & PTE_HUGE:
                raise ValueError("a huge page is in the way; split it first")
            return entry & PTE_ADDRESS_MASK
        if not create:
            return None
        child = self._new_table()
        self._set_entry(table, index, child | TABLE_FLAGS)
        return child

    def _table_for(self, vaddr: int, depth: int, create: bool) -> int | None:
        """The table at *depth* (1 = PDPT … 3 = PT) on *vaddr*'s path."""
        table: int | None = self.root
        for level in range(depth):
            table = self._child(table, table_index(vaddr, level), create)  # type: ignore[arg-type]
            if table is None:
                return None
        return table

    # -- mapping --------------------------------------------------------------
    def map(self, vaddr: int, paddr: int, size: int, flags: int,
            huge: bool = True) -> None:
        """Map ``[vaddr, vaddr + size)`` to ``[paddr, paddr + size)``.

        Uses a 2 MiB page wherever both addresses are 2 MiB aligned and a
        whole 2 MiB remains (fewer tables, fewer TLB misses), 4 KiB pages
        elsewhere.  Existing mappings in the range are replaced.
        """
        _check_range(vaddr, size)
        end = vaddr + size
        while vaddr < end:
            if (huge and vaddr % HUGE_PAGE_SIZE == 0 and paddr % HUGE_PAGE_SIZE == 0
                    and end - vaddr >= HUGE_PAGE_SIZE):
                self._map_huge(vaddr, paddr, flags)
                vaddr += HUGE_PAGE_SIZE
                paddr += HUGE_PAGE_SIZE
                continue
            # A run of 4 KiB pages inside one page table, written in one slice.
            # (It never crosses a 2 MiB boundary, so the next step can
            # consider a huge page there.)
            run_end = min(end, (vaddr // HUGE_PAGE_SIZE + 1) * HUGE_PAGE_SIZE)
            self._map_small_run(vaddr, paddr, run_end - vaddr, flags)
            paddr += run_end - vaddr
            vaddr = run_end

    def _map_huge(self, vaddr: int, paddr: int, flags: int) -> None:
        pd = self._table_for(vaddr, 2, create=True)
        index = table_index(vaddr, 2)
        self._drop_table_below(pd, index)  # type: ignore[arg-type]
        self._set_entry(pd, index, paddr | flags | PTE_HUGE)  # type: ignore[arg-type]

    def _map_small_run(self, vaddr: int, paddr: int, size: int, flags: int) -> None:
        pd = self._table_for(vaddr, 2, create=True)
        pd_index = table_index(vaddr, 2)
        self._split_huge(pd, pd_index)  # type: ignore[arg-type]
        pt = self._child(pd, pd_index, create=True)  # type: ignore[arg-type]
        first = self._slot(pt, table_index(vaddr, 3))  # type: ignore[arg-type]
        count = size // PAGE_SIZE
        self._store(first, array(
            "Q", range(paddr | flags, (paddr | flags) + count * PAGE_SIZE, PAGE_SIZE)))

    def _split_huge(self, pd: int, index: int) -> None:
        """Replace a 2 MiB page by a PT of 512 pages with the same flags."""
        entry = self._entry(pd, index)
        if not entry & PTE_PRESENT or not entry & PTE_HUGE:
            return
        base = entry & PTE_ADDRESS_MASK & ~(HUGE_PAGE_SIZE - 1)
        flags = entry & ~PTE_ADDRESS_MASK & ~PTE_HUGE
        pt = self._new_table()
        self._store(self._slot(pt, 0), array(
            "Q", range(base | flags, (base | flags) + HUGE_PAGE_SIZE, PAGE_SIZE)))
        self._set_entry(pd, index, pt | TABLE_FLAGS)

    def _drop_table_below(self, pd: int, index: int) -> None:
        """Free the PT under a PD entry that is about to become a huge page."""
        entry = self._entry(pd, index)
        if entry & PTE_PRESENT and not entry & PTE_HUGE:
            self._free_table(entry & PTE_ADDRESS_MASK)
        self._set_entry(pd, index, 0)

    def unmap(self, vaddr: int, size: int) -> None:
        """Remove every mapping in ``[vaddr, vaddr + size)`` (page aligned)."""
        self._rewrite(vaddr, size, lambda entry: 0)

    def protect(self, vaddr: int, size: int, flags: int) -> None:
        """Give every mapped page in the range the leaf *flags* (mprotect)."""
        self._rewrite(vaddr, size,
                      lambda entry: (entry & PTE_ADDRESS_MASK) | flags if entry else 0)

    def _rewrite(self, vaddr: int, size: int, change: Callable[[int], int]) -> None:
        _check_range(vaddr, size)
        end = vaddr + size
        while vaddr < end:
            pd = self._table_for(vaddr, 2, create=False)
            next_huge = (vaddr // HUGE_PAGE_SIZE + 1) * HUGE_PAGE_SIZE
            if pd is None:
                vaddr = next_huge
                continue
            pd_index = table_index(vaddr, 2)
            entry = self._entry(pd, pd_index)
            if entry & PTE_HUGE and vaddr % HUGE_PAGE_SIZE == 0 and end >= next_huge:
                self._set_entry(pd, pd_index, change(entry & ~PTE_HUGE) | PTE_HUGE
                                if change(entry) else 0)
                vaddr = next_huge
                continue
            self._split_huge(pd, pd_index)
            pt = self._child(pd, pd_index, create=False)
            run_end = min(end, next_huge)
            if pt is not None:
                # The run's entries in one slice: read, change, write back
                # (an exec unmaps thousands of pages; one call each was most
                # of its cost).
                first = self._slot(pt, table_index(vaddr, 3))
                count = (run_end - vaddr) // PAGE_SIZE
                old = self.words[first:first + count]
                self._store(first, array("Q", [change(entry) for entry in old]))
            vaddr = run_end

    # -- reading ---------------------------------------------------------------
    def walk(self, vaddr: int) -> list[WalkStep]:
        """Follow *vaddr* level by level, the way the MMU does; stops at a
        non-present entry or a leaf.  Used to *explain*, not to translate
        guest pointers (the host trusts its own records for that)."""
        steps = []
        table = self.root
        for level in range(4):
            index = table_index(vaddr, level)
            entry = self._entry(table, index)
            steps.append(WalkStep(LEVEL_NAMES[level], table, index, entry))
            if not entry & PTE_PRESENT or entry & PTE_HUGE or level == 3:
                break
            table = entry & PTE_ADDRESS_MASK
        return steps

    def translate(self, vaddr: int) -> int | None:
        """The physical address *vaddr* maps to, or None."""
        steps = self.walk(vaddr)
        last = steps[-1]
        if not last.entry & PTE_PRESENT:
            return None
        page_size = 1 << LEVEL_SHIFTS[len(steps) - 1]
        return (last.entry & PTE_ADDRESS_MASK & ~(page_size - 1)) | (vaddr & (page_size - 1))

    def tables(self) -> Iterator[int]:
        """Every table page in the tree (for snapshots and tests)."""
        pending = [(self.root, 0)]
        while pending:
            table, level = pending.pop()
            yield table
            if level == 3:
                continue
            for index in range(ENTRIES_PER_TABLE):
                entry = self._entry(table, index)
                if entry & PTE_PRESENT and not entry & PTE_HUGE:
                    pending.append((entry & PTE_ADDRESS_MASK, level + 1))


def _check_range(vaddr: int, size: int) -> None:
    if vaddr % PAGE_SIZE or size % PAGE_SIZE or size <= 0:
        raise ValueError(f"page-table range {vaddr:#x}+{size:#x} must be page aligned and non-empty")
    if vaddr + size > CANONICAL_LIMIT:
        raise ValueError(f"range {vaddr:#x}+{size:#x} leaves the 47-bit lower half")
