"""The everyday ``pytest`` skips tests marked slow; scripts/test.sh (and so CI) and the GPU check run all of them."""

import configparser
import re
import shlex
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _pytest_args(script: str) -> list[list[str]]:
    """The arguments after ``-m pytest`` of every pytest command line in ``scripts/<script>``."""
    commands = []
    for line in (ROOT / "scripts" / script).read_text().splitlines():
        words = shlex.split(line, comments=True)
        if "pytest" in words and words[words.index("pytest") - 1] == "-m":
            commands.append(words[words.index("pytest") + 1 :])
    return commands


def test_plain_pytest_deselects_the_registered_slow_marker(pytestconfig):
    ini = configparser.ConfigParser()
    ini.read(ROOT / "pytest.ini")
    assert shlex.split(ini["pytest"]["addopts"]) == ["-m", "not slow"]
    markers = pytestconfig.getini("markers")
    assert any(m.startswith("slow:") for m in markers)
    assert all(re.fullmatch(r"\w+(\(.*\))?: .+", m) for m in markers), markers  # one line per marker


def test_full_runs_select_every_test():
    (full,) = _pytest_args("test.sh")
    # a later -m replaces pytest.ini's; the doctests of the package and kernels run too
    assert full[full.index("-m") + 1] == "" and {"tests", "spadfast", "kernels", "--doctest-modules"} <= set(full)
    assert full.index("-m") < full.index("$@")  # a caller's own -m still wins
    gpu_runs = [args for args in _pytest_args("gpu_check.sh") if "tests/kernels" in args]
    assert gpu_runs and all(args[args.index("-m") + 1] == "" for args in gpu_runs)


def test_every_path_the_scripts_hand_pytest_exists():
    """A moved test file must not leave the GPU check (or CI) running a path that is gone: pytest stops at it, so
    the lent GPU's minutes would test nothing. The CUDA-graph tests (tests/diffusion) are in the GPU check."""
    for script in ("test.sh", "gpu_check.sh"):
        for args in _pytest_args(script):
            words = args[:next((i for i, a in enumerate(args) if ">" in a or ";" in a), len(args))]  # pytest's own
            paths = [a for a in words if a.startswith(("tests", "spadfast", "kernels", "benchmarks"))]
            assert paths, (script, args)
            assert [a for a in paths if not (ROOT / a.split("::")[0]).exists()] == [], (script, args)
    gpu_paths = {a for args in _pytest_args("gpu_check.sh") for a in args}
    assert {"tests/kernels", "tests/diffusion"} <= gpu_paths
