"""Layer 7 — wait4 and waitid: a parent learns how its children ended, from the host.

Each guest child is a host child (or, once orphaned, a host child of the
first process, the subreaper), and it ends its host process the way its
guest ended (:func:`minikvm.tree.fork.end_child`).  So the host's own
``waitid(P_PID, host_pid)`` already says what Linux would say of the guest —
exited with a status, killed by a signal, stopped, continued — and this
module only translates: which host pids the guest's ``pid`` argument names
(one child, a process group, any child: the table's records whose parent is
the caller), and the answer back into the guest's status word or
``siginfo_t``.  It never asks the host about a pid outside the table, so a
guest cannot wait for, or learn about, a host process of anyone else.

A wait that must block sleeps on the wakeup fd of the signals from outside:
the host's SIGCHLD is one of them (:data:`~minikvm.machine.outside.FORWARDED`),
so a child's end wakes it at once; between slices it looks at the guest's
signals and the time limit, as every blocking call does.
"""

from __future__ import annotations

import errno
import os
import select
import signal
import struct
import time
from typing import TYPE_CHECKING

from minikvm.errors import SyscallError
from minikvm.process import threads
from minikvm.syscalls.signals import (ERESTARTSYS, SA_NOCLDWAIT, SIG_IGN, action_of,
                                      deliver_due_alarm, ready, sleep, take_outside_signals)
from minikvm.tree.table import Record

if TYPE_CHECKING:
    from minikvm.process.process import Process
    from minikvm.tree.family import Family

# include/uapi/linux/wait.h
WNOHANG = 0x00000001
WUNTRACED = 0x00000002           # wait4's name for WSTOPPED
WSTOPPED = WUNTRACED
WEXITED = 0x00000004
WCONTINUED = 0x00000008
WNOWAIT = 0x01000000
__WNOTHREAD = 0x20000000
__WALL = 0x40000000
__WCLONE = 0x80000000
P_ALL, P_PID, P_PGID, P_PIDFD = 0, 1, 2, 3
WAIT4_OPTIONS = WNOHANG | WUNTRACED | WCONTINUED | __WNOTHREAD | __WALL | __WCLONE
WAITID_OPTIONS = WNOHANG | WSTOPPED | WEXITED | WCONTINUED | WNOWAIT | __WNOTHREAD | __WALL | __WCLONE
# include/uapi/asm-generic/siginfo.h: si_code of SIGCHLD
CLD_EXITED, CLD_KILLED, CLD_DUMPED, CLD_TRAPPED, CLD_STOPPED, CLD_CONTINUED = 1, 2, 3, 4, 5, 6
#: siginfo_t for SIGCHLD: si_signo, si_errno, si_code, padding, then
#: _sigchld: si_pid, si_uid, si_status, padding, si_utime, si_stime
SIGINFO_CHLD = struct.Struct("<iiiiiIiiqq")
SIGINFO_SIZE = 128
#: struct rusage: two struct timeval and fourteen longs (include/uapi/linux/resource.h)
RUSAGE_SIZE = 144
#: How long a blocked wait sleeps before it looks at signals and the time limit again.
WAIT_SLICE_SECONDS = 0.25


def status_word(code: int, status: int) -> int:
    """wait4's status for a SIGCHLD *code* and its *status* (the macros of
    ``<sys/wait.h>`` take these apart: WIFEXITED, WTERMSIG, WSTOPSIG …)."""
    if code == CLD_EXITED:
        return (status & 0xFF) << 8
    if code == CLD_KILLED:
        return status & 0x7F
    if code == CLD_DUMPED:
        return (status & 0x7F) | 0x80
    if code in (CLD_STOPPED, CLD_TRAPPED):
        return (status & 0xFF) << 8 | 0x7F
    return 0xFFFF                    # CLD_CONTINUED


def _children(family: Family, proc: Process, kind: int, ident: int) -> list[Record]:
    """The caller's children that *kind*/*ident* (waitid's) name; ECHILD when none."""
    group = proc.pgid if kind == P_PGID and ident == 0 else ident
    chosen = [record for record in family.table.records()
              if record.ppid == proc.pid and record.pid != proc.pid
              and (kind == P_ALL or kind == P_PID and record.pid == ident
                   or kind == P_PGID and record.pgid == group)]
    if not chosen:
        raise SyscallError(errno.ECHILD, "no such child process in this sandbox")
    return chosen


def wait_child(family: Family, proc: Process, kind: int,
               ident: int, options: int) -> tuple[Record, os.waitid_result] | None:
    """The first of the chosen children with something to report for
    *options* (waitid's flags), reaped unless WNOWAIT; None with WNOHANG
    when none has."""
    host_options = options & (WEXITED | WSTOPPED | WCONTINUED | WNOWAIT) | os.WNOHANG
    while True:
        for record in _children(family, proc, kind, ident):
            if record.host_pid <= 0:
                continue                # its fork has not returned in the parent yet
            try:
                info = os.waitid(os.P_PID, record.host_pid, host_options)
            except ChildProcessError:
                continue                # an orphan the host has not re-parented yet
            if info is None:
                continue
            if info.si_code in (CLD_EXITED, CLD_KILLED, CLD_DUMPED) and not options & WNOWAIT:
                family.table.remove(record.pid)
            return record, info
        if options & WNOHANG:
            return None
        family.set_state("S")          # as other processes' /proc/<pid>/stat shows it
        try:
            if len(proc.threads) > 1:
                _wait_beside_threads(proc)
            else:
                _nap(proc)
        finally:
            family.set_state("R")


def _wait_beside_threads(proc: Process) -> None:
    """With other threads, a wait must not stop the host: they may be what
    the child waits for (Go feeds a child's stdin from one goroutine while
    another waits for it).  The calling thread waits as a read of a host fd
    does (:func:`~minikvm.process.threads.retry_after_others`): it makes the
    call again when the wakeup fd says a signal came — a child's SIGCHLD —
    or a slice has passed (a stop or a continue sends no byte there either)."""
    outside = proc.machine.outside
    watch = ((outside.wakeup_fd, select.POLLIN),) if outside is not None else ()
    threads.retry_after_others(proc, "wait for a child", lambda seconds: sleep(proc, seconds),
                               watch=watch, wake_at=time.monotonic() + WAIT_SLICE_SECONDS)


def _nap(proc: Process) -> None:
    """Sleep until a signal comes from outside (a child's SIGCHLD among
    them) or a slice passes; then what every blocking call does: deliver
    what came, EINTR/restart for a handler, EINTR at the time limit."""
    outside = proc.machine.outside
    woken = False
    if outside is None:
        select.select([], [], [], WAIT_SLICE_SECONDS)
    else:
        poller = select.poll()
        poller.register(outside.wakeup_fd, select.POLLIN)
        woken = bool(poller.poll(WAIT_SLICE_SECONDS * 1000))
    take_outside_signals(proc, woken)
    deliver_due_alarm(proc)
    if ready(proc):
        proc.signal_work = True
        raise SyscallError(ERESTARTSYS, "interrupted by a signal with a handler")
    if proc.machine.stopping:
        raise SyscallError(errno.EINTR, "interrupted: the run is being stopped")


def _reported_status(family: Family, record: Record, info: os.waitid_result) -> int:
    """The host's si_status, except for a stop: a child stops its host
    process by SIGSTOP whatever the guest's signal was
    (:meth:`Family.stop <minikvm.tree.family.Family.stop>`), which the table kept."""
    if info.si_code == CLD_STOPPED:
        return family.table.stop_signal(record.pid) or info.si_status
    return info.si_status


def children_reaped_by_themselves(proc: Process) -> bool:
    """Whether the caller's children leave no zombie: SIGCHLD is ignored
    (SIG_IGN) or its action has SA_NOCLDWAIT, as POSIX.1-2001 says."""
    handler, flags, _, _ = action_of(proc, signal.SIGCHLD)
    return handler == SIG_IGN or bool(flags & SA_NOCLDWAIT)


def reap_quietly(family: Family, proc: Process) -> None:
    """Reap the caller's children that ended, reporting nothing: what the
    kernel does at once for a parent whose children leave no zombie."""
    try:
        while wait_child(family, proc, P_ALL, 0, WEXITED | WNOHANG) is not None:
            pass
    except SyscallError:
        pass                            # no children left


def wait4(family: Family, proc: Process, pid: int, status: int, options: int,
          usage: int) -> int:
    """wait4(2): *pid* -1 any child, 0 the caller's group, < -1 group -pid,
    > 0 that child; WNOHANG, WUNTRACED, WCONTINUED (``__WALL`` and
    ``__WCLONE`` change nothing: no child of a sandbox is a clone child)."""
    if options & ~WAIT4_OPTIONS:
        raise SyscallError(errno.EINVAL, f"wait4 options {options:#x}")
    for address, size in ((status, 4), (usage, RUSAGE_SIZE)):
        if address:
            proc.mm.views(address, size, write=True)     # EFAULT before a child is reaped
    kind, ident = ((P_ALL, 0) if pid == -1 else (P_PGID, 0) if pid == 0
                   else (P_PGID, -pid) if pid < 0 else (P_PID, pid))
    flags = WEXITED | (WSTOPPED if options & WUNTRACED else 0) | options & (WCONTINUED | WNOHANG)
    found = wait_child(family, proc, kind, ident, flags)
    while found is not None and children_reaped_by_themselves(proc) \
            and found[1].si_code in (CLD_EXITED, CLD_KILLED, CLD_DUMPED):
        # No zombie to report: wait on, until no child is left (ECHILD).
        found = wait_child(family, proc, kind, ident, flags)
    if found is None:
        return 0
    record, info = found
    if status:
        proc.mm.write_struct(status, "<i", status_word(info.si_code,
                                                       _reported_status(family, record, info)))
    if usage:
        proc.mm.write(usage, bytes(RUSAGE_SIZE))
    return record.pid


def waitid(family: Family, proc: Process, kind: int, ident: int, info: int, options: int,
           usage: int) -> int:
    """waitid(2): P_ALL, P_PID, P_PGID (0: the caller's group); a pidfd
    (P_PIDFD) is EINVAL, as minikvm makes none.  *info* gets the SIGCHLD
    ``siginfo_t``; with WNOHANG and nothing to report, a zeroed one."""
    if options & ~WAITID_OPTIONS or not options & (WEXITED | WSTOPPED | WCONTINUED):
        raise SyscallError(errno.EINVAL, f"waitid options {options:#x}")
    if kind not in (P_ALL, P_PID, P_PGID) or ident < 0:
        raise SyscallError(errno.EINVAL, f"waitid id type {kind}, id {ident}")
    for address, size in ((info, SIGINFO_SIZE), (usage, RUSAGE_SIZE)):
        if address:
            proc.mm.views(address, size, write=True)
    found = wait_child(family, proc, kind, ident, options)
    if info:
        if found is None:
            proc.mm.write(info, bytes(SIGINFO_SIZE))
        else:
            record, result = found
            proc.mm.write(info, SIGINFO_CHLD.pack(signal.SIGCHLD, 0, result.si_code, 0,
                                                  record.pid, os.getuid(),
                                                  _reported_status(family, record, result),
                                                  0, 0, 0).ljust(SIGINFO_SIZE, b"\0"))
    if usage:
        proc.mm.write(usage, bytes(RUSAGE_SIZE))
    return 0


__all__ = ["wait4", "waitid", "status_word"]
