"""minikvm/linux_abi.py against the installed kernel headers, number by number.

As ``tests/test_ioctl_abi.py`` does for ``<linux/kvm.h>``: the test writes a
C program that prints, for every integer constant of ``linux_abi.py`` that
the uapi headers define, the value the compiler computes, and the size of
every struct in :data:`~minikvm.linux_abi.STRUCTS`; compiles it with gcc;
and compares each line.  Only the kernel's headers are included (never
glibc's ``<fcntl.h>``, whose ``O_LARGEFILE`` is 0 in 64-bit user space),
because the guest speaks to the kernel.

A few names have no uapi macro and are checked by what they are made of:
:data:`MODE_BITS` is ``S_ISUID|S_ISGID|S_ISVTX|S_IRWXUGO``; the time units,
KTIME_MAX (a kernel-internal limit), the stack alignment and the size of the kernel's sigset (64 signals) are
definitions of the ABI that no uapi header exports, left to their comments.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from minikvm import linux_abi

HEADERS = ("linux/fcntl.h", "linux/limits.h", "linux/stat.h", "linux/time_types.h", "linux/uio.h", "linux/prctl.h",
           "linux/binfmts.h", "asm/termbits.h", "asm/ioctls.h", "asm/termios.h")
#: Names whose C spelling is an expression rather than the same macro.
EXPRESSIONS = {
    "MODE_BITS": "(S_ISUID | S_ISGID | S_ISVTX | S_IRWXU | S_IRWXG | S_IRWXO)",
}
#: Definitions of the ABI with no macro in any header.
#: (x86's uapi ``<asm/signal.h>`` exports only the old 32-signal ``NSIG`` to
#: user space, not the kernel's ``_NSIG`` of 64 that SIGSET_SIZE is made of.)
NOT_IN_HEADERS = {"NSEC_PER_SEC", "USEC_PER_SEC", "KTIME_MAX", "STACK_ALIGNMENT", "SIGSET_SIZE"}


def constants() -> dict[str, int]:
    return {name: value for name, value in vars(linux_abi).items()
            if name.isupper() and isinstance(value, int) and not isinstance(value, bool)
            and name not in NOT_IN_HEADERS}


def c_program() -> str:
    lines = [f"#include <{header}>" for header in HEADERS]
    lines += ["#include <stdio.h>", "int main(void) {"]
    for name in constants():
        expression = EXPRESSIONS.get(name, name)
        lines.append(f'    printf("{name} %lld\\n", (long long)({expression}));')
    for name, (_, c_type) in linux_abi.STRUCTS.items():
        lines.append(f'    printf("sizeof {name} %zu\\n", sizeof({c_type}));')
    lines += ["    return 0;", "}"]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def kernel_values(tmp_path_factory: pytest.TempPathFactory) -> dict[str, int]:
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed: apt-get install gcc libc6-dev")
    directory = tmp_path_factory.mktemp("linux_abi")
    source = directory / "abi.c"
    source.write_text(c_program())
    binary = directory / "abi"
    build = subprocess.run(["gcc", "-o", str(binary), str(source)], capture_output=True, text=True)
    assert build.returncode == 0, f"the ABI program did not compile:\n{build.stderr}"
    output = subprocess.run([str(binary)], capture_output=True, text=True, check=True).stdout
    values = {}
    for line in output.splitlines():
        name, value = line.rsplit(" ", 1)
        values[name] = int(value)
    return values


@pytest.mark.parametrize("name", sorted(constants()))
def test_constant_matches_the_kernel(name: str, kernel_values: dict[str, int]) -> None:
    assert getattr(linux_abi, name) == kernel_values[name], (
        f"linux_abi.{name} is {getattr(linux_abi, name):#x}, the kernel headers say "
        f"{kernel_values[name]:#x}")


@pytest.mark.parametrize("name", sorted(linux_abi.STRUCTS))
def test_struct_size_matches_the_kernel(name: str, kernel_values: dict[str, int]) -> None:
    layout, c_type = linux_abi.STRUCTS[name]
    assert layout.size == kernel_values[f"sizeof {name}"], (
        f"linux_abi.{name} packs {layout.size} bytes, sizeof({c_type}) is "
        f"{kernel_values[f'sizeof {name}']}")


def test_the_program_checks_every_constant() -> None:
    """A constant added to linux_abi.py is checked without editing this file."""
    program = c_program()
    for name in constants():
        assert f'"{name} ' in program


def test_headers_exist() -> None:
    include = Path("/usr/include")
    if not include.is_dir():
        pytest.skip("no /usr/include: apt-get install linux-libc-dev")
    missing = [header for header in HEADERS
               if not (include / header).exists()
               and not (include / "x86_64-linux-gnu" / header).exists()]
    assert not missing, f"kernel headers missing: {missing} (apt-get install linux-libc-dev)"
