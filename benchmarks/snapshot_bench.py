"""Fork and reset through :mod:`minikvm.snapshot`, timed (run by run.py).

::

    python benchmarks/snapshot_bench.py PROGRAM REPETITIONS PAGES

*PROGRAM* is ``snapshot_guest.c`` built statically.  Prints the JSON of
:func:`measure_snapshot`: microseconds for ``fork_us`` (a new VM from the
snapshot), and for each reset mechanism (``cow``, ``copy``) a reset after
a request that dirtied none of its own pages (``cow_reset_us_0``) and one
after a request that dirtied *PAGES* pages (``cow_reset_us_N``), with the
pages each restored.  run.py turns these into ``reset_us_0`` and
``reset_us_per_page`` (the slope).  Run it in its own process: it needs
``minikvm`` importable, and run.py gives it the same environment as
``python -m minikvm``.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Callable, TypeVar

from minikvm.process import Process
from minikvm.snapshot import MECHANISMS, snapshot_at_ready_point

TIMEOUT_SECONDS = 30.0
T = TypeVar("T")


def timed(action: Callable[[], T]) -> tuple[float, T]:
    """(microseconds, result) of one call."""
    start = time.perf_counter()
    result = action()
    return (time.perf_counter() - start) * 1e6, result


def measure_snapshot(program: str, repetitions: int, pages: int) -> dict[str, object]:
    """Snapshot *program* at its ready point and time forks and resets.

    Returns lists of microseconds: ``fork_us``, and for each mechanism
    ``MECH_reset_us_0`` / ``MECH_reset_us_N`` (after a request that dirtied
    none / *pages* pages), with the pages each reset restored."""
    process = Process.spawn(program, [program], {"LANG": "C"}, None)
    snapshot, reply = snapshot_at_ready_point(process, timeout=TIMEOUT_SECONDS)
    process.close()
    if snapshot is None:
        raise RuntimeError(f"snapshot_bench: no snapshot of {program}: {reply.message}")
    results: dict[str, object] = {"pages": pages}
    with snapshot:
        forks = []
        for _ in range(repetitions + 1):          # the first one warms up
            micros, fork = timed(snapshot.fork)
            fork.close()
            forks.append(micros)
        results["fork_us"] = forks[1:]
        for mechanism in MECHANISMS:
            with snapshot.fork(mechanism) as fork:
                for dirty, label in ((0, "0"), (pages, "N")):
                    times, restored = [], 0
                    for rep in range(repetitions + 1):
                        answer = fork.request(str(dirty).encode(), timeout=TIMEOUT_SECONDS,
                                              reset=False)
                        if answer.response != f"dirtied {dirty}".encode():
                            raise RuntimeError(f"snapshot_bench: request {dirty}: {answer}")
                        micros, stats = timed(fork.reset)
                        if rep:
                            times.append(micros)
                            restored = stats.pages
                    results[f"{mechanism}_reset_us_{label}"] = times
                    results[f"{mechanism}_restored_pages_{label}"] = restored
    return results


def main() -> int:
    if len(sys.argv) != 4:
        sys.exit("usage: snapshot_bench.py PROGRAM REPETITIONS PAGES")
    print(json.dumps(measure_snapshot(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
