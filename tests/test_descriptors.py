"""The descriptor encoders of layer 5, by round trip: encode, decode, compare
every field.

* The GDT minikvm loads (:func:`~minikvm.cpu.gdt.build_long_mode_gdt`) decodes
  back into the segments of ``segments.py`` and the TSS descriptor, in the
  slot order SYSCALL and SYSRET depend on.
* The 16-byte TSS descriptor keeps all 64 bits of its base.
* A :class:`~minikvm.cpu.tss.Tss` keeps its stacks and exactly the ports it
  allows, and its bytes are where the SDM puts them.
* A :class:`~minikvm.cpu.idt.Gate` keeps every field; :func:`~minikvm.cpu.idt.build_idt`
  fills exactly the vectors it is given.

All pure: no ``/dev/kvm`` needed.
"""

from __future__ import annotations

import struct

import pytest

from minikvm.cpu.gdt import (GDT_ENTRIES, GDT_LIMIT, TSS_SELECTOR, build_long_mode_gdt,
                             decode_tss_descriptor, tss_descriptor, tss_kvm_segment, tss_segment)
from minikvm.cpu.idt import (GATE_SIZE, GATE_TYPE_INTERRUPT, GATE_TYPE_TRAP, IDT_ENTRIES, IDT_LIMIT,
                             Gate, build_idt, decode_gate)
from minikvm.cpu.layout import SYSCALL_PORT, TSS_ADDRESS
from minikvm.cpu.segments import (KERNEL_CODE64, KERNEL_DATA64, TYPE_TSS_AVAILABLE, TYPE_TSS_BUSY,
                                  USER_CODE64, USER_DATA64, Segment, decode_descriptor,
                                  segment_from_kvm)
from minikvm.cpu.tss import (IO_BITMAP_SIZE, IO_BITMAP_TERMINATOR, IOMAP_BASE_OFFSET, IST_OFFSET,
                             PORTS_COVERED, RSP0_OFFSET, TSS_HEADER_SIZE, Tss, decode_tss)
from minikvm.machine.machine import STAR_VALUE

DESCRIPTOR_SIZE = 8
#: A base whose every byte differs, so a byte in the wrong place shows.
ODD_BASE = 0xFEDC_BA98_7654_3210
ISTS = [0x1111_0000_0000_1000 * (n + 1) for n in range(7)]


# --- GDT ------------------------------------------------------------------------

def test_gdt_size_and_limit() -> None:
    table = build_long_mode_gdt(TSS_ADDRESS, Tss().size)
    assert len(table) == GDT_ENTRIES * DESCRIPTOR_SIZE
    assert GDT_LIMIT == len(table) - 1  # the limit is the last valid byte


def test_gdt_slot_zero_is_null() -> None:
    table = build_long_mode_gdt(TSS_ADDRESS, Tss().size)
    assert table[:DESCRIPTOR_SIZE] == bytes(DESCRIPTOR_SIZE)


@pytest.mark.parametrize("segment", [KERNEL_CODE64, KERNEL_DATA64, USER_DATA64, USER_CODE64],
                         ids=["kernel-code", "kernel-data", "user-data", "user-code"])
def test_gdt_holds_each_segment(segment: Segment) -> None:
    """Each flat segment decodes back from its slot with every field equal."""
    table = build_long_mode_gdt(TSS_ADDRESS, Tss().size)
    slot = segment.gdt_index * DESCRIPTOR_SIZE
    assert decode_descriptor(table[slot:slot + DESCRIPTOR_SIZE], segment.selector) == segment
    assert segment_from_kvm(segment.kvm_segment()) == segment


def test_gdt_holds_the_tss_descriptor() -> None:
    size = Tss().size
    table = build_long_mode_gdt(TSS_ADDRESS, size)
    slot = (TSS_SELECTOR >> 3) * DESCRIPTOR_SIZE
    assert decode_tss_descriptor(table[slot:slot + 16]) == tss_segment(TSS_ADDRESS, size)


def test_slot_order_matches_star() -> None:
    """SYSCALL loads CS from STAR[47:32] and SS from +8; SYSRET (64-bit)
    loads SS from STAR[63:48] + 8 and CS from + 16, with RPL 3.  The GDT's
    slot order exists to make these land on the right descriptors."""
    syscall_cs = (STAR_VALUE >> 32) & 0xFFFF
    sysret_base = (STAR_VALUE >> 48) & 0xFFFF
    assert syscall_cs == KERNEL_CODE64.selector
    assert syscall_cs + 8 == KERNEL_DATA64.selector
    assert (sysret_base + 8) | 3 == USER_DATA64.selector
    assert (sysret_base + 16) | 3 == USER_CODE64.selector
    assert USER_CODE64.dpl == USER_DATA64.dpl == 3 and USER_CODE64.l == 1


# --- the TSS descriptor -------------------------------------------------------------

@pytest.mark.parametrize("base", [TSS_ADDRESS, ODD_BASE, 0xFFFF_FFFF, 1 << 32])
def test_tss_descriptor_round_trip(base: int) -> None:
    size = Tss().size
    raw = tss_descriptor(base, size)
    assert len(raw) == 16
    decoded = decode_tss_descriptor(raw)
    assert decoded == tss_segment(base, size)
    assert (decoded.base, decoded.limit, decoded.type, decoded.s, decoded.g, decoded.present,
            decoded.dpl) == (base, size - 1, TYPE_TSS_AVAILABLE, 0, 0, 1, 0)


def test_tss_descriptor_reserved_dword_is_zero() -> None:
    raw = tss_descriptor(ODD_BASE, Tss().size)
    assert struct.unpack_from("<II", raw, 8) == (ODD_BASE >> 32, 0)


def test_tss_descriptor_decoder_checks_its_input() -> None:
    raw = bytearray(tss_descriptor(TSS_ADDRESS, Tss().size))
    with pytest.raises(ValueError, match="16 bytes, got 8"):
        decode_tss_descriptor(bytes(raw[:8]))
    raw[12] = 1
    with pytest.raises(ValueError, match="reserved and must be zero"):
        decode_tss_descriptor(bytes(raw))


def test_tss_kvm_segment_is_busy_with_the_full_base() -> None:
    """TR as KVM_SET_SREGS wants it: the same segment, but type 11 (busy),
    because the CPU marks the TSS it has loaded busy."""
    size = Tss().size
    seg = tss_kvm_segment(ODD_BASE, size)
    assert seg.type == TYPE_TSS_BUSY
    assert seg.base == ODD_BASE and seg.limit == size - 1
    assert seg.selector == TSS_SELECTOR and seg.s == 0 and seg.present == 1 and seg.g == 0
    assert segment_from_kvm(seg) == Segment(selector=TSS_SELECTOR, base=ODD_BASE,
                                            limit=size - 1, type=TYPE_TSS_BUSY, s=0, g=0)


# --- the TSS ----------------------------------------------------------------------------

@pytest.mark.parametrize("ports", [frozenset(), frozenset({SYSCALL_PORT}),
                                   frozenset({0, 7, 8, 0xFF}),
                                   frozenset(range(PORTS_COVERED))],
                         ids=["none", "syscall-port", "byte-edges", "all"])
def test_tss_round_trip(ports: frozenset[int]) -> None:
    original = Tss(rsp0=ODD_BASE, ist=list(ISTS), user_ports=ports)
    assert decode_tss(original.encode()) == original


def test_tss_layout() -> None:
    """Each field at the offset of Intel SDM Vol. 3A Figure 8-11."""
    raw = Tss(rsp0=0x1234, ist=list(ISTS), user_ports=frozenset({SYSCALL_PORT})).encode()
    assert len(raw) == TSS_HEADER_SIZE + IO_BITMAP_SIZE + 1
    assert struct.unpack_from("<Q", raw, RSP0_OFFSET)[0] == 0x1234
    for n in range(7):
        assert struct.unpack_from("<Q", raw, IST_OFFSET + 8 * n)[0] == ISTS[n]
    assert struct.unpack_from("<H", raw, IOMAP_BASE_OFFSET)[0] == TSS_HEADER_SIZE
    assert raw[-1] == IO_BITMAP_TERMINATOR


def test_io_bitmap_allows_exactly_the_syscall_port() -> None:
    """One clear bit, the syscall port's; every other port is denied (1)."""
    raw = Tss(user_ports=frozenset({SYSCALL_PORT})).encode()
    bitmap = raw[TSS_HEADER_SIZE:TSS_HEADER_SIZE + IO_BITMAP_SIZE]
    clear = [port for port in range(PORTS_COVERED) if not bitmap[port // 8] >> (port % 8) & 1]
    assert clear == [SYSCALL_PORT]


def test_io_bitmap_checks_fit_inside_the_tss() -> None:
    """The CPU reads *two* bitmap bytes for every check; both must lie
    within the TSS limit, or the port counts as denied."""
    size = Tss().size
    last_byte_read = TSS_HEADER_SIZE + SYSCALL_PORT // 8 + 1
    assert last_byte_read <= size - 1


def test_tss_rejects_ports_outside_the_bitmap() -> None:
    with pytest.raises(ValueError, match=r"port 0x100 is outside the I/O bitmap"):
        Tss(user_ports=frozenset({0x100})).encode()


# --- IDT gates ----------------------------------------------------------------------------

GATES = {
    "interrupt": Gate(offset=0x5000, selector=KERNEL_CODE64.selector, ist=1),
    "odd-offset": Gate(offset=ODD_BASE, selector=0x1234, ist=7, type=GATE_TYPE_TRAP, dpl=3),
    "not-present": Gate(offset=0xFFFF_FFFF_FFFF_FFFF, selector=0xFFFF, ist=0, dpl=2,
                        present=0),
}


@pytest.mark.parametrize("name", sorted(GATES))
def test_gate_round_trip(name: str) -> None:
    gate = GATES[name]
    raw = gate.encode()
    assert len(raw) == GATE_SIZE
    assert decode_gate(raw) == gate


def test_gate_layout() -> None:
    """Offset split 15:0 / 31:16 / 63:32, IST in byte 4, attributes in byte 5
    (Intel SDM Vol. 3A Figure 6-8)."""
    raw = Gate(offset=ODD_BASE, selector=0x08, ist=1, dpl=3).encode()
    low, selector, ist, attributes, middle, high, reserved = struct.unpack("<HHBBHII", raw)
    assert (low, middle, high) == (0x3210, 0x7654, 0xFEDC_BA98)
    assert (selector, ist, reserved) == (0x08, 1, 0)
    assert attributes == 0x80 | 3 << 5 | GATE_TYPE_INTERRUPT  # P, DPL 3, type 0xE


def test_build_idt() -> None:
    gates = {vector: Gate(offset=0x5000 + 8 * vector, selector=0x08, ist=1)
             for vector in (0, 6, 13, 14, 31)}
    table = build_idt(gates)
    assert len(table) == IDT_ENTRIES * GATE_SIZE == IDT_LIMIT + 1
    for vector in range(IDT_ENTRIES):
        entry = table[vector * GATE_SIZE:(vector + 1) * GATE_SIZE]
        if vector in gates:
            assert decode_gate(entry) == gates[vector]
        else:
            assert entry == bytes(GATE_SIZE), f"vector {vector} should be empty"
            assert decode_gate(entry).present == 0

