"""Layer 5 — ``--deterministic``: what the guest observes that varies between
runs, made a function of a seed.

Two runs of the same program with the same inputs still differ in what the
host hands the guest: the time, random bytes, the order in which the
scheduler runs threads.  A failing run is then hard to reproduce.  Under
``--deterministic --seed N`` each of those comes from here instead:

The clocks
    every clock id of ``clock_gettime``, ``gettimeofday``, ``time``, the
    vDSO's, CPU times, ``/proc/uptime``, ``times``: :class:`VirtualClock`.
    Time is *counted*, not measured: every system call advances it by
    :data:`TICK_NS`, a sleep by what it asked for, and a ``futex``,
    ``poll``, ``select``, ``epoll_wait`` or ``sigtimedwait`` that times out
    by its timeout
    (a clock that stood still while a program waited for it to move would
    keep its timers from ever expiring: Go's runtime does just that).  It starts at
    :data:`REALTIME_START_NS` (wall clock) and :data:`MONOTONIC_START_NS`
    (uptime).  The vDSO makes the system call (``--vdso syscall``), so that
    no read escapes the count.
Random bytes
    ``getrandom``, ``/dev/urandom``, ``/dev/random``, ``AT_RANDOM``: the
    :class:`SeededStream` ``"random"``, SHAKE-256 of the seed and the read's
    number.
Thread scheduling
    the :class:`SeededStream` ``"schedule"``: after each system call of a
    program with threads, the running thread gives the vCPU to the next one
    when a seeded count of calls has run out (:meth:`Determinism.switch_now`);
    the wall-clock time slice only interrupts a thread that made no call
    since the last slice.
CPUID
    ``RDRAND`` and ``RDSEED`` are withheld, so libraries fall back to
    ``getrandom`` (where KVM lets CPUID change: not on PVM).
Directory listings
    sorted by name (up to :data:`MAX_SORTED_ENTRIES` entries).
Pids, tids, addresses, uname
    already fixed: pids from 1000, no address randomization, the node name
    ``minikvm``; ``uname``'s version is :data:`KERNEL_VERSION`.

Not covered, and why (``docs/howto/reproduce-a-request.md`` says it too):

* ``rdtsc`` runs natively.  Intercepting it needs ``CR4.TSD``, and PVM does
  not honour it (measured: a CPL 3 ``rdtsc`` still succeeds with TSD set);
  glibc and musl never read the TSC for the time, only the vDSO does, and it
  makes the system call here.
* ``RDRAND``/``RDSEED`` still work for a program that executes them without
  asking CPUID first; on PVM, CPUID shows them too
  (:meth:`Machine.withhold_random_instructions
  <minikvm.machine.machine.Machine.withhold_random_instructions>`).
* Time-driven events — the alarm, interval timers, timerfds, poll and
  futex timeouts, signals sent from outside — happen when the *host's* time
  says; where in the program they land varies.  Timerfds, the alarm and
  socket timeouts run on the host's clocks, not the virtual one.  So does the input itself:
  what the program reads from a pipe, a socket or a file the host changes.
* A thread that runs longer than a time slice without a system call (a spin
  lock) is preempted wherever the slice ends.
* Processes run in parallel host processes: each is deterministic in
  itself; the order in which two of them write to one pipe is the host's.
* File timestamps are the host file system's.

Everything here is plain data (dataclasses of ints and bytes), so a
snapshot copies it and stores it in its file: every fork and every reset of
a deterministic snapshot starts from the same clock, the same random stream
and the same schedule.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from minikvm.linux_abi import NSEC_PER_SEC

#: The seed when ``--deterministic`` is given without ``--seed``.
DEFAULT_SEED = 0
#: The largest seed: 64 bits, stored in snapshot files as a JSON integer.
MAX_SEED = (1 << 64) - 1

#: How far one system call moves the virtual clock (1 µs: about what a call
#: costs on these hosts, so timings printed by a program stay plausible).
TICK_NS = 1_000
#: ``CLOCK_REALTIME`` at the first system call: 2026-01-01T00:00:00Z.
REALTIME_START_NS = 1_767_225_600 * NSEC_PER_SEC
#: ``CLOCK_MONOTONIC`` (and ``CLOCK_BOOTTIME``, the uptime) at the first call.
MONOTONIC_START_NS = 1 * NSEC_PER_SEC

#: The most system calls a thread makes before the schedule may switch:
#: each turn is drawn from 1 to this many calls.
MAX_CALLS_PER_TURN = 16

#: ``uname``'s version field: the host's names the host's kernel build.
KERNEL_VERSION = "#1 SMP PREEMPT_DYNAMIC minikvm deterministic"

#: A directory with more entries than this is listed in the host's order
#: (sorting needs every name in host memory at once).
MAX_SORTED_ENTRIES = 1 << 16

#: Linux clock ids (``linux/time.h``) the virtual clock answers.
CLOCK_REALTIME, CLOCK_MONOTONIC = 0, 1
CLOCK_PROCESS_CPUTIME_ID, CLOCK_THREAD_CPUTIME_ID = 2, 3
CLOCK_MONOTONIC_RAW, CLOCK_REALTIME_COARSE, CLOCK_MONOTONIC_COARSE = 4, 5, 6
CLOCK_BOOTTIME, CLOCK_REALTIME_ALARM, CLOCK_BOOTTIME_ALARM, CLOCK_TAI = 7, 8, 9, 11
REALTIME_CLOCKS = frozenset({CLOCK_REALTIME, CLOCK_REALTIME_COARSE, CLOCK_REALTIME_ALARM,
                             CLOCK_TAI})
MONOTONIC_CLOCKS = frozenset({CLOCK_MONOTONIC, CLOCK_MONOTONIC_RAW, CLOCK_MONOTONIC_COARSE,
                              CLOCK_BOOTTIME, CLOCK_BOOTTIME_ALARM})
CPU_CLOCKS = frozenset({CLOCK_PROCESS_CPUTIME_ID, CLOCK_THREAD_CPUTIME_ID})


def parse_seed(text: str) -> int:
    """``--seed N``: a decimal or ``0x`` integer from 0 to :data:`MAX_SEED`;
    ValueError says what is wrong."""
    try:
        seed = int(text, 0)
    except ValueError:
        raise ValueError(f"--seed: {text!r} is not an integer (give e.g. --seed 42)") from None
    if not 0 <= seed <= MAX_SEED:
        raise ValueError(f"--seed: {text} is outside 0..2**64-1")
    return seed


@dataclass
class SeededStream:
    """Bytes that depend only on the seed, the stream's purpose and how many
    reads came before: read *n* is ``SHAKE-256(seed, purpose, n)``.

    Each read is one hash call whatever its length (``getrandom`` may ask
    for 32 MiB at once); two streams of one seed (``"random"``,
    ``"schedule"``) never share bytes, so a program that draws more random
    numbers does not change its own schedule."""
    seed: int
    purpose: str
    reads: int = 0

    def read(self, count: int) -> bytes:
        """The next *count* bytes of the stream."""
        import hashlib      # here: ~1 ms of start-up that a run without --deterministic skips
        material = b"%d/%s/%d" % (self.seed, self.purpose.encode(), self.reads)
        self.reads += 1
        return hashlib.shake_256(material).digest(count) if count > 0 else b""

    def below(self, bound: int) -> int:
        """A number from 0 to *bound* - 1 (8 bytes reduced: its bias is
        below 2**-50 for the small bounds used here)."""
        return int.from_bytes(self.read(8), "little") % bound


@dataclass
class VirtualClock:
    """Time as a deterministic guest sees it: nanoseconds *counted* since
    the run began — :data:`TICK_NS` a system call, and what each sleep
    asked for.  CPU time counts the calls only (sleeping uses no CPU)."""
    elapsed_ns: int = 0
    cpu_ns: int = 0

    def tick(self) -> None:
        """One system call has run."""
        self.elapsed_ns += TICK_NS
        self.cpu_ns += TICK_NS

    def advance(self, nanoseconds: int) -> None:
        """The guest slept *nanoseconds* (never backwards)."""
        self.elapsed_ns += max(0, nanoseconds)

    def monotonic_ns(self) -> int:
        return MONOTONIC_START_NS + self.elapsed_ns

    def realtime_ns(self) -> int:
        return REALTIME_START_NS + self.elapsed_ns

    def read_ns(self, clock_id: int) -> int | None:
        """What clock *clock_id* reads now; None for an id it does not know."""
        if clock_id in REALTIME_CLOCKS:
            return self.realtime_ns()
        if clock_id in MONOTONIC_CLOCKS:
            return self.monotonic_ns()
        if clock_id in CPU_CLOCKS:
            return self.cpu_ns
        return None

    def uptime_seconds(self) -> float:
        return self.monotonic_ns() / NSEC_PER_SEC


@dataclass
class Determinism:
    """The seeded sources of one deterministic process (see the module
    docstring), made from the seed alone; the other fields are its state
    as the run goes on (and as a snapshot file stores it)."""
    seed: int
    random: SeededStream | None = None
    schedule: SeededStream | None = None
    clock: VirtualClock = field(default_factory=VirtualClock)
    #: Calls left in the running thread's turn (0: draw the first turn).
    turn_left: int = 0
    #: System calls made, and how many had been made at the last time slice.
    calls: int = 0
    calls_at_slice: int = 0

    def __post_init__(self) -> None:
        if self.random is None:
            self.random = SeededStream(self.seed, "random")
        if self.schedule is None:
            self.schedule = SeededStream(self.seed, "schedule")
        if self.turn_left == 0:
            self.turn_left = self._new_turn()

    def _new_turn(self) -> int:
        assert self.schedule is not None
        return 1 + self.schedule.below(MAX_CALLS_PER_TURN)

    def random_bytes(self, count: int) -> bytes:
        """``getrandom``, ``/dev/urandom``, ``AT_RANDOM``."""
        assert self.random is not None
        return self.random.read(count)

    def after_call(self) -> None:
        """A system call has returned: the clock moves on by one tick."""
        self.clock.tick()
        self.calls += 1

    def may_preempt(self) -> bool:
        """At the end of a wall-clock time slice: whether to preempt the
        running thread there.  Only when it made no system call during the
        slice — a thread that spins without calls would keep the vCPU for
        ever; one that makes calls is switched at them, by the schedule."""
        quiet = self.calls == self.calls_at_slice
        self.calls_at_slice = self.calls
        return quiet

    def switch_now(self) -> bool:
        """Whether the running thread's turn is over after this call (then a
        new turn is drawn).  Asked only while there are other threads."""
        self.turn_left -= 1
        if self.turn_left > 0:
            return False
        self.turn_left = self._new_turn()
        return True

    def for_child(self, pid: int) -> "Determinism":
        """A forked child's sources: its own streams (from the seed and its
        pid, so parent and child never draw the same bytes) and the parent's
        clock as it was at the fork."""
        child = Determinism(self.seed ^ (pid * 0x9E37_79B9_7F4A_7C15 & MAX_SEED))
        child.clock = VirtualClock(self.clock.elapsed_ns, self.clock.cpu_ns)
        return child
