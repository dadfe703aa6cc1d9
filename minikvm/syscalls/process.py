"""Layer 6 — process system calls: exit, identity, threads, limits.

A minikvm guest is one process, started the way a shell starts a job:
pid 1000, its parent 999, in a process group of its own (so it is the
terminal's foreground job) inside the parent's session.  It
cannot change who it is: the ``set*id`` calls succeed only when they change
nothing, as they would for an unprivileged user.  It has no children, so
``wait4`` says ``ECHILD``.

It may start threads: ``clone``/``clone3`` with ``CLONE_THREAD`` and the
sharing flags glibc and musl pass make a thread that
:mod:`minikvm.process.threads` schedules on the one vCPU; ``exit`` ends one
thread, ``exit_group`` all of them.  Any other ``clone`` — a new process,
as ``fork``, ``vfork`` and ``posix_spawn`` ask for — is refused by the
policy (EPERM).  The calls a C library makes while starting a thread
(set_tid_address, set_robust_list) are kept per thread; rseq is declined.
"""

from __future__ import annotations

import errno
import os
import struct
from typing import TYPE_CHECKING

from minikvm.errors import SyscallError
from minikvm.linux_abi import PR_GET_PDEATHSIG, PR_SET_PDEATHSIG
from minikvm.machine.stops import ProcessExit
from minikvm.process import threads
from minikvm.process.process import TASK_COMM_LEN
from minikvm.sandbox.audit import REFUSED_SYSCALLS
from minikvm.syscalls.base import MASK64, PARTIAL, REFUSED, Syscall, signed32
from minikvm.syscalls.signals import NSIG, SI_TKILL, deliver, deliver_to_thread, sent_info, sleep
from minikvm.x86 import PAGE_SIZE, CANONICAL_LIMIT

if TYPE_CHECKING:
    from minikvm.process.process import Process

ARCH_SET_GS = 0x1001
ARCH_SET_FS = 0x1002
ARCH_GET_FS = 0x1003
ARCH_GET_GS = 0x1004

RLIMIT_FSIZE = 1
RLIMIT_DATA = 2
RLIMIT_STACK = 3
RLIMIT_NOFILE = 7
RLIMIT_AS = 9
RLIM_NLIMITS = 16
RLIM_INFINITY = MASK64
STACK_LIMIT = 8 << 20            # RLIMIT_STACK's usual soft limit

# prctl(2) options (linux/prctl.h)
PR_GET_DUMPABLE = 3
PR_SET_DUMPABLE = 4
PR_SET_NAME = 15
PR_GET_NAME = 16
PR_SET_NO_NEW_PRIVS = 38
PR_GET_NO_NEW_PRIVS = 39

# clone(2) flags (linux/sched.h)
CSIGNAL = 0x0000_00FF              # the exit signal, in clone's low byte
CLONE_VM = 0x0000_0100
CLONE_FS = 0x0000_0200
CLONE_FILES = 0x0000_0400
CLONE_SIGHAND = 0x0000_0800
CLONE_PIDFD = 0x0000_1000
CLONE_VFORK = 0x0000_4000
CLONE_THREAD = 0x0001_0000
CLONE_SYSVSEM = 0x0004_0000
CLONE_SETTLS = 0x0008_0000
CLONE_PARENT_SETTID = 0x0010_0000
CLONE_CHILD_CLEARTID = 0x0020_0000
CLONE_DETACHED = 0x0040_0000       # ignored by Linux since 2.6; musl still passes it
CLONE_CHILD_SETTID = 0x0100_0000
CLONE_INTO_CGROUP = 1 << 33        # clone3 only
#: CLONE_NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET (and NEWTIME, 0x80).
CLONE_NEW_ANY = 0x0002_0000 | 0x7E00_0000 | 0x0000_0080
#: What makes a thread rather than a process: one memory, one set of signal
#: handlers, one fd table, one cwd — the only kind of thread minikvm has.
THREAD_NEEDS = CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SIGHAND | CLONE_THREAD
#: Everything a thread may also ask for (what glibc's and musl's pthread_create pass).
THREAD_ALLOWS = (THREAD_NEEDS | CLONE_SYSVSEM | CLONE_SETTLS | CLONE_PARENT_SETTID
                 | CLONE_CHILD_CLEARTID | CLONE_CHILD_SETTID | CLONE_DETACHED)
#: ``struct clone_args``: flags, pidfd, child_tid, parent_tid, exit_signal,
#: stack, stack_size, tls, set_tid, set_tid_size, cgroup — all u64.
CLONE_ARGS_FORMAT = "<11Q"
CLONE_ARGS_SIZE = 88               # CLONE_ARGS_SIZE_VER2
CLONE_ARGS_SIZE_VER0 = 64
#: ``struct robust_list_head``: list, futex_offset, list_op_pending.
ROBUST_LIST_HEAD_SIZE = 24

PERSONALITY_QUERY = 0xFFFF_FFFF  # personality(0xffffffff) only reads it
NGROUPS_MAX = 65536
PRIO_PROCESS, PRIO_PGRP, PRIO_USER = 0, 1, 2
NICE_MIN, NICE_MAX = -20, 19
#: The parent the guest reports: a shell-like process just below it.
PARENT_PID_OFFSET = 1


def sys_exit_group(proc: Process, status: int) -> int:
    """Every thread ends: the process exits."""
    raise ProcessExit(status & 0xFF)


def sys_exit(proc: Process, status: int) -> int:
    """The calling thread ends; the last one to end ends the process."""
    return threads.exit_thread(proc, status & 0xFF, _sleeper(proc))


def _sleeper(proc: Process) -> threads.Sleep:
    return lambda seconds: sleep(proc, seconds)


# -- who the process is ----------------------------------------------------------
def sys_getpid(proc: Process) -> int:
    """getpid(2): the guest's pid (minikvm's own numbering, not the host's)."""
    return proc.pid


def sys_getppid(proc: Process) -> int:
    """getppid(2): the parent in the sandbox's tree; for the first process
    (or one alone), a parent outside: the pid minus one."""
    if proc.family is not None:
        return proc.family.parent_pid()
    return proc.pid - PARENT_PID_OFFSET


def sys_getuid(proc: Process) -> int:
    """getuid(2) and geteuid(2): the host user's id (no privilege is granted by it)."""
    return os.getuid()


def sys_getgid(proc: Process) -> int:
    """getgid(2) and getegid(2): the host user's group id."""
    return os.getgid()


def sys_getresuid(proc: Process, real: int, effective: int, saved: int) -> int:
    """getresuid(2): the host user's id, three times."""
    for address in (real, effective, saved):
        proc.mm.write_struct(address, "<I", os.getuid())
    return 0


def sys_getresgid(proc: Process, real: int, effective: int, saved: int) -> int:
    """getresgid(2): the host user's group id, three times."""
    for address in (real, effective, saved):
        proc.mm.write_struct(address, "<I", os.getgid())
    return 0


def sys_getgroups(proc: Process, size: int, address: int) -> int:
    """The host user's supplementary groups (what ``id`` would print)."""
    groups = os.getgroups()
    size = signed32(size)
    if size < 0:
        raise SyscallError(errno.EINVAL, f"size {size}")
    if size == 0:
        return len(groups)
    if size < len(groups):
        raise SyscallError(errno.EINVAL, f"{len(groups)} groups do not fit in {size}")
    proc.mm.write(address, struct.pack(f"<{len(groups)}I", *groups))
    return len(groups)


def _unchanged(wanted: list[int], current: int, what: str) -> int:
    """The set*id rule for an unprivileged process that may only "change"
    an id to itself; -1 means "leave it"."""
    for value in wanted:
        value = signed32(value)
        if value not in (-1, current):
            raise SyscallError(errno.EPERM, f"the sandbox cannot change its {what} to {value}")
    return 0


def sys_setuid(proc: Process, uid: int) -> int:
    """setuid(2): succeeds only when it changes nothing (EPERM otherwise)."""
    return _unchanged([uid], os.getuid(), "user id")


def sys_setgid(proc: Process, gid: int) -> int:
    """setgid(2): succeeds only when it changes nothing (EPERM otherwise)."""
    return _unchanged([gid], os.getgid(), "group id")


def sys_setreuid(proc: Process, real: int, effective: int) -> int:
    """setreuid(2): succeeds only when it changes nothing (EPERM otherwise)."""
    return _unchanged([real, effective], os.getuid(), "user id")


def sys_setregid(proc: Process, real: int, effective: int) -> int:
    """setregid(2): succeeds only when it changes nothing (EPERM otherwise)."""
    return _unchanged([real, effective], os.getgid(), "group id")


def sys_setresuid(proc: Process, real: int, effective: int, saved: int) -> int:
    """setresuid(2): succeeds only when it changes nothing (EPERM otherwise)."""
    return _unchanged([real, effective, saved], os.getuid(), "user id")


def sys_setresgid(proc: Process, real: int, effective: int, saved: int) -> int:
    """setresgid(2): succeeds only when it changes nothing (EPERM otherwise)."""
    return _unchanged([real, effective, saved], os.getgid(), "group id")


def sys_setfsuid(proc: Process, uid: int) -> int:
    """Returns the previous fs uid, whether or not it changed (it never does)."""
    return os.getuid()


def sys_setfsgid(proc: Process, gid: int) -> int:
    """setfsgid(2): never changes anything; returns the current group id."""
    return os.getgid()


#: ``NGROUPS_MAX`` (uapi/linux/limits.h): the most groups setgroups takes.
NGROUPS_MAX = 65536


def sys_setgroups(proc: Process, size: int, address: int) -> int:
    """setgroups(2): the sandbox's groups are fixed, so any change is EPERM;
    setting the groups it has already is no change and succeeds —
    ``initgroups`` of the user it runs as, which ``xterm`` run by root
    does before it starts the shell.  The effective group counts as had:
    listed or not among the supplementary ones, it gives the same access
    (``initgroups("root", 0)`` asks for ``[0]`` where getgroups says ``[]``)."""
    size = signed32(size)
    if not 0 <= size <= NGROUPS_MAX:
        raise SyscallError(errno.EINVAL, f"size {size} (0 to {NGROUPS_MAX})")
    wanted = set(struct.unpack(f"<{size}I", proc.mm.read(address, 4 * size))) if size else set()
    if wanted | {os.getegid()} != set(os.getgroups()) | {os.getegid()}:
        raise SyscallError(errno.EPERM, "the sandbox cannot change its groups")
    return 0


# -- process groups and sessions ------------------------------------------------------
def _only_self(proc: Process, pid: int) -> None:
    """ESRCH unless *pid* names the caller (0 or its pid): for the calls
    that act on one process's own attributes (prlimit64, the priorities)."""
    pid = signed32(pid)
    if pid not in (0, proc.pid):
        raise SyscallError(errno.ESRCH, f"no process {pid} in this sandbox")


def _other(proc: Process, pid: int):
    """The table's record of *pid* when it is another process of the
    sandbox; None for the caller itself (0 or its own pid); ESRCH otherwise."""
    pid = signed32(pid)
    if pid in (0, proc.pid):
        return None
    if proc.family is None:
        raise SyscallError(errno.ESRCH, f"no process {pid} in this sandbox")
    return proc.family.find(pid)


def _own_group_changed(proc: Process) -> None:
    """Tell the sandbox's table the caller's group and session changed."""
    if proc.family is not None:
        proc.family.table.update(proc.pid, pgid=proc.pgid, sid=proc.sid)


def sys_getpgrp(proc: Process) -> int:
    """getpgrp(2): the guest's process group."""
    return proc.pgid


def sys_getpgid(proc: Process, pid: int) -> int:
    """getpgid(2): the process group of the caller or of another process of
    the sandbox (ESRCH for any other pid)."""
    record = _other(proc, pid)
    return proc.pgid if record is None else record.pgid


def _group_exists(proc: Process, pgid: int) -> bool:
    if proc.family is None:
        return False
    return any(record.pgid == pgid and record.sid == proc.sid
               for record in proc.family.table.records())


def sys_setpgid(proc: Process, pid: int, pgid: int) -> int:
    """setpgid(2): the caller, or one of its children (as a shell puts each
    job in a group), into a group of its own or an existing group of the
    same session."""
    record = _other(proc, pid)
    pgid = signed32(pgid)
    if pgid < 0:
        raise SyscallError(errno.EINVAL, f"process group {pgid}")
    target = proc.pid if record is None else record.pid
    if pgid not in (0, target) and not _group_exists(proc, pgid):
        raise SyscallError(errno.EPERM, f"no process group {pgid} in this session")
    if record is not None:
        proc.family.set_group(proc, record.pid, pgid)
        return 0
    if proc.sid == proc.pid:
        raise SyscallError(errno.EPERM, "a session leader cannot change its process group")
    proc.pgid = pgid or proc.pid
    _own_group_changed(proc)
    return 0


def sys_getsid(proc: Process, pid: int) -> int:
    """getsid(2): the session of the caller or of another process of the sandbox."""
    record = _other(proc, pid)
    return proc.sid if record is None else record.sid


def sys_setsid(proc: Process) -> int:
    """A new session, unless the process already leads a group (as Linux)."""
    if proc.pgid == proc.pid:
        raise SyscallError(errno.EPERM, "a process group leader cannot start a session")
    proc.sid = proc.pgid = proc.pid
    _own_group_changed(proc)
    return proc.sid


# -- children: the sandbox's tree (minikvm.tree) -----------------------------------------
def sys_wait4(proc: Process, pid: int, status: int, options: int, usage: int) -> int:
    """wait4(2): a child's end, stop or continuation (:mod:`minikvm.tree.wait`);
    ECHILD for a process alone."""
    if proc.family is None:
        raise SyscallError(errno.ECHILD, "the sandboxed process has no children")
    return proc.family.wait4(proc, signed32(pid), status, signed32(options), usage)


def sys_waitid(proc: Process, kind: int, pid: int, info: int, options: int, usage: int) -> int:
    """waitid(2): as :func:`sys_wait4`, with waitid's id types and siginfo_t."""
    if proc.family is None:
        raise SyscallError(errno.ECHILD, "the sandboxed process has no children")
    return proc.family.waitid(proc, signed32(kind), signed32(pid), info,
                              signed32(options), usage)


def _new_process(proc: Process, flags: int, stack: int, parent_tid: int, child_tid: int,
                 tls: int, name: str) -> int:
    """fork, vfork, and clone without CLONE_THREAD: a new process in the
    sandbox's tree (:meth:`minikvm.tree.family.Family.fork`), refused (EPERM)
    for a process alone.  Each process has a VM of its own, so one that
    would share its parent's memory, files or handlers for good (CLONE_VM,
    CLONE_FILES, CLONE_SIGHAND without CLONE_VFORK's "until exec") cannot
    be made: EINVAL, saying so."""
    if proc.family is None or flags & CLONE_NEW_ANY:
        raise proc.policy.refuse(name)
    shares = CLONE_FILES | CLONE_SIGHAND | CLONE_FS
    if flags & CLONE_VM and not flags & CLONE_VFORK or flags & shares:
        raise SyscallError(errno.EINVAL, f"{name} flags {flags:#x}: a process that shares its "
                                         "parent's memory, files or signal handlers is not "
                                         "supported (each process has a VM of its own); "
                                         "CLONE_VM|CLONE_VFORK, as posix_spawn uses, is")
    if flags & CLONE_PIDFD:
        raise SyscallError(errno.EINVAL, f"{name}: CLONE_PIDFD is not supported")
    pid = proc.family.fork(proc, stack=stack, vfork=bool(flags & CLONE_VFORK),
                           tls=tls if flags & CLONE_SETTLS else None,
                           set_child_tid=child_tid if flags & CLONE_CHILD_SETTID else 0,
                           clear_child_tid=child_tid if flags & CLONE_CHILD_CLEARTID else 0)
    if flags & CLONE_PARENT_SETTID:
        try:
            proc.mm.write_struct(parent_tid, "<I", pid)
        except SyscallError:
            pass
    return pid


def sys_fork(proc: Process) -> int:
    """fork(2): a copy of the process, in a VM of its own (:mod:`minikvm.tree.fork`)."""
    return _new_process(proc, 0, 0, 0, 0, 0, "fork")


def sys_vfork(proc: Process) -> int:
    """vfork(2): as fork, and the caller waits until the child execs or ends."""
    return _new_process(proc, CLONE_VM | CLONE_VFORK, 0, 0, 0, 0, "vfork")


# -- thread setup -------------------------------------------------------------------
def sys_arch_prctl(proc: Process, code: int, address: int) -> int:
    """Set or get FS/GS base: the C library's thread pointer lives in FS."""
    if code == ARCH_SET_FS or code == ARCH_SET_GS:
        if address >= CANONICAL_LIMIT:
            raise SyscallError(errno.EPERM, f"non-canonical base {address:#x}")
        if code == ARCH_SET_FS:
            proc.machine.set_fs_base(address)
            proc.fs_base = address
        else:
            proc.machine.set_gs_base(address)
        return 0
    if code in (ARCH_GET_FS, ARCH_GET_GS):
        sregs = proc.machine.vcpu.run_state.s.regs.sregs
        proc.mm.write_u64(address, sregs.fs.base if code == ARCH_GET_FS else sregs.gs.base)
        return 0
    raise SyscallError(errno.EINVAL, f"arch_prctl code {code:#x}")


def sys_gettid(proc: Process) -> int:
    """gettid(2): the calling guest thread's id."""
    return proc.threads.current


def sys_set_tid_address(proc: Process, address: int) -> int:
    """Where the calling thread's tid is cleared (and a waiter woken) when it exits."""
    proc.threads.running.clear_child_tid = address
    return proc.threads.current


def sys_set_robust_list(proc: Process, head: int, length: int) -> int:
    """Recorded per thread.  Linux walks the list when a thread dies holding
    robust mutexes; minikvm does not (see :mod:`minikvm.process.threads`)."""
    if length != ROBUST_LIST_HEAD_SIZE:
        raise SyscallError(errno.EINVAL, f"robust list head size {length}, "
                                         f"expected {ROBUST_LIST_HEAD_SIZE}")
    proc.threads.running.robust_list = (head, length)
    return 0


def _thread(proc: Process, tid: int) -> threads.Thread:
    """Thread *tid* of the process (0: the caller); ESRCH for any other."""
    tid = signed32(tid)
    if tid == 0:
        return proc.threads.running
    thread = proc.threads.threads.get(tid)
    if thread is None:
        raise SyscallError(errno.ESRCH, f"no thread {tid} in this sandbox")
    return thread


def sys_get_robust_list(proc: Process, pid: int, head: int, length: int) -> int:
    """get_robust_list(2): the robust futex list a thread registered."""
    robust_list = _thread(proc, pid).robust_list
    proc.mm.write_u64(head, robust_list[0])
    proc.mm.write_u64(length, robust_list[1])
    return 0


# -- new threads -----------------------------------------------------------------------
def _new_thread(proc: Process, flags: int, stack: int, parent_tid: int, child_tid: int,
                tls: int, name: str) -> int:
    """What clone and clone3 share: check *flags*, start the thread, write
    the tids.  A new *process* (fork, vfork, posix_spawn: no CLONE_THREAD)
    is refused by the policy with EPERM."""
    if not flags & CLONE_THREAD:
        return _new_process(proc, flags, stack, parent_tid, child_tid, tls, name)
    if flags & CLONE_NEW_ANY:                                # namespaces
        raise proc.policy.refuse(name)
    if flags & THREAD_NEEDS != THREAD_NEEDS:
        raise SyscallError(errno.EINVAL, f"flags {flags:#x}: a thread shares its memory, "
                                         "signal handlers, files and directories "
                                         "(CLONE_VM|CLONE_SIGHAND|CLONE_FILES|CLONE_FS)")
    if flags & ~THREAD_ALLOWS:
        raise SyscallError(errno.EINVAL, f"clone flags {flags & ~THREAD_ALLOWS:#x} are "
                                         "not supported for a thread by minikvm")
    if flags & CLONE_SETTLS and tls >= CANONICAL_LIMIT:
        raise SyscallError(errno.EPERM, f"non-canonical thread pointer {tls:#x}")
    thread = threads.create(proc, stack, tls if flags & CLONE_SETTLS else None,
                            child_tid if flags & CLONE_CHILD_CLEARTID else 0)
    # Linux ignores a tid it cannot write (the thread exists all the same).
    for flag, address in ((CLONE_PARENT_SETTID, parent_tid), (CLONE_CHILD_SETTID, child_tid)):
        if flags & flag:
            try:
                proc.mm.write_struct(address, "<I", thread.tid)
            except SyscallError:
                pass
    return thread.tid


def sys_clone(proc: Process, flags: int, stack: int, parent_tid: int, child_tid: int,
              tls: int) -> int:
    """A new thread that starts on *stack* (its RSP; 0 keeps the caller's)
    where this call returns, with RAX = 0.  The low byte of *flags* (the
    exit signal) means nothing for a thread; Linux reads only 32 bits."""
    return _new_thread(proc, flags & 0xFFFF_FF00, stack, parent_tid, child_tid, tls, "clone")


def sys_clone3(proc: Process, address: int, size: int) -> int:
    """clone with its arguments in a ``struct clone_args`` (linux/sched.h):
    a known prefix of at least CLONE_ARGS_SIZE_VER0 bytes; anything after
    the fields minikvm knows must be zero (E2BIG), as in Linux."""
    if size < CLONE_ARGS_SIZE_VER0:
        raise SyscallError(errno.EINVAL, f"clone_args size {size} < {CLONE_ARGS_SIZE_VER0}")
    if size > PAGE_SIZE:
        raise SyscallError(errno.E2BIG, f"clone_args size {size} > {PAGE_SIZE}")
    raw = proc.mm.read(address, size).ljust(CLONE_ARGS_SIZE, b"\0")
    if raw[CLONE_ARGS_SIZE:].strip(b"\0"):
        raise SyscallError(errno.E2BIG, "clone_args has non-zero fields minikvm does not know")
    (flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls,
     set_tid, set_tid_size, cgroup) = struct.unpack_from(CLONE_ARGS_FORMAT, raw)
    if exit_signal and flags & CLONE_THREAD or exit_signal & ~CSIGNAL:
        raise SyscallError(errno.EINVAL, f"exit signal {exit_signal}")
    if set_tid or set_tid_size or cgroup or flags & (CLONE_PIDFD | CLONE_INTO_CGROUP):
        raise SyscallError(errno.EINVAL, "set_tid, pidfd and cgroup are not for threads")
    if bool(stack) != bool(stack_size) or stack + stack_size > CANONICAL_LIMIT:
        raise SyscallError(errno.EINVAL, f"stack {stack:#x} of {stack_size:#x} bytes")
    if flags >> 32:
        raise SyscallError(errno.EINVAL, f"unknown clone3 flags {flags:#x}")
    return _new_thread(proc, flags, stack + stack_size, parent_tid, child_tid, tls, "clone3")


def sys_rseq(proc: Process, *args: int) -> int:
    """rseq(2): ENOSYS on purpose: the C library then does without restartable
    sequences (a CPU number it could read without a call would be a lie)."""
    raise SyscallError(errno.ENOSYS, "restartable sequences are not supported")


def sys_prctl(proc: Process, option: int, arg2: int, arg3: int, arg4: int, arg5: int) -> int:
    """The few options programs use on themselves; everything else EINVAL."""
    option = signed32(option)
    if option == PR_SET_NAME:
        # Linux copies at most 15 bytes and never looks further.
        try:
            proc.name = proc.mm.read_cstring(arg2, limit=TASK_COMM_LEN)
        except SyscallError as error:
            if error.errno != errno.ENAMETOOLONG:
                raise
            proc.name = proc.mm.read(arg2, TASK_COMM_LEN - 1)
        proc.name = proc.name[:TASK_COMM_LEN - 1]
        if proc.family is not None:
            proc.family.publish(proc)      # what the others' /proc/<pid>/comm shows
        return 0
    if option == PR_GET_NAME:
        proc.mm.write(arg2, proc.name.ljust(TASK_COMM_LEN, b"\0"))
        return 0
    if option == PR_GET_DUMPABLE:
        return 1
    if option == PR_SET_DUMPABLE:
        if arg2 not in (0, 1):
            raise SyscallError(errno.EINVAL, f"dumpable {arg2}")
        return 0
    if option == PR_SET_NO_NEW_PRIVS:
        if arg2 != 1 or arg3 or arg4 or arg5:
            raise SyscallError(errno.EINVAL, "PR_SET_NO_NEW_PRIVS takes 1, 0, 0, 0")
        return 0  # the sandbox never grants privileges anyway
    if option == PR_GET_NO_NEW_PRIVS:
        return 1
    if option == PR_SET_PDEATHSIG:
        if arg2 > 64:
            raise SyscallError(errno.EINVAL, f"signal {arg2}")
        return 0  # the parent outlives the run
    if option == PR_GET_PDEATHSIG:
        proc.mm.write_struct(arg2, "<i", 0)
        return 0
    raise SyscallError(errno.EINVAL, f"prctl option {option} is not supported by minikvm")


def sys_personality(proc: Process, persona: int) -> int:
    """Record the persona and return the previous one; nothing acts on it."""
    previous = proc.personality
    if persona & 0xFFFF_FFFF != PERSONALITY_QUERY:
        proc.personality = persona & 0xFFFF_FFFF
    return previous


# -- limits and priority --------------------------------------------------------------
def resource_limits(proc: Process) -> list[tuple[int, int]]:
    """(soft, hard) of every RLIMIT_* resource, by number: the limits the
    sandbox enforces (fds, memory, file size), the usual stack limit, and
    unlimited for the rest.  getrlimit and /proc/<pid>/limits both show these."""
    memory = proc.mm.user_pool.end - proc.mm.user_pool.start
    file_size = proc.policy.max_file_size or RLIM_INFINITY
    values = {
        RLIMIT_NOFILE: (proc.fds.max_fds, proc.fds.max_fds),
        RLIMIT_STACK: (STACK_LIMIT, RLIM_INFINITY),
        RLIMIT_AS: (memory, memory),
        RLIMIT_DATA: (memory, memory),
        RLIMIT_FSIZE: (file_size, file_size),
    }
    return [values.get(resource, (RLIM_INFINITY, RLIM_INFINITY))
            for resource in range(RLIM_NLIMITS)]


def sys_prlimit64(proc: Process, pid: int, resource: int, new: int, old: int) -> int:
    """Report the limits the sandbox enforces; refuse to change them."""
    _only_self(proc, pid)
    resource = signed32(resource)
    if not 0 <= resource < RLIM_NLIMITS:
        raise SyscallError(errno.EINVAL, f"resource {resource}")
    if old:
        proc.mm.write_struct(old, "<QQ", *resource_limits(proc)[resource])
    if new:
        soft, hard = proc.mm.read_struct(new, "<QQ")
        if soft > hard:
            raise SyscallError(errno.EINVAL, "soft limit above hard limit")
    return 0


def sys_getrlimit(proc: Process, resource: int, address: int) -> int:
    """getrlimit(2): :func:`sys_prlimit64` for the process itself, reading only."""
    return sys_prlimit64(proc, 0, resource, 0, address)


def sys_setrlimit(proc: Process, resource: int, address: int) -> int:
    """setrlimit(2): checked, then ignored: the sandbox's limits stay."""
    return sys_prlimit64(proc, 0, resource, address, 0)


def _check_priority_target(proc: Process, which: int, who: int) -> None:
    which, who = signed32(which), signed32(who)
    if which not in (PRIO_PROCESS, PRIO_PGRP, PRIO_USER):
        raise SyscallError(errno.EINVAL, f"which {which}")
    mine = {PRIO_PROCESS: proc.pid, PRIO_PGRP: proc.pgid, PRIO_USER: os.getuid()}[which]
    if who not in (0, mine):
        raise SyscallError(errno.ESRCH, f"nothing to match {who} in this sandbox")


def sys_getpriority(proc: Process, which: int, who: int) -> int:
    """Like the kernel's system call: 20 - nice, so the result is positive."""
    _check_priority_target(proc, which, who)
    return 20 - proc.nice


def sys_setpriority(proc: Process, which: int, who: int, nice: int) -> int:
    """Recorded (the guest has one vCPU to itself); raising priority needs
    privilege, as on Linux."""
    _check_priority_target(proc, which, who)
    nice = min(max(signed32(nice), NICE_MIN), NICE_MAX)
    if nice < proc.nice:
        raise SyscallError(errno.EACCES, "lowering the nice value needs privilege")
    proc.nice = nice
    return 0


# -- signals ----------------------------------------------------------------------------
def sys_kill(proc: Process, pid: int, sig: int) -> int:
    """kill(2) to the caller, to another process of the sandbox, to a
    process group (0: the caller's, -N: group N) or to all of the sandbox
    (-1) — never to a host process: a pid the sandbox's table does not
    hold is ESRCH.  When the caller is among those named, the signal's
    action is taken on it last (it may end it)."""
    pid, sig = signed32(pid), signed32(sig)
    if not 0 <= sig <= NSIG:
        raise SyscallError(errno.EINVAL, f"signal {sig}")
    if proc.family is None:
        if pid not in (0, -1, proc.pid, -proc.pgid):
            raise SyscallError(errno.ESRCH, f"no process {pid} in this sandbox")
        return deliver(proc, sig, "sent by the program itself (kill)")
    others, itself = proc.family.targets(proc, pid)
    for record in others:
        proc.family.send(record, sig)
    if itself:
        return deliver(proc, sig, "sent by the program itself (kill)")
    return 0


def sys_tgkill(proc: Process, tgid: int, tid: int, sig: int) -> int:
    """To one thread of the process: a handler runs in that thread
    (:func:`~minikvm.syscalls.signals.deliver_to_thread`)."""
    if (proc.family is not None and signed32(tgid) == signed32(tid) != proc.pid
            and signed32(tid) > 0):
        # The main thread of another process: its tid is its pid.
        return sys_kill(proc, tid, sig)
    if signed32(tgid) != proc.pid or signed32(tid) not in proc.threads.threads:
        raise SyscallError(errno.ESRCH, "no such thread in this sandbox")
    return deliver_to_thread(proc, signed32(tid), signed32(sig),
                             "sent by the program itself (tgkill)",
                             sent_info(proc, signed32(sig), SI_TKILL))


def sys_tkill(proc: Process, tid: int, sig: int) -> int:
    """tkill(2): a signal to one of the guest's own threads (ESRCH for any
    other); its handler runs in that thread."""
    if signed32(tid) not in proc.threads.threads:
        raise SyscallError(errno.ESRCH, "no such thread in this sandbox")
    return deliver_to_thread(proc, signed32(tid), signed32(sig),
                             "sent by the program itself (tkill)",
                             sent_info(proc, signed32(sig), SI_TKILL))


def refused(name: str):
    """A handler that refuses *name* with EPERM and records the denial in
    the policy's log, so ``--audit`` lists attempts to escape the sandbox."""
    def handler(proc: Process, *args: int) -> int:
        raise proc.policy.refuse(name)
    handler.__name__ = f"sys_{name}"
    handler.__doc__ = (f"{name}(2): refused with EPERM, whatever its arguments: "
                       f"{REFUSED_SYSCALLS[name]}.")
    return handler


PROCESSES = ("a new process in a VM and host process of its own (minikvm.tree), up to "
             "--max-processes (EAGAIN beyond)")
THREADS_ONLY = ("threads (CLONE_THREAD, sharing memory, files and signal handlers), "
                "scheduled on one vCPU; a process without CLONE_VM, or CLONE_VM|CLONE_VFORK "
                "(posix_spawn): " + PROCESSES)
FIXED_IDENTITY = "succeeds only when it changes nothing (EPERM otherwise)"

SYSCALLS = [
    Syscall(60, "exit", sys_exit, ("int",), PARTIAL,
            "ends the calling thread; the last thread's exit ends the process"),
    Syscall(231, "exit_group", sys_exit_group, ("int",)),
    Syscall(39, "getpid", sys_getpid),
    Syscall(186, "gettid", sys_gettid),
    Syscall(110, "getppid", sys_getppid, (), PARTIAL, "a fixed parent: pid - 1"),
    Syscall(102, "getuid", sys_getuid),
    Syscall(107, "geteuid", sys_getuid),
    Syscall(104, "getgid", sys_getgid),
    Syscall(108, "getegid", sys_getgid),
    Syscall(118, "getresuid", sys_getresuid, ("ptr", "ptr", "ptr")),
    Syscall(120, "getresgid", sys_getresgid, ("ptr", "ptr", "ptr")),
    Syscall(115, "getgroups", sys_getgroups, ("int", "ptr")),
    Syscall(105, "setuid", sys_setuid, ("int",), PARTIAL, FIXED_IDENTITY),
    Syscall(106, "setgid", sys_setgid, ("int",), PARTIAL, FIXED_IDENTITY),
    Syscall(113, "setreuid", sys_setreuid, ("int", "int"), PARTIAL, FIXED_IDENTITY),
    Syscall(114, "setregid", sys_setregid, ("int", "int"), PARTIAL, FIXED_IDENTITY),
    Syscall(117, "setresuid", sys_setresuid, ("int", "int", "int"), PARTIAL, FIXED_IDENTITY),
    Syscall(119, "setresgid", sys_setresgid, ("int", "int", "int"), PARTIAL, FIXED_IDENTITY),
    Syscall(122, "setfsuid", sys_setfsuid, ("int",), PARTIAL, "never changes; returns the uid"),
    Syscall(123, "setfsgid", sys_setfsgid, ("int",), PARTIAL, "never changes; returns the gid"),
    Syscall(116, "setgroups", sys_setgroups, ("int", "ptr"), REFUSED,
            "the sandbox's groups are fixed", errno.EPERM),
    Syscall(111, "getpgrp", sys_getpgrp),
    Syscall(121, "getpgid", sys_getpgid, ("int",)),
    Syscall(109, "setpgid", sys_setpgid, ("int", "int"), PARTIAL,
            "only into its own group (it already is)"),
    Syscall(124, "getsid", sys_getsid, ("int",)),
    Syscall(112, "setsid", sys_setsid, (), PARTIAL,
            "EPERM: the process leads its group, as under a shell"),
    Syscall(61, "wait4", sys_wait4, ("int", "ptr", "hex", "ptr"), PARTIAL,
            "no children: always ECHILD"),
    Syscall(247, "waitid", sys_waitid, ("int", "int", "ptr", "hex", "ptr"), PARTIAL,
            "no children: always ECHILD"),
    Syscall(158, "arch_prctl", sys_arch_prctl, ("hex", "ptr"), PARTIAL,
            "ARCH_SET_FS/GS and ARCH_GET_FS/GS"),
    Syscall(218, "set_tid_address", sys_set_tid_address, ("ptr",)),
    Syscall(273, "set_robust_list", sys_set_robust_list, ("ptr", "uint"), PARTIAL,
            "recorded per thread; the list is not walked when a thread exits"),
    Syscall(274, "get_robust_list", sys_get_robust_list, ("int", "ptr", "ptr")),
    Syscall(334, "rseq", sys_rseq, ("ptr", "uint", "int", "hex"), REFUSED,
            "the C library falls back to not using it", errno.ENOSYS),
    Syscall(157, "prctl", sys_prctl, ("int", "hex", "hex", "hex", "hex"), PARTIAL,
            "PR_SET/GET_NAME, PR_SET/GET_DUMPABLE, PR_SET/GET_NO_NEW_PRIVS, "
            "PR_SET/GET_PDEATHSIG; others EINVAL"),
    Syscall(135, "personality", sys_personality, ("hex",), PARTIAL,
            "recorded and returned; no flag changes behaviour"),
    Syscall(302, "prlimit64", sys_prlimit64, ("int", "int", "ptr", "ptr"), PARTIAL,
            "reports the enforced limits; new limits are checked, then ignored"),
    Syscall(97, "getrlimit", sys_getrlimit, ("int", "ptr")),
    Syscall(160, "setrlimit", sys_setrlimit, ("int", "ptr"), PARTIAL,
            "checked, then ignored: the sandbox's limits stay"),
    Syscall(140, "getpriority", sys_getpriority, ("int", "int")),
    Syscall(141, "setpriority", sys_setpriority, ("int", "int", "int"), PARTIAL,
            "recorded; the guest has its vCPU to itself"),
    Syscall(62, "kill", sys_kill, ("int", "int"), PARTIAL,
            "only the process itself (pid, 0, -1 or -pgid); its action is taken: "
            "a handler runs, as on Linux"),
    Syscall(200, "tkill", sys_tkill, ("int", "int"), PARTIAL,
            "only the process's own threads; a handler runs in the thread named"),
    Syscall(234, "tgkill", sys_tgkill, ("int", "int", "int"), PARTIAL,
            "only the process's own threads; a handler runs in the thread named"),
    Syscall(57, "fork", sys_fork, (), PARTIAL, PROCESSES),
    Syscall(58, "vfork", sys_vfork, (), PARTIAL, PROCESSES + "; the parent waits until the "
                                                 "child execs or ends"),
    Syscall(56, "clone", sys_clone, ("hex", "ptr", "ptr", "ptr", "hex"), PARTIAL, THREADS_ONLY),
    Syscall(435, "clone3", sys_clone3, ("ptr", "uint"), PARTIAL, THREADS_ONLY),
    Syscall(101, "ptrace", refused("ptrace"), ("int", "int", "ptr", "ptr"), REFUSED,
            "no debugging of other processes", errno.EPERM),
    Syscall(165, "mount", refused("mount"), ("path", "path", "path", "hex", "ptr"), REFUSED,
            "file systems are the host's", errno.EPERM),
    Syscall(166, "umount2", refused("umount2"), ("path", "hex"), REFUSED,
            "file systems are the host's", errno.EPERM),
]
