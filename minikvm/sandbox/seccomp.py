"""Layer 4 — seccomp: a system-call filter for the minikvm host process.

The guest's system calls never reach the host kernel: each one exits the VM
and is emulated in Python.  This filter is for the *host* process, the
Python interpreter, in case a guest ever takes control of it through a bug.
It removes the calls that such an attacker would want and minikvm never
makes: running programs, new processes, debugging others, mounts, kernel
modules and keys, BPF, io_uring, and sockets other than unix/IPv4/IPv6.
See the kernel's Documentation/userspace-api/seccomp_filter.rst and
seccomp(2).

A seccomp filter is a classic BPF program (not eBPF) the kernel runs on
every system call.  It reads ``struct seccomp_data``::

    offset  field                 size
    0       nr                    u32    system call number
    4       arch                  u32    AUDIT_ARCH_* of the calling convention
    8       instruction_pointer   u64
    16      args[6]               u64 each (args[i] at 16 + 8*i, low half first)

and returns an action: ``SECCOMP_RET_ALLOW``, ``SECCOMP_RET_ERRNO | errno``
(the call fails with that errno, nothing else happens) or
``SECCOMP_RET_KILL_PROCESS``.  The program :func:`build_filter` makes, in
outline (``python -m minikvm.sandbox.seccomp`` prints every instruction with
:func:`disassemble`)::

          ld   [arch]
          jeq  AUDIT_ARCH_X86_64 ? next : kill     another ABI: kill
          ld   [nr]
          jge  X32_SYSCALL_BIT ? kill : next       x32 numbering: kill
          jeq  execve ? deny : next                one pair per denied call
          ...
          jeq  clone3 ? enosys : next              (glibc then falls back to clone)
          jeq  clone ? check_clone : next
          jeq  socket ? check_family : next
          jeq  ioctl ? check_ioctl : allow
    check_clone:  threads (CLONE_THREAD) yes, namespaces (CLONE_NEW*) no
                  (with allow_fork: any clone without CLONE_NEW*)
    check_family: AF_UNIX, AF_INET, AF_INET6 only
    check_ioctl:  TIOCSTI, TIOCLINUX no (they type into the user's terminal),
                  TIOCCONS no (it takes the console's output)
    allow: ret ALLOW   deny: ret ERRNO(EPERM)   enosys: ret ERRNO(ENOSYS)
    kill:  ret KILL_PROCESS

Why the argument checks are complete although BPF sees only the low 32
bits at each load: the kernel itself truncates ``clone``'s flags
(``lower_32_bits``), ``socket``'s domain (an ``int``) and ``ioctl``'s
request (an ``unsigned int``) to 32 bits.  ``clone3`` takes its flags in a
struct that BPF cannot read, so it gets ``ENOSYS``: glibc (2.34+) then
retries with ``clone``, which the filter can inspect.  Python threads keep
working; ``fork``, ``vfork``, ``posix_spawn`` and ``subprocess`` do not.

``allow_fork=True`` builds the supervisor's variant: ``clone`` may make a
process (glibc's ``fork()`` is a ``clone`` without ``CLONE_THREAD``), so
``minikvm serve`` can start and restart its workers; ``execve`` and
everything else stay refused.  Each worker then installs the strict filter
on top — filters stack, and the strictest answer wins — so the processes
that serve requests cannot fork either.

The arch check comes first because the same number means different calls
in different ABIs (``int 0x80`` from a 64-bit process uses the i386 table);
x32 calls (``nr | 0x40000000``) share the x86-64 arch value, hence the
second check.  Both end in ``KILL_PROCESS``: an x86-64 Python never makes
them, so only an attack would.

:func:`install` sets ``PR_SET_NO_NEW_PRIVS`` (required without
``CAP_SYS_ADMIN``) and loads the filter with ``seccomp(2)`` and
``SECCOMP_FILTER_FLAG_TSYNC``, so every thread of the process gets it.
Filters only ever stack: nothing, including this process, can remove one.
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
from dataclasses import dataclass
from typing import Iterable, NamedTuple, Sequence, Union

from minikvm.errors import MinikvmError
# terminal ioctls that type into the user's terminal or take the console
from minikvm.linux_abi import TIOCCONS, TIOCLINUX, TIOCSTI

# --- classic BPF, as in <linux/filter.h> and <linux/bpf_common.h> ---------------

# instruction classes
BPF_LD = 0x00
BPF_JMP = 0x05
BPF_RET = 0x06
# ld/ldx sizes and modes
BPF_W = 0x00
BPF_ABS = 0x20
# jump operations
BPF_JA = 0x00
BPF_JEQ = 0x10
BPF_JGT = 0x20
BPF_JGE = 0x30
BPF_JSET = 0x40
# operand source
BPF_K = 0x00

#: The kernel's limit on a classic BPF program's length.
BPF_MAXINSNS = 4096

# --- seccomp, as in <linux/seccomp.h> and <linux/audit.h> -------------------------

SECCOMP_RET_KILL_PROCESS = 0x80000000
SECCOMP_RET_KILL_THREAD = 0x00000000
SECCOMP_RET_TRAP = 0x00030000
SECCOMP_RET_ERRNO = 0x00050000
SECCOMP_RET_ALLOW = 0x7FFF0000
SECCOMP_RET_ACTION_FULL = 0xFFFF0000
SECCOMP_RET_DATA = 0x0000FFFF

SECCOMP_SET_MODE_FILTER = 1
SECCOMP_GET_ACTION_AVAIL = 2
SECCOMP_FILTER_FLAG_TSYNC = 1

SYS_seccomp = 317
PR_SET_NO_NEW_PRIVS = 38
PR_GET_SECCOMP = 21
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2

AUDIT_ARCH_X86_64 = 0xC000003E    # EM_X86_64 | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE
X32_SYSCALL_BIT = 0x40000000

#: Offsets in ``struct seccomp_data``.
SECCOMP_DATA_NR = 0
SECCOMP_DATA_ARCH = 4
SECCOMP_DATA_INSTRUCTION_POINTER = 8
SECCOMP_DATA_ARGS = 16


def seccomp_data_arg(index: int) -> int:
    """Offset of the low 32 bits of ``args[index]`` (x86-64 is little-endian)."""
    return SECCOMP_DATA_ARGS + 8 * index


# clone(2) flags the filter inspects, from <linux/sched.h>
CLONE_THREAD = 0x00010000
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
CLONE_NEW_ANY = (CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC
                 | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET)


#: x86-64 numbers of every call the filter names
#: (arch/x86/entry/syscalls/syscall_64.tbl; pinned by a test against unistd_64.h).
SYSCALL_NUMBERS = {
    "ioctl": 16, "socket": 41, "socketpair": 53, "clone": 56, "fork": 57,
    "vfork": 58, "execve": 59, "ptrace": 101, "syslog": 103, "uselib": 134,
    "pivot_root": 155, "chroot": 161, "acct": 163, "mount": 165, "umount2": 166,
    "swapon": 167, "swapoff": 168, "reboot": 169, "iopl": 172, "ioperm": 173,
    "init_module": 175, "delete_module": 176, "quotactl": 179, "kexec_load": 246,
    "add_key": 248, "request_key": 249, "keyctl": 250, "unshare": 272,
    "perf_event_open": 298, "name_to_handle_at": 303, "open_by_handle_at": 304,
    "setns": 308, "process_vm_readv": 310, "process_vm_writev": 311, "kcmp": 312,
    "finit_module": 313, "kexec_file_load": 320, "bpf": 321, "execveat": 322,
    "userfaultfd": 323, "io_uring_setup": 425, "io_uring_enter": 426,
    "io_uring_register": 427, "open_tree": 428, "move_mount": 429, "fsopen": 430,
    "fsconfig": 431, "fsmount": 432, "fspick": 433, "clone3": 435,
    "mount_setattr": 442,
}

#: Calls refused with EPERM whatever their arguments, and why minikvm can.
DENIED_SYSCALLS = {
    "execve":            "minikvm never runs another program",
    "execveat":          "minikvm never runs another program",
    "fork":              "minikvm never starts a process",
    "vfork":             "minikvm never starts a process",
    "ptrace":            "debugging another process",
    "process_vm_readv":  "reading another process's memory",
    "process_vm_writev": "writing another process's memory",
    "kcmp":              "comparing other processes' kernel objects",
    "mount":             "changing mounts",
    "umount2":           "changing mounts",
    "pivot_root":        "changing mounts",
    "chroot":            "changing the root",
    "open_tree":         "new mount API",
    "move_mount":        "new mount API",
    "fsopen":            "new mount API",
    "fsconfig":          "new mount API",
    "fsmount":           "new mount API",
    "fspick":            "new mount API",
    "mount_setattr":     "new mount API",
    "unshare":           "new namespaces (kernel attack surface)",
    "setns":             "joining other namespaces",
    "bpf":               "eBPF programs (kernel attack surface)",
    "perf_event_open":   "perf events (kernel attack surface)",
    "userfaultfd":       "stalling the kernel mid-copy (exploit primitive)",
    "io_uring_setup":    "io_uring operations bypass this filter",
    "io_uring_enter":    "io_uring operations bypass this filter",
    "io_uring_register": "io_uring operations bypass this filter",
    "keyctl":            "the kernel keyring",
    "add_key":           "the kernel keyring",
    "request_key":       "the kernel keyring",
    "init_module":       "loading kernel modules",
    "finit_module":      "loading kernel modules",
    "delete_module":     "unloading kernel modules",
    "kexec_load":        "replacing the kernel",
    "kexec_file_load":   "replacing the kernel",
    "reboot":            "rebooting",
    "swapon":            "swap configuration",
    "swapoff":           "swap configuration",
    "acct":              "process accounting",
    "quotactl":          "disk quotas",
    "syslog":            "the kernel log",
    "iopl":              "raw I/O ports",
    "ioperm":            "raw I/O ports",
    "uselib":            "obsolete library loading",
    "name_to_handle_at": "file handles (open_by_handle_at escapes directories)",
    "open_by_handle_at": "file handles (open_by_handle_at escapes directories)",
}

#: Socket families the host may still create (the policy allows no others).
ALLOWED_SOCKET_FAMILIES = (socket.AF_UNIX, socket.AF_INET, socket.AF_INET6)


class SeccompError(MinikvmError):
    """The filter could not be built or installed."""


# --- instructions ----------------------------------------------------------------


class sock_filter(ctypes.Structure):
    """``struct sock_filter`` from ``<linux/filter.h>``: one BPF instruction (8 bytes)."""

    _fields_ = [
        ("code", ctypes.c_uint16),
        ("jt", ctypes.c_uint8),
        ("jf", ctypes.c_uint8),
        ("k", ctypes.c_uint32),
    ]


class sock_fprog(ctypes.Structure):
    """``struct sock_fprog``: a program's length and a pointer to it (16 bytes)."""

    _fields_ = [
        ("len", ctypes.c_uint16),
        ("filter", ctypes.POINTER(sock_filter)),
    ]


class Insn(NamedTuple):
    """One BPF instruction as plain values (``sock_filter`` for the kernel).

    ``jt`` and ``jf`` are how many instructions to *skip* when the test is
    true or false, so a jump can only go forward (0-255 instructions).
    """

    code: int
    jt: int
    jf: int
    k: int


def bpf_stmt(code: int, k: int) -> Insn:
    """``BPF_STMT(code, k)`` from ``<linux/filter.h>``."""
    return Insn(code, 0, 0, k)


def bpf_jump(code: int, k: int, jt: int, jf: int) -> Insn:
    """``BPF_JUMP(code, k, jt, jf)`` from ``<linux/filter.h>``."""
    if not (0 <= jt <= 255 and 0 <= jf <= 255):
        raise SeccompError(f"BPF jump offsets jt={jt} jf={jf} do not fit in a byte: "
                           "the filter is too long between a test and its target")
    return Insn(code, jt, jf, k)


def load_field(offset: int) -> Insn:
    """``A = *(u32 *)(seccomp_data + offset)``."""
    return bpf_stmt(BPF_LD | BPF_W | BPF_ABS, offset)


def ret(action: int) -> Insn:
    """Return *action* (``SECCOMP_RET_*``, with data in the low 16 bits)."""
    return bpf_stmt(BPF_RET | BPF_K, action)


def ret_errno(err: int) -> Insn:
    """Fail the call with *err*."""
    return ret(SECCOMP_RET_ERRNO | (err & SECCOMP_RET_DATA))


# --- a tiny assembler: jumps to labels instead of counted offsets ------------------


class _Jump(NamedTuple):
    op: int           # BPF_JEQ, BPF_JGE, BPF_JSET
    k: int
    if_true: str      # a label, or "next"
    if_false: str


class _Label(NamedTuple):
    name: str


_Line = Union[Insn, _Jump, _Label]


def _assemble(lines: Sequence[_Line]) -> list[Insn]:
    """Resolve labels to forward offsets; "next" means the next instruction."""
    where: dict[str, int] = {}
    pc = 0
    for line in lines:
        if isinstance(line, _Label):
            where[line.name] = pc
        else:
            pc += 1
    program: list[Insn] = []
    for line in lines:
        if isinstance(line, _Label):
            continue
        if isinstance(line, _Jump):
            here = len(program)

            def offset(label: str) -> int:
                if label == "next":
                    return 0
                target = where[label]
                if target <= here:
                    raise SeccompError(f"BPF jump from {here} to label {label!r} at "
                                       f"{target} goes backward: BPF jumps only forward")
                return target - here - 1

            program.append(bpf_jump(BPF_JMP | line.op | BPF_K, line.k,
                                    offset(line.if_true), offset(line.if_false)))
        else:
            program.append(line)
    return program


def build_filter(denied: Iterable[str] = tuple(DENIED_SYSCALLS),
                 socket_families: Iterable[int] = ALLOWED_SOCKET_FAMILIES, *,
                 allow_fork: bool = False) -> list[Insn]:
    """The filter program (see the module docstring for its shape).
    *allow_fork* lets ``clone`` make processes, not only threads."""
    denied = list(dict.fromkeys(denied))
    unknown = [name for name in denied if name not in SYSCALL_NUMBERS]
    if unknown:
        raise SeccompError(f"cannot deny {', '.join(unknown)}: not in SYSCALL_NUMBERS "
                           "(add the x86-64 number there first)")
    special = {"clone", "clone3", "socket", "socketpair", "ioctl"} & set(denied)
    if special:
        raise SeccompError(f"{', '.join(sorted(special))} are checked by argument, "
                           "not denied outright: remove them from the denied list")
    families = list(dict.fromkeys(socket_families))
    if not families:
        raise SeccompError("socket_families is empty: allow at least AF_UNIX")

    lines: list[_Line] = [
        load_field(SECCOMP_DATA_ARCH),
        _Jump(BPF_JEQ, AUDIT_ARCH_X86_64, "next", "kill"),
        load_field(SECCOMP_DATA_NR),
        _Jump(BPF_JGE, X32_SYSCALL_BIT, "kill", "next"),
    ]
    lines += [_Jump(BPF_JEQ, SYSCALL_NUMBERS[name], "deny", "next") for name in denied]
    lines += [
        _Jump(BPF_JEQ, SYSCALL_NUMBERS["clone3"], "enosys", "next"),
        _Jump(BPF_JEQ, SYSCALL_NUMBERS["clone"], "check_clone", "next"),
        _Jump(BPF_JEQ, SYSCALL_NUMBERS["socket"], "check_family", "next"),
        _Jump(BPF_JEQ, SYSCALL_NUMBERS["socketpair"], "check_family", "next"),
        _Jump(BPF_JEQ, SYSCALL_NUMBERS["ioctl"], "check_ioctl", "allow"),

        _Label("check_clone"),                      # clone(flags, ...)
        load_field(seccomp_data_arg(0)),
        _Jump(BPF_JSET, CLONE_NEW_ANY, "deny", "allow" if allow_fork else "next"),
        _Jump(BPF_JSET, CLONE_THREAD, "allow", "deny"),

        _Label("check_ioctl"),                      # ioctl(fd, request, ...)
        load_field(seccomp_data_arg(1)),
        _Jump(BPF_JEQ, TIOCSTI, "deny", "next"),
        _Jump(BPF_JEQ, TIOCLINUX, "deny", "next"),
        _Jump(BPF_JEQ, TIOCCONS, "deny", "allow"),

        _Label("check_family"),                     # socket(domain, ...)
        load_field(seccomp_data_arg(0)),
    ]
    for index, family in enumerate(families):
        last = index == len(families) - 1
        lines.append(_Jump(BPF_JEQ, int(family), "allow", "deny" if last else "next"))
    lines += [
        _Label("allow"), ret(SECCOMP_RET_ALLOW),
        _Label("deny"), ret_errno(errno.EPERM),
        _Label("enosys"), ret_errno(errno.ENOSYS),
        _Label("kill"), ret(SECCOMP_RET_KILL_PROCESS),
    ]
    program = _assemble(lines)
    if len(program) > BPF_MAXINSNS:
        raise SeccompError(f"filter has {len(program)} instructions, over the "
                           f"kernel's limit of {BPF_MAXINSNS}")
    return program


# --- the pretty-printer ----------------------------------------------------------

_FIELD_NAMES = {SECCOMP_DATA_NR: "nr", SECCOMP_DATA_ARCH: "arch",
                SECCOMP_DATA_INSTRUCTION_POINTER: "instruction_pointer",
                **{seccomp_data_arg(i): f"args[{i}]" for i in range(6)}}
_JUMP_NAMES = {BPF_JA: "ja", BPF_JEQ: "jeq", BPF_JGT: "jgt", BPF_JGE: "jge",
               BPF_JSET: "jset"}
_SYSCALL_NAMES = {number: name for name, number in SYSCALL_NUMBERS.items()}
_FAMILY_NAMES = {int(f): f.name for f in (socket.AF_UNIX, socket.AF_INET, socket.AF_INET6)}
_CLONE_NAMES = {CLONE_THREAD: "CLONE_THREAD", CLONE_NEW_ANY: "CLONE_NEW*"}
_IOCTL_NAMES = {TIOCSTI: "TIOCSTI", TIOCLINUX: "TIOCLINUX", TIOCCONS: "TIOCCONS"}


def describe_action(action: int) -> str:
    """``SECCOMP_RET_*`` as text: ``ALLOW``, ``ERRNO(EPERM)``, ``KILL_PROCESS``."""
    kind, data = action & SECCOMP_RET_ACTION_FULL, action & SECCOMP_RET_DATA
    if kind == SECCOMP_RET_ERRNO:
        return f"ERRNO({errno.errorcode.get(data, data)})"
    names = {SECCOMP_RET_ALLOW: "ALLOW", SECCOMP_RET_KILL_PROCESS: "KILL_PROCESS",
             SECCOMP_RET_KILL_THREAD: "KILL_THREAD", SECCOMP_RET_TRAP: "TRAP"}
    return names.get(kind, f"{action:#x}")


def disassemble(program: Sequence[Insn]) -> str:
    """The program one instruction a line, with absolute jump targets and notes.

    Each line reads ``pc: op operand  [jt TARGET jf TARGET]  ; meaning``, the
    format of the kernel's ``tools/bpf/bpf_dbg``, with the constants named.
    """
    lines = []
    loaded = ""      # the field in A, to name the constants compared with it
    for pc, insn in enumerate(program):
        cls = insn.code & 0x07
        if insn.code == BPF_LD | BPF_W | BPF_ABS:
            loaded = _FIELD_NAMES.get(insn.k, f"data+{insn.k}")
            text, note = f"ld   [{insn.k}]", f"A = seccomp_data.{loaded}"
        elif cls == BPF_RET:
            text, note = f"ret  #{insn.k:#x}", describe_action(insn.k)
        elif cls == BPF_JMP:
            op = _JUMP_NAMES.get(insn.code & 0xF0, f"j?{insn.code:#x}")
            text = (f"{op:<4} #{insn.k:#x}".ljust(18)
                    + f"jt {pc + 1 + insn.jt:<3} jf {pc + 1 + insn.jf}")
            note = _name_constant(loaded, insn.k)
        else:
            text, note = f".word {insn.code:#06x}, {insn.jt}, {insn.jf}, {insn.k:#x}", "?"
        lines.append(f"{pc:4d}: {text:<36} ; {note}")
    return "\n".join(lines)


def _name_constant(loaded: str, k: int) -> str:
    if loaded == "arch":
        return "AUDIT_ARCH_X86_64" if k == AUDIT_ARCH_X86_64 else f"arch {k:#x}"
    if loaded == "nr":
        if k == X32_SYSCALL_BIT:
            return "X32_SYSCALL_BIT"
        return _SYSCALL_NAMES.get(k, f"syscall {k}")
    if loaded.startswith("args"):
        return (_CLONE_NAMES.get(k) or _IOCTL_NAMES.get(k) or _FAMILY_NAMES.get(k)
                or f"{loaded} == {k:#x}")
    return f"A == {k:#x}"


# --- installing ------------------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_libc.prctl.restype = ctypes.c_int


@dataclass(frozen=True)
class SeccompStatus:
    """What :func:`install` loaded; ``str()`` of it is one line."""

    program: tuple[Insn, ...]
    denied: tuple[str, ...]
    allow_fork: bool = False

    def __str__(self) -> str:
        clone = "" if self.allow_fork else "fork-like clone, "
        return (f"seccomp: {len(self.program)}-instruction filter installed "
                f"({len(self.denied)} calls refused with EPERM, plus {clone}"
                "namespaces, terminal injection and foreign socket families)")


def available() -> bool:
    """True when this kernel can install a filter that kills the whole process."""
    if _libc.prctl(ctypes.c_int(PR_GET_SECCOMP), ctypes.c_ulong(0), ctypes.c_ulong(0),
                   ctypes.c_ulong(0), ctypes.c_ulong(0)) < 0:
        return False     # no CONFIG_SECCOMP
    action = ctypes.c_uint32(SECCOMP_RET_KILL_PROCESS)
    result = _libc.syscall(ctypes.c_long(SYS_seccomp), ctypes.c_uint(SECCOMP_GET_ACTION_AVAIL),
                           ctypes.c_uint(0), ctypes.byref(action))
    return result == 0


def install(denied: Iterable[str] = tuple(DENIED_SYSCALLS),
            socket_families: Iterable[int] = ALLOWED_SOCKET_FAMILIES, *,
            allow_fork: bool = False) -> SeccompStatus:
    """Install the filter on every thread of this process, irreversibly.
    A second call stacks a second filter (see *allow_fork* in
    :func:`build_filter` and the module docstring)."""
    denied = tuple(dict.fromkeys(denied))
    program = build_filter(denied, socket_families, allow_fork=allow_fork)
    if not available():
        raise SeccompError(f"kernel {os.uname().release} cannot install seccomp filters "
                           "with SECCOMP_RET_KILL_PROCESS (needs Linux 4.14 built with "
                           "CONFIG_SECCOMP_FILTER)")
    if _libc.prctl(ctypes.c_int(PR_SET_NO_NEW_PRIVS), ctypes.c_ulong(1), ctypes.c_ulong(0),
                   ctypes.c_ulong(0), ctypes.c_ulong(0)) != 0:
        err = ctypes.get_errno()
        raise SeccompError(f"prctl(PR_SET_NO_NEW_PRIVS) failed: {os.strerror(err)}")
    instructions = (sock_filter * len(program))(*(sock_filter(*insn) for insn in program))
    prog = sock_fprog(len(program), instructions)
    result = _libc.syscall(ctypes.c_long(SYS_seccomp), ctypes.c_uint(SECCOMP_SET_MODE_FILTER),
                           ctypes.c_uint(SECCOMP_FILTER_FLAG_TSYNC), ctypes.byref(prog))
    if result < 0:
        err = ctypes.get_errno()
        raise SeccompError(f"seccomp(SECCOMP_SET_MODE_FILTER, TSYNC) of a "
                           f"{len(program)}-instruction filter failed: "
                           f"{errno.errorcode.get(err, err)}: {os.strerror(err)}")
    if result > 0:
        raise SeccompError(f"seccomp TSYNC failed: thread {result} could not take the "
                           "filter (it has a conflicting filter); install before "
                           "starting threads")
    return SeccompStatus(tuple(program), denied, allow_fork)


__all__ = [
    "build_filter", "disassemble", "describe_action", "install", "available",
    "bpf_stmt", "bpf_jump", "Insn", "SeccompStatus", "SeccompError",
    "DENIED_SYSCALLS", "SYSCALL_NUMBERS", "ALLOWED_SOCKET_FAMILIES",
]

if __name__ == "__main__":
    print(disassemble(build_filter()))
