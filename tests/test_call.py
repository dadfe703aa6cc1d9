"""Fork.call(): calling the guest program's functions by symbol, System V ABI."""

from __future__ import annotations

import subprocess

import pytest

from minikvm.cpu.guestcode import MINIKVM_SYS_CALL_RETURN, assemble, call_return
from minikvm.errors import SnapshotError
from minikvm.process.process import Process
from minikvm.snapshot.fork import GuestCallError
from minikvm.snapshot.snapshot import Snapshot, snapshot_at_ready_point
from tests.guests import guest, hostile_guest

TIMEOUT = 10.0


def test_the_call_return_stub_disassembles_as_documented(tmp_path) -> None:
    """The bytes of the stub and the mnemonics beside them agree (objdump)."""
    if subprocess.run(["objdump", "--version"], capture_output=True).returncode != 0:
        pytest.skip("objdump (binutils) is not installed")
    code = tmp_path / "stub.bin"
    code.write_bytes(assemble(call_return()))
    listing = subprocess.run(["objdump", "-D", "-b", "binary", "-m", "i386:x86-64", str(code)],
                             capture_output=True, text=True, check=True).stdout
    mnemonics = [line.split("\t")[-1].strip() for line in listing.splitlines()
                 if line.startswith("   ") and "\t" in line]
    assert mnemonics == [text for _, text in call_return()]
    assert MINIKVM_SYS_CALL_RETURN == 0x1F6


@pytest.fixture(scope="module")
def snapshot() -> Snapshot:
    path = str(guest("handler"))
    process = Process.spawn(path, [path], {}, None)
    taken, reply = snapshot_at_ready_point(process, timeout=TIMEOUT)
    process.close()
    assert taken is not None, reply.message
    yield taken
    taken.close()


kvm = pytest.mark.kvm


@kvm
def test_integer_arguments(snapshot: Snapshot) -> None:
    with snapshot.fork() as fork:
        assert fork.call("add", 2, 3) == 5
        assert fork.call("add", -7, 2) == -5
        assert fork.call("add", 1 << 62, 1 << 62) == -(1 << 63)  # C long wraps
        assert fork.call("weighted", 1, 2, 3, 4, 5, 6) == 1 + 4 + 9 + 16 + 25 + 36


@kvm
def test_buffer_arguments(snapshot: Snapshot) -> None:
    data = bytes(range(256)) * 3
    expected = 0
    for byte in data:
        expected = (expected * 31 + byte) & ((1 << 64) - 1)
    expected -= (1 << 64) if expected >> 63 else 0
    with snapshot.fork() as fork:
        assert fork.call("checksum", data, len(data)) == expected
        assert fork.call("count_char", "banana", ord("a")) == 3
        assert fork.call("count_char", b"x\0xx", ord("x")) == 1  # C stops at the NUL


@kvm
def test_the_stack_is_aligned_as_the_abi_requires(snapshot: Snapshot) -> None:
    with snapshot.fork() as fork:
        assert fork.call("stack_misalignment") == 0
        assert fork.call("stack_misalignment", b"odd length!") == 0


@kvm
def test_reset_or_keep_the_effects(snapshot: Snapshot) -> None:
    with snapshot.fork() as fork:
        assert [fork.call("bump", reset=False) for _ in range(3)] == [1, 2, 3]
        assert fork.call("bump") == 4      # then reset
        assert fork.call("bump") == 1
        # after calls the program still serves requests from where it was
        assert fork.request(b"hi").response == b"counter=1 heap=10 poked=7"


@kvm
def test_a_crashing_function_raises_and_the_fork_recovers(snapshot: Snapshot) -> None:
    with snapshot.fork() as fork:
        with pytest.raises(GuestCallError, match=r"crash_now\(\) did not return: SIGSEGV"):
            fork.call("crash_now")
        assert fork.call("add", 1, 1) == 2


@kvm
def test_bad_calls_are_refused(snapshot: Snapshot) -> None:
    with snapshot.fork() as fork:
        with pytest.raises(SnapshotError, match="no symbol 'no_such_function'"):
            fork.call("no_such_function")
        with pytest.raises(TypeError, match="at most 6"):
            fork.call("add", *range(7))
        with pytest.raises(TypeError, match="int, bytes or str"):
            fork.call("add", 1.5, 2)


@kvm
def test_a_guest_cannot_fake_a_call_return(snapshot: Snapshot) -> None:
    """Jumping to the stub on its own gives the guest EINVAL, not the host a
    traceback: syscall 502 outside a host call."""
    from minikvm.syscalls.requests import sys_minikvm_call_return
    from minikvm.errors import SyscallError
    with snapshot.fork() as fork:
        with pytest.raises(SyscallError) as failure:
            sys_minikvm_call_return(fork.process, 5)
        assert failure.value.errno == 22


# -- a call's host-side state is reset too ----------------------------------------------------

@pytest.fixture(scope="module")
def leaky() -> Snapshot:
    """A snapshot of tests/hostile/leak_requests.c (functions that start a
    thread and move the break)."""
    path = str(hostile_guest("leak_requests"))
    process = Process.spawn(path, [path], {}, None)
    taken, reply = snapshot_at_ready_point(process, timeout=TIMEOUT)
    process.close()
    assert taken is not None, reply.message
    yield taken
    taken.close()


@kvm
def test_a_thread_a_call_started_is_gone_after_the_reset(leaky: Snapshot) -> None:
    """call() resets the fork as a request does: a thread the function
    started does not run in the next call; without the reset it does."""
    with leaky.fork() as fork:
        assert fork.call("start_thread") == 1
        assert fork.call("thread_alive") == 0
        assert fork.call("start_thread", reset=False) == 1
        assert fork.call("thread_alive", reset=False) == 1     # its effects stay
        fork.reset()
        assert fork.call("thread_alive") == 0
        assert len(fork.process.threads) == 1
        assert fork.request(b"peek", timeout=TIMEOUT).response.startswith(b"leaked= thread=0 ")


@kvm
def test_a_break_a_call_moved_is_put_back(leaky: Snapshot) -> None:
    with leaky.fork() as fork:
        start = fork.call("current_break")
        assert start % 4096 and start == leaky.mm.brk_end      # inside a page
        assert fork.call("move_break", 8) == start + 8
        assert fork.call("current_break") == start
        assert fork.call("move_break", 8, reset=False) == start + 8
        assert fork.call("current_break") == start + 8         # kept, then reset
        assert fork.call("current_break") == start
        with pytest.raises(GuestCallError, match="SIGSEGV"):
            fork.call("crash_after_moving_break")              # a failed call resets too
        assert fork.process.mm.brk_end == start
        assert fork.call("current_break") == start
