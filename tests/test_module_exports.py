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
