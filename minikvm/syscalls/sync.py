"""Layer 8 — synchronisation: futex, for a single-threaded guest."""

from __future__ import annotations

from minikvm.syscalls.base import Syscall

SYSCALLS: list[Syscall] = []
