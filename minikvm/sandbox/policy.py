"""Layer 4 — the sandbox policy: which paths and endpoints the guest may reach.

Every guest system call that names a file or a socket address passes through
one object, :class:`Policy`, at one seam.  The syscall layer never calls
``os.open`` on a guest path itself: it asks the policy, which either returns a
host file descriptor or raises :class:`PolicyDenied` (a
:class:`~minikvm.errors.SyscallError`, so the dispatcher turns it into
``-errno`` like any other failure).

Deny by default
---------------
With no grant the guest has stdin, stdout and stderr (the syscall layer's
business) and five *virtual* devices the syscall layer implements in Python —
``/dev/null``, ``/dev/zero``, ``/dev/full``, ``/dev/urandom`` and
``/dev/random`` (see :meth:`Policy.is_virtual_device`).  Everything else must be granted:
``read=[dirs]``, ``write=[dirs]`` (read and write) and ``connect=[endpoints]``, or
shown as a ``mount`` — how the command line adds the read-only system view
(:mod:`minikvm.sandbox.system_view`) and the private ``/tmp``
(:mod:`minikvm.sandbox.private_tmp`), which a bare ``Policy()`` does not have.

Outside the grants, nothing exists
----------------------------------
A path outside every grant is *hidden*: the guest gets ``ENOENT``, as a
bubblewrap user does for what was not bind-mounted, so a program looking
for a configuration file up the directory tree (``.editorconfig``,
``pyproject.toml``, ``.git``) moves on instead of stopping on "Permission
denied" — and the guest cannot learn which outside paths exist.  The
directories *above* a grant (``/`` and ``/tmp`` for a grant ``/tmp/x``)
exist as read-only directories that hold only the way down: they can be
stat'ed, checked with access, opened ``O_RDONLY|O_DIRECTORY`` or
``O_PATH``, entered, and listed — a listing shows ``.``, ``..`` and the
next component towards each grant below (:meth:`Policy.visible_entries`).
Creating or changing anything in them is ``EACCES``.  Every hidden path is
still recorded, with a reason starting ``hidden:``, so ``--audit`` and
``--trace`` show why a program did not find something.

Confinement by the kernel, not by string checks
-----------------------------------------------
Checking that a path string "starts with /tmp/x" is not enough: a symlink
inside the grant can point anywhere, ``..`` can climb out, ``/proc/self/root``
and ``/proc/PID/fd/N`` are *magic links* that jump to arbitrary files, and a
rename racing with the check can swap a directory for a symlink between check
and use.  So the string work only *picks* a grant; the kernel enforces it::

    guest: open("sub/../f", O_RDONLY) with guest cwd /tmp/x
      join with cwd, normalise lexically  ->  /tmp/x/f
      longest grant prefix                ->  grant /tmp/x, held open as dirfd 5
      openat2(5, "f", how={flags: O_RDONLY|O_CLOEXEC|O_NOCTTY, mode: 0,
                           resolve: RESOLVE_BENEATH|RESOLVE_NO_MAGICLINKS})
        the kernel walks "f" one component at a time, following symlinks,
        and fails with EXDEV on any step that would leave dirfd 5
        (an absolute symlink, ".." above the grant) and with ELOOP on a
        magic link.  EXDEV becomes ENOENT for the guest: what a symlink
        leading out names does not exist in its view.

Each grant directory is opened once, ``O_PATH|O_DIRECTORY|O_CLOEXEC``, when the
policy is built (see openat2(2) and the kernel's
Documentation/filesystems/path-lookup.rst).  Because every walk starts from
that fd and is checked step by step inside the kernel, a concurrent rename
cannot smuggle the walk outside: the kernel retries or fails with ``EAGAIN``
(retried here a few times, then refused).

Rights follow the object, not the spelling
------------------------------------------
With grants nested inside one another (``/w`` writable, ``/w/ro``
read-only) the spelling cannot decide the rights (``/w/l/secret`` with
``/w/l -> ro`` is the read-only ``/w/ro/secret``): a write is allowed only
where the kernel lands, as :mod:`minikvm.sandbox.grants` explains.

One deviation from Linux, on purpose: ``..`` is taken *lexically* (like Go's
``path.Clean``).  If ``a`` is a symlink, ``a/..`` is the directory holding
``a``, not the parent of ``a``'s target.  It can never widen access — the
result is still resolved beneath the grant — and it keeps "which grant?" a
pure function of the path string.

The errno contract
------------------
========== ================================================================
``ENOENT`` the path is outside every grant, or resolves outside its grant
           (a symlink or ``..`` leading out): it is hidden, as if it did not
           exist ("hidden: outside allowed paths")
``EACCES`` the path needs write access in a read-only grant or in a
           directory above a grant, or the endpoint is not allowed
           ("denied: …")
``EPERM``  the operation is refused outright, whatever its arguments
           (:data:`REFUSED_SYSCALLS`: fork, ptrace, mount …)
others     the host kernel's own answer, raised as the ``OSError`` it raised
           (``ENOENT``, ``EISDIR``, ``ELOOP``, ``ENOTDIR`` …)
========== ================================================================

Every denial is recorded in :attr:`Policy.denials` so ``--audit`` can print
:meth:`Policy.summary` at exit; :meth:`Policy.describe` prints the policy
itself.

This module is the guest-facing half of the sandbox.  The host-facing half —
restricting the minikvm process itself in case the guest ever takes it over —
is :mod:`minikvm.sandbox.landlock` (file system and TCP) and :mod:`minikvm.sandbox.seccomp`
(system calls).  Grants and endpoints, the two things a policy is made of,
have their own modules (:mod:`minikvm.sandbox.grants`,
:mod:`minikvm.sandbox.endpoints`).  It imports nothing above layer 0.
"""

from __future__ import annotations

import errno
import os
import posixpath
import socket
import stat as stat_module
from typing import TYPE_CHECKING, Callable, Iterable, Optional, TypeVar, Union

from minikvm.errors import MinikvmError
from minikvm.linux_abi import (AT_EACCESS, AT_EMPTY_PATH, MODE_BITS, O_CLOEXEC, O_CREAT,
                               O_DIRECTORY, O_NOCTTY, O_NOFOLLOW, O_PATH, O_TMPFILE)
from minikvm.sandbox.audit import (DENIED_ERRNO, HIDDEN_ERRNO, MAX_RECORDED_DENIALS, REFUSED_ERRNO,
                                   REFUSED_SYSCALLS, Denial, DenialLog, PolicyDenied)
from minikvm.sandbox.endpoints import (ANY_PORT, Endpoint, EndpointError, PinnedSocket,
                                       parse_endpoint, resolve_endpoints)
from minikvm.sandbox.grants import (Grant, GrantError, GrantTree, Mount, Parent, PathArg,
                                    Refusal, absolute_path as _absolute, check_openat2,
                                    close_grant, identity, normalise_grant, open_grant,
                                    open_mount, reopen)
from minikvm.sandbox.links import follow_between_grants
from minikvm.sandbox.network_rules import NetworkRules

if TYPE_CHECKING:
    from minikvm.sandbox.ptys import SandboxPtys
from minikvm.sandbox.openat2 import (O_PATH_FLAGS, VALID_OPEN_FLAGS, faccessat2, open_how,
                                     open_writes, openat2)

T = TypeVar("T")

# --- the policy's vocabulary --------------------------------------------------

#: The guest paths the syscall layer implements itself, and their names.
VIRTUAL_DEVICES = {
    "/dev/null": "null",        # reads give EOF, writes vanish
    "/dev/zero": "zero",        # reads give zero bytes
    "/dev/full": "full",        # reads give zero bytes, writes fail with ENOSPC
    "/dev/urandom": "urandom",  # reads give host getrandom() bytes
    "/dev/random": "random",    # same as urandom (Linux >= 5.6 behaves so too)
}


#: Open files a guest may hold at once, unless the policy says otherwise.
DEFAULT_MAX_FDS = 1024


class PolicyError(MinikvmError):
    """The policy itself is wrong (a missing grant directory, a bad endpoint)."""


# --- the policy ------------------------------------------------------------------


class Policy(NetworkRules):
    """The sandbox policy: grants, allowed endpoints, limits and the denial log.

    ``read`` and ``write`` are host directories (a write grant may also be
    read); the guest sees each at its host path.  ``connect`` holds endpoint
    strings (see :meth:`parse_endpoint`; a host name is resolved now, and
    allows every address it resolves to) or :class:`Endpoint` objects;
    ``allow_net`` allows every IP address but the host's own and link-local
    ones (:func:`~minikvm.sandbox.endpoints.reaches_the_network`);
    ``listen`` holds the IP endpoints the guest may ``bind`` and ``listen``
    on, to accept connections (``0.0.0.0:8080`` admits any local address of
    that port).
    ``max_fds`` caps the guest's open files; ``max_file_size`` (bytes, None
    for no cap) the size a guest write may grow a file to — it does not cap
    disk use (the guest can make many files); a size-limited file system for
    the write grant does.

    ``mounts`` (:class:`~minikvm.sandbox.grants.Mount`) show host files and
    directories at guest paths of their own: the read-only system view
    (:mod:`minikvm.sandbox.system_view`) and the private ``/tmp``.  A mount
    inside one of ``read`` or ``write`` is left out (the user's grant
    decides there); :attr:`mounts` keeps those in effect.

    The grant directories are opened here and held until :meth:`close`;
    use the policy as a context manager to close them.
    """

    def __init__(self, read: Iterable[PathArg] = (), write: Iterable[PathArg] = (),
                 connect: Iterable[Union[str, Endpoint]] = (),
                 max_fds: int = DEFAULT_MAX_FDS,
                 max_file_size: Optional[int] = None, *,
                 listen: Iterable[Union[str, Endpoint]] = (),
                 allow_net: bool = False, mounts: Iterable[Mount] = ()) -> None:
        if max_fds < 4:
            raise PolicyError(f"max_fds={max_fds} is too small: the guest needs at "
                              "least stdin, stdout, stderr and one more")
        if max_file_size is not None and max_file_size < 0:
            raise PolicyError(f"max_file_size={max_file_size} is negative: give a "
                              "size in bytes, or None for no limit")
        self.max_fds = max_fds
        self.max_file_size = max_file_size
        if isinstance(connect, (str, Endpoint)):
            raise PolicyError(f"connect={connect!r}: give a list of endpoints, "
                              f"e.g. connect=[{str(connect)!r}]")
        if isinstance(listen, (str, Endpoint)):
            raise PolicyError(f"listen={listen!r}: give a list of endpoints, "
                              f"e.g. listen=[{str(listen)!r}]")
        self.endpoints = tuple(dict.fromkeys(
            endpoint for e in connect
            for endpoint in ((e,) if isinstance(e, Endpoint) else self.resolve_endpoint(e))))
        self.listen_endpoints = tuple(dict.fromkeys(
            endpoint for e in listen
            for endpoint in ((e,) if isinstance(e, Endpoint) else self.resolve_endpoint(e))))
        for endpoint in self.listen_endpoints:
            if endpoint.family == socket.AF_UNIX or endpoint.port == ANY_PORT:
                raise PolicyError(f"listen={str(endpoint)!r}: a listening endpoint is an IP "
                                  "address and one port (0.0.0.0:8080, [::1]:8080)")
        self.allow_net = bool(allow_net)
        self.denials = DenialLog()
        self.tree = GrantTree(())
        self.mounts: tuple[Mount, ...] = ()
        self.pinned: dict[str, PinnedSocket] = {}
        #: the sandbox's pseudo-terminals (:mod:`minikvm.sandbox.ptys`): None
        #: unless the command started their broker (``run --allow-pty``)
        self.ptys: "SandboxPtys | None" = None
        try:
            writable = {normalise_grant(p) for p in _path_list(write, "write")}
            readable = {normalise_grant(p) for p in _path_list(read, "read")} - writable
            opened: list[Grant] = []
            try:
                for path in sorted(writable | readable):
                    opened.append(Grant(path, path in writable, open_grant(path)))
                # A mount inside a grant of the user's is left out: what the
                # user granted there is what the guest sees.
                self.mounts = tuple(
                    mount for mount in dict.fromkeys(mounts)
                    if not any(grant.contains(normalise_grant(mount.guest)) for grant in opened))
                for mount in self.mounts:
                    opened.append(open_mount(mount))
            except BaseException:
                for grant in opened:
                    close_grant(grant)
                raise
            # Longest first, so the first grant that contains a path is the
            # longest prefix: the grant the guest's spelling names.
            self.grants = tuple(sorted(opened, key=lambda g: len(g.path), reverse=True))
            directories = [grant for grant in self.grants if not grant.is_file]
            if directories:
                check_openat2(directories[0])
        except GrantError as error:
            self.close()
            raise PolicyError(str(error)) from None
        except BaseException:
            self.close()
            raise
        # Unix socket paths are pinned now, before the guest can touch them.
        for endpoint in self.endpoints:
            if endpoint.is_unix_path and endpoint.path not in self.pinned:
                self.pinned[endpoint.path] = PinnedSocket(endpoint.path)

    @classmethod
    def here(cls, **limits: object) -> "Policy":
        """Read-write access to the current directory and everything below it."""
        return cls(write=[os.getcwd()], **limits)  # type: ignore[arg-type]

    @property
    def grants(self) -> tuple[Grant, ...]:
        """The grants, longest path first (the first that contains a path is
        the one its spelling names)."""
        return self.tree.grants

    @grants.setter
    def grants(self, grants: tuple[Grant, ...]) -> None:
        # Which grant holds which is worked out once, here, for every lookup.
        self.tree = GrantTree(grants)

    # --- lifetime --------------------------------------------------------------

    def close(self) -> None:
        """Close the grant directory and pinned socket fds; the policy denies
        everything after."""
        for grant in self.grants:
            close_grant(grant)
        self.grants = ()
        for pinned in self.pinned.values():
            pinned.close()
        if self.ptys is not None:
            self.ptys.close()
            self.ptys = None

    def __enter__(self) -> "Policy":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- paths -------------------------------------------------------------------

    def open(self, path: PathArg, flags: int, mode: int, cwd: str, *,
             syscall: str = "open", across: bool = True) -> int:
        """Open a guest path beneath its grant; return a host fd the caller owns.

        *flags* are the guest's open(2) flags (``O_NOFOLLOW``, ``O_DIRECTORY``,
        ``O_EXCL`` … are honoured by the kernel; unknown bits are dropped as
        ``openat`` would).  ``O_CLOEXEC`` and ``O_NOCTTY`` are always added:
        the host never hands its fds to a child, and a guest-opened terminal
        must not become the host's controlling terminal; the syscall layer
        keeps the guest's own ``O_CLOEXEC`` in its fd table.

        Writing (``O_WRONLY``, ``O_RDWR``, ``O_CREAT``, ``O_TRUNC``,
        ``O_APPEND``, ``O_TMPFILE``; see :func:`~minikvm.sandbox.openat2.open_writes`)
        needs the file to *be* in a write grant — where the kernel finds it,
        not where the guest's spelling points (:meth:`GrantTree.open_for_writing
        <minikvm.sandbox.grants.GrantTree.open_for_writing>`).
        ``O_PATH`` is allowed in any grant: such an fd cannot read or write,
        only name the file for ``fstat`` or as a directory for a later ``*at``
        call — which the syscall layer brings back here with that directory's
        guest path as *cwd*.

        The caller must ask :meth:`is_virtual_device` first: this method only
        knows grants.  Opening a FIFO blocks the host as it would a process;
        pass ``O_NONBLOCK`` if that matters.
        """
        absolute, trailing_slash = _absolute(path, cwd)
        asked_flags, asked_mode = flags, mode
        flags &= VALID_OPEN_FLAGS
        if flags & O_PATH:
            flags &= O_PATH_FLAGS
            writes = False
        else:
            writes = open_writes(flags)
            flags |= O_NOCTTY
        flags |= O_CLOEXEC
        creates = bool(flags & O_CREAT) or flags & O_TMPFILE == O_TMPFILE
        mode = mode & MODE_BITS if creates else 0
        if self.tree.is_above(absolute):
            return self._open_above(absolute, flags, writes, syscall)
        if creates and self.tree.is_above(posixpath.dirname(absolute)):
            raise self._deny(syscall, absolute, "creating a file in a directory above "
                             "a grant (those are read-only)")
        grant = self._grant_for(absolute, syscall)
        root, relative = self.tree.beneath_root(grant, absolute)
        if root.is_file:
            return self._open_file_grant(root, absolute, flags, writes, trailing_slash, syscall)
        if trailing_slash and relative != ".":
            relative += "/"     # "file/" is ENOTDIR, "dir/" with O_CREAT is EISDIR
        if not writes:
            try:
                return self.tree.openat2(root, relative, flags, mode, absolute)
            except Refusal as refusal:
                other = self._in_another_grant(absolute, refusal, across,
                                               not flags & O_NOFOLLOW, trailing_slash)
                if other is None:
                    raise self._deny(syscall, absolute, refusal.reason,
                                     hidden=refusal.hidden) from None
            return self.open(other, asked_flags, asked_mode, "/", syscall=syscall, across=False)
        if self.tree.uniform(root):
            if not root.writable:
                raise self._deny(syscall, absolute,
                                 f"opening for writing in read-only grant {grant.path}")
            return self._lookup(syscall, absolute, self.tree.openat2, root, relative,
                                flags, mode, absolute)
        return self._lookup(syscall, absolute, self.tree.open_for_writing, root, relative,
                            flags, mode, absolute)

    def _open_file_grant(self, grant: Grant, absolute: str, flags: int, writes: bool,
                         trailing_slash: bool, syscall: str) -> int:
        """Open the one file a file grant shows (read-only: the system view's
        ``/etc/passwd``): the object held since the policy was built is
        reopened through ``/proc/self/fd``, so no name is looked up again —
        a symlink the host has there was followed once, when granted."""
        if writes:
            raise self._deny(syscall, absolute, f"opening for writing read-only file {absolute}")
        if trailing_slash:
            raise OSError(errno.ENOTDIR, "not a directory", absolute)
        return reopen(grant.dirfd, flags & ~(O_CREAT | O_NOFOLLOW), 0, absolute)

    def _open_above(self, absolute: str, flags: int, writes: bool, syscall: str) -> int:
        """Open a directory above a grant, read-only: an ``O_PATH`` fd always.

        The host never reads such a directory (Landlock would refuse it, and
        its entries are not the guest's business): its listing is made from
        the grants (:meth:`visible_entries`), and a read is ``EISDIR`` (the
        syscall layer's :class:`~minikvm.process.fdtable.AboveGrantDirectory`).
        """
        if writes:
            raise self._deny(syscall, absolute, "opening for writing a directory above a "
                             "grant (those are read-only)")
        fd = self.tree.open_above(absolute)
        assert fd is not None, absolute
        return fd

    def visible_entries(self, path: PathArg, cwd: str = "/") -> Optional[frozenset[str]]:
        """The names a listing of directory *path* may show, or None for all.

        None for a directory in a grant (the host's listing is the guest's);
        for a directory above the grants, the next component of the way down
        to each grant below it — everything else in it is hidden.
        """
        absolute, _ = _absolute(path, cwd)
        if not self.tree.is_above(absolute):
            return None
        return self.tree.entries_above(absolute)

    def resolve_parent(self, path: PathArg, cwd: str, write: bool, *,
                       syscall: str = "resolve_parent") -> Parent:
        """Open the directory that holds *path*; return it with the final name.

        For the calls that act on a directory *entry* rather than on a file:
        mkdirat, unlinkat, renameat, linkat, symlinkat, mknodat, readlinkat,
        fstatat/utimensat/fchownat/fchmodat *without following* a final
        symlink.  The parent is opened ``O_PATH|O_DIRECTORY`` beneath its grant
        with ``openat2``; *name* is a single component (never ``/``, ``.`` or
        ``..``), so ``os.unlink(name, dir_fd=dirfd)`` and friends cannot walk
        anywhere: the kernel looks *name* up in that one directory.

        That is safe even when *name* is a symlink, because these calls act on
        the link itself: unlink and rename remove or move the link, mkdir and
        symlink fail with EEXIST, link (with flags 0) links the link.  It is
        **not** safe for calls that *follow* a final symlink (``stat`` with
        follow, ``utimensat`` without ``AT_SYMLINK_NOFOLLOW``, ``chmod``):
        those would follow a link out of the grant.  For them, open the file
        with :meth:`open` and ``O_PATH`` and use the ``f*`` call on that fd
        (as :meth:`stat` and :meth:`access` do), or :meth:`open_to_change`.
        A guest's trailing slash is dropped for the same reason: ``"link/"``
        would make the kernel follow.

        *write* asks for the parent directory to *be* in a write grant, where
        the kernel found it (``/w/l/x`` with ``/w/l -> ro`` is in ``/w/ro``).
        Both ends of a rename need it, and so do both ends of a hard link: a
        link to a file *is* the file, so linking a read-only file into a
        writable directory would make it writable.  A grant directory itself
        cannot be the entry (it would leave its own grant), nor a directory
        on the way down to a nested grant (renaming ``/w/a`` would carry the
        read-only ``/w/a/ro`` along), nor anything whose parent is outside
        every grant.
        """
        absolute, _ = _absolute(path, cwd)
        if any(grant.path == absolute for grant in self.grants) or absolute == "/":
            raise self._deny(syscall, absolute,
                             "a grant directory itself cannot be created, removed, "
                             "renamed or replaced")
        parent, name = posixpath.split(absolute)
        if self.tree.is_above(parent):
            if write:
                raise self._deny(syscall, absolute, "changing an entry in a directory "
                                 "above a grant (those are read-only)")
            if name not in self.tree.entries_above(parent):
                raise self._deny(syscall, absolute, "outside allowed paths", hidden=True)
            dirfd = self.tree.open_above(parent)
            assert dirfd is not None, parent
            return Parent(dirfd, name)
        grant = self._grant_for(parent, syscall, shown=absolute)
        root, relative = self.tree.beneath_root(grant, parent)
        if write and self.tree.uniform(root) and not root.writable:
            raise self._deny(syscall, absolute,
                             f"changing an entry in read-only grant {grant.path}")
        assert name not in ("", ".", "..") and "/" not in name, name
        dirfd = self._lookup(syscall, absolute, self.tree.openat2, root, relative,
                             O_PATH | O_DIRECTORY | O_CLOEXEC, 0, absolute)
        try:
            if write and not self.tree.uniform(root):
                self._lookup(syscall, absolute, self.tree.require_writable, dirfd, root)
            if write and self.tree.protected:
                self._lookup(syscall, absolute, self.tree.refuse_protected, dirfd, name)
        except BaseException:
            os.close(dirfd)
            raise
        return Parent(dirfd, name)

    def open_to_change(self, path: PathArg, cwd: str, follow: bool, *,
                       syscall: str = "chmod") -> int:
        """An ``O_PATH`` fd on a file whose metadata the guest may change.

        For chmod, utimensat and chown by path: the file (a final symlink
        followed when *follow*, beneath the grant) must be in a write grant
        where the kernel found it, and must not be a grant directory.
        Without *follow* the entry itself is changed, which
        :meth:`resolve_parent` decides.  The caller closes the fd.
        """
        if not follow:
            with self.resolve_parent(path, cwd, write=True, syscall=syscall):
                pass
            return self._open_path(path, cwd, False, syscall)
        fd = self._open_path(path, cwd, True, syscall)
        try:
            absolute, _ = _absolute(path, cwd)
            self.check_may_change(fd, absolute, syscall=syscall)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def check_may_change(self, host_fd: int, path: str, *, syscall: str = "fchmod") -> None:
        """Raise unless the file host *host_fd* holds may be changed by the guest.

        *path* is the guest path it was opened by (for the message, and to
        find its root grant): the file must be in a write grant where it
        really is, and must not be a grant directory itself.
        """
        grant = self._grant_for(path, syscall)
        root, _ = self.tree.beneath_root(grant, path)
        if self.tree.uniform(root):
            if not root.writable:
                raise self._deny(syscall, path, f"changing a file in read-only grant "
                                 f"{grant.path}")
        else:
            self._lookup(syscall, path, self.tree.require_writable, host_fd, root)
        if identity(host_fd) in self.tree.roots:
            raise self._deny(syscall, path, "a grant directory itself cannot be changed")

    def stat(self, path: PathArg, cwd: str, follow: bool = True, *,
             syscall: str = "stat") -> os.stat_result:
        """``stat`` (or ``lstat`` when *follow* is false) of a path in a grant.

        The directories *above* a grant may be stat'ed too (``/`` and
        ``/tmp`` for a grant ``/tmp/x``): a program that makes a path
        canonical lstat()s every component on the way down — SQLite does
        before it opens a database — and the grant's own path names them
        already.  They are reached by ``..`` from the grant's fd, so what is
        stat'ed is the directory really above the grant, whatever the path
        string says.  Anything else outside the grants is ``ENOENT``.
        """
        fd = self._open_path(path, cwd, follow, syscall)
        try:
            return os.fstat(fd)
        finally:
            os.close(fd)

    def readlink(self, path: PathArg, cwd: str, *, syscall: str = "readlink") -> str:
        """The target of a symlink in a grant, as text (``os.fsencode`` it back).

        Reading a link's text is harmless — following it is what the grant
        guards — so the target may well name a place outside every grant.
        """
        fd = self._open_path(path, cwd, False, syscall)
        try:
            if not stat_module.S_ISLNK(os.fstat(fd).st_mode):
                absolute, _ = _absolute(path, cwd)
                raise OSError(errno.EINVAL, "not a symbolic link", absolute)
            return os.readlink("", dir_fd=fd)   # readlinkat(fd, "") reads fd's link
        finally:
            os.close(fd)

    def access(self, path: PathArg, mode: int, cwd: str, *, follow: bool = True,
               effective_ids: bool = False, syscall: str = "access") -> None:
        """Check ``access(path, mode)`` the way the guest would see it.

        ``W_OK`` for a file in a read-only grant (where the kernel finds it)
        is answered ``EACCES``, as for a file the guest may not write;
        otherwise the host kernel answers for the file beneath the grant
        (``faccessat2`` with ``AT_EMPTY_PATH`` on an ``O_PATH`` fd).  Returns
        None when access is allowed.
        """
        if mode & ~(os.R_OK | os.W_OK | os.X_OK):
            raise OSError(errno.EINVAL, f"access mode {mode:#o} has unknown bits")
        absolute, _ = _absolute(path, cwd)
        fd = self._open_path(path, cwd, follow, syscall)
        try:
            if mode & os.W_OK and self.tree.is_above(absolute):
                raise self._deny(syscall, absolute, "write access in a directory above "
                                 "a grant (those are read-only)")
            if mode & os.W_OK:
                grant = self._grant_for(absolute, syscall)
                root, _ = self.tree.beneath_root(grant, absolute)
                holder = self.tree.holding(fd, root)
                if holder is None or not holder.writable:
                    raise self._deny(syscall, absolute, "write access in a read-only grant")
            faccessat2(fd, b"", mode,
                       AT_EMPTY_PATH | (AT_EACCESS if effective_ids else 0))
        finally:
            os.close(fd)

    def is_virtual_device(self, path: PathArg, cwd: str = "/") -> Optional[str]:
        """The name of the virtual device *path* denotes (``"null"`` …), or None."""
        absolute, _ = _absolute(path, cwd)
        return VIRTUAL_DEVICES.get(absolute)

    # --- sockets -------------------------------------------------------------------

    @staticmethod
    def parse_endpoint(text: str) -> Endpoint:
        """Parse an endpoint (see :func:`~minikvm.sandbox.endpoints.parse_endpoint`)."""
        try:
            return parse_endpoint(text)
        except EndpointError as error:
            raise PolicyError(str(error)) from None

    @staticmethod
    def resolve_endpoint(text: str) -> tuple[Endpoint, ...]:
        """The endpoints *text* names, a host name resolved now (see
        :func:`~minikvm.sandbox.endpoints.resolve_endpoints`)."""
        try:
            return resolve_endpoints(text)
        except EndpointError as error:
            raise PolicyError(str(error)) from None

    # --- limits and refusals -------------------------------------------------------

    def check_fd_count(self, open_after: int, *, syscall: str = "open") -> None:
        """Raise ``EMFILE`` if the guest would hold more than ``max_fds`` files."""
        if open_after > self.max_fds:
            raise self._deny(syscall, "", f"more than {self.max_fds} open files",
                             errno.EMFILE)

    def check_file_size(self, size: int, *, path: str = "",
                        syscall: str = "write") -> None:
        """Raise ``EFBIG`` if a write or truncate would make a file too large."""
        if self.max_file_size is not None and size > self.max_file_size:
            raise self._deny(syscall, path, f"file would grow to {size} bytes, "
                             f"over the {self.max_file_size}-byte limit", errno.EFBIG)

    def refuse(self, syscall: str, detail: str = "", reason: str | None = None) -> PolicyDenied:
        """Record and return the ``EPERM`` for a call in :data:`REFUSED_SYSCALLS`
        (or a request refused whatever the grants, saying why in *reason*:
        ``TIOCSTI``).

        Use it as ``raise policy.refuse("execve", path)``.
        """
        reason = reason or REFUSED_SYSCALLS.get(syscall, "refused by the sandbox")
        return self._deny(syscall, detail, reason, REFUSED_ERRNO)

    # --- what the policy is, and what it refused --------------------------------------

    @property
    def denials_dropped(self) -> int:
        """Denials counted but not kept (past :data:`MAX_RECORDED_DENIALS`)."""
        return self.denials.dropped

    @property
    def read_paths(self) -> tuple[str, ...]:
        """The read-only grant directories (for :mod:`minikvm.sandbox.landlock`)."""
        return tuple(sorted(g.host_path for g in self.grants if not g.writable))

    @property
    def write_paths(self) -> tuple[str, ...]:
        """The read-write grant directories (for :mod:`minikvm.sandbox.landlock`)."""
        return tuple(sorted(g.host_path for g in self.grants if g.writable))

    @property
    def connect_ports(self) -> tuple[int, ...]:
        """The TCP ports of the IP endpoints (Landlock can filter ports only)."""
        return tuple(sorted({e.port for e in self.endpoints
                             if e.family != socket.AF_UNIX and e.port != ANY_PORT}))

    @property
    def connect_any_port(self) -> bool:
        """Whether some connect may go to any port (``HOST:*``, ``allow_net``):
        then Landlock cannot narrow TCP connects by port."""
        return self.allow_net or any(e.port == ANY_PORT and e.family != socket.AF_UNIX
                                     for e in self.endpoints)

    @property
    def listen_ports(self) -> tuple[int, ...]:
        """The TCP ports the guest may bind (for Landlock): its listening
        ports, and 0 — "any free port", a client choosing its source
        (:meth:`check_bind`) — when it may reach an IP endpoint."""
        ports = {e.port for e in self.listen_endpoints}
        if self._reaches_ip():
            ports.add(0)
        return tuple(sorted(ports))

    def describe(self) -> str:
        """The policy in a few lines, for ``--audit`` and ``minikvm doctor``."""
        lines = ["sandbox policy (deny by default):"]
        for grant in sorted(self.grants, key=lambda g: g.path):
            kind = "read-write" if grant.writable else "read-only "
            shown = f" (host {grant.host})" if grant.host else ""
            lines.append(f"  {kind}  {grant.path}{shown}")
        if not self.grants:
            lines.append("  no file system access")
        devices = " ".join(sorted(VIRTUAL_DEVICES))
        lines.append(f"  devices     {devices} (virtual)")
        connect = ", ".join(e.describe() + (f" ({self.pinned[e.path].problem})"
                                           if e.is_unix_path and self.pinned[e.path].problem
                                           else "")
                            for e in self.endpoints) or "none"
        lines.append(f"  connect     {connect}")
        if self.allow_net:
            lines.append("  network     every IP address but loopback and link-local (allow_net)")
        if self.listen_endpoints:
            lines.append("  listen      " + ", ".join(e.describe() for e in self.listen_endpoints))
        size = "unlimited" if self.max_file_size is None else f"{self.max_file_size} bytes"
        lines.append(f"  limits      {self.max_fds} open files; file size {size}")
        lines.append(f"  refused     {', '.join(REFUSED_SYSCALLS)} (EPERM)")
        lines.append("  paths resolved by openat2(RESOLVE_BENEATH|RESOLVE_NO_MAGICLINKS)")
        return "\n".join(lines)

    def summary(self) -> str:
        """The denial log grouped and counted, for ``--audit`` at exit."""
        return self.denials.summary()

    # --- internals ------------------------------------------------------------------

    def _deny(self, syscall: str, path: str, reason: str,
              err: int = DENIED_ERRNO, hidden: bool = False) -> PolicyDenied:
        """Record a denial and return the exception to raise.

        *hidden* makes it :data:`HIDDEN_ERRNO`: the path does not exist for
        the guest, though the audit log still names it (reason ``hidden: …``).
        """
        if hidden:
            err = HIDDEN_ERRNO
        self.denials.record(Denial(syscall, path, err,
                                   f"hidden: {reason}" if hidden else reason))
        return PolicyDenied(err, reason, path, hidden=hidden)

    def _lookup(self, syscall: str, shown: str, lookup: Callable[..., T], *args: object) -> T:
        """Call one of the grant tree's lookups, recording a refusal as a denial."""
        try:
            return lookup(*args)
        except Refusal as refusal:
            raise self._deny(syscall, shown, refusal.reason, hidden=refusal.hidden) from None

    def _grant_for(self, absolute: str, syscall: str, shown: str = "") -> Grant:
        """The most specific grant containing *absolute*, or ``ENOENT`` (hidden)."""
        grant = self.tree.find(absolute)
        if grant is not None:
            return grant
        raise self._deny(syscall, shown or absolute, "outside allowed paths", hidden=True)

    def _in_another_grant(self, absolute: str, refusal: Refusal, across: bool, follow: bool,
                          trailing_slash: bool) -> Optional[str]:
        """Where a lookup that a symlink led out of its grant lands in the
        guest's view, if in another grant (:mod:`minikvm.sandbox.links`);
        None to keep it hidden.  *across* is False on the second lookup."""
        if not across or not refusal.hidden:
            return None
        resolved = follow_between_grants(self.tree, absolute, follow)
        if resolved is None or resolved == absolute:
            return None
        return resolved + "/" if trailing_slash and resolved != "/" else resolved

    def _open_path(self, path: PathArg, cwd: str, follow: bool, syscall: str,
                   across: bool = True) -> int:
        """An ``O_PATH`` fd for *path* beneath its grant (any grant will do), or
        on the directory above a grant it names."""
        absolute, trailing_slash = _absolute(path, cwd)
        above = self.tree.open_above(absolute)
        if above is not None:
            return above
        grant = self._grant_for(absolute, syscall)
        root, relative = self.tree.beneath_root(grant, absolute)
        if root.is_file:
            if trailing_slash:
                raise OSError(errno.ENOTDIR, "not a directory", absolute)
            return os.dup(root.dirfd)
        if trailing_slash and relative != ".":
            relative += "/"
        flags = O_PATH | O_CLOEXEC | (0 if follow else O_NOFOLLOW)
        try:
            return self.tree.openat2(root, relative, flags, 0, absolute)
        except Refusal as refusal:
            other = self._in_another_grant(absolute, refusal, across, follow, trailing_slash)
            if other is None:
                raise self._deny(syscall, absolute, refusal.reason,
                                 hidden=refusal.hidden) from None
        return self._open_path(other, "/", follow, syscall, across=False)

# --- helpers ---------------------------------------------------------------------


def _path_list(paths: Iterable[PathArg], name: str) -> list[PathArg]:
    """*paths* as a list, refusing a lone path (which would iterate by letter)."""
    if isinstance(paths, (str, bytes, os.PathLike)):
        raise PolicyError(f"{name}={os.fsdecode(os.fspath(paths))!r}: give a list of "
                          f"directories, e.g. {name}=[{os.fsdecode(os.fspath(paths))!r}]")
    return list(paths)


__all__ = [
    "Policy", "PolicyDenied", "PolicyError", "Denial", "Grant", "Endpoint", "Parent", "Mount",
    "MAX_RECORDED_DENIALS", "VIRTUAL_DEVICES", "REFUSED_SYSCALLS", "REFUSED_ERRNO", "DENIED_ERRNO",
    "HIDDEN_ERRNO",
    "openat2", "faccessat2", "open_how",
]
