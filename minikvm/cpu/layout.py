"""Layer 2 — the guest's memory map: every fixed address in one place.

minikvm's guest has two kinds of memory.  The *kernel area* is a handful of
pages the CPU itself needs (descriptor tables, the TSS, the entry stubs, an
interrupt stack); it sits below 64 KiB, where Linux never lets a program
map anything (``vm.mmap_min_addr``), and it is identity-mapped
(virtual = physical) and supervisor-only, except the syscall stub.  All the
rest of guest-physical memory is a pool of pages the memory manager
(``mm.py``) hands out to the program, mapped wherever the program wants.

Guest-physical memory::

    0x0000_0000  +---------------------------+
                 | null page (never mapped)  |  catches NULL dereferences
    0x0000_1000  | GDT                       |  segment descriptors + TSS descriptor
    0x0000_2000  | IDT                       |  256 interrupt gates
    0x0000_3000  | TSS + I/O permission map  |  IST stack pointer; port 0xE0 allowed
    0x0000_4000  | syscall entry stub        |  LSTAR points here (user-executable)
    0x0000_5000  | exception stubs           |  one per vector, supervisor-only
    0x0000_6000  | IST stack (2 pages)       |  every exception lands here
    0x0000_8000  +---------------------------+
                 | (unused)                  |
    0x0001_0000  +---------------------------+
                 | page-table pool           |  PML4, PDPTs, PDs, PTs
    0x0080_0000  +---------------------------+
                 | user page pool            |  program, heap, mmap, stack
    memory size  +---------------------------+

Guest-virtual memory of a program (x86-64 user half, 47 bits)::

    0x0000_0000_0000  null guard + kernel area (supervisor, < 64 KiB)
    0x0000_0001_0000  lowest address a program may map
    0x0000_0040_0000  typical ET_EXEC program (``cc -static``), heap after it
    0x5555_5555_4000  static-PIE programs are loaded here (like Linux)
          ...         mmap area, allocated top-down from MMAP_TOP
    0x7fff_0000_0000  MMAP_TOP
    0x7fff_f7ff_e000  [vvar]: the data page the vDSO reads (read-only)
    0x7fff_f7ff_f000  [vdso]: the vDSO's ELF image (read + execute)
    0x7fff_ff7f_f000  stack (8 MiB), growing down from STACK_TOP
    0x7fff_ffff_f000  STACK_TOP

Above the user half, in the kernel's half, one fixed page that the guest
never sees mapped: the legacy vsyscall page at ``0xffff_ffff_ff60_0000``.
Linux places it there (``VSYSCALL_ADDR``); minikvm's own "kernel" lives in
the low kernel area above, so nothing else is in the upper half.
"""

from __future__ import annotations

# The memory map is measured in pages: its unit is re-exported beside it.
from minikvm.x86 import HUGE_PAGE_SIZE, PAGE_SIZE  # noqa: F401

# --- kernel area (physical = virtual) ---------------------------------------
#: The GDT: kernel and user code and data segments, and the TSS descriptor.
GDT_ADDRESS = 0x1000
#: The IDT: 256 interrupt gates, the first 32 pointing at the exception stubs.
IDT_ADDRESS = 0x2000
#: The TSS (IST1, RSP0) and its I/O permission bitmap, which opens port 0xE0 to CPL 3.
TSS_ADDRESS = 0x3000
#: The syscall entry stub: LSTAR points here; the one kernel page CPL 3 may execute.
SYSCALL_STUB_ADDRESS = 0x4000
#: The exception stubs, one per vector, 8 bytes each; supervisor-only.
EXCEPTION_STUBS_ADDRESS = 0x5000
#: The lowest byte of the IST stack, where every exception lands (two pages).
IST_STACK_BOTTOM = 0x6000
#: The top of the IST stack: stacks grow down, so the TSS holds this address.
IST_STACK_TOP = 0x8000
#: The end of the kernel area: nothing fixed lies between here and the pools.
KERNEL_AREA_END = 0x8000

# --- the physical page pools ----------------------------------------------
#: Where the page-table pool starts: PML4, PDPTs, PDs and PTs come from here.
PAGE_TABLE_POOL_START = 0x1_0000
#: The end of the page-table pool: 2032 tables, enough for 4 GiB of 4 KiB pages.
PAGE_TABLE_POOL_END = 0x80_0000
#: Where the user page pool starts (program, heap, mmap, stack); 2 MiB aligned,
#: so that huge pages can come from it.  It ends at the guest's memory size.
USER_POOL_START = 0x80_0000

# --- the program's virtual address space ------------------------------------
#: The lowest address a program may map: Linux's default ``vm.mmap_min_addr``.
MMAP_MIN_ADDR = 0x1_0000
#: The end of the program's half of the address space: ``TASK_SIZE`` on x86-64 (47 bits).
USER_SPACE_END = 0x7FFF_FFFF_F000
#: The top of the initial stack, which grows down from here.
STACK_TOP = USER_SPACE_END
#: The size of the stack mapping: 8 MiB, the default ``RLIMIT_STACK``.
STACK_SIZE = 8 * 1024 * 1024
#: mmap hands out addresses below this one, top-down.
MMAP_TOP = 0x7FFF_0000_0000
#: Where a static-PIE (``ET_DYN``) program is loaded, as Linux does (``ELF_ET_DYN_BASE``).
PIE_LOAD_BIAS = 0x5555_5555_4000
#: The vDSO's ELF image (``AT_SYSINFO_EHDR``): one page, read + execute.
#: Fixed (Linux randomizes it near the stack), a gap of 128 MiB below the
#: stack's lowest page and far above the top-down mmap area.
VDSO_ADDRESS = 0x7FFF_F7FF_F000
#: The data page the vDSO reads (Linux's ``[vvar]``), right below the image:
#: the vDSO's code reaches it RIP-relative.  Read-only for the guest.
VVAR_ADDRESS = VDSO_ADDRESS - PAGE_SIZE
#: The legacy vsyscall page (Linux's ``VSYSCALL_ADDR``): never mapped; an
#: instruction fetch at one of its three entries is emulated by the host.
VSYSCALL_ADDRESS = 0xFFFF_FFFF_FF60_0000

# --- I/O ports the stubs use to reach the host -------------------------------
#: The port of the syscall stub's ``out``: an exit on it is a system call.
SYSCALL_PORT = 0xE0
#: The port of a *patched* system-call site: the program's own two-byte
#: ``syscall`` rewritten as ``out %al,$0xe1`` by
#: :mod:`minikvm.machine.syscall_sites`, so that it leaves the guest once.
PATCHED_SYSCALL_PORT = 0xE1
#: The exception stub for vector *v* does ``out`` to port ``0xC0 + v``.
EXCEPTION_PORT_BASE = 0xC0

#: Default guest memory size (the program's RAM limit): 1 GiB.  The memfd
#: behind it costs nothing until the guest touches a page.
DEFAULT_MEMORY_SIZE = 1 << 30
#: The least guest memory minikvm runs a program in: the kernel area and the
#: page-table pool (8 MiB), the stack (8 MiB, taken at start) and 8 MiB of
#: user pages for the program itself.
MIN_MEMORY_SIZE = PAGE_TABLE_POOL_END + STACK_SIZE + (8 << 20)
#: The most: the page-table pool maps 4 GiB in 4 KiB pages, far more in
#: 2 MiB ones; beyond 64 GiB a sandboxed program is not what minikvm is for.
MAX_MEMORY_SIZE = 64 << 30
