"""Layer 6 — waiting on file descriptors: poll, ppoll, select, pselect6.

A guest has few kinds of fd, and each knows whether it is ready
(:meth:`OpenFile.poll <minikvm.process.fdtable.OpenFile.poll>`): devices always are;
an in-guest pipe is readable when it holds data or has no writer left; a
host fd (a granted file, a socket, our stdio) only the host can tell, so
those are handed to the host's ``poll(2)``.

Waiting never blocks the host for long.  A program with one thread can
change nothing inside the guest while it waits, so only host fds, the
clock and the alarm matter: the wait is cut into slices of :data:`WAIT_SLICE_SECONDS`,
and between slices a due ``alarm`` is delivered
(:func:`minikvm.syscalls.signals.deliver_due_alarm`) and
``kvm_run.immediate_exit`` is checked — set when the run's time limit is
reached — in which case the call returns EINTR and the machine stops.  A
wait that nothing could ever end (an infinite timeout on in-guest pipes
only) hangs like it would on Linux, until ``--timeout``.  A program with
several threads lets the others run instead (:func:`ready_events`).

``select`` is ``poll`` underneath, as in Linux's ``fs/select.c``: a bit in
the read set asks for POLLIN, in the write set for POLLOUT, in the
exception set for POLLPRI.  The signal masks of ``ppoll`` and
``pselect6`` are checked and otherwise ignored: no handler ever runs.
"""

from __future__ import annotations

import errno
import select
import struct
import time
from typing import TYPE_CHECKING, Callable

from minikvm.errors import SyscallError
from minikvm.linux_abi import NSEC_PER_SEC, SIGSET_SIZE
from minikvm.process import threads
from minikvm.process.fdtable import (ALWAYS_REPORTED, POLLERR, POLLHUP, POLLIN, POLLNVAL, POLLOUT,
                                     POLLPRI, POLLRDNORM, POLLWRNORM)
from minikvm.syscalls.base import PARTIAL, Syscall, signed32
from minikvm.syscalls.signals import deliver_due_alarm, ready, sleep, take_outside_signals
from minikvm.syscalls.timeouts import (read_select_timeout, read_timeout, write_timespec,
                                       write_timeval)

if TYPE_CHECKING:
    from minikvm.process.process import Process

#: ``struct pollfd``: int fd; short events; short revents
POLLFD = struct.Struct("<ihh")
#: the longest the host blocks before looking at the alarm and the time limit
WAIT_SLICE_SECONDS = 0.05
#: ``select``'s sets, as poll events (fs/select.c POLLIN_SET, POLLOUT_SET, POLLEX_SET)
POLLIN_SET = POLLIN | POLLRDNORM | POLLHUP | POLLERR
POLLOUT_SET = POLLOUT | POLLWRNORM | POLLERR
POLLEX_SET = POLLPRI
BITS_PER_LONG = 64


def ready_events(proc: Process, requests: list[tuple[int, int]], timeout: float | None,
                 before_wait: Callable[[], None] | None = None,
                 enough: Callable[[list[int]], bool] = any, what: str = "poll",
                 again_at_deadline: bool = False) -> list[int]:
    """``revents`` for each ``(fd, events)``, waiting up to *timeout* seconds
    (None: no limit) until at least one is non-zero — or, with *enough*,
    until ``enough(revents)`` is true (epoll's edge-triggered registrations
    are not reported again while their readiness stays the same).  *what*
    names the call in a deadlock report.

    A negative fd is ignored (``revents`` 0), an fd that is not open gets
    POLLNVAL, as in Linux.  EINTR when the run is being stopped.

    With other threads, the calling thread does not hold the host: it
    waits as :func:`minikvm.process.threads.retry_after_others` describes (its
    call made again once another thread ran or a host fd is ready; 0 at
    the deadline, which the call made again keeps).  *before_wait* then
    first writes the call's "nothing ready" results to the guest — or, with
    *again_at_deadline*, the call is made again at the deadline too, for a
    call whose results overwrite what it reads (select's sets: cleared
    before the wait, a call made again would find no fd to wait for).
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    threaded = len(proc.threads) > 1
    if threaded:
        deadline = threads.kept_deadline(proc) or deadline
    while True:
        results, host = _poll_once(proc, requests)
        if enough(results) or timeout == 0:
            return results
        now = time.monotonic()
        virtual_ns = 0 if timeout is None else round(timeout * NSEC_PER_SEC)
        if deadline is not None and now >= deadline:
            if proc.determinism is not None:      # the timeout passed on its clock too
                proc.determinism.clock.advance(virtual_ns)
            return results
        wake = _earliest_wake(proc, requests)
        if threaded:
            if before_wait is not None:
                before_wait()
            threads.retry_after_others(proc, what, lambda seconds: sleep(proc, seconds),
                                       deadline=deadline, watch=_host_watch(proc, requests),
                                       wake_at=wake, virtual_ns=virtual_ns,
                                       timeout_result=None if again_at_deadline else 0)
            return results                    # the deadline passed: nothing was ready
        slice_seconds = min([WAIT_SLICE_SECONDS] + [max(0.0, t - now) for t in (deadline, wake)
                                                    if t is not None])
        outside = proc.machine.outside
        if outside is not None:               # a signal from outside ends the slice
            host = host or select.poll()
            host.register(outside.wakeup_fd, select.POLLIN)
        if host:
            host.poll(slice_seconds * 1000)   # returns early when one is ready
        else:
            time.sleep(slice_seconds)
        take_outside_signals(proc, woken=outside is not None)
        deliver_due_alarm(proc)               # usually ends the run
        if ready(proc):
            raise SyscallError(errno.EINTR, "interrupted by a signal with a handler")
        if proc.machine.stopping:
            raise SyscallError(errno.EINTR, "interrupted: the run is being stopped")


def _earliest_wake(proc: Process, requests: list[tuple[int, int]]) -> float | None:
    """The earliest time one of the files asked about changes its readiness
    by itself (a timerfd's expiration: :meth:`OpenFile.wakes_at
    <minikvm.process.fdtable.OpenFile.wakes_at>`), so a wait looks again
    then rather than at the end of its slice."""
    wakes = []
    for fd, _ in requests:
        entry = proc.fds.entries.get(fd) if fd >= 0 else None
        wake = entry.file.wakes_at() if entry is not None else None
        if wake is not None:
            wakes.append(wake)
    return min(wakes, default=None)


def _host_watch(proc: Process, requests: list[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    """The host fds among *requests*, with the events asked of each."""
    watch: dict[int, int] = {}
    for fd, events in requests:
        entry = proc.fds.entries.get(fd) if fd >= 0 else None
        if entry is not None and entry.file.poll(events) is None:
            host_fd = entry.file.host_fd
            watch[host_fd] = watch.get(host_fd, 0) | events & ~ALWAYS_REPORTED
    return tuple(watch.items())


def _poll_once(proc: Process, requests: list[tuple[int, int]]) -> tuple[list[int],
               select.poll | None]:
    """One look at every fd without waiting; also the host poller for the
    host fds among them (None when there are none)."""
    results = [0] * len(requests)
    host_events: dict[int, int] = {}          # host fd -> every event asked of it
    host_slots: dict[int, list[int]] = {}
    for slot, (fd, events) in enumerate(requests):
        if fd < 0:
            continue
        entry = proc.fds.entries.get(fd)
        if entry is None:
            results[slot] = POLLNVAL
            continue
        ready = entry.file.poll(events)
        if ready is None:
            host_fd = entry.file.host_fd
            host_events[host_fd] = host_events.get(host_fd, 0) | events & ~ALWAYS_REPORTED
            host_slots.setdefault(host_fd, []).append(slot)
            continue
        results[slot] = ready & (events | ALWAYS_REPORTED)
    if not host_slots:
        return results, None
    host = select.poll()
    for host_fd, events in host_events.items():
        host.register(host_fd, events)
    for host_fd, ready in host.poll(0):
        for slot in host_slots.get(host_fd, ()):
            results[slot] = ready & (requests[slot][1] | ALWAYS_REPORTED)
    return results, host


# -- poll and ppoll --------------------------------------------------------------------
def _poll(proc: Process, address: int, count: int, timeout: float | None) -> int:
    count &= 0xFFFF_FFFF
    if count > proc.fds.max_fds:
        raise SyscallError(errno.EINVAL, f"{count} fds is more than RLIMIT_NOFILE")
    raw = proc.mm.read(address, POLLFD.size * count)
    requests = [(fd, events & 0xFFFF) for fd, events, _ in POLLFD.iter_unpack(raw)]

    def write(results: list[int]) -> None:
        proc.mm.write(address, b"".join(POLLFD.pack(fd, signed16(events), signed16(revents))
                                        for (fd, events), revents in zip(requests, results)))

    results = ready_events(proc, requests, timeout, lambda: write([0] * len(requests)))
    write(results)
    return sum(1 for revents in results if revents)


def signed16(value: int) -> int:
    """A ``short`` for struct.pack."""
    value &= 0xFFFF
    return value - 0x10000 if value & 0x8000 else value


def sys_poll(proc: Process, address: int, count: int, timeout_ms: int) -> int:
    """poll(2): wait for events on fds (a timeout in ms; negative: none).

    While it waits, the guest's other threads run."""
    timeout_ms = signed32(timeout_ms)
    return _poll(proc, address, count, None if timeout_ms < 0 else timeout_ms / 1000)


def _write_remaining(proc: Process, address: int, started: float, timeout: float,
                     write: Callable[[Process, int, float], None]) -> None:
    """Linux writes the time left back into a ppoll/select/pselect6 timeout
    (*write*: :func:`~minikvm.syscalls.timeouts.write_timespec` or ``_timeval``)."""
    write(proc, address, timeout - (time.monotonic() - started))


def sys_ppoll(proc: Process, address: int, count: int, timeout_address: int, sigmask: int,
              sigset_size: int) -> int:
    """ppoll(2): :func:`sys_poll` with a ``timespec`` timeout (checked and
    saturated as Linux does) that gets the time left written back."""
    if sigmask and sigset_size != SIGSET_SIZE:
        raise SyscallError(errno.EINVAL, f"sigset size {sigset_size}")
    timeout = read_timeout(proc, timeout_address)
    started = time.monotonic()
    result = _poll(proc, address, count, timeout)
    if timeout is not None:
        _write_remaining(proc, timeout_address, started, timeout, write_timespec)
    return result


# -- select and pselect6 -----------------------------------------------------------------
def _select(proc: Process, count: int, sets: tuple[int, int, int], timeout: float | None) -> int:
    """``select`` through :func:`ready_events`; the guest's sets are
    overwritten with the ready fds, and the number of bits set is returned."""
    count = signed32(count)
    if count < 0:
        raise SyscallError(errno.EINVAL, f"nfds {count}")
    count = min(count, proc.fds.max_fds)
    size = (count + BITS_PER_LONG - 1) // BITS_PER_LONG * 8
    wanted = [int.from_bytes(proc.mm.read(address, size), "little") if address else 0
              for address in sets]
    requests = []
    for fd in range(count):
        events = sum(flag for bits, flag in zip(wanted, (POLLIN_SET, POLLOUT_SET, POLLEX_SET))
                     if bits >> fd & 1)
        if events:
            if fd not in proc.fds.entries:
                raise SyscallError(errno.EBADF, f"fd {fd} is not open")
            requests.append((fd, events))

    # With other threads, a wait makes the call again, which reads the
    # sets again: they are written only when the call returns (at the
    # deadline too, the call made again finding its kept deadline passed).
    results = ready_events(proc, requests, timeout, what="select", again_at_deadline=True)
    found = [0, 0, 0]
    for (fd, _), revents in zip(requests, results):
        for which, flags in enumerate((POLLIN_SET, POLLOUT_SET, POLLEX_SET)):
            if revents & flags and wanted[which] >> fd & 1:
                found[which] |= 1 << fd
    for address, bits in zip(sets, found):
        if address:
            proc.mm.write(address, bits.to_bytes(size, "little"))
    return sum(bin(bits).count("1") for bits in found)


def sys_select(proc: Process, count: int, readfds: int, writefds: int, exceptfds: int,
               timeout_address: int) -> int:
    """select(2): wait for fds in three bit sets; the time left is written back."""
    timeout = read_select_timeout(proc, timeout_address)
    started = time.monotonic()
    result = _select(proc, count, (readfds, writefds, exceptfds), timeout)
    if timeout is not None:
        _write_remaining(proc, timeout_address, started, timeout, write_timeval)
    return result


def sys_pselect6(proc: Process, count: int, readfds: int, writefds: int, exceptfds: int,
                 timeout_address: int, sigmask_address: int) -> int:
    """The sixth argument points at ``{const sigset_t *ss; size_t ss_len}``."""
    if sigmask_address:
        mask, size = proc.mm.read_struct(sigmask_address, "<QQ")
        if mask and size != SIGSET_SIZE:
            raise SyscallError(errno.EINVAL, f"sigset size {size}")
    timeout = read_timeout(proc, timeout_address)
    started = time.monotonic()
    result = _select(proc, count, (readfds, writefds, exceptfds), timeout)
    if timeout is not None:
        _write_remaining(proc, timeout_address, started, timeout, write_timespec)
    return result


SYSCALLS = [
    Syscall(7, "poll", sys_poll, ("ptr", "uint", "int")),
    Syscall(271, "ppoll", sys_ppoll, ("ptr", "uint", "ptr", "ptr", "uint"), PARTIAL,
            "the signal mask is ignored: no handler ever runs"),
    Syscall(23, "select", sys_select, ("int", "ptr", "ptr", "ptr", "ptr")),
    Syscall(270, "pselect6", sys_pselect6, ("int", "ptr", "ptr", "ptr", "ptr", "ptr"), PARTIAL,
            "the signal mask is ignored: no handler ever runs"),
]
