"""Layer 7 — the process table: every process of one sandbox, shared by all of them.

Each guest process runs in a host process of its own (:mod:`minikvm.tree.fork`),
so what one process must know about the others — which pids exist, whose
child each is, which process group it is in, which signals were sent to it —
cannot live in any one Python heap.  It lives here: a small **memfd mapped
shared** by every host process of the sandbox, made by the first one before
its first fork and inherited by every fork after.  It plays the part of
Linux's pid hash and ``struct task_struct`` links for the sandbox (a pid
namespace of its own): a guest can name only the pids in this table, so it
can never signal, wait for or look at a host process outside the sandbox.

The layout is one header and :data:`RECORD` records, little-endian::

    header   u32 next_id       the next pid or tid to hand out
             u32 capacity      how many records (--max-processes)
    record   i32 pid           0: a free record
             i32 host_pid      the host process that runs it (0 until the fork returned)
             i32 ppid          its parent's pid, as getppid(2) reports it
             i32 pgid, sid     its process group and session
             u32 (padding)
             u64 mailbox       signals other processes sent it, bit n-1 for signal n

Every update takes ``flock(LOCK_EX)`` on the memfd: the host processes
really run in parallel, on several cores.  Reads of one record's field take
the lock too — a record is 32 bytes and Python reads it in several steps.

The table's size bounds the sandbox: :meth:`ProcessTable.reserve` refuses a
new process once every record is in use (``fork`` then fails with EAGAIN,
as at ``RLIMIT_NPROC``), which is what keeps a fork bomb from taking the host.
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import struct
from dataclasses import dataclass

from minikvm.errors import SyscallError

#: u32 next_id, u32 capacity
HEADER = struct.Struct("<II")
#: pid, host_pid, ppid, pgid, sid, padding, mailbox
RECORD = struct.Struct("<iiiiiIQ")
#: The first process's pid (what :class:`~minikvm.process.process.Process` gives it).
FIRST_PID = 1000
#: ``--max-processes`` when not given: enough for ``make -j`` and a shell's
#: pipelines, few enough that a fork bomb stays a small load.
DEFAULT_MAX_PROCESSES = 256
#: Pids and tids are handed out up to here, then from FIRST_PID + 1 again,
#: skipping those in use (Linux's ``pid_max`` is 4194304 on 64-bit hosts).
PID_MAX = 4_194_304


@dataclass
class Record:
    """One process of the sandbox, as the table holds it."""
    pid: int
    host_pid: int
    ppid: int
    pgid: int
    sid: int


class ProcessTable:
    """The table of :data:`RECORD` records in a shared memfd (see the module
    docstring).  Make it with :meth:`create` in the first process, before the
    first fork; every forked host process uses the same object, inherited."""

    def __init__(self, fd: int, capacity: int) -> None:
        self.fd = fd
        self.capacity = capacity
        size = HEADER.size + capacity * RECORD.size
        self._map = mmap.mmap(fd, size, flags=mmap.MAP_SHARED,
                              prot=mmap.PROT_READ | mmap.PROT_WRITE)

    @classmethod
    def create(cls, capacity: int, first: Record) -> "ProcessTable":
        """A table for at most *capacity* processes holding *first*."""
        if capacity < 1:
            raise ValueError(f"a sandbox holds at least one process, not {capacity}")
        fd = os.memfd_create("minikvm-processes", os.MFD_CLOEXEC)
        os.ftruncate(fd, HEADER.size + capacity * RECORD.size)
        table = cls(fd, capacity)
        HEADER.pack_into(table._map, 0, first.pid + 1, capacity)
        table._write(0, first)
        return table

    # -- the lock -------------------------------------------------------------------
    def __enter__(self) -> "ProcessTable":
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)

    # -- records, with the lock held -------------------------------------------------
    def _offset(self, index: int) -> int:
        return HEADER.size + index * RECORD.size

    def _read(self, index: int) -> Record | None:
        pid, host_pid, ppid, pgid, sid, _, _ = RECORD.unpack_from(self._map, self._offset(index))
        return Record(pid, host_pid, ppid, pgid, sid) if pid else None

    def _write(self, index: int, record: Record, mailbox: int = 0) -> None:
        RECORD.pack_into(self._map, self._offset(index), record.pid, record.host_pid,
                         record.ppid, record.pgid, record.sid, 0, mailbox)

    def _index(self, pid: int) -> int | None:
        for index in range(self.capacity):
            if pid and RECORD.unpack_from(self._map, self._offset(index))[0] == pid:
                return index
        return None

    def _records(self) -> list[Record]:
        return [record for index in range(self.capacity)
                if (record := self._read(index)) is not None]

    def _new_id(self) -> int:
        """The next free pid/tid (the lock is held): one no record uses."""
        next_id, capacity = HEADER.unpack_from(self._map, 0)
        in_use = {record.pid for record in self._records()}
        while next_id in in_use or next_id <= FIRST_PID:
            next_id = next_id + 1 if FIRST_PID < next_id < PID_MAX else FIRST_PID + 1
        HEADER.pack_into(self._map, 0, next_id + 1, capacity)
        return next_id

    # -- what the processes ask ---------------------------------------------------------
    def new_id(self) -> int:
        """A pid or tid no one in the sandbox has: threads take their tids
        here too, so that a thread and a process never share a number."""
        with self:
            return self._new_id()

    def reserve(self, ppid: int, pgid: int, sid: int) -> int:
        """A record for a new child of *ppid*, before the host fork; its
        pid.  EAGAIN when every record is in use (``--max-processes``)."""
        with self:
            for index in range(self.capacity):
                if self._read(index) is None:
                    pid = self._new_id()
                    self._write(index, Record(pid, 0, ppid, pgid, sid))
                    return pid
        raise SyscallError(errno.EAGAIN, f"the sandbox already has {self.capacity} processes, "
                                         f"the most it may have (--max-processes {self.capacity})")

    def find(self, pid: int) -> Record | None:
        """The record of *pid*, or None when no process of the sandbox has it."""
        with self:
            index = self._index(pid)
            return None if index is None else self._read(index)

    def find_host(self, host_pid: int) -> Record | None:
        """The record of the process the host knows as *host_pid*."""
        with self:
            for record in self._records():
                if record.host_pid == host_pid:
                    return record
        return None

    def update(self, pid: int, *, host_pid: int | None = None, ppid: int | None = None,
               pgid: int | None = None, sid: int | None = None) -> None:
        """Change fields of *pid*'s record (nothing if it is gone)."""
        with self:
            index = self._index(pid)
            if index is None:
                return
            record = self._read(index)
            assert record is not None
            mailbox = RECORD.unpack_from(self._map, self._offset(index))[6]
            self._write(index, Record(pid, record.host_pid if host_pid is None else host_pid,
                                      record.ppid if ppid is None else ppid,
                                      record.pgid if pgid is None else pgid,
                                      record.sid if sid is None else sid), mailbox)

    def remove(self, pid: int) -> None:
        """Free *pid*'s record (its parent reaped it, or the fork failed)."""
        with self:
            index = self._index(pid)
            if index is not None:
                self._map[self._offset(index):self._offset(index + 1)] = bytes(RECORD.size)

    def records(self) -> list[Record]:
        """Every process of the sandbox now."""
        with self:
            return self._records()

    def reparent(self, old_parent: int, new_parent: int) -> None:
        """The children of *old_parent*, which is ending, become
        *new_parent*'s (the first process, the sandbox's reaper)."""
        with self:
            for index in range(self.capacity):
                record = self._read(index)
                if record is not None and record.ppid == old_parent:
                    mailbox = RECORD.unpack_from(self._map, self._offset(index))[6]
                    record.ppid = new_parent
                    self._write(index, record, mailbox)

    # -- signals between processes ---------------------------------------------------------
    def post(self, pid: int, sig: int) -> int | None:
        """Put *sig* in *pid*'s mailbox; its host pid (None: it is gone, or
        not started yet — then the signal is lost, as for a process that is
        just exiting)."""
        with self:
            index = self._index(pid)
            if index is None:
                return None
            fields = list(RECORD.unpack_from(self._map, self._offset(index)))
            fields[6] |= 1 << (sig - 1)
            RECORD.pack_into(self._map, self._offset(index), *fields)
            return fields[1] or None

    def take_mail(self, pid: int) -> int:
        """The signals in *pid*'s mailbox (bit n-1 for signal n), emptied."""
        with self:
            index = self._index(pid)
            if index is None:
                return 0
            fields = list(RECORD.unpack_from(self._map, self._offset(index)))
            mailbox, fields[6] = fields[6], 0
            RECORD.pack_into(self._map, self._offset(index), *fields)
            return mailbox

    def close(self) -> None:
        self._map.close()
        os.close(self.fd)


__all__ = ["ProcessTable", "Record", "FIRST_PID", "DEFAULT_MAX_PROCESSES"]
