"""Layer 5 — the signal frame: what Linux pushes on the stack to run a handler.

To run a signal handler, Linux saves everything the interrupted code had
in its registers on the user stack, in a ``struct rt_sigframe``, and
starts the handler on top of it.  The handler returns to ``sa_restorer``
(a three-instruction function of the C library: ``mov $15, %eax;
syscall``) and ``rt_sigreturn`` reads the frame back.  Programs look
inside the frame (``ucontext_t``, ``siginfo_t``), so minikvm builds it
byte for byte as ``arch/x86/kernel/signal_64.c`` does::

    higher addresses
    +-------------------------------+  <- RSP of the interrupted code
    | 128-byte red zone (skipped)   |     (or the top of the sigaltstack)
    +-------------------------------+
    | FPU state, 64-byte aligned    |  <- uc_mcontext.fpstate
    | (FXSAVE, or XSAVE + magic)    |
    +-------------------------------+
    | struct siginfo    (128 bytes) |  <- RSI of the handler (SA_SIGINFO)
    | struct ucontext   (304 bytes) |  <- RDX of the handler
    | pretcode = sa_restorer        |  <- RSP of the handler: RSP + 8 is
    +-------------------------------+     16-byte aligned, as after a call
    lower addresses

This module is pure: structs laid out as the kernel's UAPI headers
(``arch/x86/include/uapi/asm/sigcontext.h``, ``asm/ucontext.h``,
``asm-generic/ucontext.h``, ``asm-generic/siginfo.h``) and the address
arithmetic of ``get_sigframe()`` (``arch/x86/kernel/signal.c``).  Reading
and writing guest memory, and the registers, is
:mod:`minikvm.syscalls.signal_handlers`' job.
"""

from __future__ import annotations

import ctypes
import struct

from minikvm.ioctl import u16, u32, u64   # the kernel headers' __u16, __u32, __u64
from minikvm.linux_abi import STACK_ALIGNMENT

#: x86-64 has a 128-byte red zone below RSP that leaf functions use
#: without moving RSP: the frame must not touch it (System V ABI §3.2.2).
RED_ZONE = 128
#: ``fpu__alloc_mathframe``: the FPU state is 64-byte aligned (XSAVE needs it).
FPSTATE_ALIGNMENT = 64
#: The legacy FXSAVE area, the first 512 bytes of any XSAVE area too.
FXSAVE_SIZE = 512
#: Inside the FXSAVE area: MXCSR and the mask of its writable bits.
FXSAVE_MXCSR_OFFSET = 24
FXSAVE_MXCSR_MASK_OFFSET = 28
#: When MXCSR_MASK reads 0, the CPU's mask is this (Intel SDM Vol. 1 §11.6.6).
MXCSR_DEFAULT_MASK = 0xFFBF
#: Bytes 464..511 of the FXSAVE area are free for software: Linux puts a
#: ``struct _fpx_sw_bytes`` there to say "an XSAVE area follows".
SW_RESERVED_OFFSET = 464
#: The XSAVE header follows the legacy area: XSTATE_BV, XCOMP_BV, reserved.
XSAVE_HEADER_OFFSET = 512
XSAVE_HEADER_SIZE = 64
FP_XSTATE_MAGIC1 = 0x46505853     # "FPXS", in _fpx_sw_bytes.magic1
FP_XSTATE_MAGIC2 = 0x46505845     # "FPXE", right after the XSAVE area
FP_XSTATE_MAGIC2_SIZE = 4
XFEATURE_X87_SSE = 0b11           # the components the FXSAVE area holds

# uc_flags (arch/x86/include/uapi/asm/ucontext.h)
UC_FP_XSTATE = 0x1                # fpstate is an XSAVE area with _fpx_sw_bytes
UC_SIGCONTEXT_SS = 0x2            # uc_mcontext.ss is meaningful
UC_STRICT_RESTORE_SS = 0x4        # rt_sigreturn restores SS as saved

SIGINFO_SIZE = 128


class sigcontext_64(ctypes.Structure):
    """``struct sigcontext_64`` (arch/x86/include/uapi/asm/sigcontext.h):
    the interrupted code's registers, ``uc_mcontext`` in C."""
    _fields_ = [
        ("r8", u64), ("r9", u64), ("r10", u64), ("r11", u64),
        ("r12", u64), ("r13", u64), ("r14", u64), ("r15", u64),
        ("di", u64), ("si", u64), ("bp", u64), ("bx", u64),
        ("dx", u64), ("ax", u64), ("cx", u64), ("sp", u64),
        ("ip", u64), ("flags", u64),
        ("cs", u16), ("gs", u16), ("fs", u16), ("ss", u16),
        ("err", u64),
        ("trapno", u64),
        ("oldmask", u64),
        ("cr2", u64),
        ("fpstate", u64),                 # user address of the FPU state, 0 if none
        ("reserved1", u64 * 8),
    ]


class stack_t(ctypes.Structure):
    """``stack_t`` (include/uapi/asm-generic/signal.h): a sigaltstack."""
    _fields_ = [
        ("ss_sp", u64),
        ("ss_flags", ctypes.c_int32),
        ("pad", u32),
        ("ss_size", u64),
    ]


class ucontext(ctypes.Structure):
    """``struct ucontext`` (include/uapi/asm-generic/ucontext.h, which x86
    uses): flags, link, the alternate stack, the registers, the mask."""
    _fields_ = [
        ("uc_flags", u64),
        ("uc_link", u64),
        ("uc_stack", stack_t),
        ("uc_mcontext", sigcontext_64),
        ("uc_sigmask", u64),              # the kernel's sigset_t: 64 bits on x86-64
    ]


class rt_sigframe(ctypes.Structure):
    """``struct rt_sigframe`` (arch/x86/include/asm/sigframe.h), 64-bit."""
    _fields_ = [
        ("pretcode", u64),                # the handler's return address: sa_restorer
        ("uc", ucontext),
        ("info", ctypes.c_uint8 * SIGINFO_SIZE),
    ]


class _fpx_sw_bytes(ctypes.Structure):
    """``struct _fpx_sw_bytes`` (sigcontext.h), at byte 464 of the FXSAVE area."""
    _fields_ = [
        ("magic1", u32),                  # FP_XSTATE_MAGIC1
        ("extended_size", u32),           # XSAVE area + FP_XSTATE_MAGIC2_SIZE
        ("xfeatures", u64),               # the components saved (XCR0)
        ("xstate_size", u32),             # the XSAVE area's size
        ("padding", u32 * 7),
    ]


#: ``sigcontext_64`` field -> ``kvm_regs`` field, for the 18 registers both have.
REGISTERS = (("r8", "r8"), ("r9", "r9"), ("r10", "r10"), ("r11", "r11"), ("r12", "r12"),
             ("r13", "r13"), ("r14", "r14"), ("r15", "r15"), ("di", "rdi"), ("si", "rsi"),
             ("bp", "rbp"), ("bx", "rbx"), ("dx", "rdx"), ("ax", "rax"), ("cx", "rcx"),
             ("sp", "rsp"), ("ip", "rip"), ("flags", "rflags"))

FRAME_SIZE = ctypes.sizeof(rt_sigframe)
UC_OFFSET = rt_sigframe.uc.offset
INFO_OFFSET = rt_sigframe.info.offset
#: Where rt_sigreturn finds the frame: the handler's ``ret`` popped pretcode.
PRETCODE_SIZE = 8


def signal_stack_top(rsp: int, on_stack_wanted: bool, alternate: tuple[int, int]) -> int:
    """Where the frame goes below (``get_sigframe``): under the red zone,
    or at the top of the alternate stack when the action has SA_ONSTACK,
    one is set, and the code is not already running on it."""
    sp = rsp - RED_ZONE
    base, size = alternate
    if on_stack_wanted and size and not on_alternate_stack(sp, alternate):
        sp = base + size
    return sp


def on_alternate_stack(sp: int, alternate: tuple[int, int]) -> bool:
    """``on_sig_stack()``: is *sp* inside the alternate stack (its top excluded)?"""
    base, size = alternate
    return bool(size) and base < sp <= base + size


def place_frame(sp: int, fpstate_size: int) -> tuple[int, int]:
    """``(frame, fpstate)``: the addresses of the frame and of the FPU
    state below *sp*.  The FPU state is 64-byte aligned; the frame sits
    under it so that the handler's RSP + 8 is 16-byte aligned."""
    fpstate = (sp - fpstate_size) & ~(FPSTATE_ALIGNMENT - 1) if fpstate_size else sp
    frame = ((fpstate - FRAME_SIZE) & ~(STACK_ALIGNMENT - 1)) - PRETCODE_SIZE
    return frame, fpstate if fpstate_size else 0



def decode_frame(data: bytes) -> rt_sigframe:
    """An ``rt_sigframe`` from *data* (FRAME_SIZE bytes, e.g. guest memory)."""
    return rt_sigframe.from_buffer_copy(data)


def siginfo(signo: int, code: int, *, errno: int = 0, pid: int = 0, uid: int = 0,
            address: int | None = None) -> bytes:
    """A 128-byte ``siginfo_t`` (include/uapi/asm-generic/siginfo.h).

    After signo, errno, code and 4 bytes of padding comes a union at
    byte 16: ``si_pid``/``si_uid`` for a signal a process sent, or
    ``si_addr`` for a fault (*address*)."""
    head = struct.pack("<iii4x", signo, errno, code)
    if address is not None:
        body = struct.pack("<Q", address)
    else:
        body = struct.pack("<iI", pid, uid)
    return (head + body).ljust(SIGINFO_SIZE, b"\0")


# -- the FPU state in the frame ------------------------------------------------------
def fpstate_for_frame(xsave: bytes, xstate_size: int | None, xfeatures: int) -> bytes:
    """What ``copy_fpstate_to_sigframe`` writes: with XSAVE enabled
    (*xstate_size* given) the XSAVE area in standard form, marked by
    ``_fpx_sw_bytes`` and followed by FP_XSTATE_MAGIC2; without, the
    512-byte FXSAVE area.  *xsave* is the vCPU's state (KVM_GET_XSAVE,
    standard form, legacy area first)."""
    if xstate_size is None:
        area = bytearray(xsave[:FXSAVE_SIZE])
        area[SW_RESERVED_OFFSET:FXSAVE_SIZE] = bytes(FXSAVE_SIZE - SW_RESERVED_OFFSET)
        return bytes(area)
    area = bytearray(xsave[:xstate_size])
    sw = _fpx_sw_bytes(magic1=FP_XSTATE_MAGIC1,
                       extended_size=xstate_size + FP_XSTATE_MAGIC2_SIZE,
                       xfeatures=xfeatures, xstate_size=xstate_size)
    area[SW_RESERVED_OFFSET:SW_RESERVED_OFFSET + ctypes.sizeof(sw)] = bytes(sw)
    return bytes(area) + struct.pack("<I", FP_XSTATE_MAGIC2)


def fpstate_size(xstate_size: int | None) -> int:
    """How many bytes :func:`fpstate_for_frame` writes."""
    return FXSAVE_SIZE if xstate_size is None else xstate_size + FP_XSTATE_MAGIC2_SIZE


def xstate_in_frame(legacy: bytes, max_size: int | None) -> tuple[int, int] | None:
    """``check_xstate_in_sigframe``: ``(xstate_size, xfeatures)`` if the
    FXSAVE area *legacy* announces a whole XSAVE area no larger than
    *max_size* (None: XSAVE is off); None means "only the FXSAVE area".
    The caller must still check FP_XSTATE_MAGIC2 after it."""
    if max_size is None:
        return None
    sw = _fpx_sw_bytes.from_buffer_copy(legacy, SW_RESERVED_OFFSET)
    if (sw.magic1 != FP_XSTATE_MAGIC1 or not FXSAVE_SIZE + XSAVE_HEADER_SIZE <= sw.xstate_size
            <= max_size or sw.xstate_size + FP_XSTATE_MAGIC2_SIZE > sw.extended_size):
        return None
    return sw.xstate_size, sw.xfeatures


class BadFpuState(ValueError):
    """The FPU state in a signal frame is one the CPU would refuse to load."""


def xsave_from_frame(area: bytes, size: int, mxcsr_mask: int, xfeatures: int,
                     allowed: int) -> bytes:
    """The state to load (KVM_SET_XSAVE) from the frame's FPU *area*: the
    FXSAVE area, and the XSAVE components it holds when *xfeatures* names
    more.  Components not saved are reset, as XRSTOR does for the bits
    clear in XSTATE_BV; XSTATE_BV is limited to *xfeatures* and the
    *allowed* components (XCR0), as XRSTOR's requested-feature bitmap is.

    Linux loads the area with FXRSTOR/XRSTOR straight from user memory,
    which fault on what the CPU forbids — MXCSR bits outside MXCSR_MASK; in
    the XSAVE header, a compacted form or reserved bytes — and the process
    gets SIGSEGV.  Those raise :class:`BadFpuState` here, before KVM sees
    them.  *size* is the size of KVM's XSAVE buffer; *mxcsr_mask* the MXCSR
    bits the CPU allows."""
    state = bytearray(size)
    state[:len(area)] = area[:size]
    mask = mxcsr_mask
    mxcsr = struct.unpack_from("<I", state, FXSAVE_MXCSR_OFFSET)[0]
    if mxcsr & ~mask:
        raise BadFpuState(f"MXCSR {mxcsr:#x} sets bits outside the CPU's mask {mask:#x}")
    struct.pack_into("<I", state, FXSAVE_MXCSR_MASK_OFFSET, mask)
    state[SW_RESERVED_OFFSET:FXSAVE_SIZE] = bytes(FXSAVE_SIZE - SW_RESERVED_OFFSET)
    if len(area) > FXSAVE_SIZE:
        header = bytes(state[XSAVE_HEADER_OFFSET:XSAVE_HEADER_OFFSET + XSAVE_HEADER_SIZE])
        if header[8:].strip(b"\0"):
            raise BadFpuState("the XSAVE header's XCOMP_BV or reserved bytes are not zero")
        xstate_bv = struct.unpack_from("<Q", header)[0] & xfeatures & allowed
    else:
        xstate_bv = XFEATURE_X87_SSE & allowed
    header = struct.pack("<Q", xstate_bv).ljust(XSAVE_HEADER_SIZE, b"\0")
    state[XSAVE_HEADER_OFFSET:XSAVE_HEADER_OFFSET + XSAVE_HEADER_SIZE] = header
    return bytes(state)


def initial_xsave(size: int, fcw: int, mxcsr: int, mxcsr_mask: int) -> bytes:
    """The FPU state a handler starts with (``fpu__clear_user_states``):
    x87 and SSE at their reset values, every register zero, every other
    component in its initial state (XSTATE_BV names x87 and SSE only)."""
    state = bytearray(size)
    struct.pack_into("<H", state, 0, fcw)
    struct.pack_into("<II", state, FXSAVE_MXCSR_OFFSET, mxcsr, mxcsr_mask)
    struct.pack_into("<Q", state, XSAVE_HEADER_OFFSET, XFEATURE_X87_SSE)
    return bytes(state)
