"""Layer 3 — the page pools: where guest-physical memory for a mapping comes from.

The guest's physical memory is cut into two pools (see the memory map in
:mod:`minikvm.cpu.layout`): one for page tables, one for the program's
pages.  Each is a :class:`PagePool`, a first-fit allocator of runs; the
program pool's size is ``--memory``, so its ``ENOMEM`` is the guest's
memory limit.  The address space (:mod:`minikvm.machine.mm`) takes and
gives back runs, and journals them while a change may still be undone.
"""

from __future__ import annotations

import bisect
import errno
from typing import Callable

from minikvm.errors import SyscallError
from minikvm.x86 import PAGE_SIZE


class PagePool:
    """A first-fit allocator of guest-physical memory in ``[start, end)``.

    It keeps the free runs as a sorted list of ``(address, size)``; freeing
    merges neighbours back together.  ``ENOMEM`` when nothing fits: that is
    the guest's memory limit.
    """

    def __init__(self, start: int, end: int) -> None:
        self.start = start
        self.end = end
        self.free_runs: list[tuple[int, int]] = [(start, end - start)] if end > start else []
        self.used = 0
        self.peak = 0  # the most ever in use (getrusage's ru_maxrss)
        #: while an all-or-nothing change runs: every run taken ("take") or
        #: given back ("free"), so the change can be undone step by step
        #: instead of copying the whole free list before each change
        self.journal: list[tuple[str, int, int]] | None = None
        #: A budget this pool shares with others — the sandbox's processes
        #: (:meth:`minikvm.tree.family.Family.charge`): called with each
        #: size taken (False: refused, ENOMEM) and given back (negative).
        #: None: the pool's own size is the only limit.
        self.charge: Callable[[int], bool] | None = None

    def allocate(self, size: int, align: int = PAGE_SIZE) -> int:
        """A run of *size* bytes whose address is a multiple of *align*."""
        self._charge(size)
        for i, (address, length) in enumerate(self.free_runs):
            aligned = -(-address // align) * align
            if aligned + size <= address + length:
                self._take(i, aligned, size)
                return aligned
        if self.charge is not None:
            self.charge(-size)
        raise SyscallError(errno.ENOMEM, f"guest memory exhausted: {size:#x} bytes wanted, "
                                         f"{self.used >> 20} of {(self.end - self.start) >> 20} "
                                         f"MiB in use (a larger --memory gives the guest more)")

    def allocate_at(self, address: int, size: int) -> bool:
        """Take exactly ``[address, address + size)`` if it is free (used to
        grow a mapping in place); False when it is not."""
        i = bisect.bisect_right(self.free_runs, (address, float("inf"))) - 1
        if i < 0:
            return False
        run_address, length = self.free_runs[i]
        if run_address <= address and address + size <= run_address + length:
            self._charge(size)
            self._take(i, address, size)
            return True
        return False

    def _charge(self, size: int) -> None:
        """Take *size* from the shared budget, if there is one (ENOMEM when
        the budget has less left)."""
        if self.charge is not None and not self.charge(size):
            raise SyscallError(errno.ENOMEM, f"the sandbox's memory is exhausted: {size:#x} "
                                             f"bytes wanted, and its processes together hold "
                                             f"all of --memory (a larger --memory gives them "
                                             f"more)")

    def _take(self, i: int, address: int, size: int) -> None:
        run_address, length = self.free_runs.pop(i)
        pieces = [(run_address, address - run_address),
                  (address + size, run_address + length - address - size)]
        for piece in reversed(pieces):
            if piece[1]:
                self.free_runs.insert(i, piece)
        self.used += size
        self.peak = max(self.peak, self.used)
        if self.journal is not None:
            self.journal.append(("take", address, size))

    def free(self, address: int, size: int) -> None:
        """Return a run; it merges with free neighbours."""
        i = bisect.bisect_left(self.free_runs, (address, 0))
        self.free_runs.insert(i, (address, size))
        self.used -= size
        if self.charge is not None:
            self.charge(-size)
        # merge with the next, then the previous run
        if i + 1 < len(self.free_runs) and address + size == self.free_runs[i + 1][0]:
            self.free_runs[i] = (address, size + self.free_runs.pop(i + 1)[1])
        if i > 0 and self.free_runs[i - 1][0] + self.free_runs[i - 1][1] == address:
            previous = self.free_runs.pop(i - 1)
            self.free_runs[i - 1] = (previous[0], previous[1] + self.free_runs[i - 1][1])
        if self.journal is not None:
            self.journal.append(("free", address, size))

    def roll_back(self, journal: list[tuple[str, int, int]], used: int, peak: int) -> None:
        """Undo the takes and frees of *journal*, last first.  The free list
        is always merged, so the same runs given back make the same list."""
        self.journal = None
        for what, address, size in reversed(journal):
            if what == "take":
                self.free(address, size)
            elif not self.allocate_at(address, size):
                raise AssertionError(f"pool roll-back: {address:#x}+{size:#x} is not free")
        self.used, self.peak = used, peak


__all__ = ["PagePool"]
