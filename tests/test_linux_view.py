"""Issue 11: the program sees an ordinary Linux — the names of its own fds.

``/dev/stdin``, ``/dev/stdout``, ``/dev/stderr``, ``/dev/fd/N`` and
``/proc/self/fd/N`` name the guest's own open files (the host's would be
minikvm's); compared with native runs of busybox's shell, with stdio on
pipes (where a new open and a shared one are the same thing).  A name may
not turn a read-only fd into a writable one.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.guest_runs import minikvm_command, minikvm_environment

BUSYBOX = Path("/bin/busybox")
pytestmark = pytest.mark.skipif(not BUSYBOX.exists(),
                                reason="no /bin/busybox (Debian's busybox-static)")
TIMEOUT_SECONDS = 60

OWN_FDS_SCRIPT = """
echo to-stderr > /dev/stderr
echo to-stdout > /dev/stdout
echo to-fd-1 > /dev/fd/1
echo to-proc-fd-2 > /proc/self/fd/2
read line < /dev/stdin
echo "read: $line"
read again < /dev/fd/0
echo "read: $again"
echo to-fd-9 > /dev/fd/9 || echo "fd 9: not open"
"""


def run(command: list[str], cwd: Path, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, input=stdin, capture_output=True, text=True, cwd=cwd,
                          env=minikvm_environment(), timeout=TIMEOUT_SECONDS)


def test_the_names_of_the_programs_own_fds_work_as_natively(tmp_path):
    native = run([str(BUSYBOX), "sh", "-c", OWN_FDS_SCRIPT], tmp_path, "first\nsecond\n")
    sandboxed = run(minikvm_command(["--", BUSYBOX, "sh", "-c", OWN_FDS_SCRIPT]), tmp_path,
                    "first\nsecond\n")
    assert "Traceback" not in sandboxed.stderr
    assert (sandboxed.returncode, sandboxed.stdout, sandboxed.stderr) == \
        (native.returncode, native.stdout, native.stderr)
    assert "read: second" in native.stdout and "to-proc-fd-2" in native.stderr


def test_a_read_only_fd_cannot_be_reopened_for_writing_by_name(tmp_path):
    """``exec 3< f; echo x > /dev/fd/3`` reopens f for writing on Linux when
    its mode allows; in the sandbox the fd came from a read-only grant, so
    its name gives no more than the fd: EACCES, and the file is unchanged."""
    grant = tmp_path / "ro"
    grant.mkdir()
    (grant / "f").write_text("kept\n")
    script = (f"exec 3< {grant}/f; echo x > /dev/fd/3 && echo wrote; read line < /dev/fd/3; "
              "echo \"$line\"")
    sandboxed = run(minikvm_command(["--allow-read", grant, "--", BUSYBOX, "sh", "-c", script]),
                    tmp_path)
    assert "Traceback" not in sandboxed.stderr
    assert "wrote" not in sandboxed.stdout and "Permission denied" in sandboxed.stderr
    assert sandboxed.stdout == "kept\n"
    assert (grant / "f").read_text() == "kept\n"


def test_dev_full_is_full_as_natively(tmp_path):
    """``/dev/full``: writes fail with ENOSPC (programs test their write
    error paths with it), reads give zeros."""
    script = "echo x > /dev/full; echo status=$?; read -n 1 c < /dev/full; echo \"read: ${#c}\""
    native = run([str(BUSYBOX), "sh", "-c", script], tmp_path)
    sandboxed = run(minikvm_command(["--", BUSYBOX, "sh", "-c", script]), tmp_path)
    assert (sandboxed.returncode, sandboxed.stdout, sandboxed.stderr) == \
        (native.returncode, native.stdout, native.stderr)
    assert "No space left on device" in native.stderr and "status=1" in native.stdout
