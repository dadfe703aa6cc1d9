"""minikvm's modules import only downward (or sideways, within one layer).

The layers, lowest first, are listed below: a module may import modules of
its own layer or of any lower one, never of a higher one.  That keeps the
kernel mirror free of policy, lets the pure encoders be tested without
``/dev/kvm``, and gives the docs a reading order.  A module missing from
the list fails the test: decide its layer and add it here.

Every import counts — at the top, inside functions (late imports that
break a cycle) and under ``TYPE_CHECKING`` — because each one is a
dependency a reader has to understand first.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "minikvm"
TEST_FILE = "tests/test_layers.py"

#: Layer number → the modules in it (a package counts as one module).
LAYERS: dict[int, tuple[str, ...]] = {
    0: ("ioctl", "x86", "errors"),                   # the kernel's and the CPU's names
    1: ("kvm", "vm", "memory", "vcpu", "exits"),     # one class per KVM fd, typed exits
    3: ("segments", "modes"),                        # CPU modes and their descriptors
    4: ("paging", "layout"),                         # page tables, the memory map
    5: ("gdt", "idt", "tss", "guestcode"),           # what the guest CPU needs
    6: ("mm", "uaccess", "machine", "crash"),        # a running guest machine
    7: ("elf", "stack", "process", "fdtable", "sigframe", "threads"),  # a Linux program, its files, threads
    8: ("syscalls",),                                # the system calls (a package)
    9: ("openat2", "policy", "landlock", "seccomp", "confine"),  # what the program may do
    10: ("cpu_state", "frozen", "process_state", "snapshot", "snapshot_file"),                            # fork, reset
    11: ("cli", "doctor", "__main__", "serve"),      # the command line
}
LAYER_OF = {module: layer for layer, modules in LAYERS.items() for module in modules}
#: The package's ``__init__.py`` runs before *any* submodule: it may not
#: import minikvm modules, or ``import minikvm.ioctl`` would pull in more.
INIT_LAYER = -1

DOCSTRING_LAYER = re.compile(r"^Layer (\d+)\b")


def module_of(path: Path, root: Path = PACKAGE) -> str:
    """The layer-list name of a source file: ``vm`` for minikvm/kvm/vm.py,
    ``syscalls`` for anything inside minikvm/syscalls/, ``__init__`` for
    the package's own ``__init__.py``."""
    parts = path.relative_to(root).parts
    return parts[0] if len(parts) > 1 else path.stem


def imported_modules(path: Path, root: Path = PACKAGE) -> set[str]:
    """The minikvm modules (layer-list names) that *path* imports.

    ``import minikvm.kvm.vm``, ``from minikvm.kvm.vm import Vm``, ``from minikvm
    import vm`` and, inside the package, ``from ..vm import Vm`` all count
    as importing ``vm``.  A name that is not a submodule (``from minikvm
    import something``) comes from the package's ``__init__``.
    """
    tree = ast.parse(path.read_text(), filename=str(path))
    package = ["minikvm", *path.relative_to(root).parts[:-1]]  # for relative imports
    found: set[str] = set()

    def note(module: str, name: str | None) -> None:
        parts = module.split(".")
        if parts[0] != "minikvm":
            return
        if len(parts) > 1:
            found.add(parts[1])
        elif name is not None and ((root / f"{name}.py").exists() or (root / name).is_dir()):
            found.add(name)
        else:
            found.add("__init__")

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                note(alias.name, None)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            for alias in node.names:
                note(module, alias.name)
    found.discard(module_of(path, root))
    return found


def source_files() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def layer(module: str) -> int:
    if module == "__init__":
        return INIT_LAYER
    return LAYER_OF[module]


def test_every_module_has_a_layer() -> None:
    missing = sorted({module_of(path) for path in source_files()} - set(LAYER_OF)
                     - {"__init__"})
    assert not missing, (
        f"minikvm module(s) {', '.join(missing)} belong to no layer: add each to LAYERS in "
        f"{TEST_FILE} (a module may import only its own layer and the ones below)")


@pytest.mark.parametrize("path", source_files(),
                         ids=lambda path: str(path.relative_to(PACKAGE.parent)))
def test_imports_go_downward(path: Path) -> None:
    module = module_of(path)
    if module not in LAYER_OF and module != "__init__":
        pytest.fail(f"{module} belongs to no layer: add it to LAYERS in {TEST_FILE}")
    own = layer(module)
    wrong = []
    for imported in sorted(imported_modules(path)):
        if imported not in LAYER_OF and imported != "__init__":
            wrong.append(f"imports minikvm.{imported}, which belongs to no layer: add it "
                         f"to LAYERS in {TEST_FILE}")
        elif layer(imported) > own:
            wrong.append(f"imports minikvm.{imported} (layer {layer(imported)}), above its "
                         f"own layer {own}")
    where = path.relative_to(PACKAGE.parent)
    assert not wrong, (f"{where} (layer {own}) " + "; ".join(wrong)
                       + ": imports must go downward — move the code that needs the higher "
                         "module up a layer, or pass the object in as a parameter")


@pytest.mark.parametrize("path", [path for path in source_files()
                                  if path.parent == PACKAGE and path.stem != "__init__"
                                  and path.stem != "__main__"],
                         ids=lambda path: path.name)
def test_docstring_names_the_layer(path: Path) -> None:
    """Each module's docstring starts with "Layer N —", and N is its layer here."""
    module = module_of(path)
    if module not in LAYER_OF:
        pytest.skip("reported by test_every_module_has_a_layer")
    docstring = ast.get_docstring(ast.parse(path.read_text())) or ""
    match = DOCSTRING_LAYER.match(docstring)
    assert match, (f"minikvm/{path.name}: the docstring should start with "
                   f"'Layer {LAYER_OF[module]} — <what this module owns>'")
    assert int(match.group(1)) == LAYER_OF[module], (
        f"minikvm/{path.name} says 'Layer {match.group(1)}' but {TEST_FILE} puts it in "
        f"layer {LAYER_OF[module]}: make them agree")


def test_the_checker_sees_every_form_of_import(tmp_path: Path) -> None:
    """The import parser itself: aliased, late and package-relative imports."""
    root = tmp_path / "minikvm"
    (root / "syscalls").mkdir(parents=True)
    for name in ("ioctl.py", "mm.py", "vm.py", "x86.py", "syscalls/common.py"):
        (root / name).write_text("")
    source = root / "syscalls" / "fs.py"
    source.write_text(
        "from minikvm import ioctl as k\n"
        "import minikvm.x86\n"
        "from ..mm import GuestMemory\n"
        "from . import common\n"
        "def late():\n"
        "    from minikvm.kvm.vm import Vm\n"
        "    from minikvm import __version__\n")
    assert imported_modules(source, root) == {"ioctl", "x86", "mm", "vm", "__init__"}
