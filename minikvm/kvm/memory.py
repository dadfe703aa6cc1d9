"""Layer 1 — guest memory: one memfd, mapped into this process.

KVM has no memory of its own.  The guest's "physical" RAM is ordinary host
memory that we ``mmap`` and hand to KVM with KVM_SET_USER_MEMORY_REGION
(see :meth:`minikvm.kvm.vm.Vm.set_user_memory_region`).  Whatever the guest
writes appears in our mapping, and whatever we write the guest sees.

The memory lives in a **memfd** (an anonymous file) rather than an anonymous
mapping, so that later layers can map the *same* pages again: a snapshot
keeps the fd, and a copy-on-write fork maps it ``MAP_PRIVATE``.  A machine
no snapshot will be taken of — ``minikvm run``'s, whose processes fork —
may use plain **anonymous** memory instead (``anonymous=True``): the
host's own ``fork`` then shares it copy-on-write with the child, page by
page, with nothing copied up front (:mod:`minikvm.tree.fork`).  (A private
mapping of a memfd would not do: every page written in it would exist
twice, once in the file and once as the private copy.)

Every access from the host goes through :meth:`GuestMemory.view`, which
checks the guest-physical range against the region and raises
:class:`~minikvm.errors.GuestMemoryError` naming both when it is outside.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import struct

from minikvm.errors import GuestMemoryError
from minikvm.x86 import HUGE_PAGE_SIZE, PAGE_SIZE

#: mmap(2) flag: do not reserve swap for the whole region (the guest touches
#: little of it).  Python's mmap module only exports it from 3.13 on.
MAP_NORESERVE = 0x4000
MAP_FIXED = 0x10            # asm-generic/mman-common.h (mmap module: 3.12+)
FALLOC_FL_KEEP_SIZE = 0x01   # linux/falloc.h
FALLOC_FL_PUNCH_HOLE = 0x02
MADV_DONTNEED = 4            # asm-generic/mman-common.h
MADV_HUGEPAGE = 14
MADV_POPULATE_WRITE = 23     # asm-generic/mman-common.h, Linux 5.14

_libc = ctypes.CDLL(None, use_errno=True)


class GuestMemory:
    """A block of guest-physical memory ``[base, base + size)``.

    *size* must be a multiple of the page size.  ``shared=True`` maps the
    memfd ``MAP_SHARED`` (the owner's view); ``shared=False`` maps it
    ``MAP_PRIVATE``, giving copy-on-write on top of another machine's pages;
    ``anonymous=True`` maps no file at all (:attr:`fd` is -1).
    """

    def __init__(self, size: int, base: int = 0, *, fd: int | None = None,
                 shared: bool = True, anonymous: bool = False,
                 name: str = "minikvm-guest") -> None:
        if size <= 0 or size % PAGE_SIZE:
            raise ValueError(f"guest memory size {size:#x} must be a positive multiple "
                             f"of the page size ({PAGE_SIZE:#x})")
        self.base = base
        self.size = size
        self.anonymous = anonymous
        self.shared = shared and not anonymous
        self.owns_fd = fd is None and not anonymous
        if anonymous:
            self.fd = -1
            self._map = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS
                                  | MAP_NORESERVE, prot=mmap.PROT_READ | mmap.PROT_WRITE)
        else:
            if fd is None:
                fd = os.memfd_create(name, os.MFD_CLOEXEC)
                os.ftruncate(fd, size)
            self.fd = fd
            flags = (mmap.MAP_SHARED if shared else mmap.MAP_PRIVATE) | MAP_NORESERVE
            self._map = mmap.mmap(fd, size, flags=flags,
                                  prot=mmap.PROT_READ | mmap.PROT_WRITE)
        self.buffer = memoryview(self._map)
        # The host address KVM needs: a ctypes view pins the buffer while we live.
        self._pin = ctypes.c_ubyte.from_buffer(self._map)
        self.host_address = ctypes.addressof(self._pin)
        #: When a set (a snapshot's fork turns it on), the numbers of the
        #: pages the *host* writes: KVM's dirty log sees only the guest's own
        #: stores, and a reset must undo both.  Every write through this
        #: class is noted; code that writes through :meth:`view` itself calls
        #: :meth:`note_written`.
        self.host_writes: set[int] | None = None

    # -- lifetime ---------------------------------------------------------
    def close(self) -> None:
        """Unmap the memory (and close the memfd if this object created it)."""
        if self._map is None:
            return
        del self._pin
        self.buffer.release()
        try:
            self._map.close()
        except BufferError:
            # A view derived from ours (a page-table word view, a buffer a
            # syscall still holds) pins the mapping; it is unmapped when the
            # last of them is garbage-collected.
            pass
        self._map = None
        if self.owns_fd:
            os.close(self.fd)

    def take_over(self, fd: int) -> None:
        """Map the memfd *fd* — a copy of this memory's contents — over this
        memory's own host addresses (``MAP_FIXED``), and own it from now on.

        A forked host process does this (:mod:`minikvm.tree.fork`): after
        ``fork`` it still maps its parent's memfd ``MAP_SHARED``, so every
        store would land in the parent's pages.  Mapping the copy at the
        *same* addresses keeps every view of this memory valid — the page
        tables' word view, the buffers a system call holds — because each
        is a pointer into this range, which now shows the copy."""
        flags = mmap.MAP_SHARED | MAP_FIXED | MAP_NORESERVE
        _libc.mmap.restype = ctypes.c_void_p
        _libc.mmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                               ctypes.c_int, ctypes.c_long)
        placed = _libc.mmap(self.host_address, self.size, mmap.PROT_READ | mmap.PROT_WRITE,
                            flags, fd, 0)
        if placed != self.host_address:
            error = ctypes.get_errno()
            raise GuestMemoryError(f"cannot map the copied guest memory (fd {fd}) at "
                                   f"{self.host_address:#x}: {os.strerror(error)}")
        if self.owns_fd:
            os.close(self.fd)
        self.fd = fd
        self.owns_fd = True
        self.shared = True
        self.host_writes = None

    def __enter__(self) -> "GuestMemory":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- bounds-checked access -------------------------------------------
    def contains(self, gpa: int, length: int = 1) -> bool:
        """True when ``[gpa, gpa + length)`` lies inside this region."""
        return self.base <= gpa and length >= 0 and gpa + length <= self.base + self.size

    def view(self, gpa: int, length: int) -> memoryview:
        """A zero-copy window on ``[gpa, gpa + length)``, or GuestMemoryError."""
        if not self.contains(gpa, length):
            raise GuestMemoryError(
                f"guest-physical access of {length:#x} bytes at {gpa:#x} is outside guest "
                f"memory [{self.base:#x}, {self.base + self.size:#x})")
        offset = gpa - self.base
        return self.buffer[offset:offset + length]

    def note_written(self, gpa: int, length: int) -> None:
        """Record that the host wrote ``[gpa, gpa + length)`` (when tracking)."""
        if self.host_writes is not None and length > 0:
            first = (gpa - self.base) // PAGE_SIZE
            self.host_writes.update(range(first, (gpa - self.base + length - 1) // PAGE_SIZE + 1))

    def read(self, gpa: int, length: int) -> bytes:
        """Copy *length* bytes out of guest memory."""
        return bytes(self.view(gpa, length))

    def write(self, gpa: int, data: bytes) -> None:
        """Copy *data* into guest memory at *gpa*."""
        self.view(gpa, len(data))[:] = data
        if self.host_writes is not None:
            self.note_written(gpa, len(data))

    def read_u64(self, gpa: int) -> int:
        """One little-endian 64-bit value (a page-table entry, a stack slot)."""
        return struct.unpack_from("<Q", self.view(gpa, 8))[0]

    def write_u64(self, gpa: int, value: int) -> None:
        """Store one little-endian 64-bit value."""
        struct.pack_into("<Q", self.view(gpa, 8), 0, value)
        if self.host_writes is not None:
            self.note_written(gpa, 8)

    def discard(self, gpa: int, length: int) -> None:
        """Give pages back: afterwards they read as zeros, like fresh RAM.

        In the owner's shared view this punches a hole in the memfd
        (``fallocate(FALLOC_FL_PUNCH_HOLE)``), which also returns the host
        memory.  A private (copy-on-write) view must not touch the shared
        file, so it just writes zeros.
        """
        self.view(gpa, length)  # bounds check
        self.note_written(gpa, length)
        if self.anonymous:
            # Anonymous pages dropped read as zeros again (and free the host's).
            if _libc.madvise(ctypes.c_void_p(self.host_address + gpa - self.base),
                             ctypes.c_size_t(length), MADV_DONTNEED) == 0:
                return
        if self.shared and self.owns_fd:
            offset = gpa - self.base
            if _libc.fallocate(self.fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                               ctypes.c_long(offset), ctypes.c_long(length)) == 0:
                return
        self.zero(gpa, length)

    def populate(self, gpa: int, length: int) -> None:
        """Have the host allocate the memfd pages of ``[gpa, gpa + length)``
        now, in one call (``madvise(MADV_POPULATE_WRITE)``), instead of one
        host page fault per page when the guest first touches them.

        Only an optimisation: nothing happens in a private (copy-on-write)
        view, whose pages belong to a snapshot, or where the kernel lacks
        the call (before 5.14), or when the host is short of memory — the
        guest then faults the pages in one by one, as without it."""
        self.view(gpa, length)  # bounds check
        if self.anonymous or self.shared and self.owns_fd:
            _libc.madvise(ctypes.c_void_p(self.host_address + gpa - self.base),
                          ctypes.c_size_t(length), MADV_POPULATE_WRITE)

    def advise_huge(self, gpa: int, length: int) -> None:
        """``madvise(MADV_HUGEPAGE)`` on the whole 2 MiB blocks of ``[gpa,
        gpa + length)``, for anonymous memory only: the host then backs them
        with transparent huge pages (these hosts give them to anonymous
        memory only on request, "madvise" mode, and never to a memfd's).
        Measured with benchmarks/memtouch.c (256 MiB, page by page): 1.25 s
        without, 0.03 s with, against 0.12 s natively, where malloc's memory
        gets 4 KiB pages.  Only an optimisation: ignored where refused."""
        self.view(gpa, length)  # bounds check
        start = -(-gpa // HUGE_PAGE_SIZE) * HUGE_PAGE_SIZE
        end = (gpa + length) // HUGE_PAGE_SIZE * HUGE_PAGE_SIZE
        if self.anonymous and end > start:
            _libc.madvise(ctypes.c_void_p(self.host_address + start - self.base),
                          ctypes.c_size_t(end - start), MADV_HUGEPAGE)

    def zero(self, gpa: int, length: int) -> None:
        """Fill ``[gpa, gpa + length)`` with zeros (what fresh RAM reads as)."""
        self.view(gpa, length)  # bounds check
        self.note_written(gpa, length)
        ctypes.memset(self.host_address + gpa - self.base, 0, length)
