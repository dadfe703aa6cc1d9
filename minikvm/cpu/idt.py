"""Layer 2 — the Interrupt Descriptor Table: 64-bit interrupt gates.

When an exception happens the CPU reads gate *vector* from the IDT and
jumps to the handler it names, on the stack it names (Intel SDM Vol. 3A
§6.14.1, Figure 6-8)::

    bytes 12..15  reserved
    bytes  8..11  offset 63:32
    bytes  6..7   offset 31:16
    byte   5      P | DPL(2) | 0 | type(4) = 0xE (64-bit interrupt gate)
    byte   4      IST index (3 bits) — 0 means "no stack switch unless CPL changes"
    bytes  2..3   code segment selector
    bytes  0..1   offset 15:0

An *interrupt* gate (type 0xE) clears RFLAGS.IF on entry; a trap gate
(0xF) does not.  The gate's DPL limits who may reach it with ``int n``:
minikvm's gates have DPL 0, so a guest's ``int3`` or ``int 0x80`` raises
#GP instead of calling a handler directly.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

GATE_TYPE_INTERRUPT = 0xE
GATE_TYPE_TRAP = 0xF
GATE_SIZE = 16
IDT_ENTRIES = 256
IDT_LIMIT = IDT_ENTRIES * GATE_SIZE - 1


@dataclass(frozen=True)
class Gate:
    """One IDT entry."""
    offset: int
    selector: int
    ist: int = 0
    type: int = GATE_TYPE_INTERRUPT
    dpl: int = 0
    present: int = 1

    def encode(self) -> bytes:
        """The 16 bytes of the gate (Figure 6-8 above)."""
        attributes = (self.present << 7) | (self.dpl << 5) | self.type
        return struct.pack("<HHBBHII", self.offset & 0xFFFF, self.selector, self.ist & 0x7,
                           attributes, (self.offset >> 16) & 0xFFFF, self.offset >> 32, 0)


def decode_gate(data: bytes) -> Gate:
    """Read 16 gate bytes back into a :class:`Gate`."""
    low, selector, ist, attributes, middle, high, _ = struct.unpack("<HHBBHII", data[:GATE_SIZE])
    return Gate(offset=low | middle << 16 | high << 32, selector=selector, ist=ist & 0x7,
                type=attributes & 0xF, dpl=(attributes >> 5) & 3, present=attributes >> 7)


def build_idt(gates: dict[int, Gate]) -> bytes:
    """A full 256-entry IDT; vectors without a gate are not present."""
    table = bytearray(IDT_ENTRIES * GATE_SIZE)
    for vector, gate in gates.items():
        table[vector * GATE_SIZE:(vector + 1) * GATE_SIZE] = gate.encode()
    return bytes(table)
