"""Layer 8 — waiting on file descriptors: poll, ppoll, select."""

from __future__ import annotations

from minikvm.syscalls.base import Syscall

SYSCALLS: list[Syscall] = []
