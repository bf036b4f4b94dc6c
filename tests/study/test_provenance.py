"""study.provenance: the commit of a checkout, "unknown" outside one."""

import re
import subprocess
from pathlib import Path

from spadfast.study.provenance import code_commit

ROOT = Path(__file__).resolve().parents[2]


def test_code_commit_names_head_of_a_checkout_and_unknown_elsewhere(tmp_path):
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    got = code_commit(ROOT)
    if head.returncode == 0:  # a git checkout (CI clones one)
        assert got["commit"] == head.stdout.strip() and re.fullmatch(r"[0-9a-f]{4,40}", got["commit"])
    assert isinstance(got["spadfast_dirty"], bool)
    assert code_commit(tmp_path) == {"commit": "unknown", "spadfast_dirty": False}
