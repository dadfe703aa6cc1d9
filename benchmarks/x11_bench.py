"""System calls of X clients in ``run --x11=headless``, and what a redraw costs (issue 17, item 4).

Standalone: ``PYTHONPATH=. python benchmarks/x11_bench.py [SECONDS]``.

Part 1 runs each client under ``--summary`` twice, to a short and to a long
time limit (or its end), and prints the system calls of the short run
(start-up, mostly) and the rate between the two runs (what the client
makes per second once it runs): an idle ``xclock`` (it redraws once a minute),
``xclock -update 1`` (a redraw a second), ``ico`` (a busy client: it
redraws its polyhedron as fast as it can), ``xdpyinfo`` (start-up to
exit: the cost of connecting) and ``wish`` idle (Tk: two threads).  The
start-up is the dynamic loader, Xlib's locale, fontconfig and the
connection's set-up.

Part 2 runs ``x11perf`` natively against a plain Xvfb and in the sandbox
against its nested one: ``-prop`` is a round trip (a request and its
reply: the cost of a redraw that asks the server something), ``-rect100``
a 100x100 fill (requests batched, no reply: the cost of drawing).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CLIENTS = {
    "xdpyinfo (start-up to exit)": ["/usr/bin/xdpyinfo"],
    "xclock, idle": ["/usr/bin/xclock"],
    "xclock -update 1": ["/usr/bin/xclock", "-update", "1"],
    "ico (busy: redraws at once)": ["/usr/bin/ico"],
    "wish, idle (Tk, 2 threads)": ["/usr/bin/wish"],
}

#: x11perf tests: a round trip, and a batched fill.
X11PERF_TESTS = ("-prop", "-rect100")


def minikvm(*arguments: str) -> list[str]:
    return [sys.executable, "-m", "minikvm", "run", "--x11=headless", *arguments]


def count_calls(argv: list[str], seconds: float) -> tuple[int, float]:
    """Total system calls (the --summary's total line) and the run's wall seconds."""
    started = time.monotonic()
    result = subprocess.run(minikvm("--summary", "--timeout", str(seconds), "--", *argv),
                            env=dict(os.environ, PYTHONPATH=HERE), capture_output=True,
                            text=True, timeout=seconds + 60, stdin=subprocess.DEVNULL)
    elapsed = time.monotonic() - started
    total = re.search(r"^100\.00\s+\S+\s+\S+\s+(\d+)", result.stderr, re.MULTILINE)
    if total is None:
        raise SystemExit(f"{argv[0]}: no --summary in its output:\n{result.stderr[-2000:]}")
    return int(total.group(1)), elapsed


def x11perf_rates(output: str) -> dict[str, float]:
    """``x11perf``'s lines ``N reps @ T msec (R/sec): NAME`` as NAME -> R."""
    return {match.group(2).strip(): float(match.group(1)) for match in
            re.finditer(r"\(\s*([\d.]+)/sec\):\s*(.+)", output)}


def x11perf_native(tests: tuple[str, ...]) -> dict[str, float]:
    """x11perf on the host against a plain Xvfb of its own."""
    read_end, write_end = os.pipe()
    server = subprocess.Popen(["Xvfb", "-displayfd", str(write_end), "-nolisten", "tcp",
                               "-extension", "MIT-SHM", "-screen", "0", "1024x768x24"],
                              pass_fds=(write_end,), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    os.close(write_end)
    try:
        with os.fdopen(read_end) as ready:
            display = ":" + ready.readline().strip()
        result = subprocess.run(["x11perf", "-repeat", "1", "-time", "2", *tests],
                                env=dict(os.environ, DISPLAY=display), capture_output=True,
                                text=True, timeout=120)
        return x11perf_rates(result.stdout)
    finally:
        server.terminate()
        server.wait()


def x11perf_sandboxed(tests: tuple[str, ...]) -> dict[str, float]:
    result = subprocess.run(minikvm("--timeout", "60", "--", "/usr/bin/x11perf", "-repeat",
                                    "1", "-time", "2", *tests),
                            env=dict(os.environ, PYTHONPATH=HERE), capture_output=True,
                            text=True, timeout=120)
    return x11perf_rates(result.stdout)


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 10.0
    short = seconds / 3
    print(f"{'client':32} {'start-up calls':>14} {'then per second':>16}")
    for name, argv in CLIENTS.items():
        if shutil.which(argv[0]) is None:
            print(f"{name:32} (not installed)")
            continue
        first, first_seconds = count_calls(argv, short)
        if name.startswith("xdpyinfo"):               # it ends by itself
            print(f"{name:32} {first:14d} {'(exits)':>16}")
            continue
        second, second_seconds = count_calls(argv, seconds)
        rate = (second - first) / (second_seconds - first_seconds)
        print(f"{name:32} {first:14d} {rate:16.1f}")
    if shutil.which("x11perf") is None:
        return
    native, sandboxed = x11perf_native(X11PERF_TESTS), x11perf_sandboxed(X11PERF_TESTS)
    print(f"\n{'x11perf test':32} {'native /s':>12} {'sandbox /s':>12} {'sandbox µs':>11}")
    for name in native:
        inside = sandboxed.get(name, 0.0)
        cost = 1e6 / inside if inside else float("nan")
        print(f"{name:32} {native[name]:12.0f} {inside:12.0f} {cost:11.2f}")


if __name__ == "__main__":
    main()
