"""Every command that runs a guest confines the minikvm process itself.

``minikvm run``, ``serve``, ``snapshot save`` and ``snapshot run`` raise
the same two walls (:mod:`minikvm.sandbox.confine`) before the guest's first
instruction *and* before the program file is parsed.  Each test runs the
real command in a subprocess, with a real guest, and looks at the process
two ways:

* from outside, where the kernel shows it: the ``Seccomp:`` line of
  ``/proc/PID/status`` (2 = filter mode) and ``Seccomp_filters:``;
* from inside, with a *probe*: the command is started from ``python -c``
  with one function wrapped (the ELF loader, or the server's worker loop)
  so that, at that moment, the process reports what the kernel lets it do
  — its seccomp mode (``prctl(PR_GET_SECCOMP)``), whether it can open a
  file outside the grants (Landlock: ``EACCES``) and whether it can fork
  (seccomp: ``EPERM``) — and then carries on.  The probe changes nothing
  the command does; it is how a test sees *when* the walls went up.
"""

from __future__ import annotations

import http.client
import os
import queue
import re
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from minikvm.sandbox import landlock

from minikvm.errors import ElfError
from minikvm.process.elf import load_elf
from minikvm.sandbox import seccomp
from minikvm.snapshot.file import load
from tests.guests import guest
from tests.programs.build import program

pytestmark = [
    pytest.mark.kvm,
    pytest.mark.skipif(not (landlock.available() and seccomp.available()),
                       reason="this kernel lacks Landlock or seccomp: the commands warn "
                              "and run unconfined (tests/test_sandbox_cli.py checks that)"),
]

ROOT = Path(__file__).resolve().parent.parent
COMMAND_TIMEOUT = 120.0
START_TIMEOUT = 60.0

#: Prepended to every ``python -c`` script: ``probe(where)`` prints one line
#: ``probe WHERE: seccomp=N landlock=open|denied fork=allowed|denied``.
PROBE = textwrap.dedent("""
    import ctypes, os, sys
    PR_GET_SECCOMP = 21
    def probe(where):
        libc = ctypes.CDLL(None, use_errno=True)
        mode = libc.prctl(PR_GET_SECCOMP, 0, 0, 0, 0)
        try:
            open(OUTSIDE).close()
            walls = "open"
        except PermissionError:
            walls = "denied"
        try:
            pid = os.fork()
        except PermissionError:
            fork = "denied"
        else:
            if pid == 0:
                os._exit(0)
            os.waitpid(pid, 0)
            fork = "allowed"
        # one write(2): the workers write to the same pipe at the same time
        os.write(2, f"probe {where}: seccomp={mode} landlock={walls} fork={fork}\\n".encode())
""")


def python(script: str, outside: Path, cwd: Path, *argv: object,
           **options: object) -> subprocess.Popen[str]:
    """``python -c PROBE+script ARGV...`` with this checkout importable."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    code = f"OUTSIDE = {str(outside)!r}\n" + PROBE + textwrap.dedent(script)
    return subprocess.Popen([sys.executable, "-c", code, *map(str, argv)], cwd=cwd, env=env,
                            text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            **options)


def finish(process: subprocess.Popen[str], stdin: str | None = None) -> tuple[int, str, str]:
    stdout, stderr = process.communicate(stdin, timeout=COMMAND_TIMEOUT)
    return process.returncode, stdout or "", stderr


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A file no command is granted: Landlock must refuse to open it."""
    path = tmp_path / "outside.txt"
    path.write_text("not granted\n")
    return path


def proc_status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return dict(line.split(":\t", 1) for line in lines if ":\t" in line)


def children_of(pid: int) -> list[int]:
    """The pids whose parent is *pid* (from /proc/*/stat)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


# --- run: the ELF is parsed inside the walls -------------------------------------------

def malformed_programs(directory: Path) -> dict[str, Path]:
    real = program("hello", "glibc-static").read_bytes()
    cases = {
        "identification only": b"\x7fELF\x02\x01\x01" + b"\0" * 9,
        "truncated program headers": real[:100],
        "program headers past the end": real[:0x20] + (1 << 40).to_bytes(8, "little")
                                         + real[0x28:4096],
    }
    paths = {}
    for name, data in cases.items():
        path = directory / name.replace(" ", "-")
        path.write_bytes(data)
        path.chmod(0o755)
        paths[name] = path
    return paths


RUN_WITH_PROBE = """
    import minikvm.process.process
    from minikvm.cli.main import main
    parse = minikvm.process.process.load_elf
    def probed(*args, **kwargs):
        probe("parse")
        return parse(*args, **kwargs)
    minikvm.process.process.load_elf = probed
    sys.exit(main(["run", *sys.argv[1:]]))
"""


@pytest.mark.parametrize("case", ["identification only", "truncated program headers",
                                  "program headers past the end"])
def test_run_parses_a_malformed_elf_inside_the_walls(tmp_path, outside, case):
    path = malformed_programs(tmp_path)[case]
    with pytest.raises(ElfError) as expected:
        load_elf(path)
    status, _, stderr = finish(python(RUN_WITH_PROBE, outside, tmp_path, path))
    # fork=allowed: a guest process's fork is a host fork (minikvm.tree.fork);
    # execve stays refused (tests/test_seccomp.py)
    assert stderr.splitlines() == ["probe parse: seccomp=2 landlock=denied fork=allowed",
                                   f"minikvm: {expected.value}"]
    assert status == 126


def test_run_parses_a_good_elf_inside_the_walls_too(tmp_path, outside):
    hello = program("hello", "glibc-static")
    native = subprocess.run([hello], capture_output=True, text=True, timeout=COMMAND_TIMEOUT)
    status, stdout, stderr = finish(python(RUN_WITH_PROBE, outside, tmp_path, hello))
    assert stderr == "probe parse: seccomp=2 landlock=denied fork=allowed\n"
    assert (status, stdout) == (native.returncode, native.stdout)


# --- serve: the supervisor, and each worker with a filter of its own ------------------------

SERVE_WITH_PROBE = """
    import minikvm.cli.serve
    from minikvm.cli.main import main
    supervise, work = minikvm.cli.serve.run_workers, minikvm.cli.serve.worker_loop
    def probed_supervisor(*args, **kwargs):
        probe("supervisor")
        return supervise(*args, **kwargs)
    def probed_worker(*args, **kwargs):
        probe("worker")
        return work(*args, **kwargs)
    minikvm.cli.serve.run_workers = probed_supervisor
    minikvm.cli.serve.worker_loop = probed_worker
    sys.exit(main(["serve", *sys.argv[1:]]))
"""


class Server:
    """``minikvm serve`` with probes, two workers and a 1 s request timeout,
    in a subprocess; a thread collects its stderr, so no read can block the
    test.  :meth:`start` waits for the "listening" line and both workers'
    probe lines."""

    def __init__(self, outside: Path, cwd: Path, *arguments: object) -> None:
        self.process = python(SERVE_WITH_PROBE, outside, cwd, "--listen", "127.0.0.1:0",
                              "--workers", 2, "--request-timeout", 1, *arguments)
        self.lines: queue.Queue[str] = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.log: list[str] = []
        self.port = 0

    def _read(self) -> None:
        for line in self.process.stderr:
            self.lines.put(line)

    def _workers_started(self) -> bool:
        return sum("probe worker" in line for line in self.log) == 2

    def start(self) -> "Server":
        deadline = time.monotonic() + START_TIMEOUT
        while not (self.port and self._workers_started()):
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                self.process.kill()
                pytest.fail("minikvm serve did not start its two workers:\n"
                            + "".join(self.log))
            self.log.append(line)
            match = re.search(r"listening on http://127\.0\.0\.1:(\d+)/", line)
            if match:
                self.port = int(match.group(1))
        return self

    def get(self, path: str) -> int:
        """The status of ``GET path``."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port,
                                                timeout=COMMAND_TIMEOUT)
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            response.read()
            return response.status
        finally:
            connection.close()

    def stop(self) -> str:
        """SIGTERM; wait for the server to exit (status 0); its whole log."""
        self.process.terminate()
        try:
            self.process.wait(timeout=COMMAND_TIMEOUT)
        finally:
            self.process.kill()
        self.reader.join(timeout=COMMAND_TIMEOUT)
        while not self.lines.empty():
            self.log.append(self.lines.get())
        text = "".join(self.log)
        assert self.process.returncode == 0, text
        return text


def check_serving_confined(server: Server) -> None:
    """Probes, /proc, and requests that need the filters' allowances: a
    crash replaces the fork (a new VM: /dev/kvm opened again under
    Landlock), a timeout interrupts KVM_RUN with a timer signal."""
    try:
        supervisor = proc_status(server.process.pid)
        workers = children_of(server.process.pid)
        assert len(workers) == 2
        assert supervisor["Seccomp"] == "2"
        for worker in workers:
            status = proc_status(worker)
            assert status["Seccomp"] == "2"
            if "Seccomp_filters" in supervisor:      # Linux 5.9+
                assert int(status["Seccomp_filters"]) == int(supervisor["Seccomp_filters"]) + 1
        for path, expected in (("/hello", 200), ("/crash", 502), ("/hello", 200),
                               ("/spin", 504), ("/hello", 200)):
            assert server.get(path) == expected, path
    finally:
        text = server.stop()
    probes = sorted(line for line in text.splitlines() if line.startswith("probe"))
    assert probes == ["probe supervisor: seccomp=2 landlock=denied fork=allowed",
                      "probe worker: seccomp=2 landlock=denied fork=denied",
                      "probe worker: seccomp=2 landlock=denied fork=denied"]
    assert "Traceback" not in text and "warning" not in text


def test_serve_confines_the_supervisor_and_every_worker(tmp_path, outside):
    check_serving_confined(Server(outside, tmp_path, "--", guest("handler")).start())


def test_serve_from_a_snapshot_file_is_confined_too(tmp_path, outside):
    saved = tmp_path / "handler.snap"
    save = subprocess.run([sys.executable, "-m", "minikvm", "snapshot", "save", "-o", saved,
                           guest("handler")], cwd=tmp_path, capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=COMMAND_TIMEOUT)
    assert save.returncode == 0, save.stderr
    check_serving_confined(Server(outside, tmp_path, "--from-snapshot", saved).start())


# --- snapshot save and snapshot run ---------------------------------------------------------

SNAPSHOT_WITH_PROBE = """
    import minikvm.process.process, minikvm.snapshot.file
    from minikvm.cli.main import main
    for module in (minikvm.process.process, minikvm.snapshot.file):
        def probed(*args, _parse=module.load_elf, **kwargs):
            probe("parse")
            return _parse(*args, **kwargs)
        module.load_elf = probed
    sys.exit(main(["snapshot", *sys.argv[1:]]))
"""


def test_snapshot_save_and_run_parse_and_run_inside_the_walls(tmp_path, outside):
    saved = tmp_path / "out" / "handler.snap"
    saved.parent.mkdir()
    status, _, stderr = finish(python(SNAPSHOT_WITH_PROBE, outside, tmp_path,
                                      "save", "-o", saved, guest("handler")))
    assert status == 0, stderr
    lines = stderr.splitlines()
    assert lines[0] == "probe parse: seccomp=2 landlock=denied fork=denied"
    assert lines[1].startswith(f"minikvm: saved {guest('handler')} at its first request to")
    assert sorted(p.name for p in saved.parent.iterdir()) == ["handler.snap"]

    # The same request, answered by the file resumed in this (unconfined)
    # process and by `snapshot run` (confined, with the probe).
    with load(saved, stdio=(0, 1, 2)) as snapshot, snapshot.fork() as fork:
        expected = fork.request(b"hello", timeout=COMMAND_TIMEOUT, reset=False).response
    status, stdout, stderr = finish(python(SNAPSHOT_WITH_PROBE, outside, tmp_path,
                                           "run", saved, stdin=subprocess.PIPE), "hello")
    assert stderr.splitlines()[0] == "probe parse: seccomp=2 landlock=denied fork=denied"
    assert stdout.encode().startswith(expected) and status == 0, stderr

    # A request that spins: the timer signal still stops it under the filter.
    status, _, stderr = finish(python(SNAPSHOT_WITH_PROBE, outside, tmp_path,
                                      "run", "--timeout", 1, saved, stdin=subprocess.PIPE),
                               "spin")
    assert status == 124, stderr


def test_snapshot_save_of_a_malformed_elf_leaves_the_output_alone(tmp_path, outside):
    path = malformed_programs(tmp_path)["truncated program headers"]
    with pytest.raises(ElfError) as expected:
        load_elf(path)
    output = tmp_path / "out" / "kept.snap"
    output.parent.mkdir()
    output.write_bytes(b"an older snapshot")
    status, _, stderr = finish(python(SNAPSHOT_WITH_PROBE, outside, tmp_path,
                                      "save", "-o", output, path))
    # fork=allowed: a guest process's fork is a host fork (minikvm.tree.fork);
    # execve stays refused (tests/test_seccomp.py)
    assert stderr.splitlines() == ["probe parse: seccomp=2 landlock=denied fork=allowed",
                                   f"minikvm: {expected.value}"]
    assert status == 1
    assert [p.name for p in output.parent.iterdir()] == ["kept.snap"]
    assert output.read_bytes() == b"an older snapshot"


def test_a_kernel_without_the_walls_gets_warnings_and_the_command_goes_on(tmp_path, outside):
    """As ``minikvm run`` does: where the kernel lacks Landlock or seccomp
    (simulated here: both report themselves unavailable), each command says
    so on stderr and runs with the policy alone."""
    saved = tmp_path / "handler.snap"
    status, _, stderr = finish(python(SNAPSHOT_WITH_PROBE, outside, tmp_path,
                                      "save", "-o", saved, guest("handler")))
    assert status == 0, stderr
    without_walls = """
        import minikvm.sandbox.landlock, minikvm.sandbox.seccomp
        minikvm.sandbox.landlock.abi_version = lambda: 0
        minikvm.sandbox.seccomp.available = lambda: False
    """
    status, stdout, stderr = finish(python(textwrap.dedent(without_walls)
                                           + textwrap.dedent(SNAPSHOT_WITH_PROBE), outside,
                                           tmp_path, "run", saved, stdin=subprocess.PIPE),
                                    "hello")
    lines = stderr.splitlines()
    assert [line.split(":")[1].strip() for line in lines[:2]] == ["warning", "warning"]
    assert "Landlock" in lines[0] and "seccomp" in lines[1]
    assert lines[2] == "probe parse: seccomp=0 landlock=open fork=allowed"
    assert status == 0 and stdout.startswith("counter=1"), stderr
