"""Layer 8 — sockets: refused unless the policy allows the endpoint."""

from __future__ import annotations

from minikvm.syscalls.base import Syscall

SYSCALLS: list[Syscall] = []
