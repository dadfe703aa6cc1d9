"""minikvm's packages are layers: imports only go downward, and never in a circle.

The layers, lowest first, are :data:`LAYERS` — the same table the docs'
layer map is drawn from (``docs/_ext/minikvm_reference.py`` reads it from
here, so the picture cannot drift from what is checked).  A *unit* is a
top-level module (``minikvm/ioctl.py``) or a package (``minikvm/kvm/``):
a module may import its own unit, and any unit of a lower layer, never a
higher one.  That keeps the kernel mirror free of policy, lets the pure
encoders be tested without ``/dev/kvm``, and gives a reader an order.

Every import counts for "downward" — at the top, inside functions and
under ``TYPE_CHECKING`` — because each one is a dependency a reader has to
understand first.  For cycles, imports under ``TYPE_CHECKING`` do not
count: they name a type for an annotation and run nothing, so ``Vcpu``
may mention ``Vm`` in a hint while ``Vm`` creates ``Vcpu``.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "minikvm"
TEST_FILE = "tests/test_layers.py"

#: Layer number → (its name in the docs, the units in it).
LAYERS: dict[int, tuple[str, tuple[str, ...]]] = {
    0: ("the kernel's and the CPU's names", ("ioctl", "linux_abi", "x86", "errors")),
    1: ("KVM: system, VM, vCPU, memory, exits", ("kvm",)),
    2: ("the guest CPU: modes, descriptors, page tables, memory map", ("cpu", "paging")),
    3: ("a running machine: address space, run loop", ("machine",)),
    4: ("the sandbox: policy and the host's walls", ("sandbox",)),
    5: ("a Linux process: ELF, stack, files, threads", ("process",)),
    6: ("the system calls", ("syscalls",)),
    7: ("snapshots, processes, debugging and profiling: fork, reset, files, the process "
        "tree, gdb, flame graphs", ("snapshot", "tree", "debug", "observe")),
    8: ("the command line", ("cli", "__main__")),
}
LAYER_OF = {unit: layer for layer, (_, units) in LAYERS.items() for unit in units}

DOCSTRING_LAYER = re.compile(r"^Layer (\d+)\b")


def unit_of(path: Path, root: Path = PACKAGE) -> str:
    """``vm`` → ``kvm`` for minikvm/kvm/vm.py; ``ioctl`` for minikvm/ioctl.py."""
    parts = path.relative_to(root).parts
    return parts[0] if len(parts) > 1 else path.stem


def dotted_name(path: Path, root: Path = PACKAGE) -> str:
    """``minikvm.kvm.vm`` for minikvm/kvm/vm.py, ``minikvm.kvm`` for its __init__.py."""
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return ((isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
            or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"))


def imports_of(path: Path, root: Path = PACKAGE) -> list[tuple[str, bool]]:
    """Every minikvm module *path* imports, as (dotted name, only for typing).

    ``import minikvm.kvm.vm``, ``from minikvm.kvm.vm import Vm``, ``from
    minikvm.kvm import vm`` and, inside the package, ``from .vm import Vm``
    all name ``minikvm.kvm.vm``; ``from minikvm.kvm import something`` that
    is not a submodule names the package ``minikvm.kvm`` (its __init__).
    """
    tree = ast.parse(path.read_text(), filename=str(path))
    package = dotted_name(path, root).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    found: list[tuple[str, bool]] = []

    def exists(dotted: str) -> bool:
        relative = Path(*dotted.split(".")[1:]) if "." in dotted else Path()
        return (root / relative).with_suffix(".py").is_file() or (root / relative).is_dir()

    def visit(node: ast.AST, typing_only: bool) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.body:
                visit(child, True)
            for child in node.orelse:
                visit(child, typing_only)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "minikvm":
                    found.append((alias.name, typing_only))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if module.split(".")[0] == "minikvm":
                for alias in node.names:
                    submodule = f"{module}.{alias.name}"
                    found.append((submodule if exists(submodule) else module, typing_only))
        for child in ast.iter_child_nodes(node):
            visit(child, typing_only)

    visit(tree, False)
    return found


def source_files() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def unit_of_dotted(dotted: str) -> str:
    parts = dotted.split(".")
    return parts[1] if len(parts) > 1 else "minikvm"


def test_every_unit_has_a_layer() -> None:
    missing = sorted({unit_of(path) for path in source_files()} - set(LAYER_OF))
    assert not missing, (
        f"minikvm unit(s) {', '.join(missing)} belong to no layer: add each to LAYERS in "
        f"{TEST_FILE} (a module may import only its own unit and lower layers)")


@pytest.mark.parametrize("path", source_files(),
                         ids=lambda path: str(path.relative_to(PACKAGE.parent)))
def test_imports_go_downward(path: Path) -> None:
    unit = unit_of(path)
    if unit not in LAYER_OF:
        pytest.skip("reported by test_every_unit_has_a_layer")
    own = LAYER_OF[unit]
    wrong = []
    for imported, _ in imports_of(path):
        other = unit_of_dotted(imported)
        if other == unit:
            continue
        if other not in LAYER_OF:
            wrong.append(f"imports {imported}, which belongs to no layer")
        elif LAYER_OF[other] > own:
            wrong.append(f"imports {imported} (layer {LAYER_OF[other]}, '{other}'), above "
                         f"its own layer {own}")
    where = path.relative_to(PACKAGE.parent)
    assert not wrong, (f"{where} (layer {own}, '{unit}') " + "; ".join(sorted(set(wrong)))
                       + ": imports must go downward — move the code that needs the higher "
                         "module up a layer, or pass the object in as a parameter")


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle of *graph* (module → modules it imports), or []."""
    state: dict[str, int] = {}   # 1: on the current path, 2: done
    path: list[str] = []

    def walk(node: str) -> list[str]:
        state[node] = 1
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state:
                cycle = walk(target)
                if cycle:
                    return cycle
        path.pop()
        state[node] = 2
        return []

    for node in sorted(graph):
        if node not in state:
            cycle = walk(node)
            if cycle:
                return cycle
    return []


def import_graph() -> dict[str, set[str]]:
    """Module → the modules it imports at run time (not for typing only)."""
    graph: dict[str, set[str]] = {}
    for path in source_files():
        name = dotted_name(path)
        graph[name] = {imported for imported, typing_only in imports_of(path)
                       if not typing_only and imported != name}
    return graph


def test_no_import_cycle() -> None:
    cycle = find_cycle(import_graph())
    assert not cycle, ("import cycle: " + " -> ".join(cycle) + ": move what both need into a "
                       "lower module, or pass it in as a parameter")


@pytest.mark.parametrize("path", [path for path in source_files() if path.stem != "__main__"],
                         ids=lambda path: str(path.relative_to(PACKAGE.parent)))
def test_docstring_names_the_layer(path: Path) -> None:
    """Each module's docstring starts with "Layer N —", and N is its unit's layer."""
    unit = unit_of(path)
    if unit not in LAYER_OF:
        pytest.skip("reported by test_every_unit_has_a_layer")
    where = path.relative_to(PACKAGE.parent)
    docstring = ast.get_docstring(ast.parse(path.read_text())) or ""
    match = DOCSTRING_LAYER.match(docstring)
    assert match, (f"{where}: the docstring should start with "
                   f"'Layer {LAYER_OF[unit]} — <what this module owns>'")
    assert int(match.group(1)) == LAYER_OF[unit], (
        f"{where} says 'Layer {match.group(1)}' but {TEST_FILE} puts '{unit}' in "
        f"layer {LAYER_OF[unit]}: make them agree")


def test_the_checker_sees_every_form_of_import(tmp_path: Path) -> None:
    """The import parser itself: aliased, late, typing-only and package-relative imports."""
    root = tmp_path / "minikvm"
    (root / "syscalls").mkdir(parents=True)
    (root / "kvm").mkdir()
    for name in ("ioctl.py", "x86.py", "kvm/__init__.py", "kvm/vm.py", "kvm/fd.py",
                 "syscalls/__init__.py", "syscalls/common.py"):
        (root / name).write_text("")
    source = root / "syscalls" / "fs.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "from minikvm import ioctl as k\n"
        "import minikvm.x86\n"
        "from ..kvm import vm\n"
        "from . import common\n"
        "if TYPE_CHECKING:\n"
        "    from minikvm.kvm.fd import ioctl\n"
        "def late():\n"
        "    from minikvm.kvm import something\n")
    assert sorted(imports_of(source, root)) == [
        ("minikvm.ioctl", False), ("minikvm.kvm", False), ("minikvm.kvm.fd", True),
        ("minikvm.kvm.vm", False), ("minikvm.syscalls.common", False), ("minikvm.x86", False)]


def test_the_cycle_finder_finds_cycles() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) == []
