"""Layer 4 — the private ``/tmp``: a writable, empty directory per sandbox run.

Programs expect a writable ``/tmp`` (``mktemp``, compilers, ``sort``'s
spill files, Python's :mod:`tempfile`), and the host's own ``/tmp`` is
shared with every user and program of the machine — not something to grant.
So each run gets a directory of its own: created empty, mode 0700 (only
this user), by :func:`tempfile.mkdtemp` in the host's temporary directory,
and shown to the guest at ``/tmp`` and at ``/var/tmp`` (the same
directory: files put in one are seen in the other — unlike Linux, where
they are two; the guest rarely cares which it uses, and one directory is
one thing to clean).

It is removed when the sandbox ends, *however* it ends — an exit, a crash,
a signal, even ``SIGKILL`` of minikvm — by a small watcher process forked
before the walls go up (:meth:`PrivateTmp.watch`; forked twice, so that
it is not minikvm's child: a server's count of its workers, and the check
that every child is confined, do not see it): it waits for the
end-of-file of a pipe whose writers are minikvm and the processes it
forks, then removes the directory.  minikvm itself could not remove it: once Landlock is up, the
parent of the directory is outside its rules.  At a normal exit minikvm
closes the pipe and waits for the watcher (:meth:`PrivateTmp.finish`), so
the directory is gone when minikvm is.  ``--keep-tmp DIR`` uses
``DIR`` instead (created if missing, empty if it exists) and keeps it.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import stat
import tempfile
from typing import Iterable, Optional

from minikvm.errors import MinikvmError
from minikvm.sandbox.grants import Mount

#: Where the guest sees the private directory.
TMP_PATHS = ("/tmp", "/var/tmp")
#: The prefix of the host directory's name (in the host's temporary directory).
PREFIX = "minikvm-tmp-"
#: Only the user may enter it (mkdtemp's mode, and what --keep-tmp gets).
MODE = 0o700


class PrivateTmpError(MinikvmError, ValueError):
    """The private ``/tmp`` could not be made (a usage error: exit 2)."""


class PrivateTmp:
    """One run's private ``/tmp``: its host directory and whether it is kept."""

    def __init__(self, keep: Optional[str] = None) -> None:
        self.kept = keep is not None
        if keep is None:
            self.path = tempfile.mkdtemp(prefix=PREFIX)
        else:
            self.path = _prepare_kept(keep)
        self._watcher_pipe: Optional[int] = None
        self._done_pipe = -1
        self._owner = 0

    def mounts(self, shown: tuple[str, ...] = TMP_PATHS,
               grants: Iterable[str] = ()) -> list[Mount]:
        """The private directory as writable mounts at each of *shown*, the
        directory above each being the host's own (``/``, ``/var``).

        A grant beneath one of *shown* (``--here`` in ``/tmp/work``) is
        seen at its own path, in front of the private directory, as a
        bind mount over a tmpfs is: the way down to it is made in the
        private directory as empty directories (``work``), so that the
        directories above the grant exist and list the way down, as they
        do without a private ``/tmp``."""
        for grant in grants:
            for guest in shown:
                if grant.startswith(guest + "/"):
                    way = os.path.join(self.path, grant[len(guest) + 1:])
                    os.makedirs(os.path.dirname(way), MODE, exist_ok=True)
                    if not os.path.lexists(way):
                        os.mkdir(way, MODE)
        return [Mount(guest, self.path, True, os.path.dirname(guest)) for guest in shown
                if os.path.isdir(os.path.dirname(guest))]

    def watch(self) -> None:
        """Fork the watcher that removes the directory when minikvm is gone
        (nothing for a kept one).  Call it once, before any thread starts
        and before the walls: it is a fork of this process."""
        if self.kept or self._watcher_pipe is not None:
            return
        alive_read, alive_write = os.pipe()     # minikvm -> watcher: EOF when it is gone
        done_read, done_write = os.pipe()       # watcher -> minikvm: EOF when it is removed
        pid = os.fork()
        if pid == 0:                                # the go-between
            try:
                os.close(alive_write)
                os.close(done_read)
                if os.fork() == 0:                  # the watcher, a child of init
                    try:
                        _watch(alive_read, done_write, self.path)
                    finally:
                        os._exit(0)
            finally:
                os._exit(0)
        os.close(alive_read)
        os.close(done_write)
        os.waitpid(pid, 0)                          # the go-between is gone at once
        self._watcher_pipe, self._done_pipe = alive_write, done_read
        self._owner = os.getpid()
        atexit.register(self.finish)
        _WATCHED.append(self)

    def finish(self) -> None:
        """Have the directory removed now and wait until it is (at minikvm's
        normal exit, so that the directory is gone when minikvm is; a
        minikvm killed outright leaves it to the watcher alone)."""
        if self._watcher_pipe is not None and os.getpid() != self._owner:
            # a forked worker: let go of the pipes, the supervisor waits
            os.close(self._watcher_pipe)
            os.close(self._done_pipe)
            self._watcher_pipe = None
        elif self._watcher_pipe is not None:
            os.close(self._watcher_pipe)
            self._watcher_pipe = None
            while True:                             # the watcher's end closes when done
                try:
                    if not os.read(self._done_pipe, 1):
                        break
                except InterruptedError:
                    continue
            os.close(self._done_pipe)
        elif not self.kept:
            shutil.rmtree(self.path, ignore_errors=True)


#: The private directories whose watcher runs (for :func:`finish_all`).
_WATCHED: list[PrivateTmp] = []


def finish_all() -> None:
    """:meth:`PrivateTmp.finish` for every private ``/tmp`` of this process:
    for a minikvm about to end by a signal of its own (``atexit`` does not
    run then), so that the directory is gone first."""
    while _WATCHED:
        _WATCHED.pop().finish()


def _watch(alive: int, done: int, path: str) -> None:
    """In the watcher: outlive minikvm's signals, wait for the end of the
    *alive* pipe, remove *path*, then let *done*'s reader know by exiting
    (which closes it).  Its stdio are /dev/null and it has a session of its
    own: a caller that reads minikvm's output to its end, or signals
    minikvm's process group, does not reach it."""
    for number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT,
                   signal.SIGTSTP, signal.SIGPIPE):
        signal.signal(number, signal.SIG_IGN)
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    keep = sorted({alive, done})
    start = 3
    for fd in keep:
        os.closerange(start, fd)
        start = fd + 1
    os.closerange(start, _max_fd())
    os.setsid()
    while True:
        try:
            if not os.read(alive, 1):
                break
        except InterruptedError:
            continue
    shutil.rmtree(path, ignore_errors=True)


def _max_fd() -> int:
    try:
        return os.sysconf("SC_OPEN_MAX")
    except (ValueError, OSError):
        return 1024


def _prepare_kept(path: str) -> str:
    """``--keep-tmp DIR``: *path* made (mode 0700) if missing, or an empty
    directory of this user's if it exists."""
    path = os.path.abspath(path)
    try:
        os.mkdir(path, MODE)
        return path
    except FileExistsError:
        pass
    except OSError as error:
        raise PrivateTmpError(f"--keep-tmp {path}: cannot create it: {error.strerror}") from None
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise PrivateTmpError(f"--keep-tmp {path}: not a directory (name a new directory, "
                              "or an empty one)")
    if os.listdir(path):
        raise PrivateTmpError(f"--keep-tmp {path}: not empty (the program's /tmp starts "
                              "empty: name a new directory, or empty this one)")
    return path


__all__ = ["PrivateTmp", "PrivateTmpError", "TMP_PATHS", "finish_all"]
