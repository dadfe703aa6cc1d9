"""Layer 7 — a process's host-side state, copied for snapshots and forks.

A snapshot (:mod:`minikvm.snapshot.snapshot`) freezes three things: guest memory
(:mod:`minikvm.snapshot.frozen`), the vCPU (:mod:`minikvm.snapshot.cpu_state`) and what the
*host* keeps for the program — the :class:`~minikvm.process.process.Process`
attributes the system calls change (brk, cwd, umask, signal dispositions,
limits …) and its file descriptors.  This module copies that last part.

Plain attributes are deep-copied, so a field someone adds to ``Process`` is
part of snapshots without a change here (:data:`NOT_COPIED` lists the
exceptions).  File descriptors are the subtle part: a fork must not share a
file *position* with the snapshot or with another fork, so regular files and
directories are reopened, everything else ``dup``'d (:func:`duplicate_host_fd`).
"""

from __future__ import annotations

import copy
import fcntl
import os
import stat as stat_module
from typing import Any

from minikvm.errors import SnapshotError
from minikvm.process.fdtable import FdEntry, FdTable, OpenFile
from minikvm.process.process import Process


#: Process attributes that are not copied: the machine and its memory
#: manager (a fork has its own), the read-only program image and policy
#: (shared), the fd table (copied with duplicated host fds, below), the
#: entropy source (fresh per fork), the request channel (per fork) and the
#: thread table (a snapshot has one thread, and a fork's new Process starts
#: with that one, see :meth:`Snapshot.take`).
#: Every other attribute is plain data and is copied, so a field someone
#: adds to Process is part of snapshots without a change here.
NOT_COPIED = frozenset({"machine", "mm", "image", "policy", "fds", "random", "requests",
                        "threads"})
_IMMUTABLE = (int, float, str, bytes, bool, type(None), frozenset)
_MISSING = object()
#: File kinds whose whole state is their attributes and their host fd's
#: position: a reset may keep them when those did not change.
PLAIN_FILE_KINDS = ("host", "device")


def capture_process_state(process: Process) -> dict[str, Any]:
    """Every plain-data attribute of *process*, deep-copied."""
    state = {}
    for name, value in vars(process).items():
        if name in NOT_COPIED:
            continue
        try:
            state[name] = value if isinstance(value, _IMMUTABLE) else copy.deepcopy(value)
        except Exception as error:
            raise SnapshotError(f"cannot snapshot process attribute {name!r} "
                                f"({type(value).__name__}): {error}") from None
    return state


def restore_process_state(process: Process, state: dict[str, Any]) -> None:
    """Put the snapshot's values back; one still equal to the snapshot's is
    left alone (it is the process's own copy already), so a reset after a
    request that changed nothing copies nothing."""
    current = vars(process)
    immutable = {name: value for name, value in state.items() if isinstance(value, _IMMUTABLE)}
    current.update(immutable)
    for name, value in state.items():
        if name not in immutable and current.get(name, _MISSING) != value:
            current[name] = copy.deepcopy(value)


def duplicate_host_fd(host_fd: int) -> int:
    """A host fd for a copy of an open file.

    A regular file or a directory is *reopened* through ``/proc/self/fd``
    (its own file offset, set to the original's), so a fork reading a file
    does not move the snapshot's or another fork's position.  Anything else
    (a pipe, a terminal, a socket) is ``dup``'d: it has no position to keep
    apart.  If reopening is not possible (no /proc), ``dup`` is used."""
    mode = os.fstat(host_fd).st_mode
    if stat_module.S_ISREG(mode) or stat_module.S_ISDIR(mode):
        flags = fcntl.fcntl(host_fd, fcntl.F_GETFL) & ~(os.O_CREAT | os.O_TRUNC | os.O_EXCL)
        try:
            fresh = os.open(f"/proc/self/fd/{host_fd}", flags | os.O_CLOEXEC)
        except OSError:
            return os.dup(host_fd)
        if stat_module.S_ISREG(mode):
            os.lseek(fresh, os.lseek(host_fd, 0, os.SEEK_CUR), os.SEEK_SET)
        return fresh
    return os.dup(host_fd)


def copy_fd_entries(entries: dict[int, FdEntry]) -> dict[int, FdEntry]:
    """Copies of the fd table's entries, with host fds of their own.  One
    ``deepcopy`` memo for the whole table keeps what was shared shared
    (the two ends of a pipe, dup'd fds)."""
    memo: dict[int, Any] = {}
    copies: dict[int, FdEntry] = {}
    fresh_host_fds: dict[int, OpenFile] = {}
    try:
        for fd, entry in sorted(entries.items()):
            file = entry.file
            if id(file) not in memo and file.host_fd is not None:
                original_fd = file.host_fd
                clone = _copy_file(file, memo)
                clone.host_fd = duplicate_host_fd(original_fd)
                fresh_host_fds[id(clone)] = clone
            else:
                clone = _copy_file(file, memo)
            copies[fd] = FdEntry(clone, entry.cloexec)
    except SnapshotError:
        raise
    except Exception as error:
        for clone in fresh_host_fds.values():
            clone.close()
        raise SnapshotError(f"cannot copy the fd table: {type(error).__name__}: {error}") from None
    return copies


def _copy_file(file: OpenFile, memo: dict[int, Any]) -> OpenFile:
    """``copy.deepcopy(file, memo)``; when every attribute is immutable (a
    host file: an fd number, a path, flags) a shallow copy is the same
    thing, at a third of the cost — every fork copies the whole fd table."""
    if id(file) not in memo and all(isinstance(value, _IMMUTABLE)
                                    for value in vars(file).values()):
        clone = copy.copy(file)
        memo[id(file)] = clone
        return clone
    return copy.deepcopy(file, memo)


def install_fd_entries(table: FdTable, entries: dict[int, FdEntry]) -> None:
    """Put copied entries into *table* (which must be empty)."""
    for fd, entry in entries.items():
        table.install_at(fd, entry.file, entry.cloexec)


def close_fd_entries(entries: dict[int, FdEntry]) -> None:
    closed: set[int] = set()
    for entry in entries.values():
        if id(entry.file) not in closed:
            closed.add(id(entry.file))
            entry.file.close()
