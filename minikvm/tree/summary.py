"""Layer 7 — ``--summary`` over the whole tree: each process's counts, added up by the first.

``minikvm run --summary`` prints one ``strace -c`` table at the end, and
with many processes it must count every process's calls, as ``strace -f
-c`` does.  Each host process counts its own (the dispatcher's
``counts``, emptied in a new child so nothing is counted twice); a child
whose guest ends appends its counts as one JSON line to a memfd all the
sandbox's processes share, under a record lock (``lockf``: flock's would
be shared by every forked process); the first process adds the
lines to its own counts before it prints.  A process still running when
the first one ends is killed with the rest, and its calls are not counted.
"""

from __future__ import annotations

import fcntl
import json
import os

#: The most a child writes (one line per process; ~300 distinct calls at most).
MAX_LINE = 64 * 1024


class TreeSummary:
    """The shared memfd of the children's counts."""

    def __init__(self) -> None:
        self.fd = os.memfd_create("minikvm-summary", os.MFD_CLOEXEC)

    def add(self, counts: dict[str, list[float]]) -> None:
        """Append one process's counts (in a child, as it ends)."""
        line = (json.dumps(counts) + "\n").encode()[:MAX_LINE]
        fcntl.lockf(self.fd, fcntl.LOCK_EX)
        try:
            os.lseek(self.fd, 0, os.SEEK_END)
            os.write(self.fd, line)
        finally:
            fcntl.lockf(self.fd, fcntl.LOCK_UN)

    def merge_into(self, counts: dict[str, list[float]]) -> None:
        """Add every child's counts to *counts* (in the first process, at the end)."""
        fcntl.lockf(self.fd, fcntl.LOCK_EX)
        try:
            size = os.lseek(self.fd, 0, os.SEEK_END)
            data = os.pread(self.fd, size, 0)
        finally:
            fcntl.lockf(self.fd, fcntl.LOCK_UN)
        for line in data.splitlines():
            try:
                child = json.loads(line)
            except ValueError:
                continue            # a line cut at MAX_LINE
            for name, stats in child.items():
                total = counts.setdefault(name, [0, 0.0, 0])
                for index, value in enumerate(stats[:3]):
                    total[index] += value

    def close(self) -> None:
        os.close(self.fd)


__all__ = ["TreeSummary"]
