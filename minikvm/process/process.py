"""Layer 5 — a process: a loaded program, its memory, files and state.

:meth:`Process.spawn` does what Linux's ``execve`` does: load the ELF
segments into a fresh address space — and, for a dynamically linked
program, its interpreter (``PT_INTERP``, the dynamic loader ``ld.so``)
beside it, read through the sandbox's view
(:mod:`minikvm.process.interpreter`) — map a stack, build the initial stack
(argv, envp, auxv), and point the vCPU at the entry: the interpreter's, when
there is one, which then loads the shared libraries itself with ``openat``
and ``mmap`` and jumps to the program's (``AT_ENTRY``).  That is
``load_elf_binary()`` in fs/binfmt_elf.c, step for step; not the shortcut of
running ``ld.so`` as the program with the program as its argument, which
would make ``argv[0]``, ``AT_EXECFN`` and ``/proc/self/exe`` name ``ld.so``.  :meth:`Process.run` then runs it until it exits, crashes or runs
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
import time
from dataclasses import dataclass
from typing import Any, Callable

from minikvm.cpu.layout import DEFAULT_MEMORY_SIZE, STACK_SIZE, STACK_TOP
from minikvm.linux_abi import O_RDONLY, O_WRONLY
from minikvm.errors import ElfError, MinikvmError
from minikvm.machine.crash import CrashReport
from minikvm.machine.machine import Machine
from minikvm.machine.mm import PROT_EXEC, PROT_READ, PROT_WRITE, page_align_down, page_align_up
from minikvm.machine.stops import (EXIT_CANNOT_RUN, EXIT_TIMEOUT, ProcessExit, ProcessKilled,
                                   StopKind, SyscallHandler, signal_status)
from minikvm.process.determinism import Determinism
from minikvm.process.elf import ElfImage, check_interpreter, default_bias, load_elf, span
from minikvm.process.interpreter import read_interpreter
from minikvm.process.fdtable import DeviceFile, FdTable, HostFile
from minikvm.process.stack import (AT_SYSINFO_EHDR, PLATFORM, RANDOM_BYTES_SIZE,
                                   build_initial_stack, standard_auxv)
from minikvm.process.threads import DEFAULT_MAX_THREADS, ThreadTable
from minikvm.process.vdso import VDSO_AUTO, VDSO_SYSCALL, map_vdso
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
        #: The dynamic loader named by the program's PT_INTERP, at its load
        #: bias (``AT_BASE``), or None for a static program.
        self.interpreter: ElfImage | None = None
        #: What the program may reach; None at creation means no grant at all.
        self.policy: Policy = policy if policy is not None else Policy()
        self.argv = argv
        self.env = env
        self.exe_path = exe_path
        self.cwd = cwd
        self.umask = 0o022
        #: When the sandbox came up (``time.monotonic()``): its uptime counts
        #: from here (/proc/uptime, sysinfo), never the host's boot.
        self.start_time = time.monotonic()
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
        # A child inherits its parent's nice value: minikvm's own, so that
        # `nice -n 10 minikvm run …` shows 10 to the program as natively.
        self.nice = os.getpriority(os.PRIO_PROCESS, 0)
        #: The threads (:mod:`minikvm.process.threads`); the main thread's tid is the pid.
        self.threads = ThreadTable(self.pid, DEFAULT_MAX_THREADS)
        self.fs_base = 0
        #: number -> calls, for the unknown system calls the guest made (at most
        #: MAX_UNKNOWN_SYSCALLS_RECORDED numbers: the guest picks any 64-bit one).
        self.unknown_syscalls: dict[int, int] = {}
        #: How many pipes the program made: the next one's number (its inode).
        self.pipes_made = 0
        #: Where random bytes come from (``getrandom``, ``/dev/urandom``,
        #: ``AT_RANDOM``): the host's, or the seeded stream of :attr:`determinism`.
        self.random: Callable[[int], bytes] = os.urandom
        #: ``--deterministic``'s seeded clock, randomness and schedule
        #: (:mod:`minikvm.process.determinism`); None: the host's.
        self.determinism: Determinism | None = None
        #: Where ``minikvm_wait_request``/``minikvm_respond`` go: None under a
        #: plain run; a snapshot's fork (:mod:`minikvm.snapshot.fork`) sets it.
        self.requests: Any = None
        #: The vDSO (:mod:`minikvm.process.vdso`): "auto", "syscall" or "off",
        #: and the data page's sequence count, which the host advances.
        self.vdso = VDSO_AUTO
        self.vdso_seq = 0
        #: The sandbox's tree of processes this one belongs to
        #: (:class:`minikvm.tree.family.Family`); None when it is alone — a
        #: library's process, a snapshot's fork — and then ``fork`` is refused.
        self.family: Any = None
        #: Hands out pids and tids unique in the whole sandbox once there is
        #: a tree (the process table's); None: the thread table counts alone.
        self.new_id: Callable[[], int] | None = None
        #: Called with the result when a run ends, instead of returning it:
        #: a forked child's host process must end there
        #: (:func:`minikvm.tree.fork.end_child`), not go back into the
        #: code its parent was running when it forked.
        self.end_hook: Callable[[RunResult], None] | None = None
        machine.symbolize = image.symbols.symbolize

    # -- creation ------------------------------------------------------------
    @classmethod
    def spawn(cls, path: str, argv: list[str] | list[bytes], env: dict[str, str] | list[bytes],
              policy: Policy | None, *, memory_size: int = DEFAULT_MEMORY_SIZE, cwd: str | None = None,
              stdio: tuple[int, int, int] = (0, 1, 2), machine: Machine | None = None,
              program: bytes | None = None, vdso: str = VDSO_AUTO,
              determinism: Determinism | None = None) -> "Process":
        """Load the program at *path* into a new machine, ready to run.
        *program* is the file's bytes when the caller read them already
        (:func:`~minikvm.process.elf.read_program`, before confining itself); *path*
        then only names the program.  Its interpreter, if it has one, is read
        through *policy* (the guest's view).  *vdso*: one of ``vdso.VDSO_MODES``.
        *determinism*: the seeded sources of ``--deterministic`` (its vDSO
        then makes system calls, and CPUID withholds RDRAND and RDSEED).
        Raises ElfError for a file that is not a program minikvm can run, or
        whose interpreter cannot be loaded."""
        image = parse_program(path if program is None else program, os.fspath(path))
        machine = machine or Machine(memory_size)
        argv_bytes = [os.fsencode(a) for a in argv]
        if isinstance(env, dict):
            env_bytes = [os.fsencode(f"{k}={v}") for k, v in env.items()]
        else:
            env_bytes = list(env)
        # /proc/self/exe names the file, its symlinks resolved, as Linux's
        # does and as an execve's does (find_executable): Firefox finds its
        # libraries next to /usr/lib/firefox-esr/firefox-esr, not /usr/bin.
        process = cls(machine, image, policy, argv_bytes, env_bytes,
                      os.path.realpath(path), cwd or os.getcwd())
        process.vdso = vdso
        if determinism is not None:
            process.use_determinism(determinism)
            machine.withhold_random_instructions()
        entry, stack_pointer = process.load(image, os.fsencode(path))
        machine.set_entry(entry, stack_pointer)
        process._open_stdio(stdio)
        return process

    def load(self, image: ElfImage, execfn: bytes,
             interpreter_file: tuple[str, bytes] | None = None) -> tuple[int, int]:
        """The loader :meth:`spawn` and ``execve`` (:mod:`minikvm.process.exec`)
        share: map *image* (biased already) into this process's empty address
        space — and its interpreter, read through the view unless the caller
        read it already (*interpreter_file*: its resolved path and bytes, as
        execve reads it before its point of no return) — then the stack with
        argv, envp and auxv (``AT_EXECFN`` = *execfn*) and the vDSO.
        Returns the entry (the interpreter's, when there is one) and the
        initial stack pointer; the caller puts them in the registers."""
        self.image = image
        self.interpreter = None
        self._load_segments(image, self.exe_path)
        self.mm.brk_start = self.mm.brk_end = page_align_up(image.end)
        if image.interpreter is not None:
            self._load_interpreter(interpreter_file)
        self.machine.symbolize = image.symbols.symbolize
        return self._setup_stack(execfn)

    def _load_interpreter(self, interpreter_file: tuple[str, bytes] | None = None) -> None:
        """Read the program's PT_INTERP through the view (unless given) and
        load it where Linux's ``load_elf_interp()`` does: an ET_DYN loader in
        the mmap region, top down, as the program's first mmap would land (an
        ET_EXEC one at its own addresses, which must be free)."""
        assert self.image.interpreter is not None
        path, data = interpreter_file or read_interpreter(
            self.policy, self.image.interpreter, self.cwd, self.exe_path)
        interpreter = load_elf(data, name=path)
        check_interpreter(interpreter, self.exe_path)
        if interpreter.is_pie:
            # (as maximum_alignment() in fs/binfmt_elf.c: the largest
            # power-of-two p_align, so aligned segments stay aligned)
            alignment = max(PAGE_SIZE, *(s.align for s in interpreter.segments
                                         if s.align & (s.align - 1) == 0))
            first_page = (interpreter.start - interpreter.load_bias) & ~(PAGE_SIZE - 1)
            try:
                base = self.mm.find_free(span(interpreter), alignment)
            except MinikvmError as error:
                raise ElfError(f"{self.exe_path}: no room for its interpreter {path} "
                               f"({span(interpreter):#x} bytes): {error}") from None
            interpreter = interpreter.with_bias(base - first_page)
        else:
            for segment in interpreter.segments:
                if not self.mm.is_free(page_align_down(segment.vaddr),
                                       page_align_up(segment.end)):
                    raise ElfError(f"{self.exe_path}: its interpreter {path} is an ET_EXEC "
                                   f"whose segment at {segment.vaddr:#x} overlaps the "
                                   f"program: they cannot both be loaded")
        self._load_segments(interpreter, path)
        self.interpreter = interpreter

    def _load_segments(self, image: ElfImage, name: str) -> None:
        """Map each PT_LOAD segment of *image* with its permissions and copy
        its bytes; the rest of its memory (.bss) is fresh zeroed pages."""
        pages: dict[int, int] = {}  # page -> protection (segments may share a page)
        for segment in image.segments:
            prot = ((PROT_READ if segment.readable else 0) | (PROT_WRITE if segment.writable else 0)
                    | (PROT_EXEC if segment.executable else 0))
            for page in range(page_align_down(segment.vaddr), page_align_up(segment.end), PAGE_SIZE):
                pages[page] = pages.get(page, 0) | prot
        for start, end, prot in _runs(pages):
            self.mm.map(start, end - start, prot, name)
        for segment in image.segments:
            self.poke(segment.vaddr, segment.data)

    def _setup_stack(self, execfn: bytes) -> tuple[int, int]:
        self.mm.map(STACK_TOP - STACK_SIZE, STACK_SIZE, PROT_READ | PROT_WRITE, "[stack]")
        cpuid = self.machine.kvm.get_supported_cpuid()
        hwcap = next((e.edx for e in cpuid.entries[:cpuid.nent] if e.function == CPUID_FEATURES), 0)
        interpreter = self.interpreter
        auxv = standard_auxv(self.image, page_size=PAGE_SIZE, hwcap=hwcap,
                             uid=os.getuid(), gid=os.getgid(),
                             interpreter_base=0 if interpreter is None else
                             interpreter.load_bias)
        vdso_address = map_vdso(self)
        if vdso_address is not None:
            auxv.append((AT_SYSINFO_EHDR, vdso_address))
        image, stack_pointer = build_initial_stack(STACK_TOP, self.argv, self.env, auxv, execfn,
                                                   PLATFORM, self.random(RANDOM_BYTES_SIZE))
        self.poke(stack_pointer, image)
        entry = self.image.entry if interpreter is None else interpreter.entry
        return entry, stack_pointer

    def use_determinism(self, determinism: Determinism | None) -> None:
        """Take random bytes (and, through the system calls, the time and the
        schedule) from *determinism*, or from the host when None — also in
        the random devices already open, so ``getrandom`` and a read of
        ``/dev/urandom`` never draw from two sources."""
        self.determinism = determinism
        self.random = os.urandom if determinism is None else determinism.random_bytes
        if determinism is not None and self.vdso == VDSO_AUTO:
            self.vdso = VDSO_SYSCALL      # every clock read is a counted system call
        for entry in self.fds.entries.values():
            if isinstance(entry.file, DeviceFile):
                entry.file.source = self.random

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
            result = self._run(on_syscall, timeout)
        except BaseException:
            if self.end_hook is not None:   # never unwind into the parent's code
                self.end_hook(RunResult(EXIT_CANNOT_RUN, "minikvm: the process failed"))
            raise
        if self.end_hook is not None:
            self.end_hook(result)
        return result

    def _run(self, on_syscall: SyscallHandler, timeout: float | None) -> RunResult:
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


def parse_program(source: str | bytes, name: str) -> ElfImage:
    """The program file *source* (a host path, or its bytes) parsed and, for
    a PIE, placed at Linux's default bias (``ELF_ET_DYN_BASE``).  ElfError
    for a file that is not a program minikvm can run."""
    image = load_elf(source, name=name)
    return image.with_bias(default_bias(image)) if image.is_pie else image


def _runs(pages: dict[int, int]) -> list[tuple[int, int, int]]:
    """Group consecutive pages of equal protection into (start, end, prot)."""
    runs: list[tuple[int, int, int]] = []
    for page in sorted(pages):
        if runs and runs[-1][1] == page and runs[-1][2] == pages[page]:
            runs[-1] = (runs[-1][0], page + PAGE_SIZE, pages[page])
        else:
            runs.append((page, page + PAGE_SIZE, pages[page]))
    return runs
