"""Layer 5 — the guest's file descriptors, and what each one is.

The guest's fd numbers are its own: fd 1 of the guest is an entry in this
table, which says what the number refers to.

* :class:`HostFile` — a host file descriptor the policy opened for us
  (or a ``dup`` of our own stdin/stdout/stderr).  Reads and writes go
  straight from guest memory to the host fd with ``os.readv``/``os.writev``
  on ``memoryview`` slices of guest RAM: no copy in Python.
* :class:`DeviceFile` — ``/dev/null``, ``/dev/zero``, ``/dev/urandom``,
  implemented here, so a guest with no grants still has them.
* :class:`PipeEnd` — both ends of a ``pipe2`` inside the guest, a buffer in
  the host.  A read of an empty pipe whose writer is open (or a write to a
  full one) reports EAGAIN here; the system call then makes the calling
  thread wait for the program's other threads, or, with none, returns the
  EAGAIN, since a lone thread would block forever — documented as partial.
* :class:`SyntheticFile` and :class:`SyntheticDirectory` — the files and
  directories of the synthesized ``/proc``, made at open from the process.
* :class:`EventFd` — an ``eventfd2`` counter, for threads to wake each other.
* :class:`EpollFile` — an ``epoll_create1`` instance: the fds it watches
  (:class:`EpollInterest`); :mod:`minikvm.syscalls.epoll` waits on them.

Each file also counts its *activity* (data written or read), which is how
an edge-triggered epoll registration learns that new data arrived although
the fd was readable already.
"""

from __future__ import annotations

import copy
import errno
import mmap
import os
import select
import stat as stat_module
import struct
from dataclasses import dataclass, field
from typing import Callable

from minikvm.errors import SyscallError
from minikvm.linux_abi import O_ACCMODE, O_RDONLY, O_RDWR, O_WRONLY

DEFAULT_MAX_FDS = 1024   # RLIMIT_NOFILE's usual soft limit
PIPE_CAPACITY = 65536    # Linux's default pipe buffer
#: A shared pipe end's status flags, in the word its processes share (SharedPipeEnd).
SHARED_FLAGS = struct.Struct("<I")
#: The most bytes all of a process's pipes may hold together.  Each pipe
#: holds at most :data:`PIPE_CAPACITY`, but a guest may have ``--max-fds``
#: / 2 of them (500,000 pipes would be 32 GiB of host memory); Linux
#: bounds the same thing per user (``pipe-user-pages-soft``, 64 MiB).  A
#: write that would pass this sees the pipe full (EAGAIN, or a short
#: write), as when its reader is slow.
PIPE_BUFFERS_LIMIT = 16 << 20
#: The most registrations a process's epolls may hold together.  Each is a
#: host object (~250 bytes), and every epoll may watch every fd: --max-fds
#: squared without a limit.  Linux bounds the same per user
#: (``fs.epoll.max_user_watches``) and answers ``EPOLL_CTL_ADD`` ENOSPC
#: beyond it, as minikvm does here: ~16 MiB of host memory at most.
EPOLL_MAX_WATCHES = 65536

# poll(2) event bits (asm-generic/poll.h)
POLLIN = 0x001
POLLPRI = 0x002
POLLOUT = 0x004
POLLERR = 0x008
POLLHUP = 0x010
POLLNVAL = 0x020
POLLRDNORM = 0x040
POLLWRNORM = 0x100
#: What a file without its own poll method reports (fs/select.c DEFAULT_POLLMASK):
#: always readable and writable.
DEFAULT_POLLMASK = POLLIN | POLLOUT | POLLRDNORM | POLLWRNORM
#: what a poll always reports, whatever was asked (fs/select.c)
ALWAYS_REPORTED = POLLERR | POLLHUP | POLLNVAL


class OpenFile:
    """Something a guest fd refers to (Linux's ``struct file``)."""
    kind = "file"
    host_fd: int | None = None
    path = ""
    status_flags = 0
    #: grows with each read or write: an edge-triggered epoll registration
    #: reports a ready fd again when it changed (see :class:`EpollInterest`)
    activity = 0

    def readv(self, views: list[memoryview]) -> int:
        raise SyscallError(errno.EBADF, "not open for reading")

    def writev(self, chunks: list[memoryview]) -> int:
        raise SyscallError(errno.EBADF, "not open for writing")

    def close(self) -> None:
        """Release what the file holds (called when the last fd goes)."""

    def readable(self) -> bool:
        return (self.status_flags & O_ACCMODE) != O_WRONLY

    def writable(self) -> bool:
        return (self.status_flags & O_ACCMODE) != O_RDONLY

    def poll(self, events: int) -> int | None:
        """The poll(2) events that are ready now, or None when only the host
        can tell (the file is a host fd: ask the host's poll)."""
        if self.host_fd is not None:
            return None
        return DEFAULT_POLLMASK

    def wakes_at(self) -> float | None:
        """When (on the host's ``time.monotonic()``) this file's readiness
        may change by itself, with no thread or host fd acting on it — a
        timer's next expiration (:class:`~minikvm.syscalls.timerfd.TimerFd`);
        None for files that only change when someone uses them.  A wait
        (poll, epoll_wait, a blocking read) looks again at that time."""
        return None

    def link_target(self) -> str:
        """What ``readlink("/proc/self/fd/N")`` shows for this file."""
        return self.path


class HostFile(OpenFile):
    """A host fd: a granted file, a directory, or our stdio."""
    kind = "host"

    def __init__(self, host_fd: int, path: str, status_flags: int) -> None:
        self.host_fd = host_fd
        self.path = path
        self.status_flags = status_flags
        #: getdents64's position: how many entries of the listing were returned
        self.directory_offset = 0
        #: a window of the directory's listing: at most
        #: :data:`DIRECTORY_WINDOW` entries from index
        #: :attr:`directory_window_start` (None: none held; see
        #: :class:`DirectoryWindows`)
        self.directory_entries: list | None = None
        self.directory_window_start = 0

    def readv(self, views: list[memoryview]) -> int:
        if not self.readable():
            raise SyscallError(errno.EBADF, "not open for reading")
        self.activity += 1
        return os.readv(self.host_fd, views)  # type: ignore[arg-type]

    def writev(self, chunks: list[memoryview]) -> int:
        if not self.writable():
            raise SyscallError(errno.EBADF, "not open for writing")
        self.activity += 1
        return os.writev(self.host_fd, chunks)  # type: ignore[arg-type]

    def close(self) -> None:
        if self.host_fd is not None:
            os.close(self.host_fd)
            self.host_fd = None

    def is_directory(self) -> bool:
        return stat_module.S_ISDIR(os.fstat(self.host_fd).st_mode)  # type: ignore[arg-type]

    def link_target(self) -> str:
        """The guest path it was opened by; for our stdio, what the host's
        ``/proc/self/fd`` says (``/dev/pts/3``, ``pipe:[1234]``): the user
        chose those files, so naming them reveals nothing new."""
        if self.path.startswith("/") or self.host_fd is None:
            return self.path
        try:
            return os.readlink(f"/proc/self/fd/{self.host_fd}")
        except OSError:
            return self.path


class SharedPipeEnd(HostFile):
    """One end of a pipe the sandbox's processes share: a host pipe, made
    when a process with an in-guest pipe forks (:func:`minikvm.tree.fork.share_pipes`).

    Unlike the user's terminal or stdio, nobody outside the sandbox holds
    it, so its host fd is non-blocking for good: no read or write of it can
    stop the host process (and with it every guest thread).  A guest call
    that must block waits for the host fd's readiness first and writes in
    pieces (:func:`minikvm.syscalls.files._write`); here a host EAGAIN is
    the guest's.

    Its status flags (``O_NONBLOCK``, set by ``fcntl(F_SETFL)``) belong to
    the open file description on Linux, which every process that inherited
    the fd shares: a child that makes the pipe non-blocking makes it so for
    its parent too.  The host fd's own flag cannot carry them (it stays
    non-blocking, see above), so they live in a word of shared memory made
    with the end (an anonymous ``MAP_SHARED`` page), which the host's fork
    shares as it shares the fd.  (Two processes changing them at the very
    same moment may lose one change; Linux's ``f_lock`` would order them.)"""

    def __init__(self, host_fd: int, path: str, status_flags: int) -> None:
        self._shared = mmap.mmap(-1, mmap.PAGESIZE, flags=mmap.MAP_SHARED | mmap.MAP_ANONYMOUS)
        super().__init__(host_fd, path, status_flags)
        os.set_blocking(host_fd, False)

    @property               # type: ignore[override]
    def status_flags(self) -> int:
        return SHARED_FLAGS.unpack_from(self._shared)[0]

    @status_flags.setter
    def status_flags(self, value: int) -> None:
        SHARED_FLAGS.pack_into(self._shared, 0, value)

    def __deepcopy__(self, memo: dict) -> "SharedPipeEnd":
        """A snapshot's copy shares the flags' word, as the host fd (the
        shared memory cannot be copied, and is the file's, not the process's)."""
        clone = copy.copy(self)
        memo[id(self)] = clone
        return clone

    def readv(self, views: list[memoryview]) -> int:
        try:
            return super().readv(views)
        except BlockingIOError:
            raise SyscallError(errno.EAGAIN, f"{self.path}: empty") from None

    def writev(self, chunks: list[memoryview]) -> int:
        try:
            return super().writev(chunks)
        except BlockingIOError:
            raise SyscallError(errno.EAGAIN, f"{self.path}: full") from None


class MemFd(HostFile):
    """A ``memfd_create`` file: a host memfd (anonymous tmpfs memory), so
    reads, writes, ``ftruncate``, ``lseek`` and seals (``F_ADD_SEALS``) are
    the host kernel's own, seals enforced by it.  *name* is the guest's;
    ``readlink("/proc/self/fd/N")`` shows ``/memfd:NAME (deleted)`` as on
    Linux.  Its size counts against the process's memfd budget
    (:mod:`minikvm.syscalls.memfd`), since it is host memory."""
    kind = "memfd"

    def __init__(self, host_fd: int, name: str, status_flags: int) -> None:
        super().__init__(host_fd, f"<memfd:{name}>", status_flags)
        self.name = name

    def link_target(self) -> str:
        return f"/memfd:{self.name} (deleted)"


class AboveGrantDirectory(HostFile):
    """A directory above the grants (``/tmp`` for a grant ``/tmp/x``), opened
    by the guest for reading.

    It holds an ``O_PATH`` fd: the host never reads the real directory.
    ``fstat`` and ``*at`` calls through it work as for any directory (the
    policy answers them by path), getdents lists only the way down to the
    grants (:func:`minikvm.syscalls.directories.directory_listing`), and a
    read is ``EISDIR``, as for any directory.
    """
    kind = "directory above a grant"

    def readv(self, views: list[memoryview]) -> int:
        raise SyscallError(errno.EISDIR, "a directory cannot be read")

    def writev(self, chunks: list[memoryview]) -> int:
        raise SyscallError(errno.EBADF, "not open for writing")


class DeviceFile(OpenFile):
    """``/dev/null``, ``/dev/zero``, ``/dev/full``, ``/dev/urandom`` and ``/dev/random``."""
    kind = "device"
    #: st_rdev of the real devices (major 1, minors from devices.txt)
    RDEV = {"null": os.makedev(1, 3), "zero": os.makedev(1, 5), "full": os.makedev(1, 7),
            "random": os.makedev(1, 8), "urandom": os.makedev(1, 9)}

    def __init__(self, name: str, path: str, status_flags: int,
                 source: Callable[[int], bytes] = os.urandom) -> None:
        self.name = name
        self.path = path
        self.status_flags = status_flags
        #: Where ``random`` and ``urandom`` read from: the process's
        #: :attr:`~minikvm.process.process.Process.random`.
        self.source = source

    def readv(self, views: list[memoryview]) -> int:
        if self.name == "null":
            return 0
        return fill_views(views, bytes if self.name in ("zero", "full") else self.source)

    def writev(self, chunks: list[memoryview]) -> int:
        if self.name == "full":   # the device that is always full: for testing ENOSPC paths
            raise SyscallError(errno.ENOSPC, "/dev/full is always full")
        return sum(len(chunk) for chunk in chunks)

    def poll(self, events: int) -> int:
        """Always ready, as the real devices are."""
        return DEFAULT_POLLMASK


SEEK_SET, SEEK_CUR = 0, 1


class SyntheticFile(OpenFile):
    """A read-only file whose contents minikvm made at open: the files of
    the synthesized ``/proc`` (:mod:`minikvm.syscalls.procfs`).

    Like Linux's seq files, the text is generated when the file is opened
    and read from that copy, so a program reading ``/proc/self/maps`` in
    small pieces sees one consistent picture.  Reads at any offset (or past
    the end) give what is there, or 0 bytes; ``lseek`` takes SEEK_SET and
    SEEK_CUR (EINVAL for SEEK_END, as ``seq_lseek``), never a negative
    position; an ``O_PATH`` open can neither read nor write.
    """
    kind = "synthesized file"

    def __init__(self, path: str, data: bytes, status_flags: int, stat: os.stat_result,
                 path_only: bool = False) -> None:
        self.path = path
        self.data = data
        self.status_flags = status_flags
        self.stat = stat
        self.path_only = path_only
        self.position = 0

    def readable(self) -> bool:
        return not self.path_only and super().readable()

    def writable(self) -> bool:
        return False

    def pread(self, views: list[memoryview], offset: int) -> int:
        """Copy from *offset* into *views*; the bytes copied."""
        if not self.readable():
            raise SyscallError(errno.EBADF, f"{self.path} is not open for reading")
        if offset < 0:
            raise SyscallError(errno.EINVAL, f"negative offset {offset}")
        total = 0
        for view in views:
            piece = self.data[offset + total:offset + total + len(view)]
            view[:len(piece)] = piece
            total += len(piece)
            if len(piece) < len(view):
                break
        return total

    def readv(self, views: list[memoryview]) -> int:
        count = self.pread(views, self.position)
        self.position += count
        self.activity += 1
        return count

    def writev(self, chunks: list[memoryview]) -> int:
        raise SyscallError(errno.EBADF, f"{self.path} is not open for writing")

    def seek(self, offset: int, whence: int) -> int:
        """lseek(2) as Linux's ``seq_lseek``: SEEK_SET and SEEK_CUR only."""
        if whence == SEEK_SET:
            position = offset
        elif whence == SEEK_CUR:
            position = self.position + offset
        else:
            raise SyscallError(errno.EINVAL, f"whence {whence} on {self.path} "
                               f"(only SEEK_SET and SEEK_CUR)")
        if position < 0:
            raise SyscallError(errno.EINVAL, f"offset {position} is negative")
        self.position = position
        return position

    def poll(self, events: int) -> int:
        """Always ready, as a regular file is."""
        return DEFAULT_POLLMASK


class SyntheticDirectory(OpenFile):
    """A directory of the synthesized ``/proc``.  Its listing —
    ``(name, inode, d_type)`` entries, ``.`` and ``..`` first — is made at
    the first getdents (and again after a rewind), as Linux lists /proc
    when it is read: ``/proc/self/fd`` then shows the fd reading it.
    getdents hands the entries out from :attr:`directory_offset`."""
    kind = "synthesized directory"

    def __init__(self, path: str, status_flags: int, stat: os.stat_result) -> None:
        self.path = path
        self.entries: list[tuple[bytes, int, int]] | None = None
        self.status_flags = status_flags
        self.stat = stat
        self.directory_offset = 0

    def readv(self, views: list[memoryview]) -> int:
        raise SyscallError(errno.EISDIR, f"{self.path} is a directory")

    def writev(self, chunks: list[memoryview]) -> int:
        raise SyscallError(errno.EBADF, f"{self.path} is a directory")

    def seek(self, offset: int, whence: int) -> int:
        """lseek in the listing: the index of the next entry."""
        position = offset if whence == SEEK_SET else \
            self.directory_offset + offset if whence == SEEK_CUR else -1
        if position < 0:
            raise SyscallError(errno.EINVAL, f"directory offset {offset} whence {whence}")
        if position == 0:
            self.entries = None         # rewinddir: list it again
        self.directory_offset = position
        return position


#: The most bytes :func:`fill_views` makes at once.
FILL_CHUNK = 1 << 20


def fill_views(views: list[memoryview], make: Callable[[int], bytes]) -> int:
    """Fill guest buffers with ``make(n)`` bytes (zeros, randomness), a
    chunk at a time: a guest reading 1 GiB of ``/dev/zero`` must not make
    the host build a 1 GiB ``bytes`` first.  Returns the bytes filled."""
    total = 0
    for view in views:
        for start in range(0, len(view), FILL_CHUNK):
            piece = view[start:start + FILL_CHUNK]
            piece[:] = make(len(piece))
        total += len(view)
    return total


@dataclass
class Tally:
    """A count shared by a process's files, of what they make the host
    hold: the bytes in its pipes (:data:`PIPE_BUFFERS_LIMIT`), the
    registrations of its epolls (:data:`EPOLL_MAX_WATCHES`)."""
    count: int = 0


@dataclass
class Pipe:
    """The buffer shared by the two ends of a pipe."""
    data: bytearray = field(default_factory=bytearray)
    readers: int = 1
    writers: int = 1
    #: shown as ``pipe:[number]`` by readlink of /proc/self/fd/N and as its
    #: inode by fstat (Linux shows the pipe's inode number; this is its order
    #: of creation in the process, ``Process.pipes_made``: a count kept by the
    #: host for all processes would tell one request how many pipes others made)
    number: int = 0
    #: reads and writes so far (both ends' :attr:`OpenFile.activity`)
    activity: int = 0
    #: shared by the process's pipes (:attr:`FdTable.pipe_budget`); a pipe
    #: made alone (a snapshot's, a test's) has one of its own
    budget: Tally = field(default_factory=Tally)

    def __post_init__(self) -> None:
        self.budget.count += len(self.data)

    def move_to(self, budget: Tally) -> None:
        """Count this pipe's bytes in *budget* from now on."""
        self.budget.count -= len(self.data)
        budget.count += len(self.data)
        self.budget = budget

    def room(self) -> int:
        """How many more bytes a write may add now."""
        return min(PIPE_CAPACITY - len(self.data), PIPE_BUFFERS_LIMIT - self.budget.count)


class PipeEnd(OpenFile):
    """One end of an in-guest pipe."""
    kind = "pipe"

    def __init__(self, pipe: Pipe, writing: bool, status_flags: int) -> None:
        self.pipe = pipe
        self.writing = writing
        self.status_flags = (O_WRONLY if writing else O_RDONLY) | status_flags
        self.path = "pipe:[minikvm]"

    def readv(self, views: list[memoryview]) -> int:
        if self.writing:
            raise SyscallError(errno.EBADF, "write end of a pipe")
        if not self.pipe.data:
            if self.pipe.writers == 0:
                return 0
            raise SyscallError(errno.EAGAIN,
                               "pipe empty (a single-threaded guest would wait forever)")
        total = 0
        for view in views:
            piece = self.pipe.data[:len(view)]
            view[:len(piece)] = piece
            del self.pipe.data[:len(piece)]
            self.pipe.budget.count -= len(piece)
            total += len(piece)
            if not self.pipe.data:
                break
        self.pipe.activity += 1
        return total

    def writev(self, chunks: list[memoryview]) -> int:
        if not self.writing:
            raise SyscallError(errno.EBADF, "read end of a pipe")
        if self.pipe.readers == 0:
            raise SyscallError(errno.EPIPE, "no reader")
        room = self.pipe.room()
        if room <= 0:
            raise SyscallError(errno.EAGAIN, "pipe full" if len(self.pipe.data) >= PIPE_CAPACITY
                               else f"the process's pipes hold {PIPE_BUFFERS_LIMIT} bytes "
                                    f"already: read some")
        total = 0
        for chunk in chunks:
            piece = bytes(chunk[:room - total])
            self.pipe.data += piece
            self.pipe.budget.count += len(piece)
            total += len(piece)
        self.pipe.activity += 1
        return total

    def close(self) -> None:
        if self.writing:
            self.pipe.writers -= 1
        else:
            self.pipe.readers -= 1
        if self.pipe.readers == 0 and self.pipe.writers == 0:
            self.pipe.budget.count -= len(self.pipe.data)   # nobody can read it now
            self.pipe.data.clear()

    def poll(self, events: int) -> int:
        """Linux's pipe_poll(): the read end is readable with data, hung up
        with no writer left; the write end is writable with room, in error
        with no reader left."""
        if self.writing:
            ready = POLLOUT | POLLWRNORM if self.pipe.room() > 0 else 0
            return ready | (POLLERR if self.pipe.readers == 0 else 0)
        ready = POLLIN | POLLRDNORM if self.pipe.data else 0
        return ready | (POLLHUP if self.pipe.writers == 0 else 0)

    def link_target(self) -> str:
        return f"pipe:[{self.pipe.number}]"

    @property
    def activity(self) -> int:  # type: ignore[override]
        return self.pipe.activity


#: the largest value an eventfd counter may hold (fs/eventfd.c: ULLONG_MAX - 1)
EVENTFD_MAX = (1 << 64) - 2
EVENTFD_VALUE_SIZE = 8


class EventFd(OpenFile):
    """eventfd(2): a 64-bit counter.  A write adds to it; a read takes it
    all and leaves 0 (or, as a *semaphore*, takes 1).  A read of 0, or a
    write that would pass :data:`EVENTFD_MAX`, is EAGAIN here, and the
    system call waits for other threads as it does for a pipe."""
    kind = "eventfd"

    def __init__(self, initial: int, semaphore: bool, status_flags: int) -> None:
        self.counter = initial
        self.semaphore = semaphore
        self.status_flags = O_RDWR | status_flags
        self.path = "anon_inode:[eventfd]"
        self.activity = 0

    def readv(self, views: list[memoryview]) -> int:
        if sum(len(view) for view in views) < EVENTFD_VALUE_SIZE:
            raise SyscallError(errno.EINVAL, "an eventfd read needs an 8-byte buffer")
        if self.counter == 0:
            raise SyscallError(errno.EAGAIN, "the eventfd counter is 0")
        value = 1 if self.semaphore else self.counter
        self.counter -= value
        self.activity += 1
        data = value.to_bytes(EVENTFD_VALUE_SIZE, "little")
        for view in views:
            piece, data = data[:len(view)], data[len(view):]
            view[:len(piece)] = piece
        return EVENTFD_VALUE_SIZE

    def writev(self, chunks: list[memoryview]) -> int:
        # Only the first 8 bytes count: never join the rest (1024 iovecs of
        # 2 MiB each would be 2 GiB of host memory for an 8-byte write).
        data = b""
        for chunk in chunks:
            data += bytes(chunk[:EVENTFD_VALUE_SIZE - len(data)])
            if len(data) == EVENTFD_VALUE_SIZE:
                break
        if len(data) < EVENTFD_VALUE_SIZE:
            raise SyscallError(errno.EINVAL, "an eventfd write needs 8 bytes")
        value = int.from_bytes(data[:EVENTFD_VALUE_SIZE], "little")
        if value > EVENTFD_MAX:
            raise SyscallError(errno.EINVAL, "0xffffffffffffffff cannot be added to an eventfd")
        if self.counter + value > EVENTFD_MAX:
            raise SyscallError(errno.EAGAIN, "the eventfd counter would overflow")
        self.counter += value
        self.activity += 1
        return EVENTFD_VALUE_SIZE

    def poll(self, events: int) -> int:
        """eventfd_poll(): readable above 0, writable while 1 more fits."""
        readable = POLLIN | POLLRDNORM if self.counter > 0 else 0
        return readable | (POLLOUT | POLLWRNORM if self.counter < EVENTFD_MAX else 0)


# epoll event bits beyond poll's (uapi/linux/eventpoll.h)
EPOLLRDHUP = 0x2000
EPOLLEXCLUSIVE = 1 << 28
EPOLLWAKEUP = 1 << 29
EPOLLONESHOT = 1 << 30
EPOLLET = 1 << 31


@dataclass
class EpollInterest:
    """One fd an epoll watches (Linux's ``struct epitem``).

    Edge-triggered (``EPOLLET``) registrations remember what was seen at
    the last wait: they are reported again only when a readiness bit rose
    since, or the file's :attr:`~OpenFile.activity` changed (new data
    written into a readable pipe, a read from a host fd that may have
    emptied it).  That approximates Linux, which reports each wake-up of
    the file's wait queue; a spurious edge is harmless to the callers,
    which read until EAGAIN anyway.
    """
    file: OpenFile
    events: int            # as asked, EPOLLET and EPOLLONESHOT included
    data: int              # the 64-bit cookie given back with each event
    disabled: bool = False  # EPOLLONESHOT fired: silent until EPOLL_CTL_MOD
    last_ready: int = 0
    last_activity: int = -1


class EpollFile(OpenFile):
    """An epoll instance: fd number → :class:`EpollInterest`, in the order
    they were added (a level-triggered fd that was reported moves to the
    end, so a small ``maxevents`` still serves every fd in turn)."""
    kind = "epoll"

    def __init__(self, watches: Tally | None = None) -> None:
        self.interest: dict[int, EpollInterest] = {}
        self.path = "anon_inode:[eventpoll]"
        self.status_flags = O_RDWR
        #: the process's count of registrations (:attr:`FdTable.epoll_watches`)
        self.watches = Tally() if watches is None else watches

    def watch(self, fd: int, item: EpollInterest) -> None:
        """Register (or re-register) *fd*; ENOSPC past :data:`EPOLL_MAX_WATCHES`."""
        if fd not in self.interest:
            if self.watches.count >= EPOLL_MAX_WATCHES:
                raise SyscallError(errno.ENOSPC, f"the process's epolls watch "
                                   f"{EPOLL_MAX_WATCHES} fds already (max_user_watches): "
                                   f"remove some with EPOLL_CTL_DEL")
            self.watches.count += 1
        self.interest[fd] = item

    def forget(self, fd: int) -> None:
        """Drop *fd*'s registration."""
        del self.interest[fd]
        self.watches.count -= 1

    def move_to(self, watches: Tally) -> None:
        """Count this epoll's registrations in *watches* from now on."""
        self.watches.count -= len(self.interest)
        watches.count += len(self.interest)
        self.watches = watches

    def close(self) -> None:
        # No fd reaches it now: what it watched is dropped (an epoll that
        # watched it holds a stale entry, forgotten before its next use).
        self.watches.count -= len(self.interest)
        self.interest.clear()

    def readv(self, views: list[memoryview]) -> int:
        raise SyscallError(errno.EINVAL, "an epoll fd cannot be read (use epoll_wait)")

    def writev(self, chunks: list[memoryview]) -> int:
        raise SyscallError(errno.EINVAL, "an epoll fd cannot be written (use epoll_ctl)")

    def poll(self, events: int) -> int:
        """Readable when one of the watched fds is ready now (an epoll
        inside a poll or another epoll)."""
        return POLLIN | POLLRDNORM if self._any_ready(set()) else 0

    def wakes_at(self) -> float | None:
        """The earliest time a watched file's readiness changes by itself
        (nested epolls included, each asked once)."""
        return self._earliest_wake(set())

    def _earliest_wake(self, seen: set[int]) -> float | None:
        if id(self) in seen:
            return None
        seen.add(id(self))
        wakes = [item.file._earliest_wake(seen) if isinstance(item.file, EpollFile)
                 else item.file.wakes_at()
                 for item in self.interest.values() if not item.disabled]
        return min((wake for wake in wakes if wake is not None), default=None)

    def _any_ready(self, seen: set[int]) -> bool:
        """Whether a watched fd is ready; *seen* holds the epolls already
        asked, so epolls nested many ways are each asked once."""
        if id(self) in seen:
            return False
        seen.add(id(self))
        for item in self.interest.values():
            if item.disabled:
                continue
            if isinstance(item.file, EpollFile):
                if item.file._any_ready(seen):
                    return True
                continue
            ready = item.file.poll(item.events)
            if ready is None and item.file.host_fd is not None:
                host = select.poll()
                host.register(item.file.host_fd, item.events & ~ALWAYS_REPORTED & 0xFFFF)
                ready = sum(revents for _, revents in host.poll(0))
            if (ready or 0) & (item.events | ALWAYS_REPORTED):
                return True
        return False


@dataclass
class FdEntry:
    """A slot of the table: the file and the per-fd flags (FD_CLOEXEC)."""
    file: OpenFile
    cloexec: bool = False


#: How many entries of one directory's listing minikvm holds at a time.  A
#: guest with a write grant can make a directory as large as the disk allows,
#: and the host must not hold all of it: the listing is read in windows (a
#: read past the window reads the directory again from the start, skipping
#: what came before: slow for huge directories, bounded in memory).
DIRECTORY_WINDOW = 1024

#: How many open directories hold a window at once; the one read least
#: recently gives its window up (it is read again when next needed).  With
#: names of at most 255 bytes this bounds the host's copies of listings at
#: about 4 × 1024 × 350 bytes, whatever the number of open directories.
DIRECTORY_WINDOWS = 4


class DirectoryWindows:
    """The open directories that hold a window of their listing, most
    recently read last (at most :data:`DIRECTORY_WINDOWS`)."""

    def __init__(self) -> None:
        self.holders: list[HostFile] = []

    def hold(self, file: HostFile, start: int, entries: list) -> None:
        """Give *file* the window *entries* (from index *start*), taking
        the oldest window away when there are too many."""
        if file in self.holders:
            self.holders.remove(file)
        elif len(self.holders) >= DIRECTORY_WINDOWS:
            self.holders.pop(0).directory_entries = None
        file.directory_entries, file.directory_window_start = entries, start
        self.holders.append(file)


class FdTable:
    """fd number → :class:`FdEntry`; the lowest free number is used first."""

    def __init__(self, max_fds: int = DEFAULT_MAX_FDS) -> None:
        self.entries: dict[int, FdEntry] = {}
        self.max_fds = max_fds
        self.references: dict[int, int] = {}  # id(file) -> open fds
        #: what this process's pipes hold together (:data:`PIPE_BUFFERS_LIMIT`)
        self.pipe_budget = Tally()
        #: what this process's epolls watch together (:data:`EPOLL_MAX_WATCHES`)
        self.epoll_watches = Tally()
        #: which open directories hold a window of their listing
        self.directory_windows = DirectoryWindows()

    def get(self, fd: int) -> OpenFile:
        """The file behind *fd*, or EBADF."""
        entry = self.entries.get(fd)
        if entry is None:
            raise SyscallError(errno.EBADF, f"fd {fd} is not open")
        return entry.file

    def install(self, file: OpenFile, lowest: int = 0, cloexec: bool = False) -> int:
        """Give *file* the lowest free fd ≥ *lowest* (EMFILE at the limit)."""
        fd = self.check_room(lowest)
        self.install_at(fd, file, cloexec)
        return fd

    def check_room(self, lowest: int = 0, count: int = 1) -> int:
        """The fd :meth:`install` would give next; EMFILE unless *count* fds
        ≥ *lowest* are free below the limit.  A call that creates something
        (a file, a host socket, the two ends of a pipe) asks first, so that
        EMFILE leaves nothing made behind — Linux too takes the fd number
        before it opens."""
        free = []
        fd = lowest
        while len(free) < count:
            if fd >= self.max_fds:
                raise SyscallError(errno.EMFILE, f"at most {self.max_fds} open files "
                                                 "(--max-fds)")
            if fd not in self.entries:
                free.append(fd)
            fd += 1
        return free[0]

    def install_at(self, fd: int, file: OpenFile, cloexec: bool = False) -> None:
        """Put *file* at exactly *fd*, closing what was there (dup2)."""
        if not 0 <= fd < self.max_fds:
            raise SyscallError(errno.EBADF, f"fd {fd} is beyond the limit of {self.max_fds}")
        if fd in self.entries:
            self.close(fd)
        if isinstance(file, PipeEnd) and file.pipe.budget is not self.pipe_budget:
            file.pipe.move_to(self.pipe_budget)   # a snapshot's pipe joins this process's
        if isinstance(file, EpollFile) and file.watches is not self.epoll_watches:
            file.move_to(self.epoll_watches)
        self.entries[fd] = FdEntry(file, cloexec)
        self.references[id(file)] = self.references.get(id(file), 0) + 1

    def close(self, fd: int) -> None:
        """Close *fd*; the file is released when no fd refers to it any more."""
        entry = self.entries.pop(fd, None)
        if entry is None:
            raise SyscallError(errno.EBADF, f"fd {fd} is not open")
        count = self.references[id(entry.file)] - 1
        if count:
            self.references[id(entry.file)] = count
        else:
            del self.references[id(entry.file)]
            entry.file.close()

    def close_range(self, first: int, last: int, cloexec: bool = False) -> None:
        """close_range(2): close every open fd in ``[first, last]``, or only
        mark them close-on-exec when *cloexec*."""
        for fd in [fd for fd in self.entries if first <= fd <= last]:
            if cloexec:
                self.entries[fd].cloexec = True
            else:
                self.close(fd)

    def close_all(self) -> None:
        """Close every fd (at exit)."""
        for fd in list(self.entries):
            self.close(fd)
