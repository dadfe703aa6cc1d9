"""Layer 7 — the target description gdb reads: which registers, in what order.

gdb asks for ``qXfer:features:read:target.xml`` and learns from it the
architecture (``i386:x86-64``, GNU/Linux) and every register: its name,
size, type and number.  The numbers are the order of the ``g``/``G``
packets and the index of ``p``/``P``, so :data:`REGISTERS` is the one
source of both.  The features are the ones gdb's own amd64 Linux
descriptions use (gdb manual, "Target Descriptions" → "Standard Target
Features" → "i386 Features"): ``org.gnu.gdb.i386.core`` (general, segment
and x87 registers), ``org.gnu.gdb.i386.sse`` (xmm0-15, mxcsr),
``org.gnu.gdb.i386.linux`` (orig_rax) and ``org.gnu.gdb.i386.segments``
(fs_base, gs_base)."""

from __future__ import annotations

from dataclasses import dataclass
from xml.sax.saxutils import quoteattr


@dataclass(frozen=True)
class Register:
    """One register as gdb sees it."""

    name: str
    bits: int
    type: str
    feature: str
    group: str = ""


CORE = "org.gnu.gdb.i386.core"
SSE = "org.gnu.gdb.i386.sse"
LINUX = "org.gnu.gdb.i386.linux"
SEGMENTS = "org.gnu.gdb.i386.segments"

_GENERAL = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp",
            "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15")
_POINTERS = {"rbp": "data_ptr", "rsp": "data_ptr"}
_X87_CONTROL = ("fctrl", "fstat", "ftag", "fiseg", "fioff", "foseg", "fooff", "fop")

#: Every register, in gdb's numbering (its index here), which is the
#: order of the ``g`` packet.  Same order as gdb's 64bit-core.xml,
#: 64bit-sse.xml, 64bit-linux.xml and 64bit-segments.xml.
REGISTERS: tuple[Register, ...] = (
    *(Register(name, 64, _POINTERS.get(name, "int64"), CORE) for name in _GENERAL),
    Register("rip", 64, "code_ptr", CORE),
    Register("eflags", 32, "i386_eflags", CORE),
    *(Register(name, 32, "int32", CORE) for name in ("cs", "ss", "ds", "es", "fs", "gs")),
    *(Register(f"st{i}", 80, "i387_ext", CORE) for i in range(8)),
    *(Register(name, 32, "int", CORE, "float") for name in _X87_CONTROL),
    *(Register(f"xmm{i}", 128, "vec128", SSE) for i in range(16)),
    Register("mxcsr", 32, "i386_mxcsr", SSE, "vector"),
    Register("orig_rax", 64, "int", LINUX),
    Register("fs_base", 64, "int", SEGMENTS),
    Register("gs_base", 64, "int", SEGMENTS),
)

#: Register number by name, for ``p``/``P`` and for the stub's own use.
NUMBER: dict[str, int] = {register.name: number for number, register in enumerate(REGISTERS)}

# The types the core and sse features refer to, as gdb's 64bit-core.xml
# and 64bit-sse.xml define them (flag bits named as in the SDM).
_TYPES = {
    CORE: """
    <flags id="i386_eflags" size="4">
      <field name="CF" start="0" end="0"/><field name="" start="1" end="1"/>
      <field name="PF" start="2" end="2"/><field name="AF" start="4" end="4"/>
      <field name="ZF" start="6" end="6"/><field name="SF" start="7" end="7"/>
      <field name="TF" start="8" end="8"/><field name="IF" start="9" end="9"/>
      <field name="DF" start="10" end="10"/><field name="OF" start="11" end="11"/>
      <field name="NT" start="14" end="14"/><field name="RF" start="16" end="16"/>
      <field name="VM" start="17" end="17"/><field name="AC" start="18" end="18"/>
      <field name="VIF" start="19" end="19"/><field name="VIP" start="20" end="20"/>
      <field name="ID" start="21" end="21"/>
    </flags>""",
    SSE: """
    <vector id="v8bf16" type="bfloat16" count="8"/>
    <vector id="v4f" type="ieee_single" count="4"/>
    <vector id="v2d" type="ieee_double" count="2"/>
    <vector id="v16i8" type="int8" count="16"/>
    <vector id="v8i16" type="int16" count="8"/>
    <vector id="v4i32" type="int32" count="4"/>
    <vector id="v2i64" type="int64" count="2"/>
    <union id="vec128">
      <field name="v8_bfloat16" type="v8bf16"/><field name="v4_float" type="v4f"/>
      <field name="v2_double" type="v2d"/><field name="v16_int8" type="v16i8"/>
      <field name="v8_int16" type="v8i16"/><field name="v4_int32" type="v4i32"/>
      <field name="v2_int64" type="v2i64"/><field name="uint128" type="uint128"/>
    </union>
    <flags id="i386_mxcsr" size="4">
      <field name="IE" start="0" end="0"/><field name="DE" start="1" end="1"/>
      <field name="ZE" start="2" end="2"/><field name="OE" start="3" end="3"/>
      <field name="UE" start="4" end="4"/><field name="PE" start="5" end="5"/>
      <field name="DAZ" start="6" end="6"/><field name="IM" start="7" end="7"/>
      <field name="DM" start="8" end="8"/><field name="ZM" start="9" end="9"/>
      <field name="OM" start="10" end="10"/><field name="UM" start="11" end="11"/>
      <field name="PM" start="12" end="12"/><field name="FZ" start="15" end="15"/>
    </flags>""",
}


def target_xml() -> bytes:
    """The whole target description, one document (no ``xi:include``)."""
    lines = ['<?xml version="1.0"?>', '<!DOCTYPE target SYSTEM "gdb-target.dtd">',
             "<target>", "  <architecture>i386:x86-64</architecture>",
             "  <osabi>GNU/Linux</osabi>"]
    for feature in (CORE, SSE, LINUX, SEGMENTS):
        lines.append(f"  <feature name={quoteattr(feature)}>")
        if feature in _TYPES:
            lines.append(_TYPES[feature].strip("\n"))
        for number, register in enumerate(REGISTERS):
            if register.feature != feature:
                continue
            group = f" group={quoteattr(register.group)}" if register.group else ""
            lines.append(f"    <reg name={quoteattr(register.name)} bitsize=\"{register.bits}\""
                         f" type={quoteattr(register.type)} regnum=\"{number}\"{group}/>")
        lines.append("  </feature>")
    lines.append("</target>")
    return ("\n".join(lines) + "\n").encode()


def g_packet_size() -> int:
    """Bytes of all registers in a ``g`` reply (before hex, which doubles it)."""
    return sum(register.bits // 8 for register in REGISTERS)
