"""Layer 6 — the one system-call table.

Each family module lists its system calls (number, name, handler, argument
kinds, status).  This module gathers them: the dispatcher indexes it by
number, and the docs' support matrix is generated from it.
"""

from __future__ import annotations

from minikvm.syscalls import (attributes, descriptors, directories, epoll, exec, files, info, memory,
                              metadata, net, poll, process, requests, signal_actions,
                              signal_handlers, signalfd, sync, time, timerfd, memfd, xattr)
from minikvm.syscalls.base import Syscall

FAMILIES = {
    "files": files.SYSCALLS,
    "metadata": metadata.SYSCALLS,
    "descriptors": descriptors.SYSCALLS,
    "directories": directories.SYSCALLS,
    "attributes": attributes.SYSCALLS,
    "memory": memory.SYSCALLS,
    "process": process.SYSCALLS,
    "exec": exec.SYSCALLS,
    "time": time.SYSCALLS,
    "signal_actions": signal_actions.SYSCALLS,
    "signal_handlers": signal_handlers.SYSCALLS,
    "info": info.SYSCALLS,
    "poll": poll.SYSCALLS,
    "epoll": epoll.SYSCALLS,
    "timerfd": timerfd.SYSCALLS,
    "signalfd": signalfd.SYSCALLS,
    "memfd": memfd.SYSCALLS,
    "xattr": xattr.SYSCALLS,
    "sync": sync.SYSCALLS,
    "net": net.SYSCALLS,
    "requests": requests.SYSCALLS,  # minikvm's own: 500-502
}


def _by_number() -> dict[int, Syscall]:
    table: dict[int, Syscall] = {}
    for family, entries in FAMILIES.items():
        for entry in entries:
            if entry.number in table:
                raise RuntimeError(f"syscall {entry.number} ({entry.name}) is listed twice")
            table[entry.number] = entry
    return table


TABLE_BY_NUMBER = _by_number()


def family_of(name: str) -> str:
    """Which family module a system call lives in."""
    for family, entries in FAMILIES.items():
        if any(entry.name == name for entry in entries):
            return family
    raise KeyError(name)
