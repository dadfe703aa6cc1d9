"""Layer 6 — the synthesized ``/proc``: what the program learns about itself
and its machine, made from the sandbox, never read from the host.

The host's ``/proc`` describes minikvm (a Python process with the host's
environment, its own fds, the host's memory and CPUs); handing any of it to
the guest would leak the host and mislead the program.  So ``/proc`` is a
tree built here from the :class:`~minikvm.process.process.Process`, as
Linux's procfs is built from the task:

================================  =========================================================
``/proc/self``                    link to ``<pid>``; ``thread-self`` to ``<pid>/task/<tid>``
``/proc/<pid>/`` (the guest's     ``cmdline``, ``environ``, ``comm``, ``maps`` (from the
only pid; its threads' tids       memory manager's VMAs), ``status``, ``stat``, ``statm``,
also work, unlisted, as on        ``limits``, ``mounts``, ``mountinfo`` (the view: the grants
Linux)                            as bind mounts); links ``exe``, ``cwd``, ``root`` (``/``);
                                  ``fd/N`` links and ``fdinfo/N``; ``task/<tid>/``
``/proc/`` files (made in         ``cpuinfo`` (the vCPU as CPUID shows it, one processor),
``proc_machine``)                 ``meminfo`` (the memory limit), ``uptime`` (the sandbox's),
                                  ``loadavg``, ``stat``, ``version``, ``filesystems``,
                                  ``mounts`` (link to ``self/mounts``)
``/proc/sys/``                    ``kernel/{ostype,osrelease,pid_max,hostname}``,
                                  ``vm/overcommit_memory``
``/dev/fd``, ``/dev/stdin`` …     links to ``/proc/self/fd`` and ``/proc/self/fd/0..2``
================================  =========================================================

The sandbox's *other* processes each have a ``/proc/<pid>/`` too, listed
in ``/proc`` so that ``ps`` finds them: ``stat``, ``status``, ``statm``,
``cmdline`` and ``comm``, made from what the sandbox's process table says of
them (:func:`_other_directory`) — their ids and state in its records, their
name and argv in the text each process publishes there at fork, exec and
``PR_SET_NAME`` (:class:`minikvm.tree.table.ProcessTable`).  Their memory,
fds and links are not shown.

Everything else under ``/proc`` is ``ENOENT`` (``/proc/1``, the host's
pids, ``/proc/kcore``…).  Files are made when they are opened (the text is
generated then, as Linux's seq files are) and are read-only: opening for
writing is ``EACCES``, as for an unprivileged user; directories cannot be
written (``EISDIR``) or created in (``EACCES``).

Links lead *out* of the tree by guest path, never by host object:
``/proc/self/root/etc/shadow`` is the guest path ``/etc/shadow`` handed to
the policy (hidden unless granted), ``/proc/self/cwd/x`` is ``<cwd>/x``,
and ``/proc/self/fd/N/x`` is the guest path of directory fd N joined with
``x``.  A followed ``fd/N`` at the end of a path is the open file itself
(:class:`OwnFd`), which the caller reopens from the fd table.

:func:`lookup` walks a path; the system calls (open, stat, readlink,
access, getdents, chdir) ask it first and hand only what it does not own
to the policy.
"""

from __future__ import annotations

import ctypes
import errno
import os
import posixpath
import stat as stat_module
import struct
import time
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, NamedTuple, Union

from minikvm.errors import SyscallError
from minikvm.linux_abi import (O_ACCMODE, O_CLOEXEC, O_CREAT, O_DIRECTORY, O_EXCL, O_PATH,
                               O_RDONLY, O_TRUNC)
from minikvm.machine.mm import PROT_EXEC, PROT_READ, PROT_WRITE
from minikvm.process.fdtable import HostFile, MemFd, OpenFile, SyntheticDirectory, SyntheticFile
from minikvm.syscalls.info import NODE_NAME, ONLY_CPU
from minikvm.syscalls.process import RLIM_INFINITY, resource_limits, sys_getppid
from minikvm.syscalls.proc_machine import (CLOCK_TICKS, cpuinfo, guest_cpus, loadavg, meminfo,
                                           system_stat, uptime, version)
from minikvm.syscalls.time import cpu_seconds
from minikvm.x86 import PAGE_SIZE

if TYPE_CHECKING:
    from minikvm.process.process import Process

#: What the process table says of another process: a
#: :class:`minikvm.tree.table.Description` (a higher layer: reached through
#: ``proc.family``, never imported).
Description = Any

#: The kinds of node, as their ``d_type`` (DT_x is S_IFx >> 12).
DIRECTORY, FILE, LINK = stat_module.S_IFDIR, stat_module.S_IFREG, stat_module.S_IFLNK
#: ``st_dev`` of everything under /proc: one made-up device (0:22, an
#: anonymous block device number as Linux gives procfs)
PROC_DEVICE = os.makedev(0, 22)
#: statfs's f_type for /proc (linux/magic.h)
PROC_SUPER_MAGIC = 0x9FA0
#: How many links a path may pass before ELOOP (Linux's MAXSYMLINKS).
MAX_LINKS = 40
#: ``/proc/sys/kernel/pid_max``: Linux's default on 64-bit machines.
PID_MAX = 4194304
#: Shown by readlink of ``/proc/self/fd/N`` when the host path behind one of
#: the program's stdio fds lies outside its view (``< ~/secret``): the
#: name would tell the guest about the host's file system.
HIDDEN_TARGET = "[outside the sandbox's view]"
#: The host paths of stdio fds that may be shown as they are: terminals and
#: the null device exist in every view.
SHOWN_DEVICES = ("/dev/pts/", "/dev/tty", "/dev/console", "/dev/null")
#: ``SIG_DFL``, ``SIG_IGN`` as rt_sigaction records them
SIG_DFL, SIG_IGN = 0, 1
NSIG = 64


@dataclass(frozen=True)
class Node:
    """One name in the synthesized tree: a directory (*children*), a file
    (*contents*, made when opened) or a link (*target*)."""
    path: str
    kind: int
    mode: int
    uid: int = 0
    children: Callable[[], dict[str, "Node"]] | None = None
    contents: Callable[[], bytes] | None = None
    target: Callable[[], str] | None = None
    #: a ``fd/N`` link: the fd it names (following it reaches the open file)
    fd: int | None = None
    #: listed by its directory (a thread's ``/proc/<tid>`` is not)
    listed: bool = True
    #: a directory's one child by name, when finding it need not make all
    #: of :attr:`children` (``/proc``: another process's directory needs a
    #: look in the process table, ``/proc/self`` does not)
    child: Callable[[str], "Node | None"] | None = None

    def stat(self) -> os.stat_result:
        """What stat shows: size 0 (as Linux's proc files: read to EOF),
        times 0, a stable inode from the path."""
        return os.stat_result((self.kind | self.mode, inode(self.path), PROC_DEVICE,
                               2 if self.kind == DIRECTORY else 1, self.uid,
                               self.uid and os.getgid(), 0, 0, 0, 0),
                              {"st_atime_ns": 0, "st_mtime_ns": 0, "st_ctime_ns": 0,
                               "st_blksize": 1024, "st_blocks": 0, "st_rdev": 0})


class Redirect(NamedTuple):
    """A path that left the tree through a link (``root``, ``cwd``, ``exe``,
    a directory's ``fd/N``): the guest path to hand to the policy."""
    path: str


class OwnFd(NamedTuple):
    """A followed ``fd/N`` at the end of a path: the guest's open fd *fd*."""
    fd: int


Found = Union[Node, Redirect, OwnFd]


def inode(path: str) -> int:
    """A stable inode number for a synthesized path."""
    return zlib.crc32(os.fsencode(path)) | 1


def owns(path: str) -> bool:
    """Whether normalised absolute *path* is in the synthesized tree."""
    return path == "/proc" or path.startswith("/proc/") or path in DEV_LINKS \
        or path.startswith("/dev/fd/")


#: The /dev names that are links into /proc, as on Linux.
DEV_LINKS = {"/dev/fd": "/proc/self/fd", "/dev/stdin": "/proc/self/fd/0",
             "/dev/stdout": "/proc/self/fd/1", "/dev/stderr": "/proc/self/fd/2"}


def lookup(proc: Process, path: str, follow: bool = True, _links: int = 0) -> Found | None:
    """Walk normalised absolute guest *path* through the synthesized tree.

    None when the tree does not own *path* (ask the policy); otherwise the
    :class:`Node`, or where a link led: a :class:`Redirect` out of the tree
    or an :class:`OwnFd`.  A final link is followed when *follow*; links
    before the end always are.  ENOENT for a name that does not exist,
    ENOTDIR for a name below a file, ELOOP after :data:`MAX_LINKS` links.
    """
    if path.endswith("/") and path != "/":
        path, follow = path.rstrip("/"), True      # "link/" names where the link leads
    if not owns(path):
        return None
    if _links > MAX_LINKS:
        raise SyscallError(errno.ELOOP, f"{path}: too many levels of links")
    parts = [part for part in path.split("/") if part]
    if parts[0] == "dev":
        name = "/" + "/".join(parts[:2])
        if name not in DEV_LINKS:
            raise SyscallError(errno.ENOENT, f"{path}: no such file")
        return _walk(proc, _link(name, lambda: DEV_LINKS[name]), parts[2:], path, follow,
                     _links)
    return _walk(proc, proc_root(proc), parts[1:], path, follow, _links)


def _walk(proc: Process, node: Node, names: list[str], path: str, follow: bool,
          links: int) -> Found:
    for index in range(len(names) + 1):
        rest = names[index:]
        last = not rest
        if node.kind == LINK and (follow or not last):
            return _follow(proc, node, rest, follow, links)
        if last:
            return node
        if node.kind != DIRECTORY:
            raise SyscallError(errno.ENOTDIR, f"{path}: {node.path} is not a directory")
        assert node.children is not None
        child = (node.child(names[index]) if node.child is not None
                 else node.children().get(names[index]))
        if child is None:
            raise SyscallError(errno.ENOENT, f"{path}: no such file in the synthesized /proc")
        node = child
    return node


def _follow(proc: Process, link: Node, rest: list[str], follow: bool, links: int) -> Found:
    """Where *link* and the names after it lead."""
    if link.fd is not None:
        if not rest:
            return OwnFd(link.fd)
        entry = proc.fds.entries.get(link.fd)
        file = entry.file if entry is not None else None
        if isinstance(file, SyntheticDirectory) or (
                isinstance(file, HostFile) and file.path.startswith("/") and file.is_directory()):
            target = file.path
        else:
            raise SyscallError(errno.ENOTDIR, f"fd {link.fd} is not a directory")
    else:
        assert link.target is not None
        target = link.target()
    if not target.startswith("/"):      # self -> "1000": relative to the link's directory
        target = posixpath.join(posixpath.dirname(link.path), target)
    full = posixpath.normpath(posixpath.join(target, *rest))
    if full.startswith("//"):
        full = full[1:]
    found = lookup(proc, full, follow, links + 1)
    return Redirect(full) if found is None else found


# -- the tree ---------------------------------------------------------------------------
def _file(path: str, contents: Callable[[], bytes], uid: int = 0, mode: int = 0o444) -> Node:
    return Node(path, FILE, mode, uid, contents=contents)


def _link(path: str, target: Callable[[], str], uid: int = 0) -> Node:
    return Node(path, LINK, 0o777, uid, target=target)


def _directory(path: str, children: Callable[[], dict[str, Node]], uid: int = 0,
               listed: bool = True,
               child: Callable[[str], Node | None] | None = None) -> Node:
    return Node(path, DIRECTORY, 0o555, uid, children=children, listed=listed, child=child)


def proc_root(proc: Process) -> Node:
    """``/proc`` itself."""
    def own() -> dict[str, Node]:
        tids = {str(tid): _pid_directory(proc, f"/proc/{tid}", tid, listed=tid == proc.pid)
                for tid in proc.threads.threads}
        tids[str(proc.pid)] = _pid_directory(proc, f"/proc/{proc.pid}", proc.pid)
        entries: dict[str, Node] = {
            "self": _link("/proc/self", lambda: str(proc.pid)),
            "thread-self": _link("/proc/thread-self",
                                 lambda: f"{proc.pid}/task/{proc.threads.current}"),
            **tids,
            "cpuinfo": _file("/proc/cpuinfo", lambda: cpuinfo(proc)),
            "meminfo": _file("/proc/meminfo", lambda: meminfo(proc)),
            "uptime": _file("/proc/uptime", lambda: uptime(proc)),
            "loadavg": _file("/proc/loadavg", lambda: loadavg(proc)),
            "stat": _file("/proc/stat", lambda: system_stat(proc)),
            "version": _file("/proc/version", lambda: version(proc)),
            "filesystems": _file("/proc/filesystems", lambda: FILESYSTEMS),
            "mounts": _link("/proc/mounts", lambda: "self/mounts"),
            "sys": _directory("/proc/sys", lambda: _sys_children()),
        }
        return entries

    def children() -> dict[str, Node]:
        entries = own()
        if proc.family is not None:
            for record in sorted(proc.family.table.records(), key=lambda record: record.pid):
                if str(record.pid) not in entries:
                    entries[str(record.pid)] = _other_directory(proc, record.pid)
        return entries

    def child(name: str) -> Node | None:
        node = own().get(name)
        if node is None and name.isdigit() and proc.family is not None \
                and proc.family.describe(int(name)) is not None:
            node = _other_directory(proc, int(name))
        return node
    return _directory("/proc", children, child=child)


def _sys_children() -> dict[str, Node]:
    host = os.uname()
    kernel = {"ostype": b"Linux\n", "osrelease": os.fsencode(host.release) + b"\n",
              "pid_max": b"%d\n" % PID_MAX, "hostname": os.fsencode(NODE_NAME) + b"\n"}
    vm = {"overcommit_memory": b"0\n"}

    def files(base: str, table: dict[str, bytes]) -> Callable[[], dict[str, Node]]:
        return lambda: {name: _file(f"{base}/{name}", lambda value=value: value,
                                    mode=0o644 if name == "hostname" else 0o444)
                        for name, value in table.items()}
    return {"kernel": _directory("/proc/sys/kernel", files("/proc/sys/kernel", kernel)),
            "vm": _directory("/proc/sys/vm", files("/proc/sys/vm", vm))}


def _pid_directory(proc: Process, base: str, tid: int, listed: bool = True,
                   in_task: bool = False) -> Node:
    """``/proc/<pid>/`` (or a thread's ``/proc/<pid>/task/<tid>/``)."""
    uid = os.getuid()

    def children() -> dict[str, Node]:
        entries = {
            "cmdline": _file(f"{base}/cmdline", lambda: cmdline(proc), uid),
            "environ": _file(f"{base}/environ", lambda: environ(proc), uid, 0o400),
            "comm": _file(f"{base}/comm", lambda: proc.name + b"\n", uid, 0o644),
            "maps": _file(f"{base}/maps", lambda: maps(proc), uid),
            "status": _file(f"{base}/status", lambda: status(proc, tid), uid),
            "stat": _file(f"{base}/stat", lambda: process_stat(proc, tid), uid),
            "statm": _file(f"{base}/statm", lambda: statm(proc), uid),
            "limits": _file(f"{base}/limits", lambda: limits(proc), uid),
            "mounts": _file(f"{base}/mounts", lambda: mounts(proc), uid),
            "mountinfo": _file(f"{base}/mountinfo", lambda: mountinfo(proc), uid),
            "exe": _link(f"{base}/exe", lambda: proc.exe_path, uid),
            "cwd": _link(f"{base}/cwd", lambda: proc.cwd, uid),
            "root": _link(f"{base}/root", lambda: "/", uid),
            "fd": _directory(f"{base}/fd", lambda: _fd_children(proc, f"{base}/fd"), uid),
            "fdinfo": _directory(f"{base}/fdinfo",
                                 lambda: _fdinfo_children(proc, f"{base}/fdinfo"), uid),
        }
        if not in_task:
            entries["task"] = _directory(f"{base}/task", lambda: {
                str(thread): _pid_directory(proc, f"{base}/task/{thread}", thread, in_task=True)
                for thread in proc.threads.threads}, uid)
        return entries
    return _directory(base, children, uid, listed)


def _other_directory(proc: Process, pid: int) -> Node:
    """``/proc/<pid>/`` of another process of the sandbox: what the process
    table says of it (:meth:`ProcessTable.describe
    <minikvm.tree.table.ProcessTable.describe>` — its ids, state, name,
    argv and memory, which each process publishes itself), read anew at
    each open.  Its memory, fds, links and environment are not shown: they
    live in another host process, and Linux too shows them to their owner
    only (``ptrace`` access)."""
    base, uid = f"/proc/{pid}", os.getuid()

    def described() -> Description:
        description = proc.family.describe(pid) if proc.family is not None else None
        if description is None:
            raise SyscallError(errno.ESRCH, f"process {pid} has ended")
        return description

    def children() -> dict[str, Node]:
        return {
            "cmdline": _file(f"{base}/cmdline", lambda: described().cmdline, uid),
            "comm": _file(f"{base}/comm", lambda: described().comm + b"\n", uid, 0o644),
            "stat": _file(f"{base}/stat", lambda: other_stat(proc, described()), uid),
            "statm": _file(f"{base}/statm", lambda: other_statm(described()), uid),
            "status": _file(f"{base}/status", lambda: other_status(described()), uid),
        }
    return _directory(base, children, uid)


def _fd_children(proc: Process, base: str) -> dict[str, Node]:
    uid = os.getuid()
    nodes = {}
    for number in sorted(proc.fds.entries):
        file = proc.fds.entries[number].file
        mode = (0o500 if file.readable() else 0) | (0o300 if file.writable() else 0)
        nodes[str(number)] = Node(f"{base}/{number}", LINK, mode, uid, fd=number,
                                  target=lambda file=file: fd_target(proc, file))
    return nodes


def _fdinfo_children(proc: Process, base: str) -> dict[str, Node]:
    uid = os.getuid()
    return {str(number): _file(f"{base}/{number}", lambda number=number: fdinfo(proc, number),
                               uid, 0o400)
            for number in sorted(proc.fds.entries)}


def fd_target(proc: Process, file: OpenFile) -> str:
    """What readlink of ``/proc/self/fd/N`` shows: the guest's view of the
    file — ``pipe:[N]``, ``anon_inode:[eventfd]``, the guest path it was
    opened by — and for the stdio minikvm was given, the host's name only
    when the guest's view holds it (a terminal, a granted file).  A memfd's
    ``/memfd:NAME (deleted)`` is minikvm's own text, never a host name."""
    target = file.link_target()
    if (isinstance(file, HostFile) and not isinstance(file, MemFd)
            and not file.path.startswith("/") and target.startswith("/")
            and not target.startswith(SHOWN_DEVICES)
            and not any(grant.host is None and grant.contains(target)
                        for grant in proc.policy.grants)):
        # (A mount — the private /tmp — shows a host directory at another
        # name: the host's name of a file is not the guest's there.)
        return HIDDEN_TARGET
    return target


# -- the contents -----------------------------------------------------------------------
def cmdline(proc: Process) -> bytes:
    """argv, each NUL-terminated, as ``/proc/<pid>/cmdline``."""
    return b"".join(argument + b"\0" for argument in proc.argv)


def environ(proc: Process) -> bytes:
    """The initial environment, each NUL-terminated."""
    return b"".join(variable + b"\0" for variable in proc.env)


def _permissions(prot: int) -> str:
    return ("r" if prot & PROT_READ else "-") + ("w" if prot & PROT_WRITE else "-") + \
        ("x" if prot & PROT_EXEC else "-") + "p"


#: where a maps line's name starts (fs/proc/task_mmu.c: 25 + 6 × sizeof(long) - 1)
MAPS_NAME_COLUMN = 72


def maps(proc: Process) -> bytes:
    """``/proc/<pid>/maps`` from the memory manager's record of the address
    space: one line per VMA, named ``[heap]``, ``[stack]`` or by the guest
    path of the file it maps.  Offsets, devices and inodes are 0: minikvm
    copies file contents into anonymous memory (a private mapping)."""
    lines = []
    for vma in proc.mm.vmas:
        line = f"{vma.start:08x}-{vma.end:08x} {_permissions(vma.prot)} 00000000 00:00 0"
        if vma.name:
            line = line.ljust(MAPS_NAME_COLUMN) + " " + vma.name
        lines.append(line + "\n")
    return "".join(lines).encode("utf-8", "surrogateescape")


def _memory_kib(proc: Process) -> dict[str, int]:
    """The Vm* numbers of status, in KiB: sizes from the VMAs, resident
    from the pages taken from the memory pool."""
    vmas = proc.mm.vmas
    size = sum(vma.size for vma in vmas)
    stack = sum(vma.size for vma in vmas if vma.name == "[stack]")
    exe = sum(vma.size for vma in vmas if vma.name == proc.exe_path and vma.prot & PROT_EXEC)
    data = sum(vma.size for vma in vmas if vma.prot & PROT_WRITE and vma.name != "[stack]")
    pool = proc.mm.user_pool
    return {"size": size >> 10, "rss": pool.used >> 10, "hwm": pool.peak >> 10,
            "stack": stack >> 10, "exe": exe >> 10, "data": data >> 10,
            "file": sum(vma.size for vma in vmas if vma.name.startswith("/")) >> 10}


def _signal_sets(proc: Process) -> tuple[int, int]:
    """(ignored, caught) signal masks from the recorded actions."""
    ignored = caught = 0
    for number, (handler, *_rest) in proc.signal_actions.items():
        if 1 <= number <= NSIG and handler == SIG_IGN:
            ignored |= 1 << (number - 1)
        elif 1 <= number <= NSIG and handler != SIG_DFL:
            caught |= 1 << (number - 1)
    return ignored, caught


def status(proc: Process, tid: int) -> bytes:
    """``/proc/<pid>/status``, the fields programs parse (Linux's order)."""
    uid, gid = os.getuid(), os.getgid()
    memory = _memory_kib(proc)
    ignored, caught = _signal_sets(proc)
    fd_size = max(64, 1 << (max(proc.fds.entries, default=0)).bit_length())
    name = proc.name.decode("utf-8", "replace")
    lines = [
        f"Name:\t{name}", f"Umask:\t{proc.umask:04o}", "State:\tR (running)",
        f"Tgid:\t{proc.pid}", "Ngid:\t0", f"Pid:\t{tid}",
        f"PPid:\t{sys_getppid(proc)}", "TracerPid:\t0",
        f"Uid:\t{uid}\t{uid}\t{uid}\t{uid}", f"Gid:\t{gid}\t{gid}\t{gid}\t{gid}",
        f"FDSize:\t{fd_size}", "Groups:\t", f"NStgid:\t{proc.pid}", f"NSpid:\t{tid}",
        f"NSpgid:\t{proc.pgid}", f"NSsid:\t{proc.sid}",
        f"VmPeak:\t{memory['size']:8d} kB", f"VmSize:\t{memory['size']:8d} kB",
        f"VmLck:\t{0:8d} kB", f"VmPin:\t{0:8d} kB",
        f"VmHWM:\t{memory['hwm']:8d} kB", f"VmRSS:\t{memory['rss']:8d} kB",
        f"RssAnon:\t{memory['rss']:8d} kB", f"RssFile:\t{0:8d} kB", f"RssShmem:\t{0:8d} kB",
        f"VmData:\t{memory['data']:8d} kB", f"VmStk:\t{memory['stack']:8d} kB",
        f"VmExe:\t{memory['exe']:8d} kB", f"VmLib:\t{0:8d} kB", f"VmPTE:\t{0:8d} kB",
        f"VmSwap:\t{0:8d} kB", f"Threads:\t{len(proc.threads)}", "SigQ:\t0/0",
        f"SigPnd:\t{0:016x}", f"ShdPnd:\t{proc.signal_pending:016x}",
        f"SigBlk:\t{proc.signal_mask:016x}", f"SigIgn:\t{ignored:016x}",
        f"SigCgt:\t{caught:016x}",
        "CapInh:\t0000000000000000", "CapPrm:\t0000000000000000",
        "CapEff:\t0000000000000000", "CapBnd:\t0000000000000000",
        "CapAmb:\t0000000000000000", "NoNewPrivs:\t1", "Seccomp:\t0",
        f"Cpus_allowed:\t{ONLY_CPU:x}",
        f"Cpus_allowed_list:\t{','.join(map(str, guest_cpus()))}",
        "Mems_allowed:\t1", "Mems_allowed_list:\t0",
        "voluntary_ctxt_switches:\t0", "nonvoluntary_ctxt_switches:\t0",
    ]
    return ("\n".join(lines) + "\n").encode()


def process_stat(proc: Process, tid: int) -> bytes:
    """``/proc/<pid>/stat``: the 52 fields of ``do_task_stat``, in order."""
    memory = _memory_kib(proc)
    user, system = cpu_seconds(proc)
    ignored, caught = _signal_sets(proc)
    stack_top = max((vma.end for vma in proc.mm.vmas if vma.name == "[stack]"), default=0)
    name = proc.name.decode("utf-8", "replace")
    fields = [
        tid, f"({name})", "R", sys_getppid(proc), proc.pgid, proc.sid,
        0, -1, 0x400000,                       # tty_nr, tpgid, flags (PF_FORKNOEXEC)
        0, 0, 0, 0,                            # minflt, cminflt, majflt, cmajflt
        int(user * CLOCK_TICKS), int(system * CLOCK_TICKS), 0, 0,
        20 + proc.nice, proc.nice, len(proc.threads), 0,
        0,                                     # starttime: the sandbox started with it
        memory["size"] << 10, (memory["rss"] << 10) // PAGE_SIZE, RLIM_INFINITY,
        0, 0, stack_top, 0, 0,                 # start/end code, start stack, esp, eip
        0, 0, ignored, caught,                 # signal, blocked (obsolete), sigignore, sigcatch
        0, 0, 0, 17, 0, 0, 0, 0, 0, 0,         # wchan … exit_signal SIGCHLD, cpu 0 …
        0, 0, proc.mm.brk_start, 0, 0, 0, 0, 0, 0,
    ]
    return (" ".join(str(field) for field in fields) + "\n").encode()


#: /proc/<pid>/status's words for the states (fs/proc/array.c ``task_state_array``)
STATE_NAMES = {"R": "R (running)", "S": "S (sleeping)", "T": "T (stopped)", "Z": "Z (zombie)"}


def _started_ticks(proc: Process, description: Description) -> int:
    """stat's starttime: clock ticks after the sandbox's start."""
    return max(0, int((description.start_ns / 1e9 - proc.start_time) * CLOCK_TICKS))


def other_stat(proc: Process, description: Description) -> bytes:
    """``/proc/<pid>/stat`` of another process: the 52 fields, those the
    table knows filled in (ids, state, start, memory), the others 0 — its
    CPU times and addresses are its host process's to know."""
    record = description.record
    name = description.comm.decode("utf-8", "replace")
    fields = [record.pid, f"({name})", description.state, record.ppid, record.pgid,
              record.sid, 0, -1, 0x400000, 0, 0, 0, 0, 0, 0, 0, 0, 20, 0, 1, 0,
              _started_ticks(proc, description), description.memory,
              description.memory // PAGE_SIZE, RLIM_INFINITY,
              *([0] * 12), 17, *([0] * 14)]
    return (" ".join(str(field) for field in fields) + "\n").encode()


def other_status(description: Description) -> bytes:
    """``/proc/<pid>/status`` of another process: the fields the table knows."""
    record, uid, gid = description.record, os.getuid(), os.getgid()
    rss = description.memory >> 10
    lines = [
        f"Name:\t{description.comm.decode('utf-8', 'replace')}",
        f"State:\t{STATE_NAMES.get(description.state, description.state)}",
        f"Tgid:\t{record.pid}", "Ngid:\t0", f"Pid:\t{record.pid}", f"PPid:\t{record.ppid}",
        "TracerPid:\t0", f"Uid:\t{uid}\t{uid}\t{uid}\t{uid}",
        f"Gid:\t{gid}\t{gid}\t{gid}\t{gid}", "Groups:\t",
        f"NStgid:\t{record.pid}", f"NSpid:\t{record.pid}", f"NSpgid:\t{record.pgid}",
        f"NSsid:\t{record.sid}", f"VmRSS:\t{rss:8d} kB", f"RssAnon:\t{rss:8d} kB",
        "Threads:\t1", "NoNewPrivs:\t1",
    ]
    return ("\n".join(lines) + "\n").encode()


def other_statm(description: Description) -> bytes:
    """``/proc/<pid>/statm`` of another process: its resident pages (as its size too)."""
    pages = description.memory // PAGE_SIZE
    return f"{pages} {pages} 0 0 0 {pages} 0\n".encode()


def statm(proc: Process) -> bytes:
    """``/proc/<pid>/statm``: sizes in pages."""
    memory = _memory_kib(proc)
    pages = PAGE_SIZE >> 10
    return (f"{memory['size'] // pages} {memory['rss'] // pages} 0 {memory['exe'] // pages} "
            f"0 {memory['data'] // pages} 0\n").encode()


#: /proc/<pid>/limits' rows (fs/proc/base.c ``lnames``): name and unit, in
#: the order of the RLIMIT_* numbers
LIMIT_NAMES = (("Max cpu time", "seconds"), ("Max file size", "bytes"),
               ("Max data size", "bytes"), ("Max stack size", "bytes"),
               ("Max core file size", "bytes"), ("Max resident set", "bytes"),
               ("Max processes", "processes"), ("Max open files", "files"),
               ("Max locked memory", "bytes"), ("Max address space", "bytes"),
               ("Max file locks", "locks"), ("Max pending signals", "signals"),
               ("Max msgqueue size", "bytes"), ("Max nice priority", ""),
               ("Max realtime priority", ""), ("Max realtime timeout", "us"))


def limits(proc: Process) -> bytes:
    """``/proc/<pid>/limits``: the limits getrlimit reports (one table)."""
    values = resource_limits(proc)
    rows = [f"{'Limit':<25} {'Soft Limit':<20} {'Hard Limit':<20} {'Units':<10}\n"]
    for resource, (name, unit) in enumerate(LIMIT_NAMES):
        shown = ["unlimited" if value == RLIM_INFINITY else str(value)
                 for value in values[resource]]
        rows.append(f"{name:<25} {shown[0]:<20} {shown[1]:<20} "
                    + (f"{unit:<10}" if unit else "") + "\n")
    return "".join(rows).encode()


_libc = ctypes.CDLL(None, use_errno=True)
#: ``struct statfs``'s first field is f_type; the rest is not needed here
STATFS_BUFFER = 120
#: file-system names of the statfs magics a grant may live on (linux/magic.h)
FILESYSTEM_NAMES = {0xEF53: "ext4", 0x01021994: "tmpfs", 0x9123683E: "btrfs",
                    0x58465342: "xfs", 0x794C7630: "overlay", 0x2FC12FC1: "zfs",
                    0x6969: "nfs", 0x65735546: "fuse", 0xF2F52010: "f2fs"}
#: /proc/filesystems: the types the view is made of (``nodev`` ones have no device)
FILESYSTEMS = b"".join(b"nodev\t%s\n" % name for name in (b"proc", b"tmpfs", b"devtmpfs")) \
    + b"".join(b"\t%s\n" % name for name in (b"ext4", b"btrfs", b"xfs"))


def _filesystem_of(fd: int) -> str:
    buffer = ctypes.create_string_buffer(STATFS_BUFFER)
    if _libc.fstatfs(ctypes.c_int(fd), buffer) != 0:
        return "none"
    return FILESYSTEM_NAMES.get(struct.unpack_from("<q", buffer.raw)[0], "none")


def _mount_table(proc: Process) -> list[tuple[str, str, str, str]]:
    """(mount point, type, options, source) of the view: a read-only root
    that holds only the way down to the grants, /proc, /dev, and each grant
    as a bind mount (read-only ones ``ro``), shortest path first.  A mount
    point the view does not hold (``/`` with no grant at all) is left out,
    so ``df`` finds every mount it is told of."""
    def in_view(point: str) -> bool:         # in a grant, or above one
        return any(grant.contains(point) or grant.path.startswith(point.rstrip("/") + "/")
                   for grant in proc.policy.grants)
    table = [("/", "tmpfs", "ro,nosuid,nodev", "minikvm"),
             ("/proc", "proc", "ro,nosuid,nodev,noexec,relatime", "proc"),
             ("/dev", "devtmpfs", "ro,nosuid,noexec", "minikvm")]
    table = [mount for mount in table if mount[0] == "/proc" or in_view(mount[0])]
    for grant in sorted(proc.policy.grants, key=lambda grant: (len(grant.path), grant.path)):
        table.append((grant.path, _filesystem_of(grant.dirfd),
                      ("rw" if grant.writable else "ro") + ",nosuid,nodev,relatime", "minikvm"))
    return table


def _escape(path: str) -> str:
    """A path as mount tables write it: space, tab, newline, backslash octal."""
    return "".join(f"\\{ord(c):03o}" if c in " \t\n\\" else c for c in path)


def mounts(proc: Process) -> bytes:
    """``/proc/<pid>/mounts`` (fstab format) describing the view."""
    return "".join(f"{source} {_escape(point)} {kind} {options} 0 0\n"
                   for point, kind, options, source in _mount_table(proc)) \
        .encode("utf-8", "surrogateescape")


#: the mount ids mountinfo numbers the view's mounts from (/ is the first)
FIRST_MOUNT_ID = 21


def mountinfo(proc: Process) -> bytes:
    """``/proc/<pid>/mountinfo``: the same mounts with ids, parents and roots."""
    table = _mount_table(proc)
    lines = []
    for index, (point, kind, options, source) in enumerate(table):
        parent = FIRST_MOUNT_ID
        for other in range(index):      # the longest mount point above this one
            if other != index and (table[other][0] == "/" or
                                   point.startswith(table[other][0] + "/")):
                parent = FIRST_MOUNT_ID + other
        root = point if source == "minikvm" and kind not in ("tmpfs", "devtmpfs") else "/"
        vfs = options.split(",")[0]
        lines.append(f"{FIRST_MOUNT_ID + index} {parent} 0:{FIRST_MOUNT_ID + index} "
                     f"{_escape(root)} {_escape(point)} {options} - {kind} {source} {vfs}\n")
    return "".join(lines).encode("utf-8", "surrogateescape")


def fdinfo(proc: Process, number: int) -> bytes:
    """``/proc/<pid>/fdinfo/N``: position, flags (octal, O_CLOEXEC as 02000000), mount id."""
    entry = proc.fds.entries.get(number)
    if entry is None:
        raise SyscallError(errno.ENOENT, f"fd {number} is not open")
    file = entry.file
    position = 0
    if isinstance(file, SyntheticFile):
        position = file.position
    elif file.host_fd is not None:
        try:
            position = os.lseek(file.host_fd, 0, os.SEEK_CUR)
        except OSError:
            position = 0
    flags = file.status_flags | (O_CLOEXEC if entry.cloexec else 0)
    return f"pos:\t{position}\nflags:\t{flags:07o}\nmnt_id:\t{FIRST_MOUNT_ID}\n".encode()


# -- opening ----------------------------------------------------------------------------
def open_node(node: Node, flags: int) -> OpenFile:
    """An open file of *node*, as open(2) with *flags* gives it: EACCES for
    writing a file (they are read-only, as for an unprivileged user),
    EISDIR for writing a directory, ELOOP for a link (``O_NOFOLLOW``),
    ENOTDIR for ``O_DIRECTORY`` on a file, EEXIST for ``O_CREAT|O_EXCL``.
    ``O_PATH`` gives an fd that names the node and can neither read nor
    write (a link's own, with ``O_NOFOLLOW``)."""
    path_only = bool(flags & O_PATH)
    writes = (flags & O_ACCMODE) != O_RDONLY or bool(flags & O_TRUNC)
    if flags & O_CREAT and flags & O_EXCL:
        raise SyscallError(errno.EEXIST, f"{node.path} exists")
    if node.kind == LINK and not path_only:
        raise SyscallError(errno.ELOOP, f"{node.path} is a link (O_NOFOLLOW)")
    if flags & O_DIRECTORY and node.kind != DIRECTORY:
        raise SyscallError(errno.ENOTDIR, f"{node.path} is not a directory")
    if node.kind == DIRECTORY:
        if writes and not path_only:
            raise SyscallError(errno.EISDIR, f"{node.path} is a directory")
        return SyntheticDirectory(node.path, O_RDONLY, node.stat())
    if writes and not path_only:
        raise SyscallError(errno.EACCES, f"{node.path} is read-only")
    data = b"" if path_only or node.contents is None else node.contents()
    return SyntheticFile(node.path, data, O_RDONLY, node.stat(), path_only=path_only)


def listing(node: Node) -> list[tuple[bytes, int, int]]:
    """``(name, inode, d_type)`` of a directory, ``.`` and ``..`` first."""
    assert node.children is not None
    parent = posixpath.dirname(node.path)
    entries = [(b".", inode(node.path), DIRECTORY >> 12),
               (b"..", inode(parent) if parent != "/" else 2, DIRECTORY >> 12)]
    for name, child in node.children().items():
        if child.listed:
            entries.append((os.fsencode(name), inode(child.path), child.kind >> 12))
    return entries


def list_directory(proc: Process, file: SyntheticDirectory) -> list[tuple[bytes, int, int]]:
    """The listing of an open /proc directory, made now from its path (a
    directory that is gone since — a thread's that ended — lists nothing)."""
    try:
        node = lookup(proc, file.path, follow=False)
    except SyscallError:
        return []
    return listing(node) if isinstance(node, Node) and node.kind == DIRECTORY else []


def check_access(node: Node, mode: int) -> None:
    """access(2) on a node: W_OK only where the mode allows it for the
    owner (no file here is writable by the guest: EACCES), X_OK on
    directories only."""
    if mode & os.W_OK:
        raise SyscallError(errno.EACCES, f"{node.path} is read-only")
    if mode & os.X_OK and node.kind == FILE:
        raise SyscallError(errno.EACCES, f"{node.path} is not executable")

