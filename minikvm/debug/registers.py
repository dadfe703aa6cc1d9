"""Layer 7 — one thread's registers as gdb numbers them, to and from bytes.

gdb reads registers in the order and sizes of the target description
(:data:`minikvm.debug.target.REGISTERS`): a ``g`` packet is all of them
back to back, little-endian; ``p n`` is register *n* alone.  minikvm
keeps a thread's registers in KVM's structs: ``kvm_regs`` (the general
registers, RIP, RFLAGS), the segment selectors and the FS/GS bases, and
the x87/SSE state in FXSAVE layout (``kvm_fpu``, or the first 512 bytes
of an XSAVE area, which has the same layout: Intel SDM Vol. 1, 10.5.1
"FXSAVE Area", Table 10-2).  :class:`RegisterFile` is those pieces for
one thread; :func:`encode` and :func:`decode` translate register by
register, so the ``g`` packet and ``p``/``P`` share one definition.

Two conversions are not a copy:

* x87 tags: FXSAVE keeps an *abridged* tag, one bit per physical register
  (empty or not); gdb's ``ftag`` is the full two-bit-per-register word
  of FSTENV (SDM Vol. 1, 8.1.7 "x87 FPU Tag Word"), so the tag of a
  non-empty register is worked out from its value, as the CPU would.
* ``fioff``/``fiseg`` and ``fooff``/``foseg``: in 64-bit mode FXSAVE
  stores the last instruction and operand pointers as 64-bit offsets;
  gdb's registers are 32 bits each, so the low half is the offset and
  the high half the "segment"."""

from __future__ import annotations

import ctypes
import struct
from dataclasses import dataclass, field

from minikvm import ioctl as k
from minikvm.debug.target import REGISTERS

#: FXSAVE area offsets (SDM Vol. 1, Table 10-2, 64-bit format).
FXSAVE_FCW, FXSAVE_FSW, FXSAVE_FTW, FXSAVE_FOP = 0, 2, 4, 6
FXSAVE_FIP, FXSAVE_FDP, FXSAVE_MXCSR = 8, 16, 24
FXSAVE_ST0, FXSAVE_XMM0 = 32, 160
#: Bytes of one x87 register in FXSAVE (10 used, 6 reserved) and of one XMM.
FXSAVE_ST_STRIDE, XMM_SIZE = 16, 16
#: Bytes of the legacy (FXSAVE) region at the start of an XSAVE area.
FXSAVE_SIZE = 512
#: x87 tag values (SDM Vol. 1, Figure 8-7).
TAG_VALID, TAG_ZERO, TAG_SPECIAL, TAG_EMPTY = 0, 1, 2, 3
#: ``orig_rax`` of a thread that is not in a system call (Linux's -1).
NOT_IN_SYSCALL = (1 << 64) - 1

#: The ``kvm_regs`` field behind each general register gdb names.
_GENERAL = {name: name for name in ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp",
                                    "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15",
                                    "rip")}
_SEGMENTS = ("cs", "ss", "ds", "es", "fs", "gs")


@dataclass
class RegisterFile:
    """Everything gdb can see of one thread, in KVM's own layouts."""

    regs: k.kvm_regs
    #: Selector of each of cs, ss, ds, es, fs, gs.
    selectors: dict[str, int]
    fs_base: int
    gs_base: int
    #: The FXSAVE-layout x87/SSE state (512 bytes or more).
    fxsave: bytearray = field(default_factory=lambda: bytearray(FXSAVE_SIZE))


def fxsave_from_kvm_fpu(fpu: k.kvm_fpu) -> bytearray:
    """``kvm_fpu`` (KVM_GET_FPU's own order) rearranged as an FXSAVE area."""
    area = bytearray(FXSAVE_SIZE)
    struct.pack_into("<HHBxHQQI", area, 0, fpu.fcw, fpu.fsw, fpu.ftwx, fpu.last_opcode,
                     fpu.last_ip, fpu.last_dp, fpu.mxcsr)
    for i in range(8):
        offset = FXSAVE_ST0 + i * FXSAVE_ST_STRIDE
        area[offset:offset + 16] = bytes(fpu.fpr[i])
    for i in range(16):
        offset = FXSAVE_XMM0 + i * XMM_SIZE
        area[offset:offset + 16] = bytes(fpu.xmm[i])
    return area


def kvm_fpu_from_fxsave(area: bytes) -> k.kvm_fpu:
    """The inverse of :func:`fxsave_from_kvm_fpu`, for KVM_SET_FPU."""
    fcw, fsw, ftw, fop, fip, fdp, mxcsr = struct.unpack_from("<HHBxHQQI", area, 0)
    fpu = k.kvm_fpu(fcw=fcw, fsw=fsw, ftwx=ftw, last_opcode=fop, last_ip=fip, last_dp=fdp,
                    mxcsr=mxcsr)
    for i in range(8):
        offset = FXSAVE_ST0 + i * FXSAVE_ST_STRIDE
        ctypes.memmove(fpu.fpr[i], bytes(area[offset:offset + 16]), 16)
    for i in range(16):
        offset = FXSAVE_XMM0 + i * XMM_SIZE
        ctypes.memmove(fpu.xmm[i], bytes(area[offset:offset + 16]), 16)
    return fpu


def _tag_of(value: bytes) -> int:
    """The full x87 tag of a non-empty register holding the 80-bit *value*."""
    mantissa = int.from_bytes(value[:8], "little")
    exponent = int.from_bytes(value[8:10], "little") & 0x7FFF
    if exponent == 0x7FFF:
        return TAG_SPECIAL                  # infinity or NaN
    if exponent == 0:
        return TAG_ZERO if mantissa == 0 else TAG_SPECIAL   # zero, or denormal
    return TAG_VALID if mantissa >> 63 else TAG_SPECIAL     # J bit clear: unnormal


def full_tag(area: bytes) -> int:
    """FSTENV's tag word from FXSAVE's abridged one.  Bit *i* of the
    abridged tag is physical register R*i*; FXSAVE stores the registers
    in stack order, ST(*j*) = R((TOP + *j*) mod 8), TOP = FSW bits 13:11."""
    abridged = area[FXSAVE_FTW]
    top = (int.from_bytes(area[FXSAVE_FSW:FXSAVE_FSW + 2], "little") >> 11) & 7
    tag = 0
    for physical in range(8):
        if not abridged >> physical & 1:
            value = TAG_EMPTY
        else:
            offset = FXSAVE_ST0 + ((physical - top) % 8) * FXSAVE_ST_STRIDE
            value = _tag_of(bytes(area[offset:offset + 10]))
        tag |= value << (2 * physical)
    return tag


def abridged_tag(tag: int) -> int:
    """FXSAVE's abridged tag from a full one: a register is in use unless empty."""
    return sum(1 << i for i in range(8) if (tag >> (2 * i)) & 3 != TAG_EMPTY)


def _x87_control(area: bytes, name: str) -> int:
    fip = int.from_bytes(area[FXSAVE_FIP:FXSAVE_FIP + 8], "little")
    fdp = int.from_bytes(area[FXSAVE_FDP:FXSAVE_FDP + 8], "little")
    return {
        "fctrl": int.from_bytes(area[FXSAVE_FCW:FXSAVE_FCW + 2], "little"),
        "fstat": int.from_bytes(area[FXSAVE_FSW:FXSAVE_FSW + 2], "little"),
        "ftag": full_tag(area),
        "fiseg": fip >> 32, "fioff": fip & 0xFFFF_FFFF,
        "foseg": fdp >> 32, "fooff": fdp & 0xFFFF_FFFF,
        "fop": int.from_bytes(area[FXSAVE_FOP:FXSAVE_FOP + 2], "little") & 0x7FF,
    }[name]


def encode(file: RegisterFile, number: int) -> bytes:
    """Register *number* of *file*, little-endian, as many bytes as gdb's
    description says it has."""
    register = REGISTERS[number]
    size = register.bits // 8
    name = register.name
    area = file.fxsave
    if name in _GENERAL:
        value = getattr(file.regs, _GENERAL[name])
    elif name == "eflags":
        value = file.regs.rflags & 0xFFFF_FFFF
    elif name in _SEGMENTS:
        value = file.selectors[name]
    elif name.startswith("st"):
        offset = FXSAVE_ST0 + int(name[2:]) * FXSAVE_ST_STRIDE
        return bytes(area[offset:offset + size])
    elif name.startswith("xmm"):
        offset = FXSAVE_XMM0 + int(name[3:]) * XMM_SIZE
        return bytes(area[offset:offset + size])
    elif name == "mxcsr":
        return bytes(area[FXSAVE_MXCSR:FXSAVE_MXCSR + 4])
    elif name == "orig_rax":
        value = NOT_IN_SYSCALL
    elif name == "fs_base":
        value = file.fs_base
    elif name == "gs_base":
        value = file.gs_base
    else:
        value = _x87_control(area, name)
    return (value & ((1 << register.bits) - 1)).to_bytes(size, "little")


def encode_all(file: RegisterFile) -> bytes:
    """The body of a ``g`` reply (before hex): every register in order."""
    return b"".join(encode(file, number) for number in range(len(REGISTERS)))


class ReadOnlyRegister(Exception):
    """gdb wrote a register this stub keeps as it is (a segment selector,
    ``orig_rax``): the write is answered with an error."""


def decode(file: RegisterFile, number: int, data: bytes) -> None:
    """Store *data* (exactly the register's size) as register *number*.
    Selectors and ``orig_rax`` cannot change: a program runs with
    minikvm's flat user segments only (a selector gdb chose could point
    the CPU at the kernel's), so writing one raises
    :class:`ReadOnlyRegister` unless it is the value already there."""
    register = REGISTERS[number]
    name = register.name
    value = int.from_bytes(data, "little")
    area = file.fxsave
    if name in _GENERAL:
        setattr(file.regs, _GENERAL[name], value)
    elif name == "eflags":
        file.regs.rflags = value
    elif name in _SEGMENTS or name == "orig_rax":
        if data != encode(file, number):
            raise ReadOnlyRegister(name)
    elif name.startswith("st"):
        offset = FXSAVE_ST0 + int(name[2:]) * FXSAVE_ST_STRIDE
        area[offset:offset + 10] = data
    elif name.startswith("xmm"):
        offset = FXSAVE_XMM0 + int(name[3:]) * XMM_SIZE
        area[offset:offset + 16] = data
    elif name == "mxcsr":
        area[FXSAVE_MXCSR:FXSAVE_MXCSR + 4] = data
    elif name == "fs_base":
        file.fs_base = value
    elif name == "gs_base":
        file.gs_base = value
    elif name == "fctrl":
        area[FXSAVE_FCW:FXSAVE_FCW + 2] = data[:2]
    elif name == "fstat":
        area[FXSAVE_FSW:FXSAVE_FSW + 2] = data[:2]
    elif name == "ftag":
        area[FXSAVE_FTW] = abridged_tag(value)
    elif name == "fop":
        area[FXSAVE_FOP:FXSAVE_FOP + 2] = (value & 0x7FF).to_bytes(2, "little")
    elif name in ("fioff", "fiseg", "fooff", "foseg"):
        offset = FXSAVE_FIP if name.startswith("fi") else FXSAVE_FDP
        pointer = int.from_bytes(area[offset:offset + 8], "little")
        if name.endswith("off"):
            pointer = (pointer & ~0xFFFF_FFFF) | value
        else:
            pointer = (pointer & 0xFFFF_FFFF) | value << 32
        area[offset:offset + 8] = pointer.to_bytes(8, "little")


def register_size(number: int) -> int:
    """Bytes of register *number*."""
    return REGISTERS[number].bits // 8

