"""epoll under minikvm: the same answers as Linux.

``tests/programs/epoll.c`` runs its parts — the 12-byte packed
``struct epoll_event``, ``epoll_create``/``epoll_create1`` and their
errors, every ``epoll_ctl`` error Linux gives (EBADF, EINVAL for a
non-epoll or the epoll itself, EEXIST, ENOENT, EPERM for a regular file,
a directory and ``/dev/null``, ELOOP for a loop of epolls), pipes and
eventfds level- and edge-triggered, EPOLLONESHOT re-armed with
EPOLL_CTL_MOD, EPOLL_CTL_DEL, a closed fd forgotten, more ready fds than
``maxevents`` served in turn, timeouts that return 0, an epoll inside an
epoll and inside ``poll``, and a thread writing a pipe while the main
thread waits in ``epoll_wait`` with no timeout, and a signal sent to a thread
waiting in ``epoll_wait`` (EINTR; the handler runs in that thread) — natively and under
``minikvm run --here``, in every static variant, each in a fresh working
directory; stdout, stderr and the exit status must agree.  Nothing is
timed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.guest_runs import run_minikvm, run_native, shell_status
from tests.programs.build import STATIC_VARIANTS, program

GUEST_TIMEOUT_SECONDS = 60
SUBPROCESS_TIMEOUT_SECONDS = 90
ENV = {"LANG": "C"}
#: every part of epoll.c prints its name, then one line per check
PARTS = ("create", "errors", "level", "edge", "oneshot", "turns", "timeouts", "eventfd",
         "nested", "thread", "interrupt")

pytestmark = pytest.mark.kvm


@pytest.mark.parametrize("variant", STATIC_VARIANTS)
def test_epoll_same_as_native(variant: str, tmp_path: Path) -> None:
    executable = program("epoll", variant)
    native_dir, guest_dir = tmp_path / "native", tmp_path / "guest"
    native_dir.mkdir()
    guest_dir.mkdir()
    host = run_native([executable], cwd=native_dir, env=ENV, timeout=SUBPROCESS_TIMEOUT_SECONDS)
    assert host.returncode == 0, host.stdout.decode() + host.stderr.decode()
    printed_parts = [line[:-1] for line in host.stdout.decode().splitlines()
                     if not line.startswith(" ")]
    assert printed_parts == list(PARTS)
    guest = run_minikvm(["--here", "--clearenv", "--env=LANG=C",
                         f"--timeout={GUEST_TIMEOUT_SECONDS}", "--", executable],
                        cwd=guest_dir, timeout=SUBPROCESS_TIMEOUT_SECONDS)
    assert guest.stdout.decode() == host.stdout.decode()
    assert guest.stderr.decode() == host.stderr.decode()
    assert shell_status(guest.returncode) == shell_status(host.returncode)
