"""The held-out split of an ablation: image/mask pairs of a folder, a seeded split, its plan and its copies in ``OUT``.

``OUT/split.json`` fixes the split once written; a rerun with other data or split settings is a ValueError.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ..ops.checks import check_int, check_number

__all__ = ["SPLIT_FILE", "make_split", "fold_split", "SplitPlan", "plan_split", "write_split"]

SPLIT_FILE = "split.json"


def make_split(stems: Sequence[str], val_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """A seeded split of ``stems``: ``(train, val)``, each sorted; ``val`` holds ``round(fraction * n)`` (>= 1).

    Example:
        >>> make_split(["a", "b", "c", "d"], 0.25, seed=0)
        (['a', 'b', 'd'], ['c'])
    """
    stems = sorted(stems)
    val_fraction = check_number(val_fraction, "val_fraction", above=0, below=1)
    seed = check_int(seed, "split_seed", 0)
    if len(stems) < 2:
        raise ValueError(f"a held-out split needs at least 2 image/mask pairs, got {len(stems)}")
    n_val = min(len(stems) - 1, max(1, round(val_fraction * len(stems))))
    perm = np.random.default_rng(seed).permutation(len(stems))
    val = sorted(stems[i] for i in perm[:n_val])
    train = sorted(set(stems) - set(val))
    return train, val


def fold_split(stems: Sequence[str], folds: int, fold: int) -> tuple[list[str], list[str]]:
    """Fold ``fold`` of ``folds`` contiguous blocks of the sorted stems: ``(train, held out)``.

    Contiguous blocks keep neighbours together: tiles named by position (``y000_x000``, ...) fold into strips of the
    image, slices named ``<case>_<slice>`` into cases, so a held-out block is not surrounded by its own training
    neighbours. Block sizes differ by at most one.

    Example:
        >>> fold_split(["a", "b", "c", "d", "e"], 2, 1)
        (['a', 'b'], ['c', 'd', 'e'])
    """
    stems = sorted(stems)
    folds = check_int(folds, "folds", 2)
    fold = check_int(fold, "fold", 0, folds - 1)
    if len(stems) < folds:
        raise ValueError(f"--folds {folds} needs at least {folds} image/mask pairs, got {len(stems)}")
    bounds = np.linspace(0, len(stems), folds + 1).round().astype(int)
    held = stems[bounds[fold]:bounds[fold + 1]]
    return [s for s in stems if s not in set(held)], held


class SplitPlan(NamedTuple):
    """A held-out split checked against the folders, before anything is written."""

    split: dict[str, Any]  # the content of OUT/split.json
    images: dict[str, Path]  # training folder: stem -> file
    masks: dict[str, Path]
    heldout_images: dict[str, Path]  # the folder the held-out pairs come from: stem -> file
    heldout_masks: dict[str, np.ndarray]  # held-out masks OUT does not hold yet: stem -> bool [H,W]


def plan_split(data: Path, out: Path, val: Path | None, val_fraction: float, split_seed: int,
               fold: tuple[int, int] | None = None) -> SplitPlan:
    """Check the folders and the split settings against ``OUT/split.json`` (when present) and read the held-out masks
    ``OUT`` still needs; writes nothing. ``fold = (k, n)`` holds out block k of n (:func:`fold_split`) instead of a
    seeded random split. Raises ValueError naming the folder, file or setting."""
    from ..io.files import pair_folder, read_mask

    images, masks = pair_folder(data)
    if val is not None:
        v_images, v_masks = pair_folder(val)
        split = {"data": str(data), "val": str(val), "train": sorted(images), "heldout": sorted(v_images)}
    elif fold is not None:
        v_images, v_masks = images, masks
        train, held = fold_split(list(images), fold[1], fold[0])
        split = {"data": str(data), "val": None, "fold": fold[0], "folds": fold[1], "train": train, "heldout": held}
    else:
        v_images, v_masks = images, masks
        train, held = make_split(list(images), val_fraction, split_seed)
        split = {"data": str(data), "val": None, "val_fraction": val_fraction, "split_seed": split_seed,
                 "train": train, "heldout": held}
    split_path = out / SPLIT_FILE
    if split_path.is_file() and json.loads(split_path.read_text()) != split:
        raise ValueError(
            f"{split_path} holds another split (other data, --val or split settings, or the data folder "
            "changed): use a new --out, or delete that folder to start over"
        )
    val_masks = out / "data" / "val" / "masks"
    missing = {stem: read_mask(v_masks[stem]) for stem in split["heldout"] if not (val_masks / f"{stem}.png").is_file()}
    return SplitPlan(split, images, masks, v_images, missing)


def write_split(plan: SplitPlan, out: Path, val: Path | None) -> tuple[Path, Path, Path]:
    """Materialize a planned split in ``OUT`` (copies kept when present) and fix it in ``OUT/split.json``; returns
    ``(train_folder, val_images, val_masks)``. Held-out masks are written as 0/255 ``<stem>.png``."""
    from ..io.files import write_mask_png, write_text_atomic

    root = out / "data"
    if val is None:
        train_dir = root / "train"
        for stem in plan.split["train"]:
            for src, sub in ((plan.images[stem], "images"), (plan.masks[stem], "masks")):
                _copy_once(src, train_dir / sub / src.name)
        val_images = root / "val" / "images"
        for stem in plan.split["heldout"]:
            _copy_once(plan.heldout_images[stem], val_images / plan.heldout_images[stem].name)
    else:
        train_dir, val_images = Path(plan.split["data"]), val / "images"
    val_masks = root / "val" / "masks"
    for stem, mask in plan.heldout_masks.items():
        write_mask_png(val_masks / f"{stem}.png", mask)
    split_path = out / SPLIT_FILE
    if not split_path.is_file():
        write_text_atomic(split_path, json.dumps(plan.split, indent=1))
    return train_dir, val_images, val_masks


def _copy_once(src: Path, dst: Path) -> None:
    if not dst.is_file():
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
