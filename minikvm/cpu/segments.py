"""Layer 2 — segment descriptors: one description, two encodings.

A segment is described once, as a :class:`Segment`.  From it we produce

* the 8 bytes the CPU reads from the GDT (:meth:`Segment.descriptor`), and
* the ``kvm_segment`` that KVM_SET_SREGS loads into the segment register's
  hidden cache (:meth:`Segment.kvm_segment`),

so the two can never disagree.  :func:`decode_descriptor` turns the bytes
back into a Segment; the tests round-trip every segment minikvm uses.

Code/data segment descriptor (Intel SDM Vol. 3A §3.4.5, Figure 3-8)::

     63       56 55 54 53 52 51    48 47 46 45 44 43  40 39       32
    +-----------+--+--+--+--+--------+--+-----+--+------+----------+
    | base 31:24|G |DB|L |AV|lim19:16|P | DPL |S | type | base23:16|
    +-----------+--+--+--+--+--------+--+-----+--+------+----------+
     31                           16 15                            0
    +-------------------------------+------------------------------+
    |          base 15:0            |          limit 15:0          |
    +-------------------------------+------------------------------+
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from minikvm import ioctl as k

# Type field of code and data segments (S = 1), Intel SDM Vol. 3A Table 3-1
TYPE_DATA_READ_WRITE = 0x2
TYPE_DATA_READ_WRITE_ACCESSED = 0x3
TYPE_CODE_EXECUTE_READ = 0xA
TYPE_CODE_EXECUTE_READ_ACCESSED = 0xB
# Type field of system segments (S = 0), Intel SDM Vol. 3A Table 3-2
TYPE_TSS_AVAILABLE = 0x9   # 64-bit TSS, not busy
TYPE_TSS_BUSY = 0xB        # 64-bit TSS, loaded in TR

SELECTOR_RPL_MASK = 0x3    # the requested privilege level in a selector's low bits
SELECTOR_INDEX_SHIFT = 3   # selector = index * 8 | TI | RPL


@dataclass(frozen=True)
class Segment:
    """Everything the CPU knows about one segment.

    ``selector`` is the value loaded in the segment register: its index
    (``selector >> 3``) says which GDT slot holds the descriptor.
    ``type`` and ``s`` distinguish code, data and system segments; ``dpl``
    is the privilege level; ``db`` selects 32-bit defaults; ``l`` marks a
    64-bit code segment; ``g`` makes the limit count 4 KiB units.
    """
    selector: int
    base: int = 0
    limit: int = 0xFFFFF
    type: int = TYPE_DATA_READ_WRITE_ACCESSED
    s: int = 1
    dpl: int = 0
    present: int = 1
    avl: int = 0
    l: int = 0
    db: int = 0
    g: int = 1

    @property
    def gdt_index(self) -> int:
        """The GDT slot this segment's descriptor lives in."""
        return self.selector >> SELECTOR_INDEX_SHIFT

    def descriptor(self) -> bytes:
        """The 8-byte GDT descriptor (Figure 3-8 above)."""
        low = (self.limit & 0xFFFF) | ((self.base & 0xFFFF) << 16)
        high = (((self.base >> 16) & 0xFF)
                | (self.type & 0xF) << 8
                | (self.s & 1) << 12
                | (self.dpl & 3) << 13
                | (self.present & 1) << 15
                | ((self.limit >> 16) & 0xF) << 16
                | (self.avl & 1) << 20
                | (self.l & 1) << 21
                | (self.db & 1) << 22
                | (self.g & 1) << 23
                | ((self.base >> 24) & 0xFF) << 24)
        return struct.pack("<II", low, high)

    def kvm_segment(self) -> k.kvm_segment:
        """The same segment as KVM_SET_SREGS wants it: unpacked, with the
        limit already scaled to bytes (KVM expects the effective limit)."""
        limit = (self.limit << 12) | 0xFFF if self.g else self.limit
        return k.kvm_segment(base=self.base, limit=limit, selector=self.selector,
                             type=self.type, present=self.present, dpl=self.dpl,
                             db=self.db, s=self.s, l=self.l, g=self.g, avl=self.avl)


def decode_descriptor(data: bytes, selector: int) -> Segment:
    """Read an 8-byte GDT descriptor back into a :class:`Segment`."""
    low, high = struct.unpack("<II", data[:8])
    return Segment(
        selector=selector,
        base=(low >> 16) | (high & 0xFF) << 16 | (high >> 24) << 24,
        limit=(low & 0xFFFF) | ((high >> 16) & 0xF) << 16,
        type=(high >> 8) & 0xF,
        s=(high >> 12) & 1,
        dpl=(high >> 13) & 3,
        present=(high >> 15) & 1,
        avl=(high >> 20) & 1,
        l=(high >> 21) & 1,
        db=(high >> 22) & 1,
        g=(high >> 23) & 1,
    )


def segment_from_kvm(seg: k.kvm_segment) -> Segment:
    """Read a ``kvm_segment`` (from KVM_GET_SREGS) back into a :class:`Segment`."""
    limit = seg.limit >> 12 if seg.g else seg.limit
    return Segment(selector=seg.selector, base=seg.base, limit=limit, type=seg.type,
                   s=seg.s, dpl=seg.dpl, present=seg.present, avl=seg.avl, l=seg.l,
                   db=seg.db, g=seg.g)


def build_gdt(segments: list[Segment], size: int = 0) -> bytes:
    """A GDT holding each segment's descriptor at its selector's index.
    Slot 0 stays the mandatory null descriptor."""
    top = max((seg.gdt_index for seg in segments), default=0)
    table = bytearray(max(size, (top + 1) * 8))
    for seg in segments:
        if seg.gdt_index == 0:
            raise ValueError("GDT slot 0 is the null descriptor; use another selector")
        table[seg.gdt_index * 8:seg.gdt_index * 8 + 8] = seg.descriptor()
    return bytes(table)


# --- The flat segments minikvm uses (Intel SDM Vol. 3A §3.2.1 "Basic flat model")
#     Index 1: kernel code, 2: kernel data, 3: user data, 4: user code; 5-6: TSS.
#     This order is not arbitrary: SYSRET loads SS from STAR[63:48] + 8 and
#     CS from STAR[63:48] + 16, so user data must sit right below user code.
KERNEL_CODE32 = Segment(selector=1 << 3, type=TYPE_CODE_EXECUTE_READ_ACCESSED, db=1)
KERNEL_DATA32 = Segment(selector=2 << 3, type=TYPE_DATA_READ_WRITE_ACCESSED, db=1)
KERNEL_CODE64 = Segment(selector=1 << 3, type=TYPE_CODE_EXECUTE_READ_ACCESSED, l=1)
KERNEL_DATA64 = Segment(selector=2 << 3, type=TYPE_DATA_READ_WRITE_ACCESSED, db=1)
USER_DATA64 = Segment(selector=3 << 3 | 3, type=TYPE_DATA_READ_WRITE_ACCESSED, db=1, dpl=3)
USER_CODE64 = Segment(selector=4 << 3 | 3, type=TYPE_CODE_EXECUTE_READ_ACCESSED, l=1, dpl=3)
