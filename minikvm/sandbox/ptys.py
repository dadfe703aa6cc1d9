"""Layer 4 — pseudo-terminals the sandbox owns: new host pairs, never the host's others.

A terminal emulator (``xterm``), ``script``, ``expect`` open ``/dev/ptmx``
to get a new pseudo-terminal: a *master* they read the program's output
from and write the keys to, and a *slave* (``/dev/pts/N``) that a shell
runs on.  The line discipline between the two (echo, line editing, ``^D``)
is the kernel's; re-implementing it in Python would be a second tty layer
to get wrong.  So the sandbox's ptys are real host pairs, and the guest
reaches only those:

* the guest's ``/dev/ptmx`` makes a **new** pair (Linux's ``ptmx`` does too:
  opening it never reaches an existing terminal);
* the guest's ``/dev/pts/N`` is only a pty the sandbox made, found in
  :class:`SandboxPtys`; any other ``N`` — the user's own terminal, another
  program's — is hidden (``ENOENT``), as outside a grant.  minikvm never
  opens ``/dev/pts/N`` by name: it keeps the slave fd the pair came with.

Why a broker.  minikvm's own Landlock domain has no rule for ``/dev/ptmx``
or ``/dev/pts``: a rule for ``/dev/pts`` would let minikvm itself, were it
subverted, open the user's terminal and type into it.  The pairs are opened
instead by a *broker*, a small process started before the walls go up
(``python -m minikvm.sandbox.ptys FD``), which answers each request on a
``SOCK_SEQPACKET`` socket with the master and slave fds (``SCM_RIGHTS``).
An fd received from another process carries the rights it was opened with,
so minikvm may read, write and ``ioctl`` it; it still opens nothing new.
The broker makes at most :data:`MAX_PTYS` pairs (Linux bounds all of them
with ``kernel.pty.max``) and ends when its socket closes: when the last
process of the sandbox has ended, since a guest process forked on the host
inherits the socket.

What is left to the guest-side emulation (:mod:`minikvm.syscalls.pty`):
the lock ``unlockpt`` lifts, the controlling terminal a session leader
takes with ``TIOCSCTTY``, and the foreground process group — all the
guest's own, kept in :class:`SandboxPty`, since the guest's sessions and
groups are not the host's.  The host pair is the controlling terminal of
no host session, so ``^C`` typed into it sends no signal (a limitation).
"""

from __future__ import annotations

import array
import errno
import fcntl
import os
import socket
import subprocess
import sys
from dataclasses import dataclass

from minikvm.errors import MinikvmError

#: The most pairs one sandbox may make (each is two host fds and a kernel
#: tty); Linux answers ``ENOSPC`` past ``kernel.pty.max``, and so does the guest's.
MAX_PTYS = 32

#: ``TIOCGPTN`` (asm-generic/ioctls.h ``_IOR('T', 0x30, unsigned int)``): the pty's number.
TIOCGPTN = 0x80045430

#: What the broker is asked, and what it says when it will make no more.
REQUEST = b"pty"
FULL = b"full"


class PtyError(MinikvmError):
    """The pty broker could not be started, or stopped answering."""


@dataclass
class SandboxPty:
    """One pair the sandbox made: the host fds minikvm holds, and the guest's view of it."""

    #: the host's number, the guest's ``N`` of ``/dev/pts/N`` (``TIOCGPTN``)
    number: int
    #: minikvm's fd of the master; the guest's ``/dev/ptmx`` fd is a dup
    master_fd: int
    #: minikvm's fd of the slave; each guest open of ``/dev/pts/N`` is a dup
    slave_fd: int
    #: ``TIOCSPTLCK``: a new pair is locked until ``unlockpt``; opening the
    #: slave while locked is ``EIO`` (as Linux)
    locked: bool = True
    #: the guest session whose controlling terminal it is (0: none)
    session: int = 0
    #: the guest process group in the foreground (``tcsetpgrp``; 0: none)
    foreground: int = 0

    @property
    def path(self) -> str:
        return f"/dev/pts/{self.number}"


class SandboxPtys:
    """The client of the broker and the table of the pairs it gave."""

    def __init__(self, channel: socket.socket, broker: subprocess.Popen) -> None:
        self.channel = channel
        self.broker = broker
        self.pairs: dict[int, SandboxPty] = {}

    @classmethod
    def start(cls) -> "SandboxPtys":
        """Start the broker (before the walls go up)."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            broker = subprocess.Popen(
                [sys.executable, "-m", "minikvm.sandbox.ptys", str(theirs.fileno())],
                pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, start_new_session=True,
                env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
        except OSError as error:
            ours.close()
            raise PtyError(f"cannot start the pty broker: {error.strerror}") from None
        finally:
            theirs.close()
        os.set_inheritable(ours.fileno(), False)
        return cls(ours, broker)

    def open_pair(self) -> SandboxPty:
        """A new pair from the broker; ``ENOSPC`` past :data:`MAX_PTYS`.

        A guest process forked on the host shares the socket: each request
        and each answer is one packet, so two processes asking at once each
        get a whole pair (which one is no matter: every pair is new)."""
        try:
            self.channel.send(REQUEST)
            message, ancillary, _, _ = self.channel.recvmsg(
                16, socket.CMSG_SPACE(2 * array.array("i").itemsize))
        except OSError as error:
            raise OSError(errno.EIO, f"the pty broker did not answer: {error.strerror}") from None
        fds = array.array("i")
        for level, kind, data in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(data[:len(data) - len(data) % fds.itemsize])
        if message == FULL or len(fds) != 2:
            for fd in fds:
                os.close(fd)
            raise OSError(errno.ENOSPC, f"the sandbox has made its {MAX_PTYS} ptys")
        master_fd, slave_fd = fds
        number = int.from_bytes(fcntl.ioctl(master_fd, TIOCGPTN, bytes(4)), "little")
        pair = SandboxPty(number, master_fd, slave_fd)
        self.pairs[number] = pair
        return pair

    def find(self, number: int) -> SandboxPty | None:
        """The sandbox's pair number *number*; None for any other pty."""
        return self.pairs.get(number)

    def controlling(self, session: int) -> SandboxPty | None:
        """The pair that is guest session *session*'s controlling terminal."""
        return next((pair for pair in self.pairs.values() if pair.session == session), None)

    def close(self) -> None:
        """Close minikvm's fds; the broker ends when no process holds the socket."""
        for pair in self.pairs.values():
            os.close(pair.master_fd)
            os.close(pair.slave_fd)
        self.pairs.clear()
        self.channel.close()


# --- the broker -----------------------------------------------------------------


def serve(fd: int) -> int:
    """The broker's body: a new pair for each request, until the socket closes."""
    channel = socket.socket(fileno=fd)
    made = 0
    while True:
        try:
            request = channel.recv(16)
        except InterruptedError:
            continue
        except OSError:
            return 0
        if not request:
            return 0
        if made >= MAX_PTYS:
            channel.send(FULL)
            continue
        master_fd, slave_fd = os.openpty()     # /dev/ptmx, O_NOCTTY: never our terminal
        made += 1
        try:
            channel.sendmsg([b"ok"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                       array.array("i", [master_fd, slave_fd]))])
        except OSError:
            return 0
        finally:
            os.close(master_fd)
            os.close(slave_fd)


if __name__ == "__main__":
    sys.exit(serve(int(sys.argv[1])))
