"""Layer 2 — CPU modes: real, protected and long mode, each built on the last.

A new vCPU starts like a real PC after reset: in 16-bit *real mode*,
fetching its first instruction from ``0xFFFF_FFF0``.  Which mode it is in
is nothing but the contents of a few special registers, and KVM lets us
load them directly with KVM_SET_SREGS.  So there is no boot loader here:
each function below writes the registers a boot loader would have ended
with.  The order follows dpw/kvm-hello-world and the LWN article "Using
the KVM API"::

    setup_real_mode        CS base 0: run 16-bit code where we put it
          |
    setup_protected_mode   + a GDT with flat 32-bit segments, CR0.PE
          |
    setup_long_mode        + identity page tables, CR4.PAE, EFER.LME/LMA,
                             CR0.PG, a 64-bit code segment (CS.L)

Every bit is named in :mod:`minikvm.x86`; the docstrings say why the
hardware wants it.  The segments come from :mod:`minikvm.cpu.segments`, so the
same :class:`~minikvm.cpu.segments.Segment` produces both the GDT bytes the
guest could reload and the ``kvm_segment`` KVM loads now.

The identity map — virtual address = physical address for the first few
MiB — is a pure function over bytes (:func:`identity_map_tables`), so it
can be printed and tested without a VM.  Layer 4 (``paging.py``) builds
real, sparse page tables for programs; this tiny map is only what it takes
to turn long mode on.

Intel SDM Vol. 3A §9.9 "Mode switching" and §9.8.5 "Initializing IA-32e
mode" describe the same steps for a CPU that gets there by itself.
"""

from __future__ import annotations

import struct

from minikvm import ioctl as k
from minikvm.cpu.segments import (KERNEL_CODE32, KERNEL_CODE64, KERNEL_DATA32, KERNEL_DATA64,
                                  Segment, build_gdt)
from minikvm.kvm.memory import GuestMemory
from minikvm.kvm.vcpu import Vcpu
from minikvm.x86 import (CR0_ET, CR0_NE, CR0_PE, CR0_PG, CR0_WP, CR4_PAE, EFER_LMA, EFER_LME,
                         PTE_HUGE, PTE_PRESENT, PTE_WRITE)

# --- The identity map ---------------------------------------------------------
#
# Three 4 KiB tables, one after the other, map the first *size* bytes with
# 2 MiB pages (Intel SDM Vol. 3A §4.5, Figure 4-9)::
#
#     CR3 --> PML4 (table 0)   entry 0 --> PDPT
#             PDPT (table 1)   entry 0 --> PD
#             PD   (table 2)   entry i --> 2 MiB page at i * 2 MiB (PS = 1)
#
# One PD has 512 entries, so this map reaches at most 512 * 2 MiB = 1 GiB.
PAGE_TABLE_SIZE = 0x1000          # every paging structure is one 4 KiB page
PAGE_TABLE_ENTRIES = 512          # of 8 bytes each
IDENTITY_MAP_PAGE_SIZE = 1 << 21  # 2 MiB: a PD entry with PS set maps this much
IDENTITY_MAP_TABLES = 3           # PML4, PDPT, PD
IDENTITY_MAP_BYTES = IDENTITY_MAP_TABLES * PAGE_TABLE_SIZE
IDENTITY_MAP_LIMIT = PAGE_TABLE_ENTRIES * IDENTITY_MAP_PAGE_SIZE  # 1 GiB: one full PD
#: What every entry of the identity map grants: present and writable, for
#: CPL 0 only (the U/S bit is clear — tutorial guests run as the kernel).
IDENTITY_MAP_FLAGS = PTE_PRESENT | PTE_WRITE
#: Size of the GDT these functions write: null, code and data descriptors.
GDT_BYTES = 3 * 8

#: CR0 in long mode, written whole.  PE: protected mode, which long mode
#: extends.  PG: paging, mandatory in long mode.  ET: hard-wired to 1 since
#: the 486.  NE: report x87 errors as exceptions, not through the PC's
#: IRQ 13.  WP: read-only pages are read-only for CPL 0 too.  Left clear
#: are CD and NW, set at reset to keep the caches off until firmware has
#: set the memory types up — there is no firmware here.
LONG_MODE_CR0 = CR0_PE | CR0_ET | CR0_NE | CR0_WP | CR0_PG
#: CR4 in long mode: PAE, because 4-level paging is PAE paging extended by
#: one level (8-byte entries); turning paging on with LME set but PAE clear
#: raises #GP.
LONG_MODE_CR4 = CR4_PAE
#: EFER in long mode: LME asks for long mode once paging is on; LMA says it
#: is on.  The CPU sets LMA itself when it turns paging on with LME set;
#: KVM_SET_SREGS *is* that moment, so we set it, and KVM refuses the
#: impossible state LME + paging without LMA.
LONG_MODE_EFER = EFER_LME | EFER_LMA


def setup_real_mode(vcpu: Vcpu) -> k.kvm_sregs:
    """Run 16-bit real-mode code from where we put it; return the loaded sregs.

    After reset CS has selector ``0xF000`` but a hidden base of
    ``0xFFFF_0000``, so that the first fetch hits the firmware ROM at the
    top of the 4 GiB space.  We have no firmware: setting CS's base and
    selector to 0 makes an address in IP a guest-physical address (real
    mode computes ``selector * 16 + offset``), exactly what the LWN
    article does before KVM_SET_REGS points RIP at the code.
    """
    sregs = vcpu.get_sregs()
    sregs.cs.base = 0
    sregs.cs.selector = 0
    vcpu.set_sregs(sregs)
    return sregs


def _load_flat_segments(sregs: k.kvm_sregs, memory: GuestMemory, gdt_address: int,
                        code: Segment, data: Segment) -> None:
    """Write a GDT holding *code* and *data* and load both into *sregs*.

    The CPU reads a descriptor from the GDT only when a segment register
    is *loaded* (``mov %ax,%ds``, a far jump, an interrupt).  KVM_SET_SREGS
    fills the registers' hidden caches directly, so the guest would run
    even without a GDT — until its first reload.  Writing the table from
    the same :class:`Segment` keeps the two views identical.
    """
    gdt = build_gdt([code, data])
    memory.write(gdt_address, gdt)
    sregs.gdt.base = gdt_address
    sregs.gdt.limit = len(gdt) - 1  # the limit is the last valid byte, not a size
    sregs.cs = code.kvm_segment()
    # Flat data for every data segment, SS included: in 32-bit mode SS.DB
    # selects a 32-bit stack pointer (ESP rather than SP).
    for name in ("ds", "es", "fs", "gs", "ss"):
        setattr(sregs, name, data.kvm_segment())


def setup_protected_mode(vcpu: Vcpu, memory: GuestMemory, gdt_address: int) -> k.kvm_sregs:
    """Switch to 32-bit protected mode with flat 4 GiB segments.

    Writes a three-entry GDT (null, 32-bit code, 32-bit data) at
    *gdt_address* in *memory*, loads CS and the data segments from the same
    descriptions, and sets CR0.PE.  The code segment has D = 1 so
    instructions default to 32-bit operands and addresses; base 0 and a
    4 GiB limit (G = 1) make a segment offset equal the linear address —
    the *flat model* every modern OS uses (Intel SDM Vol. 3A §3.2.1).
    Paging stays off: linear addresses are physical addresses.  Only
    CR0.PE changes; the rest of CR0 keeps its reset value.
    Returns the sregs it loaded.
    """
    sregs = vcpu.get_sregs()
    _load_flat_segments(sregs, memory, gdt_address, KERNEL_CODE32, KERNEL_DATA32)
    sregs.cr0 |= CR0_PE  # the one bit that means "protected mode"
    vcpu.set_sregs(sregs)
    return sregs


def identity_map_tables(address: int, size: int) -> bytes:
    """The three page tables that identity-map ``[0, size)`` with 2 MiB pages.

    *address* is the guest-physical address the tables will live at (the
    PML4 first, then the PDPT and the PD, 4 KiB each): entries point to the
    next table by physical address, so the bytes depend on it.  *size* is
    rounded up to whole 2 MiB pages and may be at most 1 GiB (one PD).

    Every entry is ``IDENTITY_MAP_FLAGS``: present (else the walk stops
    with a page fault) and writable.  A PD entry also has PS ("page
    size") set, which makes it map a 2 MiB page itself instead of pointing
    to a page table — three tables instead of 3 + size/2 MiB.
    """
    if address % PAGE_TABLE_SIZE:
        raise ValueError(f"page tables at {address:#x} must be 4 KiB aligned: CR3 and "
                         "table entries keep only bits 51:12 of the address")
    if not 0 < size <= IDENTITY_MAP_LIMIT:
        raise ValueError(f"identity map of {size:#x} bytes: it must be more than 0 and at "
                         f"most {IDENTITY_MAP_LIMIT:#x} (1 GiB, one page directory)")
    pml4, pdpt, pd = (address + i * PAGE_TABLE_SIZE for i in range(IDENTITY_MAP_TABLES))
    pages = -(-size // IDENTITY_MAP_PAGE_SIZE)  # round up
    tables = bytearray(IDENTITY_MAP_BYTES)
    struct.pack_into("<Q", tables, pml4 - address, pdpt | IDENTITY_MAP_FLAGS)
    struct.pack_into("<Q", tables, pdpt - address, pd | IDENTITY_MAP_FLAGS)
    for i in range(pages):
        struct.pack_into("<Q", tables, pd - address + 8 * i,
                         i * IDENTITY_MAP_PAGE_SIZE | IDENTITY_MAP_FLAGS | PTE_HUGE)
    return bytes(tables)


def setup_long_mode(vcpu: Vcpu, memory: GuestMemory, gdt_address: int,
                    page_table_address: int, mapped_size: int | None = None) -> k.kvm_sregs:
    """Switch to 64-bit long mode with the first *mapped_size* bytes identity-mapped.

    Long mode cannot run without paging, so this writes the identity map
    (:func:`identity_map_tables`, 12 KiB at *page_table_address*) and a GDT
    with a 64-bit code segment at *gdt_address*, then loads:

    * CR3 = the PML4's address: where every page walk starts;
    * CR4 = :data:`LONG_MODE_CR4` (PAE), EFER = :data:`LONG_MODE_EFER` (LME, LMA)
      and CR0 = :data:`LONG_MODE_CR0` (PE, PG, …): see those constants for why;
    * CS from a segment with L = 1 (and D = 0): 64-bit code.  With L = 0
      the CPU would run in *compatibility mode*, 32-bit code under
      64-bit paging.

    *mapped_size* defaults to everything up to the end of *memory*
    (``memory.base + memory.size``).  Returns the sregs it loaded.
    """
    if mapped_size is None:
        mapped_size = memory.base + memory.size
    gdt_end = gdt_address + GDT_BYTES
    if gdt_address < page_table_address + IDENTITY_MAP_BYTES and page_table_address < gdt_end:
        raise ValueError(f"the GDT at {gdt_address:#x} overlaps the page tables at "
                         f"[{page_table_address:#x}, "
                         f"{page_table_address + IDENTITY_MAP_BYTES:#x}): put them apart")
    memory.write(page_table_address, identity_map_tables(page_table_address, mapped_size))
    sregs = vcpu.get_sregs()
    _load_flat_segments(sregs, memory, gdt_address, KERNEL_CODE64, KERNEL_DATA64)
    sregs.cr3 = page_table_address
    sregs.cr4 = LONG_MODE_CR4
    sregs.efer = LONG_MODE_EFER
    sregs.cr0 = LONG_MODE_CR0
    vcpu.set_sregs(sregs)
    return sregs
