"""The terminal from inside the sandbox (issue 11, item 5), on a real pty.

Each test gives the program a pseudo-terminal of a known size as its
stdin, stdout and stderr (``os.openpty``), runs it natively and under
minikvm, and compares: ``busybox stty size``, a TCGETS/TCSETS round trip,
the terminal put back after a program that set raw mode and crashed, and
``TIOCSTI`` & co. refused (a hostile program: it must never type into
the user's terminal).  Output is read from the pty's master side until
the child ends; no timed assertion.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
import subprocess
import termios
from pathlib import Path

import pytest

from tests.guest_runs import minikvm_command, minikvm_environment
from tests.programs.build import DEFAULT_BUILD_DIR, SOURCE_DIR, available_variants, build

BUSYBOX = Path("/bin/busybox")
HOSTILE_DIR = Path(__file__).resolve().parent / "hostile"
BACKSTOP_SECONDS = 120
ROWS, COLUMNS = 37, 91


def built(source: Path) -> str:
    if "glibc-static" not in available_variants():
        pytest.skip("no static glibc toolchain")
    return str(build(source, DEFAULT_BUILD_DIR, "glibc-static"))


def on_pty(argv: list[str], native: bool, extra: list[str] = ()) -> tuple[int, bytes, list]:
    """Run *argv* with a pty of ROWS x COLUMNS as its stdio: (return code,
    what it wrote, the pty's attributes after it ended)."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLUMNS, 0, 0))
    command = argv if native else minikvm_command([*extra, "--", *argv])
    process = subprocess.Popen(command, env=minikvm_environment(), stdin=slave, stdout=slave,
                               stderr=slave, close_fds=True)
    os.close(slave)
    output = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError as error:   # EIO: the child and its copies of the slave are gone
            assert error.errno == errno.EIO
            break
        if not chunk:
            break
        output += chunk
    process.wait(timeout=BACKSTOP_SECONDS)
    attributes = termios.tcgetattr(master)
    os.close(master)
    return process.returncode, output, attributes


@pytest.mark.skipif(not BUSYBOX.exists(), reason="/bin/busybox is missing "
                    "(apt-get install busybox-static)")
def test_stty_size_matches_native() -> None:
    native = on_pty([str(BUSYBOX), "stty", "size"], True)
    guest = on_pty([str(BUSYBOX), "stty", "size"], False)
    assert guest[:2] == native[:2] == (0, f"{ROWS} {COLUMNS}\r\n".encode())


def test_tcgets_tcsets_round_trip() -> None:
    program = built(SOURCE_DIR / "terminal.c")
    native = on_pty([program, "roundtrip"], True)
    guest = on_pty([program, "roundtrip"], False)
    assert guest[:2] == native[:2] == (0, b"echo before 1 after 0 isatty 1\r\n")


def test_the_terminal_is_restored_after_a_crash_in_raw_mode() -> None:
    program = built(SOURCE_DIR / "terminal.c")
    master, slave = os.openpty()
    before = termios.tcgetattr(slave)
    process = subprocess.Popen(minikvm_command(["--", program, "raw-crash"]),
                               env=minikvm_environment(), stdin=slave, stdout=slave,
                               stderr=slave, close_fds=True)
    output = b""
    while b"raw" not in output:
        output += os.read(master, 4096)
    assert process.wait(timeout=BACKSTOP_SECONDS) == 128 + 11
    assert termios.tcgetattr(slave) == before        # cooked again, echo on
    os.close(slave)
    os.close(master)


def test_tiocsti_and_friends_are_refused_and_audited() -> None:
    program = built(HOSTILE_DIR / "tiocsti.c")
    status, output, _ = on_pty([program], False, ["--audit"])
    assert status == 0, output
    text = output.decode()
    for name in ("TIOCSTI", "TIOCLINUX", "TIOCCONS"):
        assert f"{name} -1 Operation not permitted" in text
        assert f"{name}:" in text           # --audit names the refusal
    assert "x" not in text.split("TIOCSTI")[0]   # nothing was typed before the program's output
