"""The user docs stay true to the repository: links resolve, the README stays a short guide, the configuration
reference is the generator's output, the README's CLI table names real subcommands, and named scripts exist."""

import dataclasses
import importlib.util
import re
import sys
from pathlib import Path

import pytest

from spadfast import SPADConfig
from spadfast.cli import COMMANDS

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
USER_DOCS = [README, ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").glob("*.md")),
             ROOT / "benchmarks" / "README.md", ROOT / "benchmarks" / "RESULTS.md"]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def _generator():
    spec = importlib.util.spec_from_file_location("config_reference", ROOT / "scripts" / "config_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _local_links(path: Path) -> list[str]:
    links = [m.group(1) for m in LINK.finditer(path.read_text())]
    return [link.split("#")[0] for link in links if not re.match(r"[a-z]+:", link) and not link.startswith("#")]


def test_readme_is_a_short_guide():
    lines = README.read_text().splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines; move details into docs/"
    assert not re.search(r"\b20\d\d-\d\d-\d\d\b", README.read_text()), "dated entries belong in CHANGELOG.md"


@pytest.mark.parametrize("path", USER_DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_local_link_points_at_a_file(path):
    assert path.exists(), path
    missing = [link for link in _local_links(path) if link and not (path.parent / link).exists()]
    assert not missing, f"{path.relative_to(ROOT)} links to missing files: {missing}"


def test_readme_links_reach_the_guides():
    linked = {(ROOT / link).resolve() for link in _local_links(README)}
    for page in ["docs/configuration.md", "docs/spad_study.md", "benchmarks/RESULTS.md", "CHANGELOG.md"]:
        assert (ROOT / page).resolve() in linked, f"README.md does not link {page}"


@pytest.mark.parametrize("path", USER_DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_named_scripts_and_tests_exist(path):
    named = set(re.findall(r"\b(scripts/[\w./-]+\.(?:py|sh)|(?:benchmarks|tests)/[\w./-]+\.py)", path.read_text()))
    missing = sorted(n for n in named if not (ROOT / n).exists())
    assert not missing, f"{path.relative_to(ROOT)} names scripts that do not exist: {missing}"


def test_readme_cli_table_lists_every_subcommand_and_no_other():
    text = README.read_text()
    section = text.split("## Command line", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    documented = [re.match(r"\| `(?:torchrun [^`]*-m )?spadfast (\w+)", row).group(1) for row in rows]
    assert documented, "no CLI table under '## Command line'"
    assert set(documented) <= set(COMMANDS), f"documented commands that do not exist: {set(documented) - set(COMMANDS)}"
    assert set(COMMANDS) <= set(documented), f"subcommands missing from the table: {set(COMMANDS) - set(documented)}"


def test_configuration_reference_equals_the_generator_output():
    text = (ROOT / "docs" / "configuration.md").read_text()
    assert text == _generator().render(), "docs/configuration.md is stale: run scripts/config_reference.py"


def test_every_config_field_is_documented_in_the_source():
    docs = {name: text for name, _, text in _generator().field_docs(SPADConfig)}
    names = [f.name for f in dataclasses.fields(SPADConfig)]
    assert set(names) <= set(docs), f"fields the generator did not find: {set(names) - set(docs)}"
    bare = [n for n in names if not docs[n]]
    assert not bare, f"SPADConfig fields without a comment in spadfast/config.py: {bare}"
    assert all(f"| `{n}` |" in _generator().render() for n in names)


def test_generator_reads_sections_and_comments_from_the_source(tmp_path, monkeypatch):
    (tmp_path / "cfgmod.py").write_text(
        "from dataclasses import dataclass\n\n\n@dataclass\nclass C:\n    # model\n    a: int = 1  # the a | b\n"
        "    # training\n    # above b,\n    # two lines\n    b: str = 'x'\n    c: float = 0.5\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("cfgmod", None)
    from cfgmod import C

    gen = _generator()
    assert gen.field_docs(C) == [("a", "model", "the a | b"), ("b", "training", "above b, two lines"),
                                 ("c", "training", "")]
    rows = gen._table(C, "", {})
    assert "| `a` | `int` | `1` | the a \\| b |" in rows
    assert "| `c` | `float` | `0.5` | (no comment yet) |" in rows
    assert rows.count("### training") == 1


def test_config_reference_check_mode(tmp_path, capsys):
    stale = tmp_path / "configuration.md"
    stale.write_text("old\n")
    gen = _generator()
    assert gen.main(["--check", "--out", str(stale)]) == 1
    assert gen.main(["--out", str(stale)]) == 0
    assert gen.main(["--check", "--out", str(stale)]) == 0
