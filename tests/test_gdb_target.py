"""The target description: gdb itself reads it and numbers the registers
as :data:`minikvm.debug.target.REGISTERS` says, so ``g``/``p`` replies built
from that table land in the right gdb registers."""

from __future__ import annotations

import shutil
import subprocess
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest

from minikvm.debug.target import NUMBER, REGISTERS, g_packet_size, target_xml


def test_the_description_is_well_formed_and_numbers_every_register() -> None:
    root = ElementTree.fromstring(target_xml().split(b"\n", 2)[2])   # past <?xml> and DOCTYPE
    assert root.findtext("architecture") == "i386:x86-64"
    regs = root.findall("./feature/reg")
    assert [int(reg.get("regnum")) for reg in regs] == list(range(len(REGISTERS)))
    assert {"fs_base", "gs_base", "xmm15", "mxcsr", "orig_rax", "rip"} <= set(NUMBER)
    assert g_packet_size() == 16 * 8 + 8 + 4 + 6 * 4 + 8 * 10 + 8 * 4 + 16 * 16 + 4 + 3 * 8


@pytest.mark.skipif(shutil.which("gdb") is None,
                    reason="gdb is not installed (apt-get install -y gdb)")
def test_gdb_numbers_the_registers_as_the_table_does(tmp_path: Path) -> None:
    xml = tmp_path / "target.xml"
    xml.write_bytes(target_xml())
    result = subprocess.run(
        ["gdb", "-batch", "-nx", "-ex", f"set tdesc filename {xml}",
         "-ex", "maint print remote-registers"],
        capture_output=True, text=True, timeout=60, check=True)
    assert "warning" not in result.stderr.lower(), result.stderr
    seen: dict[str, tuple[int, int]] = {}
    for line in result.stdout.splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 8 and fields[0] != "''":
            seen[fields[0]] = (int(fields[-2]), int(fields[-1]))      # remote number, g offset
    offset = 0
    for number, register in enumerate(REGISTERS):
        assert seen.get(register.name) == (number, offset), register.name
        offset += register.bits // 8
