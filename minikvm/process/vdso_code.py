"""Layer 5 — the vDSO's machine code and the data page it reads, as bytes.

The vDSO (:mod:`minikvm.process.vdso`) gives the C library five functions
that answer without leaving the guest.  This module holds their code: each
instruction listed with the mnemonic beside it, as objdump prints it (AT&T
syntax), checked by ``tests/test_guestcode.py`` against binutils' objdump
like the rest of minikvm's guest code.  Jump and call targets are offsets
from the start of :func:`code` (all the functions back to back).

The time comes from a *data page* (Linux's ``[vvar]``) one page below the
vDSO's ELF header, which the host keeps current, and from ``rdtsc``, which
runs at CPL 3 without a VM exit.  The arithmetic is Linux's vDSO's
(``lib/vdso/gettimeofday.c``, ``vdso_calc_ns``)::

    ns = base[clock] + ((rdtsc() - tsc_base) * mult) >> shift

with a 64×64→128-bit ``mul`` and ``shrd``, so the product never overflows,
and a negative delta (a TSC read before the base, which a synchronized TSC
never gives) counted as zero.  A sequence count guards the page, as Linux's
``vdso_read_begin``/``vdso_read_retry``: odd while the host writes, so a
reader retries.  (The host writes only while the vCPU is stopped, so no
reader ever sees it odd; the count makes that an invariant the code checks
rather than an assumption.)

When the host has no exit-free clock to offer (:mod:`minikvm.machine.guest_clock`),
the page's ``mode`` says so and every function makes the real ``syscall``.

The data page (all little-endian)::

    offset  size  field
    0x00    u32   seq          odd while the host writes
    0x04    u32   mode         0: read the TSC; 1: make the system call
    0x08    u64   tsc_base     the guest TSC at which the bases hold
    0x10    u64   mult         ns per tick, times 2**shift
    0x18    u32   shift
    0x20    u64   monotonic    CLOCK_MONOTONIC at tsc_base, in ns
    0x28    u64   realtime     CLOCK_REALTIME at tsc_base, in ns
    0x30    u64   boottime     CLOCK_BOOTTIME at tsc_base, in ns
    0x38    u32   cpu          what getcpu reports
    0x3c    u32   node
"""

from __future__ import annotations

from minikvm.cpu.guestcode import Instruction, assemble

#: Offsets of the data page's fields (see the table above); the code's
#: displacements are these numbers, checked by tests/test_guestcode.py.
DATA_SEQ = 0x00
DATA_MODE = 0x04
DATA_TSC_BASE = 0x08
DATA_MULT = 0x10
DATA_SHIFT = 0x18
DATA_MONOTONIC = 0x20
DATA_REALTIME = 0x28
DATA_BOOTTIME = 0x30
DATA_CPU = 0x38
DATA_NODE = 0x3C
#: The page's layout as a struct format, field by field in that order.
DATA_FORMAT = "<IIQQI4xQQQII"
#: ``mode`` values.
MODE_TSC = 0
MODE_SYSCALL = 1

#: Where the code starts inside the vDSO image (after the ELF header and
#: tables, :mod:`minikvm.process.vdso`): the RIP-relative ``lea`` of each
#: function reaches the data page one page below the image, so this offset
#: is part of the code.
CODE_OFFSET = 0x600
#: Where the data page is, from the start of the code.
DATA_PAGE_FROM_CODE = -0x1000 - CODE_OFFSET


def read_clock() -> list[Instruction]:
    """The shared routine: R8 = the data page, R9 = the offset of one clock's base;
    returns that clock in ns in RAX (clobbers RCX, RDX, R10, R11).  Retries while
    the sequence count is odd or changed (the host was writing)."""
    return [
        (bytes.fromhex("45 8b 10"), "mov (%r8),%r10d"),
        (bytes.fromhex("41 f7 c2 01 00 00 00"), "test $0x1,%r10d"),
        (bytes.fromhex("75 f4"), "jne 0x0"),
        (bytes.fromhex("0f ae e8"), "lfence"),
        (bytes.fromhex("0f 31"), "rdtsc"),
        (bytes.fromhex("48 c1 e2 20"), "shl $0x20,%rdx"),
        (bytes.fromhex("48 09 d0"), "or %rdx,%rax"),
        (bytes.fromhex("45 31 db"), "xor %r11d,%r11d"),
        (bytes.fromhex("49 2b 40 08"), "sub 0x8(%r8),%rax"),
        (bytes.fromhex("49 0f 42 c3"), "cmovb %r11,%rax"),
        (bytes.fromhex("49 f7 60 10"), "mulq 0x10(%r8)"),
        (bytes.fromhex("41 8b 48 18"), "mov 0x18(%r8),%ecx"),
        (bytes.fromhex("48 0f ad d0"), "shrd %cl,%rdx,%rax"),
        (bytes.fromhex("4b 03 04 08"), "add (%r8,%r9,1),%rax"),
        (bytes.fromhex("45 3b 10"), "cmp (%r8),%r10d"),
        (bytes.fromhex("75 c8"), "jne 0x0"),
        (bytes.fromhex("c3"), "ret"),
    ]


def clock_gettime() -> list[Instruction]:
    """``__vdso_clock_gettime(clockid, ts)``: REALTIME, MONOTONIC and BOOTTIME
    from the data page; every other clock, and the fallback mode, by ``syscall``."""
    return [
        (bytes.fromhex("4c 8d 05 c0 e9 ff ff"), "lea -0x1640(%rip),%r8 # 0xffffffffffffea00"),
        (bytes.fromhex("41 83 78 04 00"), "cmpl $0x0,0x4(%r8)"),
        (bytes.fromhex("75 20"), "jne 0x67"),
        (bytes.fromhex("41 b9 28 00 00 00"), "mov $0x28,%r9d"),
        (bytes.fromhex("85 ff"), "test %edi,%edi"),
        (bytes.fromhex("74 1e"), "je 0x6f"),
        (bytes.fromhex("41 b9 20 00 00 00"), "mov $0x20,%r9d"),
        (bytes.fromhex("83 ff 01"), "cmp $0x1,%edi"),
        (bytes.fromhex("74 13"), "je 0x6f"),
        (bytes.fromhex("41 b9 30 00 00 00"), "mov $0x30,%r9d"),
        (bytes.fromhex("83 ff 07"), "cmp $0x7,%edi"),
        (bytes.fromhex("74 08"), "je 0x6f"),
        (bytes.fromhex("b8 e4 00 00 00"), "mov $0xe4,%eax"),
        (bytes.fromhex("0f 05"), "syscall"),
        (bytes.fromhex("c3"), "ret"),
        (bytes.fromhex("e8 8c ff ff ff"), "call 0x0"),
        (bytes.fromhex("31 d2"), "xor %edx,%edx"),
        (bytes.fromhex("b9 00 ca 9a 3b"), "mov $0x3b9aca00,%ecx"),
        (bytes.fromhex("48 f7 f1"), "div %rcx"),
        (bytes.fromhex("48 89 06"), "mov %rax,(%rsi)"),
        (bytes.fromhex("48 89 56 08"), "mov %rdx,0x8(%rsi)"),
        (bytes.fromhex("31 c0"), "xor %eax,%eax"),
        (bytes.fromhex("c3"), "ret"),
    ]


def gettimeofday() -> list[Instruction]:
    """``__vdso_gettimeofday(tv, tz)``: REALTIME in µs; *tz* is UTC (zeros)."""
    return [
        (bytes.fromhex("4c 8d 05 71 e9 ff ff"), "lea -0x168f(%rip),%r8 # 0xffffffffffffea00"),
        (bytes.fromhex("41 83 78 04 00"), "cmpl $0x0,0x4(%r8)"),
        (bytes.fromhex("75 3d"), "jne 0xd3"),
        (bytes.fromhex("48 85 ff"), "test %rdi,%rdi"),
        (bytes.fromhex("74 29"), "je 0xc4"),
        (bytes.fromhex("41 b9 28 00 00 00"), "mov $0x28,%r9d"),
        (bytes.fromhex("e8 5a ff ff ff"), "call 0x0"),
        (bytes.fromhex("31 d2"), "xor %edx,%edx"),
        (bytes.fromhex("b9 00 ca 9a 3b"), "mov $0x3b9aca00,%ecx"),
        (bytes.fromhex("48 f7 f1"), "div %rcx"),
        (bytes.fromhex("48 89 07"), "mov %rax,(%rdi)"),
        (bytes.fromhex("48 89 d0"), "mov %rdx,%rax"),
        (bytes.fromhex("31 d2"), "xor %edx,%edx"),
        (bytes.fromhex("b9 e8 03 00 00"), "mov $0x3e8,%ecx"),
        (bytes.fromhex("48 f7 f1"), "div %rcx"),
        (bytes.fromhex("48 89 47 08"), "mov %rax,0x8(%rdi)"),
        (bytes.fromhex("48 85 f6"), "test %rsi,%rsi"),
        (bytes.fromhex("74 07"), "je 0xd0"),
        (bytes.fromhex("48 c7 06 00 00 00 00"), "movq $0x0,(%rsi)"),
        (bytes.fromhex("31 c0"), "xor %eax,%eax"),
        (bytes.fromhex("c3"), "ret"),
        (bytes.fromhex("b8 60 00 00 00"), "mov $0x60,%eax"),
        (bytes.fromhex("0f 05"), "syscall"),
        (bytes.fromhex("c3"), "ret"),
    ]


def time() -> list[Instruction]:
    """``__vdso_time(tloc)``: REALTIME in seconds, also stored at *tloc* if not NULL."""
    return [
        (bytes.fromhex("4c 8d 05 1e e9 ff ff"), "lea -0x16e2(%rip),%r8 # 0xffffffffffffea00"),
        (bytes.fromhex("41 83 78 04 00"), "cmpl $0x0,0x4(%r8)"),
        (bytes.fromhex("75 1e"), "jne 0x107"),
        (bytes.fromhex("41 b9 28 00 00 00"), "mov $0x28,%r9d"),
        (bytes.fromhex("e8 0c ff ff ff"), "call 0x0"),
        (bytes.fromhex("31 d2"), "xor %edx,%edx"),
        (bytes.fromhex("b9 00 ca 9a 3b"), "mov $0x3b9aca00,%ecx"),
        (bytes.fromhex("48 f7 f1"), "div %rcx"),
        (bytes.fromhex("48 85 ff"), "test %rdi,%rdi"),
        (bytes.fromhex("74 03"), "je 0x106"),
        (bytes.fromhex("48 89 07"), "mov %rax,(%rdi)"),
        (bytes.fromhex("c3"), "ret"),
        (bytes.fromhex("b8 c9 00 00 00"), "mov $0xc9,%eax"),
        (bytes.fromhex("0f 05"), "syscall"),
        (bytes.fromhex("c3"), "ret"),
    ]


def getcpu() -> list[Instruction]:
    """``__vdso_getcpu(cpu, node, cache)``: the CPU and node the data page names."""
    return [
        (bytes.fromhex("4c 8d 05 ea e8 ff ff"), "lea -0x1716(%rip),%r8 # 0xffffffffffffea00"),
        (bytes.fromhex("48 85 ff"), "test %rdi,%rdi"),
        (bytes.fromhex("74 06"), "je 0x121"),
        (bytes.fromhex("41 8b 40 38"), "mov 0x38(%r8),%eax"),
        (bytes.fromhex("89 07"), "mov %eax,(%rdi)"),
        (bytes.fromhex("48 85 f6"), "test %rsi,%rsi"),
        (bytes.fromhex("74 06"), "je 0x12c"),
        (bytes.fromhex("41 8b 40 3c"), "mov 0x3c(%r8),%eax"),
        (bytes.fromhex("89 06"), "mov %eax,(%rsi)"),
        (bytes.fromhex("31 c0"), "xor %eax,%eax"),
        (bytes.fromhex("c3"), "ret"),
    ]


def clock_getres() -> list[Instruction]:
    """``__vdso_clock_getres(clockid, res)``: 1 ns for the clocks the vDSO reads;
    the others by ``syscall``."""
    return [
        (bytes.fromhex("4c 8d 05 ca e8 ff ff"), "lea -0x1736(%rip),%r8 # 0xffffffffffffea00"),
        (bytes.fromhex("41 83 78 04 00"), "cmpl $0x0,0x4(%r8)"),
        (bytes.fromhex("75 0e"), "jne 0x14b"),
        (bytes.fromhex("85 ff"), "test %edi,%edi"),
        (bytes.fromhex("74 12"), "je 0x153"),
        (bytes.fromhex("83 ff 01"), "cmp $0x1,%edi"),
        (bytes.fromhex("74 0d"), "je 0x153"),
        (bytes.fromhex("83 ff 07"), "cmp $0x7,%edi"),
        (bytes.fromhex("74 08"), "je 0x153"),
        (bytes.fromhex("b8 e5 00 00 00"), "mov $0xe5,%eax"),
        (bytes.fromhex("0f 05"), "syscall"),
        (bytes.fromhex("c3"), "ret"),
        (bytes.fromhex("48 85 f6"), "test %rsi,%rsi"),
        (bytes.fromhex("74 0f"), "je 0x167"),
        (bytes.fromhex("48 c7 06 00 00 00 00"), "movq $0x0,(%rsi)"),
        (bytes.fromhex("48 c7 46 08 01 00 00 00"), "movq $0x1,0x8(%rsi)"),
        (bytes.fromhex("31 c0"), "xor %eax,%eax"),
        (bytes.fromhex("c3"), "ret"),
    ]


#: The exported functions in the order :func:`code` places them, after
#: :func:`read_clock`; :mod:`minikvm.process.vdso` names each twice
#: (``__vdso_clock_gettime`` and the weak ``clock_gettime``), as Linux does.
FUNCTIONS = {"clock_gettime": clock_gettime, "gettimeofday": gettimeofday, "time": time,
             "getcpu": getcpu, "clock_getres": clock_getres}


def layout() -> dict[str, tuple[int, int]]:
    """Each routine's (offset from the start of :func:`code`, size)."""
    result, offset = {}, 0
    for name, function in {"read_clock": read_clock, **FUNCTIONS}.items():
        size = len(assemble(function()))
        result[name] = (offset, size)
        offset += size
    return result


def code() -> bytes:
    """All the routines back to back: what the vDSO's ``.text`` holds."""
    return assemble(read_clock()) + b"".join(assemble(f()) for f in FUNCTIONS.values())
