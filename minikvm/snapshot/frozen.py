"""Layer 7 — frozen guest memory: the copy a snapshot keeps, and page runs.

:func:`freeze_memory` copies the pages of a guest's memfd that hold data
into a new memfd (``SEEK_DATA``/``SEEK_HOLE`` find them, ``copy_file_range``
moves them inside the kernel: no byte passes through Python) and seals it
against resizing, so every fork can map it ``MAP_PRIVATE`` and share it.
:func:`bitmap_runs` and :func:`page_runs` turn KVM's dirty bitmap and the
host's own record of written pages into the ranges a reset restores.
"""

from __future__ import annotations

import errno
import fcntl
import os
from typing import Iterable

from minikvm.errors import SnapshotError
from minikvm.kvm.memory import GuestMemory
from minikvm.machine.mm import AddressSpace
from minikvm.machine.pages import PagePool

SEEK_DATA = 3          # lseek: the next offset that holds data
SEEK_HOLE = 4          # lseek: the next hole
MFD_ALLOW_SEALING = 2
F_ADD_SEALS = 1033
F_SEAL_SHRINK = 0x0002
F_SEAL_GROW = 0x0004
F_SEAL_FUTURE_WRITE = 0x0010
COPY_CHUNK = 1 << 30


def data_extents(fd: int, size: int) -> list[tuple[int, int]]:
    """The ``(offset, length)`` runs of *fd* that hold data (tmpfs reports
    pages never written as holes): ``lseek(SEEK_DATA)`` / ``SEEK_HOLE``."""
    extents = []
    offset = 0
    while offset < size:
        try:
            start = os.lseek(fd, offset, SEEK_DATA)
        except OSError as error:
            if error.errno == errno.ENXIO:  # no data after offset
                break
            raise
        end = min(os.lseek(fd, start, SEEK_HOLE), size)
        extents.append((start, end - start))
        offset = end
    return extents


def new_memfd(size: int, name: str) -> int:
    fd = os.memfd_create(name, os.MFD_CLOEXEC | MFD_ALLOW_SEALING)
    os.ftruncate(fd, size)
    return fd


def copy_range(source: int, target: int, offset: int, length: int,
                target_offset: int | None = None) -> None:
    """Copy ``length`` bytes between files in the kernel, not through Python:
    ``copy_file_range``, or ``sendfile`` where the kernel refuses to copy
    across file systems (memfd to a disk file, ``EXDEV``)."""
    target_offset = offset if target_offset is None else target_offset
    done = 0
    while done < length:
        try:
            moved = os.copy_file_range(source, target, min(length - done, COPY_CHUNK),
                                       offset + done, target_offset + done)
        except OSError as error:
            if error.errno not in (errno.EXDEV, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOSYS):
                raise
            os.lseek(target, target_offset + done, os.SEEK_SET)
            moved = os.sendfile(target, source, offset + done, min(length - done, COPY_CHUNK))
        if moved == 0:
            raise SnapshotError(f"copying stopped at {offset + done:#x}: the source is "
                                f"shorter than expected")
        done += moved


def allocated_runs(pool: PagePool) -> list[tuple[int, int]]:
    """The runs of *pool* in use: the complement of its free runs."""
    runs = []
    cursor = pool.start
    for address, size in pool.free_runs:
        if address > cursor:
            runs.append((cursor, address - cursor))
        cursor = address + size
    if cursor < pool.end:
        runs.append((cursor, pool.end - cursor))
    return runs


def allocated_end(pool: PagePool) -> int:
    """The end of the highest allocated page of *pool* (its start if none is)."""
    if pool.free_runs and pool.free_runs[-1][0] + pool.free_runs[-1][1] == pool.end:
        return pool.free_runs[-1][0]
    return pool.end


def freeze_memory(memory: GuestMemory, mm: AddressSpace) -> int:
    """A new memfd with the same contents as *memory* (a frozen copy).

    The owner's memfd is copied extent by extent with ``copy_file_range``
    (holes stay holes).  A fork's memory is a private mapping whose file is
    another snapshot: its pages are written from the mapping — the ranges
    that can hold data, that is the file's data and every allocated page."""
    fd = new_memfd(memory.size, "minikvm-snapshot")
    try:
        if memory.shared:
            for offset, length in data_extents(memory.fd, memory.size):
                copy_range(memory.fd, fd, offset, length)
        else:
            ranges = [(offset + memory.base, length)
                      for offset, length in data_extents(memory.fd, memory.size)]
            ranges += allocated_runs(mm.table_pool) + allocated_runs(mm.user_pool)
            for start, length in merge_runs(ranges):
                os.pwrite(fd, memory.view(start, length), start - memory.base)
        fcntl.fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW)
    except BaseException:
        os.close(fd)
        raise
    return fd


def seal_frozen(fd: int) -> None:
    """No writable shared mapping of the frozen copy may be made any more
    (the snapshot's own read view was made before): forks map it private."""
    fcntl.fcntl(fd, F_ADD_SEALS, F_SEAL_FUTURE_WRITE)


def merge_runs(runs: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sort ``(start, length)`` runs and merge overlapping or touching ones."""
    merged: list[list[int]] = []
    for start, length in sorted(runs):
        if merged and start <= merged[-1][0] + merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], start + length - merged[-1][0])
        else:
            merged.append([start, length])
    return [(start, length) for start, length in merged]


#: The dirty bitmap is searched in chunks of this many bytes: an all-zero
#: chunk is skipped by one comparison (a memcmp in C).
BITMAP_CHUNK = 512
_ZERO_CHUNK = bytes(BITMAP_CHUNK)


def bitmap_runs(bitmap: bytes) -> list[tuple[int, int]]:
    """Runs of set bits ``(first_page, count)`` in a dirty bitmap (bit *n*
    of the little-endian bitmap is page *n*).  All-zero chunks are skipped
    by a comparison done in C; a non-zero chunk is taken apart as one
    integer, a run of ones at a time.  So the cost follows the dirty pages
    (and, slightly, the memory size: 64 comparisons for 1 GiB)."""
    runs = []
    for offset in range(0, len(bitmap), BITMAP_CHUNK):
        chunk = bitmap[offset:offset + BITMAP_CHUNK]
        if chunk == _ZERO_CHUNK[:len(chunk)]:
            continue
        bits = int.from_bytes(chunk, "little")
        position = offset * 8
        while bits:
            skip = (bits & -bits).bit_length() - 1        # zeros before the next one
            bits >>= skip
            position += skip
            ones = (~bits & (bits + 1)).bit_length() - 1  # length of this run of ones
            runs.append((position, ones))
            bits >>= ones
            position += ones
    return runs


def page_runs(pages: Iterable[int]) -> list[tuple[int, int]]:
    """``(first_page, count)`` runs of consecutive page numbers."""
    runs: list[list[int]] = []
    for page in sorted(pages):
        if runs and runs[-1][0] + runs[-1][1] == page:
            runs[-1][1] += 1
        elif not runs or page >= runs[-1][0] + runs[-1][1]:
            runs.append([page, 1])
    return [(first, count) for first, count in runs]


