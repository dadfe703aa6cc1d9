"""Layer 7 — the debugger's reads and writes of guest memory.

gdb reads and writes the program's memory by virtual address (``m``,
``M``, and the ``int3`` of a breakpoint).  Like ``ptrace``'s
``PTRACE_PEEKDATA``/``POKEDATA`` (which use ``FOLL_FORCE``), a debugger
may write into read-only code — that is how breakpoints go in — so the
page protections do not apply here; what does apply is the process's own
record of its mappings (:class:`~minikvm.machine.mm.AddressSpace`): an
address no mapping backs is an error, and a translated address always
lands in the guest's memory, never in the host's.  Lengths are bounded
by the caller (:data:`MAX_TRANSFER`), whatever gdb asks."""

from __future__ import annotations

from minikvm.machine.mm import AddressSpace
from minikvm.x86 import PAGE_SIZE

#: The most bytes one ``m``/``M`` moves: a reply is twice this in hex and
#: must fit the packet size announced (:data:`minikvm.debug.packets.MAX_PACKET`).
MAX_TRANSFER = 4096


def _pieces(mm: AddressSpace, address: int, size: int) -> list[tuple[int, memoryview]]:
    """Guest-physical address and view of each piece of ``[address, address + size)`` up to the first byte no
    mapping backs (page by page, so a range that runs off its mapping
    gives what was there)."""
    pieces: list[tuple[int, memoryview]] = []
    end = address + size
    while address < end:
        vma = mm.find(address)
        if vma is None or vma.phys is None:
            break
        stop = min(end, vma.end, (address | (PAGE_SIZE - 1)) + 1)
        physical = vma.physical(address)
        pieces.append((physical, mm.memory.view(physical, stop - address)))
        address = stop
    return pieces


def read_memory(mm: AddressSpace, address: int, size: int) -> bytes:
    """Up to *size* bytes at *address*, stopping at the first unmapped one
    (gdb takes a short read as "the rest is not readable")."""
    if address < 0 or size <= 0:
        return b""
    return b"".join(bytes(view) for _, view in _pieces(mm, address, min(size, MAX_TRANSFER)))


def write_memory(mm: AddressSpace, address: int, data: bytes) -> bool:
    """Write *data* at *address*, ignoring the pages' protections; False,
    writing nothing, if any byte is unmapped or *data* is too long."""
    if address < 0 or len(data) > MAX_TRANSFER:
        return False
    pieces = _pieces(mm, address, len(data))
    if sum(len(view) for _, view in pieces) != len(data):
        return False
    offset = 0
    for physical, view in pieces:
        view[:] = data[offset:offset + len(view)]
        # A snapshot's reset must restore this page too (minikvm.snapshot).
        mm.memory.note_written(physical, len(view))
        offset += len(view)
    return True

