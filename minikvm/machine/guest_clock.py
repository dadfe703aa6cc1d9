"""Layer 3 — the guest's TSC as a clock: how its ticks map to the host's time.

The vDSO (:mod:`minikvm.process.vdso`) reads the time without a VM exit:
``rdtsc`` at CPL 3 runs in the guest (measured on PVM: ~12 ns, no exit, as
natively), and a data page the host writes says which tick corresponds to
which time and how many nanoseconds a tick is.  This module owns that
correspondence, a :class:`ClockLine`::

    monotonic(tsc) = monotonic_base + ((tsc - tsc_base) * mult) >> shift

and the decision, made once per machine, whether the guest can have it at
all (:attr:`GuestClock.mode`).

**The slope** is ``KVM_GET_TSC_KHZ``: the frequency KVM gives the guest's
TSC (the host's, as minikvm never scales it).  Measured here against
``CLOCK_MONOTONIC`` over seconds it is right to ~0.1 ppm.

**The base** pairs a guest TSC value with the host's clocks.  Python cannot
execute ``rdtsc`` itself, so the host reads the guest's TSC with
``KVM_GET_MSRS`` (``IA32_TSC``) between two ``clock_gettime`` calls.  That
ioctl takes ~12 µs on PVM, so one reading brackets the instant only to
±6 µs; :func:`_measure` takes several and intersects the brackets (each
says ``before ≤ base + ticks·slope ≤ after``), which narrows it to the
ioctl's fixed cost, ~±3 µs here.  The midpoint is the base.

**Keeping it current**: the line drifts from the host's clock as the host's
NTP slews it and by the slope's error, so :meth:`GuestClock.refresh` measures
again when asked (the dispatcher asks at a system call once
:data:`REFRESH_INTERVAL_NS` has passed).  A new measurement never moves
``CLOCK_MONOTONIC`` back: the new base is the later of the measurement and
the old line's value at the same tick, as Linux's timekeeping never steps
the monotonic clock back either.  ``CLOCK_REALTIME`` follows the host's
(it may step, as on Linux when the time is set); ``CLOCK_BOOTTIME`` is
monotonic like ``CLOCK_MONOTONIC``.

**When there is no exit-free clock** — KVM cannot report the TSC's
frequency, the CPU's TSC is not invariant (CPUID 0x80000007 EDX bit 8: it
would change rate with power states, or stop), or the caller asks for it
— the mode is :data:`MODE_SYSCALL` and the vDSO makes the real system call.

**Many machines in one host process** (a snapshot's forks) share the
measurement when KVM reports each vCPU's TSC offset (``KVM_VCPU_TSC_OFFSET``):
the host's line is measured once and shifted by the offset.  Where it does
not (PVM), each machine measures its own (~0.2 ms).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from minikvm import x86
from minikvm.errors import KvmError
from minikvm.linux_abi import NSEC_PER_SEC

if TYPE_CHECKING:
    from minikvm.kvm.vcpu import Vcpu

#: The line's fixed-point shift: ``mult`` is ns per tick times 2**32, a
#: 32-bit number for any TSC faster than 1 GHz.  The vDSO multiplies into
#: 128 bits, so no delta is too large for it.
TSC_SHIFT = 32
#: How many bracketed TSC readings one measurement intersects.
CALIBRATION_SAMPLES = 20
#: How old the line may get before the next system call measures it again.
REFRESH_INTERVAL_NS = NSEC_PER_SEC
#: CPUID leaf 0x80000007 ("Advanced Power Management"), EDX bit 8: the TSC
#: runs at a constant rate in every power state (Intel SDM Vol. 3B 18.17.1).
CPUID_POWER_MANAGEMENT = 0x8000_0007
CPUID_EDX_INVARIANT_TSC = 1 << 8

#: The data page's ``mode``: the vDSO reads the TSC (no exit) …
MODE_TSC = "tsc"
#: … or makes the system call (the host offers no exit-free clock).
MODE_SYSCALL = "syscall"


@dataclass(frozen=True)
class ClockLine:
    """The clocks as a function of the guest's TSC: what the data page holds."""
    tsc_base: int          # a guest TSC value
    mult: int              # ns per tick << shift
    shift: int
    monotonic: int         # CLOCK_MONOTONIC at tsc_base, ns
    realtime: int          # CLOCK_REALTIME at tsc_base, ns
    boottime: int          # CLOCK_BOOTTIME at tsc_base, ns

    def elapsed(self, tsc: int) -> int:
        """Nanoseconds from ``tsc_base`` to *tsc*, as the vDSO computes them."""
        return (max(0, tsc - self.tsc_base) * self.mult) >> self.shift

    def shifted(self, ticks: int) -> "ClockLine":
        """The same line for a TSC *ticks* ahead of this one's (another vCPU's offset)."""
        return replace(self, tsc_base=self.tsc_base + ticks)


def mult_for(khz: int) -> int:
    """``mult`` for a TSC of *khz*: ns per tick in 32.32 fixed point."""
    return (NSEC_PER_SEC << TSC_SHIFT) // (khz * 1000)


#: The host TSC's line (offset 0), measured once per host process when KVM
#: tells each vCPU's offset: ``(khz, line)``.
_host_line: tuple[int, ClockLine] | None = None


class GuestClock:
    """The clock line of one vCPU and whether the guest may use it.

    *force_syscall* chooses :data:`MODE_SYSCALL` whatever the host offers
    (``minikvm run --vdso syscall``, and the tests of the fallback)."""

    def __init__(self, vcpu: Vcpu, supported_cpuid: object, *, force_syscall: bool = False) -> None:
        self.vcpu = vcpu
        self.line: ClockLine | None = None
        #: Why the mode is what it is, for ``minikvm doctor`` and the docs.
        self.reason = ""
        self.refresh_due = 0
        self.mode = MODE_SYSCALL
        self.khz = 0
        if force_syscall:
            self.reason = "the exit-free clock was turned off (--vdso syscall)"
            return
        if not _invariant_tsc(supported_cpuid):
            self.reason = ("the CPU's TSC is not invariant (CPUID 0x80000007 EDX bit 8): "
                           "its rate could change, so the vDSO makes system calls")
            return
        try:
            self.khz = vcpu.get_tsc_khz()
        except KvmError as error:
            self.reason = f"KVM cannot say the TSC's frequency ({error}): the vDSO makes system calls"
            return
        if self.khz <= 0:
            self.reason = "KVM reports a TSC frequency of 0: the vDSO makes system calls"
            return
        self.mode = MODE_TSC
        self.reason = f"invariant TSC at {self.khz} kHz, read at CPL 3 without an exit"
        self.line = self._first_line()

    def _first_line(self) -> ClockLine:
        global _host_line
        offset = self.vcpu.get_tsc_offset()
        if offset is not None and _host_line is not None and _host_line[0] == self.khz:
            line = _host_line[1].shifted(offset)
        else:
            line = _measure(self.vcpu, self.khz)
            if offset is not None:
                _host_line = (self.khz, line.shifted(-offset))
        self.refresh_due = time.monotonic_ns() + REFRESH_INTERVAL_NS
        return line

    def read(self) -> tuple[int, int, int] | None:
        """``(MONOTONIC, REALTIME, BOOTTIME)`` as the vDSO would read them at
        this instant (the vCPU's TSC, by one ``KVM_GET_MSRS``); None in
        :data:`MODE_SYSCALL`.  The system calls answer no earlier than this,
        so a program that mixes the vDSO and the system call never sees the
        clock go back: the line may run a few µs ahead of the host's clock,
        since a new measurement never moves it back (see the module docstring)."""
        line = self.line
        if line is None:
            return None
        elapsed = line.elapsed(self.vcpu.get_msrs([x86.MSR_IA32_TSC])[x86.MSR_IA32_TSC])
        return line.monotonic + elapsed, line.realtime + elapsed, line.boottime + elapsed

    def refresh(self) -> ClockLine | None:
        """Measure the line again (see the module docstring); None in
        :data:`MODE_SYSCALL`.  Never moves MONOTONIC or BOOTTIME back."""
        if self.line is None:
            return None
        old = self.line
        new = _measure(self.vcpu, self.khz)
        at_new_base = old.elapsed(new.tsc_base)
        monotonic = max(new.monotonic, old.monotonic + at_new_base)
        boottime = max(new.boottime - new.monotonic + monotonic, old.boottime + at_new_base)
        self.line = replace(new, monotonic=monotonic, boottime=boottime)
        self.refresh_due = time.monotonic_ns() + REFRESH_INTERVAL_NS
        return self.line


def _invariant_tsc(supported_cpuid: object) -> bool:
    entries = supported_cpuid.entries[:supported_cpuid.nent]  # type: ignore[attr-defined]
    for entry in entries:
        if entry.function == CPUID_POWER_MANAGEMENT:
            return bool(entry.edx & CPUID_EDX_INVARIANT_TSC)
    return False


def _measure(vcpu: Vcpu, khz: int) -> ClockLine:
    """Pair a guest TSC value with the host's clocks (see the module docstring)."""
    mult = mult_for(khz)
    monotonic, realtime, boottime = time.CLOCK_MONOTONIC, time.CLOCK_REALTIME, time.CLOCK_BOOTTIME
    clock = time.clock_gettime_ns
    read_tsc = vcpu.get_msrs
    tsc_msr = [x86.MSR_IA32_TSC]
    low, high = -(1 << 63), 1 << 63
    base_tsc = 0
    narrowest = (1 << 63, 0)
    real_offset = boot_offset = 0
    for sample in range(CALIBRATION_SAMPLES):
        before = clock(monotonic)
        tsc = read_tsc(tsc_msr)[x86.MSR_IA32_TSC]
        after = clock(monotonic)
        if sample == 0:
            base_tsc = tsc
            # The other clocks' distance from MONOTONIC, read back to back.
            real_offset = clock(realtime) - clock(monotonic)
            boot_offset = clock(boottime) - clock(monotonic)
        elapsed = ((tsc - base_tsc) * mult) >> TSC_SHIFT
        low, high = max(low, before - elapsed), min(high, after - elapsed)
        if after - before < narrowest[0]:
            narrowest = (after - before, (before + after) // 2 - elapsed)
    # Brackets that do not intersect mean the slope or a clock jumped during
    # the measurement: the narrowest one alone is then the best guess.
    base = (low + high) // 2 if low <= high else narrowest[1]
    return ClockLine(tsc_base=base_tsc, mult=mult, shift=TSC_SHIFT, monotonic=base,
                     realtime=base + real_offset, boottime=base + boot_offset)
