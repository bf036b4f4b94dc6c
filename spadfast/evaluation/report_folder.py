"""The folder of an HTML evaluation report: which files are the report's own, the check before writing, and the
swap that replaces a previous report while keeping every other file in the folder.

The report owns ``index.html``, ``report.json``, the marker ``.spadfast-report``, ``plots/{metrics,curves}.png``
and ``thumbs/<i>_{img,gt,pred,unc}.png``. Like ``predict --overwrite``, which replaces only the files predict
writes, re-writing a report replaces only these: anything else a user put in the folder (notes, a sub-folder,
other files under ``plots/``) is carried into the new report folder unchanged.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

from ..io.paths import check_writable_dir

MARKER = ".spadfast-report"
_OWN_FILES = frozenset({"index.html", "report.json", MARKER})
_OWN_FOLDERS = {
    "plots": re.compile(r"(metrics|curves)\.png"),
    "thumbs": re.compile(r"\d+_(img|gt|pred|unc)\.png"),
}

__all__ = ["MARKER", "check_report_dir", "foreign_entries", "swap_in"]


def check_report_dir(out: str | os.PathLike, name: str = "report folder") -> Path:
    """``out`` may receive a report: new, empty, or a previous report (holds :data:`MARKER`), and writable.

    Raises:
        ValueError: ``out`` is a file, not writable, a non-empty folder that is not a spadfast report, or holds a
            file where the report writes a folder (names the path).
    """
    out = Path(out)
    check_writable_dir(out, name)
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).is_file():
        raise ValueError(f"{name} {str(out)!r} exists, is not empty and is not a spadfast report (no {MARKER} "
                         "file): choose another folder; spadfast writes reports only into new folders or its own")
    for folder in _OWN_FOLDERS:
        if (out / folder).exists() and not (out / folder).is_dir():
            raise ValueError(f"{name} {str(out)!r} holds a file {folder!r} where the report writes a folder: move "
                             "it away")
    return out


def foreign_entries(out: Path) -> list[Path]:
    """Paths relative to ``out`` of everything that is not the report's own (a foreign folder is one entry)."""
    found = []
    for entry in sorted(out.iterdir()):
        if entry.name in _OWN_FILES:
            continue
        pattern = _OWN_FOLDERS.get(entry.name)
        if pattern is None or not entry.is_dir():
            found.append(Path(entry.name))
            continue
        found += [Path(entry.name, p.name) for p in sorted(entry.iterdir()) if not pattern.fullmatch(p.name)]
    return found


def _move(entries: list[Path], src: Path, dst: Path) -> None:
    for rel in entries:
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        os.replace(src / rel, dst / rel)


def swap_in(tmp: Path, out: Path) -> None:
    """Move the finished report folder ``tmp`` to ``out`` by renames (never half-written). A previous report at
    ``out`` is replaced; its foreign entries (:func:`foreign_entries`) move into the new folder first."""
    if not out.exists():
        os.replace(tmp, out)
        return
    foreign = foreign_entries(out)
    old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.spadfast-old-"))
    old.rmdir()
    os.replace(out, old)
    moved: list[Path] = []
    try:
        for rel in foreign:
            _move([rel], old, tmp)
            moved.append(rel)
        os.replace(tmp, out)
    except BaseException:
        _move(moved, tmp, old)  # the user's files go back with the previous report
        os.replace(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)
