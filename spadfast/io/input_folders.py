"""What kind of input a folder holds (2-D images or NIfTI volumes), checked before any prediction reads it."""

from __future__ import annotations

from pathlib import Path

from .files import index_folder
from .itk_images import check_not_loose_dicom
from .nifti import volume_files

__all__ = ["check_one_input_kind", "check_no_volumes"]


def check_one_input_kind(folder: str | Path, name: str = "images") -> None:
    """ValueError naming ``folder`` and one file of each kind when it holds both 2-D images (PNG/JPEG/TIFF/BMP)
    and NIfTI volumes: a prediction reads one kind, so the other would be skipped without a word; and when it holds
    neither but DICOM slices directly: a DICOM series is read from its own sub-folder (one case each)."""
    folder = Path(folder)
    images, volumes = index_folder(folder), volume_files(folder)
    if images and volumes:
        image, volume = next(iter(images.values())), next(iter(volumes.values()))
        raise ValueError(f"`{name}` folder {str(folder)!r} mixes 2-D images and NIfTI volumes (e.g. {image.name!r} "
                         f"and {volume.name!r}): put each kind in its own folder")
    if not images and not volumes:
        check_not_loose_dicom(folder, name)


def check_no_volumes(folder: str | Path, what: str) -> None:
    """ValueError naming ``folder`` when it holds volumes (NIfTI, NRRD/MetaImage files or DICOM series folders), for
    an option that ``what`` says applies to 2-D images only; run before any model is loaded."""
    volumes = volume_files(folder)
    if volumes:
        raise ValueError(f"{what}; {str(folder)!r} holds volumes (e.g. {next(iter(volumes.values())).name!r}): drop "
                         "that option (open the label maps in a viewer such as ITK-SNAP or 3D Slicer)")
