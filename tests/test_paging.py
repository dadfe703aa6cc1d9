"""Page tables as pure code over guest memory (``minikvm/paging.py``).

Every test builds a :class:`~minikvm.paging.PageTables` over a small
:class:`~minikvm.kvm.memory.GuestMemory` (a memfd: no ``/dev/kvm`` needed) with
a table allocator that counts what it hands out and takes back, then
checks the tables the way the MMU reads them: :meth:`walk` level by level,
:meth:`translate` for the final address, and the raw entries.

Covered: 4 KiB and 2 MiB pages, mixed ranges, splitting a 2 MiB page when
part of it is unmapped or re-protected, replacing mappings, table reuse
(one PT per 2 MiB, one PD per 1 GiB, …), ranges that cross table
boundaries, and the errors for bad ranges.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from minikvm.cpu.layout import PAGE_TABLE_POOL_START
from minikvm.kvm.memory import GuestMemory
from minikvm.paging import (ENTRIES_PER_TABLE, LEVEL_NAMES, TABLE_FLAGS, PageTables, WalkStep,
                            pte_flags, table_index)
from minikvm.x86 import (HUGE_PAGE_SIZE, PAGE_SIZE, PTE_ADDRESS_MASK, PTE_HUGE, PTE_NX, PTE_PRESENT,
                         PTE_USER, PTE_WRITE)

MEMORY_SIZE = 0x40_0000          # 4 MiB: room for plenty of tables
POOL_END = MEMORY_SIZE
GIB = 1 << 30
RW = pte_flags(read=True, write=True, execute=False)
RX = pte_flags(read=True, write=False, execute=True)
RO = pte_flags(read=True, write=False, execute=False)
#: Physical addresses of "pages": page tables never touch the pages they
#: map, so these need not lie inside the small memory.
PHYS = 0x1_0000_0000
HUGE_PHYS = 0x2_0000_0000


@dataclass
class Pool:
    """A table allocator that records what it gives out, and reuses freed pages."""
    next: int = PAGE_TABLE_POOL_START
    freed: list[int] = field(default_factory=list)
    allocated: int = 0

    def allocate(self) -> int:
        self.allocated += 1
        if self.freed:
            return self.freed.pop()
        table, self.next = self.next, self.next + PAGE_SIZE
        assert self.next <= POOL_END, "test pool exhausted"
        return table

    def free(self, table: int) -> None:
        self.freed.append(table)

    @property
    def live(self) -> int:
        return self.allocated - len(self.freed)


@pytest.fixture
def pool() -> Pool:
    return Pool()


@pytest.fixture
def tables(pool: Pool) -> Iterator[PageTables]:
    memory = GuestMemory(MEMORY_SIZE)
    page_tables = PageTables(memory, pool.allocate, pool.free)
    yield page_tables
    page_tables.words.release()  # the word view pins the mapping
    memory.close()


def levels(steps: list[WalkStep]) -> list[str]:
    return [step.level for step in steps]


# --- flags and indices -------------------------------------------------------------

@pytest.mark.parametrize("read, write, execute, user, expected", [
    (True, False, False, True, PTE_PRESENT | PTE_USER | PTE_NX),
    (True, True, False, True, PTE_PRESENT | PTE_WRITE | PTE_USER | PTE_NX),
    (True, False, True, True, PTE_PRESENT | PTE_USER),
    (True, True, True, True, PTE_PRESENT | PTE_WRITE | PTE_USER),
    (True, True, False, False, PTE_PRESENT | PTE_WRITE | PTE_NX),
])
def test_pte_flags(read: bool, write: bool, execute: bool, user: bool, expected: int) -> None:
    assert pte_flags(read, write, execute, user) == expected


def test_table_index_takes_nine_bits_a_level() -> None:
    vaddr = (0x1A5 << 39) | (0x0F3 << 30) | (0x155 << 21) | (0x0AA << 12) | 0x123
    assert [table_index(vaddr, level) for level in range(4)] == [0x1A5, 0x0F3, 0x155, 0x0AA]


def test_new_tables_start_empty(tables: PageTables, pool: Pool) -> None:
    assert pool.live == 1  # just the PML4
    assert list(tables.tables()) == [tables.root]
    assert not any(tables.memory.read(tables.root, PAGE_SIZE))


# --- 4 KiB pages ----------------------------------------------------------------------

def test_map_one_page(tables: PageTables, pool: Pool) -> None:
    vaddr = 0x40_1000
    tables.map(vaddr, PHYS, PAGE_SIZE, RX)
    steps = tables.walk(vaddr + 0x123)
    assert levels(steps) == list(LEVEL_NAMES)
    assert steps[0].table_address == tables.root
    for upper, lower in zip(steps, steps[1:]):  # each entry points to the next table
        assert upper.entry & PTE_ADDRESS_MASK == lower.table_address
        assert upper.entry & ~PTE_ADDRESS_MASK == TABLE_FLAGS
    assert steps[-1].entry == PHYS | RX
    assert [step.index for step in steps] == [table_index(vaddr, level) for level in range(4)]
    assert tables.translate(vaddr + 0x123) == PHYS + 0x123
    assert pool.live == 4  # PML4, PDPT, PD, PT


def test_neighbours_stay_unmapped(tables: PageTables) -> None:
    tables.map(0x40_1000, PHYS, PAGE_SIZE, RW)
    assert tables.translate(0x40_0FFF) is None
    assert tables.translate(0x40_2000) is None
    last = tables.walk(0x40_2000)[-1]
    assert last.level == "PT" and last.entry == 0


def test_walk_stops_at_the_first_missing_level(tables: PageTables) -> None:
    steps = tables.walk(0x7FFF_FFFF_F000)
    assert levels(steps) == ["PML4"]
    assert steps[0].describe().endswith("not present")


def test_map_a_run_of_pages(tables: PageTables) -> None:
    """Consecutive virtual pages get consecutive physical pages."""
    count = 5
    tables.map(0x40_0000 + PAGE_SIZE, PHYS, count * PAGE_SIZE, RW, huge=True)  # not aligned
    for i in range(count):
        assert tables.translate(0x40_1000 + i * PAGE_SIZE) == PHYS + i * PAGE_SIZE
        assert levels(tables.walk(0x40_1000 + i * PAGE_SIZE))[-1] == "PT"


def test_map_replaces_an_existing_mapping(tables: PageTables, pool: Pool) -> None:
    tables.map(0x40_0000, PHYS, PAGE_SIZE, RW)
    before = pool.allocated
    tables.map(0x40_0000, PHYS + 0x5000, PAGE_SIZE, RO)
    assert tables.translate(0x40_0000) == PHYS + 0x5000
    assert tables.walk(0x40_0000)[-1].entry == PHYS + 0x5000 | RO
    assert pool.allocated == before  # same tables


# --- 2 MiB pages ------------------------------------------------------------------------

def test_aligned_two_mib_becomes_one_huge_page(tables: PageTables, pool: Pool) -> None:
    tables.map(HUGE_PAGE_SIZE * 3, HUGE_PHYS, HUGE_PAGE_SIZE, RW)
    steps = tables.walk(HUGE_PAGE_SIZE * 3 + 0x12_3456)
    assert levels(steps) == ["PML4", "PDPT", "PD"]
    assert steps[-1].entry == HUGE_PHYS | RW | PTE_HUGE
    assert tables.translate(HUGE_PAGE_SIZE * 3 + 0x12_3456) == HUGE_PHYS + 0x12_3456
    assert pool.live == 3  # no PT at all


def test_huge_false_uses_small_pages(tables: PageTables, pool: Pool) -> None:
    tables.map(HUGE_PAGE_SIZE, HUGE_PHYS, HUGE_PAGE_SIZE, RW, huge=False)
    assert levels(tables.walk(HUGE_PAGE_SIZE))[-1] == "PT"
    assert tables.translate(HUGE_PAGE_SIZE * 2 - 1) == HUGE_PHYS + HUGE_PAGE_SIZE - 1
    assert pool.live == 4


def test_huge_pages_need_both_addresses_aligned(tables: PageTables) -> None:
    tables.map(HUGE_PAGE_SIZE, HUGE_PHYS + PAGE_SIZE, HUGE_PAGE_SIZE, RW)
    assert levels(tables.walk(HUGE_PAGE_SIZE))[-1] == "PT"


def test_mixed_range_uses_huge_pages_in_the_middle(tables: PageTables) -> None:
    """4 KiB pages up to the first 2 MiB boundary, 2 MiB pages while a whole
    one fits, 4 KiB pages for the tail."""
    start = HUGE_PAGE_SIZE - 2 * PAGE_SIZE
    size = 2 * PAGE_SIZE + 2 * HUGE_PAGE_SIZE + 3 * PAGE_SIZE
    phys = HUGE_PHYS - 2 * PAGE_SIZE  # congruent with start modulo 2 MiB
    tables.map(start, phys, size, RW)
    expected = {start: "PT", HUGE_PAGE_SIZE: "PD", 2 * HUGE_PAGE_SIZE: "PD",
                3 * HUGE_PAGE_SIZE: "PT", 3 * HUGE_PAGE_SIZE + 2 * PAGE_SIZE: "PT"}
    for vaddr, leaf in expected.items():
        assert levels(tables.walk(vaddr))[-1] == leaf, f"{vaddr:#x}"
        assert tables.translate(vaddr) == phys + (vaddr - start)
    assert tables.translate(start + size) is None


def test_huge_page_over_small_pages_frees_their_table(tables: PageTables, pool: Pool) -> None:
    tables.map(HUGE_PAGE_SIZE, PHYS, PAGE_SIZE, RW)
    pt = tables.walk(HUGE_PAGE_SIZE)[-1].table_address
    tables.map(HUGE_PAGE_SIZE, HUGE_PHYS, HUGE_PAGE_SIZE, RW)
    assert pool.freed == [pt]
    assert levels(tables.walk(HUGE_PAGE_SIZE)) == ["PML4", "PDPT", "PD"]
    assert pt not in set(tables.tables())


# --- splitting ---------------------------------------------------------------------------

def test_unmap_inside_a_huge_page_splits_it(tables: PageTables, pool: Pool) -> None:
    base = HUGE_PAGE_SIZE * 2
    tables.map(base, HUGE_PHYS, HUGE_PAGE_SIZE, RW)
    hole = base + 7 * PAGE_SIZE
    tables.unmap(hole, PAGE_SIZE)
    assert tables.translate(hole) is None
    for vaddr in (base, hole - PAGE_SIZE, hole + PAGE_SIZE, base + HUGE_PAGE_SIZE - PAGE_SIZE):
        steps = tables.walk(vaddr)
        assert levels(steps)[-1] == "PT"
        assert steps[-1].entry == (HUGE_PHYS + vaddr - base) | RW  # flags kept, PS gone
        assert tables.translate(vaddr) == HUGE_PHYS + vaddr - base
    pd_entry = tables.walk(base)[2].entry
    assert not pd_entry & PTE_HUGE and pd_entry & ~PTE_ADDRESS_MASK == TABLE_FLAGS
    assert pool.live == 4  # the split added one PT


def test_protect_inside_a_huge_page_splits_it(tables: PageTables) -> None:
    base = HUGE_PAGE_SIZE
    tables.map(base, HUGE_PHYS, HUGE_PAGE_SIZE, RW)
    tables.protect(base + PAGE_SIZE, 2 * PAGE_SIZE, RO)
    flags = [tables.walk(base + i * PAGE_SIZE)[-1].entry & ~PTE_ADDRESS_MASK for i in range(4)]
    assert flags == [RW, RO, RO, RW]
    assert tables.translate(base + PAGE_SIZE + 5) == HUGE_PHYS + PAGE_SIZE + 5


def test_protect_a_whole_huge_page_keeps_it_huge(tables: PageTables, pool: Pool) -> None:
    tables.map(HUGE_PAGE_SIZE, HUGE_PHYS, HUGE_PAGE_SIZE, RW)
    tables.protect(HUGE_PAGE_SIZE, HUGE_PAGE_SIZE, RX)
    assert tables.walk(HUGE_PAGE_SIZE)[-1].entry == HUGE_PHYS | RX | PTE_HUGE
    assert pool.live == 3


def test_unmap_a_whole_huge_page(tables: PageTables) -> None:
    tables.map(HUGE_PAGE_SIZE, HUGE_PHYS, 2 * HUGE_PAGE_SIZE, RW)
    tables.unmap(HUGE_PAGE_SIZE, HUGE_PAGE_SIZE)
    assert tables.walk(HUGE_PAGE_SIZE)[-1].entry == 0
    assert tables.translate(2 * HUGE_PAGE_SIZE) == HUGE_PHYS + HUGE_PAGE_SIZE


def test_map_small_pages_inside_a_huge_page(tables: PageTables) -> None:
    """Overwriting part of a huge page splits it first, so the rest keeps
    its mapping."""
    tables.map(HUGE_PAGE_SIZE, HUGE_PHYS, HUGE_PAGE_SIZE, RW)
    tables.map(HUGE_PAGE_SIZE + PAGE_SIZE, PHYS, PAGE_SIZE, RO)
    assert tables.translate(HUGE_PAGE_SIZE) == HUGE_PHYS
    assert tables.translate(HUGE_PAGE_SIZE + PAGE_SIZE) == PHYS
    assert tables.translate(HUGE_PAGE_SIZE + 2 * PAGE_SIZE) == HUGE_PHYS + 2 * PAGE_SIZE


# --- unmap and protect ------------------------------------------------------------------------

def test_unmap_and_protect_skip_holes(tables: PageTables, pool: Pool) -> None:
    """A range with unmapped parts (even missing directories) is fine, and
    neither call creates tables or mappings in the holes."""
    tables.map(0x40_0000, PHYS, PAGE_SIZE, RW)
    before = pool.allocated
    tables.protect(0x3F_F000, 3 * PAGE_SIZE, RO)
    tables.protect(GIB * 5, HUGE_PAGE_SIZE * 2, RO)
    assert tables.translate(0x3F_F000) is None and tables.translate(0x40_1000) is None
    assert tables.walk(0x40_0000)[-1].entry == PHYS | RO
    tables.unmap(0, 4 * GIB)
    assert tables.translate(0x40_0000) is None
    assert pool.allocated == before


def test_protect_changes_flags_not_addresses(tables: PageTables) -> None:
    tables.map(0x40_0000, PHYS, 3 * PAGE_SIZE, RW)
    tables.protect(0x40_0000, 3 * PAGE_SIZE, RX)
    for i in range(3):
        assert tables.walk(0x40_0000 + i * PAGE_SIZE)[-1].entry == (PHYS + i * PAGE_SIZE) | RX


# --- table reuse ------------------------------------------------------------------------------

def test_tables_are_shared_along_common_paths(tables: PageTables, pool: Pool) -> None:
    """One PT covers 2 MiB, one PD 1 GiB, one PDPT 512 GiB."""
    tables.map(0x40_0000, PHYS, PAGE_SIZE, RW)
    assert pool.live == 4
    tables.map(0x5F_F000, PHYS, PAGE_SIZE, RW)          # same 2 MiB: same PT
    assert pool.live == 4
    tables.map(0x60_0000, PHYS, PAGE_SIZE, RW)          # next 2 MiB: a new PT
    assert pool.live == 5
    tables.map(GIB + 0x40_0000, PHYS, PAGE_SIZE, RW)    # next GiB: new PD and PT
    assert pool.live == 7
    tables.map(512 * GIB, PHYS, PAGE_SIZE, RW)          # next PML4 slot: PDPT, PD, PT
    assert pool.live == 10
    assert len(set(tables.tables())) == pool.live


def test_remapping_reuses_tables(tables: PageTables, pool: Pool) -> None:
    """unmap leaves the (empty) tables in place; mapping there again costs
    no allocation."""
    tables.map(0x40_0000, PHYS, 4 * PAGE_SIZE, RW)
    allocated = pool.allocated
    tables.unmap(0x40_0000, 4 * PAGE_SIZE)
    tables.map(0x40_2000, PHYS, PAGE_SIZE, RO)
    assert pool.allocated == allocated
    assert tables.translate(0x40_2000) == PHYS


def test_ranges_crossing_table_boundaries(tables: PageTables) -> None:
    """A 4 KiB run across a 1 GiB and a 512 GiB boundary lands in the right
    slots of every level."""
    for boundary in (GIB, 512 * GIB):
        start = boundary - 2 * PAGE_SIZE
        tables.map(start, PHYS, 4 * PAGE_SIZE, RW, huge=False)
        for i in range(4):
            vaddr = start + i * PAGE_SIZE
            assert tables.translate(vaddr) == PHYS + i * PAGE_SIZE, f"{vaddr:#x}"


def test_top_of_the_user_half(tables: PageTables) -> None:
    top = (1 << 47) - PAGE_SIZE
    tables.map(top, PHYS, PAGE_SIZE, RW)
    # The lower half is PML4 slots 0..255; its last page is the last slot below.
    assert [step.index for step in tables.walk(top)] == [ENTRIES_PER_TABLE // 2 - 1] + [
        ENTRIES_PER_TABLE - 1] * 3
    assert tables.translate(top + PAGE_SIZE - 1) == PHYS + PAGE_SIZE - 1


# --- errors and words ------------------------------------------------------------------------------

@pytest.mark.parametrize("vaddr, size, message", [
    (0x40_0001, PAGE_SIZE, "must be page aligned"),
    (0x40_0000, 0x800, "must be page aligned"),
    (0x40_0000, 0, "non-empty"),
    ((1 << 47) - PAGE_SIZE, 2 * PAGE_SIZE, "leaves the 47-bit lower half"),
])
def test_bad_ranges_are_refused(tables: PageTables, vaddr: int, size: int, message: str) -> None:
    for call in (lambda: tables.map(vaddr, PHYS, size, RW), lambda: tables.unmap(vaddr, size),
                 lambda: tables.protect(vaddr, size, RO)):
        with pytest.raises(ValueError, match=message):
            call()


def test_describe(tables: PageTables) -> None:
    tables.map(0x40_0000, PHYS, PAGE_SIZE, RW)
    steps = tables.walk(0x40_0000)
    assert steps[0].describe() == (f"PML4[  0] at {tables.root:#x}: "
                                   f"{steps[0].entry:#018x} -> {steps[1].table_address:#x} P W U")
    assert steps[-1].describe() == (f"PT[  0] at {steps[-1].table_address:#x}: "
                                    f"{PHYS | RW:#018x} -> {PHYS:#x} P W U NX")
