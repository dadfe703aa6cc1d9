"""The vDSO (minikvm/process/vdso.py, vdso_code.py, machine/guest_clock.py).

The image is checked as an ELF file with pyelftools (its dynamic section,
both hash tables, the symbol versions glibc and musl ask for); then real
glibc and musl programs find their functions in it and read the clock
without a system call (``--summary`` counts none), and each clock is
checked against the kernel's own answer to a real system call made between
two vDSO reads — the three must be ordered, which a clock off by more than
the few microseconds of a system call fails.  The fallback (``--vdso
syscall``) and no vDSO (``--no-vdso``) give the same answers through system
calls.  A snapshot whose data page is stale (written 100 s in the past, as
a snapshot from another machine would hold) must read the time of now in
every fork and after every reset.
"""

from __future__ import annotations

import io
import re
import struct
import time
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile
from elftools.elf.gnuversions import GNUVerDefSection, GNUVerSymSection
from elftools.elf.hash import ELFHashSection, GNUHashSection

from minikvm.cpu.layout import VDSO_ADDRESS, VVAR_ADDRESS
from minikvm.linux_abi import NSEC_PER_SEC
from minikvm.machine.guest_clock import ClockLine, mult_for
from minikvm.process import vdso, vdso_code
from minikvm.process.process import Process
from minikvm.snapshot.channel import RequestChannel, run_until_stop
from minikvm.snapshot.file import load, save
from minikvm.snapshot.fork import MECHANISMS
from minikvm.snapshot.snapshot import Snapshot
from minikvm.syscalls.dispatch import Dispatcher
from tests.guest_runs import run_minikvm, run_native
from tests.guests import guest
from tests.programs.build import program

RUN_TIMEOUT_SECONDS = 60
EXPORTED = ["__vdso_clock_gettime", "__vdso_gettimeofday", "__vdso_time", "__vdso_getcpu",
            "__vdso_clock_getres", "clock_gettime", "gettimeofday", "time", "getcpu",
            "clock_getres"]
#: The libcs whose programs look the clock up in the vDSO (static, and dynamic
#: through the host's ld.so, which finds it by AT_SYSINFO_EHDR).
VDSO_LIBCS = ("glibc-static", "glibc-static-pie", "musl-static", "glibc-dynamic")


# -- the image ----------------------------------------------------------------------

def elf() -> ELFFile:
    return ELFFile(io.BytesIO(vdso.build_image()))


def test_hashes_are_the_published_functions() -> None:
    """Values glibc and the GNU hash's documentation state, so both of our
    hash functions are the ones the loaders compute."""
    assert vdso.elf_hash(b"LINUX_2.6") == 0x3AE75F6      # glibc's VDSO_HASH for x86-64
    assert vdso.elf_hash(b"printf") == 0x077905A6
    assert vdso.gnu_hash(b"") == 5381
    assert vdso.gnu_hash(b"printf") == 0x156B2BB8


def test_image_is_one_page_shared_object() -> None:
    image = vdso.build_image()
    assert len(image) <= 4096
    file = elf()
    assert file.header.e_type == "ET_DYN" and file.header.e_machine == "EM_X86_64"
    loads = [s for s in file.iter_segments() if s.header.p_type == "PT_LOAD"]
    assert len(loads) == 1 and loads[0].header.p_vaddr == 0 and loads[0].header.p_offset == 0
    assert loads[0].header.p_flags == 5           # R + X
    dynamic = file.get_section_by_name(".dynamic")
    tags = {tag.entry.d_tag for tag in dynamic.iter_tags()}
    assert {"DT_HASH", "DT_GNU_HASH", "DT_STRTAB", "DT_SYMTAB", "DT_VERSYM", "DT_VERDEF",
            "DT_SONAME"} <= tags
    assert next(dynamic.iter_tags("DT_SONAME")).soname == "linux-vdso.so.1"


def test_every_symbol_is_found_by_both_hash_tables_at_its_code() -> None:
    file = elf()
    hash_section = file.get_section_by_name(".hash")
    gnu_section = file.get_section_by_name(".gnu.hash")
    assert isinstance(hash_section, ELFHashSection) and isinstance(gnu_section, GNUHashSection)
    addresses = vdso.symbol_addresses(base=0)
    text = file.get_section_by_name(".text")
    for name in EXPORTED:
        for table in (hash_section, gnu_section):
            symbol = table.get_symbol(name)
            assert symbol is not None, f"{name} not found through {table.name}"
            assert symbol["st_value"] == addresses[name]
            assert symbol["st_info"]["type"] == "STT_FUNC"
            assert symbol["st_shndx"] == file.get_section_index(".text")
            binding = "STB_GLOBAL" if name.startswith("__vdso_") else "STB_WEAK"
            assert symbol["st_info"]["bind"] == binding
        assert text["sh_addr"] <= addresses[name] < text["sh_addr"] + text["sh_size"]
    assert gnu_section.get_symbol("clock_settime") is None
    assert hash_section.get_symbol("clock_settime") is None


def test_symbols_are_at_version_linux_2_6() -> None:
    """glibc (dl_vdso_vsym) and musl (__vdsosym) both ask for LINUX_2.6."""
    file = elf()
    verdef = file.get_section_by_name(".gnu.version_d")
    versym = file.get_section_by_name(".gnu.version")
    assert isinstance(verdef, GNUVerDefSection) and isinstance(versym, GNUVerSymSection)
    names = {}
    for definition, auxiliaries in verdef.iter_versions():
        names[definition["vd_ndx"]] = next(auxiliaries).name
        assert definition["vd_hash"] == vdso.elf_hash(names[definition["vd_ndx"]].encode())
    assert names == {1: "linux-vdso.so.1", 2: "LINUX_2.6"}
    dynsym = file.get_section_by_name(".dynsym")
    for index, symbol in enumerate(dynsym.iter_symbols()):
        if index:
            assert names[versym.get_symbol(index)["ndx"]] == "LINUX_2.6", symbol.name


def test_data_page_holds_the_line() -> None:
    """The page's bytes are the line's fields at the documented offsets."""
    line = ClockLine(tsc_base=123456789, mult=mult_for(2_445_402), shift=32, monotonic=5 * NSEC_PER_SEC,
                     realtime=1_700_000_000 * NSEC_PER_SEC, boottime=6 * NSEC_PER_SEC)

    class Clock:
        mode = "tsc"
    clock = Clock()
    clock.line = line  # type: ignore[attr-defined]
    page = vdso.data_page(clock, 4)  # type: ignore[arg-type]

    def field(offset: int, fmt: str = "<Q") -> int:
        return struct.unpack_from(fmt, page, offset)[0]
    assert field(vdso_code.DATA_SEQ, "<I") == 4
    assert field(vdso_code.DATA_MODE, "<I") == vdso_code.MODE_TSC
    assert field(vdso_code.DATA_TSC_BASE) == line.tsc_base
    assert field(vdso_code.DATA_MULT) == line.mult
    assert field(vdso_code.DATA_SHIFT, "<I") == 32
    assert field(vdso_code.DATA_MONOTONIC) == line.monotonic
    assert field(vdso_code.DATA_REALTIME) == line.realtime
    assert field(vdso_code.DATA_BOOTTIME) == line.boottime
    # One second of ticks is one second, to the nanosecond.
    assert abs(line.elapsed(line.tsc_base + 2_445_402_000) - NSEC_PER_SEC) <= 1
    assert line.elapsed(line.tsc_base - 5) == 0        # a TSC before the base counts as 0


# -- real programs ------------------------------------------------------------------

def summary_calls(stderr: str, name: str) -> int:
    """The count ``--summary`` gives for system call *name* (0 when absent)."""
    match = re.search(rf"^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?{name}$", stderr, re.M)
    return int(match.group(1)) if match else 0


@pytest.mark.kvm
@pytest.mark.parametrize("variant", VDSO_LIBCS)
def test_clock_loop_makes_no_system_call(variant: str, tmp_path: Path) -> None:
    path = program("vdso_clock", variant)
    result = run_minikvm(["--summary", path, "loop", "20000"], cwd=tmp_path, text=True,
                         timeout=RUN_TIMEOUT_SECONDS)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "loop ok\n"
    assert "total" in result.stderr                   # the summary was printed
    assert summary_calls(result.stderr, "clock_gettime") == 0, result.stderr


@pytest.mark.kvm
@pytest.mark.parametrize("variant", VDSO_LIBCS)
@pytest.mark.parametrize("mode", ["auto", "syscall", "off"])
def test_clocks_agree_with_the_kernel(variant: str, mode: str, tmp_path: Path) -> None:
    """vDSO read, real system call, vDSO read: ordered for every clock; the
    REALTIME read is between the host's own clock before and after the run;
    time, gettimeofday, clock_getres and getcpu as natively."""
    path = program("vdso_clock", variant)
    native = run_native([path, "check", "5"], text=True, timeout=RUN_TIMEOUT_SECONDS)
    assert native.returncode == 0, native.stdout
    before = time.time_ns()
    result = run_minikvm(["--vdso", mode, path, "check", "200"], cwd=tmp_path, text=True,
                         timeout=RUN_TIMEOUT_SECONDS)
    after = time.time_ns()
    assert result.returncode == 0, result.stdout + result.stderr
    *lines, last = result.stdout.splitlines()
    assert lines == native.stdout.splitlines()[:-1]
    assert before <= int(last.split()[1]) <= after


@pytest.mark.kvm
def test_vdso_is_named_in_the_auxiliary_vector_unless_turned_off(tmp_path: Path) -> None:
    path = program("vdso_clock", "glibc-static")
    for options, expected in (([], "vdso yes\n"), (["--vdso", "syscall"], "vdso yes\n"),
                              (["--no-vdso"], "vdso no\n")):
        result = run_minikvm([*options, path, "auxv"], cwd=tmp_path, text=True,
                             timeout=RUN_TIMEOUT_SECONDS)
        assert result.stdout == expected, (options, result.stderr)


@pytest.mark.kvm
@pytest.mark.parametrize("variant", ["glibc-static", "musl-static"])
def test_fallback_makes_the_system_call(variant: str, tmp_path: Path) -> None:
    """--vdso syscall: the same functions, each a real clock_gettime."""
    path = program("vdso_clock", variant)
    result = run_minikvm(["--vdso", "syscall", "--summary", path, "loop", "300"], cwd=tmp_path,
                         text=True, timeout=RUN_TIMEOUT_SECONDS)
    assert result.stdout == "loop ok\n", result.stderr
    assert summary_calls(result.stderr, "clock_gettime") == 300, result.stderr


@pytest.mark.kvm
@pytest.mark.parametrize("variant", ["glibc-static", "musl-static"])
def test_coarse_cputime_and_unknown_clocks_go_to_the_kernel(variant: str, tmp_path: Path) -> None:
    """As Linux's vDSO: only REALTIME, MONOTONIC and BOOTTIME are read from
    the page; the others are system calls (2 per round, and the unknown id)."""
    path = program("vdso_clock", variant)
    result = run_minikvm(["--summary", path, "coarse", "50"], cwd=tmp_path, text=True,
                         timeout=RUN_TIMEOUT_SECONDS)
    assert result.stdout == "coarse ok\n", result.stderr
    assert summary_calls(result.stderr, "clock_gettime") == 2 * 50 + 1, result.stderr


@pytest.mark.kvm
def test_maps_name_vdso_and_vvar(tmp_path: Path) -> None:
    """``[vvar]`` read-only and ``[vdso]`` read + execute, as Linux shows them."""
    path = program("vdso_clock", "glibc-static")
    process = Process.spawn(str(path), [str(path)], {}, None)
    try:
        vvar, image = process.mm.find(VVAR_ADDRESS), process.mm.find(VDSO_ADDRESS)
        assert (vvar.name, vvar.prot, vvar.size) == ("[vvar]", 1, 4096)
        assert (image.name, image.prot) == ("[vdso]", 5)
        assert process.mm.read(VDSO_ADDRESS, 4) == b"\x7fELF"
    finally:
        process.close()


# -- snapshots ------------------------------------------------------------------------

def stale_snapshot() -> Snapshot:
    """A snapshot of tests/guests/clock_handler.c at its first wait, whose data
    page says every clock is 100 s earlier than it is: what a snapshot from
    another machine, or an old one, holds."""
    path = str(guest("clock_handler"))
    process = Process.spawn(path, [path], {}, None)
    try:
        process.requests = RequestChannel()
        kind, wait = run_until_stop(process, Dispatcher(process), RUN_TIMEOUT_SECONDS)
        assert kind == "wait", (kind, wait)
        vma = process.mm.find(VVAR_ADDRESS)
        size = struct.calcsize(vdso_code.DATA_FORMAT)
        fields = list(struct.unpack(vdso_code.DATA_FORMAT,
                                    process.machine.memory.read(vma.physical(VVAR_ADDRESS), size)))
        assert fields[1] == vdso_code.MODE_TSC, "no exit-free clock on this host"
        for index in (5, 6, 7):                   # monotonic, realtime, boottime
            fields[index] -= 100 * NSEC_PER_SEC
        process.machine.memory.write(vma.physical(VVAR_ADDRESS),
                                     struct.pack(vdso_code.DATA_FORMAT, *fields))
        return Snapshot.take(process, wait)
    finally:
        process.close()


def clocks_of(reply) -> tuple[int, int]:
    assert reply.ok, reply.message
    monotonic, realtime = reply.response.split()
    return int(monotonic), int(realtime)


def assert_now(reply, monotonic_before: int, realtime_before: int) -> int:
    """The guest's clocks are between the host's before the request and now."""
    monotonic, realtime = clocks_of(reply)
    assert monotonic_before <= monotonic <= time.monotonic_ns()
    assert realtime_before <= realtime <= time.time_ns()
    return monotonic


@pytest.mark.kvm
@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_forks_and_resets_read_the_time_of_now(mechanism: str) -> None:
    with stale_snapshot() as snapshot:
        last = 0
        with snapshot.fork(mechanism) as fork:
            for _ in range(4):        # each request is followed by a reset
                start, wall = time.monotonic_ns(), time.time_ns()
                monotonic = assert_now(fork.request(b"now", timeout=RUN_TIMEOUT_SECONDS),
                                       start, wall)
                assert monotonic > last
                last = monotonic


@pytest.mark.kvm
def test_a_snapshot_file_reads_the_time_of_now(tmp_path: Path) -> None:
    with stale_snapshot() as snapshot:
        save(snapshot, tmp_path / "clock.snap")
    with load(tmp_path / "clock.snap") as loaded, loaded.fork() as fork:
        start, wall = time.monotonic_ns(), time.time_ns()
        assert_now(fork.request(b"now", timeout=RUN_TIMEOUT_SECONDS), start, wall)


# -- keeping the line current ------------------------------------------------------

@pytest.mark.kvm
def test_a_new_measurement_never_moves_monotonic_back() -> None:
    """GuestClock.refresh: at the new base, the new line is at or after where
    the old one had got to, and both are close to the host's clock."""
    from minikvm.machine.machine import Machine
    from minikvm.machine.guest_clock import GuestClock
    with Machine(64 << 20) as machine:
        clock = GuestClock(machine.vcpu, machine.kvm.get_supported_cpuid())
        if clock.line is None:
            pytest.skip(clock.reason)
        for _ in range(20):
            old = clock.line
            new = clock.refresh()
            assert new.monotonic >= old.monotonic + old.elapsed(new.tsc_base)
            assert new.boottime >= old.boottime + old.elapsed(new.tsc_base)
            assert abs(new.monotonic - time.monotonic_ns()) < 10_000_000   # 10 ms: PVM is slow
            assert abs(new.realtime - time.time_ns()) < 10_000_000


@pytest.mark.kvm
def test_refreshes_during_a_run_keep_the_clocks_ordered(monkeypatch: pytest.MonkeyPatch,
                                                        tmp_path: Path) -> None:
    """With the line measured again every millisecond (instead of every
    second), a program comparing the vDSO with the kernel still finds every
    clock ordered, and the host did write the page many times."""
    from minikvm.machine import guest_clock
    monkeypatch.setattr(guest_clock, "REFRESH_INTERVAL_NS", 1_000_000)
    path = str(program("vdso_clock", "glibc-static"))
    out = tmp_path / "out"
    with open(out, "w") as stdout:
        process = Process.spawn(path, [path, "check", "300"], {}, None,
                                stdio=(0, stdout.fileno(), 2))
    try:
        result = process.run(Dispatcher(process), timeout=RUN_TIMEOUT_SECONDS)
    finally:
        process.close()
    assert result.exit_status == 0, out.read_text()
    assert out.read_text().count("ordered ok") == 3
    assert process.vdso_seq >= 2 * 5, "the page was not written again during the run"
