"""What kind of input a folder holds (2-D images or NIfTI volumes), checked before any prediction reads it."""

from __future__ import annotations

from pathlib import Path

from .files import index_folder
from .nifti import volume_files

__all__ = ["check_one_input_kind"]


def check_one_input_kind(folder: str | Path, name: str = "images") -> None:
    """ValueError naming ``folder`` and one file of each kind when it holds both 2-D images (PNG/JPEG/TIFF/BMP)
    and NIfTI volumes: a prediction reads one kind, so the other would be skipped without a word."""
    folder = Path(folder)
    images, volumes = index_folder(folder), volume_files(folder)
    if images and volumes:
        image, volume = next(iter(images.values())), next(iter(volumes.values()))
        raise ValueError(f"`{name}` folder {str(folder)!r} mixes 2-D images and NIfTI volumes (e.g. {image.name!r} "
                         f"and {volume.name!r}): put each kind in its own folder")
