"""Layer 5 — the initial process stack, built exactly as Linux builds it, as pure code.

When a program starts, everything it knows about the world is on its stack:
``argc``, the ``argv`` and ``envp`` pointer arrays, and the *auxiliary
vector* (auxv) of ``(type, value)`` pairs through which the kernel tells the C
library where the program headers are (``AT_PHDR``), the page size, the
ids, 16 random bytes for stack canaries (``AT_RANDOM``) and more.  The
layout is fixed by the System V ABI AMD64 supplement, §3.4.1 "Initial Stack
and Register State"; the order of the pieces above the pointers is Linux's,
from ``copy_strings()`` in fs/exec.c and ``create_elf_tables()`` in
fs/binfmt_elf.c.  ``_start`` finds ``argc`` at ``rsp``, and ``rsp`` is
16-byte aligned there.

This module owns that layout, and nothing else: :func:`build_initial_stack`
turns strings and auxv entries into bytes plus the stack pointer, without a
VM; the caller copies the bytes to guest memory so that they end at the top
of the stack.  :func:`decode_initial_stack` reads such bytes back (for tests,
and to show a guest's stack).  :func:`standard_auxv` builds the entries that
depend on the program and the host.

The initial stack, from the top of the stack down (addresses decrease)::

    stack_top ->  +-------------------------------+
                  | 8 zero bytes: end marker      |  bprm->p starts one pointer below the top
                  | execfn string  "./prog\\0"     |  AT_EXECFN points here
                  | envp strings   "B=2\\0"        |  last environment string highest
                  |                "A=1\\0"        |
                  | argv strings   "x\\0"          |
                  |                "./prog\\0"     |  argv[0]: the lowest string
                  +-------------------------------+  arch_align_stack(): round down to 16
                  | platform string "x86_64\\0"    |  AT_PLATFORM points here
                  | 16 random bytes               |  AT_RANDOM points here
                  | padding (0-15 bytes)          |  so that rsp ends up 16-byte aligned
                  +-------------------------------+
                  | AT_NULL, 0                    |  auxv: (type, value) pairs, 8 bytes each,
                  | ...                           |        ending with AT_NULL
                  | AT_PHDR, 0x400040             |
                  +-------------------------------+
                  | NULL                          |
                  | envp[envc-1] ... envp[0]      |  pointers to the envp strings
                  +-------------------------------+
                  | NULL                          |
                  | argv[argc-1] ... argv[0]      |  pointers to the argv strings
                  +-------------------------------+
    rsp       ->  | argc                          |  16-byte aligned
                  +-------------------------------+

Two differences from Linux, both deliberate and invisible to a correct
program: Linux's ``arch_align_stack()`` also moves the stack down by a
random 0-8 KiB (ASLR), which minikvm leaves out so runs are reproducible;
and the three string-pointing entries (``AT_RANDOM``, ``AT_EXECFN``,
``AT_PLATFORM``) come at the end of the auxv, just before ``AT_NULL``, rather
than among the others (consumers look entries up by type, never by
position).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING

from minikvm.linux_abi import STACK_ALIGNMENT

if TYPE_CHECKING:
    from minikvm.process.elf import ElfImage

# --- auxiliary vector entry types (linux/auxvec.h, asm/auxvec.h, <elf.h>) ------
AT_NULL = 0               # end of the vector
AT_IGNORE = 1             # entry to be ignored
AT_EXECFD = 2             # file descriptor of the program (binfmt_misc only)
AT_PHDR = 3               # address of the program headers in memory
AT_PHENT = 4              # size of one program header (56)
AT_PHNUM = 5              # number of program headers
AT_PAGESZ = 6             # page size
AT_BASE = 7               # load address of the interpreter (0: none)
AT_FLAGS = 8              # flags (0)
AT_ENTRY = 9              # the program's entry point
AT_NOTELF = 10            # the program is not ELF
AT_UID = 11               # real user id
AT_EUID = 12              # effective user id
AT_GID = 13               # real group id
AT_EGID = 14              # effective group id
AT_PLATFORM = 15          # address of a string naming the CPU ("x86_64")
AT_HWCAP = 16             # CPU capabilities: on x86, CPUID.1:EDX
AT_CLKTCK = 17            # frequency of times(2): 100
AT_SECURE = 23            # 1 for set-uid programs: libc then ignores LD_* etc.
AT_BASE_PLATFORM = 24     # address of a string naming the real platform
AT_RANDOM = 25            # address of 16 random bytes (stack protector, pointer guard)
AT_HWCAP2 = 26            # more CPU capabilities: on x86, HWCAP2_RING3MWAIT, HWCAP2_FSGSBASE
AT_RSEQ_FEATURE_SIZE = 27  # size of struct rseq the kernel supports
AT_RSEQ_ALIGN = 28        # alignment struct rseq needs
AT_HWCAP3 = 29            # (unused on x86)
AT_HWCAP4 = 30            # (unused on x86)
AT_EXECFN = 31            # address of the file name passed to execve
AT_SYSINFO = 32           # i386 only: the vsyscall entry
AT_SYSINFO_EHDR = 33      # address of the vDSO's ELF header
AT_MINSIGSTKSZ = 51       # smallest stack a signal handler can run on

#: Name of every entry type, for printing an auxv.
AUXV_NAMES: dict[int, str] = {value: name for name, value in globals().items()
                              if name.startswith("AT_") and isinstance(value, int)}

#: The entries :func:`build_initial_stack` adds itself, because their values
#: are addresses of things it places on the stack.
STRING_ENTRIES = (AT_RANDOM, AT_EXECFN, AT_PLATFORM)

POINTER_SIZE = 8          # x86-64: every stack slot is 8 bytes
RANDOM_BYTES_SIZE = 16    # the size of AT_RANDOM's block
PLATFORM = b"x86_64"      # ELF_PLATFORM on x86-64: utsname()->machine
CLOCK_TICKS = 100         # AT_CLKTCK: USER_HZ, what times(2) counts in
#: AT_MINSIGSTKSZ when the caller has nothing better: MINSIGSTKSZ from
#: <asm/signal.h>.  Linux reports the real signal frame size, which grows
#: with the CPU's XSAVE area (3376 bytes with AVX-512).
DEFAULT_MINSIGSTKSZ = 2048
#: Linux's limit on one argument or environment string (MAX_ARG_STRLEN,
#: include/uapi/linux/binfmts.h): execve fails with E2BIG above it.
MAX_ARG_STRLEN = 32 * 4096


def standard_auxv(image: ElfImage, *, page_size: int = 4096, hwcap: int = 0,
                  hwcap2: int = 0, uid: int = 0, euid: int | None = None, gid: int = 0,
                  egid: int | None = None, secure: bool = False,
                  minsigstksz: int = DEFAULT_MINSIGSTKSZ,
                  interpreter_base: int = 0) -> list[tuple[int, int]]:
    """The auxv entries Linux gives a program, except the three that point
    at strings (:data:`STRING_ENTRIES`, added by :func:`build_initial_stack`).

    In the order of ``create_elf_tables()``.  ``AT_SYSINFO_EHDR`` is added by
    the caller once it has mapped the vDSO (:mod:`minikvm.process.vdso`).
    ``AT_PHDR``, ``AT_PHENT``, ``AT_PHNUM`` and ``AT_ENTRY`` describe the
    *program* even when an interpreter runs first: that is how ``ld.so``
    finds the program it is to link.  ``AT_BASE`` is where the interpreter
    was loaded (*interpreter_base*), 0 for a static program.  ``AT_SECURE``
    stays 0 unless *secure*: minikvm never raises privileges (a set-uid bit
    on the file changes nothing), so ``ld.so`` honours ``LD_LIBRARY_PATH``
    and ``LD_PRELOAD`` as for any ordinary program.  ``AT_PHDR`` is 0 if
    the program headers are not inside any loaded segment (libc then finds no
    TLS template; no normal linker output does this).  *euid*/*egid* default
    to *uid*/*gid*.  *hwcap* is CPUID.1:EDX, as the kernel reports it.
    """
    return [
        (AT_MINSIGSTKSZ, minsigstksz),
        (AT_HWCAP, hwcap),
        (AT_PAGESZ, page_size),
        (AT_CLKTCK, CLOCK_TICKS),
        (AT_PHDR, image.phdr_address or 0),
        (AT_PHENT, image.phent),
        (AT_PHNUM, image.phnum),
        (AT_BASE, interpreter_base),
        (AT_FLAGS, 0),
        (AT_ENTRY, image.entry),
        (AT_UID, uid),
        (AT_EUID, uid if euid is None else euid),
        (AT_GID, gid),
        (AT_EGID, gid if egid is None else egid),
        (AT_SECURE, int(secure)),
        (AT_HWCAP2, hwcap2),
    ]


def build_initial_stack(stack_top: int, argv: list[bytes], envp: list[bytes],
                        auxv: list[tuple[int, int]], execfn: bytes,
                        platform: bytes | None, random_bytes: bytes) -> tuple[bytes, int]:
    """The bytes of the initial stack, and the stack pointer to start with.

    The image is to be copied to ``[stack_pointer, stack_top)``: it begins at
    the stack pointer (where ``argc`` is) and ends at *stack_top*.
    *auxv* must not contain ``AT_NULL`` nor the :data:`STRING_ENTRIES`; they
    are appended, pointing at *execfn* (the path given to execve),
    *platform* (normally :data:`PLATFORM`; ``None``: no ``AT_PLATFORM``, as on
    architectures without ``ELF_PLATFORM``) and *random_bytes* (16 bytes from
    a real random source: the C library seeds its stack-protector canary and
    pointer guard with them).

    An empty *argv* becomes ``[b""]``, as Linux does since 5.18 (commit
    dcd46d897adb, "exec: Force single empty string when argv is empty"), so
    ``argv[0]`` always exists.  ``ValueError`` for what execve would refuse:
    a string containing NUL, or longer than ``MAX_ARG_STRLEN``.
    """
    if stack_top % STACK_ALIGNMENT:
        raise ValueError(f"stack top {stack_top:#x} is not {STACK_ALIGNMENT}-byte aligned")
    if len(random_bytes) != RANDOM_BYTES_SIZE:
        raise ValueError(f"AT_RANDOM needs exactly {RANDOM_BYTES_SIZE} random bytes, "
                         f"got {len(random_bytes)}")
    for entry_type, _ in auxv:
        if entry_type == AT_NULL or entry_type in STRING_ENTRIES:
            raise ValueError(f"auxv entry {AUXV_NAMES[entry_type]} is added by "
                             f"build_initial_stack; leave it out of the list")
    argv = list(argv) or [b""]
    for string in [*argv, *envp, execfn, platform or b""]:
        _check_string(string)

    writes: list[tuple[int, bytes]] = []       # (address, bytes) to place in the image

    def place_string(address: int, string: bytes) -> int:
        """Put a NUL-terminated copy of *string* just below *address*; return its start."""
        start = address - len(string) - 1
        writes.append((start, string + b"\0"))
        return start

    # fs/exec.c: bprm->p starts one pointer below the top (the end marker);
    # copy_string_kernel() puts the file name there, then copy_strings()
    # copies envp and then argv, each from its last string to its first.
    p = stack_top - POINTER_SIZE
    execfn_address = p = place_string(p, execfn)
    envp_addresses = []
    for string in reversed(envp):
        p = place_string(p, string)
        envp_addresses.append(p)
    envp_addresses.reverse()
    argv_addresses = []
    for string in reversed(argv):
        p = place_string(p, string)
        argv_addresses.append(p)
    argv_addresses.reverse()

    # fs/binfmt_elf.c, create_elf_tables(): align, then the platform string
    # and the random bytes, then the tables below them.
    p &= ~(STACK_ALIGNMENT - 1)
    full_auxv = list(auxv)
    full_auxv.append((AT_RANDOM, 0))            # its address is known below
    full_auxv.append((AT_EXECFN, execfn_address))
    if platform is not None:
        p = place_string(p, platform)
        full_auxv.append((AT_PLATFORM, p))
    p -= RANDOM_BYTES_SIZE
    writes.append((p, random_bytes))
    full_auxv[len(auxv)] = (AT_RANDOM, p)
    full_auxv.append((AT_NULL, 0))

    # STACK_ROUND(sp, items): room for argc, argv + NULL, envp + NULL under
    # the auxv, the whole rounded down so that argc lands 16-byte aligned.
    auxv_size = len(full_auxv) * 2 * POINTER_SIZE
    items = 1 + (len(argv) + 1) + (len(envp) + 1)
    stack_pointer = (p - auxv_size - items * POINTER_SIZE) & ~(STACK_ALIGNMENT - 1)

    words = [len(argv), *argv_addresses, 0, *envp_addresses, 0]
    for entry in full_auxv:
        words.extend(entry)
    writes.append((stack_pointer, struct.pack(f"<{len(words)}Q", *words)))

    image = bytearray(stack_top - stack_pointer)   # padding and the end marker stay zero
    for address, chunk in writes:
        offset = address - stack_pointer
        image[offset:offset + len(chunk)] = chunk
    return bytes(image), stack_pointer


def _check_string(string: bytes) -> None:
    """A string execve could pass: no NUL inside, not longer than MAX_ARG_STRLEN."""
    if b"\0" in string:
        raise ValueError(f"{string[:40]!r} contains a NUL byte: a C string cannot hold it")
    if len(string) + 1 > MAX_ARG_STRLEN:
        raise ValueError(f"a {len(string)}-byte string is longer than MAX_ARG_STRLEN "
                         f"({MAX_ARG_STRLEN}): execve would fail with E2BIG")


@dataclass(frozen=True)
class InitialStack:
    """An initial stack read back: what ``_start`` would see."""

    stack_pointer: int
    argc: int
    argv: list[bytes]
    envp: list[bytes]
    auxv: list[tuple[int, int]]          # in order, without the final AT_NULL
    auxv_address: int                     # where the first auxv pair is
    execfn: bytes | None                  # the strings the auxv points at
    platform: bytes | None
    random_bytes: bytes | None

    def aux(self, entry_type: int) -> int | None:
        """The value of the first auxv entry of *entry_type* (like getauxval(3))."""
        for key, value in self.auxv:
            if key == entry_type:
                return value
        return None


def decode_initial_stack(image: bytes, base: int,
                         stack_pointer: int | None = None) -> InitialStack:
    """Read argc, argv, envp and auxv back from stack bytes *image* placed at *base*.

    *stack_pointer* defaults to *base* (as :func:`build_initial_stack`
    returns it).  Every pointer is followed inside the image; ``ValueError``
    if one points outside it, if a table does not end, or if the stack
    pointer is not 16-byte aligned.
    """
    sp = base if stack_pointer is None else stack_pointer
    if sp % STACK_ALIGNMENT:
        raise ValueError(f"stack pointer {sp:#x} is not {STACK_ALIGNMENT}-byte aligned, "
                         f"as the ABI requires at process entry")
    end = base + len(image)

    def word(address: int) -> int:
        if not base <= address <= end - POINTER_SIZE:
            raise ValueError(f"stack slot {address:#x} is outside the image "
                             f"[{base:#x}, {end:#x})")
        return struct.unpack_from("<Q", image, address - base)[0]

    def string(address: int) -> bytes:
        if not base <= address < end:
            raise ValueError(f"string pointer {address:#x} is outside the image "
                             f"[{base:#x}, {end:#x})")
        terminator = image.find(b"\0", address - base)
        if terminator < 0:
            raise ValueError(f"string at {address:#x} has no terminating NUL")
        return bytes(image[address - base:terminator])

    def pointer_array(address: int) -> tuple[list[int], int]:
        pointers = []
        while (value := word(address)) != 0:
            pointers.append(value)
            address += POINTER_SIZE
        return pointers, address + POINTER_SIZE       # past the NULL

    argc = word(sp)
    argv_pointers, address = pointer_array(sp + POINTER_SIZE)
    if len(argv_pointers) != argc:
        raise ValueError(f"argc is {argc} but argv has {len(argv_pointers)} entries "
                         f"before its NULL")
    envp_pointers, auxv_address = pointer_array(address)
    auxv = []
    address = auxv_address
    while (entry_type := word(address)) != AT_NULL:
        auxv.append((entry_type, word(address + POINTER_SIZE)))
        address += 2 * POINTER_SIZE

    found = dict(auxv)
    random_address = found.get(AT_RANDOM)
    if random_address is not None:
        word(random_address)     # bounds check of the first and the last 8 bytes
        word(random_address + RANDOM_BYTES_SIZE - POINTER_SIZE)
    return InitialStack(
        stack_pointer=sp, argc=argc,
        argv=[string(p) for p in argv_pointers],
        envp=[string(p) for p in envp_pointers],
        auxv=auxv, auxv_address=auxv_address,
        execfn=string(found[AT_EXECFN]) if AT_EXECFN in found else None,
        platform=string(found[AT_PLATFORM]) if AT_PLATFORM in found else None,
        random_bytes=(bytes(image[random_address - base:
                                  random_address - base + RANDOM_BYTES_SIZE])
                      if random_address is not None else None),
    )
