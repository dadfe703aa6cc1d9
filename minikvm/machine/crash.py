"""Layer 3 — crash reports: a guest exception, told the way Linux tells it.

When the program faults, the exception stub exits with the vector and the
host reads the frame the CPU pushed on the IST stack.  This module turns
that into the signal Linux would have sent and a one-line report::

    SIGSEGV: page fault writing 0x0 at rip=0x401136 <main+22>

The signal for each vector follows Linux's ``arch/x86/kernel/traps.c``.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass
from typing import Callable, Optional

from minikvm import x86
from minikvm.machine.stops import signal_status

#: vector -> signal, as arch/x86/kernel/traps.c delivers them to user space
VECTOR_SIGNALS = {
    x86.VECTOR_DE: signal.SIGFPE,
    x86.VECTOR_DB: signal.SIGTRAP,
    x86.VECTOR_BP: signal.SIGTRAP,
    4: signal.SIGSEGV,       # #OF
    5: signal.SIGSEGV,       # #BR
    x86.VECTOR_UD: signal.SIGILL,
    7: signal.SIGSEGV,       # #NM: no FPU (cannot happen with CR0.EM clear)
    10: signal.SIGSEGV,      # #TS
    11: signal.SIGBUS,       # #NP
    12: signal.SIGBUS,       # #SS
    x86.VECTOR_GP: signal.SIGSEGV,
    x86.VECTOR_PF: signal.SIGSEGV,
    16: signal.SIGFPE,       # #MF
    17: signal.SIGBUS,       # #AC
    x86.VECTOR_XM: signal.SIGFPE,
}

Symbolizer = Callable[[int], Optional[str]]


@dataclass
class ExceptionFrame:
    """What the CPU pushed, plus CR2, for one exception taken from the guest."""
    vector: int
    error_code: int
    rip: int
    cs: int
    rflags: int
    rsp: int
    ss: int
    cr2: int = 0

    @property
    def from_user_mode(self) -> bool:
        """True when the exception interrupted CPL 3 code."""
        return self.cs & 3 == 3


@dataclass
class CrashReport:
    """The guest's death, ready to print."""
    signal: signal.Signals
    what: str
    frame: ExceptionFrame
    symbol: str | None = None

    @property
    def exit_status(self) -> int:
        """What a shell reports for a process killed by this signal."""
        return signal_status(self.signal)

    def one_line(self) -> str:
        """``SIGSEGV: page fault writing 0x0 at rip=0x401136 <main+22>``"""
        where = f"rip={self.frame.rip:#x}"
        if self.symbol:
            where += f" <{self.symbol}>"
        return f"{self.signal.name}: {self.what} at {where}"


def describe_exception(frame: ExceptionFrame, symbolize: Symbolizer | None = None) -> CrashReport:
    """Name the exception and pick Linux's signal for it."""
    short, long = x86.EXCEPTION_NAMES.get(frame.vector, (f"#{frame.vector}", "exception"))
    sig = VECTOR_SIGNALS.get(frame.vector, signal.SIGSEGV)
    if frame.vector == x86.VECTOR_PF:
        what = _page_fault_words(frame.error_code, frame.cr2)
    elif frame.vector == x86.VECTOR_GP and frame.error_code & IDT_ERROR_CODE_BIT:
        # The IDT refused an ``int n`` from user mode: int3 is a breakpoint,
        # anything else (int 0x80 …) is a general protection fault, as in Linux.
        vector = frame.error_code >> 3
        if vector == x86.VECTOR_BP:
            sig, what = signal.SIGTRAP, "breakpoint (int3)"
        else:
            what = f"general protection fault (int {vector:#x} is not allowed)"
    elif frame.vector == x86.VECTOR_GP:
        what = "general protection fault"
        if frame.error_code:
            what += f" (error code {frame.error_code:#x})"
    else:
        what = f"{long} ({short})"
    symbol = symbolize(frame.rip) if symbolize else None
    return CrashReport(sig, what, frame, symbol)


IDT_ERROR_CODE_BIT = 1 << 1  # a selector error code that names an IDT vector


def _page_fault_words(error_code: int, address: int) -> str:
    if error_code & x86.PF_FETCH:
        access = "executing"
    elif error_code & x86.PF_WRITE:
        access = "writing"
    else:
        access = "reading"
    if not error_code & x86.PF_PRESENT:
        cause = "page fault"
    elif error_code & x86.PF_RSVD:
        cause = "page fault (reserved bit set)"
    else:
        cause = "protection fault"
    return f"{cause} {access} {address:#x}"


def register_dump(regs: object) -> str:
    """The registers of a crashed guest, four to a line (for ``--verbose``)."""
    names = ["rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp", "r8", "r9", "r10",
             "r11", "r12", "r13", "r14", "r15", "rip", "rflags"]
    cells = [f"{name:>6}={getattr(regs, name):016x}" for name in names]
    return "\n".join("  ".join(cells[i:i + 4]) for i in range(0, len(cells), 4))
