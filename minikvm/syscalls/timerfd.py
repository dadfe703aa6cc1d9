"""Layer 6 — timerfd: a timer that is a file descriptor.

``timerfd_create`` makes an fd that counts how often its timer expired;
``timerfd_settime`` arms it (once, or every *interval*), ``timerfd_gettime``
says how long until the next expiration.  A ``read`` of 8 bytes takes the
count (a ``uint64_t``) and leaves 0; with none yet it blocks, or says
EAGAIN under ``TFD_NONBLOCK``.  ``poll``/``select``/``epoll`` see it
readable while the count is above 0.  Event loops (libuv, the GHC runtime's
ticker, systemd) are built on it.

What Linux does, and what minikvm does differently:

* Linux counts expirations from an hrtimer interrupt.  minikvm has no
  interrupt: a :class:`TimerFd` holds the next expiration and the interval,
  and counts what passed when it is looked at (read, poll, gettime) —
  ``(now - expiration) // interval + 1`` for a periodic timer, as Linux's
  ``hrtimer_forward_now`` does.  A program sees the same counts.
* A blocking read waits as the other waits do
  (:mod:`minikvm.syscalls.poll`): a lone thread sleeps in the host until
  the expiration (:func:`~minikvm.syscalls.signals.sleep`: the run's time
  limit stops it, a signal's handler interrupts it with EINTR); with other
  threads, they run and the read is made again at the expiration
  (:func:`~minikvm.process.threads.retry_after_others` with ``wake_at``).
  poll and epoll look again at the expiration, through
  :meth:`OpenFile.wakes_at <minikvm.process.fdtable.OpenFile.wakes_at>`.
  A blocking read of a timer that is not armed, in a program with one
  thread, would wait for ever: it fails with EAGAIN instead, as a read of
  an empty pipe does here.
* Clocks: CLOCK_MONOTONIC, CLOCK_BOOTTIME and CLOCK_REALTIME are the
  host's.  The ``_ALARM`` clocks need CAP_WAKE_ALARM: EPERM, as for an
  unprivileged user.  ``TFD_TIMER_CANCEL_ON_SET`` is accepted and
  ignored (Linux too ignores it unless with TFD_TIMER_ABSTIME on
  CLOCK_REALTIME; the guest cannot set the clock, and a change of the
  host's clock does not cancel the timer).
* Linux's timer stops at an expiration until a read re-arms it: an
  edge-triggered epoll sees one edge per read, and the read counts the
  expirations missed meanwhile.  minikvm's count behaves the same
  (:attr:`OpenFile.activity` moves when the count leaves 0 and at a read).
* Guest times are checked by :func:`~minikvm.syscalls.timeouts.checked_timespec`
  (EINVAL for a negative time or ``tv_nsec`` outside ``[0, 10**9)``) and
  saturate at ``KTIME_MAX``: ``INT64_MAX`` seconds is "never, in practice".
* The ``TFD_IOC_SET_TICKS`` ioctl (checkpoint/restore) is not offered.
* A snapshot held in memory (``serve``, forks) copies the timer; a
  snapshot *file* refuses it (:mod:`minikvm.snapshot.file`).
"""

from __future__ import annotations

import errno
import time
from typing import TYPE_CHECKING

from minikvm.errors import SyscallError
from minikvm.linux_abi import ITIMERSPEC, KTIME_MAX, NSEC_PER_SEC, O_CLOEXEC, O_NONBLOCK, O_RDWR
from minikvm.process.fdtable import POLLIN, POLLRDNORM, OpenFile
from minikvm.syscalls.base import PARTIAL, Syscall, signed32
from minikvm.syscalls.timeouts import checked_timespec

if TYPE_CHECKING:
    from minikvm.process.process import Process

# include/uapi/linux/timerfd.h
TFD_TIMER_ABSTIME = 1 << 0
TFD_TIMER_CANCEL_ON_SET = 1 << 1
TFD_CLOEXEC = O_CLOEXEC
TFD_NONBLOCK = O_NONBLOCK
#: the flags timerfd_create accepts (fs/timerfd.c TFD_CREATE_FLAGS)
TFD_CREATE_FLAGS = TFD_CLOEXEC | TFD_NONBLOCK
#: the flags timerfd_settime accepts (fs/timerfd.c TFD_SETTIME_FLAGS)
TFD_SETTIME_FLAGS = TFD_TIMER_ABSTIME | TFD_TIMER_CANCEL_ON_SET
#: a read gives the expiration count as a ``uint64_t``
TIMERFD_COUNT_SIZE = 8
U64_MAX = (1 << 64) - 1

# Linux clock ids (include/uapi/linux/time.h)
CLOCK_REALTIME = 0
CLOCK_MONOTONIC = 1
CLOCK_BOOTTIME = 7
CLOCK_REALTIME_ALARM = 8
CLOCK_BOOTTIME_ALARM = 9
#: the clocks a timerfd may count on → the host clock that answers for each
TIMERFD_CLOCKS = {
    CLOCK_REALTIME: time.CLOCK_REALTIME,
    CLOCK_MONOTONIC: time.CLOCK_MONOTONIC,
    CLOCK_BOOTTIME: getattr(time, "CLOCK_BOOTTIME", time.CLOCK_MONOTONIC),
}
#: the clocks that need CAP_WAKE_ALARM (EPERM for the guest)
ALARM_CLOCKS = (CLOCK_REALTIME_ALARM, CLOCK_BOOTTIME_ALARM)


class TimerFd(OpenFile):
    """A timerfd: the next expiration (nanoseconds on its clock, None when
    disarmed), the interval (0: once), and the expirations counted but not
    read yet.  Plain data, so a snapshot in memory copies it."""
    kind = "timerfd"

    def __init__(self, clock_id: int, status_flags: int) -> None:
        self.clock_id = clock_id
        self.status_flags = O_RDWR | status_flags
        self.path = "anon_inode:[timerfd]"
        self.expires_ns: int | None = None
        self.interval_ns = 0
        self.ticks = 0
        self.activity = 0

    def now_ns(self) -> int:
        """Its clock, now."""
        return time.clock_gettime_ns(TIMERFD_CLOCKS[self.clock_id])

    def update(self) -> None:
        """Count the expirations that passed since it was last looked at."""
        if self.expires_ns is None:
            return
        now = self.now_ns()
        if now < self.expires_ns:
            return
        if not self.ticks:
            self.activity += 1    # the edge an edge-triggered epoll reports
        if self.interval_ns:
            missed = (now - self.expires_ns) // self.interval_ns + 1
            self.ticks = min(self.ticks + missed, U64_MAX)
            self.expires_ns = min(self.expires_ns + missed * self.interval_ns, KTIME_MAX)
        else:
            self.ticks = min(self.ticks + 1, U64_MAX)
            self.expires_ns = None

    def arm(self, value_ns: int, interval_ns: int, absolute: bool) -> None:
        """timerfd_settime's new value: expire at *value_ns* (from now, or
        on the clock when *absolute*; 0 disarms), then every *interval_ns*.
        The count not yet read is dropped, as in Linux."""
        self.ticks = 0
        self.interval_ns = interval_ns
        if value_ns == 0:
            self.expires_ns = None
        elif absolute:
            self.expires_ns = value_ns
        else:
            self.expires_ns = min(self.now_ns() + value_ns, KTIME_MAX)

    def remaining_ns(self) -> int:
        """Nanoseconds until the next expiration (0 when disarmed; Linux
        says 1 ns, not 0, for one that is due but not counted yet — here
        the count is always brought up to date first)."""
        self.update()
        if self.expires_ns is None:
            return 0
        return max(self.expires_ns - self.now_ns(), 1)

    def readv(self, views: list[memoryview]) -> int:
        if sum(len(view) for view in views) < TIMERFD_COUNT_SIZE:
            raise SyscallError(errno.EINVAL, "a timerfd read needs an 8-byte buffer")
        self.update()
        if self.ticks == 0:
            raise SyscallError(errno.EAGAIN, "the timer has not expired since the last read")
        data = self.ticks.to_bytes(TIMERFD_COUNT_SIZE, "little")
        self.ticks = 0
        self.activity += 1
        for view in views:
            piece, data = data[:len(view)], data[len(view):]
            view[:len(piece)] = piece
        return TIMERFD_COUNT_SIZE

    def writev(self, chunks: list[memoryview]) -> int:
        raise SyscallError(errno.EINVAL, "a timerfd cannot be written (use timerfd_settime)")

    def poll(self, events: int) -> int:
        """timerfd_poll(): readable once it expired."""
        self.update()
        return POLLIN | POLLRDNORM if self.ticks else 0

    def wakes_at(self) -> float | None:
        """The next expiration on the host's ``time.monotonic()``."""
        self.update()
        if self.expires_ns is None or self.ticks:
            return None
        return time.monotonic() + (self.expires_ns - self.now_ns()) / NSEC_PER_SEC


def _timerfd(proc: Process, fd: int) -> TimerFd:
    """The timer behind *fd*: EBADF when not open, EINVAL when not a timerfd."""
    file = proc.fds.get(signed32(fd))
    if not isinstance(file, TimerFd):
        raise SyscallError(errno.EINVAL, f"fd {signed32(fd)} is not a timerfd")
    return file


def _write_itimerspec(proc: Process, address: int, interval_ns: int, value_ns: int) -> None:
    proc.mm.write(address, ITIMERSPEC.pack(interval_ns // NSEC_PER_SEC, interval_ns % NSEC_PER_SEC,
                                           value_ns // NSEC_PER_SEC, value_ns % NSEC_PER_SEC))


def sys_timerfd_create(proc: Process, clock_id: int, flags: int) -> int:
    """timerfd_create(2): a disarmed timer on CLOCK_MONOTONIC, CLOCK_BOOTTIME
    or CLOCK_REALTIME; ``TFD_NONBLOCK`` and ``TFD_CLOEXEC``.

    EINVAL for another clock or flag, EPERM for the ``_ALARM`` clocks."""
    clock_id, flags = signed32(clock_id), signed32(flags)
    if flags & ~TFD_CREATE_FLAGS:
        raise SyscallError(errno.EINVAL, f"timerfd_create flags {flags:#x}: only "
                           "TFD_NONBLOCK and TFD_CLOEXEC")
    if clock_id in ALARM_CLOCKS:
        raise SyscallError(errno.EPERM, f"clock {clock_id} needs CAP_WAKE_ALARM")
    if clock_id not in TIMERFD_CLOCKS:
        raise SyscallError(errno.EINVAL, f"clock {clock_id}: a timerfd counts on "
                           "CLOCK_REALTIME (0), CLOCK_MONOTONIC (1) or CLOCK_BOOTTIME (7)")
    return proc.fds.install(TimerFd(clock_id, flags & TFD_NONBLOCK),
                            cloexec=bool(flags & TFD_CLOEXEC))


def sys_timerfd_settime(proc: Process, fd: int, flags: int, new_address: int,
                        old_address: int) -> int:
    """timerfd_settime(2): arm (or, with a zero ``it_value``, disarm) the
    timer; the old setting goes to *old_address* when not NULL.

    Checked in Linux's order: the new value is read (EFAULT), the flags
    and the value checked (EINVAL for a bad timespec), then the fd (EBADF,
    EINVAL)."""
    flags = signed32(flags)
    interval_s, interval_ns, value_s, value_ns = ITIMERSPEC.unpack(
        proc.mm.read(new_address, ITIMERSPEC.size))
    if flags & ~TFD_SETTIME_FLAGS:
        raise SyscallError(errno.EINVAL, f"timerfd_settime flags {flags:#x}: only "
                           "TFD_TIMER_ABSTIME and TFD_TIMER_CANCEL_ON_SET")
    interval = checked_timespec(interval_s, interval_ns, "it_interval")
    value = checked_timespec(value_s, value_ns, "it_value")
    timer = _timerfd(proc, fd)
    if old_address:
        proc.mm.views(old_address, ITIMERSPEC.size, write=True)   # EFAULT before arming
        _write_itimerspec(proc, old_address, timer.interval_ns, timer.remaining_ns())
    timer.arm(value, interval, bool(flags & TFD_TIMER_ABSTIME))
    return 0


def sys_timerfd_gettime(proc: Process, fd: int, address: int) -> int:
    """timerfd_gettime(2): the interval and the time until the next
    expiration (zeros when disarmed)."""
    timer = _timerfd(proc, fd)
    _write_itimerspec(proc, address, timer.interval_ns, timer.remaining_ns())
    return 0


SYSCALLS = [
    Syscall(283, "timerfd_create", sys_timerfd_create, ("int", "hex"), PARTIAL,
            "CLOCK_REALTIME, CLOCK_MONOTONIC, CLOCK_BOOTTIME; expirations counted when "
            "looked at; a lone thread's blocking read of a disarmed timer is EAGAIN"),
    Syscall(286, "timerfd_settime", sys_timerfd_settime, ("fd", "hex", "ptr", "ptr"), PARTIAL,
            "TFD_TIMER_CANCEL_ON_SET is accepted and ignored"),
    Syscall(287, "timerfd_gettime", sys_timerfd_gettime, ("fd", "ptr")),
]
