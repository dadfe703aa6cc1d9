"""Round trips of the GDB stub (``run --gdb``, issue 16 item 1) beside gdbserver.

Standalone: ``PYTHONPATH=. python benchmarks/gdb_bench.py [COUNT]``.
Builds tests/programs/gdb_target.c (static, -O0), starts it spinning in
``spin_forever`` under ``minikvm run --gdb 127.0.0.1:0`` and, where
Debian's ``gdbserver`` is installed, under ``gdbserver`` natively (the
baseline: ptrace on the host), and times what gdb does most, as a client
that speaks the protocol itself: ``vCont;s`` (one ``stepi``, or one
instruction of a software watchpoint), ``g`` (every register) and ``m``
of 256 bytes.  Each figure is the median of COUNT round trips, in µs.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(HERE))

from minikvm.debug.packets import Packet, PacketReader, frame  # noqa: E402

SOURCE = HERE / "tests" / "programs" / "gdb_target.c"
PACKETS = {"stepi": b"vCont;s", "registers (g)": b"g", "memory (m, 256 bytes)": None}


class Client:
    """One connection speaking the remote protocol, acks on, as gdb does."""

    def __init__(self, port: int) -> None:
        deadline = time.monotonic() + 30
        while True:
            try:
                self.connection = socket.create_connection(("127.0.0.1", port))
                break
            except ConnectionRefusedError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        # gdb sets TCP_NODELAY too; without it each "+" waits for a delayed ACK.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.reader = PacketReader(max_packet=1 << 20)

    def ask(self, data: bytes) -> bytes:
        self.connection.sendall(frame(data))
        while True:
            chunk = self.connection.recv(65536)
            if not chunk:
                raise SystemExit(f"the stub closed the connection after {data!r}")
            for event in self.reader.feed(chunk):
                if isinstance(event, Packet):
                    self.connection.sendall(b"+")
                    return event.data


def measure(client: Client, count: int, data: int) -> dict[str, float]:
    """The medians for the program; *data* is the address of its ``counter``."""
    client.ask(b"qSupported:swbreak+;xmlRegisters=i386")
    client.ask(b"?")
    figures = {}
    for name, packet in PACKETS.items():
        packet = packet or b"m%x,100" % data
        times = []
        for _ in range(count):
            started = time.perf_counter()
            client.ask(packet)
            times.append(time.perf_counter() - started)
        figures[name] = statistics.median(times) * 1e6
    return figures


def minikvm(binary: Path, count: int, data: int) -> dict[str, float]:
    process = subprocess.Popen([sys.executable, "-m", "minikvm", "run", "--gdb", "127.0.0.1:0",
                                "--", str(binary), "loop"],
                               env=dict(os.environ, PYTHONPATH=str(HERE)),
                               stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
    try:
        line = process.stderr.readline().decode()
        found = re.search(r"127\.0\.0\.1:(\d+) ", line)
        if found is None:
            raise SystemExit(f"minikvm did not say where it waits: {line}")
        client = Client(int(found.group(1)))
        figures = measure(client, count, data)
        client.connection.sendall(frame(b"k"))
        return figures
    finally:
        process.wait(timeout=60) if process.poll() is None else None
        if process.poll() is None:
            process.kill()


def gdbserver(binary: Path, count: int, data: int) -> dict[str, float] | None:
    if shutil.which("gdbserver") is None:
        return None
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(["gdbserver", f"127.0.0.1:{port}", str(binary), "loop"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        client = Client(port)
        figures = measure(client, count, data)
        client.connection.sendall(frame(b"k"))
        return figures
    finally:
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


def main() -> int:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    with tempfile.TemporaryDirectory(prefix="minikvm-gdb-bench-") as scratch:
        binary = Path(scratch) / "gdb_target"
        subprocess.run(["cc", "-static", "-g", "-O0", "-fno-omit-frame-pointer", "-pthread",
                        "-o", str(binary), str(SOURCE)], check=True, timeout=120)
        symbols = subprocess.run(["nm", str(binary)], capture_output=True, text=True,
                                 check=True).stdout
        data = int(re.search(r"^([0-9a-f]+) \w counter$", symbols, re.MULTILINE).group(1), 16)
        ours = minikvm(binary, count, data)
        native = gdbserver(binary, count, data)
    print(f"median round trip of {count}, µs      minikvm --gdb   gdbserver (native)")
    for name, value in ours.items():
        baseline = f"{native[name]:10.0f}" if native else "  (gdbserver not installed)"
        print(f"  {name:28} {value:12.0f}   {baseline}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
