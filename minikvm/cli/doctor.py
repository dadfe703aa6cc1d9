"""Layer 8 — ``minikvm doctor``: can this machine run minikvm, and what kind
of KVM is it?

The doctor answers three questions, and says what each answer means:

1. **Is KVM usable?**  ``/dev/kvm`` opens, speaks API version 12, and has
   the capabilities minikvm relies on (``KVM_CHECK_EXTENSION``).
2. **What kind of virtualization is behind it?**  Two very different
   machines answer to ``/dev/kvm``:

   * *hardware* virtualization (Intel VMX, AMD SVM): the CPU runs guest
     code of every privilege level natively; ``syscall`` enters the
     guest's ring 0 like on bare metal;
   * *PVM* (the ``kvm_pvm`` module): a guest runs as a process of the host
     kernel without VMX/SVM.  Its CPL 3 code runs natively, its CPL 0 code
     is emulated one instruction at a time, and ``syscall`` stays at
     CPL 3.

   The doctor does not guess from names alone: it boots a probe VM for a
   few milliseconds and *observes* — which CS the syscall stub exits with,
   and how long a short loop takes at CPL 0 against the same loop at
   CPL 3.  /proc/cpuinfo (``vmx``/``svm``) and ``/sys/module`` (which KVM
   modules are loaded) explain what it saw.
3. **Can the host process be confined?**  The Landlock ABI and seccomp,
   the second wall behind minikvm's own policy checks.

Exit status 0 when minikvm can run here, 1 when it cannot (and why).
"""

from __future__ import annotations

import os
import signal
import struct
import sys
import textwrap
import time
from dataclasses import dataclass, field
from typing import Callable, TextIO

from minikvm import ioctl as k
from minikvm.cpu.layout import STACK_TOP
from minikvm.cpu.modes import setup_long_mode
from minikvm.errors import KvmUnavailable, MinikvmError
from minikvm.kvm.exits import HltExit
from minikvm.kvm.memory import GuestMemory
from minikvm.kvm.system import KVM_DEVICE, Kvm
from minikvm.machine.machine import Machine
from minikvm.machine.mm import PROT_EXEC, PROT_READ, PROT_WRITE
from minikvm.sandbox import landlock, seccomp
from minikvm.x86 import PAGE_SIZE, RFLAGS_FIXED, CPUID_ECX_XSAVE, CPUID_FEATURES

CPUINFO = "/proc/cpuinfo"
SYS_MODULE = "/sys/module"
#: The KVM modules whose presence says which flavour serves /dev/kvm.
KVM_MODULES = ("kvm", "kvm_intel", "kvm_amd", "kvm_pvm")

# -- the probe's shape -----------------------------------------------------------
PROBE_MEMORY = 16 << 20          # user pool 8..16 MiB: plenty for three pages
PROBE_CODE = 0x40_0000
PROBE_DATA = 0x60_0000
PROBE_TIMEOUT = 10.0             # seconds; the probe takes milliseconds
CPL0_MEMORY = 0x40_0000          # the CPL 0 probe: 4 MiB, identity-mapped
CPL0_GDT = 0x1000
CPL0_PAGE_TABLES = 0x2000
CPL0_CODE = 0x8000
#: Loop lengths.  CPL 3 runs natively everywhere, so it needs many
#: iterations to rise above the ~µs noise of one exit; CPL 0 costs
#: microseconds an iteration where it is emulated, so it gets few.
CPL3_ITERATIONS = 100_000
CPL0_ITERATIONS = 1_000
REPEATS = 3                      # each timing is the best of this many
ROUND_TRIPS = 100                # syscalls timed for the exit cost
#: A loop iteration (``dec``, ``jnz``) costs about a nanosecond natively.
#: Emulated, it costs microseconds.  Above this many nanoseconds per CPL 0
#: iteration *and* this many times the CPL 3 cost, CPL 0 is emulated.
EMULATED_NS_PER_ITERATION = 100.0
EMULATED_RATIO = 20.0
#: System call numbers the probe guest uses to talk to the doctor (not Linux's).
NR_ECHO, NR_CHECK, NR_ROUND, NR_START, NR_STOP, NR_DONE = 700, 701, 702, 703, 704, 705
ECHO_VALUE = 0x0D0C_7042         # what the host returns; the guest sends it back
LANDLOCK_NET_ABI = 4             # Landlock restricts TCP ports from ABI 4 (Linux 6.7)

REPORT_WIDTH = 88
MEANING_INDENT = " " * 9         # under the topic, past the "[ok  ]" marker

# -- result markers ---------------------------------------------------------------
OK = "ok"
FAIL = "FAIL"   # minikvm cannot run
NOTE = "note"   # works, but something optional is missing
INFO = "info"   # a fact, neither good nor bad


@dataclass
class Finding:
    """One line of the report: what was checked, the answer, what it means."""
    status: str
    topic: str
    answer: str
    meaning: str = ""


@dataclass
class Probe:
    """What the probe VMs showed."""
    syscall_cs: int            # CS selector at the syscall-port exit
    syscall_dpl: int           # its DPL: the CPL the stub's ``out`` ran at
    syscall_returned: bool     # the guest resumed with the value the host gave it
    cpl3_ns: float             # nanoseconds per loop iteration at CPL 3
    cpl0_ns: float             # ... and at CPL 0
    round_trip_us: float       # one syscall: exit, Python handler, re-entry
    dirty_log_works: bool      # KVM_GET_DIRTY_LOG saw the page the guest wrote

    @property
    def cpl0_ratio(self) -> float:
        """How many CPL 3 iterations one CPL 0 iteration costs."""
        return self.cpl0_ns / max(self.cpl3_ns, 0.01)

    @property
    def cpl0_emulated(self) -> bool:
        """Slow in absolute terms *and* against CPL 3: one test alone would
        misjudge a loaded host or the exit noise in a short native run."""
        return (self.cpl0_ns > EMULATED_NS_PER_ITERATION
                and self.cpl0_ratio > EMULATED_RATIO)


@dataclass
class Report:
    """Everything the doctor found, in the order it prints it."""
    sections: list[tuple[str, list[Finding]]] = field(default_factory=list)
    kind: str = "unknown"
    kind_meaning: str = ""

    def add(self, title: str) -> list[Finding]:
        findings: list[Finding] = []
        self.sections.append((title, findings))
        return findings

    @property
    def failures(self) -> list[Finding]:
        return [f for _, findings in self.sections for f in findings if f.status == FAIL]

    @property
    def can_run(self) -> bool:
        return not self.failures


# === 1. KVM and its capabilities ====================================================

@dataclass(frozen=True)
class Capability:
    name: str
    number: int
    why: str
    required: bool


CAPABILITIES = [
    Capability("KVM_CAP_USER_MEMORY", k.KVM_CAP_USER_MEMORY,
               "guest RAM is a memfd minikvm maps itself and hands to KVM", True),
    Capability("KVM_CAP_IMMEDIATE_EXIT", k.KVM_CAP_IMMEDIATE_EXIT,
               "--timeout can stop a running guest without a race", True),
    Capability("KVM_CAP_SET_GUEST_DEBUG", k.KVM_CAP_SET_GUEST_DEBUG,
               "single-stepping a guest, for debugging", False),
    Capability("KVM_CAP_READONLY_MEM", k.KVM_CAP_READONLY_MEM,
               "memory slots the guest cannot write", False),
]
REQUIRED_SYNC_CLASSES = k.KVM_SYNC_X86_REGS | k.KVM_SYNC_X86_SREGS
SYNC_CLASS_NAMES = [("regs", k.KVM_SYNC_X86_REGS), ("sregs", k.KVM_SYNC_X86_SREGS),
                    ("events", k.KVM_SYNC_X86_EVENTS)]


def check_capabilities(kvm: Kvm, findings: list[Finding]) -> None:
    """The KVM_CHECK_EXTENSION answers minikvm depends on."""
    synced = kvm.check_extension(k.KVM_CAP_SYNC_REGS)
    classes = ", ".join(name for name, bit in SYNC_CLASS_NAMES if synced & bit) or "none"
    findings.append(Finding(
        OK if synced & REQUIRED_SYNC_CLASSES == REQUIRED_SYNC_CLASSES else FAIL,
        "KVM_CAP_SYNC_REGS", classes,
        "registers travel in the shared kvm_run page, so a system call costs one "
        "KVM_RUN and no extra ioctl (required: regs and sregs)"))
    for cap in CAPABILITIES:
        answer = kvm.check_extension(cap.number)
        status = OK if answer else (FAIL if cap.required else NOTE)
        findings.append(Finding(status, cap.name, "yes" if answer else "no",
                                cap.why + (" (required)" if cap.required else " (optional)")))
    cpuid = kvm.get_supported_cpuid()
    leaf1 = next((e for e in cpuid.entries[:cpuid.nent] if e.function == CPUID_FEATURES), None)
    has_xsave = bool(leaf1 and leaf1.ecx & CPUID_ECX_XSAVE)
    xsave, xcrs = kvm.check_extension(k.KVM_CAP_XSAVE), kvm.check_extension(k.KVM_CAP_XCRS)
    status = OK if (xsave and xcrs) else (FAIL if has_xsave else NOTE)
    findings.append(Finding(
        status, "KVM_CAP_XSAVE, KVM_CAP_XCRS",
        f"{'yes' if xsave else 'no'}, {'yes' if xcrs else 'no'}",
        "minikvm sets XCR0 so programs may use AVX "
        + ("(required: the guest CPUID offers XSAVE)" if has_xsave else
           "(not needed here: KVM's supported CPUID offers no XSAVE, so guests get SSE only)")))
    slots = kvm.check_extension(k.KVM_CAP_NR_MEMSLOTS)
    findings.append(Finding(OK if slots != 0 else NOTE, "KVM_CAP_NR_MEMSLOTS", str(slots),
                            "minikvm needs one memory slot per machine"))
    protect = kvm.check_extension(k.KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2)
    ring = kvm.check_extension(k.KVM_CAP_DIRTY_LOG_RING)
    findings.append(Finding(INFO, "dirty-log extensions",
                            f"KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 = {protect}, "
                            f"KVM_CAP_DIRTY_LOG_RING = {ring}",
                            "faster ways to collect written pages; minikvm uses the basic "
                            "KVM_GET_DIRTY_LOG, which has no capability (see the probe below)"))


# === 2. what kind of virtualization ====================================================

def cpu_flags(path: str = CPUINFO) -> set[str]:
    """The ``flags`` of the first CPU in /proc/cpuinfo (empty if unreadable)."""
    try:
        with open(path) as cpuinfo:
            for line in cpuinfo:
                if line.startswith("flags"):
                    return set(line.partition(":")[2].split())
    except OSError:
        pass
    return set()


def loaded_modules(root: str = SYS_MODULE) -> set[str]:
    """Which of :data:`KVM_MODULES` are loaded (or built in): /sys/module/NAME."""
    return {name for name in KVM_MODULES if os.path.isdir(os.path.join(root, name))}


# The probe guest, hand-assembled (objdump's spelling beside each encoding).
def _movabs(register: int, value: int) -> bytes:
    return bytes([0x48, 0xB8 + register]) + struct.pack("<Q", value)  # movabs $value,%reg


RAX, RCX, RBX, RDI = 0, 1, 3, 7                # register numbers in the opcode
SYSCALL = bytes([0x0F, 0x05])                  # syscall
INC_QWORD_AT_RAX = bytes([0x48, 0xFF, 0x00])   # incq   (%rax)
MOV_RAX_RDI = bytes([0x48, 0x89, 0xC7])        # mov    %rax,%rdi
DEC_RCX = bytes([0x48, 0xFF, 0xC9])            # dec    %rcx
DEC_RBX = bytes([0x48, 0xFF, 0xCB])            # dec    %rbx
HLT = bytes([0xF4])                            # hlt
JNZ_REL8 = 0x75                                # jne    rel8


def _jnz_back(code: bytes, target: int) -> bytes:
    """``jne target`` appended at the end of *code*."""
    return bytes([JNZ_REL8, (target - (len(code) + 2)) & 0xFF])


def _call(number: int) -> bytes:
    return _movabs(RAX, number) + SYSCALL


def _timed_loop(iterations: int, end: bytes) -> bytes:
    """``mov $n,%rcx; 1: dec %rcx; jnz 1b`` followed by *end*."""
    code = _movabs(RCX, iterations)
    top = len(code)
    code += DEC_RCX
    return code + _jnz_back(code, top) + end


def probe_program() -> bytes:
    """The CPL 3 probe: dirty a page, one echoed syscall, ROUND_TRIPS timed
    syscalls, then the CPL 3 loop (1 iteration and CPL3_ITERATIONS, each
    REPEATS times) between START and STOP syscalls."""
    code = _movabs(RAX, PROBE_DATA) + INC_QWORD_AT_RAX
    code += _movabs(RDI, 0) + _call(NR_ECHO) + MOV_RAX_RDI + _call(NR_CHECK)
    code += _movabs(RBX, ROUND_TRIPS)
    top = len(code)
    code += _call(NR_ROUND) + DEC_RBX
    code += _jnz_back(code, top)
    for iterations in (1, CPL3_ITERATIONS) * REPEATS:
        code += _call(NR_START) + _timed_loop(iterations, _call(NR_STOP))
    return code + _call(NR_DONE)


class _ProbeDone(Exception):
    """Ends the probe run."""


@dataclass
class UserModeObservations:
    """What the doctor saw while the CPL 3 probe ran."""
    syscall_cs: int = -1
    syscall_dpl: int = -1
    syscall_returned: bool = False
    round_trips: list[float] = field(default_factory=list)   # perf_counter at each
    timings: dict[int, float] = field(default_factory=dict)  # iterations -> best seconds
    dirty_log_works: bool = False


def probe_user_mode(kvm: Kvm) -> UserModeObservations:
    """Boot a :class:`~minikvm.machine.machine.Machine` running :func:`probe_program`
    and watch its system calls.  The machine closes *kvm* when done."""
    seen = UserModeObservations()
    started = [0.0]
    pending = [1, CPL3_ITERATIONS] * REPEATS  # the loop lengths, in program order
    try:
        machine = Machine(PROBE_MEMORY, kvm=kvm, dirty_logging=True)
    except BaseException:
        kvm.close()  # (once built, the machine owns it)
        raise
    with machine:
        mm = machine.mm
        mm.map(PROBE_CODE, PAGE_SIZE, PROT_READ | PROT_EXEC, "probe")
        machine.memory.write(mm.find(PROBE_CODE).physical(PROBE_CODE), probe_program())
        mm.map(PROBE_DATA, PAGE_SIZE, PROT_READ | PROT_WRITE, "data")
        mm.map(STACK_TOP - PAGE_SIZE, PAGE_SIZE, PROT_READ | PROT_WRITE, "[stack]")
        machine.set_entry(PROBE_CODE, STACK_TOP)
        machine.take_dirty_log()  # start from a clean log: only the run's writes count

        def on_syscall(regs: k.kvm_regs) -> None:
            number = regs.rax
            if number == NR_ECHO:
                # (read through the vCPU each time: a view kept past the run
                # would pin the kvm_run mapping and make closing the vCPU fail)
                cs = machine.vcpu.synced_sregs.cs
                seen.syscall_cs, seen.syscall_dpl = cs.selector, cs.dpl
                regs.rax = ECHO_VALUE
            elif number == NR_CHECK:
                seen.syscall_returned = regs.rdi == ECHO_VALUE
            elif number == NR_ROUND:
                seen.round_trips.append(time.perf_counter())
            elif number == NR_START:
                started[0] = time.perf_counter()
            elif number == NR_STOP:
                elapsed = time.perf_counter() - started[0]
                iterations = pending.pop(0)
                seen.timings[iterations] = min(seen.timings.get(iterations, elapsed), elapsed)
            elif number == NR_DONE:
                raise _ProbeDone
            else:
                raise MinikvmError(f"the probe guest made an unexpected system call {number}")

        try:
            stop = machine.run(on_syscall, timeout=PROBE_TIMEOUT)
            raise MinikvmError(f"the probe guest stopped early: {stop.message}")
        except _ProbeDone:
            pass
        data_page = mm.find(PROBE_DATA).physical(PROBE_DATA) // PAGE_SIZE
        bitmap = machine.take_dirty_log()
        seen.dirty_log_works = bool(bitmap[data_page // 8] >> (data_page % 8) & 1)
    return seen


def _per_iteration_ns(timings: dict[int, float], iterations: int) -> float:
    """Nanoseconds per iteration: the long run minus the 1-iteration run
    (which holds the same exits and entries), divided out."""
    return max(timings[iterations] - timings[1], 0.0) / (iterations - 1) * 1e9


def probe_kernel_mode(kvm: Kvm) -> float:
    """Nanoseconds per loop iteration at CPL 0, in a small long-mode VM of
    the kind tutorial 06 builds (no user mode at all; ``hlt`` ends it)."""
    timings: dict[int, float] = {}
    with GuestMemory(CPL0_MEMORY) as memory, kvm.create_vm() as vm:
        vm.set_user_memory_region(0, memory)
        vcpu = vm.create_vcpu()
        setup_long_mode(vcpu, memory, CPL0_GDT, CPL0_PAGE_TABLES)
        for iterations in [1] + [1, CPL0_ITERATIONS] * REPEATS:  # the first run warms up
            memory.write(CPL0_CODE, _timed_loop(iterations, HLT))
            vcpu.set_regs(k.kvm_regs(rip=CPL0_CODE, rflags=RFLAGS_FIXED))
            with _deadline(PROBE_TIMEOUT):
                start = time.perf_counter()
                vm_exit = vcpu.run()
                elapsed = time.perf_counter() - start
            if not isinstance(vm_exit, HltExit):
                raise MinikvmError(f"the CPL 0 probe stopped with {vm_exit.name}, "
                                   "expected KVM_EXIT_HLT")
            timings[iterations] = min(timings.get(iterations, elapsed), elapsed)
    return _per_iteration_ns(timings, CPL0_ITERATIONS)


class _deadline:
    """SIGALRM after *seconds*: KVM_RUN then returns (EINTR) instead of
    spinning forever if the probe code is wrong."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def __enter__(self) -> None:
        self.previous = signal.signal(signal.SIGALRM, lambda signum, frame: None)
        signal.setitimer(signal.ITIMER_REAL, self.seconds)

    def __exit__(self, *exc: object) -> None:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, self.previous)


def _median(values: list[float]) -> float:
    """The middle value: one slow round trip (a page fault, a busy host)
    does not move it."""
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


def run_probe(device: str = KVM_DEVICE) -> Probe:
    """Both probe VMs; raises MinikvmError (KvmError included) when one fails."""
    with Kvm(device) as kvm:
        cpl0_ns = probe_kernel_mode(kvm)
    seen = probe_user_mode(Kvm(device))
    rounds = seen.round_trips
    return Probe(syscall_cs=seen.syscall_cs, syscall_dpl=seen.syscall_dpl,
                 syscall_returned=seen.syscall_returned,
                 cpl3_ns=_per_iteration_ns(seen.timings, CPL3_ITERATIONS), cpl0_ns=cpl0_ns,
                 round_trip_us=_median([b - a for a, b in zip(rounds, rounds[1:])]) * 1e6,
                 dirty_log_works=seen.dirty_log_works)


PVM_MEANING = (
    "PVM runs a guest as part of an ordinary host process, without VMX or SVM: guest code "
    "at CPL 3 runs natively, guest code at CPL 0 is emulated one instruction at a time, "
    "and `syscall` does not enter the guest's ring 0. minikvm is built for this: programs "
    "run only at CPL 3; the syscall stub's `out` runs at CPL 3 too, which the TSS I/O "
    "bitmap allows for port 0xE0 and no other; PVM does not emulate `sysretq`, so the "
    "host returns the guest from each system call itself (RIP = RCX, RFLAGS = R11); and "
    "since PVM's shadow page tables do not see the host edit guest page tables, minikvm "
    "re-adds the memory slot whenever it removes or weakens a mapping.")
HARDWARE_MEANING = (
    "The CPU's virtualization extensions run the guest: code of every privilege level "
    "runs natively, `syscall` enters the guest's ring 0 where the stub exits to the host, "
    "and the stub's `sysretq` returns to the program. Exits cost a few microseconds.")


def classify(probe: Probe | None, flags: set[str], modules: set[str]) -> tuple[str, str]:
    """(kind, what it means) from what the probe saw, the CPU flags and the
    loaded modules.  The probe decides; flags and modules name it."""
    if probe is None:
        if "kvm_pvm" in modules:
            return "PVM (kvm_pvm is loaded; the probe did not run)", PVM_MEANING
        return "unknown (the probe did not run)", ""
    if probe.syscall_dpl == 3 or probe.cpl0_emulated:
        if "kvm_pvm" in modules:
            return "PVM (kvm_pvm)", PVM_MEANING
        return ("PVM-like (syscall stays at CPL 3, but no kvm_pvm module was found)",
                PVM_MEANING)
    if "vmx" in flags or "kvm_intel" in modules:
        return "hardware virtualization (Intel VMX)", HARDWARE_MEANING
    if "svm" in flags or "kvm_amd" in modules:
        return "hardware virtualization (AMD SVM)", HARDWARE_MEANING
    return "hardware virtualization", HARDWARE_MEANING


def check_virtualization(device: str, findings: list[Finding], report: Report,
                         cpuinfo: str, sys_module: str,
                         probe: Callable[[str], Probe]) -> None:
    flags = cpu_flags(cpuinfo)
    extensions = [name for name in ("vmx", "svm") if name in flags]
    nested = "hypervisor" in flags
    findings.append(Finding(
        INFO, "CPU flags", (", ".join(extensions) or "no vmx, no svm")
        + ("; hypervisor" if nested else ""),
        ("this CPU offers hardware virtualization" if extensions else
         "this kernel sees no hardware virtualization extensions")
        + ("; the 'hypervisor' flag says this machine is itself a virtual machine"
           if nested else "")))
    modules = loaded_modules(sys_module)
    findings.append(Finding(
        INFO, "KVM modules", ", ".join(sorted(modules)) or "none",
        "kvm_pvm serves /dev/kvm without VMX/SVM" if "kvm_pvm" in modules else
        "kvm_intel or kvm_amd serve /dev/kvm with the CPU's extensions"))
    try:
        result: Probe | None = probe(device)
    except (MinikvmError, OSError) as error:
        result = None
        findings.append(Finding(FAIL, "probe VM", "failed",
                                f"booting a user-mode guest failed: {error}"))
    if result is not None:
        ring = ("stays at CPL 3" if result.syscall_dpl == 3 else
                f"enters ring {result.syscall_dpl}")
        findings.append(Finding(
            OK if result.syscall_returned else FAIL, "syscall",
            f"{ring} (CS = {result.syscall_cs:#x} at the syscall-port exit)",
            ("the host returned the guest from the system call (PVM does not emulate "
             "sysretq)" if result.syscall_dpl == 3 else
             "the stub's sysretq returned the guest to user mode")
            + (" and the guest got the host's return value" if result.syscall_returned else
               ", but the guest did NOT get the host's return value back")))
        findings.append(Finding(
            INFO, "CPL 0 code", "emulated" if result.cpl0_emulated else "native",
            f"a loop iteration costs {result.cpl0_ns:,.1f} ns at CPL 0 and "
            f"{result.cpl3_ns:.2f} ns at CPL 3 (ratio {result.cpl0_ratio:,.0f})"
            + ("; minikvm runs no guest code at CPL 0, so this costs nothing"
               if result.cpl0_emulated else "")))
        findings.append(Finding(
            INFO, "system call round trip", f"{result.round_trip_us:.1f} µs",
            "one exit to Python and back: what each guest system call costs, whatever it does"))
        findings.append(Finding(
            OK if result.dirty_log_works else NOTE, "dirty log",
            "works" if result.dirty_log_works else "did not report the written page",
            "KVM_GET_DIRTY_LOG saw the page the probe wrote: snapshots can find the pages "
            "a run changed (optional)"))
    report.kind, report.kind_meaning = classify(result, flags, modules)


# === 3. confining the host process =========================================================

def check_confinement(findings: list[Finding]) -> None:
    """Landlock and seccomp: the kernel's walls around the minikvm process."""
    abi = landlock.abi_version()
    if abi:
        reach = "paths and TCP ports" if abi >= LANDLOCK_NET_ABI else "paths"
        findings.append(Finding(OK, "Landlock", f"ABI {abi}",
                                f"the kernel can confine the minikvm process itself to the "
                                f"allowed {reach}: a second wall behind minikvm's own checks"))
    else:
        findings.append(Finding(NOTE, "Landlock", landlock.unavailable_reason(),
                                "minikvm still enforces its policy, without the kernel's "
                                "second wall"))
    if seccomp.available():
        findings.append(Finding(OK, "seccomp", "available",
                                "a filter can refuse the minikvm process the system calls "
                                "it never needs"))
    else:
        findings.append(Finding(NOTE, "seccomp", "not available",
                                "the kernel cannot install SECCOMP_RET_KILL_PROCESS filters"))


# === the report ============================================================================

def examine(device: str = KVM_DEVICE, *, cpuinfo: str = CPUINFO, sys_module: str = SYS_MODULE,
            probe: Callable[[str], Probe] = run_probe) -> Report:
    """Run every check; never raises for a property of the machine."""
    report = Report()
    kvm_findings = report.add("KVM")
    try:
        kvm = Kvm(device)
    except KvmUnavailable as error:
        kvm_findings.append(Finding(FAIL, device, "not usable", str(error)))
        return report
    with kvm:
        kvm_findings.append(Finding(OK, device, "usable", "opened for reading and writing"))
        kvm_findings.append(Finding(OK, "KVM_GET_API_VERSION", str(kvm.api_version()),
                                    "the stable KVM API"))
        check_capabilities(kvm, report.add("Capabilities minikvm relies on"))
    if report.can_run:
        check_virtualization(device, report.add("Virtualization"), report, cpuinfo,
                             sys_module, probe)
    check_confinement(report.add("Confining the host process"))
    return report


def format_report(report: Report) -> str:
    """The report as text: a section a topic, each finding with its meaning
    indented below it."""
    lines = ["minikvm doctor: can this machine run minikvm?"]
    for title, findings in report.sections:
        lines += ["", title]
        for finding in findings:
            lines.append(f"  [{finding.status:<4}] {finding.topic}: {finding.answer}")
            if finding.meaning:
                lines += textwrap.wrap(finding.meaning, REPORT_WIDTH,
                                       initial_indent=MEANING_INDENT,
                                       subsequent_indent=MEANING_INDENT)
    if report.kind != "unknown" or report.kind_meaning:
        lines += ["", f"This is {report.kind}."]
        if report.kind_meaning:
            lines += textwrap.wrap(report.kind_meaning, REPORT_WIDTH)
    lines.append("")
    if report.can_run:
        lines.append("minikvm can run here.")
    else:
        lines.append("minikvm cannot run here: "
                     + "; ".join(f"{f.topic}: {f.answer}" for f in report.failures))
    return "\n".join(lines)


def main(device: str = KVM_DEVICE, out: TextIO | None = None) -> int:
    """``minikvm doctor``: print the report; 0 when minikvm can run here."""
    report = examine(device)
    print(format_report(report), file=out or sys.stdout)
    return 0 if report.can_run else 1
