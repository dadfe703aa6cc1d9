"""System calls of X clients in ``run --x11=headless`` (issue 17, item 4).

Standalone: ``PYTHONPATH=. python benchmarks/x11_bench.py [SECONDS]``.
Runs each client under ``--summary`` to its time limit (or its end) and
prints the system calls it made, and per second of the run: an idle
``xclock`` (it redraws once a minute), ``xclock -update 1`` (a redraw a
second) and ``xdpyinfo`` (start-up to exit: the cost of connecting).
The figures include the client's start-up (the dynamic loader, Xlib's
locale and connection set-up); the idle rate is what is left after it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CLIENTS = {
    "xdpyinfo (start-up to exit)": ["/usr/bin/xdpyinfo"],
    "xclock, idle": ["/usr/bin/xclock"],
    "xclock -update 1": ["/usr/bin/xclock", "-update", "1"],
}


def count_calls(argv: list[str], seconds: float) -> tuple[int, float]:
    """Total system calls (the --summary's total line) and wall seconds."""
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "minikvm", "run", "--x11=headless",
                             "--summary", "--timeout", str(seconds), "--", *argv],
                            env=dict(os.environ, PYTHONPATH=HERE), capture_output=True,
                            text=True, timeout=seconds + 60)
    elapsed = time.monotonic() - started
    total = re.search(r"^100\.00\s+\S+\s+\S+\s+(\d+)", result.stderr, re.MULTILINE)
    if total is None:
        raise SystemExit(f"{argv[0]}: no --summary in its output:\n{result.stderr[-2000:]}")
    return int(total.group(1)), elapsed


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 10.0
    print(f"{'client':32} {'syscalls':>9} {'seconds':>8} {'per second':>11}")
    for name, argv in CLIENTS.items():
        calls, elapsed = count_calls(argv, seconds)
        print(f"{name:32} {calls:9d} {elapsed:8.1f} {calls / elapsed:11.1f}")


if __name__ == "__main__":
    main()
