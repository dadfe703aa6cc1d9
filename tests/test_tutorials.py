"""The tutorial scripts: each runs, prints what its expected file says, and
uses only what the tutorial has introduced so far.

Every ``tutorials/NN_slug.py`` is picked up by a glob, so a new step is
tested as soon as it exists.  It needs ``tutorials/expected/NN_slug.txt``
(create it by running the script once and reading the output carefully)
and, if it imports a minikvm module no earlier step has, an entry in
:data:`INTRODUCED_IN` below — the table of which step introduces which
module, like the chapters of Crafting Interpreters.

Each step also has a page, ``docs/tutorials/NN_slug.md``, that shows the
library code the step teaches beside the script (a ``literalinclude`` of
``../../minikvm/...`` with ``:emphasize-lines:``).  Line numbers of library
code move when the library changes, so every emphasized line is pinned by
a ``% emphasize: <text>`` comment above the directive, one per line, in
order; :func:`test_emphasized_lines_say_what_the_page_says` fails, naming
the line that moved, when the code under a highlight is no longer what
the page promises.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from sphinx.directives.code import LiteralIncludeReader
from sphinx.util import parselinenos

from minikvm.cli.doctor import loaded_modules

ROOT = Path(__file__).resolve().parent.parent
TUTORIALS = sorted((ROOT / "tutorials").glob("[0-9][0-9]_*.py"))
EXPECTED = ROOT / "tutorials" / "expected"
PAGES = ROOT / "docs" / "tutorials"
#: Generous: the slowest step boots a guest in well under a second.
TIMEOUT_SECONDS = 120

#: minikvm module → the tutorial step that introduces it.  Step NN may
#: import only modules whose step is NN or lower, and the step named here
#: must import its module (a module a step only reaches through another,
#: like ``minikvm.kvm.vm`` through ``Kvm.create_vm`` in step 01, is shown
#: on the step's page but has no entry).
INTRODUCED_IN: dict[str, int] = {
    "minikvm.kvm.system": 0,          # open /dev/kvm, ask questions
    "minikvm.errors": 0,              # KvmUnavailable: what to do when it is missing
    "minikvm.ioctl": 0,               # the KVM_CAP_* names
    "minikvm.kvm.memory": 1,          # GuestMemory: a memfd mapped here
    "minikvm.kvm.vcpu": 2,            # KVM_CREATE_VCPU, registers, KVM_RUN
    "minikvm.x86": 2,                 # architectural names (RFLAGS_FIXED, CR0_PE, PTE_*)
    "minikvm.kvm.exits": 3,           # typed exits
    "minikvm.cpu.modes": 3,           # setup_real_mode, then protected and long mode
    "minikvm.cpu.segments": 4,        # GDT descriptors
    "minikvm.paging": 7,              # sparse 4-level page tables
    "minikvm.cpu.layout": 7,          # the guest's memory map
    "minikvm.cpu.gdt": 8,             # the GDT with user segments and the TSS descriptor
    "minikvm.cpu.idt": 8,             # exception gates
    "minikvm.cpu.tss": 8,             # IST stack, I/O permission bitmap
    "minikvm.cpu.guestcode": 8,       # the syscall and exception stubs
    "minikvm.machine.mm": 9,          # the memory manager: mappings and guest pointers
    "minikvm.machine.machine": 9,     # a user-mode machine and its run loop
    "minikvm.machine.crash": 9,       # crash reports
    "minikvm.process.elf": 12,        # reading a program file: segments, entry, symbols
    "minikvm.process.stack": 12,      # the initial stack: argv, envp, auxv
    "minikvm.process.process": 13,    # Process.spawn and run, with our own handlers
    "minikvm.syscalls": 14,           # the system-call table, the Dispatcher, the Tracer
    "minikvm.sandbox.policy": 14,     # the sandbox policy (no grant, or a directory)
    "minikvm.sandbox.confine": 17,    # Landlock + seccomp around minikvm itself
    "minikvm.sandbox.openat2": 17,    # open flags for Policy.open
    "minikvm.snapshot.snapshot": 18,  # snapshots, forks, resets, calls
    "minikvm.snapshot.file": 18,      # snapshot files
    "minikvm.debug.packets": 19,      # the GDB remote protocol's framing
    "minikvm.debug.session": 19,      # stops from int3 and TF, resumes
    "minikvm.debug.target": 19,       # the registers gdb is told of, in order
    "minikvm.tree.family": 20,        # a sandbox's tree of processes: fork, wait, the table
}

STEP_MARKER = re.compile(r"#\s*--- step: ([\w-]+) ---")
END_MARKER = re.compile(r"#\s*--- end: ([\w-]+) ---")


def step_number(script: Path) -> int:
    return int(script.name[:2])


def minikvm_imports(script: Path) -> set[str]:
    """The minikvm modules a script imports, by their full dotted names
    (``from minikvm.kvm import vm`` counts as ``minikvm.kvm.vm``; anything
    inside ``minikvm.syscalls`` counts as the package, which step 14
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

    A step whose output depends on the kind of KVM (tutorial 10 prints the
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


# --- the step table itself ---------------------------------------------------


def scripts_of_step(step: int) -> list[Path]:
    return [script for script in TUTORIALS if step_number(script) == step]


def test_step_numbers_are_unique_and_consecutive() -> None:
    numbers = [step_number(script) for script in TUTORIALS]
    assert numbers == list(range(len(numbers))), (
        f"tutorial steps are numbered {numbers}: each number once, from 00 up, no gaps "
        "(renumber the scripts, their expected outputs and their pages together)")


@pytest.mark.parametrize("module", sorted(INTRODUCED_IN))
def test_each_module_is_imported_by_the_step_that_introduces_it(module: str) -> None:
    """INTRODUCED_IN says where a reader first meets a module: that step's
    script must really import it, or the table lies."""
    step = INTRODUCED_IN[module]
    scripts = scripts_of_step(step)
    assert scripts, f"INTRODUCED_IN puts {module} in step {step:02d}, which does not exist"
    assert module in minikvm_imports(scripts[0]), (
        f"INTRODUCED_IN says step {step:02d} introduces {module}, but "
        f"tutorials/{scripts[0].name} does not import it: import it there, or move the "
        f"entry to the step that first does")


# --- the pages -----------------------------------------------------------------

LITERALINCLUDE = re.compile(r"^```\{literalinclude\}\s+(\S+)\s*$")
OPTION = re.compile(r"^:([\w-]+):\s*(.*?)\s*$")
EMPHASIZE_COMMENT = re.compile(r"^%\s*emphasize:\s?(.*?)\s*$")


def page_of(script: Path) -> Path:
    return PAGES / f"{script.stem}.md"


def literalincludes(page: Path) -> list[tuple[int, str, dict[str, str], list[str]]]:
    """(line, path, options, pinned texts) of every literalinclude of *page*;
    the pinned texts are the ``% emphasize:`` comments right above it."""
    lines = page.read_text().splitlines()
    found = []
    for number, line in enumerate(lines):
        match = LITERALINCLUDE.match(line)
        if not match:
            continue
        options = {}
        for option_line in lines[number + 1:]:
            option = OPTION.match(option_line)
            if not option:
                break
            options[option.group(1)] = option.group(2).strip('"')
        pinned: list[str] = []
        above = number - 1
        while above >= 0 and (comment := EMPHASIZE_COMMENT.match(lines[above])):
            pinned.insert(0, comment.group(1))
            above -= 1
        found.append((number + 1, match.group(1), options, pinned))
    return found


def library_includes(page: Path) -> list[tuple[int, str, dict[str, str], list[str]]]:
    return [include for include in literalincludes(page)
            if include[1].startswith("../../minikvm/")]


class _Config:
    """What Sphinx's LiteralIncludeReader reads from the build's config."""
    source_encoding = "utf-8-sig"


def included_lines(page: Path, path: str, options: dict[str, str]) -> list[str]:
    """The lines Sphinx shows for a literalinclude, read by Sphinx's own reader."""
    reader_options = {name: value for name, value in options.items()
                      if name in ("pyobject", "start-at", "start-after", "end-at",
                                  "end-before", "lines", "dedent")}
    if "dedent" in reader_options:
        reader_options["dedent"] = int(reader_options["dedent"]) if reader_options["dedent"] \
            else None
    reader = LiteralIncludeReader(str((page.parent / path).resolve()), reader_options,
                                  _Config())
    text, _ = reader.read()
    return text.splitlines()


@pytest.mark.parametrize("script", TUTORIALS, ids=script_id)
def test_page_shows_the_script_the_output_and_the_library(script: Path) -> None:
    """Each step's page includes its script, its expected output, and at
    least one piece of minikvm itself with the lines that matter emphasized."""
    page = page_of(script)
    assert page.exists(), f"tutorials/{script.name} has no page: write {page.relative_to(ROOT)}"
    includes = literalincludes(page)
    where = page.relative_to(ROOT)
    paths = {path for _, path, _, _ in includes}
    assert f"../../tutorials/{script.name}" in paths, f"{where} never includes its script"
    assert f"../../tutorials/expected/{script.stem}.txt" in paths, (
        f"{where} does not show the expected output (include "
        f"../../tutorials/expected/{script.stem}.txt)")
    library = library_includes(page)
    assert library, (f"{where} shows no library code: include the minikvm code this step "
                     "teaches (```{literalinclude} ../../minikvm/... with :pyobject:)")
    assert any("emphasize-lines" in options for _, _, options, _ in library), (
        f"{where}: mark the lines the step is about with :emphasize-lines:")
    for line, path, options, _ in includes:
        if path.startswith("../../tutorials/") and path.endswith(".py"):
            assert "lines" not in options, (
                f"{where}:{line} includes {path} by line numbers: use its "
                "'# --- step: name ---' markers (:start-after:/:end-before:)")


#: The sections of a tutorial page, in order (the skeleton of blog_os's
#: posts): what will work, the theory, the code, running it, what it
#: showed, what comes next.
PAGE_SECTIONS = ["Goal", "Background", "Code", "Run it", "What just happened", "Next"]


@pytest.mark.parametrize("script", TUTORIALS, ids=script_id)
def test_page_follows_the_skeleton(script: Path) -> None:
    page = page_of(script)
    if not page.exists():
        pytest.skip("reported by test_page_shows_the_script_the_output_and_the_library")
    sections = re.findall(r"^## (.+?)\s*$", page.read_text(), flags=re.MULTILINE)
    assert sections == PAGE_SECTIONS, (
        f"{page.relative_to(ROOT)} has the sections {sections}; a tutorial page has "
        f"{PAGE_SECTIONS}, in that order (### subsections are free)")


PAGE_LIBRARY_INCLUDES = [(page, include) for page in sorted(PAGES.glob("[0-9][0-9]_*.md"))
                         for include in library_includes(page)]


@pytest.mark.parametrize("page,include", PAGE_LIBRARY_INCLUDES,
                         ids=[f"{page.stem}:{include[0]}" for page, include in
                              PAGE_LIBRARY_INCLUDES])
def test_emphasized_lines_say_what_the_page_says(page: Path, include: tuple) -> None:
    line, path, options, pinned = include
    where = f"{page.relative_to(ROOT)}:{line}"
    spec = options.get("emphasize-lines")
    if spec is None:
        assert not pinned, f"{where}: '% emphasize:' comments but no :emphasize-lines:"
        return
    shown = included_lines(page, path, options)
    emphasized = parselinenos(spec, len(shown))
    assert len(pinned) == len(emphasized), (
        f"{where}: :emphasize-lines: {spec} marks {len(emphasized)} lines but "
        f"{len(pinned)} '% emphasize: <text>' comments stand above it (one per line, in order)")
    for index, text in zip(emphasized, pinned):
        assert text in shown[index], (
            f"{where}: line {index + 1} of {path} ({options.get('pyobject', 'the excerpt')}) "
            f"now reads {shown[index].strip()!r}, not {text!r}: the code moved; fix "
            ":emphasize-lines: (or the comment, if the code changed on purpose)")


def test_the_index_lists_every_step_in_order() -> None:
    index = (PAGES / "index.md").read_text()
    listed = re.findall(r"^(\d\d_[\w]+)$", index, flags=re.MULTILINE)
    assert listed == [script.stem for script in TUTORIALS], (
        f"docs/tutorials/index.md lists {listed}; the steps are "
        f"{[script.stem for script in TUTORIALS]}")
