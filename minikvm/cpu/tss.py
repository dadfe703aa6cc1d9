"""Layer 2 — the 64-bit Task-State Segment and its I/O permission map.

In long mode the TSS no longer switches tasks; it only holds stack
pointers the CPU loads when it changes privilege or takes an interrupt
(Intel SDM Vol. 3A §8.7, Figure 8-11)::

    offset  field
    0x00    reserved
    0x04    RSP0   stack for CPL 0 (when an interrupt arrives from CPL 3)
    0x0C    RSP1
    0x14    RSP2
    0x1C    reserved
    0x24    IST1   interrupt stack table: a gate naming IST n *always*
    ...            switches to this stack, whatever RSP was
    0x5C    IST7
    0x64    reserved (u16), then the I/O map base (u16) at 0x66
    0x68    I/O permission bitmap: one bit per port, 0 = allowed at CPL 3

minikvm points every exception gate at IST1, so a guest whose RSP is
garbage (or whose red zone is live) still gets a clean report.

The I/O bitmap lets CPL 3 code execute ``out`` on exactly one port, the
syscall port, and no other (Intel SDM Vol. 1 §19.5.2).  That matters on PVM
hosts, where the ``syscall`` instruction does not leave CPL 3, so the stub's
``out`` runs at CPL 3 too.  The bitmap must be followed by a byte of all
ones, and ports beyond the TSS limit count as denied.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

TSS_HEADER_SIZE = 0x68           # 104 bytes: the architectural part
RSP0_OFFSET = 0x04
IST_OFFSET = 0x24                # IST1; ISTn is at IST_OFFSET + 8 * (n - 1)
IOMAP_BASE_OFFSET = 0x66
PORTS_COVERED = 0x100            # the bitmap describes ports 0..0xFF; higher ports are denied
IO_BITMAP_SIZE = PORTS_COVERED // 8
IO_BITMAP_TERMINATOR = 0xFF      # "the last byte of the bitmap must be all ones"


@dataclass
class Tss:
    """A TSS: its stacks and the ports CPL 3 may use."""
    rsp0: int = 0
    ist: list[int] = field(default_factory=lambda: [0] * 7)
    user_ports: frozenset[int] = frozenset()

    @property
    def size(self) -> int:
        """Bytes the TSS occupies (its descriptor's limit is size - 1)."""
        return TSS_HEADER_SIZE + IO_BITMAP_SIZE + 1

    def encode(self) -> bytes:
        """The TSS as the CPU reads it from memory."""
        data = bytearray(self.size)
        struct.pack_into("<Q", data, RSP0_OFFSET, self.rsp0)
        for n, stack in enumerate(self.ist):
            struct.pack_into("<Q", data, IST_OFFSET + 8 * n, stack)
        struct.pack_into("<H", data, IOMAP_BASE_OFFSET, TSS_HEADER_SIZE)
        bitmap = bytearray([0xFF] * IO_BITMAP_SIZE)  # 1 = denied
        for port in self.user_ports:
            if not 0 <= port < PORTS_COVERED:
                raise ValueError(f"port {port:#x} is outside the I/O bitmap (0..{PORTS_COVERED - 1:#x})")
            bitmap[port // 8] &= ~(1 << (port % 8))
        data[TSS_HEADER_SIZE:TSS_HEADER_SIZE + IO_BITMAP_SIZE] = bitmap
        data[-1] = IO_BITMAP_TERMINATOR
        return bytes(data)


def decode_tss(data: bytes) -> Tss:
    """Read a TSS back from its bytes (the tests round-trip through this)."""
    rsp0 = struct.unpack_from("<Q", data, RSP0_OFFSET)[0]
    ist = [struct.unpack_from("<Q", data, IST_OFFSET + 8 * n)[0] for n in range(7)]
    base = struct.unpack_from("<H", data, IOMAP_BASE_OFFSET)[0]
    bitmap = data[base:base + IO_BITMAP_SIZE]
    ports = frozenset(port for port in range(PORTS_COVERED)
                      if not bitmap[port // 8] & (1 << (port % 8)))
    return Tss(rsp0=rsp0, ist=ist, user_ports=ports)
