"""Segments and CPU modes: encoders by round trip, modes by booting guests,
and the errors a newcomer meets first.

* Every :class:`~minikvm.cpu.segments.Segment` in ``segments.py`` survives
  descriptor() → decode_descriptor() and kvm_segment() → segment_from_kvm()
  with every field intact.
* The identity map of ``modes.py`` has the entries the MMU needs.
* Real, protected and long mode each run a tiny guest (``kvm`` marker).
* Bad input fails with a message that names the ioctl and the errno, or
  the address and the region.
"""

from __future__ import annotations

import errno
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from minikvm import ioctl as k
from minikvm.cpu import modes, segments
from minikvm.cpu.segments import Segment, decode_descriptor, segment_from_kvm
from minikvm.errors import GuestMemoryError, KvmError, KvmUnavailable
from minikvm.kvm.exits import HltExit, IoExit, ShutdownExit
from minikvm.kvm.memory import GuestMemory
from minikvm.kvm.system import Kvm
from minikvm.kvm.vcpu import Vcpu
from minikvm.x86 import (CR0_PE, CR0_PG, CR4_PAE, EFER_LMA, EFER_LME, PTE_HUGE, PTE_PRESENT,
                         PTE_WRITE, RFLAGS_FIXED)

#: Every Segment defined at the top level of segments.py, by name.
ALL_SEGMENTS = {name: value for name, value in vars(segments).items()
                if isinstance(value, Segment)}

GDT_ADDRESS = 0x1000
PAGE_TABLE_ADDRESS = 0x2000
CODE_ADDRESS = 0x8000
MEMORY_SIZE = 0x40_0000  # 4 MiB: two 2 MiB pages of identity map


def test_segments_exist() -> None:
    assert {"KERNEL_CODE32", "KERNEL_DATA32", "KERNEL_CODE64", "KERNEL_DATA64"} <= set(
        ALL_SEGMENTS)


@pytest.mark.parametrize("name", sorted(ALL_SEGMENTS))
def test_descriptor_round_trip(name: str) -> None:
    segment = ALL_SEGMENTS[name]
    raw = segment.descriptor()
    assert len(raw) == 8
    assert decode_descriptor(raw, segment.selector) == segment


@pytest.mark.parametrize("name", sorted(ALL_SEGMENTS))
def test_kvm_segment_round_trip(name: str) -> None:
    segment = ALL_SEGMENTS[name]
    assert segment_from_kvm(segment.kvm_segment()) == segment


def test_kvm_segment_limit_is_in_bytes() -> None:
    """KVM wants the effective limit: 4 KiB granularity scaled out."""
    assert segments.KERNEL_CODE32.kvm_segment().limit == 0xFFFF_FFFF


def test_non_flat_segment_round_trips() -> None:
    """Every field in its own bit position: a base and limit with all
    nibbles different, byte granularity, DPL 3."""
    segment = Segment(selector=5 << 3 | 3, base=0x1234_5678, limit=0xABCDE, type=0x3,
                      dpl=3, avl=1, db=1, g=0)
    assert decode_descriptor(segment.descriptor(), segment.selector) == segment
    assert segment_from_kvm(segment.kvm_segment()) == segment


def test_identity_map_entries() -> None:
    tables = modes.identity_map_tables(PAGE_TABLE_ADDRESS, MEMORY_SIZE)
    assert len(tables) == modes.IDENTITY_MAP_BYTES
    entries = struct.unpack(f"<{len(tables) // 8}Q", tables)
    per_table = modes.PAGE_TABLE_ENTRIES
    pml4, pdpt, pd = (entries[i * per_table:(i + 1) * per_table] for i in range(3))
    table_flags = PTE_PRESENT | PTE_WRITE
    assert pml4[0] == PAGE_TABLE_ADDRESS + modes.PAGE_TABLE_SIZE | table_flags
    assert pdpt[0] == PAGE_TABLE_ADDRESS + 2 * modes.PAGE_TABLE_SIZE | table_flags
    pages = MEMORY_SIZE // modes.IDENTITY_MAP_PAGE_SIZE
    for i in range(pages):
        assert pd[i] == i * modes.IDENTITY_MAP_PAGE_SIZE | table_flags | PTE_HUGE
    assert not any(pml4[1:]) and not any(pdpt[1:]) and not any(pd[pages:])


def test_identity_map_rounds_up_to_a_whole_page() -> None:
    tables = modes.identity_map_tables(0, 1)
    pd = tables[2 * modes.PAGE_TABLE_SIZE:]
    assert struct.unpack_from("<Q", pd, 0)[0] & PTE_PRESENT
    assert struct.unpack_from("<Q", pd, 8)[0] == 0


def test_identity_map_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match=r"0x2100 must be 4 KiB aligned"):
        modes.identity_map_tables(0x2100, MEMORY_SIZE)
    with pytest.raises(ValueError, match=r"at most 0x40000000"):
        modes.identity_map_tables(PAGE_TABLE_ADDRESS, modes.IDENTITY_MAP_LIMIT + 1)
    with pytest.raises(ValueError, match=r"more than 0"):
        modes.identity_map_tables(PAGE_TABLE_ADDRESS, 0)


# --- booting guests ---------------------------------------------------------

@pytest.fixture
def machine() -> Iterator[tuple[GuestMemory, Vcpu]]:
    """A VM with MEMORY_SIZE bytes at guest-physical 0 and one vCPU."""
    with GuestMemory(MEMORY_SIZE) as memory, Kvm() as kvm, kvm.create_vm() as vm:
        vm.set_user_memory_region(0, memory)
        yield memory, vm.create_vcpu()


@pytest.mark.kvm
def test_real_mode(machine: tuple[GuestMemory, Vcpu]) -> None:
    """The LWN program: 2 + 2, printed as a digit to port 0x3f8."""
    memory, vcpu = machine
    memory.write(CODE_ADDRESS, bytes([
        0xBA, 0xF8, 0x03,  # mov  $0x3f8,%dx
        0x00, 0xD8,        # add  %bl,%al
        0x04, ord("0"),    # add  $'0',%al
        0xEE,              # out  %al,(%dx)
        0xF4,              # hlt
    ]))
    sregs = modes.setup_real_mode(vcpu)
    assert sregs.cs.base == 0 and sregs.cs.selector == 0
    vcpu.set_regs(k.kvm_regs(rip=CODE_ADDRESS, rax=2, rbx=2, rflags=RFLAGS_FIXED))
    vm_exit = vcpu.run()
    assert isinstance(vm_exit, IoExit) and vm_exit.port == 0x3F8 and vm_exit.data == b"4"
    assert isinstance(vcpu.run(), HltExit)


@pytest.mark.kvm
def test_protected_mode(machine: tuple[GuestMemory, Vcpu]) -> None:
    """32-bit code reads above 1 MiB; the segments KVM holds after the run
    are the ones segments.py describes, and so is the GDT in memory."""
    memory, vcpu = machine
    memory.write(0x10_0000, struct.pack("<I", 0x1234_0000))
    memory.write(CODE_ADDRESS, bytes([
        0xA1, 0x00, 0x00, 0x10, 0x00,  # mov  0x100000,%eax
        0x05, 0x78, 0x56, 0x00, 0x00,  # add  $0x5678,%eax
        0xF4,                          # hlt
    ]))
    modes.setup_protected_mode(vcpu, memory, GDT_ADDRESS)
    vcpu.set_regs(k.kvm_regs(rip=CODE_ADDRESS, rflags=RFLAGS_FIXED))
    assert isinstance(vcpu.run(), HltExit)
    assert vcpu.get_regs().rax == 0x1234_5678
    sregs = vcpu.get_sregs()
    assert sregs.cr0 & CR0_PE and not sregs.cr0 & CR0_PG
    assert segment_from_kvm(sregs.cs) == segments.KERNEL_CODE32
    assert segment_from_kvm(sregs.ds) == segments.KERNEL_DATA32
    for segment in (segments.KERNEL_CODE32, segments.KERNEL_DATA32):
        raw = memory.read(sregs.gdt.base + segment.selector, 8)
        assert decode_descriptor(raw, segment.selector) == segment


LONG_MODE_CODE = bytes([
    0x48, 0x8B, 0x04, 0x25, 0x00, 0x00, 0x20, 0x00,  # mov  0x200000,%rax
    0x48, 0x83, 0xC0, 0x02,                          # add  $0x2,%rax
    0xF4,                                            # hlt
])


@pytest.mark.kvm
def test_long_mode(machine: tuple[GuestMemory, Vcpu]) -> None:
    memory, vcpu = machine
    memory.write(CODE_ADDRESS, LONG_MODE_CODE)
    memory.write_u64(0x20_0000, 40)
    sregs = modes.setup_long_mode(vcpu, memory, GDT_ADDRESS, PAGE_TABLE_ADDRESS)
    assert sregs.cr4 & CR4_PAE and sregs.efer & EFER_LME and sregs.cs.l == 1
    vcpu.set_regs(k.kvm_regs(rip=CODE_ADDRESS, rflags=RFLAGS_FIXED))
    assert isinstance(vcpu.run(), HltExit)
    assert vcpu.get_regs().rax == 42
    assert vcpu.get_sregs().efer & EFER_LMA
    assert segment_from_kvm(vcpu.get_sregs().cs) == segments.KERNEL_CODE64


@pytest.mark.kvm
def test_long_mode_paging_is_live(machine: tuple[GuestMemory, Vcpu]) -> None:
    """Outside the identity map there is nothing: the load page-faults and,
    with no IDT, the fault ends as a triple fault."""
    memory, vcpu = machine
    memory.write(CODE_ADDRESS, LONG_MODE_CODE)
    modes.setup_long_mode(vcpu, memory, GDT_ADDRESS, PAGE_TABLE_ADDRESS,
                          mapped_size=modes.IDENTITY_MAP_PAGE_SIZE)  # 0x200000 is unmapped
    sregs = vcpu.get_sregs()
    sregs.idt.limit = 0  # no vector can be delivered
    vcpu.set_sregs(sregs)
    vcpu.set_regs(k.kvm_regs(rip=CODE_ADDRESS, rflags=RFLAGS_FIXED))
    assert isinstance(vcpu.run(), ShutdownExit)


# --- errors that explain themselves ---------------------------------------

@pytest.mark.kvm
def test_overlapping_slots_name_the_ioctl_and_errno() -> None:
    with GuestMemory(0x10000) as first, GuestMemory(0x10000, base=0x8000) as second, \
            Kvm() as kvm, kvm.create_vm() as vm:
        vm.set_user_memory_region(0, first)
        with pytest.raises(KvmError) as caught:
            vm.set_user_memory_region(1, second)
    error = caught.value
    assert error.ioctl == "KVM_SET_USER_MEMORY_REGION"
    assert error.errno in (errno.EEXIST, errno.EINVAL)
    name = errno.errorcode[error.errno]
    assert str(error).startswith(f"KVM_SET_USER_MEMORY_REGION failed: {name}")


@pytest.mark.kvm
def test_unaligned_slot_is_refused() -> None:
    # 0x1234 is not a page boundary: slots are made of whole pages.
    with GuestMemory(0x1000, base=0x1234) as memory, Kvm() as kvm, kvm.create_vm() as vm:
        with pytest.raises(KvmError, match=r"KVM_SET_USER_MEMORY_REGION failed: EINVAL"):
            vm.set_user_memory_region(0, memory)


def test_out_of_range_read_names_address_and_region() -> None:
    with GuestMemory(0x1000, base=0x1000) as memory:
        with pytest.raises(GuestMemoryError) as caught:
            memory.read(0x1FFC, 8)
    message = str(caught.value)
    assert "0x1ffc" in message and "[0x1000, 0x2000)" in message


def test_missing_device_says_what_to_do(tmp_path: Path) -> None:
    path = tmp_path / "no-kvm-here"
    with pytest.raises(KvmUnavailable, match=r"does not exist.*kvm_intel or kvm_amd") as caught:
        Kvm(str(path))
    assert str(path) in str(caught.value)


def test_unopenable_device_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(path: str, *args: object) -> int:
        raise PermissionError(errno.EACCES, "Permission denied", path)
    # A file mode would not stop root, so make open(2) itself refuse.
    monkeypatch.setattr("minikvm.kvm.system.os.open", refuse)
    with pytest.raises(KvmUnavailable, match=r"/dev/kvm exists but cannot be opened.*group"):
        Kvm()


@pytest.mark.kvm
def test_long_mode_refuses_overlapping_tables(machine: tuple[GuestMemory, Vcpu]) -> None:
    memory, vcpu = machine
    with pytest.raises(ValueError, match=r"GDT at 0x2008 overlaps the page tables at "
                                         r"\[0x2000, 0x5000\)"):
        modes.setup_long_mode(vcpu, memory, 0x2008, PAGE_TABLE_ADDRESS)
