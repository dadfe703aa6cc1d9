"""The benchmark harness runs and reports every figure (benchmarks/run.py).

This checks the *harness*, never the machine: ``--smoke`` runs every
workload once or twice at toy sizes, and the test looks only at the JSON
keys and that each number is a positive one.  Timings are never asserted
(docs/explanation/performance.md has the real figures).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.programs.build import unavailable_reason

pytestmark = pytest.mark.kvm

RUN_PY = Path(__file__).resolve().parent.parent / "benchmarks" / "run.py"
#: --smoke takes ~10 s on a quiet 2-core PVM machine; a loaded CI box may be
#: several times slower, and a wedged guest must not hang the suite.
SMOKE_TIMEOUT_SECONDS = 600

ALWAYS = ("exit_floor_us", "exit_floor_one_us", "out_floor_us", "syscall_us", "syscall_native_us",
          "syscall_ratio", "vdso_clock_ns", "vdso_clock_native_ns", "vdso_clock_ratio",
          "stat_hidden_us", "stat_view_us", "stat_native_us",
          "compute_native_s", "compute_minikvm_s", "compute_ratio",
          "compute_profiled_s", "compute_unprofiled_s", "profile_overhead_ratio",
          "memtouch_native_s", "memtouch_minikvm_s", "memtouch_ratio",
          "io_native_s", "io_minikvm_s", "io_ratio", "io_rw_native_s", "io_rw_minikvm_s",
          "io_rw_ratio",
          "hello_ms", "hello_native_ms", "python_startup_ms", "hello_ratio",
          "dyn_true_ms", "dyn_true_native_ms", "dyn_python_ms", "dyn_python_native_ms")
PAGE_COUNTS = (0, 1, 16, 256, 4096)
SNAPSHOT = ("fork_us", "fork_prepared_us", "fork_floor_us", "reset_us_0", "reset_copy_us_0", "snapshot_save_ms",
            "snapshot_load_ms",
            *(f"{figure}_{mechanism}_us_{pages}" for figure in ("reset", "request")
              for mechanism in ("cow", "copy", "keep") for pages in PAGE_COUNTS))
SERVE = tuple(f"{backend}{level}_{figure}" for backend in ("serve", "cgi", "persistent")
              for level in ("", "_c2", "_c4") for figure in ("p50_ms", "p99_ms", "rps")) + \
    tuple(f"serve{level}_{ratio}" for level in ("", "_c2", "_c4")
          for ratio in ("rps_ratio", "floor_rps_ratio"))
QEMU = ("qemu_user_syscall_us", "qemu_user_compute_s", "qemu_user_io_s", "qemu_user_io_rw_s",
        "qemu_user_hello_ms")


@pytest.fixture(scope="module")
def report() -> dict:
    reason = unavailable_reason("glibc-static")
    if reason:
        pytest.skip(reason)
    result = subprocess.run([sys.executable, str(RUN_PY), "--smoke", "--json"],
                            capture_output=True, text=True, timeout=SMOKE_TIMEOUT_SECONDS)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_every_figure_is_reported_and_positive(report: dict) -> None:
    for key in ALWAYS:
        assert key in report, f"{key} missing from the report"
        assert report[key] > 0, f"{key} = {report[key]}"
        if not key.endswith("_ratio"):
            assert 0 < report[f"{key}_min"] <= report[key], key


def test_pythons_share_of_a_syscall_is_reported(report: dict) -> None:
    """getpid minus the C floor of the same path: a difference of two
    medians, so noise may make it tiny, but it is a finite number of µs."""
    assert isinstance(report["python_share_us"], float)
    assert abs(report["python_share_us"]) < report["syscall_us"]


def test_dynamic_programs_count_their_system_calls(report: dict) -> None:
    """ld.so's start-up alone is dozens of calls; Python's hundreds."""
    assert report["dyn_true_syscalls"] >= 10
    assert report["dyn_python_syscalls"] > report["dyn_true_syscalls"]


def test_loading_a_big_library_is_measured_or_skipped_with_a_reason(report: dict) -> None:
    """dlopen of libpython3.11: timed natively and in minikvm, and the share
    of minikvm's system-call time that went to copying it in by mmap."""
    if "dlopen" in report["skipped"]:
        assert "not installed" in report["skipped"]["dlopen"]
        return
    for key in ("dlopen_native_s", "dlopen_minikvm_s", "dlopen_ratio", "dlopen_library_mib"):
        assert report[key] > 0, key
    assert 0 < report["dlopen_mmap_share"] <= 1


def test_snapshot_figures_or_a_reason(report: dict) -> None:
    if "snapshot" in report["skipped"]:
        assert "snapshot.py" in report["skipped"]["snapshot"]
        return
    for key in SNAPSHOT:
        assert report[key] > 0, f"{key} = {report.get(key)}"
        assert 0 < report[f"{key}_min"] <= report[key], key
    assert "reset_us_per_page" in report and "reset_copy_us_per_page" in report
    assert report["fork_floor_ratio"] > 0
    for mechanism in ("cow", "copy", "keep"):
        assert f"request_{mechanism}_us_per_page" in report
        assert f"cycle_{mechanism}_us_per_page" in report
        # Each reset restored at least the pages its request dirtied.
        for pages in PAGE_COUNTS:
            assert report[f"reset_{mechanism}_pages_{pages}"] >= pages, (mechanism, pages)
    assert report["snapshot_file_kib"] > 0


def test_serve_and_its_native_baselines_or_a_reason(report: dict) -> None:
    """minikvm serve beside the CGI and the persistent native servers, at
    1, 2 and 4 clients."""
    if "serve" in report["skipped"]:
        assert report["skipped"]["serve"], "skipped without a reason"
        return
    for key in SERVE:
        assert report[key] > 0, f"{key} = {report.get(key)}"
    for level in ("", "_c2", "_c4"):
        for backend in ("serve", "cgi", "persistent"):
            assert report[f"{backend}{level}_p50_ms"] <= report[f"{backend}{level}_p99_ms"]


def test_processes_are_measured_beside_native_and_the_peers(report: dict) -> None:
    """fork+exec+wait and the shell loop (issue 13) natively, in minikvm, and
    in each peer that can start a child (one that cannot says why)."""
    runners = ["native", "minikvm"] + [peer for peer in ("bwrap", "gvisor")
                                       if peer not in report["skipped"]]
    for runner in runners:
        for measure in ("fork_exec_wait", "shell_loop", "shell_loop_total"):
            figure = (f"{measure}_native_ms" if runner == "native" else
                      f"{measure}_ms" if runner == "minikvm" else f"{runner}_{measure}_ms")
            reason = report["skipped"].get(figure.replace("_total", ""), "")
            if figure not in report and runner not in ("native", "minikvm"):
                assert reason, f"{figure} is missing without a reason"
                continue
            assert figure in report, f"{figure} is missing: {reason}"
            assert isinstance(report[figure], float), figure
            if measure != "shell_loop":   # a difference of two wall times may be noise
                assert report[figure] > 0, f"{figure} = {report[figure]}"


FORK_STEPS = ("copies", "host_fork", "child_vm", "to_exec", "exec", "child_run", "child_exit",
              "back")


def test_a_forks_steps_are_timed(report: dict) -> None:
    """fork_breakdown.py's steps follow one another in the relay between the
    two host processes, so each lasts some time: a step of zero or less
    means the moments came out of order (the profile misreads the code);
    a missing one, that its timers no longer find minikvm's functions."""
    assert "fork_steps" not in report["skipped"], report["skipped"]["fork_steps"]
    for step in FORK_STEPS:
        assert report[f"fork_step_{step}_ms"] > 0, step


def test_peers_are_measured_or_skipped_with_a_reason(report: dict) -> None:
    if shutil.which("qemu-x86_64"):
        for key in QEMU:
            assert report[key] > 0, f"{key} = {report.get(key)}"
    else:
        assert "apt-get install qemu-user" in report["skipped"]["qemu_user"]
    if not shutil.which("runsc"):
        assert "runsc" in report["skipped"]["gvisor"]


def test_the_machine_is_described(report: dict) -> None:
    assert report["machine"]["mode"] == "smoke"
    assert report["machine"]["cores"] >= 1
