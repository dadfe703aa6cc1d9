"""The memory manager (``minikvm/machine/mm.py``) as pure code, and mmap's corners in a guest.

Most tests build an :class:`~minikvm.machine.mm.AddressSpace` over a small
:class:`~minikvm.kvm.memory.GuestMemory` (a memfd: no ``/dev/kvm`` needed) and,
after every operation, check the one invariant everything rests on: the
page tables say exactly what the VMA list says.  Every page of every VMA
with pages translates to the VMA's physical page with the VMA's
permissions; every other page translates to nothing.
(:func:`assert_consistent` reads the tables the way the MMU does.)

Covered: the page pool (first fit, alignment, merging, the limit), map →
translate round trips with 4 KiB and 2 MiB pages, ``protect`` splitting a
huge page, ``unmap``, PROT_NONE reservations, ``remap`` (grow in place,
move without copying, move with copying, shrink, fixed), neighbouring VMAs
merging, running out of memory or page tables without damage — a change
that fails half-way (an unmap that cannot split a 2 MiB page, a protect
over two areas, a move, a replaced mapping) leaves the record, the pools
and every page-table byte as they were — and the copy-in/copy-out
helpers' EFAULT for every kind of bad pointer.

The ``kvm`` tests at the end run ``tests/programs/mmap_edges.c`` natively
and in a guest and compare, and run ``malloc_limit.c`` under ``--memory 64M``.
"""

from __future__ import annotations

import ctypes
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from minikvm.cpu.layout import MMAP_MIN_ADDR, PAGE_TABLE_POOL_START, USER_POOL_START, USER_SPACE_END
from minikvm.errors import SyscallError
from minikvm.kvm.memory import GuestMemory
from minikvm.machine.mm import PROT_EXEC, PROT_NONE, PROT_READ, PROT_WRITE, AddressSpace, Vma
from minikvm.machine.pages import PagePool
from minikvm.syscalls import memory as memory_calls
from minikvm.x86 import (HUGE_PAGE_SIZE, PAGE_SIZE, PTE_HUGE, PTE_NX, PTE_PRESENT, PTE_USER,
                         PTE_WRITE)
from tests.guest_runs import run_minikvm, run_native
from tests.programs.build import available_variants, build, DEFAULT_BUILD_DIR, SOURCE_DIR

MIB = 1 << 20
MEMORY_SIZE = 64 * MIB            # user pool: 8 MiB .. 64 MiB
RW = PROT_READ | PROT_WRITE
RX = PROT_READ | PROT_EXEC
BASE = 0x4000_0000                # a 1 GiB-aligned place to map things
GUEST_TIMEOUT_SECONDS = 60
SUBPROCESS_TIMEOUT_SECONDS = 120


@pytest.fixture
def mm() -> Iterator[AddressSpace]:
    memory = GuestMemory(MEMORY_SIZE)
    space = AddressSpace(memory)
    yield space
    space.page_tables.words.release()  # the word view pins the mapping
    memory.close()


def errno_of(call, *args) -> int:
    """The errno a memory-manager call raises (fails the test if it does not)."""
    with pytest.raises(SyscallError) as raised:
        call(*args)
    return raised.value.errno


# --- the invariant: page tables == VMA list ---------------------------------------------------

def leaf(mm: AddressSpace, vaddr: int) -> tuple[int, int] | None:
    """(physical address, leaf entry) of *vaddr* as the MMU would find it."""
    steps = mm.page_tables.walk(vaddr)
    if not steps[-1].entry & PTE_PRESENT:
        return None
    return mm.page_tables.translate(vaddr), steps[-1].entry  # type: ignore[return-value]


def assert_page(mm: AddressSpace, vaddr: int, vma: Vma | None) -> None:
    found = leaf(mm, vaddr)
    if vma is None or vma.phys is None or vma.prot == PROT_NONE:
        assert found is None, f"{vaddr:#x} is mapped in the page tables but not accessible"
        return
    assert found is not None, f"{vaddr:#x} is in {vma} but not in the page tables"
    physical, entry = found
    assert physical == vma.physical(vaddr), f"{vaddr:#x} translates to {physical:#x}"
    assert entry & PTE_USER
    assert bool(entry & PTE_WRITE) == bool(vma.prot & PROT_WRITE), f"W bit of {vaddr:#x}"
    assert bool(entry & PTE_NX) == (not vma.prot & PROT_EXEC), f"NX bit of {vaddr:#x}"


def assert_consistent(mm: AddressSpace) -> None:
    """Every page of every VMA, the page on each side of it, sorted, disjoint VMAs."""
    assert mm._starts == [vma.start for vma in mm.vmas]
    for before, after in zip(mm.vmas, mm.vmas[1:]):
        assert before.end <= after.start, f"{before} overlaps {after}"
    for vma in mm.vmas:
        assert vma.start % PAGE_SIZE == 0 and vma.end % PAGE_SIZE == 0 and vma.end > vma.start
        pages = range(vma.start, vma.end, PAGE_SIZE)
        if len(pages) > 2048:  # a big reservation: its edges and every 2 MiB
            pages = sorted({vma.start, vma.end - PAGE_SIZE,
                            *range(vma.start, vma.end, HUGE_PAGE_SIZE)})
        for page in pages:
            assert_page(mm, page, vma)
        for outside in (vma.start - PAGE_SIZE, vma.end):
            assert_page(mm, outside, mm.find(outside))


def used_by_vmas(mm: AddressSpace) -> int:
    return sum(vma.size for vma in mm.vmas if vma.phys is not None)


# --- the page pool --------------------------------------------------------------------

def test_pool_is_first_fit_and_aligned() -> None:
    pool = PagePool(0x10_0000, 0x80_0000)
    first = pool.allocate(PAGE_SIZE)
    huge = pool.allocate(HUGE_PAGE_SIZE, HUGE_PAGE_SIZE)
    after = pool.allocate(PAGE_SIZE)
    assert first == 0x10_0000
    assert huge == 0x20_0000, "the first 2 MiB-aligned run that fits"
    assert after == 0x10_1000, "first fit: the gap before the huge run"
    assert pool.used == HUGE_PAGE_SIZE + 2 * PAGE_SIZE


def test_pool_free_merges_neighbours_back_into_one_run() -> None:
    pool = PagePool(0x10_0000, 0x20_0000)
    a, b, c = (pool.allocate(4 * PAGE_SIZE) for _ in range(3))
    for address in (b, a, c):  # middle first: it has no free neighbour yet
        pool.free(address, 4 * PAGE_SIZE)
    assert pool.free_runs == [(0x10_0000, 0x10_0000)]
    assert pool.used == 0


def test_pool_allocate_at_takes_exactly_that_run() -> None:
    pool = PagePool(0x10_0000, 0x20_0000)
    assert pool.allocate_at(0x18_0000, PAGE_SIZE)
    assert not pool.allocate_at(0x18_0000, PAGE_SIZE), "already taken"
    assert not pool.allocate_at(0x1F_F000, 2 * PAGE_SIZE), "runs past the end"
    assert pool.free_runs == [(0x10_0000, 0x8_0000), (0x18_1000, 0x7_F000)]


def test_pool_exhaustion_is_enomem_and_says_how_much() -> None:
    pool = PagePool(0x10_0000, 0x20_0000)
    pool.allocate(0x8_0000)
    with pytest.raises(SyscallError) as raised:
        pool.allocate(0x10_0000)
    assert raised.value.errno == errno.ENOMEM
    assert "0x100000 bytes wanted" in raised.value.reason and "--memory" in raised.value.reason
    assert pool.used == 0x8_0000, "a failed allocation takes nothing"


def test_pool_peak_remembers_the_most_ever_used() -> None:
    pool = PagePool(0x10_0000, 0x20_0000)
    address = pool.allocate(0x4_0000)
    pool.free(address, 0x4_0000)
    pool.allocate(PAGE_SIZE)
    assert (pool.used, pool.peak) == (PAGE_SIZE, 0x4_0000)


# --- map and translate ---------------------------------------------------------------------

def test_map_round_trips_through_the_page_tables(mm: AddressSpace) -> None:
    vma = mm.map(BASE, 5 * PAGE_SIZE, RW, "data")
    assert (vma.start, vma.end, vma.prot, vma.name) == (BASE, BASE + 5 * PAGE_SIZE, RW, "data")
    assert USER_POOL_START <= vma.phys < MEMORY_SIZE
    assert_consistent(mm)
    assert mm.user_pool.used == 5 * PAGE_SIZE
    mm.write(BASE + 100, b"hello")
    assert mm.memory.read(vma.physical(BASE + 100), 5) == b"hello"


def test_a_2_mib_aligned_mapping_uses_huge_pages(mm: AddressSpace) -> None:
    vma = mm.map(BASE, 2 * HUGE_PAGE_SIZE, RX)
    assert vma.phys % HUGE_PAGE_SIZE == 0, "backing is 2 MiB aligned so huge pages fit"
    steps = mm.page_tables.walk(BASE + HUGE_PAGE_SIZE + 0x1234)
    assert [s.level for s in steps] == ["PML4", "PDPT", "PD"]
    assert steps[-1].entry & PTE_HUGE
    assert_consistent(mm)


@pytest.mark.parametrize("prot, writable, executable", [
    (PROT_READ, False, False), (RW, True, False), (RX, False, True),
    (RW | PROT_EXEC, True, True), (PROT_WRITE, True, False),
])
def test_protection_reaches_the_leaf_entry(mm: AddressSpace, prot: int, writable: bool,
                                           executable: bool) -> None:
    mm.map(BASE, PAGE_SIZE, prot)
    _, entry = leaf(mm, BASE)  # type: ignore[misc]
    assert bool(entry & PTE_WRITE) == writable
    assert (not entry & PTE_NX) == executable


@pytest.mark.parametrize("start, size, expected", [
    (BASE + 1, PAGE_SIZE, errno.EINVAL),                     # unaligned
    (BASE, 0, errno.EINVAL),                                 # empty
    (0x1000, PAGE_SIZE, errno.ENOMEM),                       # the kernel area
    (MMAP_MIN_ADDR - PAGE_SIZE, 2 * PAGE_SIZE, errno.ENOMEM),
    (USER_SPACE_END - PAGE_SIZE, 2 * PAGE_SIZE, errno.ENOMEM),  # past the user half
])
def test_map_refuses_bad_ranges(mm: AddressSpace, start: int, size: int, expected: int) -> None:
    assert errno_of(mm.map, start, size, RW) == expected
    assert mm.vmas == [] and mm.user_pool.used == 0


def test_map_refuses_to_overlap(mm: AddressSpace) -> None:
    mm.map(BASE, 4 * PAGE_SIZE, RW)
    assert errno_of(mm.map, BASE + 3 * PAGE_SIZE, 2 * PAGE_SIZE, RW) == errno.EEXIST
    assert len(mm.vmas) == 1 and mm.user_pool.used == 4 * PAGE_SIZE


# --- protect ----------------------------------------------------------------------------------

def test_protect_one_page_splits_a_huge_page(mm: AddressSpace) -> None:
    vma = mm.map(BASE, HUGE_PAGE_SIZE, RW)
    mm.stale_translations = False
    page = BASE + 7 * PAGE_SIZE
    mm.protect(page, PAGE_SIZE, PROT_READ)
    assert [v.prot for v in mm.vmas] == [RW, PROT_READ, RW]
    assert [s.level for s in mm.page_tables.walk(page)] == ["PML4", "PDPT", "PD", "PT"]
    assert mm.page_tables.translate(page) == vma.physical(page), "same page, new flags"
    assert mm.stale_translations, "write access was taken away"
    assert_consistent(mm)


def test_protect_back_merges_the_pieces(mm: AddressSpace) -> None:
    mm.map(BASE, 8 * PAGE_SIZE, RW)
    mm.protect(BASE + 2 * PAGE_SIZE, 3 * PAGE_SIZE, PROT_READ)
    assert len(mm.vmas) == 3
    mm.protect(BASE, 8 * PAGE_SIZE, RW)
    assert [(v.start, v.end, v.prot) for v in mm.vmas] == [(BASE, BASE + 8 * PAGE_SIZE, RW)]
    assert_consistent(mm)


def test_granting_more_leaves_cached_translations_valid(mm: AddressSpace) -> None:
    mm.map(BASE, PAGE_SIZE, PROT_READ)
    mm.stale_translations = False
    mm.protect(BASE, PAGE_SIZE, RW)
    assert not mm.stale_translations


def test_protect_over_a_hole_is_enomem_and_changes_nothing(mm: AddressSpace) -> None:
    mm.map(BASE, PAGE_SIZE, RW)
    mm.map(BASE + 2 * PAGE_SIZE, PAGE_SIZE, RW)
    before = list(mm.vmas)
    assert errno_of(mm.protect, BASE, 3 * PAGE_SIZE, PROT_READ) == errno.ENOMEM
    assert mm.vmas == before


# --- unmap ---------------------------------------------------------------------------------

def test_unmap_the_middle_keeps_the_neighbours(mm: AddressSpace) -> None:
    mm.map(BASE, 6 * PAGE_SIZE, RW)
    mm.write(BASE, b"first")
    mm.write(BASE + 5 * PAGE_SIZE, b"last")
    mm.stale_translations = False
    mm.unmap(BASE + 2 * PAGE_SIZE, 2 * PAGE_SIZE)
    assert [(v.start - BASE) // PAGE_SIZE for v in mm.vmas] == [0, 4]
    assert mm.page_tables.translate(BASE + 2 * PAGE_SIZE) is None
    assert mm.read(BASE, 5) == b"first" and mm.read(BASE + 5 * PAGE_SIZE, 4) == b"last"
    assert mm.user_pool.used == 4 * PAGE_SIZE == used_by_vmas(mm)
    assert mm.stale_translations
    assert_consistent(mm)


def test_unmap_skips_holes_and_is_idempotent(mm: AddressSpace) -> None:
    mm.map(BASE, PAGE_SIZE, RW)
    mm.map(BASE + 4 * PAGE_SIZE, PAGE_SIZE, RW)
    mm.unmap(BASE - PAGE_SIZE, 10 * PAGE_SIZE)
    mm.unmap(BASE - PAGE_SIZE, 10 * PAGE_SIZE)
    assert mm.vmas == [] and mm.user_pool.used == 0
    assert mm.user_pool.free_runs == [(USER_POOL_START, MEMORY_SIZE - USER_POOL_START)]


def test_freed_pages_come_back_zeroed(mm: AddressSpace) -> None:
    mm.map(BASE, PAGE_SIZE, RW)
    mm.write(BASE, b"secret" * 100)
    mm.unmap(BASE, PAGE_SIZE)
    mm.map(BASE + HUGE_PAGE_SIZE, PAGE_SIZE, RW)
    assert mm.read(BASE + HUGE_PAGE_SIZE, PAGE_SIZE) == bytes(PAGE_SIZE)


# --- PROT_NONE reservations --------------------------------------------------------------

def test_a_reservation_costs_nothing_until_opened(mm: AddressSpace) -> None:
    size = 256 * MIB  # four times the machine's memory
    mm.map(BASE, size, PROT_NONE)
    assert mm.user_pool.used == 0
    assert errno_of(mm.read, BASE, 1) == errno.EFAULT
    window = BASE + 64 * MIB
    mm.protect(window, 2 * PAGE_SIZE, RW)
    assert mm.user_pool.used == 2 * PAGE_SIZE
    assert mm.read(window, 2 * PAGE_SIZE) == bytes(2 * PAGE_SIZE)
    assert [v.prot for v in mm.vmas] == [PROT_NONE, RW, PROT_NONE]
    assert_consistent(mm)


def test_closing_and_reopening_keeps_the_contents(mm: AddressSpace) -> None:
    mm.map(BASE, PAGE_SIZE, RW)
    mm.write(BASE, b"kept")
    mm.protect(BASE, PAGE_SIZE, PROT_NONE)
    assert mm.page_tables.translate(BASE) is None
    assert errno_of(mm.read, BASE, 4) == errno.EFAULT
    mm.protect(BASE, PAGE_SIZE, PROT_READ)
    assert mm.read(BASE, 4) == b"kept"
    assert_consistent(mm)


def test_opening_a_reservation_beyond_memory_is_enomem_and_changes_nothing(
        mm: AddressSpace) -> None:
    mm.map(BASE, 256 * MIB, PROT_NONE)
    before = list(mm.vmas)
    assert errno_of(mm.protect, BASE, 128 * MIB, RW) == errno.ENOMEM
    assert mm.vmas == before and mm.user_pool.used == 0
    assert_consistent(mm)


# --- remap -------------------------------------------------------------------------------

def test_remap_grows_in_place_into_one_vma(mm: AddressSpace) -> None:
    mm.map(BASE, 2 * PAGE_SIZE, RW)
    mm.write(BASE, b"data")
    assert mm.remap(BASE, 2 * PAGE_SIZE, 4 * PAGE_SIZE, may_move=False) == BASE
    assert mm.remap(BASE, 4 * PAGE_SIZE, 8 * PAGE_SIZE, may_move=False) == BASE, \
        "the first growth merged, so all 4 pages are one mapping"
    assert [(v.start, v.end) for v in mm.vmas] == [(BASE, BASE + 8 * PAGE_SIZE)]
    assert mm.read(BASE, 4) == b"data"
    assert mm.read(BASE + 2 * PAGE_SIZE, 6 * PAGE_SIZE) == bytes(6 * PAGE_SIZE)
    assert_consistent(mm)


def test_remap_moves_pages_without_copying(mm: AddressSpace) -> None:
    mm.map(BASE + 4 * PAGE_SIZE, PAGE_SIZE, PROT_READ)  # blocks growth in place …
    old = mm.map(BASE, 4 * PAGE_SIZE, RW)               # … but not physically
    mm.write(BASE, b"moving")
    new = mm.remap(BASE, 4 * PAGE_SIZE, 6 * PAGE_SIZE, may_move=True)
    assert new != BASE
    assert mm.find(new).phys == old.phys, "the same physical pages, now elsewhere"
    assert mm.read(new, 6) == b"moving"
    assert mm.find(BASE) is None
    assert mm.user_pool.used == used_by_vmas(mm) == 7 * PAGE_SIZE
    assert_consistent(mm)


def test_remap_copies_when_the_pages_cannot_follow(mm: AddressSpace) -> None:
    mm.map(BASE, 2 * PAGE_SIZE, RW)
    blocker = mm.map(BASE + 2 * PAGE_SIZE, PAGE_SIZE, PROT_READ)
    other = mm.map(BASE + HUGE_PAGE_SIZE, PAGE_SIZE, RW)  # takes the pages right after
    assert other.phys == blocker.phys + PAGE_SIZE
    mm.write(BASE + PAGE_SIZE, b"copied")
    new = mm.remap(BASE, 2 * PAGE_SIZE, 8 * PAGE_SIZE, may_move=True)
    assert mm.read(new + PAGE_SIZE, 6) == b"copied"
    assert mm.read(new + 2 * PAGE_SIZE, 6 * PAGE_SIZE) == bytes(6 * PAGE_SIZE)
    assert mm.user_pool.used == used_by_vmas(mm) == 10 * PAGE_SIZE
    assert_consistent(mm)


def test_remap_shrinks_in_place(mm: AddressSpace) -> None:
    mm.map(BASE, 4 * PAGE_SIZE, RW)
    assert mm.remap(BASE, 4 * PAGE_SIZE, PAGE_SIZE, may_move=False) == BASE
    assert mm.user_pool.used == PAGE_SIZE
    assert_consistent(mm)


def test_remap_to_a_fixed_address_replaces_what_was_there(mm: AddressSpace) -> None:
    mm.map(BASE, 2 * PAGE_SIZE, RW)
    mm.write(BASE, b"source")
    target = BASE + 16 * PAGE_SIZE
    mm.map(target, 4 * PAGE_SIZE, RW)
    mm.write(target, b"target")
    assert mm.remap(BASE, 2 * PAGE_SIZE, 2 * PAGE_SIZE, True, new_address=target) == target
    assert mm.read(target, 6) == b"source"
    assert mm.find(BASE) is None
    assert mm.find(target + 3 * PAGE_SIZE) is not None, "the rest of the target stays"
    assert mm.user_pool.used == used_by_vmas(mm) == 4 * PAGE_SIZE
    assert_consistent(mm)


def test_remap_errors(mm: AddressSpace) -> None:
    mm.map(BASE, 2 * PAGE_SIZE, RW)
    mm.map(BASE + 2 * PAGE_SIZE, PAGE_SIZE, PROT_READ)
    assert errno_of(mm.remap, BASE + 8 * PAGE_SIZE, PAGE_SIZE, 2 * PAGE_SIZE, True) == errno.EFAULT
    assert errno_of(mm.remap, BASE, 3 * PAGE_SIZE, 4 * PAGE_SIZE, True) == errno.EFAULT, \
        "two mappings are not one"
    assert errno_of(mm.remap, BASE, 2 * PAGE_SIZE, 4 * PAGE_SIZE, False) == errno.ENOMEM
    assert errno_of(mm.remap, BASE, 2 * PAGE_SIZE, 2 * PAGE_SIZE, True,
                    BASE + PAGE_SIZE) == errno.EINVAL, "the new range overlaps the old"
    assert_consistent(mm)


def test_remap_of_a_reservation_stays_a_reservation(mm: AddressSpace) -> None:
    mm.map(BASE, 16 * PAGE_SIZE, PROT_NONE)
    mm.map(BASE + 16 * PAGE_SIZE, PAGE_SIZE, RW)
    new = mm.remap(BASE, 16 * PAGE_SIZE, 64 * PAGE_SIZE, may_move=True)
    assert mm.find(new).phys is None and mm.user_pool.used == PAGE_SIZE
    assert_consistent(mm)


# --- the break, merging, discard ---------------------------------------------------------

def test_a_heap_grown_by_brk_is_one_vma(mm: AddressSpace) -> None:
    mm.map(BASE, PAGE_SIZE, RX, "/bin/program")
    mm.brk_start = mm.brk_end = BASE + PAGE_SIZE
    for step in range(1, 20):
        assert mm.set_brk(BASE + PAGE_SIZE + step * 0x21000) == BASE + PAGE_SIZE + step * 0x21000
    heap = [v for v in mm.vmas if v.name == "[heap]"]
    assert len(heap) == 1
    assert mm.set_brk(BASE + PAGE_SIZE + 0x1000) == BASE + PAGE_SIZE + 0x1000  # shrink
    assert mm.set_brk(BASE - PAGE_SIZE) == BASE + PAGE_SIZE + 0x1000, "below the start: unchanged"
    assert_consistent(mm)


def test_unlike_neighbours_do_not_merge(mm: AddressSpace) -> None:
    mm.map(BASE, PAGE_SIZE, RW, "a")
    mm.map(BASE + PAGE_SIZE, PAGE_SIZE, RW, "b")
    mm.map(BASE + 2 * PAGE_SIZE, PAGE_SIZE, PROT_READ, "b")
    assert len(mm.vmas) == 3


def test_discard_zeroes_and_needs_every_page_mapped(mm: AddressSpace) -> None:
    mm.map(BASE, 3 * PAGE_SIZE, RW)
    mm.write(BASE, b"x" * 3 * PAGE_SIZE)
    mm.discard(BASE + PAGE_SIZE, PAGE_SIZE)
    assert mm.read(BASE, 3 * PAGE_SIZE) == b"x" * PAGE_SIZE + bytes(PAGE_SIZE) + b"x" * PAGE_SIZE
    assert errno_of(mm.discard, BASE, 4 * PAGE_SIZE) == errno.ENOMEM
    mm.check_mapped(BASE, 3 * PAGE_SIZE)


def resident_pages(memory: GuestMemory, gpa: int, length: int) -> int:
    """How many pages of ``[gpa, gpa + length)`` the host holds now (mincore(2))."""
    vector = (ctypes.c_ubyte * (length // PAGE_SIZE))()
    libc = ctypes.CDLL(None, use_errno=True)
    result = libc.mincore(ctypes.c_void_p(memory.host_address + gpa), ctypes.c_size_t(length),
                          vector)
    assert result == 0, os.strerror(ctypes.get_errno())
    return sum(byte & 1 for byte in vector)


@pytest.mark.skipif(tuple(map(int, os.uname().release.split(".")[:2])) < (5, 14),
                    reason="MADV_POPULATE_WRITE needs Linux 5.14")
def test_populate_allocates_the_host_pages_up_front_and_they_read_zero(mm) -> None:
    vma = mm.map(BASE, 2 * MIB, RW)
    phys = vma.physical(BASE)
    assert resident_pages(mm.memory, phys, 2 * MIB) == 0    # mapping allocates no host page
    mm.populate(BASE + PAGE_SIZE, MIB)
    assert resident_pages(mm.memory, phys, 2 * MIB) == MIB // PAGE_SIZE
    assert resident_pages(mm.memory, phys + PAGE_SIZE, MIB) == MIB // PAGE_SIZE
    assert mm.read(BASE, 2 * MIB) == bytes(2 * MIB)
    assert_consistent(mm)
    mm.unmap(BASE, 2 * MIB)                                  # and munmap gives them back
    assert resident_pages(mm.memory, phys, 2 * MIB) == 0


# --- running out -------------------------------------------------------------------------

def test_the_memory_limit_is_enomem_and_changes_nothing(mm: AddressSpace) -> None:
    mapped = 0
    while True:
        try:
            mm.map(BASE + mapped * 2, MIB, RW)  # never adjacent
        except SyscallError as error:
            assert error.errno == errno.ENOMEM
            break
        mapped += MIB
    assert 50 * MIB <= mapped <= MEMORY_SIZE - USER_POOL_START
    before = (list(mm.vmas), mm.user_pool.used)
    assert errno_of(mm.map, 0x7000_0000_0000, MIB, RW) == errno.ENOMEM
    assert (list(mm.vmas), mm.user_pool.used) == before
    assert_consistent(mm)


def test_running_out_of_page_tables_rolls_back(mm: AddressSpace) -> None:
    """Each mapping 1 GiB apart needs a new PD and PT; with a handful of
    table pages left, a map fails half-way and must leave nothing behind."""
    spare = 5
    taken = mm.table_pool.used
    mm.table_pool = PagePool(PAGE_TABLE_POOL_START + taken,
                             PAGE_TABLE_POOL_START + taken + spare * PAGE_SIZE)
    mm.page_tables._allocate_table = mm._allocate_table
    made = []
    with pytest.raises(SyscallError) as raised:
        for n in range(spare):
            address = BASE + n * (1 << 30)
            mm.map(address, PAGE_SIZE, RW)
            made.append(address)
    assert raised.value.errno == errno.ENOMEM
    assert [v.start for v in mm.vmas] == made
    assert mm.user_pool.used == len(made) * PAGE_SIZE, "the failed map's page was freed"
    assert_consistent(mm)
    mm.unmap(made[0], PAGE_SIZE)
    mm.map(made[0], PAGE_SIZE, RW)  # its tables are still there: no new ones needed


def state(mm: AddressSpace) -> tuple:
    """Everything a failed change must leave as it was: the record, the
    break, both pools, every byte of the page-table pool."""
    pools = [(list(pool.free_runs), pool.used, pool.peak) for pool in (mm.table_pool,
                                                                      mm.user_pool)]
    tables = bytes(mm.memory.view(PAGE_TABLE_POOL_START, mm.table_pool.end
                                  - PAGE_TABLE_POOL_START))
    return list(mm.vmas), mm.brk_start, mm.brk_end, pools, tables


def leave_table_pages(mm: AddressSpace, spare: int) -> None:
    """Only *spare* page-table pages left from now on."""
    taken = mm.table_pool.used
    mm.table_pool = PagePool(PAGE_TABLE_POOL_START + taken,
                             PAGE_TABLE_POOL_START + taken + spare * PAGE_SIZE)
    mm.page_tables._allocate_table = mm._allocate_table


def test_an_unmap_that_cannot_split_a_huge_page_changes_nothing(mm: AddressSpace) -> None:
    """The issue's case: munmap of one page of a 2 MiB page needs a page
    table; with none left it is ENOMEM, and the area must still be in the
    record (it was taken out while its page stayed mapped)."""
    mm.map(BASE, 2 * HUGE_PAGE_SIZE, RW)
    mm.write(BASE + HUGE_PAGE_SIZE + PAGE_SIZE, b"kept")
    leave_table_pages(mm, 0)
    before = state(mm)
    assert errno_of(mm.unmap, BASE + HUGE_PAGE_SIZE + PAGE_SIZE, PAGE_SIZE) == errno.ENOMEM
    assert state(mm) == before
    assert mm.read(BASE + HUGE_PAGE_SIZE + PAGE_SIZE, 4) == b"kept"
    assert_consistent(mm)


def test_a_protect_over_two_areas_that_fails_on_the_second_changes_neither(
        mm: AddressSpace) -> None:
    mm.map(BASE, PAGE_SIZE, RW | PROT_EXEC)
    mm.map(BASE + PAGE_SIZE, 2 * MEMORY_SIZE, PROT_NONE)  # more than there is
    before = state(mm)
    assert errno_of(mm.protect, BASE, PAGE_SIZE + 2 * MEMORY_SIZE, RW) == errno.ENOMEM
    assert state(mm) == before
    assert_consistent(mm)


def test_a_move_that_runs_out_of_page_tables_changes_nothing(mm: AddressSpace) -> None:
    """mremap to a far address needs new tables there: none left, so the
    mapping stays where it was, and the pages taken for it (it grows and
    cannot grow in place: a copy) are zero and free again."""
    mm.map(BASE, PAGE_SIZE, RW)
    mm.map(BASE + 2 * PAGE_SIZE, PAGE_SIZE, RW)   # its pages follow the first's
    mm.write(BASE, b"moved?")
    leave_table_pages(mm, 0)
    before = state(mm)
    with pytest.raises(SyscallError) as raised:
        mm.remap(BASE, PAGE_SIZE, 4 * PAGE_SIZE, True, 0x7000_0000_0000)
    assert raised.value.errno == errno.ENOMEM
    assert state(mm) == before
    assert mm.read(BASE, 6) == b"moved?"
    first_free = mm.user_pool.free_runs[0][0]   # where the copy went
    assert mm.memory.read(first_free, 4 * PAGE_SIZE) == bytes(4 * PAGE_SIZE), \
        "free pages read as zero"
    assert_consistent(mm)


def test_a_change_that_fails_after_replacing_a_mapping_brings_it_back(
        mm: AddressSpace) -> None:
    """sys_mmap's MAP_FIXED: the old mapping goes, the new one comes, then
    something fails (a file that cannot be read): the old one, contents
    and all, is back; the new one's pages are zero and free."""
    mm.map(BASE, 4 * PAGE_SIZE, RW)
    mm.write(BASE, b"old contents")
    before = state(mm)
    with pytest.raises(OSError):
        with mm.all_or_nothing():
            mm.unmap(BASE, 4 * PAGE_SIZE)
            vma = mm.map(BASE, 4 * PAGE_SIZE, RW)
            mm.memory.write(vma.physical(BASE), b"new")
            new_pages = vma.physical(BASE)
            raise OSError(errno.EIO, "the file copy failed")
    assert state(mm) == before
    assert mm.read(BASE, 12) == b"old contents"
    assert mm.memory.read(new_pages, 3) == bytes(3)
    assert_consistent(mm)


def test_pages_a_change_gives_up_are_zeroed_and_freed_when_it_succeeds(
        mm: AddressSpace) -> None:
    mm.map(BASE, 4 * PAGE_SIZE, RW)
    old_pages = mm.find(BASE).phys
    mm.write(BASE, b"old")
    with mm.all_or_nothing():
        mm.unmap(BASE, 4 * PAGE_SIZE)
        assert mm.user_pool.used == 4 * PAGE_SIZE, "kept until the change is done"
        mm.map(BASE, 4 * PAGE_SIZE, RW)
    assert mm.user_pool.used == 4 * PAGE_SIZE
    assert mm.memory.read(old_pages, 3) == bytes(3)
    assert mm.read(BASE, 3) == bytes(3), "a new mapping reads as zero"
    assert_consistent(mm)


# --- guest pointers -------------------------------------------------------------------------

@pytest.fixture
def layout(mm: AddressSpace) -> AddressSpace:
    """RW page, read-only page, hole, PROT_NONE page, RW page at the top."""
    mm.map(BASE, PAGE_SIZE, RW)
    mm.map(BASE + PAGE_SIZE, PAGE_SIZE, PROT_READ)
    mm.map(BASE + 3 * PAGE_SIZE, PAGE_SIZE, PROT_NONE)
    mm.map(USER_SPACE_END - PAGE_SIZE, PAGE_SIZE, RW)
    return mm


BAD_POINTERS = [
    pytest.param(0, 8, id="NULL"),
    pytest.param(0x1000, 8, id="kernel area: GDT"),
    pytest.param(0x4000, 8, id="kernel area: syscall stub"),
    pytest.param(BASE + 2 * PAGE_SIZE, 1, id="hole"),
    pytest.param(BASE + 3 * PAGE_SIZE, 1, id="PROT_NONE"),
    pytest.param(USER_SPACE_END, 1, id="the first kernel-half address"),
    pytest.param(1 << 47, 1, id="non-canonical"),
    pytest.param((1 << 64) - 8, 8, id="the top of the address space"),
]


@pytest.mark.parametrize("address, size", BAD_POINTERS)
def test_bad_pointers_are_efault(layout: AddressSpace, address: int, size: int) -> None:
    assert errno_of(layout.read, address, size) == errno.EFAULT
    assert errno_of(layout.write, address, b"x" * size) == errno.EFAULT
    assert errno_of(layout.read_cstring, address) == errno.EFAULT


@pytest.mark.parametrize("address, size", [
    pytest.param(BASE + PAGE_SIZE - 4, 8, id="read-write page into read-only page (write)"),
    pytest.param(BASE + 2 * PAGE_SIZE - 4, 8, id="read-only page into the hole"),
    pytest.param(USER_SPACE_END - 4, 8, id="past the end of the user half"),
    pytest.param(BASE, 1 << 62, id="a huge size"),
])
def test_buffers_that_start_well_and_end_badly_are_efault(layout: AddressSpace, address: int,
                                                          size: int) -> None:
    if address != BASE + PAGE_SIZE - 4:
        assert errno_of(layout.read, address, size) == errno.EFAULT
    if size <= PAGE_SIZE:
        assert errno_of(layout.write, address, b"x" * size) == errno.EFAULT


def test_writes_to_read_only_memory_are_efault(layout: AddressSpace) -> None:
    assert layout.read(BASE + PAGE_SIZE, 4) == bytes(4)
    assert errno_of(layout.write, BASE + PAGE_SIZE, b"x") == errno.EFAULT
    assert errno_of(layout.write, BASE + PAGE_SIZE - 2, b"xxxx") == errno.EFAULT
    assert layout.read(BASE + PAGE_SIZE - 2, 2) == bytes(2), "nothing was written before the fault"


def test_a_buffer_across_two_mappings_is_two_views(layout: AddressSpace) -> None:
    layout.write(BASE + PAGE_SIZE - 3, b"abc")
    views = layout.views(BASE + PAGE_SIZE - 3, 6)
    assert [len(v) for v in views] == [3, 3]
    assert layout.read(BASE + PAGE_SIZE - 3, 6) == b"abc\0\0\0"
    assert layout.views(BASE, 0) == []


def test_the_last_user_page_is_usable(layout: AddressSpace) -> None:
    layout.write(USER_SPACE_END - 8, b"the end\0")
    assert layout.read_cstring(USER_SPACE_END - 8) == b"the end"


def test_read_cstring_limits(layout: AddressSpace) -> None:
    layout.write(BASE + PAGE_SIZE - 5, b"\x01" * 5)  # runs into the read-only page's zeros
    assert layout.read_cstring(BASE + PAGE_SIZE - 5) == b"\x01" * 5
    layout.write(BASE, b"y" * PAGE_SIZE)
    assert errno_of(layout.read_cstring, BASE, 100) == errno.ENAMETOOLONG
    layout.protect(BASE + PAGE_SIZE, PAGE_SIZE, PROT_NONE)
    assert errno_of(layout.read_cstring, BASE, 3 * PAGE_SIZE) == errno.EFAULT, \
        "unterminated up to a fault"


def test_iovec_count_is_checked(layout: AddressSpace) -> None:
    assert errno_of(layout.read_iovec, BASE, -1) == errno.EINVAL
    assert errno_of(layout.read_iovec, BASE, 1025) == errno.EINVAL
    layout.write_struct(BASE, "<QQ", 0x1234, 56)
    assert layout.read_iovec(BASE, 1) == [(0x1234, 56)]


# --- the system calls over a reservation of terabytes ------------------------------------------

def test_mincore_of_a_huge_reservation_is_bounded_by_the_vector(mm: AddressSpace) -> None:
    """Work is per VMA, not per page, and the vector must exist first: a
    guest cannot make the host loop over 2**34 pages."""
    process = SimpleNamespace(mm=mm)
    huge = 64 << 40
    mm.map(0x1000_0000_0000, huge, PROT_NONE)
    vector = BASE
    mm.map(vector, 64 * PAGE_SIZE, RW)
    assert errno_of(memory_calls.sys_mincore, process, 0x1000_0000_0000, huge,
                    vector) == errno.EFAULT
    gib = 1 << 30
    mm.protect(0x1000_0000_0000 + PAGE_SIZE, PAGE_SIZE, RW)
    assert memory_calls.sys_mincore(process, 0x1000_0000_0000, gib, vector) == 0
    pages = mm.read(vector, gib // PAGE_SIZE)
    assert pages[:3] == b"\0\1\0" and pages.count(1) == 1


def test_madvise_dontneed_of_a_huge_reservation_touches_only_real_pages(
        mm: AddressSpace) -> None:
    process = SimpleNamespace(mm=mm)
    mm.map(0x1000_0000_0000, 64 << 40, PROT_NONE)
    mm.protect(0x1000_0000_0000, PAGE_SIZE, RW)
    mm.write(0x1000_0000_0000, b"gone")
    assert memory_calls.sys_madvise(process, 0x1000_0000_0000, 64 << 40,
                                    memory_calls.MADV_DONTNEED) == 0
    assert mm.read(0x1000_0000_0000, 4) == bytes(4)


# --- in a guest ----------------------------------------------------------------------------------

def compiled(name: str, variant: str) -> Path:
    return build(SOURCE_DIR / f"{name}.c", DEFAULT_BUILD_DIR, variant)


def minikvm_run(*arguments: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return run_minikvm(["--timeout", GUEST_TIMEOUT_SECONDS, *arguments], cwd=cwd, text=True,
                       timeout=SUBPROCESS_TIMEOUT_SECONDS)


@pytest.mark.kvm
@pytest.mark.parametrize("variant", available_variants())
def test_mmap_edge_cases_match_native(variant: str, tmp_path: Path) -> None:
    program = compiled("mmap_edges", variant)
    native = run_native([program], cwd=tmp_path, text=True, timeout=SUBPROCESS_TIMEOUT_SECONDS)
    assert native.returncode == 0, native.stdout + native.stderr
    guest = minikvm_run("--here", str(program), cwd=tmp_path)
    assert guest.stderr == ""
    assert guest.stdout == native.stdout
    assert guest.returncode == 0


@pytest.mark.kvm
@pytest.mark.parametrize("variant", available_variants())
def test_malloc_until_null_under_a_memory_limit(variant: str, tmp_path: Path) -> None:
    guest = minikvm_run("--memory", "64M", str(compiled("malloc_limit", variant)), cwd=tmp_path)
    assert guest.returncode == 0, guest.stderr
    lines = guest.stdout.splitlines()
    first = lines[0].split()
    assert first[:4] == ["malloc", "returned", "NULL", "after"] and first[-1] == "ENOMEM", lines
    assert 16 <= int(first[4]) < 64, "most of the 56 MiB user pool, never more than the limit"
    assert lines[1:] == ["malloc of 1 TiB: NULL", "after free: half of it allocates again"]
