"""The tutorial scripts: each runs, prints what its expected file says, and
uses only what the tutorial has introduced so far.

Every ``tutorials/NN_slug.py`` is picked up by a glob, so a new step is
tested as soon as it exists.  It needs ``tutorials/expected/NN_slug.txt``
(create it by running the script once and reading the output carefully)
and, if it imports a minikvm module no earlier step has, an entry in
:data:`INTRODUCED_IN` below — the table of which step introduces which
module, like the chapters of Crafting Interpreters.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from minikvm.cli.doctor import loaded_modules

ROOT = Path(__file__).resolve().parent.parent
TUTORIALS = sorted((ROOT / "tutorials").glob("[0-9][0-9]_*.py"))
EXPECTED = ROOT / "tutorials" / "expected"
#: Generous: the slowest step boots a guest in well under a second.
TIMEOUT_SECONDS = 120

#: minikvm module → the tutorial step that introduces it.  Step NN may
#: import only modules whose step is NN or lower.
INTRODUCED_IN: dict[str, int] = {
    "minikvm.kvm.system": 0,        # open /dev/kvm, ask questions
    "minikvm.errors": 0,     # KvmUnavailable: what to do when it is missing
    "minikvm.ioctl": 0,      # the KVM_CAP_* names
    "minikvm.kvm.vm": 1,         # KVM_CREATE_VM, memory slots
    "minikvm.kvm.memory": 1,     # GuestMemory: a memfd mapped here
    "minikvm.kvm.vcpu": 2,       # KVM_CREATE_VCPU, registers, KVM_RUN
    "minikvm.x86": 2,        # architectural names (RFLAGS_FIXED, CR0_PE, PTE_*)
    "minikvm.kvm.exits": 3,      # typed exits
    "minikvm.cpu.modes": 3,      # setup_real_mode, then protected and long mode
    "minikvm.cpu.segments": 4,   # GDT descriptors
    "minikvm.paging": 7,     # sparse 4-level page tables
    "minikvm.cpu.layout": 7,     # the guest's memory map
    "minikvm.cpu.gdt": 8,        # the GDT with user segments and the TSS descriptor
    "minikvm.cpu.idt": 8,        # exception gates
    "minikvm.cpu.tss": 8,        # IST stack, I/O permission bitmap
    "minikvm.cpu.guestcode": 8,  # the syscall and exception stubs
    "minikvm.machine.mm": 8,         # the memory manager: mappings and guest pointers
    "minikvm.machine.machine": 8,    # a user-mode machine and its run loop
    "minikvm.machine.crash": 8,      # crash reports
    "minikvm.process.elf": 11,       # reading a program file: segments, entry, symbols
    "minikvm.process.stack": 11,     # the initial stack: argv, envp, auxv
    "minikvm.process.process": 12,   # Process.spawn and run: a C program
    "minikvm.syscalls": 12,  # the system-call table, the Dispatcher, the Tracer
    "minikvm.sandbox.policy": 12,    # the sandbox policy (no grant, or a directory)
    "minikvm.sandbox.confine": 14,   # Landlock + seccomp around minikvm itself
    "minikvm.sandbox.openat2": 14,   # open flags for Policy.open
    "minikvm.snapshot.snapshot": 15,  # snapshots, forks, resets, calls
    "minikvm.snapshot.file": 15,  # snapshot files
    "minikvm.snapshot.frozen": 15,  # the frozen memory a snapshot keeps
    "minikvm.snapshot.cpu_state": 15,  # the vCPU state a snapshot keeps
}

STEP_MARKER = re.compile(r"#\s*--- step: ([\w-]+) ---")
END_MARKER = re.compile(r"#\s*--- end: ([\w-]+) ---")


def step_number(script: Path) -> int:
    return int(script.name[:2])


def minikvm_imports(script: Path) -> set[str]:
    """The minikvm modules a script imports, by their full dotted names
    (``from minikvm.kvm import vm`` counts as ``minikvm.kvm.vm``; anything
    inside ``minikvm.syscalls`` counts as the package, which step 12
    introduces whole)."""
    tree = ast.parse(script.read_text(), filename=str(script))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = []
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                is_module = (ROOT / Path(*submodule.split("."))).with_suffix(".py").exists()
                names.append(submodule if is_module else node.module)
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] != "minikvm" or len(parts) == 1:
                continue
            found.add("minikvm.syscalls" if parts[1] == "syscalls" else name)
    return found


def script_id(script: Path) -> str:
    return script.stem


def test_there_are_tutorials() -> None:
    assert TUTORIALS, f"no tutorials/[0-9][0-9]_*.py found under {ROOT}"


@pytest.mark.parametrize("script", TUTORIALS, ids=script_id)
def test_imports_only_introduced_modules(script: Path) -> None:
    step = step_number(script)
    problems = []
    for module in sorted(minikvm_imports(script)):
        if module not in INTRODUCED_IN:
            problems.append(f"{module} is in no step: add it to INTRODUCED_IN in "
                            f"tests/test_tutorials.py with the step that introduces it")
        elif INTRODUCED_IN[module] > step:
            problems.append(f"{module} is introduced in step {INTRODUCED_IN[module]:02d}, "
                            f"after this step {step:02d}")
    assert not problems, f"tutorials/{script.name}: " + "; ".join(problems)


@pytest.mark.parametrize("script", TUTORIALS, ids=script_id)
def test_markers_are_paired(script: Path) -> None:
    """Every ``# --- step: name ---`` has its ``# --- end: name ---`` below it,
    names are unique in the file, and regions do not nest (the docs include
    the code between the two markers)."""
    open_name = None
    seen: set[str] = set()
    for number, line in enumerate(script.read_text().splitlines(), start=1):
        where = f"tutorials/{script.name}:{number}"
        if match := STEP_MARKER.search(line):
            name = match.group(1)
            assert open_name is None, f"{where}: step '{name}' starts inside '{open_name}'"
            assert name not in seen, f"{where}: a second step named '{name}'"
            open_name = name
            seen.add(name)
        elif match := END_MARKER.search(line):
            assert match.group(1) == open_name, (
                f"{where}: 'end: {match.group(1)}' does not close the open step "
                f"'{open_name}'")
            open_name = None
    assert open_name is None, f"tutorials/{script.name}: step '{open_name}' is never ended"
    assert seen, f"tutorials/{script.name} has no '# --- step: name ---' markers for the docs"


@pytest.mark.parametrize("script", TUTORIALS, ids=script_id)
def test_has_expected_output(script: Path) -> None:
    expected = EXPECTED / f"{script.stem}.txt"
    assert expected.exists(), (
        f"{expected.relative_to(ROOT)} is missing: run "
        f"'python tutorials/{script.name} > {expected.relative_to(ROOT)}' and check it")


def expected_output_file(script: Path) -> Path:
    """The expected output of *script* on this host.

    A step whose output depends on the kind of KVM (tutorial 09 prints the
    CPL at which ``syscall`` reached the stub: 3 on PVM, 0 on VMX/SVM) keeps
    the PVM output in ``NN_slug.txt`` and the hardware one in
    ``NN_slug.hardware.txt``; which one applies is decided here from the
    loaded kernel modules, independently of what the script claims."""
    hardware = EXPECTED / f"{script.stem}.hardware.txt"
    if hardware.exists() and "kvm_pvm" not in loaded_modules():
        return hardware
    return EXPECTED / f"{script.stem}.txt"


@pytest.mark.kvm
@pytest.mark.parametrize("script", TUTORIALS, ids=script_id)
def test_output_matches_expected(script: Path) -> None:
    expected_file = expected_output_file(script)
    if not expected_file.exists():
        pytest.fail(f"{expected_file.relative_to(ROOT)} is missing (see test_has_expected_output)")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    result = subprocess.run([sys.executable, str(script)], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=TIMEOUT_SECONDS)
    assert result.returncode == 0, (
        f"tutorials/{script.name} exited with status {result.returncode}\n"
        f"--- stdout ---\n{result.stdout}--- stderr ---\n{result.stderr}")
    assert result.stdout == expected_file.read_text()
