"""Layer 6 — epoll: waiting on many fds with a set kept in the kernel.

An epoll fd (:class:`~minikvm.process.fdtable.EpollFile`) holds the fds the guest
registered with ``epoll_ctl``, each with the events it wants and a 64-bit
cookie.  ``epoll_wait`` asks every registered fd whether it is ready —
with the same look :mod:`minikvm.syscalls.poll` takes
(:func:`~minikvm.syscalls.poll.ready_events`: in-guest pipes and devices
answer themselves, host fds go to the host's ``poll``) — and so waits the
same way too: other guest threads run meanwhile, and a lone thread sleeps
in the host in slices, stopping for the time limit and for signal handlers
(EINTR).

Linux keeps a ready list filled by wake-up callbacks; minikvm has no such
callbacks, so it computes readiness at each wait instead:

* level-triggered (the default): reported whenever ready;
* ``EPOLLET``: reported when a readiness bit rose since the last wait, or
  the file saw reads or writes since (see
  :class:`~minikvm.process.fdtable.EpollInterest`) — an approximation of Linux's
  "one event per wake-up" that never misses an edge a reader waits for;
* ``EPOLLONESHOT``: after one report the fd is silent until
  ``EPOLL_CTL_MOD`` re-arms it.

The event array is x86-64's ``struct epoll_event``, which is packed: a u32
of events and a u64 of data, 12 bytes (``uapi/linux/eventpoll.h``,
``EPOLL_PACKED``).  Registrations are keyed by fd number; one whose fd was
closed (or now names another file) is forgotten, where Linux forgets it
only when the last fd of that file is closed.
"""

from __future__ import annotations

import errno
import os
import stat
import struct
from typing import TYPE_CHECKING

from minikvm.errors import SyscallError
from minikvm.linux_abi import O_CLOEXEC, SIGSET_SIZE
from minikvm.process.fdtable import (ALWAYS_REPORTED, EPOLLET, EPOLLEXCLUSIVE, EPOLLONESHOT,
                                     EPOLLWAKEUP, DeviceFile, EpollFile, EpollInterest, OpenFile)
from minikvm.syscalls.base import PARTIAL, Syscall, signed32
from minikvm.syscalls.poll import ready_events
from minikvm.syscalls.timeouts import read_timeout

if TYPE_CHECKING:
    from minikvm.process.process import Process

#: ``struct epoll_event`` on x86-64: __u32 events; __u64 data; packed
EPOLL_EVENT = struct.Struct("<IQ")
EPOLL_CLOEXEC = O_CLOEXEC
EPOLL_CTL_ADD = 1
EPOLL_CTL_DEL = 2
EPOLL_CTL_MOD = 3
#: the most events one epoll_wait may ask for (fs/eventpoll.c EP_MAX_EVENTS)
EP_MAX_EVENTS = 0x7FFF_FFFF // EPOLL_EVENT.size
#: how deep epolls may watch epolls (fs/eventpoll.c EP_MAX_NESTS)
EP_MAX_NESTS = 4
#: the poll bits of an events word (the rest are epoll's flags)
POLL_BITS = 0xFFFF
#: devices with no poll method: epoll_ctl refuses them (drivers/char/mem.c)
UNPOLLABLE_DEVICES = ("null", "zero")


def _epoll(proc: Process, epfd: int) -> EpollFile:
    """The epoll behind *epfd*: EBADF when not open, EINVAL when not an epoll."""
    file = proc.fds.get(signed32(epfd))
    if not isinstance(file, EpollFile):
        raise SyscallError(errno.EINVAL, f"fd {signed32(epfd)} is not an epoll fd")
    return file


def _forget_closed(proc: Process, epoll: EpollFile) -> None:
    """Drop registrations whose fd was closed or now names another file."""
    for fd in [fd for fd, item in epoll.interest.items()
               if getattr(proc.fds.entries.get(fd), "file", None) is not item.file]:
        epoll.forget(fd)


def _supports_poll(file: OpenFile) -> bool:
    """Whether the file has a poll method in Linux: regular files and
    directories do not (epoll_ctl says EPERM), nor do /dev/null and /dev/zero."""
    if isinstance(file, DeviceFile):
        return file.name not in UNPOLLABLE_DEVICES
    if file.kind == "host" and file.host_fd is not None:
        mode = os.fstat(file.host_fd).st_mode
        return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))
    return True


def _watches(epoll: EpollFile, target: EpollFile, depth: int = 1,
             seen: set[int] | None = None) -> bool:
    """Whether *target* is, or watches (through nested epolls), *epoll* —
    or nests deeper than :data:`EP_MAX_NESTS`.  Each epoll is visited once
    (*seen*), so a guest cannot make this walk take exponential time."""
    seen = set() if seen is None else seen
    if target is epoll or depth > EP_MAX_NESTS:
        return True
    if id(target) in seen:
        return False
    seen.add(id(target))
    return any(isinstance(item.file, EpollFile) and _watches(epoll, item.file, depth + 1, seen)
               for item in target.interest.values())


# -- epoll_create ---------------------------------------------------------------------------------
def sys_epoll_create1(proc: Process, flags: int) -> int:
    """epoll_create1(2): a new epoll set, kept by minikvm (not a host epoll fd).

    EINVAL for any flag but ``EPOLL_CLOEXEC``."""
    flags = signed32(flags)
    if flags & ~EPOLL_CLOEXEC:
        raise SyscallError(errno.EINVAL, f"epoll_create1 flags {flags:#x}: only EPOLL_CLOEXEC")
    return proc.fds.install(EpollFile(proc.fds.epoll_watches),
                            cloexec=bool(flags & EPOLL_CLOEXEC))


def sys_epoll_create(proc: Process, size: int) -> int:
    """The size is only a hint since Linux 2.6.8, but must be positive."""
    if signed32(size) <= 0:
        raise SyscallError(errno.EINVAL, f"epoll_create size {signed32(size)}")
    return proc.fds.install(EpollFile(proc.fds.epoll_watches))


# -- epoll_ctl ------------------------------------------------------------------------------------
def sys_epoll_ctl(proc: Process, epfd: int, op: int, fd: int, event_address: int) -> int:
    """Checks in Linux's order (do_epoll_ctl): the event, the two fds, poll
    support (EPERM), then EINVAL for a non-epoll or self, then the lookup."""
    op, fd = signed32(op), signed32(fd)
    events = data = 0
    if op != EPOLL_CTL_DEL:
        events, data = EPOLL_EVENT.unpack(proc.mm.read(event_address, EPOLL_EVENT.size))
    epoll_file = proc.fds.get(signed32(epfd))
    target = proc.fds.get(fd)
    if not _supports_poll(target):
        raise SyscallError(errno.EPERM, f"fd {fd} is a regular file, a directory or "
                           "/dev/null or /dev/zero: always ready, epoll cannot watch it")
    if not isinstance(epoll_file, EpollFile) or target is epoll_file:
        raise SyscallError(errno.EINVAL, f"fd {signed32(epfd)} is not an epoll fd, "
                           f"or is the fd {fd} it would watch")
    epoll = epoll_file
    events &= ~EPOLLWAKEUP                   # needs CAP_BLOCK_SUSPEND: dropped, as Linux does
    if events & EPOLLEXCLUSIVE and (op == EPOLL_CTL_MOD or events & EPOLLONESHOT):
        raise SyscallError(errno.EINVAL, "EPOLLEXCLUSIVE with EPOLL_CTL_MOD or EPOLLONESHOT")
    _forget_closed(proc, epoll)
    item = epoll.interest.get(fd)
    if op == EPOLL_CTL_ADD:
        if item is not None:
            raise SyscallError(errno.EEXIST, f"fd {fd} is already registered")
        if isinstance(target, EpollFile) and _watches(epoll, target):
            raise SyscallError(errno.ELOOP, f"epoll fd {fd} would watch itself, or nests "
                               f"deeper than {EP_MAX_NESTS}")
        epoll.watch(fd, EpollInterest(target, events, data))
    elif op in (EPOLL_CTL_MOD, EPOLL_CTL_DEL):
        if item is None:
            raise SyscallError(errno.ENOENT, f"fd {fd} is not registered")
        if op == EPOLL_CTL_DEL:
            epoll.forget(fd)
        else:
            if item.events & EPOLLEXCLUSIVE:
                raise SyscallError(errno.EINVAL, "an EPOLLEXCLUSIVE registration cannot change")
            epoll.interest[fd] = EpollInterest(target, events, data)
    else:
        raise SyscallError(errno.EINVAL, f"epoll_ctl op {op}")
    return 0


# -- epoll_wait -----------------------------------------------------------------------------------
def _reportable(item: EpollInterest, revents: int) -> int:
    """The events *item* reports now, given its fd's *revents*."""
    if item.disabled or not revents:
        return 0
    if item.events & EPOLLET:
        rose = revents & ~item.last_ready
        if not rose and item.file.activity == item.last_activity:
            return 0
    return revents


def _wait(proc: Process, epfd: int, address: int, count: int, timeout: float | None) -> int:
    count = signed32(count)
    if not 0 < count <= EP_MAX_EVENTS:
        raise SyscallError(errno.EINVAL, f"maxevents {count}")
    epoll = _epoll(proc, epfd)
    _forget_closed(proc, epoll)
    # EFAULT before waiting, and before a one-shot fd is used up or an
    # edge is taken: the events go there, so it must be writable (Linux
    # puts an event it could not copy out back on the ready list)
    proc.mm.views(address, EPOLL_EVENT.size * min(count, max(1, len(epoll.interest))),
                  write=True)
    fds = list(epoll.interest)
    items = [epoll.interest[fd] for fd in fds]
    requests = [(fd, item.events & POLL_BITS) for fd, item in zip(fds, items)]

    def enough(results: list[int]) -> bool:
        return any(_reportable(item, revents) for item, revents in zip(items, results))

    results = ready_events(proc, requests, timeout, enough=enough, what="epoll_wait")
    reported = []
    for fd, item, revents in zip(fds, items, results):
        revents &= item.events | ALWAYS_REPORTED
        events = _reportable(item, revents) if len(reported) < count else 0
        if item.events & EPOLLET and (events or not revents):
            item.last_ready, item.last_activity = revents, item.file.activity
        if not events:
            continue
        reported.append(EPOLL_EVENT.pack(events, item.data))
        if item.events & EPOLLONESHOT:
            item.disabled = True
        elif not item.events & EPOLLET and epoll.interest.get(fd) is item:
            del epoll.interest[fd]            # to the end of the line: round robin
            epoll.interest[fd] = item
    if reported:
        proc.mm.write(address, b"".join(reported))
    return len(reported)


def sys_epoll_wait(proc: Process, epfd: int, address: int, count: int, timeout_ms: int) -> int:
    """epoll_wait(2): wait for the fds of an epoll set (a timeout in ms; -1: none).

    While it waits, the guest's other threads run."""
    timeout_ms = signed32(timeout_ms)
    return _wait(proc, epfd, address, count, None if timeout_ms < 0 else timeout_ms / 1000)


def sys_epoll_pwait(proc: Process, epfd: int, address: int, count: int, timeout_ms: int,
                    sigmask: int, sigset_size: int) -> int:
    """epoll_pwait(2): :func:`sys_epoll_wait`; the signal mask is checked, not applied."""
    if sigmask and sigset_size != SIGSET_SIZE:
        raise SyscallError(errno.EINVAL, f"sigset size {sigset_size}")
    return sys_epoll_wait(proc, epfd, address, count, timeout_ms)


def sys_epoll_pwait2(proc: Process, epfd: int, address: int, count: int, timeout_address: int,
                     sigmask: int, sigset_size: int) -> int:
    """epoll_pwait with a ``struct timespec *`` timeout (NULL: no limit)."""
    if sigmask and sigset_size != SIGSET_SIZE:
        raise SyscallError(errno.EINVAL, f"sigset size {sigset_size}")
    return _wait(proc, epfd, address, count, read_timeout(proc, timeout_address))


SYSCALLS = [
    Syscall(213, "epoll_create", sys_epoll_create, ("int",)),
    Syscall(291, "epoll_create1", sys_epoll_create1, ("hex",)),
    Syscall(233, "epoll_ctl", sys_epoll_ctl, ("fd", "int", "fd", "ptr"), PARTIAL,
            "EPOLLEXCLUSIVE and EPOLLWAKEUP are accepted and ignored"),
    Syscall(232, "epoll_wait", sys_epoll_wait, ("fd", "ptr", "int", "int"), PARTIAL,
            "EPOLLET reports when readiness rose or the fd was read/written since the "
            "last wait (an approximation of Linux's wake-ups)"),
    Syscall(281, "epoll_pwait", sys_epoll_pwait, ("fd", "ptr", "int", "int", "ptr", "uint"),
            PARTIAL, "as epoll_wait; the signal mask is ignored"),
    Syscall(441, "epoll_pwait2", sys_epoll_pwait2, ("fd", "ptr", "int", "ptr", "ptr", "uint"),
            PARTIAL, "as epoll_wait; the signal mask is ignored"),
]
