"""``minikvm run --gdb``: Debian's own gdb debugging real guests.

tests/programs/gdb_target.c is built -g -O0 -fno-omit-frame-pointer,
static and dynamic (PIE, through ld.so).  Each test starts minikvm with
``--gdb 127.0.0.1:0``, reads the port it printed, and runs ``gdb -batch``
with a script against it, as a user would; gdb's output and minikvm's exit
status are checked — against the native run where there is one.  A raw
socket client plays a hostile peer: malformed and out-of-bounds packets
get error replies, never a traceback, and never reach outside the guest.
The protocol's framing and the target description are tested in
tests/test_gdb_packets.py and tests/test_gdb_target.py.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from minikvm.cpu.layout import GDT_ADDRESS
from minikvm.debug.packets import PacketReader, Packet, frame
from minikvm.debug.target import g_packet_size
from tests.guest_runs import run_minikvm, run_native, shell_status, start_minikvm
from tests.programs.build import unavailable_reason

SOURCE = Path(__file__).parent / "programs" / "gdb_target.c"
FLAGS = ["-g", "-O0", "-fno-omit-frame-pointer", "-pthread"]
VARIANTS = {"static": ["-static"], "dynamic": []}
TIMEOUT_SECONDS = 120
#: inner(40) returns 41; main returns outer(20) = 42 (gdb prints it in octal).
EXIT_STATUS = 42

pytestmark = pytest.mark.skipif(shutil.which("gdb") is None,
                                reason="gdb is not installed (apt-get install gdb)")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    reason = unavailable_reason("glibc-static")
    if reason:
        pytest.skip(reason)
    directory = tmp_path_factory.mktemp("gdb")
    binaries = {}
    for name, flags in VARIANTS.items():
        binary = directory / f"gdb_target-{name}"
        subprocess.run(["cc", *FLAGS, *flags, "-o", str(binary), str(SOURCE)], check=True,
                       timeout=120)
        binaries[name] = binary
    return binaries


class Debugged:
    """minikvm started with ``--gdb 127.0.0.1:0`` and the port it listens on."""

    def __init__(self, binary: Path, *arguments: str, options: tuple[str, ...] = ()) -> None:
        self.process = start_minikvm([*options, "--gdb", "127.0.0.1:0", "--", binary,
                                      *arguments])
        assert self.process.stderr is not None
        line = self.process.stderr.readline().decode()
        found = re.search(r"waiting for gdb on 127\.0\.0\.1:(\d+) ", line)
        assert found, line
        self.port = int(found.group(1))

    def finish(self) -> tuple[int, str, str]:
        """minikvm's shell status, stdout and stderr once it has ended."""
        try:
            out, err = self.process.communicate(timeout=TIMEOUT_SECONDS)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.communicate()
        stderr = err.decode()
        assert "Traceback" not in stderr and "internal error" not in stderr, stderr
        return shell_status(self.process.returncode), out.decode(), stderr


def gdb(binary: Path, port: int, *commands: str) -> str:
    """``gdb -batch`` on *binary* connected to *port*, running *commands*."""
    argv = ["gdb", "-batch", "-nx", str(binary), "-ex", "set pagination off",
            "-ex", f"target remote 127.0.0.1:{port}"]
    for command in commands:
        argv += ["-ex", command]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT_SECONDS)
    return result.stdout + result.stderr


def debug(binary: Path, *commands: str, arguments: tuple[str, ...] = ()
          ) -> tuple[str, int, str, str]:
    """gdb's output, then minikvm's status, stdout and stderr."""
    run = Debugged(binary, *arguments)
    try:
        output = gdb(binary, run.port, *commands)
    finally:
        status, out, err = run.finish()
    return output, status, out, err


@pytest.mark.kvm
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_break_two_calls_deep_backtrace_step_and_exit(built: dict[str, Path],
                                                      variant: str) -> None:
    binary = built[variant]
    output, status, out, _ = debug(
        binary, "break inner", "continue", "bt", "info registers rip", "stepi",
        "info registers rip", "print counter", "finish", "continue")
    address = int(re.search(r"Breakpoint 1 at (0x[0-9a-f]+)", output).group(1), 16)
    assert f"Breakpoint 1, inner (x=40)" in output, output
    frames = re.findall(r"^#(\d) .*?\b(inner|outer|main) \(", output, re.MULTILINE)
    assert frames == [("0", "inner"), ("1", "outer"), ("2", "main")], output
    rips = [int(value, 16) for value in re.findall(r"^rip\s+(0x[0-9a-f]+)", output,
                                                   re.MULTILINE)]
    assert rips[0] == address, output
    assert rips[1] > rips[0], output                 # stepi advanced
    assert "$1 = 7" in output, output                # the global, read from guest memory
    assert "Value returned is $2 = 41" in output, output
    assert f"exited with code {EXIT_STATUS:03o}" in output, output
    native = run_native([binary], timeout=TIMEOUT_SECONDS, text=True)
    assert status == native.returncode == EXIT_STATUS
    assert out == native.stdout


@pytest.mark.kvm
def test_software_watchpoint_and_writing_a_variable(built: dict[str, Path]) -> None:
    output, status, _, _ = debug(
        built["static"], "break outer", "continue", "set can-use-hw-watchpoints 0",
        "watch counter", "continue", "delete", "set var counter = 100", "print counter",
        "continue")
    assert "Old value = 7\nNew value = 47" in output, output      # counter += 40 in inner
    assert re.search(r"^inner \(x=40\)", output, re.MULTILINE), output
    assert "$1 = 100" in output and status == EXIT_STATUS, output


@pytest.mark.kvm
def test_a_crash_stops_at_the_faulting_instruction(built: dict[str, Path]) -> None:
    binary = built["static"]
    output, status, _, err = debug(binary, "continue", "bt", "x/i $pc", "continue",
                                   arguments=("segv",))
    assert "Program received signal SIGSEGV, Segmentation fault." in output, output
    assert re.search(r"^#0 .* in crash \(where=0x0\)", output, re.MULTILINE), output
    assert re.search(r"^#1 .* in main \(", output, re.MULTILINE), output
    assert re.search(r"=> 0x[0-9a-f]+ <crash\+\d+>:\s+mov", output), output
    assert "Program terminated with signal SIGSEGV" in output, output
    native = run_native([binary, "segv"], timeout=TIMEOUT_SECONDS)
    assert status == shell_status(native.returncode) == 128 + 11
    assert "SIGSEGV" in err


@pytest.mark.kvm
def test_abort_stops_in_gdb_before_the_program_dies(built: dict[str, Path]) -> None:
    output, status, _, _ = debug(built["static"], "continue", "bt", "continue",
                                 arguments=("abort",))
    assert "Program received signal SIGABRT, Aborted." in output, output
    assert re.search(r"^#\d .* in abort \(", output, re.MULTILINE), output
    assert re.search(r"^#\d .* in main \(", output, re.MULTILINE), output
    assert "Program terminated with signal SIGABRT" in output, output
    assert status == 128 + 6


@pytest.mark.kvm
def test_threads_are_gdb_threads(built: dict[str, Path]) -> None:
    output, status, _, _ = debug(built["static"], "break inner", "continue", "info threads",
                                 "thread 2", "info registers fs_base", "continue",
                                 arguments=("threads",))
    assert "[New Thread" in output, output
    listed = re.findall(r"^\*?\s+(\d)\s+Thread (\d+)", output, re.MULTILINE)
    assert [number for number, _ in listed] == ["1", "2"], output
    assert "[Switching to thread 2" in output, output
    fs_base = int(re.search(r"^fs_base\s+(0x[0-9a-f]+)", output, re.MULTILINE).group(1), 16)
    assert fs_base != 0, output                       # the new thread's own TLS
    assert "exited normally" in output, output
    assert status == 0


@pytest.mark.kvm
def test_dynamic_program_libraries_are_found_through_auxv(built: dict[str, Path]) -> None:
    output, status, _, _ = debug(built["dynamic"], "break inner", "continue",
                                 "info sharedlibrary", "break printf", "continue", "bt",
                                 "continue")
    assert "Breakpoint 1, inner (x=40)" in output, output
    assert re.search(r"0x[0-9a-f]+\s+0x[0-9a-f]+\s+Yes\s+\S*libc\.so\.6", output), output
    assert re.search(r"Breakpoint 2, \S*printf", output), output
    assert re.search(r"^#1 .* in main \(", output, re.MULTILINE), output
    assert status == EXIT_STATUS


@pytest.mark.kvm
def test_ctrl_c_in_gdb_stops_a_looping_program(built: dict[str, Path]) -> None:
    # gdb turns its own SIGINT into the protocol's Ctrl-C (a lone 0x03);
    # the shell's $PPID is gdb.
    output, status, _, _ = debug(built["static"], "shell (sleep 1 && kill -INT $PPID) &",
                                 "continue", "bt", "kill", arguments=("loop",))
    assert "Program received signal SIGINT" in output, output
    assert re.search(r"^#0 .* in spin_forever \(", output, re.MULTILINE), output
    assert re.search(r"^#1 .* in main \(", output, re.MULTILINE), output
    assert status == 128 + 9


@pytest.mark.kvm
def test_kill_from_gdb_ends_the_program(built: dict[str, Path]) -> None:
    output, status, out, _ = debug(built["static"], "break inner", "continue", "kill")
    assert "Breakpoint 1, inner" in output, output
    assert status == 128 + 9 and "result" not in out


@pytest.mark.kvm
def test_detach_lets_the_program_run_on_without_breakpoints(built: dict[str, Path]) -> None:
    output, status, out, _ = debug(built["static"], "break outer", "break inner", "continue",
                                   "detach")
    assert "Breakpoint 1, outer" in output, output
    assert status == EXIT_STATUS and out == "result 42\n"


def exchange(connection: socket.socket, reader: PacketReader, data: bytes) -> bytes:
    """Send one packet, return the reply's data (acks skipped)."""
    connection.sendall(frame(data))
    while True:
        chunk = connection.recv(65536)
        assert chunk, f"the stub closed the connection after {data!r}"
        for event in reader.feed(chunk):
            if isinstance(event, Packet):
                connection.sendall(b"+")
                return event.data


@pytest.mark.kvm
def test_a_hostile_peer_gets_errors_and_never_reaches_outside_the_guest(
        built: dict[str, Path]) -> None:
    run = Debugged(built["static"])
    try:
        connection = socket.create_connection(("127.0.0.1", run.port), timeout=30)
        reader = PacketReader(max_packet=1 << 20)
        answers = {packet: exchange(connection, reader, packet) for packet in [
            b"m0,10",                                  # page zero: not mapped
            b"m%x,10" % GDT_ADDRESS,                   # minikvm's own kernel area
            b"mffffffffffffffff,ffffffffffffffff",     # wraps, and a huge length
            b"m400000,zz",                              # not hex
            b"M%x,4:cccccccc" % GDT_ADDRESS,           # a write to the kernel area
            b"M400000,4:cc",                            # length does not match the data
            b"Z0,0,1",                                  # a breakpoint nowhere
            b"Z0,400000,8",                             # a kind x86 has no
            b"p999",                                    # no such register
            b"P1=00",                                   # wrong size for rbx
            b"P12=0800000000000000",                    # cs: stays a user selector
            b"G00",                                     # a short G
            b"Hg99999",                                 # no such thread
            b"qXfer:features:read:../../etc/passwd:0,100",
            b"vCont;x",
            b"\xff\x00garbage",
        ]}
        assert all(answers[packet].startswith(b"E") for packet in [
            b"m0,10", b"m%x,10" % GDT_ADDRESS, b"m400000,zz", b"M%x,4:cccccccc" % GDT_ADDRESS,
            b"M400000,4:cc", b"Z0,0,1", b"Z0,400000,8", b"p999", b"P1=00",
            b"P12=0800000000000000", b"G00", b"Hg99999",
            b"qXfer:features:read:../../etc/passwd:0,100", b"vCont;x"]), answers
        assert answers[b"\xff\x00garbage"] == b""      # unknown: "not supported"
        # What is the program's is readable: its registers, its code at RIP.
        registers = exchange(connection, reader, b"g")
        assert len(registers) == 2 * g_packet_size()
        rip = int.from_bytes(bytes.fromhex(registers[16 * 16:16 * 16 + 16].decode()), "little")
        assert len(exchange(connection, reader, b"m%x,4" % rip)) == 8
        big = answers[b"mffffffffffffffff,ffffffffffffffff"]
        assert big.startswith(b"E") or len(big) <= 2 * 4096, big[:80]
        # Still answering, and the program unharmed: it runs to its end.
        assert exchange(connection, reader, b"c").startswith(b"W2a")
        connection.close()
    finally:
        status, out, err = run.finish()
    assert status == EXIT_STATUS and out == "result 42\n", err


@pytest.mark.kvm
def test_gdb_going_away_lets_the_program_finish(built: dict[str, Path]) -> None:
    run = Debugged(built["static"])
    try:
        socket.create_connection(("127.0.0.1", run.port), timeout=30).close()
    finally:
        status, out, _ = run.finish()
    assert status == EXIT_STATUS and out == "result 42\n"


@pytest.mark.parametrize("arguments, message", [
    (["--gdb", "10.1.2.3:1234"], "is not a loopback address"),
    (["--gdb", "127.0.0.1"], "no port"),
    (["--gdb", "127.0.0.1:99999"], "above 65535"),
    (["--gdb-any-address"], "--gdb-any-address needs --gdb"),
])
def test_bad_gdb_values_are_usage_errors(built: dict[str, Path], arguments: list[str],
                                         message: str) -> None:
    result = run_minikvm([*arguments, "--", built["static"]], timeout=TIMEOUT_SECONDS, text=True)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr


def test_a_port_in_use_is_a_clear_error(built: dict[str, Path]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = run_minikvm(["--gdb", f"127.0.0.1:{port}", "--", built["static"]],
                             timeout=TIMEOUT_SECONDS, text=True)
    assert result.returncode == 2
    assert "cannot listen there: Address already in use" in result.stderr, result.stderr
