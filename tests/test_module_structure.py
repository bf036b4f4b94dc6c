"""The package's shape: every ``__all__`` name is defined where it is listed, one home per public name, no import
cycle among modules, and no two subpackages that import each other (the pipeline's stages point one way)."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "spadfast"
SUBPACKAGES = ("runtime", "ops", "io", "diffusion", "models", "data", "evaluation", "infer", "train", "study",
               "viewers")
MODULES = sorted([p for p in SOURCE.rglob("*.py")] + [p for p in (ROOT / "kernels").glob("*.py")])


def module_name(path: Path) -> str:
    """Dotted import name of a source file (``kernels/x.py`` installs as ``spadfast.kernels.x``)."""
    if path.parent == ROOT / "kernels":
        parts = ["spadfast", "kernels", path.stem]
    else:
        parts = ["spadfast", *path.relative_to(SOURCE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


KNOWN = {module_name(p) for p in MODULES}


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


@pytest.mark.parametrize("path", [p for p in MODULES if p.name != "__init__.py"], ids=module_name)
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
        if path.parent == ROOT / "kernels" or path.name == "__init__.py":
            continue
        defined, _ = _defined_and_exported(path)
        for name in defined:
            if not name.startswith("_") and name not in ("main", "add_arguments", "__all__"):
                homes.setdefault(name, []).append(module_name(path))
    mirrors = ["spadfast.ops.dispatch", "spadfast.ops.reference"]  # each op and its reference share a signature
    twice = {name: where for name, where in homes.items() if len(where) > 1 and sorted(where) != mirrors}
    assert not twice, f"defined in more than one module: {twice}"


def _spadfast_imports(path: Path) -> set[str]:
    """Dotted names (modules, or module.attribute) of spadfast that ``path`` imports anywhere, lazily too."""
    own = module_name(path)
    package = own if path.name == "__init__.py" else own.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package
            for _ in range(max(node.level - 1, 0)):
                base = base.rsplit(".", 1)[0]
            mod = (f"{base}.{node.module}" if node.level and node.module else base) if node.level else (node.module or "")
            submodules = {f"{mod}.{a.name}" for a in node.names} & KNOWN
            found.update(submodules)
            if len(submodules) < len(node.names):  # some names are attributes of ``mod`` itself
                found.add(mod)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return {n for n in found if n.startswith("spadfast.")}


def _graph(unit) -> dict[str, set[str]]:
    """Import graph between ``unit(module name)`` nodes, over modules that exist (attributes are dropped)."""
    known = {module_name(p) for p in MODULES}
    graph: dict[str, set[str]] = {}
    for path in MODULES:
        source = unit(module_name(path))
        targets = {unit(m) for m in _spadfast_imports(path) if m in known}
        graph.setdefault(source, set()).update(t for t in targets if t != source)
    return graph


def stage_of(module: str) -> str:
    """The pipeline stage a module belongs to: its subpackage (the Triton kernels are the ops stage's device half),
    or the module itself at the top level."""
    parts = module.split(".")
    if len(parts) >= 2 and parts[1] == "kernels":
        return "ops"
    if len(parts) >= 2 and parts[1] in SUBPACKAGES:
        return parts[1]
    return module


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
    graph = _graph(lambda m: m)
    assert "spadfast.ops" in graph["spadfast.verify"]  # the scan sees `from . import ops`
    cycle = _find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_no_two_stages_import_each_other():
    """Subpackages (and the top-level modules) form a DAG: a stage never reaches back to one that imports it."""
    graph = _graph(stage_of)
    cycle = _find_cycle({k: v for k, v in graph.items() if k != "spadfast"})  # the package __init__ only re-exports
    assert cycle is None, "stages import each other: " + " -> ".join(cycle or [])
    assert "io" in graph["data"] and "evaluation" in graph["infer"]  # the scan sees relative imports across stages


def test_the_cycle_finder_sees_a_lazy_cycle():
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_every_subpackage_is_a_stage_and_has_an_init():
    found = sorted(p.parent.name for p in SOURCE.glob("*/__init__.py"))
    assert found == sorted(SUBPACKAGES)


def test_subpackage_inits_define_nothing():
    """A subpackage's ``__init__`` states its public names (imports and ``__all__``) or is empty: no code hides there."""
    for init in SOURCE.glob("*/__init__.py"):
        for node in ast.parse(init.read_text()).body:
            allowed = isinstance(node, (ast.Import, ast.ImportFrom)) or (
                isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)) or (
                isinstance(node, ast.Assign) and [t.id for t in node.targets if isinstance(t, ast.Name)] == ["__all__"])
            assert allowed, f"{init.relative_to(ROOT)} line {node.lineno} defines code"


def test_every_module_has_a_row_in_the_architecture_map():
    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    missing = [module_name(p) for p in MODULES if p.parent != ROOT / "kernels" and p.name not in ("__init__.py", "__main__.py")
               and f"`{module_name(p).removeprefix('spadfast.')}`" not in text]
    assert not missing, f"docs/ARCHITECTURE.md has no row for {missing}"
