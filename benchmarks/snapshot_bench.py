"""Fork, reset and snapshot files through :mod:`minikvm.snapshot.fork`, timed
(run by run.py).

::

    python benchmarks/snapshot_bench.py PROGRAM REPETITIONS PAGES[,PAGES...]

*PROGRAM* is ``snapshot_guest.c`` built statically; *PAGES* the page counts
a request dirties before a timed reset (run.py passes ``0,1,16,256,4096``).
Prints the JSON of :func:`measure_snapshot`, lists with one value per
repetition (the first, warm-up repetition of each is dropped):

``fork_us``
    a new VM and vCPU from the snapshot;
``fork_prepared_us``
    ``Snapshot.fork`` when ``Snapshot.prepare_forks(1)`` started the fork
    beforehand (untimed): what a server that keeps a spare fork ready pays
    while a request waits;
``MECH_reset_us_P``
    for each reset mechanism (``cow``, ``copy``) and each page count *P*:
    the reset after a request that dirtied *P* pages of the guest's buffer;
``MECH_request_us_P``
    that request itself (deliver, run, answer) — it pays what the previous
    reset deferred: after a ``cow`` reset every page written faults in again;
``MECH_restored_pages_P``
    the pages the reset restored: the *P* pages plus the few every request
    writes (its stack, the request buffer, the response);
``save_ms``, ``load_ms``
    :func:`minikvm.snapshot.file.save` of the snapshot to a file in a
    temporary directory and :func:`~minikvm.snapshot.file.load` of it back
    (``file_bytes`` its size); the loaded snapshot is checked by answering
    one request from a fork of it, outside the timing.

run.py turns these into ``reset_us_0``, ``reset_cow_us_P``,
``reset_copy_us_P``, ``reset_us_per_page`` (the slope) and the others.
Run it in its own process: it needs ``minikvm`` importable, and run.py
gives it the same environment as ``python -m minikvm``.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from typing import Callable, TypeVar

from minikvm.process.process import Process
from minikvm.snapshot.file import load, save
from minikvm.snapshot.fork import MECHANISMS, Fork
from minikvm.snapshot.snapshot import Snapshot, snapshot_at_ready_point

TIMEOUT_SECONDS = 30.0
T = TypeVar("T")


def timed(action: Callable[[], T]) -> tuple[float, T]:
    """(microseconds, result) of one call."""
    start = time.perf_counter()
    result = action()
    return (time.perf_counter() - start) * 1e6, result


def ask(fork: Fork, dirty: int) -> None:
    """One request that dirties *dirty* pages, left unreset; it must answer."""
    answer = fork.request(str(dirty).encode(), timeout=TIMEOUT_SECONDS, reset=False)
    if answer.response != f"dirtied {dirty}".encode():
        raise RuntimeError(f"snapshot_bench: the request dirtying {dirty} pages got {answer}")


def measure_resets(snapshot: Snapshot, repetitions: int, page_counts: list[int],
                   results: dict[str, object]) -> None:
    """For each mechanism and page count: request, then reset, timed apart.
    One fork per mechanism; each page count is repeated in a block (after
    one untimed warm-up), so the figures are those of a handler that
    dirties the same pages on every request, in its steady state — what
    the previous request left (e.g. 4096 pages to write-protect again)
    would otherwise show up in the next one's figures."""
    for mechanism in MECHANISMS:
        with snapshot.fork(mechanism) as fork:
            for pages in page_counts:
                for rep in range(repetitions + 1):
                    request_us, _ = timed(lambda: ask(fork, pages))
                    reset_us, stats = timed(fork.reset)
                    if not rep:
                        continue
                    results.setdefault(f"{mechanism}_request_us_{pages}", []).append(request_us)
                    results.setdefault(f"{mechanism}_reset_us_{pages}", []).append(reset_us)
                    results[f"{mechanism}_restored_pages_{pages}"] = stats.pages


def measure_file(snapshot: Snapshot, repetitions: int, results: dict[str, object]) -> None:
    """Save the snapshot to a file and load it back, *repetitions* times."""
    saves, loads = [], []
    with tempfile.TemporaryDirectory(prefix="minikvm-snapshot-bench-") as directory:
        path = os.path.join(directory, "guest.mkvmsnap")
        for rep in range(repetitions + 1):
            save_us, size = timed(lambda: save(snapshot, path))
            load_us, loaded = timed(lambda: load(path))
            with loaded:
                if not rep:                             # warm-up: check it works
                    with loaded.fork() as fork:
                        ask(fork, 1)
                    continue
            saves.append(save_us / 1000)
            loads.append(load_us / 1000)
            os.unlink(path)
    results["save_ms"], results["load_ms"], results["file_bytes"] = saves, loads, size


def measure_snapshot(program: str, repetitions: int, page_counts: list[int]) -> dict[str, object]:
    """Snapshot *program* at its ready point; time forks, resets after
    requests dirtying each of *page_counts* pages, and a snapshot file's
    save and load.  See the module docstring for the keys."""
    process = Process.spawn(program, [program], {"LANG": "C"}, None)
    try:
        snapshot, reply = snapshot_at_ready_point(process, timeout=TIMEOUT_SECONDS)
    finally:
        process.close()
    if snapshot is None:
        raise RuntimeError(f"snapshot_bench: no snapshot of {program}: {reply.message}")
    results: dict[str, object] = {"page_counts": page_counts}
    with snapshot:
        forks = []
        for _ in range(repetitions + 1):          # the first one warms up
            micros, fork = timed(snapshot.fork)
            fork.close()
            forks.append(micros)
        results["fork_us"] = forks[1:]
        prepared = []
        for _ in range(repetitions + 1):
            snapshot.prepare_forks(1)
            micros, fork = timed(snapshot.fork)
            fork.close()
            prepared.append(micros)
        results["fork_prepared_us"] = prepared[1:]
        measure_resets(snapshot, repetitions, page_counts, results)
        measure_file(snapshot, repetitions, results)
    return results


def main() -> int:
    if len(sys.argv) != 4:
        sys.exit("usage: snapshot_bench.py PROGRAM REPETITIONS PAGES[,PAGES...]")
    page_counts = [int(count) for count in sys.argv[3].split(",")]
    print(json.dumps(measure_snapshot(sys.argv[1], int(sys.argv[2]), page_counts)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
