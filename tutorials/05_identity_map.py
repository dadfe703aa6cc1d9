"""Step 05 — paging: an identity map, read by us and by KVM.

Long mode has no "paging off": every address the guest uses is *virtual*
and goes through page tables.  The simplest tables map each virtual
address to the same physical address — an *identity map* — so code that
ran without paging still finds its bytes after paging is on.

x86-64 walks four tables (PML4, PDPT, PD, PT), each indexed by nine bits
of the address::

     47    39 38    30 29    21 20                 0
    +--------+--------+--------+--------------------+
    |  PML4  |  PDPT  |   PD   | offset in a 2 MiB  |
    +--------+--------+--------+--------------------+

A PD entry with the PS ("huge") bit maps a whole 2 MiB page, so three
tables identity-map up to 1 GiB.  This step builds them with
``minikvm.cpu.modes.identity_map_tables`` (pure bytes: no VM needed), walks
them by hand, and then asks KVM to translate the same addresses with
KVM_TRANSLATE, which walks the tables the vCPU would use.

Run it:  python tutorials/05_identity_map.py
"""

from __future__ import annotations

import sys

from minikvm.kvm.system import Kvm
from minikvm.kvm.memory import GuestMemory
from minikvm.cpu.modes import PAGE_TABLE_SIZE, identity_map_tables, setup_long_mode
from minikvm.x86 import PTE_ACCESSED, PTE_ADDRESS_MASK, PTE_HUGE, PTE_PRESENT, PTE_WRITE

MEMORY_SIZE = 0x40_0000        # 4 MiB of guest RAM, from guest-physical 0
GDT_ADDRESS = 0x1000
PAGE_TABLE_ADDRESS = 0x2000    # PML4 at 0x2000, PDPT at 0x3000, PD at 0x4000
#: Addresses to translate: two inside the map, one just past its end.
ADDRESSES = [0x8000, 0x20_1234, MEMORY_SIZE]
#: The levels of the walk: name and the lowest address bit of its index.
LEVELS = [("PML4", 39), ("PDPT", 30), ("PD", 21), ("PT", 12)]
INDEX_MASK = 0x1FF             # nine bits: 512 entries a table


def flags(entry: int) -> str:
    """The low bits of a page-table entry, by name (A is set by the walker)."""
    names = [("P", PTE_PRESENT), ("W", PTE_WRITE), ("A", PTE_ACCESSED), ("PS", PTE_HUGE)]
    return " ".join(name for name, bit in names if entry & bit) or "(empty)"


def show(physical: int | None) -> str:
    """A translation result as text."""
    return "not mapped" if physical is None else f"{physical:#x}"


# --- step: walk ---
def walk(memory: GuestMemory, cr3: int, address: int) -> int | None:
    """Translate *address* like the MMU: one table per level, from CR3.
    Returns the physical address, or None where the walk finds no entry."""
    table = cr3
    for level, shift in LEVELS:
        index = (address >> shift) & INDEX_MASK
        entry = memory.read_u64(table + 8 * index)
        print(f"    {level}[{index}] = {entry:#x} {flags(entry)}")
        if not entry & PTE_PRESENT:
            return None  # the CPU would raise a page fault (#PF) here
        if entry & PTE_HUGE or shift == 12:  # this entry maps a page
            page_offset = address & ((1 << shift) - 1)
            return (entry & PTE_ADDRESS_MASK) + page_offset
        table = entry & PTE_ADDRESS_MASK
    raise AssertionError("unreachable: the PT level always maps a page")
# --- end: walk ---


def main() -> int:
    # --- step: tables ---
    tables = identity_map_tables(PAGE_TABLE_ADDRESS, MEMORY_SIZE)
    print(f"identity_map_tables: {len(tables)} bytes, the non-zero entries:")
    for offset in range(0, len(tables), 8):
        entry = int.from_bytes(tables[offset:offset + 8], "little")
        if entry:
            table, index = divmod(offset, PAGE_TABLE_SIZE)
            print(f"  {PAGE_TABLE_ADDRESS + offset:#x}  {LEVELS[table][0]}[{index // 8}]"
                  f" = {entry:#x} {flags(entry)}")
    # --- end: tables ---
    wrong = 0
    with GuestMemory(MEMORY_SIZE) as memory, Kvm() as kvm, kvm.create_vm() as vm:
        vm.set_user_memory_region(0, memory)
        vcpu = vm.create_vcpu()
        # --- step: translate ---
        sregs = setup_long_mode(vcpu, memory, GDT_ADDRESS, PAGE_TABLE_ADDRESS, MEMORY_SIZE)
        print(f"setup_long_mode wrote them at {PAGE_TABLE_ADDRESS:#x}; CR3 = {sregs.cr3:#x}")
        for address in ADDRESSES:
            print(f"  {address:#x}: our walk")
            ours = walk(memory, sregs.cr3, address)
            translation = vcpu.translate(address)  # KVM_TRANSLATE
            kvms = translation.physical_address if translation.valid else None
            print(f"    -> {show(ours)}; KVM_TRANSLATE says {show(kvms)}")
            if ours != kvms or (ours is not None and ours != address):
                wrong += 1
        # --- end: translate ---
    if wrong:
        print(f"wrong result: {wrong} translations differ from the identity")
        return 1
    print("our walk and KVM's agree: virtual = physical inside the map")
    print("(KVM's walk set the A bit in the entries it used, as the CPU does)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
