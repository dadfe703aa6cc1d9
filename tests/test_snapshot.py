"""Snapshots, forks and resets (minikvm/snapshot/snapshot.py) on real guests.

The guest is tests/guests/handler.c: every request increments a global
counter and appends to a heap buffer, so a fork that really starts from the
snapshot answers ``counter=1 heap=<8 + request length>`` every time.
"""

from __future__ import annotations

import os

import pytest

from minikvm.errors import SnapshotError
from minikvm.process.process import Process
from minikvm.snapshot.file import load, read_header, save
from minikvm.snapshot.frozen import bitmap_runs, page_runs
from minikvm.snapshot.snapshot import MECHANISMS, Snapshot, snapshot_at_ready_point
from tests.guests import guest

pytestmark = pytest.mark.kvm
TIMEOUT = 10.0


def pristine(request: bytes) -> bytes:
    return f"counter=1 heap={8 + len(request)} poked=7".encode()


@pytest.fixture(scope="module")
def snapshot() -> Snapshot:
    path = str(guest("handler"))
    process = Process.spawn(path, [path], {"LANG": "C"}, None)
    taken, reply = snapshot_at_ready_point(process, timeout=TIMEOUT)
    process.close()
    assert taken is not None, reply.message
    yield taken
    taken.close()


# -- pure helpers -----------------------------------------------------------------

def test_bitmap_runs_finds_every_set_bit() -> None:
    pages = {0, 1, 2, 7, 8, 63, 64, 4095, 4096, 4097, 100_000}
    bitmap = bytearray(32768)
    for page in pages:
        bitmap[page // 8] |= 1 << (page % 8)
    found = {first + i for first, count in bitmap_runs(bytes(bitmap)) for i in range(count)}
    assert found == pages
    assert bitmap_runs(bytes(32768)) == []


def test_page_runs_groups_consecutive_pages() -> None:
    assert page_runs([5, 3, 4, 9, 10, 4]) == [(3, 3), (9, 2)]


# -- the ready point --------------------------------------------------------------

def test_snapshot_is_taken_at_the_first_wait(snapshot: Snapshot) -> None:
    assert snapshot.wait is not None and snapshot.wait[1] == (1 << 16) - 1
    assert snapshot.cpu.at_syscall
    assert 0 < snapshot.resident_bytes() < 64 << 20  # only data pages were copied


def test_a_program_that_exits_first_gives_no_snapshot() -> None:
    from tests.programs.build import program
    path = str(program("hello"))
    process = Process.spawn(path, [path], {}, None, stdio=(0, os.open(os.devnull, os.O_WRONLY), 2))
    taken, reply = snapshot_at_ready_point(process, timeout=TIMEOUT)
    process.close()
    assert taken is None
    assert reply.status == "exit" and "before its first minikvm_wait_request" in reply.message


# -- resets -------------------------------------------------------------------------

@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_every_request_sees_the_pristine_program(snapshot: Snapshot, mechanism: str) -> None:
    with snapshot.fork(mechanism) as fork:
        for i in range(1000):
            request = f"request {i}".encode()
            reply = fork.request(request, timeout=TIMEOUT)
            assert reply.ok and reply.response == pristine(request), (i, reply)


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_a_crash_does_not_affect_the_next_request(snapshot: Snapshot, mechanism: str) -> None:
    with snapshot.fork(mechanism) as fork:
        crashed = fork.request(b"crash", timeout=TIMEOUT)
        assert crashed.status == "crash"
        assert crashed.message.startswith("SIGSEGV: page fault writing 0x10")
        assert fork.last_reset.full
        assert fork.request(b"after").response == pristine(b"after")


def test_timeout_and_exit_are_reset_too(snapshot: Snapshot) -> None:
    with snapshot.fork() as fork:
        assert fork.request(b"spin", timeout=0.2).status == "timeout"
        assert fork.request(b"one").response == pristine(b"one")
        exited = fork.request(b"exit", timeout=TIMEOUT)
        assert exited.status == "exit" and exited.exit_status == 3
        assert fork.request(b"two").response == pristine(b"two")


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_mappings_made_by_a_request_are_undone(snapshot: Snapshot, mechanism: str) -> None:
    with snapshot.fork(mechanism) as fork:
        assert fork.request(b"big", timeout=TIMEOUT).response.endswith(b"big=x")
        assert fork.last_reset.flushed and fork.last_reset.table_pages > 0
        assert fork.process.mm.vmas == snapshot.mm.vmas
        assert fork.request(b"again").response == pristine(b"again")


def test_a_reset_restores_every_page(snapshot: Snapshot) -> None:
    """Compare the fork's whole used memory with the snapshot's after requests
    that write through the guest, through the host (getrandom) and through
    mappings: nothing may differ."""
    with snapshot.fork("copy") as fork:
        for request in (b"hello", b"random", b"big", b"poke9"):
            fork.request(request, timeout=TIMEOUT)
        ours, theirs = fork.machine.memory.buffer, snapshot.memory.buffer
        # Up to the highest allocated page: above it all is free (and reading
        # holes of the snapshot's memfd would fill them with pages).
        free_runs = snapshot.mm.user_pool.free_runs
        end = free_runs[-1][0] if free_runs else snapshot.mm.user_pool.end
        chunk = 1 << 20  # compare a MiB at a time, then name the pages that differ
        differing = [page for start in range(0, end, chunk)
                     if ours[start:start + chunk] != theirs[start:start + chunk]
                     for page in range(start // 4096, (start + chunk) // 4096)
                     if ours[page * 4096:(page + 1) * 4096] != theirs[page * 4096:(page + 1) * 4096]]
        assert differing == []


def test_forks_do_not_see_each_others_writes(snapshot: Snapshot) -> None:
    with snapshot.fork() as first, snapshot.fork() as second:
        assert first.request(b"poke42", reset=False).response.endswith(b"poked=42")
        assert second.request(b"peek", reset=False).response.endswith(b"poked=7")
        assert first.request(b"peek", reset=False).response.startswith(b"counter=2")
        assert second.request(b"peek", reset=False).response.startswith(b"counter=2")
        first.reset()
        assert first.request(b"peek").response == pristine(b"peek")


def test_entropy_is_fresh_in_every_fork_and_request(snapshot: Snapshot) -> None:
    with snapshot.fork() as first, snapshot.fork() as second:
        seen = {first.request(b"random").response, first.request(b"random").response,
                second.request(b"random").response}
    assert len(seen) == 3


def test_files_are_copies_with_their_own_position(tmp_path, snapshot: Snapshot) -> None:
    """An open file's position is part of the snapshot: reading in one fork
    does not move it for another, and a reset rewinds it."""
    from minikvm.process.fdtable import HostFile
    data = tmp_path / "data.txt"
    data.write_bytes(b"0123456789")
    with snapshot.fork() as fork:
        host_fd = os.open(data, os.O_RDONLY)
        os.lseek(host_fd, 3, os.SEEK_SET)
        fork.process.fds.install_at(5, HostFile(host_fd, str(data), os.O_RDONLY))
        child = Snapshot.take(fork.process, fork.wait)
    with child, child.fork() as one, child.fork() as two:
        file_one, file_two = one.process.fds.get(5), two.process.fds.get(5)
        assert os.read(file_one.host_fd, 2) == b"34"
        assert os.read(file_two.host_fd, 2) == b"34"
        one.reset()
        assert os.read(one.process.fds.get(5).host_fd, 4) == b"3456"


def test_a_snapshot_of_a_fork_is_a_snapshot(snapshot: Snapshot) -> None:
    with snapshot.fork() as fork:
        fork.request(b"poke5", reset=False)
        child = Snapshot.take(fork.process, fork.wait)
    with child, child.fork() as grandchild:
        assert grandchild.request(b"peek").response.endswith(b"poked=5")


def test_prepared_forks_are_handed_out_as_new_ones(snapshot: Snapshot) -> None:
    """prepare_forks starts forks ahead of time; fork() hands them out,
    with the mechanism asked for, and they start from the snapshot."""
    snapshot.prepare_forks(2)
    prepared = {id(spare) for spare in snapshot.spare_forks}
    assert len(prepared) == 2
    with snapshot.fork("copy") as first, snapshot.fork() as second:
        assert {id(first), id(second)} == prepared
        assert snapshot.spare_forks == []
        assert (first.mechanism, second.mechanism) == ("copy", "cow")
        assert first.request(b"poke42", reset=False).response.endswith(b"poked=42")
        assert second.request(b"peek").response == pristine(b"peek")
        first.reset()
        assert first.request(b"peek").response == pristine(b"peek")
    with snapshot.fork() as third:                      # none left: a new one
        assert id(third) not in prepared
        assert third.request(b"peek").response == pristine(b"peek")


def test_closing_a_snapshot_closes_its_spare_forks(snapshot: Snapshot) -> None:
    with snapshot.fork() as fork:
        child = Snapshot.take(fork.process, fork.wait)
    with child:
        child.prepare_forks(1)
        spare = child.spare_forks[0]
    assert spare.machine is None and child.spare_forks == []
    with pytest.raises(SnapshotError, match="closed"):
        child.prepare_forks(1)


# -- files ------------------------------------------------------------------------------

def test_the_file_round_trips(tmp_path, snapshot: Snapshot) -> None:
    path = tmp_path / "handler.snap"
    size = save(snapshot, path)
    assert path.stat().st_size == size
    header = read_header(path)
    assert header["version"] == 1 and header["wait"] == list(snapshot.wait)
    with load(path) as loaded, loaded.fork() as fork:
        assert fork.request(b"loaded").response == pristine(b"loaded")
        assert fork.call("add", 20, 22) == 42


@pytest.mark.parametrize("damage", ["truncated", "flipped", "magic", "version", "empty"])
def test_a_damaged_file_is_refused(tmp_path, snapshot: Snapshot, damage: str) -> None:
    path = tmp_path / "handler.snap"
    save(snapshot, path)
    data = bytearray(path.read_bytes())
    if damage == "truncated":
        data = data[:len(data) * 2 // 3]
    elif damage == "flipped":
        data[len(data) // 2] ^= 0x40
    elif damage == "magic":
        data[:8] = b"NOTASNAP"
    elif damage == "version":
        data[8] = 99
    else:
        data = bytearray()
    path.write_bytes(bytes(data))
    expected = {"truncated": "truncated", "flipped": "checksum mismatch",
                "magic": "not a minikvm snapshot", "version": "format version 99",
                "empty": "too short"}[damage]
    with pytest.raises(SnapshotError, match=expected):
        load(path)


def test_requests_must_fit_the_buffer(snapshot: Snapshot) -> None:
    with snapshot.fork() as fork, pytest.raises(SnapshotError, match="does not fit"):
        fork.request(b"x" * (1 << 17))


def test_a_fork_is_its_own_vm(snapshot: Snapshot) -> None:
    with snapshot.fork() as one, snapshot.fork() as two:
        assert one.machine.vm.fd != two.machine.vm.fd
        assert not one.machine.memory.shared
        # Copy-on-write, privately: what one fork writes, the other never sees.
        rsp = one.machine.vcpu.run_state.s.regs.regs.rsp
        before = two.machine.mm.read(rsp - 64, 8)
        one.machine.mm.write(rsp - 64, b"one only")
        assert one.machine.mm.read(rsp - 64, 8) == b"one only"
        assert two.machine.mm.read(rsp - 64, 8) == before != b"one only"
