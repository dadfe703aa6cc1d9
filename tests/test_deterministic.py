"""``--deterministic --seed N``: two runs with one seed and the same inputs
see the same (minikvm/process/determinism.py).

``tests/programs/deterministic.c`` prints what varies between runs — the
clocks, ``getrandom`` and ``/dev/urandom`` bytes, ``random()`` seeded from
the time and the pid, addresses, the order in which three threads took a
lock, the CPU time, ``/proc/uptime``, the CPUID bits of RDRAND/RDSEED and
a directory's order.  Natively two runs differ; under ``--deterministic``
five runs with one seed print the same bytes (and the same ``--trace``),
while another seed changes the random bytes and the threads' interleaving.
A shell that forks, and a snapshot saved with ``--deterministic``
(``tests/guests/seeded_handler.c``) answering through ``snapshot run`` and
``serve``, are checked the same way.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from minikvm.machine.machine import Machine
from minikvm.process.determinism import (MONOTONIC_START_NS, REALTIME_START_NS, TICK_NS,
                                         Determinism, SeededStream, parse_seed)
from minikvm.linux_abi import NSEC_PER_SEC
from tests.guest_runs import ROOT, run_minikvm, run_native
from tests.guests import guest
from tests.programs.build import go_program, program

pytestmark = pytest.mark.kvm

RUNS = 5
TIMEOUT = 60


def listing_dirs(tmp_path: Path) -> tuple[Path, Path]:
    """Two directories with the same names made in opposite orders: the
    host's file system may list them differently (tmpfs lists the newest
    first), a deterministic run lists both sorted."""
    first, second = tmp_path / "one", tmp_path / "two"
    for directory, names in ((first, "bca"), (second, "acb")):
        directory.mkdir()
        for name in names:
            (directory / name).write_text(name)
    return first, second


def deterministic(arguments: list, seed: int, *, cwd: Path | None = None) -> str:
    result = run_minikvm(["--seed", seed, *arguments], timeout=TIMEOUT, cwd=cwd, text=True)
    assert result.returncode == 0, result.stderr
    return result.stdout


def line(output: str, name: str) -> str:
    found = [text for text in output.splitlines() if text.startswith(name + " ")]
    assert found, f"no {name!r} line in:\n{output}"
    return found[0]


def test_seeds_are_checked() -> None:
    assert parse_seed("0x10") == 16
    for bad in ["", "x", "-1", str(1 << 64), "1.5"]:
        with pytest.raises(ValueError, match="--seed"):
            parse_seed(bad)


def test_a_stream_depends_on_seed_purpose_and_position_only() -> None:
    one, same, other = SeededStream(1, "random"), SeededStream(1, "random"), SeededStream(2, "random")
    assert one.read(32) == same.read(32) != other.read(32)
    assert one.read(32) != SeededStream(1, "random").read(32)     # the next read differs
    assert SeededStream(1, "schedule").read(32) != SeededStream(1, "random").read(32)
    assert len(one.read(1 << 20)) == 1 << 20


def test_five_runs_with_one_seed_print_the_same(tmp_path: Path) -> None:
    executable = program("deterministic", "glibc-dynamic")
    listing_dirs(tmp_path)
    outputs = [deterministic(["--allow-read", tmp_path, "--", executable, tmp_path / "one"], 7)
               for _ in range(RUNS)]
    assert len(set(outputs)) == 1, "\n---\n".join(outputs)
    output = outputs[0]
    realtime, monotonic, boottime, _, seconds = line(output, "clocks").split()[1:]
    assert int(seconds) == REALTIME_START_NS // NSEC_PER_SEC
    assert float(monotonic) == pytest.approx(MONOTONIC_START_NS / NSEC_PER_SEC, abs=0.01)
    assert float(realtime) > REALTIME_START_NS / NSEC_PER_SEC
    after = float(line(output, "after").split()[1])
    assert after - float(monotonic) >= 0.002              # the 2 ms nanosleep counted
    assert re.fullmatch(r"order [ABC]{60}", line(output, "order"))
    assert line(output, "timed") == "timed waits took their timeouts"   # poll, sigtimedwait


def test_natively_two_runs_differ(tmp_path: Path) -> None:
    """What the deterministic runs hide does vary (so the test above can fail)."""
    executable = program("deterministic", "glibc-dynamic")
    first, second = (run_native([executable], timeout=TIMEOUT, text=True).stdout
                     for _ in range(2))
    for name in ("clocks", "getrandom", "urandom"):
        assert line(first, name) != line(second, name)
    plain = [run_minikvm(["--", executable], timeout=TIMEOUT, text=True).stdout for _ in range(2)]
    assert line(plain[0], "getrandom") != line(plain[1], "getrandom")


def test_another_seed_changes_random_bytes_and_the_interleaving() -> None:
    executable = program("deterministic", "glibc-static")
    seven, eight = (deterministic(["--", executable], seed) for seed in (7, 8))
    for name in ("getrandom", "urandom", "order"):
        assert line(seven, name) != line(eight, name)
    assert line(seven, "clocks") == line(eight, "clocks")   # time is counted, not seeded


@pytest.mark.parametrize("variant", ["glibc-static", "musl-static"])
def test_the_trace_is_the_same_too(variant: str) -> None:
    executable = program("deterministic", variant)
    traces = [run_minikvm(["--deterministic", "--trace", "--", executable], timeout=TIMEOUT,
                          text=True).stderr for _ in range(2)]
    assert "clock_gettime(" in traces[0]       # the vDSO makes the call: it is counted
    assert traces[0] == traces[1]


def test_directories_are_listed_in_name_order(tmp_path: Path) -> None:
    first, second = listing_dirs(tmp_path)
    executable = program("deterministic", "glibc-static")
    listed = [line(deterministic(["--allow-read", tmp_path, "--", executable, directory], 1),
                   "directory") for directory in (first, second)]
    assert listed == ["directory a b c"] * 2


def test_cpuid_withholds_rdrand_where_kvm_lets_it() -> None:
    with Machine(64 << 20) as machine:
        if not machine.withhold_random_instructions():
            pytest.skip("this host's KVM shows the guest the host's CPUID whatever minikvm "
                        "sets (PVM): RDRAND and RDSEED cannot be withheld")
    output = deterministic(["--", program("deterministic", "glibc-static")], 1)
    assert line(output, "cpuid") == "cpuid rdrand 0 rdseed 0"


def test_a_shell_that_forks_is_deterministic_too(tmp_path: Path) -> None:
    script = ("echo $RANDOM $RANDOM; date +%s.%N; (echo $BASHPID $RANDOM; date +%N) | cat; "
              "cat /proc/sys/kernel/random/boot_id 2>/dev/null; head -c 8 /dev/urandom | od -x")
    outputs = {deterministic(["--", "/bin/bash", "-c", script], 3) for _ in range(3)}
    assert len(outputs) == 1, outputs
    assert deterministic(["--", "/bin/bash", "-c", script], 4) not in outputs


def test_go_timers_and_goroutines_run_the_same_every_time() -> None:
    """Go's runtime waits for its timers with epoll and futex timeouts: a
    timeout that passes moves the virtual clock by its length (a clock that
    stood still would keep every timer from expiring)."""
    executable = go_program("goroutines")
    outputs = {run_minikvm(["--seed", 2, "--timeout", 50, "--", executable], timeout=TIMEOUT,
                           text=True).stdout for _ in range(3)}
    assert len(outputs) == 1, outputs
    assert next(iter(outputs)).rstrip().endswith("done")


def test_a_child_draws_other_bytes_than_its_parent() -> None:
    script = "head -c 16 /dev/urandom | od -x; (head -c 16 /dev/urandom | od -x)"
    output = deterministic(["--", "/bin/bash", "-c", script], 9)
    lines = [text for text in output.splitlines() if text.startswith("0000000")]
    assert len(lines) == 2 and lines[0] != lines[1], output


def minikvm(*arguments: object, input: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "minikvm", *map(str, arguments)], input=input,
                          capture_output=True, timeout=TIMEOUT, env=dict(os.environ,
                                                                          PYTHONPATH=str(ROOT)))


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The handler saved with and without --deterministic."""
    directory = tmp_path_factory.mktemp("snapshots")
    files = {}
    for name, options in (("seeded", ["--seed", "5"]), ("plain", [])):
        files[name] = directory / f"{name}.snap"
        result = minikvm("snapshot", "save", *options, "-o", files[name], "--",
                         guest("seeded_handler"))
        assert result.returncode == 0, result.stderr
    return files


def test_every_run_of_a_deterministic_snapshot_answers_the_same(saved: dict[str, Path],
                                                                 tmp_path: Path) -> None:
    request = tmp_path / "request"
    request.write_bytes(b"GET / HTTP/1.1\r\n\r\n")
    answers = {minikvm("snapshot", "run", "--deterministic", "--request", request,
                       saved["seeded"]).stdout for _ in range(3)}
    assert len(answers) == 1 and next(iter(answers)).startswith(b"time 1767225600."), answers
    plain = [minikvm("snapshot", "run", saved["plain"], input=b"GET /").stdout for _ in range(2)]
    assert plain[0] != plain[1]


def test_a_failing_request_fails_the_same_way_when_replayed(saved: dict[str, Path],
                                                            tmp_path: Path) -> None:
    request = tmp_path / "request"
    request.write_bytes(b"POST /crash HTTP/1.1\r\n\r\n")
    replays = [minikvm("snapshot", "run", "--deterministic", "--request", request,
                       saved["seeded"]) for _ in range(2)]
    assert replays[0].returncode == replays[1].returncode == 128 + 11
    assert b"SIGSEGV" in replays[0].stderr and replays[0].stderr == replays[1].stderr


def test_a_snapshot_saved_without_it_is_refused(saved: dict[str, Path]) -> None:
    result = minikvm("snapshot", "run", "--deterministic", saved["plain"], input=b"x")
    assert result.returncode == 1
    assert b"was saved without --deterministic" in result.stderr
    missing = minikvm("snapshot", "run", "--request", "/nonexistent/request", saved["seeded"])
    assert missing.returncode == 1
    assert b"--request /nonexistent/request: No such file or directory" in missing.stderr


@pytest.mark.skipif(shutil.which("gdb") is None, reason="gdb missing (apt-get install gdb)")
def test_a_replay_under_gdb_answers_the_same(saved: dict[str, Path], tmp_path: Path) -> None:
    """``snapshot run --gdb``: gdb stops where the request is handed over,
    a breakpoint two calls on is hit with main below it, and the answer is
    the one the replays without gdb give."""
    request = tmp_path / "request"
    request.write_bytes(b"GET / HTTP/1.1\r\n\r\n")
    plain = minikvm("snapshot", "run", "--request", request, saved["seeded"]).stdout
    replay = subprocess.Popen([sys.executable, "-m", "minikvm", "snapshot", "run", "--gdb",
                               "127.0.0.1:0", "--request", request, saved["seeded"]],
                              env=dict(os.environ, PYTHONPATH=str(ROOT)),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        waiting = replay.stderr.readline().decode()
        where = re.search(r"waiting for gdb on (\S+)", waiting)
        assert where, waiting
        debugger = subprocess.run(["gdb", "-batch", "-nx", "-ex", f"target remote {where[1]}",
                                   "-ex", "break getrandom", "-ex", "continue", "-ex", "bt",
                                   "-ex", "continue", guest("seeded_handler")],
                                  capture_output=True, text=True, timeout=TIMEOUT)
        answer, _ = replay.communicate(timeout=TIMEOUT)
    finally:
        replay.kill()
    # The first stop: just after the wait's system call (inlined into main at -O2).
    assert re.match(r"0x[0-9a-f]+ in (main|minikvm_\w+) \(", debugger.stdout), debugger.stdout
    assert re.search(r"#1 .* in main \(\)", debugger.stdout), debugger.stdout
    assert "exited normally" in debugger.stdout, debugger.stdout
    assert replay.returncode == 0 and answer == plain


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_serve_answers_every_request_from_the_same_seeded_state(saved: dict[str, Path]) -> None:
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "minikvm", "serve", "--listen",
                               f"127.0.0.1:{port}", "--workers", "2", "--from-snapshot",
                               saved["seeded"], "--deterministic"],
                              env=dict(os.environ, PYTHONPATH=str(ROOT)),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        answers = set()
        deadline = time.monotonic() + TIMEOUT
        while len(answers) < 1 and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as reply:
                    answers.add(reply.read())
            except OSError:
                time.sleep(0.2)         # not listening yet
        for _ in range(4):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as reply:
                answers.add(reply.read())
        assert len(answers) == 1, answers
    finally:
        server.terminate()
        server.wait(timeout=TIMEOUT)


def test_serve_takes_no_seed_for_a_saved_snapshot(saved: dict[str, Path]) -> None:
    result = minikvm("serve", "--from-snapshot", saved["seeded"], "--seed", "3")
    assert result.returncode == 1
    assert b"a snapshot keeps the seed it was saved with" in result.stderr


def test_the_virtual_clock_counts_calls_and_sleeps() -> None:
    determinism = Determinism(1)
    start = determinism.clock.monotonic_ns()
    for _ in range(3):
        determinism.after_call()
    determinism.clock.advance(5 * NSEC_PER_SEC)
    determinism.clock.advance(-NSEC_PER_SEC)                # never backwards
    assert determinism.clock.monotonic_ns() - start == 3 * TICK_NS + 5 * NSEC_PER_SEC
    assert determinism.clock.cpu_ns == 3 * TICK_NS          # sleeping uses no CPU
    child = determinism.for_child(1001)
    assert child.clock.monotonic_ns() == determinism.clock.monotonic_ns()
    assert child.random_bytes(16) != Determinism(1).random_bytes(16)
