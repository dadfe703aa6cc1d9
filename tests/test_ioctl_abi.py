"""minikvm/ioctl.py against the installed ``<linux/kvm.h>``, number by number.

The test writes a C program that prints, for everything ``ioctl.py``
defines, the value the compiler computes from the real header: every ioctl
number, every ``KVM_*`` constant, every struct's size and every field's
offset and size, nested fields included (``kvm_sregs.cs.base``).  It
compiles the program with gcc in a temporary directory, runs it, and
compares each line with what ctypes says.  Nothing here is a copied
literal: if the mirror and the kernel disagree, this test names the line.

Two kinds of names in ``ioctl.py`` are not the kernel's, because the
kernel leaves them anonymous:

* ``kvm_run.u`` is the anonymous union of exit details; its members
  (``io``, ``mmio``, …) are direct members of ``struct kvm_run`` in C;
* ``kvm_run_io``, ``kvm_run_mmio``, … (every ``kvm_run_*`` struct) are the
  unnamed struct types of those members.  In C they are reached as
  ``struct kvm_run`` members: ``kvm_run_io.port`` is
  ``offsetof(struct kvm_run, io.port) - offsetof(struct kvm_run, io)``.

The test finds where each ``kvm_run_*`` type lives by walking
``ioctl.kvm_run``'s own fields, so a new exit struct needs no edit here.
"""

from __future__ import annotations

import ctypes
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from minikvm import ioctl

#: Prefixes of the integer constants in ioctl.py that are also macros of
#: <linux/kvm.h>.  (Private helpers and ctypes aliases are left out.)
CONSTANT_PREFIXES = ("KVM_EXIT_", "KVM_CAP_", "KVM_MEM_", "KVM_SYNC_X86_", "KVM_GUESTDBG_",
                     "KVM_INTERNAL_ERROR_", "KVM_SYSTEM_EVENT_", "KVM_CPUID_FLAG_")
CONSTANT_NAMES = ("KVMIO", "KVM_API_VERSION", "KVM_NR_INTERRUPTS", "KVM_MAX_XCRS",
                  "SYNC_REGS_SIZE_BYTES")
#: The Python names of structs the kernel leaves anonymous (see the docstring).
HELPER_PREFIX = "kvm_run_"

_COMPOUND = (ctypes.Structure, ctypes.Union)


@dataclass(frozen=True)
class Location:
    """Where a Python struct lives in C: inside ``struct <c_struct>`` at
    member path *path* ("" for the struct itself, None for the anonymous
    union, which has no name to take ``sizeof`` of)."""
    c_struct: str
    path: str | None


def helper_locations() -> dict[str, Location]:
    """Find every ``kvm_run_*`` type by walking ``kvm_run``'s fields."""
    locations: dict[str, Location] = {}
    anonymous = set(getattr(ioctl.kvm_run, "_anonymous_", ()))
    for name, ctype in ioctl.kvm_run._fields_:
        if ctype.__name__.startswith(HELPER_PREFIX):
            path = None if name in anonymous else name
            locations[ctype.__name__] = Location("kvm_run", path)
            if path is None:  # the anonymous union: its members are kvm_run's
                for member, member_type in ctype._fields_:
                    if member_type.__name__.startswith(HELPER_PREFIX):
                        locations[member_type.__name__] = Location("kvm_run", member)
    return locations


def locate(name: str, helpers: dict[str, Location]) -> Location:
    """A kernel struct is itself; a helper struct is where kvm_run holds it."""
    if name.startswith(HELPER_PREFIX):
        assert name in helpers, (
            f"ioctl.{name} looks like a kvm_run exit struct but kvm_run does not contain "
            f"it; add it to kvm_run_exit (or rename it if it is a kernel struct)")
        return helpers[name]
    return Location(name, "")


def c_member(location: Location, field_path: str) -> str:
    """The C member designator (``io.port``) for *field_path* inside *location*."""
    if not location.path:  # the struct itself, or the anonymous union's members
        return field_path
    return f"{location.path}.{field_path}"


def c_base_offset(location: Location, first_member: str) -> str:
    """C expression: the offset of *location* inside its C struct."""
    if location.path == "":
        return "0"
    member = first_member if location.path is None else location.path
    return f"offsetof(struct {location.c_struct}, {member})"


@dataclass
class Check:
    """One line of the C program's output and the value ctypes expects."""
    key: str
    c_expression: str
    expected: int


def field_checks(location: Location, ctype: type, prefix: str, key_prefix: str,
                 first_member: str, python_offset: int) -> list[Check]:
    """Offset and size checks for every field of *ctype*, recursing into
    nested structs and unions.  *prefix* is the C member path so far."""
    checks = []
    anonymous = set(getattr(ctype, "_anonymous_", ()))
    base = c_base_offset(location, first_member)
    for name, member_type in ctype._fields_:
        descriptor = getattr(ctype, name)
        offset = python_offset + descriptor.offset
        key = f"{key_prefix}.{name}"
        if name in anonymous:
            # No C name: its members are members of the enclosing struct.
            inner_first = member_type._fields_[0][0]
            c_path = prefix + inner_first
            checks.append(Check(f"offset {key}", f"offsetof(struct {location.c_struct}, "
                                f"{c_member(location, c_path)}) - {base}",
                                offset))
            checks += field_checks(location, member_type, prefix, key, first_member, offset)
            continue
        c_path = prefix + name
        designator = c_member(location, c_path)
        checks.append(Check(f"offset {key}",
                            f"offsetof(struct {location.c_struct}, {designator}) - {base}",
                            offset))
        checks.append(Check(f"size {key}",
                            f"sizeof(((struct {location.c_struct} *)0)->{designator})",
                            descriptor.size))
        if isinstance(member_type, type) and issubclass(member_type, _COMPOUND):
            checks += field_checks(location, member_type, c_path + ".", key, first_member,
                                   offset)
    return checks


def struct_checks() -> list[Check]:
    """Size and field checks for every struct in ``ioctl.STRUCTS``."""
    helpers = helper_locations()
    checks = []
    for name, ctype in sorted(ioctl.STRUCTS.items()):
        location = locate(name, helpers)
        first_member = ctype._fields_[0][0]
        if location.path is None:
            # The anonymous union has no name for sizeof; its size is the gap
            # up to the next member of kvm_run, which is what matters.
            parent_fields = [field for field, _ in ioctl.kvm_run._fields_]
            after = parent_fields[parent_fields.index(
                next(f for f, t in ioctl.kvm_run._fields_ if t is ctype)) + 1]
            size_c = (f"offsetof(struct kvm_run, {after}) - "
                      f"offsetof(struct kvm_run, {first_member})")
        elif location.path:
            size_c = f"sizeof(((struct {location.c_struct} *)0)->{location.path})"
        else:
            size_c = f"sizeof(struct {name})"
        checks.append(Check(f"size {name}", size_c, ctypes.sizeof(ctype)))
        checks += field_checks(location, ctype, "", name, first_member, 0)
    return checks


def ioctl_checks() -> list[Check]:
    """Every ioctl number, as the header's _IO/_IOR/_IOW/_IOWR macros compute it."""
    return [Check(f"ioctl {name}", name, getattr(ioctl, name))
            for names in ioctl.IOCTLS_BY_FD.values() for name in names]


def constant_checks() -> list[Check]:
    """Every KVM_* constant of ioctl.py that is a macro of the header."""
    names = [name for name, value in vars(ioctl).items()
             if isinstance(value, int) and not isinstance(value, bool)
             and (name.startswith(CONSTANT_PREFIXES) or name in CONSTANT_NAMES)
             and name not in ioctl.IOCTL_NAMES.values()]
    return [Check(f"constant {name}", name, getattr(ioctl, name)) for name in sorted(names)]


def c_program(checks: list[Check]) -> str:
    """A C program printing ``key value`` for every check, or ``key undefined``
    for a macro the installed header does not define."""
    lines = ["#include <stddef.h>", "#include <stdio.h>", "#include <linux/kvm.h>", "",
             "int main(void) {"]
    for check in checks:
        if check.key.startswith(("constant ", "ioctl ")):
            lines += [f"#ifdef {check.c_expression}",
                      f'    printf("%s %llu\\n", "{check.key}", '
                      f"(unsigned long long)({check.c_expression}));",
                      "#else",
                      f'    printf("%s undefined\\n", "{check.key}");',
                      "#endif"]
        else:
            lines.append(f'    printf("%s %llu\\n", "{check.key}", '
                         f"(unsigned long long)({check.c_expression}));")
    lines += ["    return 0;", "}", ""]
    return "\n".join(lines)


@pytest.fixture(scope="module")
def kernel_values(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Compile and run the C program once; map each key to its printed value."""
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc is not installed: the ABI cross-check compiles against "
                    "<linux/kvm.h> (apt-get install gcc libc6-dev linux-libc-dev)")
    if not Path("/usr/include/linux/kvm.h").exists():
        pytest.skip("<linux/kvm.h> is not installed (apt-get install linux-libc-dev)")
    directory = tmp_path_factory.mktemp("abi")
    source = directory / "kvm_abi.c"
    binary = directory / "kvm_abi"
    source.write_text(c_program(all_checks()))
    compiled = subprocess.run([gcc, "-Wall", "-o", str(binary), str(source)],
                              capture_output=True, text=True)
    assert compiled.returncode == 0, (
        f"the generated C program does not compile against the installed <linux/kvm.h>; "
        f"a struct or field name in minikvm/ioctl.py is not the kernel's:\n{compiled.stderr}")
    output = subprocess.run([str(binary)], capture_output=True, text=True, check=True).stdout
    return dict(line.rsplit(" ", 1) for line in output.splitlines())


def all_checks() -> list[Check]:
    return ioctl_checks() + constant_checks() + struct_checks()


def subject(check: Check) -> str:
    """What a check is about: a struct name, "ioctls" or "constants"."""
    kind, key = check.key.split(" ", 1)
    if kind in ("ioctl", "constant"):
        return f"{kind}s"
    return key.split(".", 1)[0]


CHECKS = all_checks()
SUBJECTS = sorted({subject(check) for check in CHECKS})


def test_every_struct_and_ioctl_is_checked() -> None:
    """The generated checks cover what the docs' tables show."""
    keys = {check.key for check in CHECKS}
    for name in ioctl.STRUCTS:
        assert f"size {name}" in keys
    for names in ioctl.IOCTLS_BY_FD.values():
        for name in names:
            assert f"ioctl {name}" in keys
    assert "offset kvm_run_io.port" in keys   # a member of the anonymous union's structs
    assert "offset kvm_sregs.cs.base" in keys  # a nested field


@pytest.mark.parametrize("subject_name", SUBJECTS)
def test_matches_linux_header(subject_name: str, kernel_values: dict[str, str]) -> None:
    """Every number about one struct (or all ioctls, or all constants)."""
    wrong, newer = [], []
    for check in CHECKS:
        if subject(check) != subject_name:
            continue
        kernel = kernel_values[check.key]
        if kernel == "undefined":
            newer.append(check.key.split()[1])
        elif int(kernel) != check.expected:
            wrong.append(f"{check.key}: minikvm/ioctl.py says {check.expected} "
                         f"({check.expected:#x}), <linux/kvm.h> says {kernel} "
                         f"({int(kernel):#x})")
    assert not wrong, ("minikvm/ioctl.py does not mirror the installed <linux/kvm.h>; "
                       "fix ioctl.py:\n" + "\n".join(wrong))
    if newer:
        pytest.skip(f"newer than the installed <linux/kvm.h>: {', '.join(newer)}")
