"""Layer 2 — the Global Descriptor Table minikvm's guest runs with.

The GDT holds the flat code and data segments of :mod:`minikvm.cpu.segments`
and one *system* descriptor, the TSS descriptor.  In long mode a system
descriptor is 16 bytes, two GDT slots, because the base is 64 bits
(Intel SDM Vol. 3A §8.2.3, Figure 8-4)::

    bytes 8..15:  | reserved (32)          | base 63:32              |
    bytes 0..7 :  the usual 8-byte layout with S = 0 and type = 9 (TSS)

Slot order (selector = index * 8 | RPL)::

    0  null          (required: selector 0 means "no segment")
    1  kernel code   0x08   STAR[47:32]: SYSCALL loads CS from here, SS = +8
    2  kernel data   0x10   STAR[63:48]: SYSRET loads SS = +8, CS = +16
    3  user data     0x1b
    4  user code     0x23
    5  TSS (low)     0x28
    6  TSS (high)
"""

from __future__ import annotations

import struct
from dataclasses import replace

from minikvm import ioctl as k
from minikvm.cpu.segments import (KERNEL_CODE64, KERNEL_DATA64, TYPE_TSS_AVAILABLE, TYPE_TSS_BUSY,
                                  USER_CODE64, USER_DATA64, Segment, build_gdt, decode_descriptor)

TSS_SELECTOR = 5 << 3
GDT_ENTRIES = 7
GDT_LIMIT = GDT_ENTRIES * 8 - 1


def tss_segment(base: int, size: int) -> Segment:
    """The TSS as a :class:`Segment` (system segment: S = 0, byte granular)."""
    return Segment(selector=TSS_SELECTOR, base=base, limit=size - 1, type=TYPE_TSS_AVAILABLE,
                   s=0, g=0)


def tss_descriptor(base: int, size: int) -> bytes:
    """The 16-byte TSS descriptor: the 8-byte form plus base 63:32."""
    low = tss_segment(base & 0xFFFF_FFFF, size).descriptor()
    return low + struct.pack("<II", base >> 32, 0)


def decode_tss_descriptor(data: bytes) -> Segment:
    """Read a 16-byte TSS descriptor back into a :class:`Segment` with the
    full 64-bit base (the tests round-trip :func:`tss_descriptor` through it).
    The reserved upper dword must be zero, as the SDM requires."""
    if len(data) < 16:
        raise ValueError(f"a TSS descriptor is 16 bytes, got {len(data)}")
    base_high, reserved = struct.unpack_from("<II", data, 8)
    if reserved:
        raise ValueError(f"TSS descriptor bytes 12..15 are {reserved:#x}; they are "
                         "reserved and must be zero")
    low = decode_descriptor(data[:8], TSS_SELECTOR)
    return replace(low, base=low.base | base_high << 32)


def tss_kvm_segment(base: int, size: int) -> k.kvm_segment:
    """The TR register's value for KVM_SET_SREGS.  The CPU marks a loaded
    TSS *busy* (type 11), so that is what TR must say."""
    seg = tss_segment(base, size).kvm_segment()
    seg.base = base
    seg.type = TYPE_TSS_BUSY
    return seg


def build_long_mode_gdt(tss_base: int, tss_size: int) -> bytes:
    """The whole GDT: null, kernel code/data, user data/code, TSS."""
    table = bytearray(build_gdt([KERNEL_CODE64, KERNEL_DATA64, USER_DATA64, USER_CODE64],
                                size=GDT_ENTRIES * 8))
    index = TSS_SELECTOR >> 3
    table[index * 8:index * 8 + 16] = tss_descriptor(tss_base, tss_size)
    return bytes(table)
