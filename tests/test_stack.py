"""Tests of minikvm.process.stack: the initial process stack, pure, no KVM.

Round trips (build, decode, compare every field), the layout rules of
create_elf_tables() one by one, the auxv constants pinned against the C
headers, and an oracle test: a C program (tests/programs/stackdump.c) prints
the shape of the stack the real kernel gave it, and build_initial_stack()
must give the same shape for the same strings.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from minikvm.process import stack
from minikvm.process.elf import load_elf
from minikvm.process.stack import (AT_BASE, AT_CLKTCK, AT_EGID, AT_ENTRY, AT_EUID, AT_EXECFN,
                                   AT_FLAGS, AT_GID, AT_HWCAP, AT_HWCAP2, AT_IGNORE, AT_MINSIGSTKSZ,
                                   AT_NULL, AT_PAGESZ, AT_PHDR, AT_PHENT, AT_PHNUM, AT_PLATFORM,
                                   AT_RANDOM, AT_SECURE, AT_UID, AUXV_NAMES, MAX_ARG_STRLEN,
                                   PLATFORM, build_initial_stack, decode_initial_stack,
                                   standard_auxv)
from tests.programs.build import program
from tests.programs.tiny_elf import ET_DYN, tiny_elf

STACK_TOP = 0x7FFF_FFFF_F000
RANDOM = bytes(range(0xA0, 0xB0))
AUXV = [(AT_PAGESZ, 4096), (AT_UID, 1000), (AT_ENTRY, 0x401000)]


def build(argv: list[bytes], envp: list[bytes], auxv: list[tuple[int, int]] = AUXV,
          execfn: bytes = b"/bin/prog", platform: bytes | None = PLATFORM,
          stack_top: int = STACK_TOP) -> tuple[bytes, int]:
    return build_initial_stack(stack_top, argv, envp, auxv, execfn, platform, RANDOM)


def words(image: bytes, base: int, address: int, count: int) -> list[int]:
    return list(struct.unpack_from(f"<{count}Q", image, address - base))


CASES = [
    ([b"/bin/prog"], []),
    ([b"/bin/prog", b"hello", b"world"], [b"HOME=/root", b"PATH=/bin"]),
    ([b"x"], [b"A=1"]),
    ([b"prog", b""], [b"EMPTY="]),                   # empty strings are strings too
    ([b"prog", "h\u00e9llo".encode()], []),          # bytes, not text: UTF-8 passes through
    ([b"a" * n for n in range(1, 40)], [b"E%d=%d" % (i, i) for i in range(25)]),
]


@pytest.mark.parametrize("argv, envp", CASES)
def test_round_trip(argv: list[bytes], envp: list[bytes]) -> None:
    image, sp = build(argv, envp)
    assert sp + len(image) == STACK_TOP            # the image ends at the top of the stack
    assert sp % 16 == 0                            # ABI §3.4.1: rsp is 16-byte aligned
    decoded = decode_initial_stack(image, sp)
    assert decoded.stack_pointer == sp
    assert decoded.argc == len(argv)
    assert decoded.argv == argv
    assert decoded.envp == envp
    assert decoded.execfn == b"/bin/prog"
    assert decoded.platform == b"x86_64"
    assert decoded.random_bytes == RANDOM
    assert [key for key, _ in decoded.auxv] == [AT_PAGESZ, AT_UID, AT_ENTRY, AT_RANDOM,
                                                AT_EXECFN, AT_PLATFORM]
    assert decoded.auxv[:3] == AUXV
    assert decoded.aux(AT_UID) == 1000 and decoded.aux(AT_HWCAP) is None


def test_layout_rules() -> None:
    """Each piece where fs/exec.c and create_elf_tables() put it."""
    argv, envp = [b"/bin/prog", b"-v"], [b"A=1", b"BB=22"]
    image, sp = build(argv, envp)
    decoded = decode_initial_stack(image, sp)
    argc, *pointers = words(image, sp, sp, 1 + 3 + 3)
    argv_pointers, envp_pointers = pointers[0:2], pointers[3:5]
    assert argc == 2 and pointers[2] == 0 and pointers[5] == 0
    # The top: an 8-byte zero end marker, and the execfn string right below it.
    assert image[-8:] == bytes(8)
    execfn_address = decoded.aux(AT_EXECFN)
    assert execfn_address == STACK_TOP - 8 - len(b"/bin/prog\0")
    # Strings, ascending: argv[0], argv[1], envp[0], envp[1], execfn, packed.
    expected = argv_pointers[0]
    for address, string in zip([*argv_pointers, *envp_pointers, execfn_address],
                               [*argv, *envp, b"/bin/prog"]):
        assert address == expected
        assert image[address - sp:address - sp + len(string) + 1] == string + b"\0"
        expected += len(string) + 1
    # Below the strings, aligned down to 16: the platform string, then the
    # random bytes immediately below it.
    platform_address = decoded.aux(AT_PLATFORM)
    assert platform_address == (argv_pointers[0] & ~15) - len(b"x86_64\0")
    assert decoded.aux(AT_RANDOM) == platform_address - 16
    # The auxv follows envp's NULL; between its AT_NULL and the random bytes,
    # fewer than 16 bytes of zero padding.
    auxv_end = decoded.auxv_address + 16 * (len(decoded.auxv) + 1)
    assert words(image, sp, auxv_end - 16, 2) == [AT_NULL, 0]
    padding = decoded.aux(AT_RANDOM) - auxv_end
    assert 0 <= padding < 16
    assert image[auxv_end - sp:auxv_end - sp + padding] == bytes(padding)


@pytest.mark.parametrize("argc", range(1, 5))
@pytest.mark.parametrize("envc", range(0, 3))
def test_alignment_for_every_padding(argc: int, envc: int) -> None:
    # Sweep string lengths so that every residue mod 16 of the string area
    # and both parities of the pointer count occur.
    for length in range(1, 33):
        argv = [b"p" * length] * argc
        image, sp = build(argv, [b"E=" + b"x" * length] * envc)
        assert sp % 16 == 0
        decoded = decode_initial_stack(image, sp)
        assert decoded.argv == argv
        assert 0 <= decoded.aux(AT_RANDOM) - (decoded.auxv_address +
                                               16 * (len(decoded.auxv) + 1)) < 16


def test_empty_argv_becomes_one_empty_string() -> None:
    image, sp = build([], [b"A=1"])
    decoded = decode_initial_stack(image, sp)
    assert decoded.argc == 1 and decoded.argv == [b""]


def test_without_platform() -> None:
    image, sp = build([b"prog"], [], platform=None)
    decoded = decode_initial_stack(image, sp)
    assert decoded.platform is None and decoded.aux(AT_PLATFORM) is None
    assert decoded.random_bytes == RANDOM


def test_lower_stack_top() -> None:
    image, sp = build([b"prog"], [], stack_top=0x10_0000)
    assert sp + len(image) == 0x10_0000
    assert decode_initial_stack(image, sp).argv == [b"prog"]


@pytest.mark.parametrize("change, message", [
    (dict(argv=[b"a\0b"]), "contains a NUL byte"),
    (dict(envp=[b"A=\0"]), "contains a NUL byte"),
    (dict(execfn=b"/bin/\0"), "contains a NUL byte"),
    (dict(argv=[b"x" * MAX_ARG_STRLEN]), "longer than MAX_ARG_STRLEN .* E2BIG"),
    (dict(auxv=[(AT_RANDOM, 0)]), "AT_RANDOM is added by build_initial_stack"),
    (dict(auxv=[(AT_EXECFN, 0)]), "AT_EXECFN is added by build_initial_stack"),
    (dict(auxv=[(AT_PLATFORM, 0)]), "AT_PLATFORM is added by build_initial_stack"),
    (dict(auxv=[(AT_NULL, 0)]), "AT_NULL is added by build_initial_stack"),
    (dict(stack_top=STACK_TOP - 8), "not 16-byte aligned"),
    (dict(random_bytes=bytes(8)), "exactly 16 random bytes, got 8"),
])
def test_refusals(change: dict, message: str) -> None:
    arguments = dict(stack_top=STACK_TOP, argv=[b"prog"], envp=[], auxv=[], execfn=b"prog",
                     platform=PLATFORM, random_bytes=RANDOM)
    arguments.update(change)
    with pytest.raises(ValueError, match=message):
        build_initial_stack(**arguments)


def test_decode_checks_its_input() -> None:
    image, sp = build([b"prog"], [])
    with pytest.raises(ValueError, match="not 16-byte aligned"):
        decode_initial_stack(image, sp, stack_pointer=sp + 8)
    with pytest.raises(ValueError, match="outside the image"):
        decode_initial_stack(image[:24], sp)      # cut inside the tables
    broken = bytearray(image)
    struct.pack_into("<Q", broken, 0, 5)             # argc says 5, argv has 1
    with pytest.raises(ValueError, match="argc is 5 but argv has 1 entries"):
        decode_initial_stack(bytes(broken), sp)


# --- standard_auxv ----------------------------------------------------------------

def test_standard_auxv() -> None:
    image = load_elf(tiny_elf())
    auxv = standard_auxv(image, hwcap=0x178BFBFF, hwcap2=2, uid=1000, gid=100,
                         minsigstksz=3376)
    assert auxv == [
        (AT_MINSIGSTKSZ, 3376), (AT_HWCAP, 0x178BFBFF), (AT_PAGESZ, 4096), (AT_CLKTCK, 100),
        (AT_PHDR, 0x400040), (AT_PHENT, 56), (AT_PHNUM, 3), (AT_BASE, 0), (AT_FLAGS, 0),
        (AT_ENTRY, 0x400200), (AT_UID, 1000), (AT_EUID, 1000), (AT_GID, 100),
        (AT_EGID, 100), (AT_SECURE, 0), (AT_HWCAP2, 2),
    ]
    assert dict(standard_auxv(image, uid=1, euid=0, gid=2, egid=3, secure=True))[
        AT_EUID] == 0
    stack_image, sp = build_initial_stack(STACK_TOP, [b"prog"], [], auxv, b"prog", PLATFORM,
                                          RANDOM)
    assert decode_initial_stack(stack_image, sp).auxv[:len(auxv)] == auxv


def test_standard_auxv_follows_the_load_bias() -> None:
    image = load_elf(tiny_elf(ET_DYN, base=0), bias=0x7000_0000_0000)
    auxv = dict(standard_auxv(image))
    assert auxv[AT_PHDR] == 0x7000_0000_0040 and auxv[AT_ENTRY] == 0x7000_0000_0200
    assert auxv[AT_BASE] == 0           # no interpreter


# --- the constants, pinned against the C headers -------------------------------------

@pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler (cc)")
def test_auxv_constants_match_the_headers(tmp_path: Path) -> None:
    checks = "\n".join(f"#ifdef {name}\n    printf(\"{name} %d\\n\", {name});\n#endif"
                       for name in AUXV_NAMES.values())
    source = tmp_path / "auxv.c"
    source.write_text("#include <stdio.h>\n#include <elf.h>\n#include <sys/auxv.h>\n"
                      "#include <linux/auxvec.h>\n"
                      f"int main(void) {{\n{checks}\n    return 0;\n}}\n")
    subprocess.run(["cc", str(source), "-o", str(tmp_path / "auxv")], check=True,
                   capture_output=True)
    output = subprocess.run([str(tmp_path / "auxv")], capture_output=True, text=True,
                            check=True).stdout
    from_headers = dict(line.split() for line in output.splitlines())
    assert len(from_headers) >= 25        # the headers define most of them
    for name, value in from_headers.items():
        assert getattr(stack, name) == int(value), name


# --- the oracle: the real kernel's stack ------------------------------------------

def describe(image: bytes, sp: int, stack_top: int) -> str:
    """What tests/programs/stackdump.c prints, computed from our image."""
    decoded = decode_initial_stack(image, sp)
    argv_pointers = words(image, sp, sp + 8, decoded.argc)
    envp_pointers = words(image, sp, sp + 8 * (decoded.argc + 2), len(decoded.envp))
    top = decoded.aux(AT_EXECFN) + len(decoded.execfn) + 1 + 8
    assert top == stack_top
    random_address, platform = decoded.aux(AT_RANDOM), decoded.aux(AT_PLATFORM)
    lines = [f"sp % 16: {sp % 16}", f"argc: {decoded.argc}", f"envc: {len(decoded.envp)}",
             f"auxv entries: {len(decoded.auxv)}", f"top % 4096: {top % 4096}",
             f"end marker: {words(image, sp, top - 8, 1)[0]}"]
    lines += [f"argv[{i}]: top-{top - p}" for i, p in enumerate(argv_pointers)]
    lines += [f"envp[{i}]: top-{top - p}" for i, p in enumerate(envp_pointers)]
    lines += [f"execfn: top-{top - decoded.aux(AT_EXECFN)}",
              f"platform: {decoded.platform.decode()}",
              f"random: platform-{platform - random_address}",
              f"auxv: sp+{decoded.auxv_address - sp}",
              f"random: sp+{random_address - sp}",
              f"padding below platform: "
              f"{random_address - (decoded.auxv_address + 16 * (len(decoded.auxv) + 1))}"]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("variant", ["glibc-static", "musl-static", "glibc-static-pie"])
@pytest.mark.parametrize("argv_tail, environment", [
    ([], {}),
    (["x", "yy"], {"A": "1", "BB": "22"}),
    (["a" * 13, "", "b" * 7], {"LONGER_NAME": "v" * 30, "E": ""}),
])
def test_same_shape_as_the_kernel(variant: str, argv_tail: list[str],
                                  environment: dict[str, str]) -> None:
    path = program("stackdump", variant)
    native = subprocess.run([str(path), *argv_tail], env=environment, capture_output=True,
                            text=True, check=True).stdout
    auxv_count = int(next(line for line in native.splitlines()
                          if line.startswith("auxv entries:")).split(":")[1])
    # The same strings, and as many auxv entries as the kernel gave (the
    # values do not change the shape; three are the string entries).
    argv = [os.fsencode(path), *map(os.fsencode, argv_tail)]
    envp = [f"{key}={value}".encode() for key, value in environment.items()]
    image, sp = build_initial_stack(STACK_TOP, argv, envp, [(AT_IGNORE, 0)] * (auxv_count - 3),
                                    os.fsencode(path), PLATFORM, RANDOM)
    assert describe(image, sp, STACK_TOP) == native
