"""Layer 6 — the synthesized ``/proc``'s files about the machine:
``cpuinfo``, ``meminfo``, ``uptime``, ``loadavg``, ``stat`` and ``version``.

They describe the sandbox's machine, never the host's: the one vCPU as the
CPUID the guest sees, the memory limit as its RAM, the sandbox's own
uptime (under ``--deterministic``, the virtual clock's), the host kernel's
release (programs check features by it).  :mod:`minikvm.syscalls.procfs`
builds the tree and puts these files in it; the files about a process are
there.
"""

from __future__ import annotations

import os
import struct
import time
from typing import TYPE_CHECKING

from minikvm.linux_abi import NSEC_PER_SEC
from minikvm.process.determinism import CLOCK_REALTIME, KERNEL_VERSION
from minikvm.process.stack import CLOCK_TICKS
from minikvm.syscalls.info import ONLY_CPU
from minikvm.syscalls.time import cpu_seconds, now_ns

if TYPE_CHECKING:
    from minikvm.process.process import Process


def uptime_seconds(proc: Process) -> float:
    """How long the sandbox has been up: since its process was made (under
    ``--deterministic``, the virtual clock's uptime)."""
    if proc.determinism is not None:
        return proc.determinism.clock.uptime_seconds()
    return max(0.0, time.monotonic() - proc.start_time)


#: /proc/cpuinfo's flag names of CPUID bits: (leaf, register, bit, name),
#: in the order Linux's cpufeatures.h words list them
CPU_FLAGS = tuple(
    [(1, "edx", bit, name) for bit, name in (
        (0, "fpu"), (1, "vme"), (2, "de"), (3, "pse"), (4, "tsc"), (5, "msr"), (6, "pae"),
        (7, "mce"), (8, "cx8"), (9, "apic"), (11, "sep"), (12, "mtrr"), (13, "pge"),
        (14, "mca"), (15, "cmov"), (16, "pat"), (17, "pse36"), (19, "clflush"),
        (23, "mmx"), (24, "fxsr"), (25, "sse"), (26, "sse2"), (27, "ss"), (28, "ht"))]
    + [(0x80000001, "edx", bit, name) for bit, name in (
        (11, "syscall"), (20, "nx"), (26, "pdpe1gb"), (27, "rdtscp"), (29, "lm"))]
    + [(1, "ecx", bit, name) for bit, name in (
        (0, "pni"), (1, "pclmulqdq"), (3, "monitor"), (9, "ssse3"), (12, "fma"), (13, "cx16"),
        (19, "sse4_1"), (20, "sse4_2"), (21, "x2apic"), (22, "movbe"), (23, "popcnt"),
        (25, "aes"), (26, "xsave"), (28, "avx"), (29, "f16c"), (30, "rdrand"),
        (31, "hypervisor"))]
    + [(0x80000001, "ecx", bit, name) for bit, name in (
        (0, "lahf_lm"), (5, "abm"), (6, "sse4a"), (8, "3dnowprefetch"))]
    + [(7, "ebx", bit, name) for bit, name in (
        (0, "fsgsbase"), (3, "bmi1"), (5, "avx2"), (7, "smep"), (8, "bmi2"), (9, "erms"),
        (10, "invpcid"), (16, "avx512f"), (17, "avx512dq"), (18, "rdseed"), (19, "adx"),
        (20, "smap"), (23, "clflushopt"), (24, "clwb"), (29, "sha_ni"), (30, "avx512bw"),
        (31, "avx512vl"))]
    + [(7, "ecx", bit, name) for bit, name in (
        (1, "avx512vbmi"), (4, "pku"), (8, "gfni"), (9, "vaes"), (10, "vpclmulqdq"))])


def _cpuid(proc: Process) -> dict[int, tuple[int, int, int, int]]:
    """leaf → (eax, ebx, ecx, edx) of sub-leaf 0, as the guest's CPUID answers."""
    table = proc.machine.vcpu.get_cpuid2()
    leaves: dict[int, tuple[int, int, int, int]] = {}
    for entry in table.entries[:table.nent]:
        if entry.index == 0 and entry.function not in leaves:
            leaves[entry.function] = (entry.eax, entry.ebx, entry.ecx, entry.edx)
    return leaves


def _text(*registers: int) -> str:
    return b"".join(struct.pack("<I", r) for r in registers).rstrip(b"\0").decode(
        "ascii", "replace").strip()


def guest_cpus() -> list[int]:
    """The guest's CPUs: those of the affinity mask sched_getaffinity
    returns (:data:`~minikvm.syscalls.info.ONLY_CPU`), so /proc/cpuinfo,
    /proc/stat and status's Cpus_allowed agree with it."""
    return [cpu for cpu in range(ONLY_CPU.bit_length()) if ONLY_CPU >> cpu & 1]


def cpuinfo(proc: Process) -> bytes:
    """``/proc/cpuinfo``: one processor (the guest's one vCPU, as
    ``sched_getaffinity`` says), described by the CPUID the guest sees."""
    leaves = _cpuid(proc)
    zero = (0, 0, 0, 0)
    eax0, ebx0, ecx0, edx0 = leaves.get(0, zero)
    signature = leaves.get(1, zero)[0]
    family = (signature >> 8) & 0xF
    model = (signature >> 4) & 0xF
    if family in (6, 15):
        model |= ((signature >> 16) & 0xF) << 4
    if family == 15:
        family += (signature >> 20) & 0xFF
    brand = "".join(_text(*leaves.get(leaf, zero)) for leaf in (0x80000002, 0x80000003,
                                                                 0x80000004)).strip()
    registers = {"eax": 0, "ebx": 1, "ecx": 2, "edx": 3}
    flags = [name for leaf, register, bit, name in CPU_FLAGS
             if leaves.get(leaf, zero)[registers[register]] >> bit & 1]
    address_sizes = leaves.get(0x80000008, zero)[0]
    block = [
        f"vendor_id\t: {_text(ebx0, edx0, ecx0)}",
        f"cpu family\t: {family}", f"model\t\t: {model}", f"model name\t: {brand or 'unknown'}",
        f"stepping\t: {signature & 0xF}", "physical id\t: 0",
        f"siblings\t: {len(guest_cpus())}"]
    lines: list[str] = []
    for cpu in guest_cpus():
        lines += [f"processor\t: {cpu}", *block,
                  f"core id\t\t: {cpu}", f"cpu cores\t: {len(guest_cpus())}",
                  f"apicid\t\t: {cpu}", f"initial apicid\t: {cpu}",
                  "fpu\t\t: yes", "fpu_exception\t: yes", f"cpuid level\t: {eax0}", "wp\t\t: yes",
                  f"flags\t\t: {' '.join(flags)}", "bugs\t\t:", "clflush size\t: 64",
                  "cache_alignment\t: 64",
                  f"address sizes\t: {address_sizes & 0xFF} bits physical, "
                  f"{(address_sizes >> 8) & 0xFF} bits virtual",
                  "power management:", ""]
    lines.append("")
    return "\n".join(lines).encode()


def _kib_line(name: str, kib: int) -> str:
    return f"{name + ':':<16}{kib:>8} kB\n"


def meminfo(proc: Process) -> bytes:
    """``/proc/meminfo``: the guest's memory limit as its RAM (as sysinfo
    says), free what its pool has not handed out; no swap."""
    pool = proc.mm.user_pool
    total, free = (pool.end - pool.start) >> 10, (pool.end - pool.start - pool.used) >> 10
    rows = [("MemTotal", total), ("MemFree", free), ("MemAvailable", free), ("Buffers", 0),
            ("Cached", 0), ("SwapCached", 0), ("Active", total - free), ("Inactive", 0),
            ("SwapTotal", 0), ("SwapFree", 0), ("Dirty", 0), ("AnonPages", total - free),
            ("Mapped", 0), ("Shmem", 0), ("CommitLimit", total),
            ("Committed_AS", total - free), ("HugePages_Total", 0)]
    return "".join(_kib_line(name, value) if not name.startswith("Huge")
                   else f"{name + ':':<16}{value:>8}\n" for name, value in rows).encode()


def uptime(proc: Process) -> bytes:
    """``/proc/uptime``: the sandbox's uptime, and its idle time (none:
    its one CPU runs the program)."""
    return f"{uptime_seconds(proc):.2f} 0.00\n".encode()


def loadavg(proc: Process) -> bytes:
    """``/proc/loadavg``: no load history; running/total threads; the last pid."""
    return f"0.00 0.00 0.00 1/{len(proc.threads)} {proc.threads.next_tid - 1}\n".encode()


def system_stat(proc: Process) -> bytes:
    """``/proc/stat``, minimal: one CPU's times, the boot time, one process."""
    user_seconds, system_seconds = cpu_seconds(proc)
    user, system = int(user_seconds * CLOCK_TICKS), int(system_seconds * CLOCK_TICKS)
    up = uptime_seconds(proc)
    idle = max(0, int(up * CLOCK_TICKS) - user - system)
    cpu = f"{user} 0 {system} {idle} 0 0 0 0 0 0"
    boot = int(now_ns(proc, CLOCK_REALTIME) / NSEC_PER_SEC - up)
    each = "".join(f"cpu{number} {cpu}\n" for number in guest_cpus())
    return (f"cpu  {cpu}\n{each}intr 0\nctxt 0\nbtime {boot}\nprocesses 1\n"
            f"procs_running 1\nprocs_blocked 0\nsoftirq 0\n").encode()


def version(proc: Process) -> bytes:
    """``/proc/version``: the kernel uname reports (the host's release; its
    version, or under ``--deterministic`` a fixed one)."""
    host = os.uname()
    built = host.version if proc.determinism is None else KERNEL_VERSION
    return f"Linux version {host.release} (minikvm) {built}\n".encode()
