"""Layer 0 — the kernel mirror: every KVM ioctl number and struct minikvm uses.

This module mirrors ``<linux/kvm.h>`` and ``<asm/kvm.h>`` (x86-64) *verbatim*:
struct names, field names, field order and padding are the kernel's, so a
reader can grep the header for any name used here.  Nothing in this module
talks to ``/dev/kvm``; it only describes the binary interface.

Ioctl numbers are *computed* the way ``<asm-generic/ioctl.h>`` computes them,
from a direction, the ``KVMIO`` type byte, a number and the size of the
argument struct.  ``tests/test_ioctl_abi.py`` compiles a C program against the
installed headers and checks every number, struct size and field offset here.

The ioctls are grouped by the file descriptor they are issued on:

* system ioctls — on the ``/dev/kvm`` fd;
* VM ioctls     — on the fd returned by ``KVM_CREATE_VM``;
* vCPU ioctls   — on the fd returned by ``KVM_CREATE_VCPU``.
"""

from __future__ import annotations

import ctypes
import functools

__all__ = []  # filled at the bottom: every kernel name defined here

u8 = ctypes.c_uint8
u16 = ctypes.c_uint16
u32 = ctypes.c_uint32
u64 = ctypes.c_uint64

# ---------------------------------------------------------------------------
# <asm-generic/ioctl.h>: how an ioctl number is built.
#
#   31 30 29              16 15         8 7          0
#  +-----+------------------+------------+------------+
#  | dir |   size (14 bits) | type (8)   |  nr (8)    |
#  +-----+------------------+------------+------------+
#
# ``dir`` says which way the argument travels, seen from user space:
# _IOC_WRITE means user space writes it to the kernel, _IOC_READ the kernel
# writes it back.
# ---------------------------------------------------------------------------
_IOC_NRBITS = 8
_IOC_TYPEBITS = 8
_IOC_SIZEBITS = 14
_IOC_DIRBITS = 2

_IOC_NRSHIFT = 0
_IOC_TYPESHIFT = _IOC_NRSHIFT + _IOC_NRBITS
_IOC_SIZESHIFT = _IOC_TYPESHIFT + _IOC_TYPEBITS
_IOC_DIRSHIFT = _IOC_SIZESHIFT + _IOC_SIZEBITS

_IOC_NONE = 0
_IOC_WRITE = 1
_IOC_READ = 2


def _IOC(direction: int, type_: int, nr: int, size: int) -> int:
    """Pack the four fields of an ioctl number (asm-generic/ioctl.h ``_IOC``)."""
    if size >= 1 << _IOC_SIZEBITS:
        raise ValueError(f"ioctl argument of {size} bytes does not fit in {_IOC_SIZEBITS} bits")
    return ((direction << _IOC_DIRSHIFT) | (type_ << _IOC_TYPESHIFT)
            | (nr << _IOC_NRSHIFT) | (size << _IOC_SIZESHIFT))


def _IO(type_: int, nr: int) -> int:
    """An ioctl with no argument struct (the argument, if any, is an int)."""
    return _IOC(_IOC_NONE, type_, nr, 0)


def _IOR(type_: int, nr: int, struct: type) -> int:
    """An ioctl whose struct the kernel writes (user space reads it)."""
    return _IOC(_IOC_READ, type_, nr, ctypes.sizeof(struct))


def _IOW(type_: int, nr: int, struct: type) -> int:
    """An ioctl whose struct user space writes (the kernel reads it)."""
    return _IOC(_IOC_WRITE, type_, nr, ctypes.sizeof(struct))


def _IOWR(type_: int, nr: int, struct: type) -> int:
    """An ioctl whose struct travels both ways."""
    return _IOC(_IOC_READ | _IOC_WRITE, type_, nr, ctypes.sizeof(struct))


KVMIO = 0xAE  # the type byte of every KVM ioctl (linux/kvm.h)
KVM_API_VERSION = 12  # the only API version there has ever been since 2.6.22


# ---------------------------------------------------------------------------
# Structs (asm/kvm.h, x86-64).  ctypes gives them C layout and natural
# alignment, exactly like the compiler does for the header.
# ---------------------------------------------------------------------------
class kvm_userspace_memory_region(ctypes.Structure):
    """A memory slot: guest-physical range backed by host virtual memory."""
    _fields_ = [
        ("slot", u32),
        ("flags", u32),
        ("guest_phys_addr", u64),
        ("memory_size", u64),  # bytes
        ("userspace_addr", u64),  # start of the host mapping
    ]


class kvm_regs(ctypes.Structure):
    """General-purpose registers, RIP and RFLAGS (KVM_GET_REGS / KVM_SET_REGS)."""
    _fields_ = [(name, u64) for name in (
        "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp",
        "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15",
        "rip", "rflags")]


class kvm_segment(ctypes.Structure):
    """A segment register with its hidden descriptor cache, unpacked."""
    _fields_ = [
        ("base", u64),
        ("limit", u32),
        ("selector", u16),
        ("type", u8),
        ("present", u8),
        ("dpl", u8),
        ("db", u8),
        ("s", u8),
        ("l", u8),
        ("g", u8),
        ("avl", u8),
        ("unusable", u8),
        ("padding", u8),
    ]


class kvm_dtable(ctypes.Structure):
    """A descriptor-table register (GDTR, IDTR): base and limit."""
    _fields_ = [
        ("base", u64),
        ("limit", u16),
        ("padding", u16 * 3),
    ]


KVM_NR_INTERRUPTS = 256


class kvm_sregs(ctypes.Structure):
    """Segment, control and descriptor-table registers (KVM_GET_SREGS)."""
    _fields_ = [
        ("cs", kvm_segment), ("ds", kvm_segment), ("es", kvm_segment),
        ("fs", kvm_segment), ("gs", kvm_segment), ("ss", kvm_segment),
        ("tr", kvm_segment), ("ldt", kvm_segment),
        ("gdt", kvm_dtable), ("idt", kvm_dtable),
        ("cr0", u64), ("cr2", u64), ("cr3", u64), ("cr4", u64), ("cr8", u64),
        ("efer", u64),
        ("apic_base", u64),
        ("interrupt_bitmap", u64 * ((KVM_NR_INTERRUPTS + 63) // 64)),
    ]


class kvm_fpu(ctypes.Structure):
    """x87/SSE state in FXSAVE format (KVM_GET_FPU / KVM_SET_FPU)."""
    _fields_ = [
        ("fpr", (u8 * 16) * 8),
        ("fcw", u16),
        ("fsw", u16),
        ("ftwx", u8),  # abridged tag word, as FXSAVE stores it
        ("pad1", u8),
        ("last_opcode", u16),
        ("last_ip", u64),
        ("last_dp", u64),
        ("xmm", (u8 * 16) * 16),
        ("mxcsr", u32),
        ("pad2", u32),
    ]


class kvm_msr_entry(ctypes.Structure):
    """One model-specific register: its index and 64-bit value."""
    _fields_ = [
        ("index", u32),
        ("reserved", u32),
        ("data", u64),
    ]


class kvm_msrs(ctypes.Structure):
    """Header of a variable-length MSR list; ``entries[]`` follow it.

    The kernel declares ``entries`` as a flexible array, so the ioctl number
    encodes only this 8-byte header.  Use :func:`kvm_msrs_with` for a
    buffer that really holds *n* entries.
    """
    _fields_ = [
        ("nmsrs", u32),
        ("pad", u32),
    ]


class kvm_msr_list(ctypes.Structure):
    """Header of the list returned by KVM_GET_MSR_INDEX_LIST; ``indices[]`` follow."""
    _fields_ = [("nmsrs", u32)]


class kvm_cpuid_entry2(ctypes.Structure):
    """One CPUID leaf (function, sub-leaf index) and the four registers it returns."""
    _fields_ = [
        ("function", u32),
        ("index", u32),
        ("flags", u32),
        ("eax", u32),
        ("ebx", u32),
        ("ecx", u32),
        ("edx", u32),
        ("padding", u32 * 3),
    ]


class kvm_cpuid2(ctypes.Structure):
    """Header of a variable-length CPUID table; ``entries[]`` follow it.

    As with :class:`kvm_msrs`, the ioctl number encodes the 8-byte header
    only; :func:`kvm_cpuid2_with` builds a buffer with room for entries.
    """
    _fields_ = [
        ("nent", u32),
        ("padding", u32),
    ]


KVM_MAX_XCRS = 16


class kvm_xcr(ctypes.Structure):
    """One extended control register (XCR0 is the only one in use)."""
    _fields_ = [
        ("xcr", u32),
        ("reserved", u32),
        ("value", u64),
    ]


class kvm_device_attr(ctypes.Structure):
    """Argument of KVM_GET_DEVICE_ATTR: one attribute of a device or vCPU,
    read into the u64 at ``addr`` (e.g. the vCPU's TSC offset)."""
    _fields_ = [
        ("flags", u32),
        ("group", u32),
        ("attr", u64),
        ("addr", u64),
    ]


class kvm_xcrs(ctypes.Structure):
    """The extended control registers (KVM_GET_XCRS / KVM_SET_XCRS)."""
    _fields_ = [
        ("nr_xcrs", u32),
        ("flags", u32),
        ("xcrs", kvm_xcr * KVM_MAX_XCRS),
        ("padding", u64 * 16),
    ]


class kvm_xsave(ctypes.Structure):
    """The XSAVE area, 4 KiB (KVM_GET_XSAVE / KVM_SET_XSAVE)."""
    _fields_ = [("region", u32 * 1024)]


class kvm_debug_exit_arch(ctypes.Structure):
    """What a KVM_EXIT_DEBUG reports on x86: the exception and debug registers."""
    _fields_ = [
        ("exception", u32),
        ("pad", u32),
        ("pc", u64),
        ("dr6", u64),
        ("dr7", u64),
    ]


class kvm_guest_debug_arch(ctypes.Structure):
    """The x86 debug registers DR0–DR7 to install for KVM_SET_GUEST_DEBUG."""
    _fields_ = [("debugreg", u64 * 8)]


class kvm_guest_debug(ctypes.Structure):
    """Argument of KVM_SET_GUEST_DEBUG: single-step and breakpoints."""
    _fields_ = [
        ("control", u32),
        ("pad", u32),
        ("arch", kvm_guest_debug_arch),
    ]


class kvm_dirty_log(ctypes.Structure):
    """Argument of KVM_GET_DIRTY_LOG: a slot and a host bitmap, one bit a page."""
    _fields_ = [
        ("slot", u32),
        ("padding1", u32),
        ("dirty_bitmap", u64),  # a ``void *`` in a union with __u64 padding2
    ]


class kvm_clear_dirty_log(ctypes.Structure):
    """Argument of KVM_CLEAR_DIRTY_LOG: write-protect again the pages whose
    bits are set in the bitmap, from *first_page* (a multiple of 64) for
    *num_pages* (a multiple of 64, or up to the slot's end)."""
    _fields_ = [
        ("slot", u32),
        ("num_pages", u32),
        ("first_page", u64),
        ("dirty_bitmap", u64),  # a ``void *`` in a union with __u64 padding2
    ]


class kvm_enable_cap(ctypes.Structure):
    """Argument of KVM_ENABLE_CAP: a capability and up to four arguments."""
    _fields_ = [
        ("cap", u32),
        ("flags", u32),
        ("args", u64 * 4),
        ("pad", u8 * 64),
    ]


class kvm_translation(ctypes.Structure):
    """Argument of KVM_TRANSLATE: guest-linear in, guest-physical out."""
    _fields_ = [
        ("linear_address", u64),
        ("physical_address", u64),
        ("valid", u8),
        ("writeable", u8),
        ("usermode", u8),
        ("pad", u8 * 5),
    ]


class _kvm_vcpu_events_exception(ctypes.Structure):
    _fields_ = [("injected", u8), ("nr", u8), ("has_error_code", u8),
                ("pending", u8), ("error_code", u32)]


class _kvm_vcpu_events_interrupt(ctypes.Structure):
    _fields_ = [("injected", u8), ("nr", u8), ("soft", u8), ("shadow", u8)]


class _kvm_vcpu_events_nmi(ctypes.Structure):
    _fields_ = [("injected", u8), ("pending", u8), ("masked", u8), ("pad", u8)]


class _kvm_vcpu_events_smi(ctypes.Structure):
    _fields_ = [("smm", u8), ("pending", u8), ("smm_inside_nmi", u8),
                ("latched_init", u8)]


class _kvm_vcpu_events_triple_fault(ctypes.Structure):
    _fields_ = [("pending", u8)]


class kvm_vcpu_events(ctypes.Structure):
    """Pending exceptions, interrupts and NMIs (KVM_GET_VCPU_EVENTS)."""
    _fields_ = [
        ("exception", _kvm_vcpu_events_exception),
        ("interrupt", _kvm_vcpu_events_interrupt),
        ("nmi", _kvm_vcpu_events_nmi),
        ("sipi_vector", u32),
        ("flags", u32),
        ("smi", _kvm_vcpu_events_smi),
        ("triple_fault", _kvm_vcpu_events_triple_fault),
        ("reserved", u8 * 26),
        ("exception_has_payload", u8),
        ("exception_payload", u64),
    ]


class kvm_sync_regs(ctypes.Structure):
    """Registers shared through ``kvm_run`` with KVM_CAP_SYNC_REGS.

    When a class is set in ``kvm_run.kvm_valid_regs`` the kernel copies it
    here on every exit; when set in ``kvm_run.kvm_dirty_regs`` it copies it
    back in on the next KVM_RUN.  No extra ioctl either way.
    """
    _fields_ = [
        ("regs", kvm_regs),
        ("sregs", kvm_sregs),
        ("events", kvm_vcpu_events),
    ]


KVM_SYNC_X86_REGS = 1 << 0
KVM_SYNC_X86_SREGS = 1 << 1
KVM_SYNC_X86_EVENTS = 1 << 2
KVM_SYNC_X86_VALID_FIELDS = KVM_SYNC_X86_REGS | KVM_SYNC_X86_SREGS | KVM_SYNC_X86_EVENTS
SYNC_REGS_SIZE_BYTES = 2048


# --- the exit union of kvm_run (linux/kvm.h), one struct per exit reason ---
class kvm_run_hw(ctypes.Structure):
    """KVM_EXIT_UNKNOWN: the hardware's own exit reason."""
    _fields_ = [("hardware_exit_reason", u64)]


class kvm_run_fail_entry(ctypes.Structure):
    """KVM_EXIT_FAIL_ENTRY: VM entry failed; the hardware's reason code."""
    _fields_ = [("hardware_entry_failure_reason", u64), ("cpu", u32)]


class kvm_run_ex(ctypes.Structure):
    """KVM_EXIT_EXCEPTION: an exception KVM could not handle."""
    _fields_ = [("exception", u32), ("error_code", u32)]


KVM_EXIT_IO_IN = 0
KVM_EXIT_IO_OUT = 1


class kvm_run_io(ctypes.Structure):
    """KVM_EXIT_IO: port I/O; the data lives at ``kvm_run + data_offset``."""
    _fields_ = [
        ("direction", u8),
        ("size", u8),  # bytes per transfer
        ("port", u16),
        ("count", u32),
        ("data_offset", u64),  # relative to the start of kvm_run
    ]


class kvm_run_debug(ctypes.Structure):
    """KVM_EXIT_DEBUG: a breakpoint or single step."""
    _fields_ = [("arch", kvm_debug_exit_arch)]


class kvm_run_mmio(ctypes.Structure):
    """KVM_EXIT_MMIO: an access to guest-physical memory no slot backs."""
    _fields_ = [
        ("phys_addr", u64),
        ("data", u8 * 8),
        ("len", u32),
        ("is_write", u8),
    ]


class kvm_run_hypercall(ctypes.Structure):
    """KVM_EXIT_HYPERCALL: a hypercall forwarded to user space."""
    _fields_ = [
        ("nr", u64),
        ("args", u64 * 6),
        ("ret", u64),
        ("longmode", u32),
        ("pad", u32),
    ]


class kvm_run_tpr_access(ctypes.Structure):
    """KVM_EXIT_TPR_ACCESS: an access to the APIC task-priority register."""
    _fields_ = [("rip", u64), ("is_write", u32), ("pad", u32)]


KVM_INTERNAL_ERROR_EMULATION = 1
KVM_INTERNAL_ERROR_SIMUL_EX = 2
KVM_INTERNAL_ERROR_DELIVERY_EV = 3
KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON = 4


class kvm_run_internal(ctypes.Structure):
    """KVM_EXIT_INTERNAL_ERROR: KVM itself gave up (``suberror`` says why)."""
    _fields_ = [
        ("suberror", u32),
        ("ndata", u32),
        ("data", u64 * 16),
    ]


KVM_SYSTEM_EVENT_SHUTDOWN = 1
KVM_SYSTEM_EVENT_RESET = 2
KVM_SYSTEM_EVENT_CRASH = 3
KVM_SYSTEM_EVENT_WAKEUP = 4
KVM_SYSTEM_EVENT_SUSPEND = 5
KVM_SYSTEM_EVENT_SEV_TERM = 6


class kvm_run_system_event(ctypes.Structure):
    """KVM_EXIT_SYSTEM_EVENT: the guest asked for shutdown, reset, …"""
    _fields_ = [
        ("type", u32),
        ("ndata", u32),
        ("data", u64 * 16),  # in a union with ``__u64 flags``
    ]


class kvm_run_msr(ctypes.Structure):
    """KVM_EXIT_X86_RDMSR / KVM_EXIT_X86_WRMSR: an MSR access for user space."""
    _fields_ = [
        ("error", u8),
        ("pad", u8 * 7),
        ("reason", u32),
        ("index", u32),
        ("data", u64),
    ]


class kvm_run_notify(ctypes.Structure):
    """KVM_EXIT_NOTIFY: the guest stayed too long in a non-exiting state."""
    _fields_ = [("flags", u32)]


class kvm_run_exit(ctypes.Union):
    """The anonymous union of ``kvm_run``: which member is valid depends on
    ``exit_reason``.  ``padding`` fixes its size at 256 bytes."""
    _fields_ = [
        ("hw", kvm_run_hw),
        ("fail_entry", kvm_run_fail_entry),
        ("ex", kvm_run_ex),
        ("io", kvm_run_io),
        ("debug", kvm_run_debug),
        ("mmio", kvm_run_mmio),
        ("hypercall", kvm_run_hypercall),
        ("tpr_access", kvm_run_tpr_access),
        ("internal", kvm_run_internal),
        ("system_event", kvm_run_system_event),
        ("msr", kvm_run_msr),
        ("notify", kvm_run_notify),
        ("padding", ctypes.c_char * 256),
    ]


class kvm_run_s(ctypes.Union):
    """The sync-regs area of ``kvm_run``, padded to SYNC_REGS_SIZE_BYTES."""
    _fields_ = [
        ("regs", kvm_sync_regs),
        ("padding", ctypes.c_char * SYNC_REGS_SIZE_BYTES),
    ]


class kvm_run(ctypes.Structure):
    """The page shared by the kernel and user space for one vCPU.

    It is ``mmap``'d from the vCPU fd.  After KVM_RUN returns,
    ``exit_reason`` says why the guest stopped and the union says the
    details; ``immediate_exit`` lets a signal handler stop the next
    KVM_RUN before it enters the guest.
    """
    _anonymous_ = ("u",)
    _fields_ = [
        ("request_interrupt_window", u8),
        ("immediate_exit", u8),
        ("padding1", u8 * 6),
        ("exit_reason", u32),
        ("ready_for_interrupt_injection", u8),
        ("if_flag", u8),
        ("flags", u16),
        ("cr8", u64),
        ("apic_base", u64),
        ("u", kvm_run_exit),
        ("kvm_valid_regs", u64),
        ("kvm_dirty_regs", u64),
        ("s", kvm_run_s),
    ]


# ---------------------------------------------------------------------------
# Constants (linux/kvm.h).
# ---------------------------------------------------------------------------
# Why KVM_RUN returned: kvm_run.exit_reason
KVM_EXIT_UNKNOWN = 0
KVM_EXIT_EXCEPTION = 1
KVM_EXIT_IO = 2
KVM_EXIT_HYPERCALL = 3
KVM_EXIT_DEBUG = 4
KVM_EXIT_HLT = 5
KVM_EXIT_MMIO = 6
KVM_EXIT_IRQ_WINDOW_OPEN = 7
KVM_EXIT_SHUTDOWN = 8
KVM_EXIT_FAIL_ENTRY = 9
KVM_EXIT_INTR = 10
KVM_EXIT_SET_TPR = 11
KVM_EXIT_TPR_ACCESS = 12
KVM_EXIT_NMI = 16
KVM_EXIT_INTERNAL_ERROR = 17
KVM_EXIT_WATCHDOG = 21
KVM_EXIT_EPR = 23
KVM_EXIT_SYSTEM_EVENT = 24
KVM_EXIT_IOAPIC_EOI = 26
KVM_EXIT_HYPERV = 27
KVM_EXIT_X86_RDMSR = 29
KVM_EXIT_X86_WRMSR = 30
KVM_EXIT_DIRTY_RING_FULL = 31
KVM_EXIT_AP_RESET_HOLD = 32
KVM_EXIT_X86_BUS_LOCK = 33
KVM_EXIT_XEN = 34
KVM_EXIT_NOTIFY = 37

# Memory-slot flags: kvm_userspace_memory_region.flags
KVM_MEM_LOG_DIRTY_PAGES = 1 << 0
KVM_MEM_READONLY = 1 << 1

# Capabilities, asked with KVM_CHECK_EXTENSION
KVM_CAP_HLT = 1
KVM_CAP_USER_MEMORY = 3
KVM_CAP_SET_TSS_ADDR = 4
KVM_CAP_EXT_CPUID = 7
KVM_CAP_NR_VCPUS = 9
KVM_CAP_NR_MEMSLOTS = 10
KVM_CAP_MP_STATE = 14
KVM_CAP_SET_GUEST_DEBUG = 23
KVM_CAP_ADJUST_CLOCK = 39
KVM_CAP_VCPU_EVENTS = 41
KVM_CAP_DEBUGREGS = 50
KVM_CAP_XSAVE = 55
KVM_CAP_XCRS = 56
KVM_CAP_TSC_CONTROL = 60
KVM_CAP_GET_TSC_KHZ = 61
KVM_CAP_MAX_VCPUS = 66
KVM_CAP_SYNC_REGS = 74
KVM_CAP_READONLY_MEM = 81
KVM_CAP_IMMEDIATE_EXIT = 136
KVM_CAP_X86_DISABLE_EXITS = 143
KVM_CAP_GET_MSR_FEATURES = 153
KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 = 168
#: KVM_ENABLE_CAP(KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2) argument: KVM_GET_DIRTY_LOG
#: no longer clears the bitmap nor write-protects the pages it reports;
#: KVM_CLEAR_DIRTY_LOG does, for the pages the caller names.
KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE = 1 << 0
KVM_CAP_DIRTY_LOG_RING = 192
KVM_CAP_EXIT_HYPERCALL = 201
KVM_CAP_XSAVE2 = 208

# KVM_SET_GUEST_DEBUG control bits
KVM_GUESTDBG_ENABLE = 0x00000001
KVM_GUESTDBG_SINGLESTEP = 0x00000002
KVM_GUESTDBG_USE_SW_BP = 0x00010000
KVM_GUESTDBG_USE_HW_BP = 0x00020000

# vCPU attributes (arch/x86/include/uapi/asm/kvm.h)
KVM_VCPU_TSC_CTRL = 0      # the group of the TSC's attributes
KVM_VCPU_TSC_OFFSET = 0    # guest TSC = host TSC + this offset (a u64, two's complement)

# kvm_cpuid_entry2.flags
KVM_CPUID_FLAG_SIGNIFCANT_INDEX = 1 << 0  # sic: the kernel's spelling


# ---------------------------------------------------------------------------
# Ioctl numbers, grouped by the fd they are issued on.
# ---------------------------------------------------------------------------
# System ioctls: on the /dev/kvm fd.
KVM_GET_API_VERSION = _IO(KVMIO, 0x00)
KVM_CREATE_VM = _IO(KVMIO, 0x01)                               # returns a VM fd
KVM_GET_MSR_INDEX_LIST = _IOWR(KVMIO, 0x02, kvm_msr_list)
KVM_CHECK_EXTENSION = _IO(KVMIO, 0x03)                         # also on a VM fd
KVM_GET_VCPU_MMAP_SIZE = _IO(KVMIO, 0x04)                      # in bytes
KVM_GET_SUPPORTED_CPUID = _IOWR(KVMIO, 0x05, kvm_cpuid2)       # KVM_CAP_EXT_CPUID

# VM ioctls: on the fd KVM_CREATE_VM returned.
KVM_CREATE_VCPU = _IO(KVMIO, 0x41)                             # returns a vCPU fd
KVM_GET_DIRTY_LOG = _IOW(KVMIO, 0x42, kvm_dirty_log)
KVM_CLEAR_DIRTY_LOG = _IOWR(KVMIO, 0xC0, kvm_clear_dirty_log)
KVM_SET_USER_MEMORY_REGION = _IOW(KVMIO, 0x46, kvm_userspace_memory_region)  # KVM_CAP_USER_MEMORY
KVM_SET_TSS_ADDR = _IO(KVMIO, 0x47)                            # KVM_CAP_SET_TSS_ADDR
KVM_SET_IDENTITY_MAP_ADDR = _IOW(KVMIO, 0x48, u64)             # KVM_CAP_SET_IDENTITY_MAP_ADDR
KVM_ENABLE_CAP = _IOW(KVMIO, 0xA3, kvm_enable_cap)             # also on a vCPU fd

# vCPU ioctls: on the fd KVM_CREATE_VCPU returned.
KVM_RUN = _IO(KVMIO, 0x80)
KVM_GET_REGS = _IOR(KVMIO, 0x81, kvm_regs)
KVM_SET_REGS = _IOW(KVMIO, 0x82, kvm_regs)
KVM_GET_SREGS = _IOR(KVMIO, 0x83, kvm_sregs)
KVM_SET_SREGS = _IOW(KVMIO, 0x84, kvm_sregs)
KVM_TRANSLATE = _IOWR(KVMIO, 0x85, kvm_translation)
KVM_GET_MSRS = _IOWR(KVMIO, 0x88, kvm_msrs)
KVM_SET_MSRS = _IOW(KVMIO, 0x89, kvm_msrs)
KVM_GET_FPU = _IOR(KVMIO, 0x8C, kvm_fpu)
KVM_SET_FPU = _IOW(KVMIO, 0x8D, kvm_fpu)
KVM_SET_CPUID2 = _IOW(KVMIO, 0x90, kvm_cpuid2)
KVM_GET_CPUID2 = _IOWR(KVMIO, 0x91, kvm_cpuid2)
KVM_SET_GUEST_DEBUG = _IOW(KVMIO, 0x9B, kvm_guest_debug)       # KVM_CAP_SET_GUEST_DEBUG
KVM_GET_VCPU_EVENTS = _IOR(KVMIO, 0x9F, kvm_vcpu_events)       # KVM_CAP_VCPU_EVENTS
KVM_SET_VCPU_EVENTS = _IOW(KVMIO, 0xA0, kvm_vcpu_events)       # KVM_CAP_VCPU_EVENTS
KVM_GET_XSAVE = _IOR(KVMIO, 0xA4, kvm_xsave)                   # KVM_CAP_XSAVE
KVM_SET_XSAVE = _IOW(KVMIO, 0xA5, kvm_xsave)                   # KVM_CAP_XSAVE
KVM_GET_XCRS = _IOR(KVMIO, 0xA6, kvm_xcrs)                     # KVM_CAP_XCRS
KVM_SET_XCRS = _IOW(KVMIO, 0xA7, kvm_xcrs)                     # KVM_CAP_XCRS
KVM_GET_TSC_KHZ = _IO(KVMIO, 0xA3)                             # KVM_CAP_GET_TSC_KHZ; returns kHz
KVM_GET_DEVICE_ATTR = _IOW(KVMIO, 0xE2, kvm_device_attr)       # KVM_CAP_VCPU_ATTRIBUTES


# ---------------------------------------------------------------------------
# Buffers for the flexible-array structs.
# ---------------------------------------------------------------------------
def kvm_msrs_with(count: int) -> ctypes.Structure:
    """A ``kvm_msrs`` followed by room for *count* ``kvm_msr_entry``.

    The ioctl number keeps the header's size (8 bytes); the kernel reads
    ``nmsrs`` and then that many entries after it.
    """
    buf = _kvm_msrs_type(count)()
    buf.nmsrs = count
    return buf


@functools.cache
def _kvm_msrs_type(count: int) -> type[ctypes.Structure]:
    """The struct type for *count* entries, made once: creating a ctypes
    class costs ~50 µs, and a thread switch sets FS.base every time."""
    class kvm_msrs_n(ctypes.Structure):
        _fields_ = [("nmsrs", u32), ("pad", u32), ("entries", kvm_msr_entry * count)]
    return kvm_msrs_n


def kvm_cpuid2_with(count: int) -> ctypes.Structure:
    """A ``kvm_cpuid2`` followed by room for *count* ``kvm_cpuid_entry2``."""
    class kvm_cpuid2_n(ctypes.Structure):
        _fields_ = [("nent", u32), ("padding", u32), ("entries", kvm_cpuid_entry2 * count)]
    buf = kvm_cpuid2_n()
    buf.nent = count
    return buf


def ioctl_name(number: int) -> str:
    """The kernel name of an ioctl number defined here (for error messages)."""
    return IOCTL_NAMES.get(number, f"ioctl {number:#x}")


def exit_reason_name(reason: int) -> str:
    """The kernel name of a ``kvm_run.exit_reason`` value."""
    return EXIT_REASON_NAMES.get(reason, f"KVM_EXIT_{reason} (unknown to minikvm)")


_SYSTEM_IOCTLS = ("KVM_GET_API_VERSION", "KVM_CREATE_VM", "KVM_GET_MSR_INDEX_LIST",
                  "KVM_CHECK_EXTENSION", "KVM_GET_VCPU_MMAP_SIZE", "KVM_GET_SUPPORTED_CPUID")
_VM_IOCTLS = ("KVM_CREATE_VCPU", "KVM_GET_DIRTY_LOG", "KVM_CLEAR_DIRTY_LOG",
              "KVM_SET_USER_MEMORY_REGION",
              "KVM_SET_TSS_ADDR", "KVM_SET_IDENTITY_MAP_ADDR", "KVM_ENABLE_CAP")
_VCPU_IOCTLS = ("KVM_RUN", "KVM_GET_REGS", "KVM_SET_REGS", "KVM_GET_SREGS", "KVM_SET_SREGS",
                "KVM_TRANSLATE", "KVM_GET_MSRS", "KVM_SET_MSRS", "KVM_GET_FPU", "KVM_SET_FPU",
                "KVM_SET_CPUID2", "KVM_GET_CPUID2", "KVM_SET_GUEST_DEBUG",
                "KVM_GET_VCPU_EVENTS", "KVM_SET_VCPU_EVENTS", "KVM_GET_XSAVE", "KVM_SET_XSAVE",
                "KVM_GET_XCRS", "KVM_SET_XCRS", "KVM_GET_TSC_KHZ", "KVM_GET_DEVICE_ATTR")
#: Every ioctl defined here, by the fd kind it is issued on (the docs' table).
IOCTLS_BY_FD = {"system": _SYSTEM_IOCTLS, "vm": _VM_IOCTLS, "vcpu": _VCPU_IOCTLS}
IOCTL_NAMES = {globals()[name]: name for names in IOCTLS_BY_FD.values() for name in names}
EXIT_REASON_NAMES = {value: name for name, value in globals().items()
                     if name.startswith("KVM_EXIT_") and isinstance(value, int)
                     and name not in ("KVM_EXIT_IO_IN", "KVM_EXIT_IO_OUT")}
#: Every struct defined here under its kernel name (tests and docs walk it).
STRUCTS = {name: obj for name, obj in globals().items()
           if name.startswith("kvm_") and isinstance(obj, type)
           and issubclass(obj, (ctypes.Structure, ctypes.Union))}

__all__ = [name for name in globals() if name.startswith(("KVM", "kvm_", "_IO"))]
