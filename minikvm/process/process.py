"""Layer 5 — a process: a loaded program, its memory, files and state.

:meth:`Process.spawn` does what Linux's ``execve`` does for a static
program: load the ELF segments into a fresh address space, map a stack,
build the initial stack (argv, envp, auxv), and point the vCPU at the
entry.  :meth:`Process.run` then runs it until it exits, crashes or runs
out of time, handing each system call to the dispatcher.

The process also owns the host-side state the system calls change: the
fd table, the working directory, the umask, signal dispositions, limits,
and the table of its threads (:mod:`minikvm.process.threads`).  A snapshot copies
every attribute and a reset puts every one back (:mod:`minikvm.snapshot.process_state`):
state added here needs no change there, but must be plain data.
"""

from __future__ import annotations

import os
import signal as signal_module
from dataclasses import dataclass
from typing import Any, Callable

from minikvm.cpu.layout import DEFAULT_MEMORY_SIZE, STACK_SIZE, STACK_TOP
from minikvm.linux_abi import O_RDONLY, O_WRONLY
from minikvm.machine.crash import CrashReport
from minikvm.machine.machine import Machine
from minikvm.machine.mm import PROT_EXEC, PROT_READ, PROT_WRITE, page_align_down, page_align_up
from minikvm.machine.stops import (EXIT_TIMEOUT, ProcessExit, ProcessKilled, StopKind,
                                   SyscallHandler, signal_status)
from minikvm.process.elf import ElfImage, default_bias, load_elf
from minikvm.process.fdtable import FdTable, HostFile
from minikvm.process.stack import build_initial_stack, standard_auxv
from minikvm.process.threads import DEFAULT_MAX_THREADS, ThreadTable
from minikvm.sandbox.policy import Policy
from minikvm.x86 import PAGE_SIZE, CPUID_FEATURES

TASK_COMM_LEN = 16  # the kernel's process name: 15 bytes and a NUL


@dataclass
class RunResult:
    """How a run ended."""
    exit_status: int                      # as a shell reports it: 128+N for signal N
    message: str = ""                     # the one-line report (crash, signal, timeout)
    crash: CrashReport | None = None
    timed_out: bool = False
    signal: int | None = None
    #: The signal was sent to minikvm from outside (Ctrl-C, ``kill``):
    #: nothing is reported, and ``minikvm run`` ends by the same signal.
    outside: bool = False


class Process:
    """One guest program in one machine."""

    def __init__(self, machine: Machine, image: ElfImage, policy: Policy | None, argv: list[bytes],
                 env: list[bytes], exe_path: str, cwd: str) -> None:
        self.machine = machine
        self.mm = machine.mm
        self.image = image
        #: What the program may reach; None at creation means no grant at all.
        self.policy: Policy = policy if policy is not None else Policy()
        self.argv = argv
        self.env = env
        self.exe_path = exe_path
        self.cwd = cwd
        self.umask = 0o022
        self.pid = 1000
        self.fds = FdTable(self.policy.max_fds)
        #: signal -> (handler, flags, restorer, mask), as rt_sigaction set it
        self.signal_actions: dict[int, tuple[int, int, int, int]] = {}
        self.signal_mask = 0
        self.signal_pending = 0        # signals sent while blocked (bit n-1 for signal n)
        self.alternate_stack = (0, 0)  # sigaltstack: (ss_sp, ss_size); (0, 0) when disabled
        self.signal_info: dict[int, bytes] = {}  # siginfo_t of each pending signal
        #: True when a signal may be ready or an alarm is set: the dispatcher
        #: then calls minikvm.syscalls.signal_handlers.deliver_on_return after the call.
        self.signal_work = False
        #: rt_sigsuspend's caller's mask, until the handler's frame saves it
        self.signal_saved_mask: int | None = None
        #: (xstate_size or None, xfeatures, mxcsr_mask) of signal frames' FPU area
        self.signal_fpu_layout: tuple[int | None, int, int] | None = None
        self.alarm_deadline: float | None = None  # time.monotonic() when SIGALRM is due
        self.alarm_interval = 0.0      # setitimer's it_interval, seconds
        # Identity a shell would give the program: its own process group (so it
        # is the terminal's foreground job) inside the shell's session.
        self.pgid = self.pid
        self.sid = self.pid - 1
        # prctl(PR_GET_NAME): the file name, cut like Linux's comm
        self.name = os.fsencode(os.path.basename(exe_path))[:TASK_COMM_LEN - 1]
        self.personality = 0           # PER_LINUX
        self.nice = 0
        #: The threads (:mod:`minikvm.process.threads`); the main thread's tid is the pid.
        self.threads = ThreadTable(self.pid, DEFAULT_MAX_THREADS)
        self.fs_base = 0
        #: number -> calls, for the unknown system calls the guest made (at most
        #: MAX_UNKNOWN_SYSCALLS_RECORDED numbers: the guest picks any 64-bit one).
        self.unknown_syscalls: dict[int, int] = {}
        #: How many pipes the program made: the next one's number (its inode).
        self.pipes_made = 0
        self.random: Callable[[int], bytes] = os.urandom
        #: Where ``minikvm_wait_request``/``minikvm_respond`` go: None under a
        #: plain run; a snapshot's fork (:mod:`minikvm.snapshot.fork`) sets it.
        self.requests: Any = None
        machine.symbolize = image.symbols.symbolize

    # -- creation ------------------------------------------------------------
    @classmethod
    def spawn(cls, path: str, argv: list[str] | list[bytes], env: dict[str, str] | list[bytes],
              policy: Policy | None, *, memory_size: int = DEFAULT_MEMORY_SIZE, cwd: str | None = None,
              stdio: tuple[int, int, int] = (0, 1, 2), machine: Machine | None = None,
              program: bytes | None = None) -> "Process":
        """Load the static program at *path* into a new machine, ready to run.
        *program* is the file's bytes when the caller read them already
        (:func:`~minikvm.process.elf.read_program`, before confining itself); *path*
        then only names the program.  Raises ElfError for a file that is not
        a program minikvm can run."""
        image = load_elf(path if program is None else program, name=os.fspath(path))
        if image.is_pie:
            image = image.with_bias(default_bias(image))
        machine = machine or Machine(memory_size)
        argv_bytes = [os.fsencode(a) for a in argv]
        if isinstance(env, dict):
            env_bytes = [os.fsencode(f"{k}={v}") for k, v in env.items()]
        else:
            env_bytes = list(env)
        process = cls(machine, image, policy, argv_bytes, env_bytes,
                      os.path.abspath(path), cwd or os.getcwd())
        process._load_segments()
        process._setup_stack(os.fsencode(path))
        process._open_stdio(stdio)
        return process

    def _load_segments(self) -> None:
        """Map each PT_LOAD segment with its permissions and copy its bytes;
        the rest of its memory (.bss) is fresh zeroed pages."""
        pages: dict[int, int] = {}  # page -> protection (segments may share a page)
        for segment in self.image.segments:
            prot = ((PROT_READ if segment.readable else 0) | (PROT_WRITE if segment.writable else 0)
                    | (PROT_EXEC if segment.executable else 0))
            for page in range(page_align_down(segment.vaddr), page_align_up(segment.end), PAGE_SIZE):
                pages[page] = pages.get(page, 0) | prot
        for start, end, prot in _runs(pages):
            self.mm.map(start, end - start, prot, self.exe_path)
        for segment in self.image.segments:
            self.poke(segment.vaddr, segment.data)
        self.mm.brk_start = self.mm.brk_end = page_align_up(self.image.end)

    def _setup_stack(self, execfn: bytes) -> None:
        self.mm.map(STACK_TOP - STACK_SIZE, STACK_SIZE, PROT_READ | PROT_WRITE, "[stack]")
        cpuid = self.machine.kvm.get_supported_cpuid()
        hwcap = next((e.edx for e in cpuid.entries[:cpuid.nent] if e.function == CPUID_FEATURES), 0)
        auxv = standard_auxv(self.image, page_size=PAGE_SIZE, hwcap=hwcap,
                             uid=os.getuid(), gid=os.getgid())
        image, stack_pointer = build_initial_stack(STACK_TOP, self.argv, self.env, auxv, execfn,
                                                   b"x86_64", os.urandom(16))
        self.poke(stack_pointer, image)
        self.machine.set_entry(self.image.entry, stack_pointer)

    def _open_stdio(self, stdio: tuple[int, int, int]) -> None:
        for guest_fd, host_fd in enumerate(stdio):
            flags = O_RDONLY if guest_fd == 0 else O_WRONLY
            self.fds.install_at(guest_fd, HostFile(os.dup(host_fd), f"<stdio {guest_fd}>", flags))

    def poke(self, address: int, data: bytes) -> None:
        """Write into guest memory whatever the page protection (the loader's
        privilege: it fills read-only text)."""
        offset = 0
        while offset < len(data):
            vma = self.mm.find(address + offset)
            assert vma is not None and vma.phys is not None, "poke outside a mapping"
            length = min(len(data) - offset, vma.end - (address + offset))
            self.machine.memory.write(vma.physical(address + offset), data[offset:offset + length])
            offset += length

    # -- running ---------------------------------------------------------------
    def run(self, on_syscall: SyscallHandler, timeout: float | None = None) -> RunResult:
        """Run until exit, crash, fatal signal or timeout."""
        try:
            stop = self.machine.run(on_syscall, timeout)
        except ProcessExit as done:
            return RunResult(done.status & 0xFF)
        except ProcessKilled as killed:
            # Death by SIGPIPE is how `cmd | head` ends: silent, as natively
            # (shells say nothing for it either); the status still says it.
            # So is death by a signal the user sent: the user knows why, and
            # the shell reports it as for a native program (raise_on_self).
            message = ("" if killed.signal == signal_module.SIGPIPE or killed.outside
                       else f"{killed.signal.name}: {killed.reason}")
            return RunResult(signal_status(killed.signal), message, signal=int(killed.signal),
                             outside=killed.outside)
        finally:
            self.fds.close_all()
        if stop.kind == StopKind.TIMEOUT:
            return RunResult(EXIT_TIMEOUT, f"minikvm: timed out: {stop.message}", timed_out=True)
        if stop.crash is not None:
            return RunResult(stop.crash.exit_status, stop.message, stop.crash,
                             signal=int(stop.crash.signal))
        return RunResult(signal_status(signal_module.SIGKILL), stop.message,
                         signal=int(signal_module.SIGKILL))

    def close(self) -> None:
        """Free the machine."""
        self.fds.close_all()
        self.machine.close()


def _runs(pages: dict[int, int]) -> list[tuple[int, int, int]]:
    """Group consecutive pages of equal protection into (start, end, prot)."""
    runs: list[tuple[int, int, int]] = []
    for page in sorted(pages):
        if runs and runs[-1][1] == page and runs[-1][2] == pages[page]:
            runs[-1] = (runs[-1][0], page + PAGE_SIZE, pages[page])
        else:
            runs.append((page, page + PAGE_SIZE, pages[page]))
    return runs
