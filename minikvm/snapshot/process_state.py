"""Layer 7 — a process's host-side state: copied for snapshots and forks,
put back by resets, and compared.

A snapshot (:mod:`minikvm.snapshot.snapshot`) freezes three things: guest memory
(:mod:`minikvm.snapshot.frozen`), the vCPU (:mod:`minikvm.snapshot.cpu_state`) and what the
*host* keeps for the program — the :class:`~minikvm.process.process.Process`
attributes the system calls change (cwd, umask, signal dispositions, masks,
pending signals and alternate stack, the alarm, the thread table with its
futex waiters …) and its file descriptors.  This module copies that last part.

What is copied is derived from the object, not kept in a list: every
attribute in ``vars(process)`` is deep-copied, except the few named in
:data:`NOT_CAPTURED`, each of which says why and how it is put back instead.
So a field someone adds to ``Process`` (or to an object it holds, such as the
:class:`~minikvm.process.threads.ThreadTable`) is part of every snapshot, and every
reset puts it back, without a change here.  :func:`restore_process_state`
also removes an attribute the process gained after the snapshot.

:func:`state_differences` checks the result: it walks two processes
attribute by attribute, into every object they hold (the fd table and its
files, the threads, the address space, the machine's scheduling state), and
names each difference.  Its only exceptions are :data:`NOT_RESTORED`, short
and with a reason each; ``tests/test_snapshot.py`` compares a fork reset after
requests that change every kind of state with a fresh fork.

File descriptors are the subtle part: a fork must not share a file
*position* with the snapshot or with another fork, so regular files and
directories are reopened, everything else ``dup``'d (:func:`duplicate_host_fd`).
"""

from __future__ import annotations

import copy
import fcntl
import os
import stat as stat_module
from types import BuiltinFunctionType, FunctionType, MethodType
from typing import Any

from minikvm.errors import SnapshotError
from minikvm.process.fdtable import FdEntry, FdTable, OpenFile
from minikvm.process.process import Process


#: Process attributes a snapshot does not deep-copy, and how each is put
#: back instead.  Every other attribute is copied and restored.
NOT_CAPTURED: dict[str, str] = {
    "machine": "the fork's own VM and vCPU: Fork.reset puts back its memory, its "
               "registers and, with the thread table, its time slices",
    "mm": "the address-space record, copied with the memory it describes "
          "(AddressSpace.clone) and put back by AddressSpace.assign at every reset",
    "fds": "the fd table: copied with host fds of their own (copy_fd_entries), "
           "rebuilt or rewound at every reset",
    "image": "the program's ELF image: read-only, shared by the snapshot and its forks",
    "interpreter": "the ELF image of the program's ld.so (or None): read-only, shared "
                   "by the snapshot and its forks",
    "policy": "the sandbox policy: the same for the snapshot and every fork; a guest "
              "changes nothing in it but the (bounded) log of its denials, for --audit",
    "random": "the entropy source: the host's, fresh in every fork and after every reset, "
              "or under --deterministic the seeded stream of the restored determinism "
              "(Process.use_determinism)",
    "requests": "the request channel: each fork's own, emptied by every reset",
    "family": "the process tree of a serve worker's fork (minikvm.tree.family), made by "
              "the worker when requests may fork (serve --max-processes); the "
              "processes a request made are ended before every reset",
    "new_id": "where the tree's tids and pids come from (the family's table), set with it",
}

_HANDLE = ("a handle of the fork's own VM: what it holds (memory pages, registers) "
           "is put back by the reset and checked by the tests of minikvm.snapshot.fork")
_RUN_BOOKKEEPING = "the run loop's own bookkeeping, set afresh by every Machine.run"
_MEMORY_VIEW = "a view of the fork's own guest memory (its pages: see machine.memory)"
#: What :func:`state_differences` does not compare, by path from the
#: process, and why: nothing here is state the guest can observe.
NOT_RESTORED: dict[str, str] = {
    "machine.kvm": _HANDLE,
    "machine.vm": _HANDLE,
    "machine.vcpu": _HANDLE,
    "machine.memory": _HANDLE,
    "machine.mm": "the same object as mm, compared there",
    "machine._flush_page": "the page of the slot whose removal flushes KVM's translations "
                           "(Machine.flush_translations): never mapped, never the guest's",
    "machine.guest_clock": "the host's measurement of the fork's own vCPU's TSC against the "
                           "host's clocks (minikvm.machine.guest_clock): a fact about the host, "
                           "not the guest; every reset writes it into the vDSO's data page",
    "machine.exits": "a count of VM exits since the machine was made: a statistic",
    "machine._timed_out": _RUN_BOOKKEEPING,
    "machine._may_interrupt": _RUN_BOOKKEEPING,
    "machine._previous_alarm": _RUN_BOOKKEEPING,
    "machine._previous_profiler": "the host's SIGPROF handler, saved by the first time slice",
    "mm.memory": _MEMORY_VIEW,
    "mm.page_tables.memory": _MEMORY_VIEW,
    "mm.page_tables.words": _MEMORY_VIEW,
    "fds.references": "keyed by id(file), which differs in every copy; it counts the "
                      "fds of each file, compared in fds.entries",
}
_IMMUTABLE = (int, float, str, bytes, bool, type(None), frozenset)
_MISSING = object()
#: File kinds whose whole state is their attributes and their host fd's
#: position: a reset may keep them when those did not change.
PLAIN_FILE_KINDS = ("host", "device")


def capture_process_state(process: Process) -> dict[str, Any]:
    """Every attribute of *process* but :data:`NOT_CAPTURED`, deep-copied."""
    state = {}
    for name, value in vars(process).items():
        if name in NOT_CAPTURED:
            continue
        try:
            state[name] = value if isinstance(value, _IMMUTABLE) else copy.deepcopy(value)
        except Exception as error:
            raise SnapshotError(f"cannot snapshot process attribute {name!r} "
                                f"({type(value).__name__}): {error}") from None
    return state


def restore_process_state(process: Process, state: dict[str, Any]) -> None:
    """Put the snapshot's values back, and remove attributes the process
    gained since (none is in the snapshot).  A value still equal to the
    snapshot's is left alone (it is the process's own copy already), so a
    reset after a request that changed nothing copies nothing."""
    current = vars(process)
    for name in [name for name in current if name not in state and name not in NOT_CAPTURED]:
        del current[name]
    immutable = {name: value for name, value in state.items() if isinstance(value, _IMMUTABLE)}
    current.update(immutable)
    for name, value in state.items():
        if name not in immutable and current.get(name, _MISSING) != value:
            current[name] = copy.deepcopy(value)


# ---------------------------------------------------------------------------
# Comparing two processes
# ---------------------------------------------------------------------------

def state_differences(actual: Process, expected: Process) -> list[str]:
    """Where *actual* differs from *expected*, as ``path: value != value``
    lines (empty when they are the same), walking every attribute of the
    processes and of every object they hold, but :data:`NOT_RESTORED`.

    Objects are compared by their attributes, containers item by item.
    A callable is compared by the code it runs, not by what it is bound to
    (a fork's hooks are bound to its own process).  A ``host_fd`` is
    compared by what it names — the same host file (device and inode) at
    the same offset — since every copy has a host fd number of its own."""
    found: list[str] = []
    _compare(actual, expected, "", found, set())
    return found


def _compare(actual: Any, expected: Any, path: str, found: list[str],
             seen: set[tuple[int, int]]) -> None:
    if path in NOT_RESTORED or actual is expected:
        return
    if path.endswith("host_fd") and isinstance(actual, int) and isinstance(expected, int):
        if _host_file(actual) != _host_file(expected):
            found.append(f"{path}: {_host_file(actual)} != {_host_file(expected)}")
        return
    if type(actual) is not type(expected):
        found.append(f"{path}: {_show(actual)} != {_show(expected)}")
        return
    if isinstance(actual, (_IMMUTABLE, set, bytearray)):
        if actual != expected:
            found.append(f"{path}: {_show(actual)} != {_show(expected)}")
        return
    pair = (id(actual), id(expected))
    if pair in seen:
        return
    seen.add(pair)
    if isinstance(actual, dict):
        for key in actual.keys() | expected.keys():
            _compare(actual.get(key, _MISSING), expected.get(key, _MISSING),
                     f"{path}[{key!r}]", found, seen)
    elif isinstance(actual, (list, tuple)):
        if len(actual) != len(expected):
            found.append(f"{path}: {len(actual)} items != {len(expected)} items")
        for index, (one, other) in enumerate(zip(actual, expected)):
            _compare(one, other, f"{path}[{index}]", found, seen)
    elif isinstance(actual, MethodType):
        if actual.__func__ is not expected.__func__:
            found.append(f"{path}: {_show(actual)} != {_show(expected)}")
    elif isinstance(actual, FunctionType):
        if actual.__code__ is not expected.__code__:
            found.append(f"{path}: {_show(actual)} != {_show(expected)}")
    elif isinstance(actual, BuiltinFunctionType) or not hasattr(actual, "__dict__"):
        if actual != expected:
            found.append(f"{path}: {_show(actual)} != {_show(expected)}")
    else:
        mine, theirs = vars(actual), vars(expected)
        for name in mine.keys() | theirs.keys():
            _compare(mine.get(name, _MISSING), theirs.get(name, _MISSING),
                     f"{path}.{name}" if path else name, found, seen)


def _host_file(host_fd: int) -> tuple[int, int, int | None] | str:
    """What a host fd names: device, inode and, for a regular file, offset."""
    try:
        status = os.fstat(host_fd)
    except OSError as error:
        return f"host fd {host_fd}: {error.strerror}"
    offset = os.lseek(host_fd, 0, os.SEEK_CUR) if stat_module.S_ISREG(status.st_mode) else None
    return status.st_dev, status.st_ino, offset


def _show(value: Any) -> str:
    if value is _MISSING:
        return "(missing)"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


# ---------------------------------------------------------------------------
# File descriptors
# ---------------------------------------------------------------------------

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
