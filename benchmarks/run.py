"""Benchmarks: minikvm beside the physical floor and beside its peers.

::

    python benchmarks/run.py            # the full run (a few minutes), as a table
    python benchmarks/run.py --quick    # the same figures, smaller, in under a minute
    python benchmarks/run.py --json     # machine-readable (one JSON object)
    python benchmarks/run.py --smoke    # tiny sizes, 2 repetitions: checks the harness only

Every figure is measured in the same run as its baseline, in rounds (the
baseline, then minikvm, then each peer, and again), so a machine whose
load comes and goes moves both.  Each is repeated (7 rounds, 5 with
``--quick``; after a warm-up where it matters) and reported as the median
and the minimum; the ratios use the medians.  Nothing here is a pass/fail
threshold: the tests run ``--smoke`` once to check that the keys are
there, never the numbers.

The C programs are compiled here, with ``cc -static -O2``, into a
temporary directory, from the sources beside this file:

====================  =====================================================
``exit_floor.c``      the floor: minikvm's own syscall exit path on
                      /dev/kvm, driven from C with nothing else
``fork_floor.c``      a new VM, memory slot and vCPU in C: the floor under a fork
``getpid_bench.c``    one system call, timed by the guest's own clock
``clock_bench.c``     one clock_gettime, answered by the vDSO without an exit
``stat_bench.c``      one ``stat`` of a path: the policy's path lookup
``compute.c``         fill, hash and sort a buffer (CPU and memory)
``memtouch.c``        malloc, write every page of, and free 256 MiB (first touches)
``hello.c``           the smallest program: what starting costs
``fork_exec_wait.c``  fork, exec and wait for a child, as a shell runs a command
``true_static.c``     ``/bin/true`` as a static program: that child
``snapshot_guest.c``  a request handler dirtying N pages per request, for
                      ``snapshot_bench.py`` (fork, reset, snapshot files)
``echo_handler.c``    a small HTTP handler, for ``serve_bench.py``:
                      ``minikvm serve`` beside the same binary run natively
                      per request, CGI-style
====================  =====================================================

plus ``/bin/busybox`` for the I/O workloads (``cat`` and ``dd bs=64k`` of a
big file) and for the shell loop (``sh -c 'for i in $(seq 50); do
true_static; done'``).  Snapshots are timed by ``snapshot_bench.py`` (forks; resets
after requests dirtying 0, 1, 16, 256 and 4096 pages, with both reset
mechanisms; a snapshot file's save and load) and ``minikvm serve`` by
``serve_bench.py`` (a load generator at 1 and 4 concurrent clients, against
a native CGI server running the same handler in the same run), each in a
process of its own.  Where a guest's fork+exec+wait spends its time, step by
step, is ``fork_breakdown.py``'s to say (a profile, not part of this run).

Peers, when installed: Debian's qemu-user (``qemu-x86_64``; install it with
``apt-get install qemu-user``) and gVisor (``runsc``).  Neither is
installed automatically; a missing one is reported with the reason.

See ``docs/explanation/performance.md`` for what the figures mean.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

BENCHMARKS_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCHMARKS_DIR.parent
BUSYBOX = "/bin/busybox"
C_PROGRAMS = ("exit_floor", "fork_floor", "getpid_bench", "clock_bench", "stat_bench",
              "compute", "memtouch", "hello", "snapshot_guest", "echo_handler",
              "fork_exec_wait", "true_static")
#: stat_bench's paths: one missing and outside every grant (the policy
#: answers ENOENT, hidden), one found in the default system view.
STAT_HIDDEN_PATH = "/minikvm-bench-missing/file"
STAT_VIEW_PATH = "/usr/bin/env"
COMPILE_COMMAND = ("cc", "-static", "-O2", "-Wall", f"-I{REPO_ROOT / 'include'}")
#: Programs that need ld.so itself (dlopen), so are linked dynamically.
DYNAMIC_C_PROGRAMS = ("dlopen",)
#: The big shared library dlopen.c loads (issue 12, item 2), by its soname:
#: ld.so finds it through /etc/ld.so.cache, in minikvm's system view.
DLOPEN_LIBRARY = "libpython3.11.so.1.0"
MIB = 1 << 20
#: A guest that loops forever must not hang the benchmark: every process
#: gets this long (seconds) before it is killed and the run fails loudly.
PROCESS_TIMEOUT_SECONDS = 600

#: The moonshot goals (docs/explanation/performance.md): ratio key -> (goal, "≤"/"≥").
GOALS = {"syscall_ratio": (1.3, "≤"), "vdso_clock_ratio": (3.0, "≤"), "compute_ratio": (0.97, "≥"), "memtouch_ratio": (0.7, "≥"),
         "hello_ratio": (2.0, "≤"),
         # issue 13: a child process started faster than gVisor starts one
         "fork_exec_wait_gvisor_ratio": (1.0, "≤"), "shell_loop_gvisor_ratio": (1.0, "≤")}


@dataclass(frozen=True)
class Sizes:
    """How much work each workload does: one set per mode."""
    repetitions: int
    exit_iterations: int        # exits per repetition of exit_floor
    syscall_iterations: int     # getpid calls per repetition (in minikvm)
    native_syscall_iterations: int
    compute_mib: int            # compute.c's buffer
    io_mib: int                 # the file busybox cats
    serve_requests: int         # requests per server and concurrency (serve_bench.py)
    spawn_iterations: int       # fork+exec+waits per repetition of fork_exec_wait
    shell_iterations: int       # N of the shell loop's $(seq N)


FULL = Sizes(repetitions=7, exit_iterations=50_000, syscall_iterations=20_000,
             native_syscall_iterations=1_000_000, compute_mib=32, io_mib=64,
             serve_requests=1400, spawn_iterations=100, shell_iterations=50)
QUICK = Sizes(repetitions=5, exit_iterations=10_000, syscall_iterations=4_000,
              native_syscall_iterations=200_000, compute_mib=8, io_mib=16, serve_requests=500,
              spawn_iterations=30, shell_iterations=50)
SMOKE = Sizes(repetitions=2, exit_iterations=1_000, syscall_iterations=500,
              native_syscall_iterations=10_000, compute_mib=1, io_mib=1, serve_requests=40,
              spawn_iterations=3, shell_iterations=3)

#: The guest memory fork_floor.c gives its VMs, MiB: minikvm's default
#: (DEFAULT_MEMORY_SIZE in minikvm/cpu/layout.py), which snapshot_guest runs with.
FORK_FLOOR_MIB = 1024
#: Pages a request dirties before a timed reset (snapshot_bench.py): every
#: mode measures all of them, each with both reset mechanisms.
RESET_PAGE_COUNTS = (0, 1, 16, 256, 4096)
#: Concurrent clients of the serve benchmark: one, and more than the cores.
SERVE_CLIENTS = (1, 2, 4)
#: serve_bench.py's servers: minikvm serve and its two native baselines.
SERVE_BACKENDS = ("serve", "cgi", "persistent")


@dataclass
class Samples:
    """Repeated measurements of one figure, in the figure's unit."""
    values: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def min(self) -> float:
        return min(self.values)


@dataclass
class Results:
    """Everything one run found: figures by JSON key, and why some are missing."""
    figures: dict[str, Samples] = field(default_factory=dict)
    ratios: dict[str, float] = field(default_factory=dict)
    derived: dict[str, float] = field(default_factory=dict)   # computed from medians
    skipped: dict[str, str] = field(default_factory=dict)
    facts: dict[str, object] = field(default_factory=dict)

    def add(self, key: str, samples: Samples) -> None:
        self.figures[key] = samples

    def ratio(self, key: str, numerator: str, denominator: str) -> None:
        if numerator in self.figures and denominator in self.figures:
            self.ratios[key] = self.figures[numerator].median / self.figures[denominator].median

    def as_json(self) -> dict[str, object]:
        """Flat keys: each figure is its median; ``KEY_min`` its minimum."""
        out: dict[str, object] = {}
        for key, samples in self.figures.items():
            out[key] = round(samples.median, 6)
            out[f"{key}_min"] = round(samples.min, 6)
        out.update({key: round(value, 4) for key, value in self.derived.items()})
        out.update({key: round(value, 4) for key, value in self.ratios.items()})
        out["skipped"] = self.skipped
        out["machine"] = self.facts
        return out


# -- building and running ------------------------------------------------------
def build_programs(directory: Path) -> dict[str, Path]:
    """Compile each C program statically into *directory*."""
    if shutil.which(COMPILE_COMMAND[0]) is None:
        sys.exit("benchmarks: cc not found (apt-get install gcc libc6-dev)")
    built = {}
    for name in (*C_PROGRAMS, *DYNAMIC_C_PROGRAMS):
        output = directory / name
        compile_command = [part for part in COMPILE_COMMAND
                           if not (part == "-static" and name in DYNAMIC_C_PROGRAMS)]
        command = [*compile_command, "-o", str(output), str(BENCHMARKS_DIR / f"{name}.c")]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            sys.exit(f"benchmarks: compiling {name}.c failed:\n{result.stderr}"
                     "(cc -static needs the static C library: apt-get install libc6-dev)")
        built[name] = output
    return built


def run_process(argv: list[str], env: dict[str, str] | None = None,
                stdout: int | None = subprocess.PIPE) -> tuple[float, str]:
    """Run *argv* to completion; return (wall seconds, stdout).  A failure
    stops the whole run: a number from a program that failed means nothing."""
    start = time.perf_counter()
    result = subprocess.run(argv, stdout=stdout, stderr=subprocess.PIPE, text=True, env=env,
                            timeout=PROCESS_TIMEOUT_SECONDS)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"benchmarks: {' '.join(argv)} failed with status {result.returncode}:\n"
                 f"{result.stderr.strip()}")
    return elapsed, result.stdout or ""


def attempt(argv: list[str], env: dict[str, str] | None = None) -> tuple[float, str, str]:
    """Run *argv* as :func:`run_process` does, for a workload that a runner
    may legitimately be unable to do: (wall seconds, stdout, "" or why it
    failed — the last line of its stderr), never stopping the run."""
    start = time.perf_counter()
    try:
        result = subprocess.run(argv, capture_output=True, text=True, env=env,
                                timeout=PROCESS_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        return 0.0, "", f"did not finish in {PROCESS_TIMEOUT_SECONDS} s"
    elapsed = time.perf_counter() - start
    if result.returncode == 0:
        return elapsed, result.stdout, ""
    lines = result.stderr.strip().splitlines() or [""]
    return elapsed, result.stdout, f"exit status {result.returncode}: {lines[-1]}"


def numbers(output: str) -> list[float]:
    """The per-repetition lines a benchmark program prints (other lines skipped)."""
    values = []
    for line in output.splitlines():
        try:
            values.append(float(line))
        except ValueError:
            pass
    return values


def checksum(output: str) -> str:
    """compute.c's last line, ``checksum N``."""
    return next((line for line in output.splitlines() if line.startswith("checksum")), "")


@dataclass
class Runner:
    """One way of running a static program: natively, in minikvm, in a peer."""
    name: str
    prefix: Callable[[Path], list[str]]   # the argv before the program, given a data dir
    env: dict[str, str] | None = None

    def argv(self, program: str | Path, *args: object, data: Path) -> list[str]:
        return [*self.prefix(data), str(program), *map(str, args)]


def minikvm_environment(scratch: Path) -> dict[str, str]:
    """The environment for ``python -m minikvm``: this checkout on the path,
    and byte-code caching *on* (into the scratch directory), as an installed
    package has it.  Some sandboxes set PYTHONDONTWRITEBYTECODE, which
    would make every start recompile minikvm from source."""
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(scratch / "pycache")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return env


def make_runners(scratch: Path, results: Results) -> dict[str, Runner]:
    """Native and minikvm always; the peers when installed."""
    runners = {
        "native": Runner("native", lambda data: []),
        "minikvm": Runner("minikvm", lambda data: [sys.executable, "-m", "minikvm", "run",
                                                   "--allow-read", str(data)],
                          minikvm_environment(scratch)),
    }
    qemu = shutil.which("qemu-x86_64")
    if qemu:
        runners["qemu_user"] = Runner("qemu_user", lambda data: [qemu])
    else:
        results.skipped["qemu_user"] = ("qemu-x86_64 is not installed "
                                        "(Debian: apt-get install qemu-user)")
    bwrap = shutil.which("bwrap")
    # bubblewrap: the namespace sandbox, its cost a floor for any sandbox that
    # runs the program on the host kernel (read-only root, no network).
    sandbox = [bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc",
               "--unshare-all", "--die-with-parent"] if bwrap else []
    problem = peer_problem(sandbox) if bwrap else ""
    if bwrap and not problem:
        runners["bwrap"] = Runner("bwrap", lambda data: sandbox)
    elif bwrap:
        results.skipped["bwrap"] = f"bwrap is installed but cannot start a sandbox here: {problem}"
    else:
        results.skipped["bwrap"] = "bwrap is not installed (Debian: apt-get install bubblewrap)"
    runsc = shutil.which("runsc")
    gvisor = [runsc, "--rootless", "--network=none", "do"] if runsc else []
    problem = peer_problem(gvisor) if runsc else ""
    if runsc and not problem:
        runners["gvisor"] = Runner("gvisor", lambda data: gvisor)
    elif runsc:
        results.skipped["gvisor"] = f"runsc is installed but cannot start a sandbox here: {problem}"
    else:
        results.skipped["gvisor"] = ("runsc (gVisor) is not installed; see "
                                     "https://gvisor.dev/docs/user_guide/install/")
    return runners


def peer_problem(prefix: list[str]) -> str:
    """Why the peer started by *prefix* cannot run ``true`` here ("" when it
    can).  A peer may be installed yet unusable — gVisor cannot create its
    sandbox inside some containers — and that is a reason to skip it, not
    to stop the whole run."""
    try:
        result = subprocess.run([*prefix, "true"], capture_output=True, text=True,
                                timeout=PROCESS_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        return f"{' '.join(prefix)} true did not finish in {PROCESS_TIMEOUT_SECONDS} s"
    if result.returncode == 0:
        return ""
    lines = result.stderr.strip().splitlines() or [f"exit status {result.returncode}"]
    return lines[-1]


def key(runner: str, figure: str) -> str:
    """JSON key of *figure* for *runner*: ``syscall_us`` for minikvm's own,
    ``qemu_user_syscall_us`` for a peer's.  (The native baselines and the
    task's ``compute_minikvm_s`` style keys are spelled out by the callers.)"""
    return figure if runner == "minikvm" else f"{runner}_{figure}"


# -- the workloads ---------------------------------------------------------------
def bench_syscall(programs: dict[str, Path], sizes: Sizes, runners: dict[str, Runner],
                  data: Path, results: Results) -> None:
    """The C floor and getpid, per call, in rounds.

    Each round runs the floor (exit_floor's CPL 3 syscall loop and its bare
    CPL 0 ``out``), then getpid_bench under each runner, timed by the
    guest's own clock: a figure and its baseline are measured seconds
    apart, so a load that comes and goes moves both."""
    samples: dict[str, list[float]] = {}
    for _ in range(sizes.repetitions):
        for mode, figure in (("syscall", "exit_floor_us"), ("patched", "exit_floor_one_us"),
                             ("out", "out_floor_us")):
            _, output = run_process([str(programs["exit_floor"]), mode,
                                     str(sizes.exit_iterations), "1"])
            samples.setdefault(figure, []).extend(numbers(output))
        for name, runner in runners.items():
            iterations = (sizes.syscall_iterations if name == "minikvm"
                          else sizes.native_syscall_iterations)
            _, output = run_process(runner.argv(programs["getpid_bench"], iterations, 1,
                                                data=data), runner.env)
            figure = "syscall_native_us" if name == "native" else key(name, "syscall_us")
            samples.setdefault(figure, []).extend(numbers(output))
            # Ten times getpid's count: if the vDSO fell back to a system
            # call, minikvm's run would still end in reasonable time.
            clock_iterations = (10 * sizes.syscall_iterations if name == "minikvm"
                                else sizes.native_syscall_iterations)
            _, output = run_process(runner.argv(programs["clock_bench"], clock_iterations, 1,
                                                data=data), runner.env)
            figure = "vdso_clock_native_ns" if name == "native" else key(name, "vdso_clock_ns")
            samples.setdefault(figure, []).extend(numbers(output))
        # The view's cost: a stat the policy answers "hidden", one it
        # resolves in the system view, and the latter natively.
        for name, path, figure in (("minikvm", STAT_HIDDEN_PATH, "stat_hidden_us"),
                                   ("minikvm", STAT_VIEW_PATH, "stat_view_us"),
                                   ("native", STAT_VIEW_PATH, "stat_native_us")):
            runner = runners[name]
            iterations = (sizes.syscall_iterations if name == "minikvm"
                          else sizes.native_syscall_iterations)
            _, output = run_process(runner.argv(programs["stat_bench"], path, iterations, 1,
                                                data=data), runner.env)
            samples.setdefault(figure, []).extend(numbers(output))
    for figure, values in samples.items():
        results.add(figure, Samples(values))
    # minikvm patches a site after its first call (minikvm.machine.syscall_sites),
    # so getpid's loop runs on the one-exit path: that is its floor, and what
    # is left above it is Python's share of a system call.
    patching = os.environ.get("MINIKVM_SYSCALL_PATCH", "1") != "0"   # as minikvm reads it
    floor = "exit_floor_one_us" if patching else "exit_floor_us"
    results.ratio("syscall_ratio", "syscall_us", floor)
    results.ratio("vdso_clock_ratio", "vdso_clock_ns", "vdso_clock_native_ns")
    if "syscall_us" in results.figures and floor in results.figures:
        results.derived["python_share_us"] = (results.figures["syscall_us"].median
                                              - results.figures[floor].median)


def bench_compute(programs: dict[str, Path], sizes: Sizes, runners: dict[str, Runner],
                  data: Path, results: Results) -> None:
    """compute.c: ``compute_native_s``, ``compute_minikvm_s``, a peer's
    ``gvisor_compute_s``…, and ``compute_ratio`` (native / minikvm)."""
    timed_in_program("compute", (sizes.compute_mib, 1), programs, sizes.repetitions, runners,
                     data, results)


def bench_profiled(programs: dict[str, Path], sizes: Sizes, runners: dict[str, Runner],
                   data: Path, scratch: Path, results: Results) -> None:
    """compute.c under ``--flamegraph`` at the default rate (997 Hz) beside
    plain minikvm, in turns: ``compute_profiled_s``, the samples it took
    (``compute_profiled_samples``), and ``profile_overhead_ratio`` = plain /
    profiled time (1 = sampling costs nothing; issue 16, item 2)."""
    minikvm = runners["minikvm"]
    folded = scratch / "compute.folded"
    plain: list[float] = []
    profiled: list[float] = []
    arguments = (sizes.compute_mib, 1)
    for _ in range(sizes.repetitions):
        _, output = run_process(minikvm.argv(programs["compute"], *arguments, data=data),
                                minikvm.env)
        plain.extend(numbers(output))
        _, output = run_process([*minikvm.prefix(data), "--flamegraph", str(folded),
                                 str(programs["compute"]), *map(str, arguments)], minikvm.env)
        profiled.extend(numbers(output))
    results.add("compute_profiled_s", Samples(profiled))
    results.add("compute_unprofiled_s", Samples(plain))
    results.derived["compute_profiled_samples"] = float(sum(
        int(line.rsplit(" ", 1)[1]) for line in folded.read_text().splitlines() if line))
    results.ratio("profile_overhead_ratio", "compute_unprofiled_s", "compute_profiled_s")


def timed_in_program(name: str, arguments: tuple[object, ...], programs: dict[str, Path],
                     repetitions: int, runners: dict[str, Runner], data: Path,
                     results: Results) -> None:
    """Run the benchmark program *name* (which times itself and ends with a
    ``checksum N`` line) *repetitions* times under each runner, the runners
    taking turns; every runner must print the same checksum.  Figures
    ``NAME_native_s``, ``NAME_minikvm_s``, ``PEER_NAME_s``; ``NAME_ratio`` is
    native time / minikvm time (higher is better, 1 = native)."""
    samples: dict[str, list[float]] = {runner: [] for runner in runners}
    sums = {}
    for _ in range(repetitions):
        for runner_name, runner in runners.items():
            _, output = run_process(runner.argv(programs[name], *arguments, data=data),
                                    runner.env)
            sums[runner_name] = checksum(output)
            samples[runner_name].extend(numbers(output))
    if len(set(sums.values())) != 1:
        sys.exit(f"benchmarks: {name}.c computed different results: {sums}")
    for runner_name, values in samples.items():
        figure = (f"{name}_{runner_name}_s" if runner_name in ("native", "minikvm")
                  else key(runner_name, f"{name}_s"))
        results.add(figure, Samples(values))
    results.ratio(f"{name}_ratio", f"{name}_native_s", f"{name}_minikvm_s")


#: memtouch.c's buffer per mode, MiB: the issue's 256 MiB in a full run.
MEMTOUCH_MIB = {"full": 256, "quick": 64, "smoke": 4}


def bench_memtouch(programs: dict[str, Path], mebibytes: int, repetitions: int,
                   runners: dict[str, Runner], data: Path, results: Results) -> None:
    """memtouch.c: ``memtouch_native_s``, ``memtouch_minikvm_s``, a peer's
    ``gvisor_memtouch_s``…, and ``memtouch_ratio`` (native / minikvm)."""
    timed_in_program("memtouch", (mebibytes, 1), programs, repetitions, runners, data, results)


#: The I/O workloads: JSON prefix -> busybox arguments (FILE is the big file).
#: ``cat`` uses sendfile(2), which minikvm hands to the host kernel whole;
#: ``dd bs=64k`` reads and writes through guest memory, 64 KiB a call.
IO_BLOCK = 65536
IO_WORKLOADS = {"io": ("cat", "FILE"), "io_rw": ("dd", "if=FILE", f"bs={IO_BLOCK}")}


def bench_io(sizes: Sizes, runners: dict[str, Runner], data: Path, results: Results) -> None:
    """busybox reading a big file, output to /dev/null, end to end (start-up
    included), the runners taking turns."""
    if not os.access(BUSYBOX, os.X_OK):
        results.skipped["io"] = f"{BUSYBOX} not found (apt-get install busybox-static)"
        return
    path = data / "big"
    with open(path, "wb") as file:
        for _ in range(sizes.io_mib):
            file.write(os.urandom(MIB))
    for prefix, arguments in IO_WORKLOADS.items():
        argv = [argument.replace("FILE", str(path)) for argument in arguments]
        samples: dict[str, list[float]] = {name: [] for name in runners}
        for _ in range(sizes.repetitions):
            for name, runner in runners.items():
                seconds, _ = run_process(runner.argv(BUSYBOX, *argv, data=data), runner.env,
                                         stdout=subprocess.DEVNULL)
                samples[name].append(seconds)
        for name, values in samples.items():
            figure = (f"{prefix}_{name}_s" if name in ("native", "minikvm")
                      else key(name, f"{prefix}_s"))
            results.add(figure, Samples(values))
        results.ratio(f"{prefix}_ratio", f"{prefix}_native_s", f"{prefix}_minikvm_s")


def bench_hello(programs: dict[str, Path], sizes: Sizes, runners: dict[str, Runner],
                data: Path, scratch: Path, results: Results) -> None:
    """End to end: ``python -m minikvm run ./hello`` as a process, beside
    ``python3 -c pass`` (the floor for anything written in Python)."""
    hello = programs["hello"]
    # One untimed start writes minikvm's byte-code cache (see minikvm_environment).
    run_process(runners["minikvm"].argv(hello, data=data), runners["minikvm"].env)
    samples: dict[str, list[float]] = {"python_startup_ms": []}
    samples.update({name: [] for name in runners})
    for _ in range(sizes.repetitions):
        seconds, _ = run_process([sys.executable, "-c", "pass"], runners["minikvm"].env)
        samples["python_startup_ms"].append(seconds * 1000)
        for name, runner in runners.items():
            seconds, _ = run_process(runner.argv(hello, data=data), runner.env)
            samples[name].append(seconds * 1000)
    for name, values in samples.items():
        figure = {"python_startup_ms": "python_startup_ms", "native": "hello_native_ms",
                  "minikvm": "hello_ms"}.get(name) or key(name, "hello_ms")
        results.add(figure, Samples(values))
    results.ratio("hello_ratio", "hello_ms", "python_startup_ms")


#: The host's dynamically linked programs timed end to end (issue 12, item 6):
#: figure prefix -> argv.  ``true`` is ld.so and libc's start-up alone;
#: ``python3 -c pass`` adds libpython and the interpreter's own imports.
DYNAMIC_PROGRAMS = {"dyn_true": ("/usr/bin/true",), "dyn_python": ("/usr/bin/python3", "-c", "pass")}


def bench_dynamic(sizes: Sizes, runners: dict[str, Runner], data: Path, scratch: Path,
                  results: Results) -> None:
    """``/usr/bin/true`` and ``python3 -c pass`` end to end under every
    runner: ``dyn_true_ms``, ``dyn_python_ms`` (minikvm), ``dyn_true_native_ms``
    …, ``bwrap_dyn_true_ms``, ``gvisor_dyn_true_ms``.  ``dyn_true_syscalls``
    and ``dyn_python_syscalls`` count the system calls minikvm handled for
    each (``--summary``): ld.so's start-up is many small calls.  What they
    read (ld.so, the libraries, Python's modules) is in minikvm's default
    system view: no grant is added."""
    minikvm = runners["minikvm"]
    for prefix, argv in DYNAMIC_PROGRAMS.items():
        if not os.access(argv[0], os.X_OK):
            results.skipped[prefix] = f"{argv[0]} is not installed"
            continue
        summary = subprocess.run([*minikvm.prefix(data), "--summary", *argv], env=minikvm.env,
                                 capture_output=True, text=True, timeout=PROCESS_TIMEOUT_SECONDS)
        totals = [line.split() for line in summary.stderr.splitlines() if line.endswith(" total")]
        if summary.returncode != 0 or not totals:
            sys.exit(f"benchmarks: minikvm run {' '.join(argv)} failed:\n{summary.stderr}")
        results.derived[f"{prefix}_syscalls"] = float(totals[-1][3])
        samples: dict[str, list[float]] = {name: [] for name in runners}
        for _ in range(sizes.repetitions):
            for name, runner in runners.items():
                seconds, _ = run_process(runner.argv(argv[0], *argv[1:], data=data), runner.env)
                samples[name].append(seconds * 1000)
        for name, values in samples.items():
            figure = f"{prefix}_native_ms" if name == "native" else key(name, f"{prefix}_ms")
            results.add(figure, Samples(values))


def find_library(soname: str) -> Path | None:
    """Where ld.so would find *soname* among the host's library directories."""
    for directory in ("/usr/lib/x86_64-linux-gnu", "/lib/x86_64-linux-gnu", "/usr/lib", "/lib"):
        if (Path(directory) / soname).is_file():
            return Path(directory) / soname
    return None


def bench_dlopen(programs: dict[str, Path], sizes: Sizes, runners: dict[str, Runner],
                 data: Path, results: Results) -> None:
    """dlopen.c loading libpython3.11 (issue 12, item 2): ``dlopen_native_s``,
    ``dlopen_minikvm_s``, peers', ``dlopen_ratio`` (native / minikvm), and
    where minikvm's time goes: ``dlopen_mmap_share``, the part of the time
    minikvm spent in system calls that went to ``mmap`` (``--summary``) —
    a file mapping is a copy into guest memory (minikvm/syscalls/memory.py),
    so it grows with the library's size (``dlopen_library_mib``)."""
    library = find_library(DLOPEN_LIBRARY)
    if library is None:
        results.skipped["dlopen"] = (f"{DLOPEN_LIBRARY} is not installed "
                                     "(apt-get install libpython3.11)")
        return
    results.derived["dlopen_library_mib"] = library.stat().st_size / MIB
    timed_in_program("dlopen", (DLOPEN_LIBRARY,), programs, sizes.repetitions, runners, data,
                     results)
    minikvm = runners["minikvm"]
    summary = subprocess.run([*minikvm.prefix(data), "--summary", str(programs["dlopen"]),
                              DLOPEN_LIBRARY], env=minikvm.env, capture_output=True, text=True,
                             timeout=PROCESS_TIMEOUT_SECONDS)
    seconds = {line.split()[-1]: float(line.split()[1]) for line in summary.stderr.splitlines()
               if re.match(r"^\s*[\d.]+\s+[\d.]+\s", line)}
    if summary.returncode != 0 or not seconds.get("total"):
        sys.exit(f"benchmarks: minikvm run dlopen failed:\n{summary.stderr}")
    results.derived["dlopen_mmap_share"] = seconds.get("mmap", 0.0) / seconds["total"]


#: The runners that start a child in the same sandbox as its parent.
#: qemu-user is left out: its execve hands the child to the host kernel,
#: which runs an x86-64 child natively, outside the emulator.
PROCESS_RUNNERS = ("native", "minikvm", "bwrap", "gvisor")


def shell_loop(child: Path, count: int) -> str:
    """issue 13's shell loop, *count* times *child*.  ``|| exit 1`` and the
    final ``echo "$i"`` are its check: a shell whose fork is refused says
    "can't fork" and goes on, so only the last ``$i`` shows that every
    iteration ran (and ran *child*)."""
    return f'for i in $(seq {count}); do {child} || exit 1; done; echo "$i"'


def bench_processes(programs: dict[str, Path], sizes: Sizes, runners: dict[str, Runner],
                    data: Path, results: Results) -> None:
    """A second process (issue 13), in rounds, under each of PROCESS_RUNNERS.

    ``fork_exec_wait_ms`` (minikvm), ``fork_exec_wait_native_ms``,
    ``bwrap_fork_exec_wait_ms``, ``gvisor_fork_exec_wait_ms``: milliseconds
    per fork, exec of true_static and wait, timed by fork_exec_wait.c itself
    over ``spawn_iterations`` of them (100 in a full run).

    ``shell_loop_ms`` (and ``shell_loop_native_ms``, …): milliseconds per
    *iteration* of busybox ``sh -c 'for i in $(seq N); do true_static;
    done'`` (N = ``shell_iterations``, 50 in a full run).  Each round times
    the script end to end with N and with 0 iterations, and the difference
    over N is the figure: the sandbox's and the shell's start-up and
    ``$(seq)``'s subshell drop out.  ``shell_loop_total_ms`` is the whole
    N-iteration script, start-up included.

    Ratios (lower is better): ``fork_exec_wait_ratio`` = minikvm / native,
    ``fork_exec_wait_gvisor_ratio`` = minikvm / gVisor (issue 13's goal:
    below 1); the same for ``shell_loop``.

    A runner that cannot start a second process — minikvm refused fork
    with EPERM before issue 13 — leaves its figure out, with the program's
    own words in ``skipped`` under the figure's key, and the run goes on.
    Natively a failure stops the run: the harness or the machine is wrong."""
    child = data / "true_static"            # in the grant minikvm is given
    shutil.copy2(programs["true_static"], child)
    shell = os.access(BUSYBOX, os.X_OK)
    if not shell:
        results.skipped["shell_loop_ms"] = f"{BUSYBOX} not found (apt-get install busybox-static)"
    chosen = {name: runners[name] for name in PROCESS_RUNNERS if name in runners}
    count = sizes.shell_iterations
    samples: dict[str, list[float]] = {}
    refused: dict[str, str] = {}            # figure -> why it is not measured

    def figure(runner: str, measure: str) -> str:
        return f"{measure}_native_ms" if runner == "native" else key(runner, f"{measure}_ms")

    def refuse(runner: str, name: str, problem: str, what: str) -> None:
        if runner == "native":
            sys.exit(f"benchmarks: {what} failed natively: {problem}")
        refused[name] = f"{runner} could not run {what}: {problem}"

    for _ in range(sizes.repetitions):
        for name, runner in chosen.items():
            spawn = figure(name, "fork_exec_wait")
            if spawn not in refused:
                _, output, problem = attempt(runner.argv(
                    programs["fork_exec_wait"], child, sizes.spawn_iterations, 1, data=data),
                    runner.env)
                if problem:
                    refuse(name, spawn, problem, "fork_exec_wait")
                else:
                    samples.setdefault(spawn, []).extend(numbers(output))
            loop = figure(name, "shell_loop")
            if not shell or loop in refused:
                continue
            seconds = {}
            for iterations in (count, 0):
                elapsed, output, problem = attempt(runner.argv(
                    BUSYBOX, "sh", "-c", shell_loop(child, iterations), data=data), runner.env)
                ran = output.strip()
                if not problem and ran != (str(iterations) if iterations else ""):
                    problem = f"the loop ended at i = {ran or 'nothing'}, not {iterations}"
                if problem:
                    refuse(name, loop, problem, f"the shell loop of {iterations}")
                    break
                seconds[iterations] = elapsed
            else:
                samples.setdefault(loop, []).append((seconds[count] - seconds[0]) * 1000 / count)
                samples.setdefault(figure(name, "shell_loop_total"), []).append(
                    seconds[count] * 1000)
    for name, values in samples.items():
        results.add(name, Samples(values))
    results.skipped.update(refused)
    for measure in ("fork_exec_wait", "shell_loop"):
        results.ratio(f"{measure}_ratio", f"{measure}_ms", f"{measure}_native_ms")
        results.ratio(f"{measure}_gvisor_ratio", f"{measure}_ms", f"gvisor_{measure}_ms")


#: fork_breakdown.py's steps of a fork+exec+wait, in order (its TIMELINE's keys).
FORK_STEPS = ("copies", "host_fork", "child_vm", "to_exec", "exec", "child_run", "child_exit",
              "back")


def bench_fork_steps(sizes: Sizes, scratch: Path, results: Results) -> None:
    """Where minikvm's fork+exec+wait goes: ``fork_breakdown.py`` once, over
    ``spawn_iterations`` forks, gives ``fork_step_KEY_ms`` for each key of
    FORK_STEPS — the mean of each step of the relay between the two host
    processes (its docstring says which is which); they add up to about
    ``fork_exec_wait_ms``.  Skipped, with the reason, when minikvm did not
    fork, or when the profile cannot run (its timers name minikvm's
    functions: a renamed one is a skip, not a failed run)."""
    if "fork_exec_wait_ms" not in results.figures:
        results.skipped["fork_steps"] = "minikvm did not fork (see fork_exec_wait_ms)"
        return
    _, output, problem = attempt([sys.executable, str(BENCHMARKS_DIR / "fork_breakdown.py"),
                                  "--json", str(sizes.spawn_iterations)],
                                 minikvm_environment(scratch))
    if problem:
        results.skipped["fork_steps"] = f"fork_breakdown.py failed: {problem}"
        return
    steps = json.loads(output)["steps_ms"]
    for step in FORK_STEPS:
        results.derived[f"fork_step_{step}_ms"] = steps[step]


def bench_snapshot(programs: dict[str, Path], sizes: Sizes, scratch: Path,
                   results: Results) -> None:
    """Fork, reset and snapshot files through minikvm/snapshot/ (in
    ``snapshot_bench.py``, a process of its own), when that module exists.

    For each mechanism and each of RESET_PAGE_COUNTS: ``reset_cow_us_P`` /
    ``reset_copy_us_P``, a reset after a request that dirtied *P* pages;
    ``request_cow_us_P`` / ``request_copy_us_P``, that request (which pays
    what the previous reset deferred); ``reset_cow_pages_P`` … the pages
    the reset restored.  ``reset_us_0`` and ``reset_copy_us_0`` are the
    resets after nothing was dirtied; ``reset_us_per_page`` /
    ``reset_copy_us_per_page`` the slope of the medians from 0 to the
    largest count.  ``fork_us``, and ``fork_prepared_us`` (a fork
    :meth:`~minikvm.snapshot.snapshot.Snapshot.prepare_forks` started beforehand);
    ``snapshot_save_ms`` and
    ``snapshot_load_ms`` for a snapshot file (``snapshot_file_kib`` big)."""
    if not (REPO_ROOT / "minikvm" / "snapshot" / "snapshot.py").exists():
        results.skipped["snapshot"] = ("minikvm/snapshot/snapshot.py does not exist yet: no reset_us_0, "
                                       "reset_us_per_page or fork_us")
        return
    counts = ",".join(map(str, RESET_PAGE_COUNTS))
    _, output = run_process([sys.executable, str(BENCHMARKS_DIR / "snapshot_bench.py"),
                             str(programs["snapshot_guest"]), str(sizes.repetitions), counts],
                            minikvm_environment(scratch))
    found = json.loads(output)
    results.add("fork_us", Samples(found["fork_us"]))
    results.add("fork_prepared_us", Samples(found["fork_prepared_us"]))
    _, output = run_process([str(programs["fork_floor"]), str(FORK_FLOOR_MIB),
                             str(sizes.repetitions)])
    results.add("fork_floor_us", Samples(numbers(output)))
    results.ratio("fork_floor_ratio", "fork_us", "fork_floor_us")
    largest = max(RESET_PAGE_COUNTS)
    for mechanism, prefix in (("cow", "reset"), ("copy", "reset_copy"), ("keep", "reset_keep")):
        for pages in RESET_PAGE_COUNTS:
            results.add(f"reset_{mechanism}_us_{pages}",
                        Samples(found[f"{mechanism}_reset_us_{pages}"]))
            results.add(f"request_{mechanism}_us_{pages}",
                        Samples(found[f"{mechanism}_request_us_{pages}"]))
            results.derived[f"reset_{mechanism}_pages_{pages}"] = \
                found[f"{mechanism}_restored_pages_{pages}"]
        zero = results.figures[f"reset_{mechanism}_us_0"]
        many = results.figures[f"reset_{mechanism}_us_{largest}"]
        pages = (found[f"{mechanism}_restored_pages_{largest}"]
                 - found[f"{mechanism}_restored_pages_0"])
        results.add(f"{prefix}_us_0", zero)
        results.derived[f"{prefix}_us_per_page"] = (many.median - zero.median) / max(pages, 1)
        # Issue 14's measure of a request's cost growing with its pages: the
        # request alone, and the request and its reset together.
        requests = [results.figures[f"request_{mechanism}_us_{count}"].median
                    for count in (0, largest)]
        resets = [zero.median, many.median]
        results.derived[f"request_{mechanism}_us_per_page"] = \
            (requests[1] - requests[0]) / largest
        results.derived[f"cycle_{mechanism}_us_per_page"] = \
            (requests[1] + resets[1] - requests[0] - resets[0]) / largest
    results.add("snapshot_save_ms", Samples(found["save_ms"]))
    results.add("snapshot_load_ms", Samples(found["load_ms"]))
    results.derived["snapshot_file_kib"] = found["file_bytes"] / 1024


def bench_serve(programs: dict[str, Path], sizes: Sizes, scratch: Path,
                results: Results) -> None:
    """``minikvm serve`` (one worker per core) under a load generator, beside
    the same handler run natively behind the same HTTP front end with as
    many workers: started per request (CGI style, ``cgi_``) and kept running
    (``persistent_``, the floor), in ``serve_bench.py``; the servers up at
    once, taking turns.

    For each concurrency C in SERVE_CLIENTS (C = 1 has no ``_cC`` in its
    keys): ``serve_p50_ms``, ``serve_p99_ms``, ``serve_rps`` and the same
    for ``cgi_`` and ``persistent_``; ``serve_rps_ratio`` = serve / cgi
    requests per second (higher is better), ``serve_floor_rps_ratio`` =
    serve / persistent (1 = a reset costs nothing).  A server that cannot
    start is a skip, with its reason, not a failed run."""
    if not (REPO_ROOT / "minikvm" / "cli" / "serve.py").exists():
        results.skipped["serve"] = "minikvm/cli/serve.py does not exist yet"
        return
    argv = [sys.executable, str(BENCHMARKS_DIR / "serve_bench.py"),
            str(programs["echo_handler"]), str(sizes.serve_requests), str(sizes.repetitions),
            ",".join(map(str, SERVE_CLIENTS))]
    try:
        result = subprocess.run(argv, capture_output=True, text=True,
                                env=minikvm_environment(scratch),
                                timeout=PROCESS_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        results.skipped["serve"] = f"serve_bench.py did not finish in {PROCESS_TIMEOUT_SECONDS} s"
        return
    if result.returncode != 0:
        lines = result.stderr.strip().splitlines() or [f"exit status {result.returncode}"]
        results.skipped["serve"] = f"serve_bench.py failed: {lines[-1]}"
        return
    found = json.loads(result.stdout)
    if "error" in found:
        results.skipped["serve"] = found["error"]
        return
    for clients in SERVE_CLIENTS:
        level = "" if clients == 1 else f"_c{clients}"
        for backend in SERVE_BACKENDS:
            figures = found[f"{backend}_c{clients}"]
            for figure in ("p50_ms", "p99_ms", "rps"):
                results.derived[f"{backend}{level}_{figure}"] = figures[figure]
        results.ratios[f"serve{level}_rps_ratio"] = (results.derived[f"serve{level}_rps"]
                                                     / results.derived[f"cgi{level}_rps"])
        results.ratios[f"serve{level}_p50_ratio"] = (results.derived[f"serve{level}_p50_ms"]
                                                     / results.derived[f"cgi{level}_p50_ms"])
        results.ratios[f"serve{level}_floor_rps_ratio"] = (
            results.derived[f"serve{level}_rps"] / results.derived[f"persistent{level}_rps"])
    results.facts["serve_requests"] = found[f"serve_c{SERVE_CLIENTS[0]}"]["requests"]


def machine_facts() -> dict[str, object]:
    """What the numbers were measured on."""
    model = ""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            model = next((line.split(":", 1)[1].strip() for line in cpuinfo
                          if line.startswith("model name")), "")
    except OSError:
        pass
    return {"cpu": model, "cores": os.cpu_count(), "kernel": platform.release(),
            "kvm": "pvm" if os.path.exists("/sys/module/kvm_pvm") else "hardware",
            "python": platform.python_version(),
            "date": time.strftime("%Y-%m-%d %H:%M %Z"),
            # Other work on the machine slows every figure; the ratios less so.
            "load_average_at_start": round(os.getloadavg()[0], 2)}


# -- reporting -----------------------------------------------------------------
def format_table(results: Results, mode: str) -> str:
    """The human-readable report: each figure beside its baseline."""
    figures, ratios = results.figures, results.ratios

    def show(key: str, unit: str) -> str:
        if key not in figures:
            return "—"
        samples = figures[key]
        return f"{samples.median:,.3f} {unit} (min {samples.min:,.3f})"

    def ratio(name: str, meaning: str) -> str:
        if name not in ratios:
            return f"{name:18} —"
        goal = GOALS.get(name)
        target = f"goal {goal[1]} {goal[0]}" if goal else ""
        return f"{name:18} {ratios[name]:8.3f}   {target:10}  {meaning}"

    facts = results.facts
    lines = [f"minikvm benchmarks ({mode}; {facts['cpu']}, {facts['cores']} cores, "
             f"KVM: {facts['kvm']}, Python {facts['python']}, load average "
             f"{facts['load_average_at_start']} -> {facts['load_average_at_end']}); "
             f"median (min) of each",
             "",
             f"{'figure':26} {'minikvm':34} {'baseline':32}"]
    rows = [
        ("syscall (getpid)", show("syscall_us", "µs"),
         "exit floor " + show("exit_floor_us", "µs")),
        ("", "", "one-exit floor (patched site) " + show("exit_floor_one_us", "µs")),
        ("", "", "bare CPL 0 out " + show("out_floor_us", "µs")),
        ("Python's share", f"{results.derived.get('python_share_us', float('nan')):.2f} µs",
         "getpid minus its floor"),
        ("", "", "native " + show("syscall_native_us", "µs")),
        ("clock_gettime (vDSO)", show("vdso_clock_ns", "ns"),
         "native " + show("vdso_clock_native_ns", "ns")),
        ("stat, missing and hidden", show("stat_hidden_us", "µs"),
         "getpid " + show("syscall_us", "µs")),
        ("stat, in the system view", show("stat_view_us", "µs"),
         "native " + show("stat_native_us", "µs")),
        ("compute", show("compute_minikvm_s", "s"), "native " + show("compute_native_s", "s")),
        ("compute, --flamegraph", show("compute_profiled_s", "s"),
         f"{results.derived.get('compute_profiled_samples', 0):.0f} samples; without "
         + show("compute_unprofiled_s", "s")),
        ("memtouch (first touches)", show("memtouch_minikvm_s", "s"),
         "native " + show("memtouch_native_s", "s")),
        ("io (busybox cat)", show("io_minikvm_s", "s"), "native " + show("io_native_s", "s")),
        ("io (busybox dd bs=64k)", show("io_rw_minikvm_s", "s"),
         "native " + show("io_rw_native_s", "s")),
        ("hello, end to end", show("hello_ms", "ms"),
         "python3 -c pass " + show("python_startup_ms", "ms")),
        ("", "", "native " + show("hello_native_ms", "ms")),
        ("dynamic /usr/bin/true", show("dyn_true_ms", "ms"),
         "native " + show("dyn_true_native_ms", "ms")),
        ("", f"{results.derived.get('dyn_true_syscalls', 0):.0f} system calls", ""),
        ("dynamic python3 -c pass", show("dyn_python_ms", "ms"),
         "native " + show("dyn_python_native_ms", "ms")),
        ("", f"{results.derived.get('dyn_python_syscalls', 0):.0f} system calls", ""),
        (f"dlopen {DLOPEN_LIBRARY}", show("dlopen_minikvm_s", "s"),
         "native " + show("dlopen_native_s", "s")),
        ("", f"{results.derived.get('dlopen_mmap_share', 0):.0%} of it in mmap (copies)",
         f"{results.derived.get('dlopen_library_mib', 0):.1f} MiB file"),
        ("fork+exec+wait", show("fork_exec_wait_ms", "ms"),
         "native " + show("fork_exec_wait_native_ms", "ms")),
        ("", "", "bwrap " + show("bwrap_fork_exec_wait_ms", "ms")),
        ("", "", "gVisor " + show("gvisor_fork_exec_wait_ms", "ms")),
        ("shell loop, per iteration", show("shell_loop_ms", "ms"),
         "native " + show("shell_loop_native_ms", "ms")),
        ("", "", "bwrap " + show("bwrap_shell_loop_ms", "ms")),
        ("", "", "gVisor " + show("gvisor_shell_loop_ms", "ms")),
        ("shell loop, whole script", show("shell_loop_total_ms", "ms"),
         "gVisor " + show("gvisor_shell_loop_total_ms", "ms")),
    ]
    rows += [(f"  fork step: {step}", f"{results.derived[f'fork_step_{step}_ms']:.3f} ms",
              "mean (fork_breakdown.py)") for step in FORK_STEPS
             if f"fork_step_{step}_ms" in results.derived]
    derived = results.derived
    if "fork_us" in figures:
        rows.append(("snapshot fork", show("fork_us", "µs"),
                     "prepared " + show("fork_prepared_us", "µs")))
        rows.append(("", "", "C floor (VM, 1 GiB slot, vCPU) " + show("fork_floor_us", "µs")))
        rows.append(("reset, P pages dirty", "mechanism cow", "mechanism copy"))
        for pages in RESET_PAGE_COUNTS:
            restored = f"{derived[f'reset_cow_pages_{pages}']:.0f} restored"
            rows.append((f"  P = {pages} ({restored})", show(f"reset_cow_us_{pages}", "µs"),
                         show(f"reset_copy_us_{pages}", "µs")))
        rows.append(("the request before it", "", ""))
        for pages in RESET_PAGE_COUNTS:
            rows.append((f"  P = {pages}", show(f"request_cow_us_{pages}", "µs"),
                         show(f"request_copy_us_{pages}", "µs")))
        rows.append(("reset, per dirty page", f"{derived['reset_us_per_page']:.3f} µs",
                     f"{derived['reset_copy_us_per_page']:.3f} µs (slope of the medians)"))
        for mechanism in ("cow", "copy", "keep"):
            rows.append((f"per page, {mechanism}" if mechanism != "cow" else
                         "per page dirtied, cow",
                         f"request {derived[f'request_{mechanism}_us_per_page']:.3f} µs",
                         f"request + reset {derived[f'cycle_{mechanism}_us_per_page']:.3f} µs"))
        rows.append(("", show("request_keep_us_4096", "µs"),
                     "keep: the request dirtying 4096 pages"))
        rows.append(("snapshot file save", show("snapshot_save_ms", "ms"),
                     f"({derived['snapshot_file_kib']:,.0f} KiB)"))
        rows.append(("snapshot file load", show("snapshot_load_ms", "ms"), ""))
    if "serve_rps" in derived:
        rows.append(("serve (HTTP), a worker", "minikvm serve", "native CGI (fork+exec)"))
        rows.append(("  per core", "", "native persistent handler (the floor)"))
        for clients in SERVE_CLIENTS:
            level = "" if clients == 1 else f"_c{clients}"

            def latency(backend: str) -> str:
                return (f"p50 {derived[f'{backend}{level}_p50_ms']:.2f} ms, p99 "
                        f"{derived[f'{backend}{level}_p99_ms']:.2f} ms, "
                        f"{derived[f'{backend}{level}_rps']:.0f}/s")
            rows.append((f"  {clients} client{'s' if clients > 1 else ''}", latency("serve"),
                         latency("cgi")))
            rows.append(("", "", latency("persistent")))
    lines += [f"{a:26} {b:34} {c}" for a, b, c in rows]
    lines += ["", "ratios:",
              ratio("syscall_ratio", "minikvm syscall / C floor of the same path (one exit "
                    "when sites are patched): lower is better, 1 = no Python cost"),
              ratio("vdso_clock_ratio", "minikvm clock_gettime / native: lower is better, "
                    "1 = native (no exit)"),
              ratio("compute_ratio", "native time / minikvm time: higher is better, 1 = native"),
              ratio("memtouch_ratio", "the same, for first touches of fresh memory"),
              ratio("profile_overhead_ratio", "compute without / with --flamegraph at 997 Hz: "
                    "1 = sampling is free"),
              ratio("io_ratio", "native time / minikvm time (start-up included): higher "
                    "is better"),
              ratio("io_rw_ratio", "the same, for dd's 64 KiB reads and writes"),
              ratio("hello_ratio", "minikvm hello / python3 -c pass: lower is better"),
              ratio("fork_floor_ratio", "snapshot fork / its C floor: lower is better, "
                    "1 = no Python cost"),
              ratio("fork_exec_wait_ratio", "minikvm fork+exec+wait / native: lower is better"),
              ratio("fork_exec_wait_gvisor_ratio", "the same / gVisor: below 1 beats gVisor"),
              ratio("shell_loop_ratio", "minikvm shell loop iteration / native: lower is better"),
              ratio("shell_loop_gvisor_ratio", "the same / gVisor: below 1 beats gVisor")]
    for clients in SERVE_CLIENTS:
        level = "" if clients == 1 else f"_c{clients}"
        lines.append(ratio(f"serve{level}_rps_ratio",
                           f"serve / CGI requests per second, {clients} client"
                           f"{'s' if clients > 1 else ''}: higher is better"))
        lines.append(ratio(f"serve{level}_floor_rps_ratio",
                           f"serve / persistent requests per second, {clients} client"
                           f"{'s' if clients > 1 else ''}: 1 = a reset costs nothing"))
    peers = [name for name in ("qemu_user", "bwrap", "gvisor") if f"{name}_syscall_us" in figures]
    for name in peers:
        lines += ["", f"{name} (same workloads):",
                  f"  syscall {show(f'{name}_syscall_us', 'µs')}   "
                  f"clock_gettime {show(f'{name}_vdso_clock_ns', 'ns')}   "
                  f"compute {show(f'{name}_compute_s', 's')}   "
                  f"memtouch {show(f'{name}_memtouch_s', 's')}",
                  f"  io {show(f'{name}_io_s', 's')}   io_rw {show(f'{name}_io_rw_s', 's')}",
                  f"  hello {show(f'{name}_hello_ms', 'ms')}   "
                  f"dynamic true {show(f'{name}_dyn_true_ms', 'ms')}   "
                  f"python3 -c pass {show(f'{name}_dyn_python_ms', 'ms')}"]
    if results.skipped:
        lines += ["", "not measured:"] + [f"  {name}: {why}" for name, why in
                                          results.skipped.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    modes = parser.add_mutually_exclusive_group()
    modes.add_argument("--quick", action="store_true", help="smaller workloads (under a minute)")
    modes.add_argument("--smoke", action="store_true",
                       help="tiny workloads, 2 repetitions: checks the harness, not the machine")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--repetitions", type=int, default=None, metavar="N",
                        help="rounds of each figure (default 7, --quick 5)")
    options = parser.parse_args(argv)
    sizes, mode = (SMOKE, "smoke") if options.smoke else (QUICK, "quick") if options.quick \
        else (FULL, "full")
    if options.repetitions:
        sizes = Sizes(**{**sizes.__dict__, "repetitions": options.repetitions})
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        sys.exit("benchmarks: /dev/kvm cannot be opened read-write (no KVM, or not in the "
                 "kvm group)")

    results = Results(facts=machine_facts())
    with tempfile.TemporaryDirectory(prefix="minikvm-bench-") as directory:
        scratch = Path(directory)
        data = scratch / "data"
        data.mkdir()
        programs = build_programs(scratch)
        runners = make_runners(scratch, results)
        bench_syscall(programs, sizes, runners, data, results)
        bench_compute(programs, sizes, runners, data, results)
        bench_profiled(programs, sizes, runners, data, scratch, results)
        bench_memtouch(programs, MEMTOUCH_MIB[mode], sizes.repetitions, runners, data, results)
        bench_io(sizes, runners, data, results)
        bench_hello(programs, sizes, runners, data, scratch, results)
        bench_dynamic(sizes, runners, data, scratch, results)
        bench_dlopen(programs, sizes, runners, data, results)
        bench_processes(programs, sizes, runners, data, results)
        bench_fork_steps(sizes, scratch, results)
        bench_snapshot(programs, sizes, scratch, results)
        bench_serve(programs, sizes, scratch, results)
    results.facts["load_average_at_end"] = round(os.getloadavg()[0], 2)
    results.facts["mode"] = mode
    results.facts["repetitions"] = sizes.repetitions
    if options.json:
        print(json.dumps(results.as_json(), indent=2, ensure_ascii=False))
    else:
        print(format_table(results, mode))
    return 0


if __name__ == "__main__":
    sys.exit(main())
