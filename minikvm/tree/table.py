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
             u64 memory_used   what the processes' guest memory pools hold together
             u64 memory_limit  the most they may hold together (--memory)
             i32 foreground    the terminal's foreground group (0: the first process's)
             u32 closed        1 once the sandbox is ending: no new process
    record   i32 pid           0: a free record
             i32 host_pid      the host process that runs it (0 until the fork returned)
             i32 ppid          its parent's pid, as getppid(2) reports it
             i32 pgid, sid     its process group and session
             u32 stop_signal   the signal it last stopped by (SIGTSTP …; see Family.stop)
             u64 mailbox       signals other processes sent it, bit n-1 for signal n
             u64 memory        what its guest memory pool holds (part of memory_used)

and after the records, one text entry per record (:data:`TEXT_HEAD`, then
the cmdline), what ``/proc/<pid>`` of *another* process shows
(:mod:`minikvm.syscalls.procfs`; a process's own ``/proc/<pid>`` is made
from its own state)::

    text     u8  state         'R' running, 'S' asleep in a wait, 'Z' ended, not reaped
             u8  pad[3]
             u32 cmdline_size  how many bytes of cmdline are kept
             u64 start_ns      CLOCK_MONOTONIC when it was forked (stat's starttime)
             char comm[16]     its name (exec's basename, prctl(PR_SET_NAME)), NUL-padded
             i32 senders[64]   who sent each signal in its mailbox (si_pid), by signal - 1
             char cmdline[CMDLINE_BYTES]  argv, each NUL-terminated, cut at the end

Each process writes its own entry: at the fork (a copy of the parent's, as
Linux's child starts with its parent's name and arguments), at execve and
at ``prctl(PR_SET_NAME)``.  So what another process sees is what the process
itself said, never something read from its memory: a process cannot make
its reader parse an unbounded or changing buffer, and no process reads
another's guest memory.  A cmdline longer than :data:`CMDLINE_BYTES` is cut
(Linux shows it whole).

Every update takes a POSIX record lock (``lockf``, ``F_SETLKW``) on the
memfd: the host processes really run in parallel, on several cores.  Reads of one record's field take
the lock too — a record is 32 bytes and Python reads it in several steps.

The table's size bounds the sandbox: :meth:`ProcessTable.reserve` refuses a
new process once every record is in use (``fork`` then fails with EAGAIN,
as at ``RLIMIT_NPROC``), which is what keeps a fork bomb from taking the host.
The memory fields bound it too, as a cgroup's memory limit would: each
process's page pool (:class:`~minikvm.machine.pages.PagePool`) charges
what it maps to its record (:meth:`ProcessTable.charge`), and the total may
not pass the limit (ENOMEM for the mapping, or for the fork that would copy
too much).  A process's charge is given back when its record is freed —
when it is reaped — so even a process killed with SIGKILL returns its share.
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import struct
import time
from dataclasses import dataclass

from minikvm.errors import SyscallError

#: next_id, capacity, memory_used, memory_limit, foreground, closed
HEADER = struct.Struct("<IIQQiI")
#: pid, host_pid, ppid, pgid, sid, stop_signal, mailbox, memory
RECORD = struct.Struct("<iiiiiIQQ")
#: state, cmdline_size, start_ns, comm (see :data:`CMDLINE_BYTES` for the rest)
TEXT_HEAD = struct.Struct("<B3xIQ16s")
#: How much of a process's argv another process's ``/proc/<pid>/cmdline``
#: shows: enough for ``ps``'s widest column and a shell's ``-c`` script.
CMDLINE_BYTES = 1024
#: senders[64]: the pid that sent signal n + 1 while it was in the mailbox
SENDERS = struct.Struct("<64i")
#: A text entry's size: its head, the senders and the cmdline, 8-byte aligned.
TEXT_SIZE = TEXT_HEAD.size + SENDERS.size + CMDLINE_BYTES
#: TASK_COMM_LEN (linux/sched.h), with its NUL.
COMM_BYTES = 16
#: The first process's pid (what :class:`~minikvm.process.process.Process` gives it).
FIRST_PID = 1000
#: ``--max-processes`` when not given: enough for ``make -j`` and a shell's
#: pipelines, few enough that a fork bomb stays a small load.
DEFAULT_MAX_PROCESSES = 256
#: What the sandbox's processes may hold together when ``--memory`` is not
#: given (each one's VM then has the default 1 GiB): four of them full.
DEFAULT_SANDBOX_MEMORY = 4 << 30
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


@dataclass
class Description:
    """What another process may learn of one process of the sandbox
    (``/proc/<pid>`` of a process that is not the reader)."""
    record: Record
    #: 'R', 'S', 'T' (stopped), 'Z' (ended, not reaped yet)
    state: str
    comm: bytes
    cmdline: bytes
    #: CLOCK_MONOTONIC nanoseconds when it was forked
    start_ns: int
    #: what its guest memory pool holds, bytes
    memory: int


class ProcessTable:
    """The table of :data:`RECORD` records in a shared memfd (see the module
    docstring).  Make it with :meth:`create` in the first process, before the
    first fork; every forked host process uses the same object, inherited."""

    def __init__(self, fd: int, capacity: int) -> None:
        self.fd = fd
        self.capacity = capacity
        size = HEADER.size + capacity * (RECORD.size + TEXT_SIZE)
        self._map = mmap.mmap(fd, size, flags=mmap.MAP_SHARED,
                              prot=mmap.PROT_READ | mmap.PROT_WRITE)

    @classmethod
    def create(cls, capacity: int, first: Record, memory: int,
               memory_limit: int) -> "ProcessTable":
        """A table for at most *capacity* processes holding *first*, whose
        pool holds *memory* bytes, all of them holding at most *memory_limit*."""
        if capacity < 1:
            raise ValueError(f"a sandbox holds at least one process, not {capacity}")
        fd = os.memfd_create("minikvm-processes", os.MFD_CLOEXEC)
        os.ftruncate(fd, HEADER.size + capacity * (RECORD.size + TEXT_SIZE))
        table = cls(fd, capacity)
        HEADER.pack_into(table._map, 0, first.pid + 1, capacity, memory, memory_limit, 0, 0)
        table._write(0, first)
        table._set_field(0, 7, memory)
        TEXT_HEAD.pack_into(table._map, table._text_offset(0), ord("R"), 0,
                            time.monotonic_ns(), b"")
        return table

    # -- the lock -------------------------------------------------------------------
    def __enter__(self) -> "ProcessTable":
        # A POSIX record lock (F_SETLKW), not flock: flock's lock belongs to
        # the open file description, which every forked process shares, so
        # two processes could both "hold" it; a record lock belongs to the
        # process.  (Found by a fork bomb: records went missing.)
        fcntl.lockf(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: object) -> None:
        fcntl.lockf(self.fd, fcntl.LOCK_UN)

    # -- records, with the lock held -------------------------------------------------
    def _offset(self, index: int) -> int:
        return HEADER.size + index * RECORD.size

    def _text_offset(self, index: int) -> int:
        return HEADER.size + self.capacity * RECORD.size + index * TEXT_SIZE

    def _read(self, index: int) -> Record | None:
        pid, host_pid, ppid, pgid, sid, *_ = RECORD.unpack_from(self._map, self._offset(index))
        return Record(pid, host_pid, ppid, pgid, sid) if pid else None

    def _write(self, index: int, record: Record) -> None:
        """Write *record*'s fields, keeping the mailbox and the memory."""
        fields = list(RECORD.unpack_from(self._map, self._offset(index)))
        if fields[0] != record.pid:
            fields[5] = fields[6] = fields[7] = 0          # a new record starts empty
        fields[:5] = record.pid, record.host_pid, record.ppid, record.pgid, record.sid
        RECORD.pack_into(self._map, self._offset(index), *fields)

    def _field(self, index: int, position: int) -> int:
        return RECORD.unpack_from(self._map, self._offset(index))[position]

    def _set_field(self, index: int, position: int, value: int) -> None:
        fields = list(RECORD.unpack_from(self._map, self._offset(index)))
        fields[position] = value
        RECORD.pack_into(self._map, self._offset(index), *fields)

    def _add_memory(self, delta: int) -> bool:
        """Add *delta* to the total (the lock is held); False, changing
        nothing, when a positive one would pass the limit."""
        fields = list(HEADER.unpack_from(self._map, 0))
        if delta > 0 and fields[2] + delta > fields[3]:
            return False
        fields[2] = max(0, fields[2] + delta)
        HEADER.pack_into(self._map, 0, *fields)
        return True

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
        fields = list(HEADER.unpack_from(self._map, 0))
        next_id = fields[0]
        in_use = {record.pid for record in self._records()}
        while next_id in in_use or next_id <= FIRST_PID:
            next_id = next_id + 1 if FIRST_PID < next_id < PID_MAX else FIRST_PID + 1
        fields[0] = next_id + 1
        HEADER.pack_into(self._map, 0, *fields)
        return next_id

    # -- what the processes ask ---------------------------------------------------------
    def new_id(self) -> int:
        """A pid or tid no one in the sandbox has: threads take their tids
        here too, so that a thread and a process never share a number."""
        with self:
            return self._new_id()

    def reserve(self, ppid: int, pgid: int, sid: int, memory: int) -> int:
        """A record for a new child of *ppid*, whose pool holds *memory*
        bytes (a copy of its parent's), before the host fork; its pid.
        EAGAIN when every record is in use (``--max-processes``), ENOMEM
        when the copy would pass the memory limit."""
        with self:
            if HEADER.unpack_from(self._map, 0)[5]:
                raise SyscallError(errno.EAGAIN, "the sandbox is ending: no new process")
            for index in range(self.capacity):
                if self._read(index) is None:
                    if not self._add_memory(memory):
                        raise SyscallError(errno.ENOMEM, f"a copy of this process's "
                                           f"{memory >> 20} MiB would pass the sandbox's "
                                           f"memory limit (--memory)")
                    pid = self._new_id()
                    self._write(index, Record(pid, 0, ppid, pgid, sid))
                    self._set_field(index, 7, memory)
                    self._inherit_text(index, ppid)
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
            self._write(index, Record(pid, record.host_pid if host_pid is None else host_pid,
                                      record.ppid if ppid is None else ppid,
                                      record.pgid if pgid is None else pgid,
                                      record.sid if sid is None else sid))

    def remove(self, pid: int) -> None:
        """Free *pid*'s record (its parent reaped it, or the fork failed),
        and its share of the memory."""
        with self:
            index = self._index(pid)
            if index is not None:
                self._add_memory(-self._field(index, 7))
                self._map[self._offset(index):self._offset(index + 1)] = bytes(RECORD.size)
                text = self._text_offset(index)
                self._map[text:text + TEXT_SIZE] = bytes(TEXT_SIZE)

    def charge(self, pid: int, delta: int) -> bool:
        """*pid*'s pool took (*delta* > 0) or gave back memory; False, and
        nothing charged, when taking it would pass the limit."""
        with self:
            index = self._index(pid)
            if index is None:
                return delta <= 0
            if not self._add_memory(delta):
                return False
            self._set_field(index, 7, max(0, self._field(index, 7) + delta))
            return True

    def note_stop(self, pid: int, sig: int) -> None:
        """*pid* is stopping by *sig* (its host process stops by SIGSTOP)."""
        with self:
            index = self._index(pid)
            if index is not None:
                self._set_field(index, 5, sig)

    def stop_signal(self, pid: int) -> int:
        """The signal *pid* last stopped by, as :meth:`note_stop` noted it (0: none)."""
        with self:
            index = self._index(pid)
            return 0 if index is None else self._field(index, 5)

    def close_doors(self) -> None:
        """The sandbox is ending: from now on :meth:`reserve` refuses
        (EAGAIN), so that no process is made while the others are killed."""
        with self:
            fields = list(HEADER.unpack_from(self._map, 0))
            fields[5] = 1
            HEADER.pack_into(self._map, 0, *fields)

    def restart_numbering(self) -> None:
        """The next pid is the first after the first process's again (for
        a ``serve`` request's fork, whose processes are all gone)."""
        with self:
            fields = list(HEADER.unpack_from(self._map, 0))
            fields[0] = FIRST_PID + 1
            HEADER.pack_into(self._map, 0, *fields)

    def foreground(self) -> int:
        """The terminal's foreground process group as the guest set it
        (``tcsetpgrp``); 0 until a process sets one."""
        with self:
            return HEADER.unpack_from(self._map, 0)[4]

    def set_foreground(self, pgid: int) -> None:
        with self:
            fields = list(HEADER.unpack_from(self._map, 0))
            fields[4] = pgid
            HEADER.pack_into(self._map, 0, *fields)

    def memory_used(self) -> int:
        """What the sandbox's pools hold together."""
        with self:
            return HEADER.unpack_from(self._map, 0)[2]

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
                    record.ppid = new_parent
                    self._write(index, record)

    # -- what /proc/<pid> shows of another process ------------------------------------------
    def _inherit_text(self, index: int, parent: int) -> None:
        """A new record's text: its parent's name and argv (the lock is held)."""
        start = self._text_offset(index)
        source = self._index(parent)
        if source is None:
            self._map[start:start + TEXT_SIZE] = bytes(TEXT_SIZE)
        else:
            origin = self._text_offset(source)
            self._map[start:start + TEXT_SIZE] = self._map[origin:origin + TEXT_SIZE]
        _, size, _, comm = TEXT_HEAD.unpack_from(self._map, start)
        TEXT_HEAD.pack_into(self._map, start, ord("R"), size, time.monotonic_ns(), comm)

    def publish(self, pid: int, comm: bytes, argv: list[bytes]) -> None:
        """*pid* is now called *comm* and was run with *argv* (execve,
        PR_SET_NAME): what other processes' ``/proc/<pid>`` shows."""
        cmdline = b"".join(argument + b"\0" for argument in argv)[:CMDLINE_BYTES]
        with self:
            index = self._index(pid)
            if index is None:
                return
            start = self._text_offset(index)
            state, _, start_ns, _ = TEXT_HEAD.unpack_from(self._map, start)
            TEXT_HEAD.pack_into(self._map, start, state, len(cmdline), start_ns,
                                comm[:COMM_BYTES - 1])
            body = start + TEXT_HEAD.size + SENDERS.size
            self._map[body:body + len(cmdline)] = cmdline

    def set_state(self, pid: int, state: str) -> None:
        """*pid* runs ('R'), sleeps in a wait ('S') or has ended ('Z')."""
        with self:
            index = self._index(pid)
            if index is not None:
                self._map[self._text_offset(index)] = ord(state)

    def describe(self, pid: int) -> Description | None:
        """What ``/proc/<pid>`` shows of *pid* to another process; None
        when no process of the sandbox has it."""
        with self:
            index = self._index(pid)
            if index is None:
                return None
            record = self._read(index)
            assert record is not None
            start = self._text_offset(index)
            state, size, start_ns, comm = TEXT_HEAD.unpack_from(self._map, start)
            body = start + TEXT_HEAD.size + SENDERS.size
            cmdline = bytes(self._map[body:body + min(size, CMDLINE_BYTES)])
            shown = "T" if self._field(index, 5) and state != ord("Z") else chr(state or ord("R"))
            return Description(record, shown, comm.rstrip(b"\0"), cmdline, start_ns,
                               self._field(index, 7))

    # -- signals between processes ---------------------------------------------------------
    def post(self, pid: int, sig: int, sender: int = 0) -> int | None:
        """Put *sig*, sent by process *sender*, in *pid*'s mailbox; its host
        pid (None: it is gone, or not started yet — then the signal is lost,
        as for a process that is just exiting).  A signal already in the
        mailbox keeps its first sender, as a standard signal already pending
        keeps its first ``siginfo_t`` on Linux."""
        with self:
            index = self._index(pid)
            if index is None:
                return None
            fields = list(RECORD.unpack_from(self._map, self._offset(index)))
            if not fields[6] & 1 << (sig - 1):
                struct.pack_into("<i", self._map, self._senders_offset(index) + 4 * (sig - 1),
                                 sender)
            fields[6] |= 1 << (sig - 1)
            RECORD.pack_into(self._map, self._offset(index), *fields)
            return fields[1] or None

    def _senders_offset(self, index: int) -> int:
        return self._text_offset(index) + TEXT_HEAD.size

    def take_mail(self, pid: int) -> tuple[int, dict[int, int]]:
        """The signals in *pid*'s mailbox (bit n-1 for signal n), emptied,
        and who sent each (signal → pid)."""
        with self:
            index = self._index(pid)
            if index is None:
                return 0, {}
            fields = list(RECORD.unpack_from(self._map, self._offset(index)))
            mailbox, fields[6] = fields[6], 0
            RECORD.pack_into(self._map, self._offset(index), *fields)
            senders = SENDERS.unpack_from(self._map, self._senders_offset(index))
            return mailbox, {sig: senders[sig - 1] for sig in range(1, 65)
                             if mailbox >> (sig - 1) & 1}

    def close(self) -> None:
        self._map.close()
        os.close(self.fd)


__all__ = ["ProcessTable", "Record", "Description", "FIRST_PID", "DEFAULT_MAX_PROCESSES",
           "DEFAULT_SANDBOX_MEMORY"]
