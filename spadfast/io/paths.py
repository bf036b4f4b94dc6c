"""Output-path checks run before any work: nothing spadfast writes may replace an input or a file it did not write.

Every CLI command calls these on its output paths first, so a bad path is one clear ``ValueError`` naming it,
raised before minutes of training or sampling, never a traceback afterwards.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

CHECKPOINT_NAME = "checkpoint.safetensors"  # a run folder's checkpoint file


def _inside(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


def _writable_ancestor(path: Path) -> Path:
    """The nearest existing folder that ``path`` would be created in."""
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    return probe


def check_writable_dir(path: str | os.PathLike, name: str) -> Path:
    """``path`` is (or can be created as) a folder we may write into."""
    path = Path(path).expanduser().resolve()
    if path.exists() and not path.is_dir():
        raise ValueError(f"{name} {str(path)!r} is an existing file, not a folder")
    base = _writable_ancestor(path)
    if not base.is_dir():
        raise ValueError(f"{name} {str(path)!r} cannot be created: {str(base)!r} is a file")
    if not os.access(base, os.W_OK | os.X_OK):
        raise ValueError(f"{name} {str(path)!r} is not writable (no write permission on {str(base)!r})")
    return path


def check_output_dir(
    path: str | os.PathLike, name: str, inputs: Iterable[str | os.PathLike | None] = (), overwrite: bool = False,
    own_files: Iterable[str] = (),
) -> Path:
    """A folder for outputs: writable, not any input nor inside or around one, and empty unless ``overwrite``.

    ``inputs``: folders (the output may be neither inside nor around them) or files (the output may not be the file;
    a folder holding an input file is refused only as non-empty, since nothing written there takes a file's name).

    ``own_files``: names this command writes there (e.g. ``checkpoint.safetensors``); a folder holding only those
    (and our hidden temp files) counts as this command's previous output.
    """
    path = check_writable_dir(path, name)
    check_not_ground_truth(path, name)
    for item in inputs:
        if item is None:
            continue
        src = Path(item).expanduser().resolve()
        if src.is_file() and path != src:
            continue
        if _inside(path, src) or _inside(src, path):
            raise ValueError(f"{name} {str(path)!r} would overlap the input {str(src)!r}: choose a separate folder")
    if path.is_dir() and not overwrite:
        own = set(own_files)
        foreign = [p.name for p in path.iterdir() if p.name not in own and not p.name.startswith(".")]
        if foreign:
            raise ValueError(f"{name} {str(path)!r} is not empty (holds {foreign[0]!r}, ...): choose a new folder or "
                             "pass --overwrite")
    return path


def model_inputs(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """What an output folder must not overlap, for each model a command reads: a folder (a run folder, an ONNX
    export) is protected whole; a ``.safetensors`` file is protected itself, or with its folder when that folder is
    a run (the file is the run's ``checkpoint.safetensors``, or sits beside one), never merely the folder it lies
    in (an export in the working folder must not block every output beside it)."""

    protected = []
    for item in paths:
        path = Path(item).expanduser()
        if path.suffix == ".safetensors" and not path.is_dir():
            is_run = path.name == CHECKPOINT_NAME or (path.parent / CHECKPOINT_NAME).is_file()
            protected.append(path.parent if is_run else path)
        else:
            protected.append(path)
    return protected


def _image_folder_beside(folder: Path) -> Path | None:
    """``DATA/images`` for ``DATA/masks``, ``DATA/imagesTr`` for ``DATA/labelsTr`` (any ``labels<X>``); else None."""
    if folder.name == "masks":
        return folder.with_name("images")
    if folder.name.startswith("labels"):
        return folder.with_name("images" + folder.name[len("labels"):])
    return None


def ground_truth_pairs(folder: str | os.PathLike) -> list[str]:
    """Names of the files in ``folder`` that a data folder pairs as masks / label maps with the images beside it
    (as :class:`spadfast.data.folders.SegmentationFolder` and :class:`spadfast.data.volumes.VolumeSlices` pair them);
    empty when ``folder`` is no such masks folder."""
    folder = Path(folder)
    images = _image_folder_beside(folder)
    if images is None or not folder.is_dir() or not images.is_dir():
        return []
    from .files import index_folder
    from .nifti import group_cases, volume_files

    try:
        masks, pictures = index_folder(folder), index_folder(images)
        paired = [masks[stem].name for stem in sorted(set(masks) & set(pictures))]
        labels = volume_files(folder)
        if labels:
            cases = group_cases(images, label_stems=list(labels)) if volume_files(images) else {}
            paired += [labels[stem].name for stem in sorted(set(labels) & set(cases))]
    except ValueError:  # a folder that pairing rejects is not a data set's masks
        return []
    return paired


def check_not_ground_truth(path: str | os.PathLike, name: str) -> None:
    """Refuse an output folder whose files are a data set's masks (``DATA/masks``, ``DATA/labelsTr``): no flag
    lets spadfast write there, since its outputs would replace the ground truth under the same names."""
    paired = ground_truth_pairs(path)
    if paired:
        images = _image_folder_beside(Path(path))
        raise ValueError(f"{name} {str(path)!r} holds ground-truth masks paired with {str(images)!r} (e.g. "
                         f"{paired[0]!r}): spadfast never writes there; choose another folder")


def check_output_file(path: str | os.PathLike, name: str, inputs: Iterable[str | os.PathLike | None] = ()) -> Path:
    """A file we are about to write: not a folder, not an input, in a writable folder."""
    path = Path(path).expanduser().resolve()
    if path.is_dir():
        raise ValueError(f"{name} {str(path)!r} is a folder; give a file path")
    for item in inputs:
        if item is not None and _inside(path, Path(item).expanduser().resolve()):
            raise ValueError(f"{name} {str(path)!r} is inside the input {str(item)!r}")
    check_writable_dir(path.parent, f"{name}'s folder")
    return path


def check_input_dir(path: str | os.PathLike, name: str) -> Path:
    path = Path(path).expanduser()
    if not path.is_dir():
        raise ValueError(f"{name} {str(path)!r} is not a folder" + (" (it does not exist)" if not path.exists()
                                                                     else ""))
    return path
