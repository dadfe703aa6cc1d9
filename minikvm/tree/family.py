"""Layer 7 — one host process's place in the sandbox's tree, and the tree's lifetime.

A :class:`Family` is what a guest process needs to live among others: the
shared :class:`~minikvm.tree.table.ProcessTable`, its own pid, the first
process's pid (the sandbox's reaper, like ``init`` in a pid namespace), and
the **lifeline** — the pipe that ends every process of the tree when the
first one's host process goes, however it goes.

Why a pipe and not ``PR_SET_PDEATHSIG``: the parent-death signal fires when
the *parent* dies, which would kill every orphan, and a process that
outlives its parent is ordinary Linux (``(sleep 1; echo late) &`` in a
subshell).  The first process keeps the only write end; every other host
process has the read end and a thread blocked reading it.  When the first
process's host process ends — it exited, it was killed with SIGKILL, it
crashed — the kernel closes the write end, the read returns end-of-file
in every process at once, and each ends itself with SIGKILL.

The first process is also the host's **child subreaper**
(``PR_SET_CHILD_SUBREAPER``): a host process whose parent ended is
re-parented to it, as the table re-parents the guest process, so that it
can still be waited for and is never a zombie of some unrelated host process.
"""

from __future__ import annotations

import ctypes
import errno
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from minikvm.errors import SyscallError
from minikvm.machine.outside import MAILBOX_SIGNAL
from minikvm.tree import fork as forking, vfork_memory, wait as waiting
from minikvm.tree.table import FIRST_PID, Description, ProcessTable, Record

if TYPE_CHECKING:
    from minikvm.process.process import Process

PR_SET_CHILD_SUBREAPER = 36     # linux/prctl.h
#: end_all's rounds, and the pause after a round that found a fork under way.
END_ALL_ROUNDS = 100
END_ALL_PAUSE_SECONDS = 0.002
_libc = ctypes.CDLL(None, use_errno=True)


@dataclass
class Family:
    """This host process's guest process among the sandbox's: see the module docstring."""
    table: ProcessTable
    pid: int
    root_pid: int
    lifeline_read: int
    #: The write end; held by the first process only (-1 in the others).
    lifeline_write: int
    #: In a child made by vfork: the write end of the pipe its parent waits
    #: on, closed when it execs or ends; -1 otherwise.
    vfork_done: int = -1
    #: In a child made by vfork, until it execs or ends: what it borrowed
    #: of its parent's memory (:mod:`minikvm.tree.vfork_memory`).
    lending: vfork_memory.Lending | None = None
    #: The first process's process group: the terminal's foreground until a
    #: process of the sandbox makes another one the foreground (tcsetpgrp).
    root_group: int = FIRST_PID
    #: Called in every new child, once its machine runs on its own VM: what
    #: the parent's tools must undo there (a debugger's breakpoints).
    in_child: list[Callable[[], None]] = field(default_factory=list)
    #: Called in a child whose guest ended, before its host process ends
    #: (what it must hand on: its part of ``--summary``).
    at_end: list[Callable[[], None]] = field(default_factory=list)
    #: Called at each fork in the parent and the child (with the parent's
    #: pid), e.g. so that the trace starts naming pids.
    on_fork: list[Callable[[], None]] = field(default_factory=list)

    @classmethod
    def start(cls, max_processes: int, pgid: int, sid: int, memory: int,
              memory_limit: int) -> "Family":
        """The tree of a new sandbox, with the calling process as its first
        (pid :data:`~minikvm.tree.table.FIRST_PID`), whose page pool holds
        *memory* bytes; all processes together may hold *memory_limit*."""
        table = ProcessTable.create(max_processes, Record(FIRST_PID, os.getpid(), FIRST_PID - 1,
                                                          pgid, sid), memory, memory_limit)
        read_end, write_end = os.pipe2(os.O_CLOEXEC)
        _libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
        return cls(table, FIRST_PID, FIRST_PID, read_end, write_end, root_group=pgid)

    @property
    def is_root(self) -> bool:
        return self.pid == self.root_pid

    def parent_pid(self) -> int:
        """getppid(2): the parent as the table says, which becomes the first
        process when the real parent ended (the first process's own parent
        is the one outside the sandbox: its pid minus one, as before there
        were trees)."""
        record = self.table.find(self.pid)
        return record.ppid if record is not None else self.root_pid

    def become_child(self, pid: int) -> None:
        """In a new host child: drop the lifeline's write end (only the
        first process may hold it) and watch its read end."""
        self.pid = pid
        if self.lifeline_write >= 0:
            os.close(self.lifeline_write)
            self.lifeline_write = -1
        self.table.update(pid, host_pid=os.getpid())
        watcher = threading.Thread(target=_end_with_the_first, args=(self.lifeline_read,),
                                   name="minikvm-lifeline", daemon=True)
        watcher.start()

    def note_fork(self, parent: int) -> None:
        """Run the :attr:`on_fork` hooks (just before the host's fork)."""
        for hook in self.on_fork:
            hook()

    def publish(self, proc: Process) -> None:
        """Tell the table *proc*'s name and argv, for the other processes'
        ``/proc/<pid>`` (at the start, at execve and at PR_SET_NAME)."""
        self.table.publish(self.pid, proc.name, proc.argv)

    def set_state(self, state: str) -> None:
        """This process runs ('R'), sleeps in a wait ('S') or ended ('Z'),
        as other processes' ``/proc/<pid>/stat`` shows it."""
        self.table.set_state(self.pid, state)

    def describe(self, pid: int) -> Description | None:
        """What another process may see of *pid* (None: not in the sandbox)."""
        return self.table.describe(pid) if pid > 0 else None

    def give_back_memory(self, proc: Process) -> None:
        """A vfork child execs (before its new image is loaded) or ends:
        the pages it wrote of its parent's memory go back to the parent
        (:func:`minikvm.tree.vfork_memory.give_back`)."""
        if self.lending is not None and self.vfork_done >= 0:
            lending, self.lending = self.lending, None
            try:
                vfork_memory.give_back(proc, lending, self.vfork_done)
            except OSError:
                pass            # the parent is gone: nobody to give them to

    def executed(self, proc: Process) -> None:
        """The process ran a new program (execve): the table learns its new
        name and argv, and if it is a vfork child, its parent goes on now."""
        self.publish(proc)
        if self.vfork_done >= 0:
            os.close(self.vfork_done)
            self.vfork_done = -1

    # -- what the system calls ask (minikvm.syscalls.process calls these) -----------------
    def fork(self, proc: Process, *, stack: int = 0, vfork: bool = False,
             tls: int | None = None, set_child_tid: int = 0, clear_child_tid: int = 0) -> int:
        """A new process (:func:`minikvm.tree.fork.fork`); its pid."""
        return forking.fork(proc, stack=stack, vfork=vfork, tls=tls,
                            set_child_tid=set_child_tid, clear_child_tid=clear_child_tid)

    def wait4(self, proc: Process, pid: int, status: int, options: int, usage: int) -> int:
        return waiting.wait4(self, proc, pid, status, options, usage)

    def waitid(self, proc: Process, kind: int, ident: int, info: int, options: int,
               usage: int) -> int:
        return waiting.waitid(self, proc, kind, ident, info, options, usage)

    def find(self, pid: int) -> Record:
        """The record of *pid*; ESRCH when it is no process of the sandbox."""
        record = self.table.find(pid) if pid > 0 else None
        if record is None:
            raise SyscallError(errno.ESRCH, f"no process {pid} in this sandbox")
        return record

    def targets(self, proc: Process, pid: int) -> tuple[list[Record], bool]:
        """Whom kill(2)'s *pid* names: the other processes, and whether the
        caller is among them.  ESRCH when it names no one."""
        records = self.table.records()
        if pid > 0:
            chosen = [record for record in records if record.pid == pid]
        elif pid == -1:      # every process it may signal: all of the sandbox's but itself
            chosen = [record for record in records if record.pid != proc.pid]
        else:
            group = proc.pgid if pid == 0 else -pid
            chosen = [record for record in records if record.pgid == group]
        if not chosen:
            raise SyscallError(errno.ESRCH, f"no process {pid} in this sandbox")
        return ([record for record in chosen if record.pid != proc.pid],
                any(record.pid == proc.pid for record in chosen))

    def send(self, record: Record, sig: int) -> None:
        """Signal *sig* to another process of the sandbox.  SIGKILL and
        SIGSTOP act on its host process itself, as they cannot be caught;
        SIGCONT too (it must wake a stopped host process; the receiver's
        forwarding gives it to the guest).  Any other signal travels in the
        table's mailbox, and :data:`MAILBOX_SIGNAL` tells the receiver."""
        if sig == 0 or record.host_pid <= 0:
            return
        try:
            if sig in (signal.SIGKILL, signal.SIGSTOP, signal.SIGCONT):
                if sig == signal.SIGSTOP:
                    self.table.note_stop(record.pid, sig)
                os.kill(record.host_pid, sig)
            elif self.table.post(record.pid, sig, self.pid) is not None:
                os.kill(record.host_pid, MAILBOX_SIGNAL)
        except ProcessLookupError:
            pass                # it ended a moment ago

    def in_background(self, pgid: int) -> bool:
        """Whether a process of group *pgid* is not the terminal's foreground
        group: Ctrl-C, Ctrl-\\ and Ctrl-Z are the foreground's only."""
        foreground = self.table.foreground()
        return foreground != 0 and foreground != pgid

    def stop(self, sig: int) -> None:
        """A child's guest stops by *sig* (SIGTSTP, SIGTTIN, SIGTTOU,
        SIGSTOP): its host process stops until a SIGCONT.  By SIGSTOP,
        whatever *sig* was: the sandbox's host processes form one host
        process group whose leader's parent may be in another session (a
        terminal emulator's shell), which makes it "orphaned", and Linux
        discards the other stop signals in an orphaned group.  The table
        keeps *sig* for the parent's wait4 (WSTOPSIG)."""
        self.table.note_stop(self.pid, sig)
        os.kill(os.getpid(), signal.SIGSTOP)      # returns once continued
        self.table.note_stop(self.pid, 0)

    def charge(self, delta: int) -> bool:
        """This process's page pool took or gave back *delta* bytes
        (:attr:`PagePool.charge <minikvm.machine.pages.PagePool.charge>`)."""
        return self.table.charge(self.pid, delta)

    def mail(self) -> tuple[int, dict[int, int]]:
        """The signals others sent this process, and who sent each (for
        OutsideSignals.mailbox)."""
        return self.table.take_mail(self.pid)

    def set_group(self, proc: Process, pid: int, pgid: int) -> None:
        """setpgid(2) on a child (the caller's own group is the caller's to change)."""
        record = self.find(pid)
        if record.ppid != proc.pid:
            raise SyscallError(errno.ESRCH, f"process {pid} is not a child of the caller")
        if record.sid != proc.sid:
            raise SyscallError(errno.EPERM, f"process {pid} is in another session")
        self.table.update(pid, pgid=pgid or pid)

    def others(self) -> list[Record]:
        """Every other process of the sandbox."""
        return [record for record in self.table.records() if record.pid != self.pid]

    def end_all(self) -> None:
        """The first process ended: every other process of the sandbox ends
        too, at once (SIGKILL, as ``bwrap --die-with-parent`` does), and is
        reaped, so that nothing of the sandbox outlives ``minikvm run``.
        No new process may start meanwhile (:meth:`ProcessTable.close_doors`);
        one whose fork was under way when the doors closed is waited for
        until its host pid is known — briefly: the lifeline ends it anyway."""
        self.table.close_doors()
        self._kill_others()
        if self.lifeline_write >= 0:
            os.close(self.lifeline_write)
            self.lifeline_write = -1

    def end_others(self) -> None:
        """A request of ``minikvm serve`` is over (its fork is reset): every
        process it made ends at once (SIGKILL) and is reaped, and the next
        request's processes are numbered from the first pid after this one
        again, as the snapshot's would be."""
        self._kill_others()
        self.table.restart_numbering()

    def _kill_others(self) -> None:
        """SIGKILL every other process of the sandbox and reap it (see
        :meth:`end_all`)."""
        for _ in range(END_ALL_ROUNDS):
            others = self.others()
            if not others:
                break
            for record in others:
                if record.host_pid > 0:
                    try:
                        os.kill(record.host_pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
            for record in others:
                if record.host_pid <= 0:
                    continue
                try:
                    os.waitpid(record.host_pid, 0)
                except ChildProcessError:
                    pass    # another process's child, not adopted yet: it dies all the same
                self.table.remove(record.pid)
            if any(record.host_pid <= 0 for record in others):
                time.sleep(END_ALL_PAUSE_SECONDS)


def _end_with_the_first(read_end: int) -> None:
    """The lifeline's watcher thread: blocks until the first process's host
    process is gone, then ends this one."""
    while True:
        try:
            if not os.read(read_end, 1):
                break
        except InterruptedError:
            continue
        except OSError:
            break
    os.kill(os.getpid(), signal.SIGKILL)


__all__ = ["Family"]
