"""Layer 7 — the ``--gdb HOST:PORT`` address: where the stub listens.

A gdb stub reads and writes the guest's memory and registers for whoever
connects, with no password, so by default it listens on a loopback address
only (127.0.0.0/8 or ::1), where only this machine can reach it; another
address needs ``--gdb-any-address`` said out loud.  Port 0 asks the kernel
for a free port (the stub prints the one it got)."""

from __future__ import annotations

import ipaddress

from minikvm.errors import MinikvmError


class GdbAddressError(MinikvmError):
    """A ``--gdb`` value that cannot be listened on as given."""


def parse_gdb_address(text: str, *, any_address: bool = False) -> tuple[str, int]:
    """``127.0.0.1:1234`` → ``("127.0.0.1", 1234)``; ``[::1]:0`` → ``("::1", 0)``.

    ``localhost`` is taken as 127.0.0.1, so no name is ever resolved.
    Raises :class:`GdbAddressError` naming the value and the fix."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise GdbAddressError(f"--gdb {text!r}: no port; write HOST:PORT "
                              "(127.0.0.1:1234, or 127.0.0.1:0 for a free port)")
    if not port_text.isdigit():
        raise GdbAddressError(f"--gdb {text!r}: port {port_text!r} is not a number "
                              "(write HOST:PORT, e.g. 127.0.0.1:1234)")
    port = int(port_text)
    if port > 65535:
        raise GdbAddressError(f"--gdb {text!r}: port {port} is above 65535 "
                              "(use 1-65535, or 0 for a free port)")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if host == "localhost":
        host = "127.0.0.1"
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise GdbAddressError(f"--gdb {text!r}: {host!r} is not an IP address "
                              "(write 127.0.0.1:PORT or [::1]:PORT)") from None
    if not ip.is_loopback and not any_address:
        raise GdbAddressError(f"--gdb {text!r}: {host} is not a loopback address, so "
                              "anyone who reaches it could read and change the guest; "
                              "use 127.0.0.1, or add --gdb-any-address to mean it")
    return str(ip), port
