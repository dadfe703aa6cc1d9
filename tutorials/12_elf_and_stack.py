"""Step 12 — a program file and its first stack: ELF segments, symbols, argv, auxv.

Until now the guest's code was bytes this script wrote.  A real program
comes in an ELF file, and before its first instruction runs, Linux has
done two things for it (``load_elf_binary()`` in fs/binfmt_elf.c):

1. copied each ``PT_LOAD`` segment of the file to its address, with its
   permissions (the rest of a segment's memory, ``.bss``, is zeroed);
2. built the *initial stack*: ``argc``, the ``argv`` and ``envp``
   pointers, and the auxiliary vector (auxv), through which the C library
   learns the page size, where the program headers are, 16 random bytes
   for its stack canary, and more.

``minikvm.process.elf`` does the reading and ``minikvm.process.stack`` the stack, both
as pure code: this script prints what they produce for a tiny program
(the hand-assembled one the ELF tests use: ``exit(42)`` in three
instructions, with a symbol table), then loads it into a machine by hand
and runs it.

Run it:  python tutorials/12_elf_and_stack.py
"""

from __future__ import annotations

import sys
from pathlib import Path

from minikvm import ioctl as k
from minikvm.process.elf import load_elf
from minikvm.cpu.layout import PAGE_SIZE, STACK_TOP
from minikvm.machine.machine import Machine
from minikvm.machine.mm import PROT_EXEC, PROT_READ, PROT_WRITE, page_align_down, page_align_up
from minikvm.process.stack import AUXV_NAMES, PLATFORM, build_initial_stack, decode_initial_stack, \
    standard_auxv

REPOSITORY = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPOSITORY))
from tests.programs.tiny_elf import tiny_elf  # noqa: E402  (the tiny program, as bytes)

MEMORY_SIZE = 16 << 20
STACK_MAPPED = 4 * PAGE_SIZE       # enough for this stack (a process gets 8 MiB)
NR_EXIT = 60                       # asm/unistd_64.h
EXPECTED_STATUS = 42
ARGV = [b"tiny", b"hello"]
ENVP = [b"HOME=/home/guest", b"LANG=C"]
#: A real loader takes these from os.urandom(16); fixed here so the output is the same each run.
RANDOM_BYTES = bytes(range(16))


class Exit(Exception):
    """The program called exit."""


def main() -> int:
    # --- step: read-elf ---
    image = load_elf(tiny_elf(), name="tiny")
    print(f"{image.name}: {image.elf_type}, entry {image.entry:#x}, "
          f"{image.phnum} program headers at {image.phdr_address:#x}")
    for segment in image.segments:
        print(f"  LOAD {segment.vaddr:#x}-{segment.end:#x} {segment.permissions}  "
              f"{segment.filesz} bytes from the file, {segment.memsz} in memory")
    for symbol in image.symbols:
        print(f"  symbol {symbol.name:<10} {symbol.address:#x}  {symbol.kind}, "
              f"{symbol.binding}, {symbol.size} bytes")
    syscall_address = image.symbols.address_of("do_syscall")
    print(f"  {syscall_address:#x} is {image.symbols.symbolize(syscall_address)}, "
          f"{syscall_address + 1:#x} is {image.symbols.symbolize(syscall_address + 1)}")
    # --- end: read-elf ---

    # --- step: build-stack ---
    auxv = standard_auxv(image, page_size=PAGE_SIZE, hwcap=0, uid=1000, gid=1000)
    stack, stack_pointer = build_initial_stack(STACK_TOP, ARGV, ENVP, auxv, b"./tiny",
                                               PLATFORM, RANDOM_BYTES)
    print(f"initial stack: {len(stack)} bytes, rsp = {stack_pointer:#x} "
          f"(16-byte aligned: {stack_pointer % 16 == 0})")
    # --- end: build-stack ---

    # --- step: decode-stack ---
    seen = decode_initial_stack(stack, stack_pointer)
    print(f"  argc {seen.argc}, argv {[a.decode() for a in seen.argv]}, "
          f"envp {[e.decode() for e in seen.envp]}")
    for entry_type, value in seen.auxv:
        print(f"  {AUXV_NAMES.get(entry_type, entry_type):<15} {value:#x}")
    print(f"  AT_EXECFN -> {seen.execfn.decode()}, AT_PLATFORM -> {seen.platform.decode()}, "
          f"AT_RANDOM -> {seen.random_bytes.hex()}")
    # --- end: decode-stack ---

    # --- step: load-and-run ---
    with Machine(MEMORY_SIZE) as machine:
        mm = machine.mm
        for segment in image.segments:   # (this program's segments share no page)
            start = page_align_down(segment.vaddr)
            prot = ((PROT_READ if segment.readable else 0) | (PROT_WRITE if segment.writable else 0)
                    | (PROT_EXEC if segment.executable else 0))
            vma = mm.map(start, page_align_up(segment.end) - start, prot, "tiny")
            machine.memory.write(vma.physical(segment.vaddr), segment.data)
        stack_vma = mm.map(STACK_TOP - STACK_MAPPED, STACK_MAPPED, PROT_READ | PROT_WRITE,
                           "[stack]")
        machine.memory.write(stack_vma.physical(stack_pointer), stack)
        machine.set_entry(image.entry, stack_pointer)

        def on_syscall(regs: k.kvm_regs) -> None:
            where = image.symbols.symbolize(regs.rcx - 2)   # rcx: after the 2-byte syscall
            print(f"  syscall {regs.rax} at {where}: exit({regs.rdi})")
            if regs.rax != NR_EXIT:
                raise RuntimeError(f"unexpected system call {regs.rax}")
            raise Exit(regs.rdi)

        try:
            stop = machine.run(on_syscall, timeout=10)
            print(f"wrong result: the program stopped with {stop.message}")
            return 1
        except Exit as done:
            status = done.args[0]
    # --- end: load-and-run ---
    if status != EXPECTED_STATUS:
        print(f"wrong result: the program exited with {status}, expected {EXPECTED_STATUS}")
        return 1
    print(f"the program exited with status {status}, as expected")
    return 0


if __name__ == "__main__":
    sys.exit(main())
