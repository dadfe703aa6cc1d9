"""``run --allow-pty``: new pseudo-terminals for the program, never the host's others.

tests/programs/pty_pair.c makes a pty as a terminal emulator does
(posix_openpt, unlockpt, ptsname, a child on the slave as its controlling
terminal) and as ``openpty`` does (``TIOCGPTPEER``), then tries another
pty's name: a host pty this test holds open stands for the user's terminal.
Natively (as root) it opens; in the sandbox it is hidden.
"""

from __future__ import annotations

import os

import pytest

from tests.guest_runs import run_minikvm, run_native
from tests.programs.build import DEFAULT_BUILD_DIR, SOURCE_DIR, available_variants, build

MADE = (b"before unlockpt: Input/output error\n"
        b"master read 23: child on its terminal\r\n"
        b"child status 0\n"
        b"openpty pair: 3 bytes, isatty 1\n")


@pytest.fixture(scope="module")
def program() -> str:
    if "glibc-static" not in available_variants():
        pytest.skip("no static glibc toolchain")
    return str(build(SOURCE_DIR / "pty_pair.c", DEFAULT_BUILD_DIR, "glibc-static"))


@pytest.fixture
def users_terminal():
    """A host pty standing for the user's terminal: its slave's name."""
    master, slave = os.openpty()
    try:
        yield os.ttyname(slave)
    finally:
        os.close(master)
        os.close(slave)


def test_a_pty_made_in_the_sandbox_works_as_natively(program, users_terminal):
    native = run_native([program], timeout=60)
    guest = run_minikvm(["--allow-pty", "--", program], timeout=120)
    assert native.stdout == MADE, native.stdout
    assert (guest.returncode, guest.stdout) == (0, MADE), guest.stderr


def test_the_hosts_other_ptys_stay_hidden(program, users_terminal):
    native = run_native([program, users_terminal], timeout=60)
    if os.geteuid() == 0 or os.stat(users_terminal).st_uid == os.geteuid():
        assert native.stdout.endswith(b"another pty: opened\n"), native.stdout
    guest = run_minikvm(["--allow-pty", "--trace", "--", program, users_terminal],
                        timeout=120)
    assert guest.stdout == MADE + b"another pty: hidden\n", guest.stderr
    assert f'openat(AT_FDCWD, "{users_terminal}", O_RDWR|O_NOCTTY, 00) = -1 ENOENT' \
        in guest.stderr.decode()


def test_without_allow_pty_there_is_no_ptmx(program):
    guest = run_minikvm(["--trace", "--", program], timeout=120)
    assert guest.returncode == 1
    assert guest.stdout == b"posix_openpt: Operation not permitted\n"
    assert "the policy gives no ptys (run --allow-pty, or --x11)" in guest.stderr.decode()
