"""Layer 7 — signal numbers as gdb's remote protocol spells them.

Stop replies (``T05``, ``X0b``) and resume packets (``C0b``) carry gdb's
own signal numbers, ``enum gdb_signal`` of gdb's
``include/gdb/signals.def``, not the host's.  They agree with Linux for
1–6, 8, 9, 11 and 13–15 and differ for the rest (``SIGBUS`` is 7 on
Linux, ``GDB_SIGNAL_BUS`` 10; ``SIGUSR1`` is 10 on Linux, 30 for gdb), so
every signal goes through this table both ways."""

from __future__ import annotations

import signal

#: Linux signal → GDB_SIGNAL_* value (signals.def).
TO_GDB: dict[int, int] = {
    signal.SIGHUP: 1, signal.SIGINT: 2, signal.SIGQUIT: 3, signal.SIGILL: 4,
    signal.SIGTRAP: 5, signal.SIGABRT: 6, signal.SIGFPE: 8, signal.SIGKILL: 9,
    signal.SIGBUS: 10, signal.SIGSEGV: 11, signal.SIGSYS: 12, signal.SIGPIPE: 13,
    signal.SIGALRM: 14, signal.SIGTERM: 15, signal.SIGURG: 16, signal.SIGSTOP: 17,
    signal.SIGTSTP: 18, signal.SIGCONT: 19, signal.SIGCHLD: 20, signal.SIGTTIN: 21,
    signal.SIGTTOU: 22, signal.SIGIO: 23, signal.SIGXCPU: 24, signal.SIGXFSZ: 25,
    signal.SIGVTALRM: 26, signal.SIGPROF: 27, signal.SIGWINCH: 28, signal.SIGUSR1: 30,
    signal.SIGUSR2: 31, signal.SIGPWR: 32,
}

#: GDB_SIGNAL_* value → Linux signal.
FROM_GDB: dict[int, int] = {number: linux for linux, number in TO_GDB.items()}

#: GDB_SIGNAL_UNKNOWN: what a signal with no gdb number is reported as.
GDB_SIGNAL_UNKNOWN = 143


def to_gdb(linux_signal: int) -> int:
    """gdb's number for *linux_signal*."""
    return TO_GDB.get(linux_signal, GDB_SIGNAL_UNKNOWN)


def from_gdb(gdb_signal: int) -> int | None:
    """The Linux signal for gdb's *gdb_signal*; None for 0 (no signal) or
    one Linux does not have."""
    return FROM_GDB.get(gdb_signal)
