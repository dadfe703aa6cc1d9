"""Layer 7 — sampling the guest at a fixed rate, for ``minikvm run --flamegraph``.

A host thread wakes *hz* times a second and sends the main thread
``SIGVTALRM`` (``signal.pthread_kill``).  Neither timer of the run is free
for it: ``ITIMER_REAL``/SIGALRM is the time limit and ``ITIMER_PROF``/SIGPROF
the threads' time slices (:mod:`minikvm.machine.machine`).  Where the signal
finds the main thread decides what the sample is:

* **in the guest**: ``KVM_RUN`` returns ``EINTR`` (the run loop resumes, as
  for any signal whose Python handler has run), the registers in
  ``kvm_run`` are the guest's at that instant, and the handler walks the
  stack from RIP and RBP (:func:`~minikvm.observe.stack_walk.walk_frames`);
* **in the host, handling a system call**: the handler's Python frame
  shows it — the signal handler gets the interrupted frame, and one of its
  callers is the dispatcher's ``__call__``, whose local ``number`` is the
  system call's.  The sample is the guest's stack at the call with a frame
  ``[syscall NAME]`` on top — so time spent emulating, or waiting in a
  ``read`` or a ``nanosleep``, shows by system call.  Reading the frame
  costs the run nothing; recording the number at every exit would;
* **in the host, anywhere else** (the run loop between exits, a thread
  switch, a fault's handling): the guest's stack with ``[minikvm]`` on top.

Python runs a signal's handler between two byte codes of the main thread,
so the handler never sees a half-made exit.  It records addresses only;
names are looked up once, at the end (:mod:`minikvm.observe.names`).  It
never raises: a guest with garbage in RBP gives a one-frame stack, and
anything unexpected is counted in :attr:`Sampler.failed` instead.  The
signal ends host waits early too; Python retries them (PEP 475), so the
only cost is the handler's time, measured per sample by the benchmark.
"""

from __future__ import annotations

import signal
import threading
import time
from types import FrameType
from typing import TYPE_CHECKING

from minikvm import ioctl as k
from minikvm.errors import SyscallError
from minikvm.observe.stack_walk import walk_frames
from minikvm.syscalls.dispatch import Dispatcher

if TYPE_CHECKING:
    from minikvm.process.process import Process

#: The signal the sampling thread sends (free: see the module docstring).
SAMPLE_SIGNAL = signal.SIGVTALRM
#: ``--sample-hz``'s default: a prime near 1 kHz, so that sampling does not
#: beat in step with a program's own periodic work (as perf's 997 and 4999).
DEFAULT_SAMPLE_HZ = 997
#: The highest rate accepted: one sample costs ~tens of µs of handler time.
MAX_SAMPLE_HZ = 5000


#: The Python code whose frame is a system call being handled.
DISPATCH_CODE = Dispatcher.__call__.__code__
#: ``syscall`` of a sample taken in the host outside any system call.
IN_HOST = -1


def syscall_in_progress(frame: FrameType | None) -> int:
    """The number of the system call whose handling *frame* is part of, or
    :data:`IN_HOST`."""
    while frame is not None:
        if frame.f_code is DISPATCH_CODE:
            number = frame.f_locals.get("number")
            return number if isinstance(number, int) else IN_HOST
        frame = frame.f_back
    return IN_HOST


class Sampler:
    """Samples of one process's guest, each ``(pcs, syscall)``: return
    addresses innermost first, and None (the guest was running), the number
    of the system call the host was handling, or :data:`IN_HOST`."""

    def __init__(self, proc: Process, hz: int = DEFAULT_SAMPLE_HZ) -> None:
        if not 1 <= hz <= MAX_SAMPLE_HZ:
            raise ValueError(f"sample rate {hz} Hz is outside 1..{MAX_SAMPLE_HZ}")
        self.proc = proc
        self.hz = hz
        self.samples: list[tuple[tuple[int, ...], int | None]] = []
        self.failed = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._previous: object = None

    def read_word(self, address: int) -> int | None:
        """An 8-byte word of the guest's memory through its own mappings,
        None where it has none (the stack walk stops there)."""
        try:
            return self.proc.mm.read_u64(address)
        except SyscallError:
            return None

    def take(self, signum: int, frame: FrameType | None) -> None:
        """The signal handler: one sample of the guest where it is now."""
        try:
            state = self.proc.machine.vcpu.run_state
            regs = state.s.regs.regs
            syscall = (None if state.exit_reason == k.KVM_EXIT_INTR
                       else syscall_in_progress(frame))
            # In a system call RIP is minikvm's stub or past a patched site;
            # RCX is where the program goes on: the caller's instruction.
            pc = int(regs.rcx) if syscall is not None and syscall != IN_HOST else int(regs.rip)
            pcs = walk_frames(pc, int(regs.rbp), self.read_word)
            self.samples.append((tuple(pcs), syscall))
        except Exception:       # never out of a signal handler into the run
            self.failed += 1

    def start(self) -> None:
        """Install the handler and start the thread that sends the signal."""
        self._previous = signal.signal(SAMPLE_SIGNAL, self.take)
        target = threading.main_thread().ident
        period = 1.0 / self.hz

        def tick() -> None:
            deadline = time.monotonic()
            while not self._stop.is_set():
                deadline += period
                delay = deadline - time.monotonic()
                if delay > 0 and self._stop.wait(delay):
                    return
                if delay < -period:                 # fell behind: do not burst
                    deadline = time.monotonic()
                assert target is not None
                signal.pthread_kill(target, SAMPLE_SIGNAL)

        self._thread = threading.Thread(target=tick, name="minikvm-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread, then restore the signal's previous handler."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        signal.signal(SAMPLE_SIGNAL, self._previous)  # type: ignore[arg-type]
