"""Build the C test programs in ``tests/programs`` with every toolchain we can find.

The programs here are run natively and under minikvm, and their stdout,
stderr and exit status compared.  Each is built in several *variants*,
because the C libraries start a process differently (glibc's static start-up
relocates itself when built as static-PIE, musl reads the auxiliary vector
its own way), and minikvm has to run all of them:

===================  ==========================  =============================
variant              command                     what comes out
===================  ==========================  =============================
``glibc-static``     ``cc -static -O2``          ET_EXEC at 0x400000
``glibc-static-pie`` ``cc -static-pie -O2``      ET_DYN, no interpreter
``musl-static``      ``musl-gcc -static -O2``    ET_EXEC, musl libc
``glibc-dynamic``    ``cc -O2``                  ET_DYN *with* PT_INTERP: runs
                                                 through the host's ld.so
                                                 (tests/test_dynamic.py; not
                                                 in :func:`available_variants`)
===================  ==========================  =============================

Use :func:`program` from a test: it builds once per session into a cache
directory and skips the test (with the reason) when a compiler or a static C
library is missing.  :func:`build` is the uncached step underneath.

A few programs drive a real library Debian ships as a static archive
(``libsqlite3.a``, ``libz.a``, ``liblua5.4.a``): :data:`LIBRARIES` holds the
flags each one needs and the package that has the archive.  Those archives
are built for glibc, so these programs have glibc variants only; a missing
package skips the test and names the package to install.

This is a helper module, not a conftest: import it as
``from tests.programs.build import program, available_variants``.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

SOURCE_DIR = Path(__file__).resolve().parent

#: The programs compared natively and under minikvm (``stackdump.c`` is not
#: one of them: it prints the kernel's stack layout for tests/test_stack.py).
PROGRAMS = ("hello", "args", "files", "malloc", "clock", "random", "segv", "abort",
            "exitcode", "stdin", "spin", "getpid_loop")

#: variant -> compiler command (the source and ``-o OUT`` are appended).
COMMANDS: dict[str, list[str]] = {
    "glibc-static": ["cc", "-static", "-O2", "-Wall"],
    "glibc-static-pie": ["cc", "-static-pie", "-O2", "-Wall"],
    "musl-static": ["musl-gcc", "-static", "-O2", "-Wall"],
    "glibc-dynamic": ["cc", "-O2", "-Wall"],
    # The small libcs: only the simplest programs are built with them
    # (tests/test_other_libcs.py), to show their start-up code runs too.
    "dietlibc-static": ["diet", "gcc", "-static", "-O2", "-Wall"],
    "klibc-static": ["klcc", "-static", "-O2", "-Wall"],
}
#: The variants minikvm runs (every static one).
STATIC_VARIANTS = ("glibc-static", "glibc-static-pie", "musl-static")
#: Where :func:`program` keeps its builds between sessions (override with
#: ``MINIKVM_TEST_BUILD_DIR``); a build is redone when its source or this
#: file is newer than the binary.  One directory per checkout: two checkouts
#: (git worktrees) with different versions of a source would otherwise take
#: each other's binaries, whichever was built last.
DEFAULT_BUILD_DIR = Path(os.environ.get(
    "MINIKVM_TEST_BUILD_DIR",
    Path(tempfile.gettempdir()) / f"minikvm-test-programs-{os.getuid()}-"
    f"{hashlib.sha256(os.fsencode(Path(__file__).resolve().parents[2])).hexdigest()[:8]}"))
COMPILE_TIMEOUT_SECONDS = 120

_PROBE_SOURCE = "int main(void) { return 0; }\n"


@dataclass(frozen=True)
class Library:
    """A static library a program in this directory links against."""

    flags: tuple[str, ...]   # appended after the source: -I, -l
    package: str             # the Debian package with its header and .a


#: program name -> the library it drives (tests/test_real_programs.py).
LIBRARIES: dict[str, Library] = {
    "sqlite_exec": Library(("-lsqlite3", "-lm"), "libsqlite3-dev"),
    "zlib_gzip": Library(("-lz",), "zlib1g-dev"),
    "lua_script": Library(("-I/usr/include/lua5.4", "-llua5.4", "-lm"), "liblua5.4-dev"),
}


@functools.cache
def unavailable_reason(variant: str) -> str:
    """Why *variant* cannot be built here, or ``""`` when it can.

    Having the compiler is not enough (``cc -static`` also needs ``libc.a``,
    ``-static-pie`` needs glibc's ``rcrt1.o``), so this compiles a one-line
    program once and reports the compiler's own complaint if that fails.
    """
    if variant not in COMMANDS:
        raise ValueError(f"unknown variant {variant!r}: expected one of {', '.join(COMMANDS)}")
    compiler = COMMANDS[variant][0]
    if shutil.which(compiler) is None:
        package = {"musl-gcc": "musl-tools", "diet": "dietlibc-dev",
                   "klcc": "libklibc-dev"}.get(compiler, "gcc and libc6-dev")
        return f"{variant}: {compiler} not found (apt-get install {package})"
    with tempfile.TemporaryDirectory(prefix="minikvm-probe-") as scratch:
        source = Path(scratch, "probe.c")
        source.write_text(_PROBE_SOURCE)
        result = _compile(variant, source, Path(scratch, "probe"))
        if result.returncode != 0:
            first_line = (result.stderr.strip().splitlines() or ["no output"])[-1]
            return f"{variant}: {' '.join(COMMANDS[variant])} cannot link a program: {first_line}"
    return ""


@functools.cache
def library_unavailable_reason(name: str, variant: str) -> str:
    """Why program *name* (one of :data:`LIBRARIES`) cannot be linked as
    *variant* here, or ``""`` when it can: a probe is linked with the
    library's flags, which fails when the static archive is missing."""
    reason = unavailable_reason(variant)
    if reason:
        return reason
    library = LIBRARIES[name]
    with tempfile.TemporaryDirectory(prefix="minikvm-probe-") as scratch:
        source = Path(scratch, "probe.c")
        source.write_text(_PROBE_SOURCE)
        result = _compile(variant, source, Path(scratch, "probe"), library.flags)
        if result.returncode != 0:
            lines = result.stderr.strip().splitlines() or ["no output"]
            complaint = next((line for line in lines if "cannot find" in line), lines[-1])
            return (f"{name} ({variant}): cannot link {' '.join(library.flags)}: {complaint} "
                    f"(Debian's {library.package} has the static library, for glibc)")
    return ""


def available_variants() -> list[str]:
    """The static variants that can be built on this machine."""
    return [variant for variant in STATIC_VARIANTS if not unavailable_reason(variant)]


def build(source: Path, out_dir: Path, variant: str, flags: tuple[str, ...] = ()) -> Path:
    """Compile *source* as *variant* into *out_dir*; return the executable's path.

    The output is named ``<stem>-<variant>``.  It is rebuilt only when it is
    older than *source*, a header beside it or this file.  The compiler writes to a temporary
    name that is then renamed, so concurrent test processes never see a
    half-written binary.  *flags* come after the source (libraries to
    link).  Skips the calling test when *variant* cannot be built here; fails
    it (with the compiler's output) when *source* does not compile.
    """
    reason = unavailable_reason(variant)
    if reason:
        pytest.skip(reason)
    source = Path(source)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    output = out_dir / f"{source.stem}-{variant}"
    headers = [header.stat().st_mtime for header in source.parent.glob("*.h")]
    newest_input = max(source.stat().st_mtime, Path(__file__).stat().st_mtime, *headers)
    if output.exists() and output.stat().st_mtime >= newest_input:
        return output
    partial = output.with_name(f"{output.name}.{os.getpid()}.partial")
    result = _compile(variant, source, partial, flags)
    if result.returncode != 0:
        partial.unlink(missing_ok=True)
        pytest.fail(f"{' '.join(result.args)} failed:\n{result.stderr}", pytrace=False)
    os.replace(partial, output)
    return output


@functools.cache
def program(name: str, variant: str = "glibc-static") -> Path:
    """The executable of ``tests/programs/<name>.c`` as *variant*, built once per session.

    A program in :data:`LIBRARIES` is linked with its library, and skipped
    (naming the package) when the library is not installed.
    """
    if name not in LIBRARIES:
        return build(SOURCE_DIR / f"{name}.c", DEFAULT_BUILD_DIR, variant)
    reason = library_unavailable_reason(name, variant)
    if reason:
        pytest.skip(reason)
    return build(SOURCE_DIR / f"{name}.c", DEFAULT_BUILD_DIR, variant, LIBRARIES[name].flags)


#: Where the Go sources are (tests/test_go.py), and the build's time limit:
#: a first build compiles the parts of Go's standard library it needs.
GO_SOURCE_DIR = SOURCE_DIR / "go"
GO_BUILD_TIMEOUT_SECONDS = 300


@functools.cache
def go_unavailable_reason() -> str:
    """Why Go programs cannot be built here, or ``""`` when they can."""
    if shutil.which("go") is None:
        return "go not found (apt-get install golang-go)"
    return ""


@functools.cache
def go_program(name: str) -> Path:
    """The static executable of ``tests/programs/go/<name>.go``, built once
    (``CGO_ENABLED=0``: no C library, no interpreter) into the cache
    directory, rebuilt when the source or this file is newer.

    ``go`` wants writable HOME, GOCACHE and GOPATH directories: they are
    kept in the cache directory too, so a second session reuses the
    compiled standard library.  Skips the test when ``go`` is missing.
    """
    reason = go_unavailable_reason()
    if reason:
        pytest.skip(reason)
    source = GO_SOURCE_DIR / f"{name}.go"
    out_dir = DEFAULT_BUILD_DIR / "go"
    out_dir.mkdir(parents=True, exist_ok=True)
    output = out_dir / name
    headers = [header.stat().st_mtime for header in source.parent.glob("*.h")]
    newest_input = max(source.stat().st_mtime, Path(__file__).stat().st_mtime, *headers)
    if output.exists() and output.stat().st_mtime >= newest_input:
        return output
    env = dict(os.environ, CGO_ENABLED="0", GOFLAGS="-mod=mod", HOME=str(out_dir),
               GOCACHE=str(out_dir / "cache"), GOPATH=str(out_dir / "gopath"))
    partial = output.with_name(f"{output.name}.{os.getpid()}.partial")
    result = subprocess.run(["go", "build", "-o", str(partial), str(source)], env=env,
                            cwd=out_dir, capture_output=True, text=True,
                            timeout=GO_BUILD_TIMEOUT_SECONDS, check=False)
    if result.returncode != 0:
        partial.unlink(missing_ok=True)
        pytest.fail(f"go build {source.name} failed:\n{result.stderr}", pytrace=False)
    os.replace(partial, output)
    return output


def _compile(variant: str, source: Path, output: Path,
             flags: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    command = [*COMMANDS[variant], str(source), "-o", str(output), *flags]
    return subprocess.run(command, capture_output=True, text=True,
                          timeout=COMPILE_TIMEOUT_SECONDS, check=False)
