"""Layer 3 — patched system-call sites: one exit per system call on PVM.

On a PVM host a guest system call leaves the guest twice: the program's
``syscall`` instruction is itself a trip into KVM (~24 µs on the Intel hosts
measured in issue 14), which enters the LSTAR stub still at CPL 3, and the
stub's ``out`` is a second trip, to user space (~73 µs).  An ``out`` in the
program's own code would leave once.

So the first time a system call comes through the stub, the run loop hands
its return address to :meth:`SyscallSites.consider`.  The host knows from
RCX exactly where the CPU executed a ``syscall``: at ``RCX - 2``, and the two
bytes there are ``0f 05`` — not a guess from scanning code.  If they sit in
a mapping that is executable and *not writable*, they are rewritten in
place as ``out %al,$0xe1`` (:func:`~minikvm.cpu.guestcode.patched_syscall_site`,
the same length), and from then on that site exits straight to the host
on :data:`~minikvm.cpu.layout.PATCHED_SYSCALL_PORT`, where the run loop does
what ``syscall`` would have done — RCX = the next instruction, R11 = RFLAGS
— before the same handler runs and the host returns the guest to RCX as
before.  The TSS's I/O bitmap lets CPL 3 use that port and the stub's, and
no other (:mod:`minikvm.cpu.tss`).

What a program could notice, and why it is safe:

* **Its code changed.**  A program reading its own text at a site sees
  ``e6 e1`` instead of ``0f 05``.  Only sites already executed are
  patched, and only in mappings the program cannot write (text, the
  vDSO): a JIT's writable code keeps the slow path, so code it rewrites is
  never "fixed" behind its back, and a site it later makes writable with
  ``mprotect`` keeps the patch (the bytes are still a working system call).
  ``MINIKVM_SYSCALL_PATCH=0`` in minikvm's environment turns patching off
  (the test suite runs with it both ways).
* **Only a patched site is a system call.**  The run loop takes an exit
  on the port as one only for a one-byte ``out`` whose site is in the
  address space's record (``AddressSpace.patched_sites``); a program's own
  ``out`` or ``in`` on the port, anywhere else, is a fault with a crash
  report, as on any other port.  (A site whose mapping is later unmapped
  stays in the record: an ``out`` there again is at most a system call,
  which ``syscall`` gives any program anyway.)
* **Hardware VMX/SVM hosts.**  There ``syscall`` is not a VM exit (only the
  stub's ``out`` is), so a patch saves two instructions: the run loop
  patches only when the stub exit came from CPL 3, i.e. on PVM.
* **Snapshots.**  Patched pages are ordinary guest memory: a snapshot taken
  after them carries them, so every fork starts on the fast path.  A
  machine built over a snapshot's memory (a fork) does not patch: each new
  patch would dirty a page that every reset then copies back.

The set of sites looked at is bounded (:data:`MAX_SITES`), so a program
that makes system calls from a million places costs the host a fixed
amount of memory.
"""

from __future__ import annotations

import os

from minikvm.cpu.guestcode import SYSCALL_INSTRUCTION, assemble, patched_syscall_site
from minikvm.machine.mm import PROT_EXEC, PROT_WRITE, AddressSpace

#: Set to ``0`` in minikvm's environment to keep every system call on the
#: stub's path (for comparison, and for the test suite's second pass).
PATCH_ENVIRONMENT = "MINIKVM_SYSCALL_PATCH"
#: The most sites one machine looks at (~4 MiB of host memory at most).
MAX_SITES = 65536
PATCH = assemble(patched_syscall_site())
#: Its length, the same as ``syscall``'s: the site is ``RIP - PATCH_SIZE`` at its exit.
PATCH_SIZE = len(PATCH)


def patching_enabled() -> bool:
    """Whether the environment leaves patching on (the default)."""
    return os.environ.get(PATCH_ENVIRONMENT, "1") != "0"


class SyscallSites:
    """The system-call sites of one machine: those looked at, and how many
    were patched."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.seen: set[int] = set()
        self.patched = 0

    def consider(self, mm: AddressSpace, return_address: int) -> None:
        """Patch the ``syscall`` before *return_address* (the RCX of a
        system call that came through the stub) if it is in code the
        program cannot write; each site is looked at once."""
        site = return_address - len(SYSCALL_INSTRUCTION)
        if site in self.seen or len(self.seen) >= MAX_SITES:
            return
        self.seen.add(site)
        vma = mm.find(site)
        if (vma is None or vma.phys is None or not vma.prot & PROT_EXEC
                or vma.prot & PROT_WRITE or return_address > vma.end):
            return
        phys = vma.physical(site)
        code = mm.memory.view(phys, len(PATCH))
        if bytes(code) != SYSCALL_INSTRUCTION:
            return
        code[:] = PATCH
        mm.memory.note_written(phys, len(PATCH))
        mm.patched_sites.add(site)
        self.patched += 1


def after_patched_site(mm: AddressSpace, rip: int, rcx: int) -> bool:
    """Whether a vCPU at *rip* is stopped at a patched site's system call:
    the run loop made RCX the next instruction, and the two bytes before it
    are the patch."""
    if rip != rcx or rip < len(PATCH):
        return False
    vma = mm.find(rip - len(PATCH))
    if vma is None or vma.phys is None or rip > vma.end:
        return False
    return bytes(mm.memory.view(vma.physical(rip - len(PATCH)), len(PATCH))) == PATCH
