"""Calls that fail half-way leave nothing behind (issue 10, class 6).

``tests/hostile/half_done.c`` makes one call fail per case after it could
already have changed something — a mapping, a page table, the break, an
fd, a file — and then looks at what is left: whether the area is still in
the record (``mincore``), still readable and writable (a SIGSEGV handler),
still holds its contents; whether the fd number is still free; whether a
file appeared or was truncated; whether an epoll registration was used up.  Each case is run under minikvm, with
glibc and with musl; where Linux answers the same way (the fd and file
cases, ``mmap`` of an ``O_PATH`` fd) it is also run natively and the two
outputs compared line for line.

The memory limit (``--memory 64M``) and a full page-table pool are
minikvm's own ways to fail (Linux allocates lazily, and its page tables
come from all of memory), so those cases have expectations instead: the
errno minikvm promises, and "as before" for everything else.

The first test checks :meth:`~minikvm.process.fdtable.FdTable.check_room`
alone (no ``/dev/kvm``); pure tests of
:meth:`~minikvm.machine.mm.AddressSpace.all_or_nothing` are in
``tests/test_mm.py``.
"""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from minikvm.errors import SyscallError
from minikvm.process.fdtable import EventFd, FdTable
from tests.guest_runs import run_native
from tests.test_hostile import VARIANTS, assert_clean, hostile, minikvm

NATIVE_TIMEOUT_SECONDS = 60         # a subprocess limit, never an assertion
#: the fd limit the program sets natively (RLIMIT_NOFILE) and minikvm is given
MAX_FDS = 16
#: below the program's TOO_BIG (256 MiB): a mapping that large must fail
MEMORY = "64M"

ENOMEM, EBADF, EFAULT, EMFILE = errno.ENOMEM, errno.EBADF, errno.EFAULT, errno.EMFILE

#: case -> every line the program must print (1: as before).
MINIKVM_ONLY: dict[str, dict[str, int]] = {
    "mmap-fixed-memory": {"mmap-fixed-memory": ENOMEM, "mmap-fixed-memory-kept": 1,
                          "mmap-fixed-memory-left-nothing": 1},
    "mprotect-memory": {"mprotect-memory": ENOMEM, "mprotect-memory-first-still-closed": 1,
                        "mprotect-memory-second-still-closed": 1,
                        "mprotect-memory-contents-kept": 1},
    "brk-memory": {"brk-memory-unmoved": 1, "brk-memory-left-nothing": 1},
    # the map that finds the page-table pool full leaves nothing either
    "munmap-pool": {"fill": ENOMEM, "fill-left-nothing": 1, "munmap-pool": ENOMEM,
                    "munmap-pool-kept": 1, "munmap-pool-neighbours-kept": 1},
    "mprotect-pool": {"fill": ENOMEM, "fill-left-nothing": 1, "mprotect-pool": ENOMEM,
                      "mprotect-pool-first-kept": 1, "mprotect-pool-second-kept": 1},
    "mmap-fixed-pool": {"fill": ENOMEM, "fill-left-nothing": 1, "mmap-fixed-pool": ENOMEM,
                        "mmap-fixed-pool-kept": 1},
    "mremap-pool": {"fill": ENOMEM, "fill-left-nothing": 1, "mremap-pool": ENOMEM,
                    "mremap-pool-kept": 1, "mremap-pool-left-nothing": 1},
    # Linux copies first and then fails to write the offset back (the
    # target changed); minikvm checks the pointer first
    "copy-offset": {"copy_file_range-read-only-offset": EFAULT,
                    "copy_file_range-target-kept": 1,
                    "sendfile-read-only-offset": EFAULT, "sendfile-target-kept": 1},
}

#: case -> what both Linux and minikvm must print.
LIKE_LINUX: dict[str, dict[str, int]] = {
    "mmap-opath": {"mmap-opath": EBADF, "mmap-opath-left-nothing": 1,
                   "mmap-opath-fixed": EBADF, "mmap-opath-fixed-kept": 1},
    "pipe2-bad-pointer": {"pipe2-unmapped": EFAULT, "pipe2-read-only": EFAULT,
                          "pipe2-next-fd": 3},
    "pipe2-emfile": {"pipe2-emfile": EMFILE, "pipe2-emfile-fd-still-free": 1},
    "socketpair": {"socketpair-unmapped": EFAULT, "socketpair-read-only": EFAULT,
                   "socketpair-next-fd": 3, "socketpair-emfile": EMFILE,
                   "socketpair-emfile-fd-still-free": 1},
    "openat-emfile": {"openat-creat": EMFILE, "openat-creat-left-nothing": 1,
                      "openat-creat-excl": EMFILE, "openat-trunc": EMFILE,
                      "openat-trunc-kept": 1},
    # all guest arguments are read before anything is done
    "two-paths": {"link-bad-new": EFAULT, "link-bad-old": EFAULT, "rename-bad-new": EFAULT,
                  "rename-bad-old": EFAULT, "symlink-bad-target": EFAULT,
                  "symlink-bad-path": EFAULT, "mkdir-bad-path": EFAULT,
                  "two-paths-directory-unchanged": 1},
    # both registrations (one-shot, edge-triggered) still armed
    "epoll-read-only": {"epoll-read-only": EFAULT, "epoll-still-reports": 2},
}


def test_check_room_says_whether_the_fds_a_call_needs_are_free() -> None:
    """Asked before a call makes anything: the fd it would get, or EMFILE
    when fewer than *count* are free — and asking takes nothing."""
    table = FdTable(max_fds=6)
    for _ in range(3):
        table.install(EventFd(0, False, 0))
    table.close(1)
    assert table.check_room() == 1
    assert table.check_room(count=3) == 1          # 1, 3, 4 (and 5)
    assert table.check_room(lowest=2) == 3
    with pytest.raises(SyscallError) as raised:
        table.check_room(count=5)
    assert raised.value.errno == EMFILE
    with pytest.raises(SyscallError):
        table.check_room(lowest=6)
    assert sorted(table.entries) == [0, 2], "asking took no fd"
    assert table.install(EventFd(0, False, 0)) == 1


def results(stdout: str) -> dict[str, int]:
    """The ``NAME: VALUE`` lines, after checking the program got to the end."""
    lines = stdout.splitlines()
    assert lines and lines[-1] == "done", f"the program did not finish:\n{stdout}"
    found = {}
    for line in lines[:-1]:
        name, sep, value = line.partition(": ")
        assert sep and value.lstrip("-").isdigit(), f"not a result line: {line!r}"
        found[name] = int(value)
    return found


def run_case(variant: str, case: str, tmp_path: Path) -> dict[str, int]:
    grant = tmp_path / "grant"
    grant.mkdir()
    run = minikvm("--memory", MEMORY, "--max-fds", MAX_FDS, "--allow-write", grant,
                  hostile("half_done", variant), case, grant, cwd=tmp_path)
    assert_clean(run)
    assert run.status == 0, run.stderr
    return results(run.stdout)


@pytest.mark.kvm
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("case", sorted(MINIKVM_ONLY))
def test_a_call_minikvm_fails_half_way_leaves_the_address_space_as_it_was(case, variant,
                                                                          tmp_path):
    got = run_case(variant, case, tmp_path)
    assert got == MINIKVM_ONLY[case]


@pytest.mark.kvm
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("case", sorted(LIKE_LINUX))
def test_a_failed_call_leaves_what_linux_leaves(case, variant, tmp_path):
    got = run_case(variant, case, tmp_path)
    assert got == LIKE_LINUX[case]
    native_dir = tmp_path / "native"
    native_dir.mkdir()
    native = run_native([hostile("half_done", variant), case, native_dir], cwd=native_dir,
                        timeout=NATIVE_TIMEOUT_SECONDS, text=True)
    assert native.returncode == 0, native.stderr
    assert results(native.stdout) == got
