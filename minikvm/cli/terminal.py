"""Layer 8 — the user's terminal, given back as it was however the run ends.

A program that puts the terminal in raw mode (an editor, a shell's line
editor, ``stty raw``) sets it back when it exits cleanly; one that
crashes, is killed or runs out of time does not, and natively the user is
left with a terminal that echoes nothing.  minikvm passes the guest's
``TCSETS*`` through to the real terminal
(:mod:`minikvm.syscalls.terminal`), so it owes the user the same clean-up
a careful shell does: :meth:`SavedTerminals.save` records the attributes
(``struct termios``) of every terminal the run was given — its stdin,
stdout, stderr, and the controlling terminal (``/dev/tty``), each device
once — before the program starts, and :meth:`SavedTerminals.restore` puts
them back at the end, whatever the end was: an exit, a crash, a fatal
signal, the time limit, a Python exception in minikvm itself (it runs in a
``finally``).  Output the program suspended (``tcflow(TCOOFF)``) is
resumed too.

Only SIGKILL of minikvm itself escapes this, as it escapes every program.
"""

from __future__ import annotations

import os
import signal
import termios
from dataclasses import dataclass, field
from typing import Sequence

#: The controlling terminal's name in every process.
CONTROLLING_TERMINAL = "/dev/tty"


@dataclass
class SavedTerminals:
    """``(host fd, attributes)`` of each terminal, as they were at the start."""
    saved: list[tuple[int, list]] = field(default_factory=list)
    #: fds this object opened (``/dev/tty``) and closes after restoring.
    opened: list[int] = field(default_factory=list)

    @classmethod
    def save(cls, fds: Sequence[int] = (0, 1, 2)) -> "SavedTerminals":
        """Record the terminals among *fds* and the controlling terminal.
        Called before the walls go up (``/dev/tty`` is not in any grant)."""
        terminals = cls()
        devices: set[int] = set()
        candidates = list(fds)
        try:
            tty = os.open(CONTROLLING_TERMINAL, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
        except OSError:
            tty = -1                          # no controlling terminal: nothing to add
        if tty >= 0:
            terminals.opened.append(tty)
            candidates.append(tty)
        for fd in candidates:
            try:
                if not os.isatty(fd):
                    continue
                device = os.fstat(fd).st_rdev
                if device in devices:
                    continue
                terminals.saved.append((fd, termios.tcgetattr(fd)))
                devices.add(device)
            except (OSError, termios.error):
                continue
        return terminals

    def restore(self) -> None:
        """Put every saved terminal back as it was (and resume its output).
        SIGTTOU is ignored meanwhile: minikvm may be a background job by
        now (``bg``), and the kernel would stop it for changing the terminal."""
        previous = signal.signal(signal.SIGTTOU, signal.SIG_IGN)
        try:
            for fd, attributes in self.saved:
                try:
                    termios.tcflow(fd, termios.TCOON)
                    termios.tcsetattr(fd, termios.TCSANOW, attributes)
                except (OSError, termios.error):
                    pass      # the terminal went away (a hang-up): nothing to restore
        finally:
            signal.signal(signal.SIGTTOU, previous)
        for fd in self.opened:
            try:
                os.close(fd)
            except OSError:
                pass
        self.saved.clear()
        self.opened.clear()
