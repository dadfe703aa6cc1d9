"""Layer 6 — terminal ioctls: what a shell and an editor ask of the terminal they run on.

When a guest fd is a terminal — the stdin, stdout or stderr ``minikvm
run`` was given, or the controlling terminal opened as ``/dev/tty`` — the
program may use it as natively: read and set its attributes (``stty
raw``, an editor's raw mode), its window size, its foreground process
group, flush it.  Each request goes to the *host* terminal, its struct
copied through the guest's checked memory (:meth:`proc.mm.read
<minikvm.machine.mm.AddressSpace.read>`, never a guest pointer handed to
the host): ``struct termios`` as the kernel has it
(:data:`~minikvm.linux_abi.TERMIOS`, 36 bytes, not glibc's 60), ``struct
termios2`` (glibc 2.42's ``tcgetattr``), ``struct winsize``, an ``int``.
The user's terminal is put back as it was when the run ends, however it
ends (:mod:`minikvm.cli.terminal`).

Refused, always, whatever the grants: ``TIOCSTI`` (push a byte into the
terminal's input, as if the user typed it — a sandboxed program could
type a command into the user's shell, to run after it exits),
``TIOCLINUX`` (the Linux console's multiplexer, whose selection paste
does the same) and ``TIOCCONS`` (take the system console's output):
``EPERM``, recorded in the policy's denial log, so ``--audit`` names
them.  The host's seccomp filter refuses the same requests to minikvm
itself (:mod:`minikvm.sandbox.seccomp`), in case a bug let one through.

Process groups are the guest's (:func:`guest_process_group`): the program
is process :attr:`Process.pgid <minikvm.process.process.Process>` of
session :attr:`Process.sid`, whatever the host's numbers are.  With one
process in the sandbox there are two groups it can see: its own (the
terminal's foreground when minikvm is) and the shell's.

``TIOCNOTTY`` and ``TIOCSCTTY`` change nothing on the host: giving up the
controlling terminal would detach minikvm itself, and taking one needs a
session leader, which the guest is not; both answer as Linux answers a
process that is not a session leader.
"""

from __future__ import annotations

import errno
import fcntl
import os
from typing import TYPE_CHECKING

from minikvm.errors import SyscallError
from minikvm.linux_abi import (FIOCLEX, FIONBIO, FIONCLEX, FIONREAD, O_NONBLOCK, TCFLSH, TCGETS,
                               TCGETS2, TCIFLUSH, TCIOFLUSH, TCION, TCOOFF, TCSETS, TCSETS2,
                               TCSETSF, TCSETSF2, TCSETSW, TCSETSW2, TCXONC, TERMIOS, TERMIOS2,
                               TIOCCONS, TIOCGPGRP, TIOCGSID, TIOCGWINSZ, TIOCLINUX, TIOCNOTTY,
                               TIOCOUTQ, TIOCSCTTY, TIOCSPGRP, TIOCSTI, TIOCSWINSZ, WINSIZE)
from minikvm.process.fdtable import OpenFile
from minikvm.syscalls.base import signed32

if TYPE_CHECKING:
    from minikvm.process.process import Process

#: Requests that would let the program act as the user at the keyboard.
REFUSED_REQUESTS = {
    TIOCSTI: "TIOCSTI: a sandboxed program may not push input into the user's terminal",
    TIOCLINUX: "TIOCLINUX: a sandboxed program may not use the console's multiplexer "
               "(its selection paste types into the terminal)",
    TIOCCONS: "TIOCCONS: a sandboxed program may not take the system console's output",
}
#: Requests that read the attributes, and the struct each copies out.
GET_ATTRIBUTES = {TCGETS: TERMIOS, TCGETS2: TERMIOS2}
#: Requests that set them, and the struct each copies in.
SET_ATTRIBUTES = {TCSETS: TERMIOS, TCSETSW: TERMIOS, TCSETSF: TERMIOS,
                  TCSETS2: TERMIOS2, TCSETSW2: TERMIOS2, TCSETSF2: TERMIOS2}
#: Requests that take or give an ``int``: passed on to the host terminal.
INT_REQUESTS = (TIOCOUTQ,)
#: Every request this module answers (:func:`handles`).
TERMINAL_REQUESTS = frozenset({*REFUSED_REQUESTS, *GET_ATTRIBUTES, *SET_ATTRIBUTES, *INT_REQUESTS,
                               TIOCGWINSZ, TIOCSWINSZ, TIOCGPGRP, TIOCSPGRP, TIOCSCTTY,
                               TIOCNOTTY, TIOCGSID, TCFLSH, TCXONC})
INT_SIZE = 4


def handles(request: int) -> bool:
    """Whether *request* is a terminal ioctl this module answers."""
    return request in TERMINAL_REQUESTS


def terminal_fd(file: OpenFile) -> int:
    """The host fd of *file* when it is a terminal; ENOTTY otherwise (a
    pipe, a granted file, a device of minikvm's), as Linux answers."""
    if file.host_fd is None or not os.isatty(file.host_fd):
        raise SyscallError(errno.ENOTTY, "not a terminal")
    return file.host_fd


def guest_process_group(proc: Process, host_group: int) -> int:
    """The guest's name for a host process group: the one minikvm is in is
    the program's own (:attr:`Process.pgid`); any other (the shell's, when
    minikvm runs in the background) is the session's leader's,
    :attr:`Process.sid`.  The one place where host and guest process
    groups meet: a sandbox with many processes maps its groups here."""
    if host_group != os.getpgrp():
        return proc.sid
    if proc.family is not None:    # the group a sandbox's process made the foreground
        return proc.family.table.foreground() or proc.family.root_group
    return proc.pgid


def terminal_ioctl(proc: Process, fd: int, file: OpenFile, request: int, argument: int) -> int:
    """ioctl(2) for a request of :data:`TERMINAL_REQUESTS` on *file*."""
    if request in REFUSED_REQUESTS:
        raise proc.policy.refuse("ioctl", f"fd {fd}", reason=REFUSED_REQUESTS[request])
    host_fd = terminal_fd(file)
    if request in GET_ATTRIBUTES:
        layout = GET_ATTRIBUTES[request]
        proc.mm.views(argument, layout.size, write=True)     # EFAULT before asking the host
        proc.mm.write(argument, fcntl.ioctl(host_fd, request, bytes(layout.size)))
        return 0
    if request in SET_ATTRIBUTES:
        layout = SET_ATTRIBUTES[request]
        fcntl.ioctl(host_fd, request, proc.mm.read(argument, layout.size))
        return 0
    if request == TIOCGWINSZ:
        proc.mm.views(argument, WINSIZE.size, write=True)
        proc.mm.write(argument, fcntl.ioctl(host_fd, request, bytes(WINSIZE.size)))
        return 0
    if request == TIOCSWINSZ:
        # The kernel sends SIGWINCH to the foreground group: minikvm's,
        # which hands it to the program (minikvm.machine.outside).
        fcntl.ioctl(host_fd, request, proc.mm.read(argument, WINSIZE.size))
        return 0
    if request == TIOCGPGRP:
        proc.mm.write_struct(argument, "<i", guest_process_group(proc, os.tcgetpgrp(host_fd)))
        return 0
    if request == TIOCSPGRP:
        return _set_foreground(proc, host_fd, argument)
    if request == TIOCGSID:
        if os.getsid(0) != _host_session(host_fd):
            raise SyscallError(errno.ENOTTY, "not the controlling terminal of the session")
        proc.mm.write_struct(argument, "<i", proc.sid)
        return 0
    if request == TIOCSCTTY:
        if os.getsid(0) == _host_session(host_fd):
            return 0      # already the session's controlling terminal: nothing to do
        raise SyscallError(errno.EPERM, "only a session leader may take a controlling "
                                        "terminal, and the program is not one")
    if request == TIOCNOTTY:
        if os.getsid(0) != _host_session(host_fd):
            raise SyscallError(errno.ENOTTY, "not the controlling terminal")
        return 0          # a process that is not a session leader: nothing else happens
    if request == TCFLSH:
        queue = signed32(argument)
        if queue not in (TCIFLUSH, TCIFLUSH + 1, TCIOFLUSH):
            raise SyscallError(errno.EINVAL, f"TCFLSH queue {queue}")
        fcntl.ioctl(host_fd, request, queue)
        return 0
    if request == TCXONC:
        action = signed32(argument)
        if not TCOOFF <= action <= TCION:
            raise SyscallError(errno.EINVAL, f"TCXONC action {action}")
        fcntl.ioctl(host_fd, request, action)
        return 0
    # TIOCOUTQ: an int out
    proc.mm.views(argument, INT_SIZE, write=True)
    proc.mm.write(argument, fcntl.ioctl(host_fd, request, bytes(INT_SIZE)))
    return 0


def _host_session(host_fd: int) -> int:
    """The host session whose controlling terminal *host_fd* is (-1: none)."""
    try:
        return int.from_bytes(fcntl.ioctl(host_fd, TIOCGSID, bytes(INT_SIZE)), "little",
                              signed=True)
    except OSError:
        return -1


def _set_foreground(proc: Process, host_fd: int, argument: int) -> int:
    """TIOCSPGRP: make a process group the terminal's foreground.  The
    program may make its own group the foreground (an interactive shell
    does, at start); the shell's group is outside the sandbox (EPERM), any
    other number is no group (ESRCH)."""
    (group,) = proc.mm.read_struct(argument, "<i")
    if group == proc.pgid or proc.family is not None and group > 0 and any(
            record.pgid == group and record.sid == proc.sid
            for record in proc.family.table.records()):
        # On the host, minikvm's group holds the terminal; which of the
        # sandbox's groups has it is the table's (minikvm.tree.table):
        # only that group takes Ctrl-C and Ctrl-Z (signals.take_outside_signals).
        os.tcsetpgrp(host_fd, os.getpgrp())
        if proc.family is not None:
            proc.family.table.set_foreground(group)
        return 0
    if group == proc.sid:
        raise SyscallError(errno.EPERM, f"process group {group} is outside the sandbox")
    if group < 0:
        raise SyscallError(errno.EINVAL, f"process group {group}")
    raise SyscallError(errno.ESRCH, f"no process group {group} in the sandbox")


def generic_ioctl(proc: Process, fd: int, file: OpenFile, request: int,
                  argument: int) -> int | None:
    """The ioctls Linux answers for every fd (fs/ioctl.c ``do_vfs_ioctl``):
    ``FIOCLEX``/``FIONCLEX`` (close-on-exec), ``FIONBIO`` (non-blocking
    mode: the guest's flag, honoured by minikvm's waits; the host fd stays
    as it is, shared with the user's shell), and ``FIONREAD`` on a host
    terminal, pipe, socket or regular file.  None for any other request."""
    if request in (FIOCLEX, FIONCLEX):
        proc.fds.entries[fd].cloexec = request == FIOCLEX
        return 0
    if request == FIONBIO:
        (on,) = proc.mm.read_struct(argument, "<i")
        file.status_flags = file.status_flags | O_NONBLOCK if on else \
            file.status_flags & ~O_NONBLOCK
        return 0
    if request == FIONREAD and file.host_fd is not None:
        proc.mm.views(argument, INT_SIZE, write=True)
        try:
            answer = fcntl.ioctl(file.host_fd, request, bytes(INT_SIZE))
        except OSError as error:
            raise SyscallError(error.errno or errno.ENOTTY, "FIONREAD") from None
        proc.mm.write(argument, answer)
        return 0
    return None
