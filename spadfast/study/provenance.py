"""Which code made a study result: the commit of a checkout and whether its ``spadfast/`` differs from it."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

__all__ = ["code_commit"]


def code_commit(root: str | Path) -> dict[str, Any]:
    """``{"commit": short hash of HEAD of the git checkout at root ("unknown" outside one), "spadfast_dirty": whether
    spadfast/ holds uncommitted changes}``. A study records it when a run starts, when it finishes and when a
    process that scores runs starts (the code it loaded; HEAD may move while it runs)."""
    head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--", "spadfast"], capture_output=True,
                           text=True)
    return {"commit": head.stdout.strip() or "unknown", "spadfast_dirty": bool(dirty.stdout.strip())}
