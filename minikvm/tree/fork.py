"""Layer 7 — fork: a guest process becomes two, each in a host process of its own.

The design (docs/explanation/processes.md says why, and measures it) is the
one a kernel has, moved up one level: **one host process per guest
process**.  When the guest calls ``fork`` — or ``vfork``, or ``clone``
without ``CLONE_VM`` or with ``CLONE_VM|CLONE_VFORK`` as ``posix_spawn``
does — the host, inside the system-call handler:

1. takes a record in the sandbox's :class:`~minikvm.tree.table.ProcessTable`
   (EAGAIN at ``--max-processes``): the child's pid;
2. turns the in-guest pipes into host pipes (:func:`share_pipes`), so that
   both processes see one pipe;
3. reads the vCPU's state (:class:`~minikvm.snapshot.cpu_state.CpuState`);
   the memory of ``minikvm run``'s machine is anonymous, which the host's
   fork shares copy-on-write with the child, page by page — a machine
   backed by a memfd (one a snapshot can be taken of) has its memory
   copied into a new memfd first (:func:`~minikvm.snapshot.frozen.freeze_memory`,
   the copy a snapshot makes);
4. calls ``os.fork()``.

Then, as in the kernel, **fork returns twice**.  The parent's handler
returns the child's pid.  The child's handler — the same Python frames,
copied by the host's fork — puts its machine on a VM of its own over the
copy (:meth:`Machine.start_over_after_fork
<minikvm.machine.machine.Machine.start_over_after_fork>`: KVM refuses a
VM to any process but its maker), loads the registers with RAX = 0, and
resumes the guest in the run loop it was already in.  Everything else the
child has is the parent's, copied by the host: the fd table with the host
fds in it (so offsets and ``O_APPEND`` are shared, as Linux shares the
``struct file``), the policy, the signal dispositions, Landlock and
seccomp (a child cannot shed its parent's walls).

When the child's guest ends, its host process ends the same way — with the
exit status, or by the same signal (:func:`end_child`) — so that the
parent's ``wait4`` reads from the host exactly what Linux would report
(:mod:`minikvm.tree.wait`).
"""

from __future__ import annotations

import errno
import os
import select
import signal
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, NoReturn

from minikvm.errors import SyscallError
from minikvm.machine.outside import raise_on_self
from minikvm.machine.stops import RegistersLoaded
from minikvm.process import vdso
from minikvm.process.fdtable import EpollFile, PipeEnd, SharedPipeEnd
from minikvm.process.threads import ThreadTable
from minikvm.snapshot.cpu_state import CpuState
from minikvm.snapshot.frozen import freeze_memory
from minikvm.syscalls.signals import take_outside_signals
from minikvm.tree import vfork_memory
from minikvm.tree.wait import children_reaped_by_themselves, reap_quietly

if TYPE_CHECKING:
    from minikvm.process.process import Process, RunResult
    from minikvm.tree.family import Family

#: ``fcntl(F_SETPIPE_SZ)``: a shared pipe must hold what the in-guest one held.
F_SETPIPE_SZ = 1031
#: How long a vfork parent waits between two looks at its signals and time limit.
VFORK_SLICE_MS = 100
#: How much of the pages a vfork child gives back its parent reads at once.
VFORK_READ_BYTES = 1 << 20


def fork(proc: Process, *, stack: int = 0, vfork: bool = False, tls: int | None = None,
         set_child_tid: int = 0, clear_child_tid: int = 0) -> int:
    """The guest's fork: the child's pid in the parent; in the child this
    does not return — it raises :class:`RegistersLoaded` with RAX = 0 (and
    RSP = *stack* when not 0, the stack ``clone`` gave; FS.base = *tls*
    when given; the child's pid written at *set_child_tid*, and
    *clear_child_tid* its ``set_tid_address``, as ``CLONE_CHILD_SETTID``
    and ``CLONE_CHILD_CLEARTID`` ask — glibc's fork reads its new tid
    there).  *vfork*: the parent waits until the child execs or ends, as
    ``vfork(2)`` says."""
    family: Family | None = proc.family
    if family is None:
        raise proc.policy.refuse("fork")
    if children_reaped_by_themselves(proc):
        reap_quietly(family, proc)     # their records are free again, as Linux frees them
    pid = family.table.reserve(proc.pid, proc.pgid, proc.sid, proc.mm.user_pool.used)
    frozen = done_read = done_write = -1
    try:
        share_pipes(proc)
        machine = proc.machine
        cpu = CpuState.capture(machine)
        cpuid = machine.vcpu.get_cpuid2()
        if not machine.memory.anonymous:     # anonymous: the host's fork shares it CoW
            frozen = freeze_memory(machine.memory, machine.mm)
        if vfork:
            done_read, done_write = os.pipe2(os.O_CLOEXEC)
        sys.stdout.flush()          # or the child would print it again
        sys.stderr.flush()
        host_pid = os.fork()
    except BaseException:
        family.table.remove(pid)
        for fd in (frozen, done_read, done_write):
            if fd >= 0:
                os.close(fd)
        raise
    family.note_fork(proc.pid)
    if host_pid == 0:
        if done_read >= 0:
            os.close(done_read)
        _become_child(proc, pid, frozen, cpu, cpuid, done_write,
                      _ChildSetup(stack, tls, set_child_tid, clear_child_tid))
    if frozen >= 0:
        os.close(frozen)
    else:
        # The host's fork made every page of the anonymous memory read-only
        # for copy-on-write; KVM's own mappings (PVM's shadow page tables)
        # may still let the guest write the page the child now shares.
        # Dropping them makes the next write fault, and the host copy it.
        machine.mm.stale_translations = True
    family.table.update(pid, host_pid=host_pid)
    if vfork:
        os.close(done_write)
        family.set_state("S")
        try:
            given_back = _wait_until_closed(proc, done_read)
        finally:
            os.close(done_read)
            family.set_state("R")
        vfork_memory.take_back(machine, proc.mm.user_pool, given_back)
    return pid


@dataclass
class _ChildSetup:
    """What clone's arguments change in the child (see :func:`fork`)."""
    stack: int
    tls: int | None
    set_child_tid: int
    clear_child_tid: int


def _become_child(proc: Process, pid: int, frozen: int, cpu: CpuState, cpuid: object,
                  vfork_done: int, setup: _ChildSetup) -> NoReturn:
    """The child's side of :func:`fork` (in the new host process)."""
    try:
        machine = proc.machine
        family: Family = proc.family
        family.become_child(pid)
        family.vfork_done = vfork_done
        family.lending = None
        vfork_memory.log_stores(machine, vfork=vfork_done >= 0)   # for the parent
        machine.start_over_after_fork(frozen if frozen >= 0 else None, cpuid)
        cpu.restore(machine)
        if machine.outside is not None:
            machine.outside.renew_after_fork(machine.vcpu.run_state)
        proc.pid = pid
        # Only the calling thread goes on in the child, its tid the new pid.
        proc.threads = ThreadTable(pid, proc.threads.max_threads)
        proc.threads.running.clear_child_tid = setup.clear_child_tid
        if setup.tls is not None:
            machine.set_fs_base(setup.tls)
        if setup.set_child_tid:
            try:
                proc.mm.write_struct(setup.set_child_tid, "<I", pid)
            except SyscallError:
                pass                   # Linux ignores a tid it cannot write
        proc.signal_pending = 0
        proc.signal_info = {}
        proc.alarm_deadline = None     # alarm(2) and setitimer(2) are not inherited
        proc.alarm_interval = 0.0
        proc.end_hook = lambda result: end_child(proc, result)
        if proc.determinism is not None:   # streams of its own, the parent's clock
            proc.use_determinism(proc.determinism.for_child(pid))
        for hook in family.in_child:
            hook()                     # a debugger lets the child go (minikvm.debug.session)
        vdso.write_data_page(proc)     # the new vCPU's TSC: a new clock line
        regs = machine.vcpu.run_state.s.regs.regs
        regs.rax = 0
        machine.return_from_syscall()
        if setup.stack:
            regs.rsp = setup.stack
        if vfork_done >= 0:
            family.lending = vfork_memory.lend(proc)
    except BaseException as error:   # never go back into the parent's code
        print(f"minikvm: the child process {pid} could not start: {error}", file=sys.stderr)
        os._exit(126)
    raise RegistersLoaded()


def end_child(proc: Process, result: RunResult) -> NoReturn:
    """A child's run ended: its host process ends as it did — the exit
    status, or death by the same signal (so the parent's ``wait4`` sees
    ``WIFSIGNALED``) — after its children become the first process's."""
    try:
        family: Family = proc.family
        family.table.reparent(proc.pid, family.root_pid)
        family.give_back_memory(proc)  # a vfork child's stores reach its parent
        family.set_state("Z")          # a zombie until its parent reaps it
        for hook in family.at_end:
            hook()
        sys.stdout.flush()
        sys.stderr.flush()
        if result.signal in (signal.SIGKILL, signal.SIGSTOP):
            os.kill(os.getpid(), signal.SIGKILL)    # no handler to put back first
        elif result.signal is not None:
            raise_on_self(result.signal)
    finally:
        os._exit(result.exit_status & 0xFF)


def share_pipes(proc: Process) -> None:
    """Make every in-guest pipe of *proc* a host pipe, before a fork.

    An in-guest pipe is a buffer in this Python process
    (:class:`~minikvm.process.fdtable.Pipe`): after the host's fork each
    side would have its own copy, and what one wrote the other would never
    read.  A host pipe is shared by the kernel.  What the pipe held is
    moved into the host pipe (grown to hold it), and every fd of the same
    end keeps sharing one file, as ``dup`` made them."""
    replaced: dict[int, HostFile] = {}
    pipes: dict[int, tuple[int, int]] = {}
    for fd, entry in sorted(proc.fds.entries.items()):
        end = entry.file
        if not isinstance(end, PipeEnd):
            continue
        if id(end) not in replaced:
            pipe = end.pipe
            if id(pipe) not in pipes:
                read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
                if pipe.data:
                    _fill(write_fd, bytes(pipe.data))
                    pipe.budget.count -= len(pipe.data)
                    pipe.data.clear()
                pipes[id(pipe)] = (read_fd, write_fd)
            read_fd, write_fd = pipes[id(pipe)]
            host_fd = os.dup(write_fd if end.writing else read_fd)
            replaced[id(end)] = SharedPipeEnd(host_fd, f"pipe:[{pipe.number}]",
                                              end.status_flags)
            # dup'd fds share the end: its count of fds moves once, whole
            count = proc.fds.references.pop(id(end))
            proc.fds.references[id(replaced[id(end)])] = count
        entry.file = replaced[id(end)]
    for read_fd, write_fd in pipes.values():
        os.close(read_fd)
        os.close(write_fd)
    # An epoll watches files, not numbers (Linux's epitem holds the struct file).
    for entry in proc.fds.entries.values():
        if isinstance(entry.file, EpollFile):
            for item in entry.file.interest.values():
                item.file = replaced.get(id(item.file), item.file)


def _fill(write_fd: int, data: bytes) -> None:
    """Put *data* in a new host pipe, grown first if it is more than the
    host's default pipe holds."""
    import fcntl
    if len(data) > 65536:
        fcntl.fcntl(write_fd, F_SETPIPE_SZ, len(data))
    os.set_blocking(write_fd, False)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(write_fd, view):]
    except BlockingIOError:
        raise SyscallError(errno.ENOMEM, f"a pipe holding {len(data)} bytes cannot be "
                                         "shared with a child process") from None
    finally:
        os.set_blocking(write_fd, True)


def _wait_until_closed(proc: Process, read_end: int) -> bytes:
    """A vfork parent waits for its child to exec or end (the child's end
    of the pipe closes), looking at its signals and time limit between
    slices — a child that never execs must not hang the parent for good.
    What the child wrote into the pipe meanwhile: the pages it gives back
    (:mod:`minikvm.tree.vfork_memory`); nothing when the wait was cut short."""
    poller = select.poll()
    poller.register(read_end, select.POLLIN)
    received = bytearray()
    while True:
        if poller.poll(VFORK_SLICE_MS):
            chunk = os.read(read_end, VFORK_READ_BYTES)
            if not chunk:
                return bytes(received)
            received += chunk
            continue
        take_outside_signals(proc)
        if proc.machine.stopping:
            return b""


__all__ = ["fork", "end_child", "share_pipes"]
