"""Step 07 — real page tables: map pages where a program wants them.

Step 05's identity map sent every virtual address to the same physical
one.  A program wants something else: its code at 0x400000, its stack just
below 128 TiB, its heap wherever ``brk`` puts it — each backed by whatever
physical page is free.  ``minikvm.paging.PageTables`` builds those tables:
the same four levels, but sparse, created on demand, with permissions per
page (W for writable, U for user mode, NX for not executable).

This step needs no VM to build them: tables are just bytes in guest
memory.  It maps a program's worth of pages, prints how the MMU would walk
to each one, splits a 2 MiB page by changing the protection of one 4 KiB
page inside it, and unmaps a page.  Then it loads the tables into a vCPU
and asks KVM to translate the same addresses (KVM_TRANSLATE), to check
that the CPU reads them as we do.

Run it:  python tutorials/07_page_tables.py
"""

from __future__ import annotations

import sys

from minikvm.kvm.system import Kvm
from minikvm.cpu.layout import (HUGE_PAGE_SIZE, PAGE_SIZE, PAGE_TABLE_POOL_START, STACK_TOP,
                            USER_POOL_START)
from minikvm.kvm.memory import GuestMemory
from minikvm.cpu.modes import setup_long_mode
from minikvm.paging import PageTables, pte_flags
from minikvm.x86 import EFER_NXE

MEMORY_SIZE = 16 << 20         # 16 MiB: page tables from 64 KiB, user pages from 8 MiB
GDT_ADDRESS = 0x1000           # for the vCPU at the end (as in step 06)
BOOT_TABLES = 0x2000           # setup_long_mode's identity map; we replace CR3 after

# Where the program's pages go (virtual) and what backs them (physical).
CODE = 0x40_0000               # like a `cc -static` program
DATA = 0x40_1000
HEAP = 0x60_0000               # 2 MiB aligned: one huge page
STACK = STACK_TOP - PAGE_SIZE  # the top page of the user half
CODE_PHYS = USER_POOL_START                   # 8 MiB
DATA_PHYS = USER_POOL_START + PAGE_SIZE
STACK_PHYS = USER_POOL_START + 2 * PAGE_SIZE
HEAP_PHYS = USER_POOL_START + HUGE_PAGE_SIZE  # 10 MiB: 2 MiB aligned too


# --- step: allocator ---
class TablePool:
    """Hands out zeroed 4 KiB pages for tables, from PAGE_TABLE_POOL_START up.
    (The memory manager of step 09 does this with a real allocator.)"""

    def __init__(self) -> None:
        self.next = PAGE_TABLE_POOL_START

    def allocate(self) -> int:
        table, self.next = self.next, self.next + PAGE_SIZE
        return table

    def free(self, table: int) -> None:
        """PageTables gives a table back when a 2 MiB page replaces it; this
        step never does that, and a bump allocator could not reuse it anyway."""
# --- end: allocator ---


def show_walk(tables: PageTables, address: int) -> int | None:
    """Print the walk to *address* level by level; return the translation."""
    # --- step: walk ---
    print(f"{address:#x}:")
    for step in tables.walk(address):
        print(f"  {step.describe()}")
    physical = tables.translate(address)
    print(f"  => {'not mapped' if physical is None else hex(physical)}")
    # --- end: walk ---
    return physical


def main() -> int:
    with GuestMemory(MEMORY_SIZE) as memory:
        pool = TablePool()
        # --- step: map ---
        tables = PageTables(memory, pool.allocate, pool.free)
        print(f"PML4 (what CR3 will hold) at {tables.root:#x}")
        text = pte_flags(read=True, write=False, execute=True)
        data = pte_flags(read=True, write=True, execute=False)
        tables.map(CODE, CODE_PHYS, PAGE_SIZE, text)
        tables.map(DATA, DATA_PHYS, PAGE_SIZE, data)
        tables.map(HEAP, HEAP_PHYS, HUGE_PAGE_SIZE, data)  # aligned: one 2 MiB page
        tables.map(STACK, STACK_PHYS, PAGE_SIZE, data)
        print(f"mapped code, data, a 2 MiB heap and a stack page: "
              f"{pool.next - PAGE_TABLE_POOL_START >> 12} tables")
        # --- end: map ---
        # --- step: walks ---
        expected = {CODE + 0x10: CODE_PHYS + 0x10, DATA: DATA_PHYS,
                    HEAP + 0x12_3456: HEAP_PHYS + 0x12_3456, STACK + 0xFF8: STACK_PHYS + 0xFF8,
                    DATA + PAGE_SIZE: None}
        found = {address: show_walk(tables, address) for address in expected}
        # --- end: walks ---
        # --- step: split ---
        print("protect one 4 KiB page of the heap read-only: the 2 MiB page is split")
        tables.protect(HEAP + PAGE_SIZE, PAGE_SIZE, pte_flags(read=True, write=False,
                                                              execute=False))
        found[HEAP + PAGE_SIZE] = show_walk(tables, HEAP + PAGE_SIZE)
        expected[HEAP + PAGE_SIZE] = HEAP_PHYS + PAGE_SIZE
        print("unmap the data page")
        tables.unmap(DATA, PAGE_SIZE)
        found[DATA] = show_walk(tables, DATA)
        expected[DATA] = None
        # --- end: split ---
        if found != expected:
            print(f"wrong result: translations {found}, expected {expected}")
            return 1

        # --- step: cpu-check ---
        with Kvm() as kvm, kvm.create_vm() as vm:
            vm.set_user_memory_region(0, memory)
            vcpu = vm.create_vcpu()
            sregs = setup_long_mode(vcpu, memory, GDT_ADDRESS, BOOT_TABLES)
            sregs.cr3 = tables.root     # our tables instead of the identity map
            sregs.efer |= EFER_NXE      # bit 63 means NX (without NXE it is reserved)
            vcpu.set_sregs(sregs)
            disagree = []
            for address, ours in expected.items():
                translation = vcpu.translate(address)  # KVM_TRANSLATE
                kvms = translation.physical_address if translation.valid else None
                if kvms != ours:
                    disagree.append(f"{address:#x}: KVM says {kvms}, we say {ours}")
        # --- end: cpu-check ---
    if disagree:
        print("wrong result: " + "; ".join(disagree))
        return 1
    print(f"KVM_TRANSLATE agrees on all {len(expected)} addresses")
    return 0


if __name__ == "__main__":
    sys.exit(main())
