"""A small synthetic Decathlon-style volume data set (tests, the README's end-to-end example)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ..io.files import write_bytes_atomic
from ..io.nifti import write_nifti
from ..ops.checks import check_int


def _ellipsoid(shape, centre, radii) -> np.ndarray:
    grids = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij")
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grids, centre, radii)) <= 1.0


def _demo_case(rng: np.random.Generator, shape, num_classes: int, modality: str) -> tuple[np.ndarray, np.ndarray]:
    shape = tuple(int(s) for s in shape)
    centre = np.array(shape, np.float64) / 2 + rng.uniform(-1, 1, 3)
    body = _ellipsoid(shape, centre, np.array(shape) * rng.uniform(0.38, 0.46, 3))
    label = np.zeros(shape, np.uint8)
    for c in range(1, num_classes):
        # Class 1: an organ inside the body; classes 2..: lesions inside the organ (nested) or beside it.
        radii = np.array(shape) * rng.uniform(0.14, 0.22, 3) / (1 + 0.4 * (c - 1))
        radii = np.maximum(radii, [1.6, 1.6, 1.2])
        offset = rng.uniform(-0.12, 0.12, 3) * np.array(shape)
        label[_ellipsoid(shape, centre + offset, radii) & body] = c
    means = {"CT": [-1000.0, 40.0, 120.0, -20.0, 200.0], "MR": [0.0, 300.0, 700.0, 150.0, 1000.0]}[modality]
    image = np.full(shape, means[0], np.float32)
    image[body] = means[1]
    for c in range(1, num_classes):
        image[label == c] = means[1 + 1 + (c - 1) % 3]
    noise = 20.0 if modality == "CT" else 40.0
    image += rng.normal(0, noise, shape).astype(np.float32)
    return image.astype(np.int16 if modality == "CT" else np.float32), label


def write_demo_volumes(
    root: str | os.PathLike,
    n_cases: int = 4,
    shape: tuple[int, int, int] = (32, 32, 12),
    spacing: tuple[float, float, float] = (0.8, 0.8, 2.5),
    num_classes: int = 3,
    seed: int = 0,
    n_test: int = 2,
    modality: str = "MR",
) -> Path:
    """Write a small synthetic Decathlon-style data set and return ``root``.

    ``root/imagesTr/case_XXX_0000.nii.gz`` + ``labelsTr/case_XXX.nii.gz`` (``n_cases`` cases),
    ``imagesTs/test_XXX_0000.nii.gz`` + ``labelsTs/test_XXX.nii.gz`` (``n_test`` held-out cases with their
    ground truth, for ``evaluate``) and a Decathlon-form ``dataset.json``. Each case: an ellipsoid body holding
    an organ (class 1) and, for ``num_classes`` > 2, smaller ellipsoids (classes 2..C-1), intensities per class
    plus Gaussian noise (``modality`` ``"MR"``: float32; ``"CT"``: int16 Hounsfield-like, air -1000); voxel size
    ``spacing`` mm, qform and sform codes 1, a small per-case origin shift. Deterministic in ``seed``.
    """
    root = Path(root)
    shape = tuple(check_int(s, "shape", 2) for s in shape)  # type: ignore[assignment]
    if len(shape) != 3:
        raise ValueError(f"`shape` must be three ints, got {shape!r}")
    num_classes = check_int(num_classes, "num_classes", 2)
    if num_classes > 5:
        raise ValueError(f"`num_classes` must be at most 5 for the demo volumes, got {num_classes}")
    if modality not in ("MR", "CT"):
        raise ValueError(f"`modality` must be 'MR' or 'CT', got {modality!r}")
    rng = np.random.default_rng(seed)
    sets = [("Tr", "case", check_int(n_cases, "n_cases", 1)), ("Ts", "test", check_int(n_test, "n_test", 0))]
    listing: dict[str, list] = {"training": [], "test": []}
    for tag, prefix, n in sets:
        for i in range(n):
            image, label = _demo_case(rng, shape, num_classes, modality)
            affine = np.diag([*map(float, spacing), 1.0])
            affine[:3, 3] = rng.uniform(-50, 50, 3)
            name = f"{prefix}_{i:03d}"
            write_nifti(root / f"images{tag}" / f"{name}_0000.nii.gz", image, affine=affine)
            write_nifti(root / f"labels{tag}" / f"{name}.nii.gz", label, affine=affine)
            entry = {"image": f"./images{tag}/{name}.nii.gz", "label": f"./labels{tag}/{name}.nii.gz"}
            listing["training" if tag == "Tr" else "test"].append(entry if tag == "Tr" else entry["image"])
    names = ["background", "organ", "lesion", "cyst", "vessel"][:num_classes]
    meta = {
        "name": "spadfast-demo", "description": "synthetic ellipsoids (spadfast.data.volumes.write_demo_volumes)",
        "tensorImageSize": "3D", "modality": {"0": modality}, "labels": {str(i): n for i, n in enumerate(names)},
        "numTraining": len(listing["training"]), "numTest": len(listing["test"]),
        "training": listing["training"], "test": listing["test"],
    }
    write_bytes_atomic(root / "dataset.json", (json.dumps(meta, indent=2) + "\n").encode("utf-8"))
    return root
