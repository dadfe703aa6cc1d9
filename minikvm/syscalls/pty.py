"""Layer 6 — ``/dev/ptmx`` and ``/dev/pts/N``: the pseudo-terminals the sandbox makes.

The pairs are host pairs from the pty broker (:mod:`minikvm.sandbox.ptys`,
which says why), so reads, writes, the line discipline and the terminal
attributes (``TCGETS``, ``TIOCSWINSZ`` …, :mod:`minikvm.syscalls.terminal`)
are the host kernel's.  This module answers what is the guest's own:

* ``open("/dev/ptmx")``: a new pair, the guest fd its master (``EACCES``
  when the policy gives no ptys; ``ENOSPC`` past the sandbox's limit);
* ``open("/dev/pts/N")``: the slave of the sandbox's pair ``N`` (``EIO``
  while it is locked, as Linux); any other ``N`` goes on to the policy,
  which hides it — the user's terminal is never reached by name;
* on the master, ``TIOCGPTN`` (its number: glibc's ``ptsname``),
  ``TIOCSPTLCK``/``TIOCGPTLCK`` (``unlockpt``) and ``TIOCGPTPEER`` (the
  slave without a name: glibc's ``openpty``);
* on either end, the controlling terminal and the foreground group, in the
  guest's sessions and groups: ``TIOCSCTTY`` by a session leader (or the
  first open without ``O_NOCTTY`` by one that has none), ``TIOCGSID``,
  ``TIOCNOTTY``, ``TIOCGPGRP``/``TIOCSPGRP``; and ``/dev/tty`` of a session
  whose controlling terminal it is.
"""

from __future__ import annotations

import errno
import os
import re
from typing import TYPE_CHECKING

from minikvm.errors import SyscallError
from minikvm.linux_abi import (O_ACCMODE, O_CLOEXEC, O_NOCTTY, O_NONBLOCK, TIOCGPGRP, TIOCGSID,
                               TIOCNOTTY, TIOCSCTTY, TIOCSPGRP)
from minikvm.process.fdtable import HostFile, OpenFile
from minikvm.sandbox.ptys import TIOCGPTN, SandboxPty

if TYPE_CHECKING:
    from minikvm.process.process import Process

#: The guest names of the multiplexer: a new pair at each open (pts(4)).
PTMX_PATHS = ("/dev/ptmx", "/dev/pts/ptmx")
#: A slave's name.
SLAVE_PATH = re.compile(r"/dev/pts/(\d{1,9})")

# asm-generic/ioctls.h: the pty requests of the master
#: ``_IOW('T', 0x31, int)``: lock (non-zero) or unlock the slave.
TIOCSPTLCK = 0x40045431
#: ``_IOR('T', 0x39, int)``: whether the slave is locked.
TIOCGPTLCK = 0x80045439
#: ``_IO('T', 0x41)``: open the slave, the argument its open flags.
TIOCGPTPEER = 0x5441
#: Every request this module answers on a sandbox pty.
PTY_REQUESTS = frozenset({TIOCGPTN, TIOCSPTLCK, TIOCGPTLCK, TIOCGPTPEER,
                          TIOCSCTTY, TIOCGSID, TIOCNOTTY, TIOCGPGRP, TIOCSPGRP})
#: The open flags ``TIOCGPTPEER`` takes (drivers/tty/pty.c ``ptm_open_peer``).
PEER_FLAGS = O_ACCMODE | O_NOCTTY | O_NONBLOCK | O_CLOEXEC


class PtyFile(HostFile):
    """One end of a sandbox pty: a dup of minikvm's fd of that end."""
    kind = "pty"

    def __init__(self, pair: SandboxPty, master: bool, status_flags: int) -> None:
        super().__init__(os.dup(pair.master_fd if master else pair.slave_fd),
                         "/dev/ptmx" if master else pair.path, status_flags)
        self.pair = pair
        self.master = master

    def link_target(self) -> str:
        return "/dev/ptmx" if self.master else self.pair.path


def pty_open(proc: Process, path: str, flags: int) -> OpenFile | None:
    """The pty file ``open(path, flags)`` names, or None when *path* is no
    pty of the sandbox's (the policy then answers, hiding it)."""
    ptys = proc.policy.ptys
    if path in PTMX_PATHS:
        if ptys is None:
            raise proc.policy.refuse("openat", path, reason="the policy gives no ptys "
                                     "(run --allow-pty, or --x11)")
        try:
            pair = ptys.open_pair()
        except OSError as error:
            raise SyscallError(error.errno or errno.EIO, str(error.strerror)) from None
        return PtyFile(pair, True, flags & (O_ACCMODE | O_NONBLOCK))
    match = SLAVE_PATH.fullmatch(path)
    pair = ptys.find(int(match.group(1))) if match and ptys is not None else None
    if pair is None:
        return None
    return open_slave(proc, pair, flags)


def open_slave(proc: Process, pair: SandboxPty, flags: int) -> PtyFile:
    """The slave of *pair*, as an open of ``/dev/pts/N`` with *flags* gives it."""
    if pair.locked:
        raise SyscallError(errno.EIO, f"{pair.path} is locked (unlockpt first)")
    if not flags & O_NOCTTY and proc.sid == proc.pid and proc.policy.ptys is not None \
            and proc.policy.ptys.controlling(proc.sid) is None and not pair.session:
        _take(proc, pair)        # a session leader's first terminal (tty_open)
    return PtyFile(pair, False, flags & (O_ACCMODE | O_NONBLOCK))


def stat_of_name(proc: Process, path: str) -> os.stat_result | None:
    """``stat("/dev/pts/N")`` of a sandbox pty: its slave's (what
    ``ttyname`` compares with the fd's); None for any other path."""
    ptys = proc.policy.ptys
    match = SLAVE_PATH.fullmatch(os.path.normpath(os.path.join(proc.cwd, path)))
    pair = ptys.find(int(match.group(1))) if match and ptys is not None else None
    return os.fstat(pair.slave_fd) if pair is not None else None


def controlling_pty(proc: Process, flags: int) -> PtyFile | None:
    """``open("/dev/tty")`` in a session whose controlling terminal is a
    sandbox pty: its slave; None otherwise."""
    ptys = proc.policy.ptys
    pair = ptys.controlling(proc.sid) if ptys is not None else None
    return PtyFile(pair, False, flags & (O_ACCMODE | O_NONBLOCK)) if pair else None


def handles(file: OpenFile, request: int) -> bool:
    """Whether :func:`pty_ioctl` answers *request* on *file*."""
    return isinstance(file, PtyFile) and request in PTY_REQUESTS


def pty_ioctl(proc: Process, file: PtyFile, request: int, argument: int) -> int:
    """ioctl(2) for a request of :data:`PTY_REQUESTS` on a sandbox pty."""
    pair = file.pair
    if request in (TIOCGPTN, TIOCSPTLCK, TIOCGPTLCK, TIOCGPTPEER) and not file.master:
        raise SyscallError(errno.ENOTTY, f"{pair.path}: a pty slave, not its master")
    if request == TIOCGPTN:
        proc.mm.write_struct(argument, "<I", pair.number)
        return 0
    if request == TIOCSPTLCK:
        (lock,) = proc.mm.read_struct(argument, "<i")
        pair.locked = lock != 0
        return 0
    if request == TIOCGPTLCK:
        proc.mm.write_struct(argument, "<i", int(pair.locked))
        return 0
    if request == TIOCGPTPEER:
        flags = argument & 0xFFFF_FFFF
        if flags & ~PEER_FLAGS:
            raise SyscallError(errno.EINVAL, f"TIOCGPTPEER flags {flags:#x}")
        proc.fds.check_room()
        return proc.fds.install(open_slave(proc, pair, flags), cloexec=bool(flags & O_CLOEXEC))
    if request == TIOCSCTTY:
        if pair.session == proc.sid:
            return 0
        if proc.sid != proc.pid:
            raise SyscallError(errno.EPERM, "only a session leader may take a controlling "
                                            "terminal")
        if proc.policy.ptys.controlling(proc.sid) is not None:
            raise SyscallError(errno.EPERM, "the session has a controlling terminal already")
        if pair.session:
            raise SyscallError(errno.EPERM, f"{pair.path} is another session's terminal")
        _take(proc, pair)
        return 0
    if pair.session != proc.sid:
        raise SyscallError(errno.ENOTTY, f"{pair.path} is not the controlling terminal "
                                         "of the caller's session")
    if request == TIOCGSID:
        proc.mm.write_struct(argument, "<i", pair.session)
        return 0
    if request == TIOCGPGRP:
        proc.mm.write_struct(argument, "<i", pair.foreground)
        return 0
    if request == TIOCSPGRP:
        (group,) = proc.mm.read_struct(argument, "<i")
        if group < 0:
            raise SyscallError(errno.EINVAL, f"process group {group}")
        if group != proc.pgid and not (proc.family is not None and any(
                record.pgid == group and record.sid == proc.sid
                for record in proc.family.table.records())):
            raise SyscallError(errno.EPERM, f"no process group {group} in the session")
        pair.foreground = group
        return 0
    # TIOCNOTTY: a session leader gives its terminal up (its group's own
    # SIGHUP is not sent: the sandbox's ptys signal nobody, see minikvm.sandbox.ptys)
    if proc.sid == proc.pid:
        pair.session = pair.foreground = 0
    return 0


def _take(proc: Process, pair: SandboxPty) -> None:
    pair.session = proc.sid
    pair.foreground = proc.pgid
