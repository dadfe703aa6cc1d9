"""Where a guest's fork+exec+wait spends its time, step by step (issue 13).

::

    python benchmarks/fork_breakdown.py [--json] [ITERATIONS]     # default 50

Builds ``fork_exec_wait.c`` and ``true_static.c`` (as run.py does), runs
``minikvm run fork_exec_wait true_static ITERATIONS 1`` in a process of
its own with timers put around functions of :mod:`minikvm.tree` and of
exec, and prints the mean time of each step of one fork+exec+wait beside
the whole, which ``fork_exec_wait`` measures itself.

A fork+exec+wait is a relay between two host processes, so the steps are
the stretches between moments on one clock (CLOCK_MONOTONIC, the
machine's, the same in both processes), in the order the work is handed
on (:data:`TIMELINE`); they add up to the whole.  Within some, the calls
of :data:`DETAILS` are timed on their own (e.g. the KVM ioctls of the
child's new VM).  Each timer writes one line to stderr with a single
``write`` (lines of the parent and of its children never mix), tagged with
the host pid.  The first fork (the program's warm-up) is left out.

This is a profile for reading, not a benchmark: run.py's
``fork_exec_wait_ms`` is the figure, measured beside native and gVisor.
run.py runs it once (``--json``) for the steps' means, ``fork_step_KEY_ms``
with the keys of :data:`TIMELINE`, that the performance page draws.
"""

from __future__ import annotations

import importlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable

BENCHMARKS_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCHMARKS_DIR))
from run import COMPILE_COMMAND, minikvm_environment, numbers  # noqa: E402

#: The start of each timer's line on stderr (the guest writes there too).
MARK = "@@fork_breakdown"
DEFAULT_ITERATIONS = 50

#: The moments a fork+exec+wait passes, in order: (moment, module, function
#: or Class.method, "start" or "end" of its call).  A "child" moment is in
#: the new host process, the others in the forking one.
MOMENTS = (
    ("fork called", "minikvm.tree.family", "Family.fork", "start"),
    ("host fork called", "os", "fork", "start"),
    ("child: host fork returned", "os", "fork", "end"),
    ("child: ready to run the guest", "minikvm.tree.fork", "_become_child", "end"),
    ("child: exec begins", "minikvm.process.exec", "prepare", "start"),
    ("child: new image loaded", "minikvm.process.exec", "replace_image", "end"),
    ("child: guest ended", "minikvm.tree.fork", "end_child", "start"),
    ("wait4 returned", "minikvm.tree.family", "Family.wait4", "end"),
)
#: The stretches between consecutive moments (the last one: from wait4's
#: return to the next fork): (key, what).
TIMELINE = (
    ("copies", "parent: the fork's copies (pipes, vCPU state, memory)"),
    ("host_fork", "host fork, until the child runs"),
    ("child_vm", "child: join the tree, a VM of its own, registers, vDSO"),
    ("to_exec", "child: the guest until execve, execve's arguments"),
    ("exec", "child: exec (find, check, parse, load)"),
    ("child_run", "child: true_static runs in the sandbox"),
    ("child_exit", "child's host process ends; the parent's wait4 wakes"),
    ("back", "parent: back in the guest, to the next fork"),
)
#: Calls timed on their own: (what, module, function or Class.method, and
#: the call they are counted within — "" for every call).
START_OVER = "Machine.start_over_after_fork"
GUEST_FORK = "Family.fork"
DETAILS = (
    ("share the in-guest pipes", "minikvm.tree.fork", "share_pipes", ""),
    ("read the vCPU's state", "minikvm.snapshot.cpu_state", "CpuState.capture", ""),
    ("copy the guest memory (freeze_memory)", "minikvm.tree.fork", "freeze_memory", ""),
    ("host fork, the parent's call", "os", "fork", ""),
    ("join the tree (lifeline thread)", "minikvm.tree.family", "Family.become_child", ""),
    ("a VM of its own (start_over_after_fork)", "minikvm.machine.machine", START_OVER, ""),
    ("  map the copy over the memory", "minikvm.kvm.memory", "GuestMemory.take_over",
     START_OVER),
    ("  KVM_CREATE_VM", "minikvm.kvm.system", "Kvm.create_vm", START_OVER),
    ("  KVM_SET_USER_MEMORY_REGION", "minikvm.kvm.vm", "Vm.set_user_memory_region",
     START_OVER),
    ("  KVM_CREATE_VCPU", "minikvm.kvm.vm", "Vm.create_vcpu", START_OVER),
    ("  KVM_SET_CPUID2", "minikvm.kvm.vcpu", "Vcpu.set_cpuid2", START_OVER),
    ("load the registers", "minikvm.snapshot.cpu_state", "CpuState.restore", ""),
    ("the vDSO's data page", "minikvm.process.vdso", "write_data_page", ""),
    ("exec: find, check and parse the ELF", "minikvm.process.exec", "prepare", ""),
    ("exec: load the new image", "minikvm.process.exec", "replace_image", ""),
)
#: The timed functions being called right now (their names as in DETAILS).
ACTIVE: set[str] = set()


def report(kind: str, what: str, value: float) -> None:
    """One timer's line: a "moment" (a clock reading) or a "call" (seconds)."""
    os.write(2, f"{MARK}\t{os.getpid()}\t{kind}\t{what}\t{value:.9f}\n".encode())


def timed(name: str, function: Callable[..., Any], starts: list[str], ends: list[str],
          details: list[tuple[str, str]]) -> Callable[..., Any]:
    """*function*, reporting the moments at its start and end and the
    durations of its calls (those of *details* counted within a call that
    is not running now are not reported).  os.fork returns twice: the end
    of the call is a detail of the parent's, and a moment of the child's."""
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        # minikvm forks host helpers of its own at start: a guest's fork is
        # the host fork within Family.fork.
        guest_fork = function is not ORIGINAL_FORK or GUEST_FORK in ACTIVE
        for moment in starts:
            if guest_fork:
                report("moment", moment, start)
        ACTIVE.add(name)
        result: Any = None
        try:
            result = function(*args, **kwargs)
            return result
        finally:
            ACTIVE.discard(name)
            end = time.perf_counter()
            forked_child = function is ORIGINAL_FORK and result == 0
            for moment in ends:
                if function is not ORIGINAL_FORK or forked_child and guest_fork:
                    report("moment", moment, end)
            for what, within in details:
                if not forked_child and (not within or within in ACTIVE) and guest_fork:
                    report("call", what, end - start)
    return wrapper


ORIGINAL_FORK = os.fork


def install_timers() -> None:
    """One wrapper per function that MOMENTS or DETAILS name."""
    hooks: dict[tuple[str, str], tuple[list[str], list[str], list[tuple[str, str]]]] = \
        defaultdict(lambda: ([], [], []))
    for moment, module, name, edge in MOMENTS:
        hooks[(module, name)][0 if edge == "start" else 1].append(moment)
    for what, module, name, within in DETAILS:
        hooks[(module, name)][2].append((what, within))
    for (module_name, name), (starts, ends, details) in hooks.items():
        owner_name, _, attribute = name.rpartition(".")
        module = importlib.import_module(module_name)
        owner = getattr(module, owner_name) if owner_name else module
        setattr(owner, attribute, timed(name, getattr(owner, attribute), starts, ends,
                                        details))


def inside(argv: list[str]) -> int:
    """In the measured process: the timers, then ``minikvm`` itself."""
    install_timers()
    from minikvm.cli.main import main
    return main(argv)


def build(directory: Path) -> dict[str, Path]:
    """The two C programs, compiled into *directory* as run.py compiles them."""
    built = {}
    for name in ("fork_exec_wait", "true_static"):
        built[name] = directory / name
        subprocess.run([*COMPILE_COMMAND, "-o", str(built[name]),
                        str(BENCHMARKS_DIR / f"{name}.c")], check=True)
    return built


def stretches(moments: dict[str, list[tuple[float, str]]]) -> list[list[float]]:
    """Per fork (the warm-up left out): the seconds of each TIMELINE step.
    The parent's moments come in fork order; the i-th child is the one
    whose host fork returned i-th."""
    names = [moment for moment, *_ in MOMENTS]
    children = sorted(pid for _, pid in moments["child: host fork returned"])
    by_child = {pid: {name: at for name in names if name.startswith("child")
                      for at, owner in moments[name] if owner == pid}
                for pid in children}
    order = sorted(children, key=lambda pid: by_child[pid]["child: host fork returned"])
    forks = [at for at, _ in moments["fork called"]]
    calls = [at for at, _ in moments["host fork called"]]
    waits = sorted(at for at, _ in moments["wait4 returned"])
    rows = []
    for index, pid in enumerate(order[:-1]):
        child = by_child[pid]
        ended = child["child: guest ended"]
        woke = min(at for at in waits if at > ended)
        points = [forks[index], calls[index], *(child[name] for name in names[2:-1]), woke,
                  forks[index + 1]]
        rows.append([later - earlier for earlier, later in zip(points, points[1:])])
    return rows[1:]


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--inside":
        return inside(sys.argv[2:])
    arguments = sys.argv[1:]
    as_json = "--json" in arguments
    arguments = [argument for argument in arguments if argument != "--json"]
    # Three at least: the warm-up and the last fork are not counted.
    iterations = max(3, int(arguments[0])) if arguments else DEFAULT_ITERATIONS
    with tempfile.TemporaryDirectory(prefix="minikvm-fork-breakdown-") as directory:
        scratch = Path(directory)
        data = scratch / "data"
        data.mkdir()
        programs = build(data)
        command = ["run", "--allow-read", str(data), str(programs["fork_exec_wait"]),
                   str(programs["true_static"]), str(iterations), "1"]
        result = subprocess.run([sys.executable, __file__, "--inside", *command],
                                capture_output=True, text=True, env=minikvm_environment(scratch))
    moments: dict[str, list[tuple[float, str]]] = defaultdict(list)
    calls: dict[str, list[float]] = defaultdict(list)
    other = []
    for line in result.stderr.splitlines():
        if not line.startswith(MARK):
            other.append(line)
            continue
        _, pid, kind, what, value = line.split("\t")
        if kind == "moment":
            moments[what].append((float(value), pid))
        else:
            calls[what].append(float(value))
    measured = numbers(result.stdout)
    if result.returncode != 0 or not measured:
        sys.exit(f"fork_breakdown: minikvm run fork_exec_wait failed (status "
                 f"{result.returncode}):\n" + "\n".join(other[-5:]))
    rows = stretches(moments)
    steps = [statistics.mean(column) * 1000 for column in zip(*rows)]
    whole = measured[0]
    if as_json:
        print(json.dumps({"fork_exec_wait_ms": whole, "forks": len(rows),
                          "steps_ms": {key: value for (key, _), value in zip(TIMELINE, steps)}}))
        return 0
    print(f"minikvm run fork_exec_wait true_static {iterations} 1: {whole:.3f} ms per "
          f"fork+exec+wait; the steps of {len(rows)} of them, mean ms (share of the sum):")
    for (_, what), milliseconds in zip(TIMELINE, steps):
        print(f"  {what:58} {milliseconds:8.3f}  {milliseconds / sum(steps):6.1%}")
    print(f"  {'the sum':58} {sum(steps):8.3f}")
    print("calls within the steps, mean ms per call (calls):")
    for what, *_ in DETAILS:
        values = calls.get(what, [])
        mean = f"{statistics.mean(values) * 1000:8.3f}" if values else "       —"
        print(f"  {what:58} {mean}  ({len(values)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
