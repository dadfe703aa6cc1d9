"""Layer 0 — the Linux system-call ABI: the flags, numbers and struct layouts
a guest program passes to the kernel, as the x86-64 kernel headers spell them.

:mod:`minikvm.ioctl` mirrors ``<linux/kvm.h>`` for the host side; this module
mirrors the guest side (gVisor keeps the same in ``pkg/abi/linux``).  Every
value is written out rather than taken from Python's ``os`` module, because
the guest uses the *kernel's* values: glibc's ``O_LARGEFILE`` is 0 in 64-bit
user space, and ``os`` lacks many of these names.  Each group names the header
it comes from; ``tests/test_linux_abi.py`` compiles a C program against the
installed headers and compares every number and every struct size here.

Errno values are not here: Python's :mod:`errno` has them, with the kernel's
numbers on Linux.
"""

from __future__ import annotations

import struct

# --- open(2) flags (include/uapi/asm-generic/fcntl.h) ------------------------
O_ACCMODE = 0o3
O_RDONLY = 0o0
O_WRONLY = 0o1
O_RDWR = 0o2
O_CREAT = 0o100
O_EXCL = 0o200
O_NOCTTY = 0o400
O_TRUNC = 0o1000
O_APPEND = 0o2000
O_NONBLOCK = 0o4000
O_DSYNC = 0o10000
FASYNC = 0o20000
O_DIRECT = 0o40000
O_LARGEFILE = 0o100000
O_DIRECTORY = 0o200000
O_NOFOLLOW = 0o400000
O_NOATIME = 0o1000000
O_CLOEXEC = 0o2000000
O_SYNC = 0o4000000 | O_DSYNC
O_PATH = 0o10000000
#: ``__O_TMPFILE | O_DIRECTORY``: the value *contains* O_DIRECTORY's bit, so
#: "is O_TMPFILE set?" is ``flags & O_TMPFILE == O_TMPFILE``, never ``flags & O_TMPFILE``.
O_TMPFILE = 0o20000000 | O_DIRECTORY

# --- *at() flags (include/uapi/linux/fcntl.h) --------------------------------
AT_FDCWD = -100
AT_SYMLINK_NOFOLLOW = 0x100
AT_REMOVEDIR = 0x200
AT_EACCESS = 0x200             # faccessat: same bit as AT_REMOVEDIR, other calls
AT_SYMLINK_FOLLOW = 0x400
AT_NO_AUTOMOUNT = 0x800
AT_EMPTY_PATH = 0x1000

# --- execve(2) (include/uapi/linux/binfmts.h) ---------------------------------
#: How much of a program file the kernel reads to choose its format
#: (``bprm->buf``): a ``#!`` line longer than this is cut.
BINPRM_BUF_SIZE = 256
#: The most strings argv or envp may hold.
MAX_ARG_STRINGS = 0x7FFF_FFFF

# --- fcntl(2) commands (include/uapi/asm-generic/fcntl.h, linux/fcntl.h) -----
F_DUPFD = 0
F_GETFD = 1
F_SETFD = 2
F_GETFL = 3
F_SETFL = 4
F_GETLK = 5
F_SETLK = 6
F_SETLKW = 7
F_OFD_GETLK = 36
F_OFD_SETLK = 37
F_OFD_SETLKW = 38
F_DUPFD_CLOEXEC = 1030
F_GETPIPE_SZ = 1032
F_ADD_SEALS = 1033
F_GET_SEALS = 1034
FD_CLOEXEC = 1

# --- file modes (include/uapi/linux/stat.h) ----------------------------------
#: S_IALLUGO: permissions, set-user-ID, set-group-ID and sticky bits.
MODE_BITS = 0o7777

# --- time (include/vdso/time64.h) --------------------------------------------
NSEC_PER_SEC = 1_000_000_000
USEC_PER_SEC = 1_000_000
#: The largest kernel time, in nanoseconds (include/linux/ktime.h KTIME_MAX,
#: ~292 years): timeouts beyond it saturate to it ("wait forever").
KTIME_MAX = (1 << 63) - 1

# --- signals (arch/x86/include/uapi/asm/signal.h) ----------------------------
#: The kernel's sigset_t: 64 signals, one bit each.  rt_sig* calls with any
#: other ``sigsetsize`` fail with EINVAL.
SIGSET_SIZE = 8

# --- prctl(2) options (include/uapi/linux/prctl.h) ---------------------------
PR_SET_PDEATHSIG = 1
PR_GET_PDEATHSIG = 2

# --- paths (include/uapi/linux/limits.h) -------------------------------------
#: The longest path a system call takes, with its NUL (longer: ENAMETOOLONG);
#: also Linux's limit on a program's ``PT_INTERP`` (fs/binfmt_elf.c).
PATH_MAX = 4096

# --- the process ABI (System V x86-64 psABI §3.4.1, §3.2.2) ------------------
#: RSP is a multiple of 16 at process entry and before every call.
STACK_ALIGNMENT = 16

# --- terminal ioctls (include/uapi/asm-generic/ioctls.h) ------------------------
# The requests a shell and an editor make on a terminal (minikvm.syscalls.terminal).
TCGETS = 0x5401
TCSETS = 0x5402
TCSETSW = 0x5403
TCSETSF = 0x5404
TCXONC = 0x540A
TCFLSH = 0x540B
TIOCSCTTY = 0x540E
TIOCGPGRP = 0x540F
TIOCSPGRP = 0x5410
TIOCOUTQ = 0x5411
#: Push a byte into the terminal's *input*, as if typed: refused, always.
TIOCSTI = 0x5412
TIOCGWINSZ = 0x5413
TIOCSWINSZ = 0x5414
FIONREAD = 0x541B
#: The Linux console's multiplexer (selection paste into the input among
#: its subcodes): refused, always.
TIOCLINUX = 0x541C
#: Redirect the system console's output to this terminal: refused, always.
TIOCCONS = 0x541D
FIONBIO = 0x5421
TIOCNOTTY = 0x5422
TCGETS2 = 0x802C542A      # _IOR('T', 0x2A, struct termios2)
TCSETS2 = 0x402C542B      # _IOW('T', 0x2B, struct termios2)
TCSETSW2 = 0x402C542C
TCSETSF2 = 0x402C542D
TIOCGSID = 0x5429
FIONCLEX = 0x5450
FIOCLEX = 0x5451
# tcflush(3)'s and tcflow(3)'s arguments (include/uapi/asm-generic/termbits.h)
TCIFLUSH = 0
TCOFLUSH = 1
TCIOFLUSH = 2
TCOOFF = 0
TCOON = 1
TCIOFF = 2
TCION = 3

# --- struct layouts, x86-64 ---------------------------------------------------
#: ``struct timespec`` (include/uapi/linux/time_types.h ``__kernel_timespec``).
TIMESPEC = struct.Struct("<qq")
#: ``struct timeval`` (include/uapi/linux/time_types.h ``__kernel_old_timeval``).
TIMEVAL = struct.Struct("<qq")
#: ``struct itimerspec`` (include/uapi/linux/time_types.h ``__kernel_itimerspec``):
#: it_interval, then it_value, each a timespec.
ITIMERSPEC = struct.Struct("<qqqq")
#: ``struct iovec`` (include/uapi/linux/uio.h): base, length.
IOVEC = struct.Struct("<QQ")
#: UIO_MAXIOV: the most iovecs one readv/writev/sendmsg takes (else EINVAL).
UIO_MAXIOV = 1024

#: ``struct termios`` as the *kernel* has it (include/uapi/asm-generic/termbits.h):
#: c_iflag, c_oflag, c_cflag, c_lflag, c_line, c_cc[NCCS = 19] — not glibc's,
#: which has 32 control characters and two speeds.
TERMIOS = struct.Struct("<IIIIB19s")
#: ``struct termios2``: :data:`TERMIOS`, then c_ispeed and c_ospeed.
TERMIOS2 = struct.Struct("<IIIIB19sII")
#: ``struct winsize`` (include/uapi/asm-generic/termios.h): rows, columns, x and y pixels.
WINSIZE = struct.Struct("<HHHH")

#: Struct name → (layout, the C type ``tests/test_linux_abi.py`` compares its size with).
STRUCTS: dict[str, tuple[struct.Struct, str]] = {
    "TIMESPEC": (TIMESPEC, "struct __kernel_timespec"),
    "TIMEVAL": (TIMEVAL, "struct __kernel_old_timeval"),
    "ITIMERSPEC": (ITIMERSPEC, "struct __kernel_itimerspec"),
    "IOVEC": (IOVEC, "struct iovec"),
    "TERMIOS": (TERMIOS, "struct termios"),
    "TERMIOS2": (TERMIOS2, "struct termios2"),
    "WINSIZE": (WINSIZE, "struct winsize"),
}
