"""Plot files that spadfast wrote: the creator tag its plots carry, and the check that a plot replaces only those.

Every plot names its creator ``spadfast plot <version>`` in the file's own metadata: a PNG ``tEXt`` chunk
``Creator``, the SVG's Dublin Core ``dc:creator``, the PDF information dictionary's ``/Creator``. A file that
carries the tag is a previous plot and may be replaced; any other existing file is refused unless the caller
passes ``overwrite``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from .._version import __version__
from ..io.paths import check_output_file

CREATOR = "spadfast plot"
PLOT_FORMATS = ("png", "svg", "pdf")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_HEAD_BYTES = 1 << 16  # the SVG metadata block is at the top, the PDF information dictionary near the end
_SVG_TAG = re.compile(r"<dc:creator>\s*<cc:Agent>\s*<dc:title>" + re.escape(CREATOR) + r"[ <]")
_PDF_TAG = b"/Creator (" + CREATOR.encode() + b" "

__all__ = ["CREATOR", "PLOT_FORMATS", "plot_format", "plot_metadata", "is_spadfast_plot", "check_plot_target"]


def plot_format(path: str | os.PathLike) -> str:
    """``"png"``, ``"svg"`` or ``"pdf"`` from the file's suffix (none: png); another suffix is a ValueError."""
    path = Path(path)
    fmt = path.suffix.lower().lstrip(".") or "png"
    if fmt not in PLOT_FORMATS:
        raise ValueError(f"plot file {str(path)!r} must end in .png, .svg or .pdf")
    return fmt


def plot_metadata() -> dict[str, str]:
    """The ``metadata`` argument of ``Figure.savefig`` that tags a plot as spadfast's (every format takes it)."""
    return {"Creator": f"{CREATOR} {__version__}"}


def _png_creator(path: Path) -> str | None:
    """The ``Creator`` text of a PNG's ``tEXt`` chunks before the image data, or None."""
    with open(path, "rb") as f:
        if f.read(8) != _PNG_SIGNATURE:
            return None
        while True:
            head = f.read(8)
            if len(head) < 8:
                return None
            length, kind = int.from_bytes(head[:4], "big"), head[4:]
            if kind in (b"IDAT", b"IEND") or length > _HEAD_BYTES:
                return None
            data = f.read(length)
            f.seek(4, os.SEEK_CUR)  # CRC
            if kind == b"tEXt" and data.startswith(b"Creator\x00"):
                return data[len(b"Creator\x00"):].decode("latin-1")


def is_spadfast_plot(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a file written by a spadfast plot (its creator tag, read from the file's metadata)."""
    path = Path(path)
    if not path.is_file():
        return False
    try:
        fmt = plot_format(path)
        if fmt == "png":
            creator = _png_creator(path)
            return creator is not None and (creator + " ").startswith(CREATOR + " ")
        with open(path, "rb") as f:
            if fmt == "svg":
                return _SVG_TAG.search(f.read(_HEAD_BYTES).decode("utf-8", "replace")) is not None
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - _HEAD_BYTES))
            return _PDF_TAG in f.read()
    except (OSError, ValueError):
        return False


def check_plot_target(path: str | os.PathLike, name: str, overwrite: bool = False) -> Path:
    """A plot file about to be written: a known format, not a folder, in a writable folder, and either new, a
    previous spadfast plot, or ``overwrite`` given; anything else is a ValueError naming ``name`` and the file."""
    path = check_output_file(path, name)
    plot_format(path)
    if path.exists() and not overwrite and not is_spadfast_plot(path):
        raise ValueError(f"{name} {str(path)!r} exists and is not a spadfast plot: choose another file, or pass "
                         "--overwrite to replace it")
    return path
