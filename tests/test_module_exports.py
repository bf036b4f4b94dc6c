"""Every name a spadfast module lists in ``__all__`` is defined in that module: re-exports live only in the package
``__init__`` files, so a reader finds each name where its ``__all__`` says."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MODULES = sorted(p for d in ("spadfast", "kernels") for p in (ROOT / d).glob("*.py") if p.name != "__init__.py")


def _defined_and_exported(path: Path) -> tuple[set[str], list[str]]:
    tree = ast.parse(path.read_text())
    defined: set[str] = set()
    exported: list[str] = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            defined.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if isinstance(target, ast.Name):
                    defined.add(target.id)
                    if target.id == "__all__":
                        exported = [ast.literal_eval(e) for e in node.value.elts]
    return defined, exported


@pytest.mark.parametrize("path", MODULES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_all_lists_only_names_the_module_defines(path):
    defined, exported = _defined_and_exported(path)
    imported_only = [name for name in exported if name not in defined]
    assert not imported_only, f"{path.name} re-exports {imported_only}: import them from their home module"


def test_the_rule_sees_a_re_export(tmp_path):
    module = tmp_path / "facade.py"
    module.write_text('from os.path import join\n\n__all__ = ["join", "local"]\n\n\ndef local():\n    pass\n')
    defined, exported = _defined_and_exported(module)
    assert [n for n in exported if n not in defined] == ["join"]


def test_no_public_name_is_defined_in_two_modules():
    """A constant or function with one meaning has one home (copies drift: two INTENSITY_NORMS, two label readers)."""
    homes: dict[str, list[str]] = {}
    for path in MODULES:
        if path.parent.name != "spadfast":
            continue
        defined, _ = _defined_and_exported(path)
        for name in defined:
            if not name.startswith("_") and name not in ("main", "add_arguments", "__all__"):
                homes.setdefault(name, []).append(path.name)
    mirrors = ["ops.py", "reference.py"]  # each public op and its reference share a signature by design (STYLE.md)
    twice = {name: where for name, where in homes.items() if len(where) > 1 and sorted(where) != mirrors}
    assert not twice, f"defined in more than one module: {twice}"


def _spadfast_imports(path: Path) -> set[str]:
    """Modules of spadfast (``spadfast.x`` or ``spadfast.kernels.x``) that ``path`` imports anywhere, lazily too."""
    package = "spadfast.kernels" if path.parent.name == "kernels" else "spadfast"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package if node.level == 1 else "spadfast"
                mod = f"{base}.{node.module}" if node.module else base
            else:
                mod = node.module or ""
            names = [f"{mod}.{a.name}" for a in node.names] if mod in ("spadfast", "spadfast.kernels") else [mod]
            found.update(n for n in names if n.startswith("spadfast."))
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("spadfast."))
    return found


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_no_import_cycle_among_modules():
    """Imports point one way (lazy imports inside functions included): no module reaches itself again."""
    name_of = {p: ("spadfast.kernels." if p.parent.name == "kernels" else "spadfast.") + p.stem for p in MODULES}
    known = set(name_of.values())
    graph = {name_of[p]: {m for m in _spadfast_imports(p) if m in known and m != name_of[p]} for p in MODULES}
    assert "spadfast.ops" in graph["spadfast.verify"]  # the scan sees `from . import ops`
    cycle = _find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_cycle_finder_sees_a_lazy_cycle():
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


@pytest.mark.parametrize("path", MODULES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_no_module_over_450_lines(path):
    assert len(path.read_text().splitlines()) <= 450, f"{path.name}: split it by job"


def test_every_module_has_a_row_in_the_architecture_map():
    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    missing = [p.stem for p in MODULES if p.parent.name == "spadfast" and p.stem != "__main__"
               and f"`{p.stem}`" not in text]
    assert not missing, f"docs/ARCHITECTURE.md has no row for {missing}"
