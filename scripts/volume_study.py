"""The volume study (issue 32.5, registered in docs/volume_study/registration.md): 2-D, 2.5-D (k = 1, 2) and 3-D
spadfast models beside the two-threshold baseline and supervised networks of the same encoders, on held-out brain
slabs and on synthetic CT, with the training run as the unit.

Steps (each resumable; rerunning skips what is done):

    python scripts/volume_study.py prepare --out STUDY    # brain slabs (nilearn wheel), synthetic CT, baselines
    python scripts/volume_study.py run --out STUDY        # train arms x seeds x data sets (one thread per run)
    python scripts/volume_study.py evaluate --out STUDY   # predict and score each trained run's held-out volumes
    python scripts/volume_study.py collect --out STUDY    # evaluated runs into docs/volume_study/cells
    python scripts/volume_study.py report                 # docs/volume_study.md from the cells

Data sets (``STUDY/data/<name>``, Decathlon layout: ``imagesTr``/``labelsTr``/``imagesTs``/``labelsTs`` and
``dataset.json``):

- ``brain``: the MNI152 2009a (symmetric) T1 template and its grey- and white-matter probability maps from the
  nilearn wheel (1 mm), area-averaged to 2 mm isotropic (the mean of each 2x2x2 block, the last odd plane dropped;
  the new voxel centre is the block's centre), labels = argmax over (1 - gm - wm, gm, wm) -> 0/1/2 (ties go to the
  lower label), cropped in-plane to the tissue's support plus ``CROP_MARGIN`` voxels, cut into axial slabs of
  ``SLAB`` slices with ``GUARD`` slices left out between consecutive slabs (so no training slab lies within
  ``GUARD`` slices of a held-out one); slabs ``TEST_SLABS`` are held out. Each slab is a "subject": a fixed,
  seeded intensity transform (:func:`subject_transform`: smooth bias field, gamma contrast, Gaussian noise).
- ``ct``: :func:`spadfast.data.synthetic_volumes.write_demo_volumes` with ``modality="CT"``, background + two
  classes (organ, lesion), seed 0, ``CT_TRAIN`` training and ``CT_TEST`` held-out cases.
- ``brain-clean`` (``CLEAN_SET``, a secondary added after registration; no run trains on it): the brain slabs
  without their intensity transform, read through the brain set's window; ``evaluate`` also scores every brain run
  on its held-out slabs, beside thresholds tuned on its clean training slabs and the brain set's own thresholds.

The two-threshold baseline (:func:`spadfast.evaluation.baselines.tune_two_thresholds`) is tuned in ``prepare`` on
the training volumes normalised as the models see them, its held-out label maps are written to
``STUDY/data/<name>/baseline_pred`` and scored as the models are (``baseline.json``).

Arms (``ARMS``): ``2d``, ``2.5d-k1``, ``2.5d-k2``, ``3d``, ``supervised-2d``, ``supervised-3d`` (registered) and the
secondary ``3d-cached`` (``model_type: cached_unet3d``, added by an addendum), seeds 0-2, on
preset ``cpu-small`` + ``BASE``. Run with one thread per process and ``nice``:
``OMP_NUM_THREADS=1 nice -n 10 python scripts/volume_study.py run --out STUDY``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import shutil
import subprocess
import sys
import time
import zipfile
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ("brain", "ct")
CLASSES = {"brain": ("background", "GM", "WM"), "ct": ("background", "organ", "lesion")}
NILEARN_VERSION = "0.14.1"
MEMBERS = {k: f"nilearn/datasets/data/mni_icbm152_{k}_tal_nlin_sym_09a_converted.nii.gz" for k in ("t1", "gm", "wm")}

# brain slabs (registration.md): 2 mm voxels
SLAB, GUARD = 8, 2  # slices (16 mm) per slab; slices (4 mm) left out between consecutive slabs
TEST_SLABS = (1, 4, 7)  # held out; the others train
CROP_THRESHOLD, CROP_MARGIN = 0.05, 4  # in-plane crop: gm + wm > threshold anywhere, plus a margin (voxels)
SUBJECT_SEED = 0
WINDOW_PERCENTILES = (0.5, 99.5)  # the brain set's fixed intensity window: of all training voxels, pooled
# synthetic CT
CT_TRAIN, CT_TEST, CT_SHAPE, CT_SEED = 8, 4, (48, 48, 16), 0

PATCH_3D = (32, 32, 8)  # voxels (d, h, w) along the array axes: a whole slab's depth, 32 x 32 in-plane
BATCH_3D = 2  # 2 x 32 x 32 x 8 = 16384 voxels a step, as the 2-D arms' 16 x 32 x 32
TRAIN_STEPS = 4000  # registration.md: about 9 minutes of CPU time of the 2-D arm on one core (0.135 s a step)
# x0_loss_weight and step_fusion pinned to the library defaults of the registration (they changed after it)
BASE: dict[str, Any] = {"train_steps": TRAIN_STEPS, "num_classes": 3, "slice_axis": 2, "resize": False,
                        "val_every": 0, "checkpoint_every": 250, "num_workers": 0, "progress_bar": False,
                        "device": "cpu", "x0_loss_weight": 0.0, "step_fusion": "none"}
_3D = {"model_type": "unet3d", "patch_size_3d": list(PATCH_3D), "batch_size": BATCH_3D}
ARMS: dict[str, dict[str, Any]] = {
    "2d": {"context_slices": 0},
    "2.5d-k1": {"context_slices": 1},
    "2.5d-k2": {"context_slices": 2},
    "3d": dict(_3D),
    "supervised-2d": {"objective": "supervised"},
    "supervised-3d": {**_3D, "objective": "supervised"},
}
REGISTERED_ARMS = tuple(ARMS)  # the registration's six: the primary, the verdict and the default rule use only these
# secondary arms added by a dated addendum (registration.md); reported beside the others, they change no default
SECONDARY_ARMS: dict[str, dict[str, Any]] = {"3d-cached": {**_3D, "model_type": "cached_unet3d"}}
SECONDARY_OF = {"3d-cached": "3d"}  # the registered arm each secondary arm is compared with, paired by seed
ARMS.update(SECONDARY_ARMS)
SUPERVISED_OF = {"2d": "supervised-2d", "2.5d-k1": "supervised-2d", "2.5d-k2": "supervised-2d", "3d": "supervised-3d",
                 "3d-cached": "supervised-3d"}
COST_ORDER = ("supervised-2d", "2d", "2.5d-k1", "2.5d-k2", "supervised-3d", "3d")  # registration: cheapest first
SEEDS = (0, 1, 2)
# evaluation settings (DDIM steps, members): diffusion arms 1 x 1 and 5 x 5 (the library default when registered);
# supervised one pass
DIFFUSION_SETTINGS, SUPERVISED_SETTINGS = ((1, 1), (5, 5)), ((1, 1),)
PRIMARY_SETTING = "5x5"
CELL_FILE, EVAL_FILE, BASELINE_FILE = "cell.json", "study_eval.json", "baseline.json"
# secondary (registration addendum, third session): the brain slabs without their per-slab intensity transform
CLEAN_SET, CLEAN_EVAL_FILE, STUDY_THRESHOLDS_FILE = "brain-clean", "clean_eval.json", "baseline_study_thresholds.json"
PARTIAL_FILE = "partial_seconds.json"  # training seconds of a run stopped by a signal, summed over its processes
NULL_MARGIN = 0.003


# -------------------------------------------------------------------------------------------------------- data


def read_mni(wheel: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(t1, gm, wm, affine)`` from a nilearn wheel (or any zip holding ``MEMBERS``): float32 ``[I,J,K]`` arrays
    (T1 as stored; the maps scaled to [0, 1]: the wheel stores them as uint8 0..255) and the T1's 4x4 affine.

    Raises:
        ValueError: the zip lacks a member (named), or the three grids differ.
    """
    import nibabel as nib

    out = {}
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        for key, member in MEMBERS.items():
            if member not in names:
                raise ValueError(f"{wheel}: holds no {member} (a nilearn wheel with the MNI152 2009a templates?)")
            data = z.read(member)
            img = nib.Nifti1Image.from_bytes(gzip.decompress(data) if member.endswith(".gz") else data)
            array = np.asarray(img.dataobj, dtype=np.float32)
            if key != "t1" and np.issubdtype(img.get_data_dtype(), np.integer):
                array = array / 255.0
            out[key] = (array, img.affine)
    shapes = {k: a.shape for k, (a, _) in out.items()}
    if len(set(shapes.values())) != 1 or out["t1"][0].ndim != 3:
        raise ValueError(f"{wheel}: the T1 and the two maps must be one 3-D grid, got {shapes}")
    return out["t1"][0], np.clip(out["gm"][0], 0, 1), np.clip(out["wm"][0], 0, 1), out["t1"][1]


def downsample2(volume: np.ndarray) -> np.ndarray:
    """Area averaging to twice the voxel size: the mean of each 2x2x2 block of ``volume`` (float ``[I,J,K]``; an odd
    last plane is dropped): float32 ``[I//2,J//2,K//2]``."""
    i, j, k = (s // 2 for s in volume.shape)
    v = np.asarray(volume, np.float64)[: 2 * i, : 2 * j, : 2 * k]
    return v.reshape(i, 2, j, 2, k, 2).mean(axis=(1, 3, 5)).astype(np.float32)


def affine2(affine: np.ndarray) -> np.ndarray:
    """The affine of :func:`downsample2`'s grid: voxel size doubled, voxel (0,0,0) at the centre of the first block."""
    out = np.array(affine, np.float64)
    out[:3, 3] = affine[:3, :3] @ np.full(3, 0.5) + affine[:3, 3]
    out[:3, :3] = affine[:3, :3] * 2
    return out


def tissue_labels(gm: np.ndarray, wm: np.ndarray) -> np.ndarray:
    """Label rule: argmax over (background = 1 - gm - wm, gm, wm) -> uint8 0/1/2 of ``gm``'s shape (float maps in
    [0, 1]); ties go to the lower label."""
    stack = np.stack([1.0 - gm.astype(np.float64) - wm, gm, wm])
    return stack.argmax(axis=0).astype(np.uint8)


def slab_starts(n_slices: int, slab: int = SLAB, guard: int = GUARD) -> list[int]:
    """First slice of each slab along a ``n_slices``-long axis: slabs of ``slab`` slices with ``guard`` slices left
    out between consecutive ones (``[0, slab + guard, ...]``, as many as fit)."""
    if slab < 1 or guard < 0:
        raise ValueError(f"slab must be >= 1 and guard >= 0, got {slab}, {guard}")
    return list(range(0, n_slices - slab + 1, slab + guard))


def split_slabs(n_slabs: int, test: Sequence[int] = TEST_SLABS) -> tuple[list[int], list[int]]:
    """``(train, test)`` slab indices: ``test`` held out (those below ``n_slabs``), the rest train."""
    held = [t for t in test if t < n_slabs]
    if not held or len(held) == n_slabs:
        raise ValueError(f"{n_slabs} slabs cannot hold out {list(test)} and keep some for training")
    return [s for s in range(n_slabs) if s not in held], held


def subject_transform(t1: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, float]]:
    """One slab's fixed intensity transform, a stand-in for another subject: the T1 (float ``[I,J,K]``, 0..~255)
    scaled to [0, 1] by 255, raised to a gamma ~ U(0.85, 1.15), times a smooth bias field exp(a x + b y + c x y)
    (x, y in [-1, 1] in-plane; a, b, c ~ U(-0.1, 0.1)), plus Gaussian noise of std ~ U(0.005, 0.015), clipped at 0
    and scaled back by 255. Returns the float32 image and the drawn parameters."""
    gamma, (a, b, c), noise = rng.uniform(0.85, 1.15), rng.uniform(-0.1, 0.1, 3), rng.uniform(0.005, 0.015)
    x = np.linspace(-1, 1, t1.shape[0])[:, None, None]
    y = np.linspace(-1, 1, t1.shape[1])[None, :, None]
    field = np.exp(a * x + b * y + c * x * y)
    v = np.clip(t1.astype(np.float64) / 255.0, 0, None) ** gamma * field
    v = np.clip(v + rng.normal(0, noise, t1.shape), 0, None) * 255.0
    return v.astype(np.float32), {"gamma": float(gamma), "bias": [float(a), float(b), float(c)], "noise": float(noise)}


def _dataset_json(root: Path, name: str, modality: str, classes: Sequence[str], train: list[str],
                  test: list[str], description: str) -> None:
    meta = {
        "name": name, "description": description, "tensorImageSize": "3D", "modality": {"0": modality},
        "labels": {str(i): n for i, n in enumerate(classes)}, "numTraining": len(train), "numTest": len(test),
        "training": [{"image": f"./imagesTr/{c}.nii.gz", "label": f"./labelsTr/{c}.nii.gz"} for c in train],
        "test": [f"./imagesTs/{c}.nii.gz" for c in test],
    }
    (root / "dataset.json").write_text(json.dumps(meta, indent=2) + "\n")


def prepare_brain(wheel: Path, root: Path, transform: bool = True) -> dict[str, Any]:
    """The brain set in ``root`` (Decathlon layout; module docstring); returns what ``split.json`` records. With
    ``transform=False`` the same slabs, labels and split without the per-slab intensity transform (the T1 as the
    template stores it, float32): ``CLEAN_SET``."""
    from spadfast.io.nifti import write_nifti

    t1, gm, wm, affine = read_mni(wheel)
    t1, gm, wm, affine = downsample2(t1), downsample2(gm), downsample2(wm), affine2(affine)
    support = np.argwhere(gm + wm > CROP_THRESHOLD)
    lo = np.maximum(support.min(0) - [CROP_MARGIN, CROP_MARGIN, 0], 0)
    hi = np.minimum(support.max(0) + 1 + [CROP_MARGIN, CROP_MARGIN, 0], t1.shape)
    crop = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    t1, labels = t1[crop], tissue_labels(gm, wm)[crop]
    starts = slab_starts(t1.shape[2])
    train, test = split_slabs(len(starts))
    rng = np.random.default_rng(SUBJECT_SEED)
    subjects = {}
    names: dict[str, list[str]] = {"train": [], "test": []}
    train_voxels = []
    for s, z0 in enumerate(starts):
        if transform:
            image, params = subject_transform(t1[:, :, z0:z0 + SLAB], rng)
        else:
            image, params = np.ascontiguousarray(t1[:, :, z0:z0 + SLAB], np.float32), {}
        slab_affine = affine.copy()
        slab_affine[:3, 3] = affine[:3, :3] @ np.array([lo[0], lo[1], lo[2] + z0], np.float64) + affine[:3, 3]
        tag = "Ts" if s in test else "Tr"
        case = f"slab{s:02d}"
        write_nifti(root / f"images{tag}" / f"{case}_0000.nii.gz", image, affine=slab_affine)
        write_nifti(root / f"labels{tag}" / f"{case}.nii.gz", labels[:, :, z0:z0 + SLAB], affine=slab_affine)
        names["test" if s in test else "train"].append(case)
        if s in train:
            train_voxels.append(image.ravel())
        subjects[case] = {**params, "z": [int(lo[2] + z0), int(lo[2] + z0 + SLAB)]}
    _dataset_json(root, "mni152-slabs", "MR", CLASSES["brain"], names["train"], names["test"],
                  "MNI152 2009a sym T1 at 2 mm, GM/WM by argmax of the probability maps, axial slabs")
    window = np.percentile(np.concatenate(train_voxels), WINDOW_PERCENTILES)
    return {"intensity_window": [round(float(v), 3) for v in window], "slab": SLAB, "guard": GUARD,
            "crop": [[int(a), int(b)] for a, b in zip(lo, hi)], "starts": starts,
            "train": names["train"], "test": names["test"], "subjects": subjects, "subject_seed": SUBJECT_SEED}


def prepare_ct(root: Path) -> dict[str, Any]:
    """The synthetic CT set in ``root``; returns what ``split.json`` records."""
    from spadfast.data.synthetic_volumes import write_demo_volumes

    write_demo_volumes(root, n_cases=CT_TRAIN, shape=CT_SHAPE, num_classes=3, seed=CT_SEED, n_test=CT_TEST,
                       modality="CT")
    return {"n_train": CT_TRAIN, "n_test": CT_TEST, "shape": list(CT_SHAPE), "seed": CT_SEED}


def normalized_volumes(root: Path, split: str, ct_stats: Any = None, window: Sequence[float] | None = None
                       ) -> tuple[list[np.ndarray], list[np.ndarray], list[str]]:
    """Images (float32 ``[I,J,K]`` in [-1, 1], normalised as :class:`spadfast.data.volumes.VolumeSlices` does for
    the models: the fixed ``window`` if given, else CT with ``ct_stats``), label maps (uint8) and case names of
    ``split`` (``"Tr"`` or ``"Ts"``)."""
    import nibabel as nib

    from spadfast.io.nifti import read_dataset_json
    from spadfast.io.volume_norm import normalize_volume

    modalities = read_dataset_json(root).modalities
    images, labels, names = [], [], []
    for path in sorted((root / f"labels{split}").glob("*.nii.gz")):
        case = path.name[: -len(".nii.gz")]
        image = np.asarray(nib.load(str(root / f"images{split}" / f"{case}_0000.nii.gz")).dataobj, np.float32)
        normed, _ = normalize_volume([image], modalities, window=tuple(window) if window else None,
                                     ct_stats=ct_stats)
        images.append(normed[0])
        labels.append(np.asarray(nib.load(str(path)).dataobj).astype(np.uint8))
        names.append(case)
    return images, labels, names


def data_overrides(root: Path) -> dict[str, Any]:
    """Config keys a data set fixes: the brain set's ``intensity_window`` (from ``split.json``), none for CT (its
    models use ``ct_normalization: dataset``, the default, a fixed window too)."""
    info = json.loads((root / "split.json").read_text())
    return {"intensity_window": info["intensity_window"]} if "intensity_window" in info else {}


def baseline(root: Path, tune_on: Path | None = None, pred_name: str = "baseline_pred") -> dict[str, Any]:
    """Tune the two-threshold baseline on the training volumes of ``tune_on`` (default ``root``), normalised exactly
    as the models see them (:func:`data_overrides` of ``tune_on``), write its label maps of ``root``'s held-out
    volumes to ``root/<pred_name>`` and score them (:func:`spadfast.evaluation.evaluate.evaluate_folders`)."""
    import nibabel as nib

    from spadfast.data.volumes import VolumeSlices
    from spadfast.evaluation.baselines import apply_two_thresholds, tune_two_thresholds
    from spadfast.evaluation.evaluate import evaluate_folders
    from spadfast.io.nifti import write_nifti

    tune_on = root if tune_on is None else tune_on
    # the CT statistics the models compute at training start (ct_normalization: dataset); None for MR
    window = data_overrides(tune_on).get("intensity_window")
    stats = None
    if window is None:
        stats = VolumeSlices(tune_on, image_size=None, axis=2, foreground_fraction=None, ct_stats="compute").ct_stats
        stats = stats if any(s is not None for s in stats) else None
    tuned = tune_two_thresholds(*normalized_volumes(tune_on, "Tr", stats, window)[:2])
    pred = root / pred_name
    shutil.rmtree(pred, ignore_errors=True)
    for image, _, case in zip(*normalized_volumes(root, "Ts", stats, window)):
        ref = nib.load(str(root / "labelsTs" / f"{case}.nii.gz"))
        write_nifti(pred / f"{case}.nii.gz", apply_two_thresholds(image, tuned), affine=ref.affine)
    report = evaluate_folders(pred, root / "labelsTs")
    return {"t1": tuned.t1, "t2": tuned.t2, "order": list(tuned.order), "levels": tuned.levels,
            "value_range": list(tuned.value_range), "thresholds": list(tuned.intensities()),
            "train_dice": tuned.train_dice, "report": report}


def find_wheel(out: Path, wheel: Path | None) -> Path:
    """``wheel``, else a ``nilearn-*.whl`` in ``out/source``, else one downloaded there with pip."""
    if wheel is not None:
        return wheel
    found = sorted((out / "source").glob("nilearn-*.whl"))
    if not found:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", f"nilearn=={NILEARN_VERSION}",
                        "-d", str(out / "source")], check=True)
        found = sorted((out / "source").glob("nilearn-*.whl"))
    return found[-1]


def prepare(out: Path, nilearn_wheel: Path | None, log=print) -> None:
    """Both data sets and their baselines under ``out/data`` (skipped where ``done`` exists)."""
    for name in DATASETS:
        root = out / "data" / name
        if (root / "done").is_file():
            continue
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        info = prepare_brain(find_wheel(out, nilearn_wheel), root) if name == "brain" else prepare_ct(root)
        (root / "split.json").write_text(json.dumps(info, indent=1))
        base = baseline(root)
        (root / BASELINE_FILE).write_text(json.dumps(base, indent=1))
        (root / "done").write_text("")
        log(f"{name}: {len(list((root / 'labelsTr').iterdir()))} training, {len(list((root / 'labelsTs').iterdir()))}"
            f" held-out volumes; two-threshold baseline Dice {base['report']['mean']['dice']:.4f}")
    prepare_clean(out, nilearn_wheel, log)
    log(f"prepared {out / 'data'}")


def prepare_clean(out: Path, nilearn_wheel: Path | None, log=print) -> None:
    """``out/data/CLEAN_SET`` (skipped where ``done`` exists): the brain set's slabs without their intensity
    transform, normalised with the brain set's fixed window (the models' own), with two baselines: thresholds tuned
    on its clean training slabs (``baseline.json``) and the study's thresholds, tuned on the transformed training
    slabs, applied to its clean held-out slabs (``STUDY_THRESHOLDS_FILE``)."""
    brain, root = out / "data" / "brain", out / "data" / CLEAN_SET
    if (root / "done").is_file():
        return
    if not (brain / "done").is_file():
        raise ValueError(f"{brain} is not prepared: the clean slabs take its intensity window")
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    info = prepare_brain(find_wheel(out, nilearn_wheel), root, transform=False)
    info.update(intensity_window=json.loads((brain / "split.json").read_text())["intensity_window"],
                window_of="brain", subject_seed=None)
    (root / "split.json").write_text(json.dumps(info, indent=1))
    base = baseline(root)
    (root / BASELINE_FILE).write_text(json.dumps(base, indent=1))
    study = baseline(root, tune_on=brain, pred_name="study_thresholds_pred")
    (root / STUDY_THRESHOLDS_FILE).write_text(json.dumps(study, indent=1))
    (root / "done").write_text("")
    log(f"{CLEAN_SET}: thresholds tuned on clean slabs Dice {base['report']['mean']['dice']:.4f}, the study's "
        f"thresholds {study['report']['mean']['dice']:.4f}")


# ---------------------------------------------------------------------------------------------------------- run


def run_config(arm: str, seed: int, extra: dict[str, Any] | None = None,
               data: dict[str, Any] | None = None) -> dict[str, Any]:
    """The config dict of one run: ``cpu-small`` + ``BASE`` + the data set's keys (``data``,
    :func:`data_overrides`) + the arm + ``extra``, seed ``seed``; checked by ``SPADConfig``.

    Raises:
        ValueError: an unknown arm (named).
    """
    from spadfast.config import SPADConfig

    if arm not in ARMS:
        raise ValueError(f"unknown arm {arm!r}; arms: {', '.join(ARMS)}")
    cfg = {**BASE, **(data or {}), **(extra or {}), **ARMS[arm], "seed": seed}
    return SPADConfig.preset("cpu-small", **cfg).to_dict()


def _commit() -> dict[str, Any]:
    from spadfast.study.provenance import code_commit

    return code_commit(ROOT)


def plan(datasets: Sequence[str], arms: Sequence[str], seeds: Sequence[int]) -> list[tuple[str, str, int]]:
    """(data set, arm, seed) in run order: seed-major, so complete paired units finish first."""
    for arm in arms:
        if arm not in ARMS:
            raise ValueError(f"unknown arm {arm!r}; arms: {', '.join(ARMS)}")
    for d in datasets:
        if d not in DATASETS:
            raise ValueError(f"unknown data set {d!r}; data sets: {', '.join(DATASETS)}")
    return [(d, a, s) for s in seeds for d in datasets for a in arms]


def run(out: Path, cells: list[tuple[str, str, int]], extra: dict[str, Any] | None = None, log=print) -> int:
    """Train (or resume, or skip) every cell in ``out/runs/<data>/<arm>/seed<s>``; returns how many were trained.
    Every config is built and checked before the first run starts. A run stopped by a signal (SIGTERM, SIGUSR1)
    saves its checkpoint and raises ``Stopped``; the next call resumes it, and its ``train_seconds`` sum every
    process that trained it."""
    import torch

    from spadfast.io.files import write_text_atomic
    from spadfast.models.checkpoint import resolve_path
    from spadfast.runtime.preemption import Stopped
    from spadfast.train.trainer import SPADTrainer

    for d in sorted({c[0] for c in cells}):
        if not (out / "data" / d / "done").is_file():
            raise ValueError(f"{out / 'data' / d} is not prepared: run the prepare step first")
    configs = {(d, a, s): run_config(a, s, extra, data_overrides(out / "data" / d)) for d, a, s in cells}
    torch.set_num_threads(1)
    trained = 0
    for d, a, s in cells:
        data = out / "data" / d
        run_dir = out / "runs" / d / a / f"seed{s}"
        cfg = configs[d, a, s]
        if (run_dir / CELL_FILE).is_file():
            done = json.loads((run_dir / CELL_FILE).read_text())["config"]["train_steps"]
            if done != cfg["train_steps"]:  # e.g. a --steps smoke run in the study's folder
                raise ValueError(f"{run_dir} was trained for {done} steps but this call asks for "
                                 f"{cfg['train_steps']}: use another --out")
            continue
        started = _commit()
        t0 = time.perf_counter()
        if resolve_path(run_dir).is_file():
            trainer = SPADTrainer.from_checkpoint(run_dir, data, None, out_dir=run_dir, device="cpu")
            log(f"[{d} {a} seed{s}] resuming at step {trainer.step} of {cfg['train_steps']}")
        else:
            run_dir.mkdir(parents=True, exist_ok=True)
            trainer = SPADTrainer(cfg, data, None, out_dir=run_dir)
            log(f"[{d} {a} seed{s}] training {cfg['train_steps']} steps at {started['commit']}")
        start_step = trainer.step
        earlier = run_dir / PARTIAL_FILE  # seconds of the processes a signal stopped before this one
        before = json.loads(earlier.read_text()) if earlier.is_file() else {"seconds": 0.0, "stops": []}
        trainer.fit()
        if trainer.stopped_by:
            before["seconds"] += time.perf_counter() - t0
            before["stops"].append({"step": trainer.step, "commit": started["commit"]})
            write_text_atomic(earlier, json.dumps(before))
            raise Stopped(f"{run_dir} stopped at step {trainer.step} by {trainer.stopped_by}; rerun to resume")
        trainer.save(run_dir)
        cell = {"data": d, "arm": a, "seed": s, "config": json.loads(json.dumps(trainer.config.to_dict())),
                "steps": trainer.step, "resumed_from": start_step, "stops": before["stops"], "started_at": started,
                "finished_at": _commit(), "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "train_seconds": before["seconds"] + time.perf_counter() - t0}
        write_text_atomic(run_dir / CELL_FILE, json.dumps(cell, indent=1))
        log(f"[{d} {a} seed{s}] trained in {cell['train_seconds']:.0f} s")
        trained += 1
    return trained


# ----------------------------------------------------------------------------------------------------- evaluate


def settings_of(arm: str) -> tuple[tuple[int, int], ...]:
    """The registered (DDIM steps, members) of an arm: supervised one pass, diffusion 1 x 1 and 5 x 5."""
    return SUPERVISED_SETTINGS if ARMS[arm].get("objective") == "supervised" else DIFFUSION_SETTINGS


def _score_run(run_dir: Path, arm: str, data: Path, pred_root: Path) -> dict[str, Any]:
    """``{"<steps>x<members>": {"report", "seconds"}}``: the run's predictions of ``data``'s held-out volumes at the
    arm's registered settings (seed 0) under ``pred_root``, scored by ``evaluate_folders``."""
    from spadfast.evaluation.evaluate import evaluate_folders
    from spadfast.infer.segmenter import Segmenter
    from spadfast.infer.volumes import predict_volume_folder

    segmenter = Segmenter.from_checkpoint(run_dir, device="cpu")
    results = {}
    for steps, members in settings_of(arm):
        pred = pred_root / f"{steps}x{members}"
        shutil.rmtree(pred, ignore_errors=True)
        t0 = time.perf_counter()
        predict_volume_folder(segmenter, data / "imagesTs", pred, steps=steps, ensemble=members, seed=0)
        seconds = time.perf_counter() - t0
        results[f"{steps}x{members}"] = {"report": evaluate_folders(pred, data / "labelsTs"), "seconds": seconds}
    return results


def evaluate(out: Path, log=print) -> int:
    """Predict the held-out volumes of every trained run without ``study_eval.json`` at its registered settings
    (``spadfast.infer.volumes.predict_volume_folder``, seed 0) and score them (``evaluate_folders``: per-class
    Dice and HD95 in mm per volume): ``{"settings": {"<steps>x<members>": {"report", "seconds"}},
    "evaluated_at"}``; brain runs also on ``CLEAN_SET``'s held-out slabs when it is prepared
    (``clean_eval.json``, the same form). Returns how many runs were scored (either file)."""
    import torch

    from spadfast.io.files import write_text_atomic

    torch.set_num_threads(1)
    code = _commit()  # the code this process loaded (HEAD may move while it runs)
    clean = out / "data" / CLEAN_SET
    n = 0
    for cell_file in sorted((out / "runs").glob(f"*/*/seed*/{CELL_FILE}")):
        run_dir = cell_file.parent
        cell = json.loads(cell_file.read_text())
        todo = [] if (run_dir / EVAL_FILE).is_file() else [(EVAL_FILE, out / "data" / cell["data"], "pred")]
        if cell["data"] == "brain" and (clean / "done").is_file() and not (run_dir / CLEAN_EVAL_FILE).is_file():
            todo.append((CLEAN_EVAL_FILE, clean, "pred_clean"))
        for name, data, pred in todo:
            results = _score_run(run_dir, cell["arm"], data, run_dir / pred)
            write_text_atomic(run_dir / name, json.dumps({"settings": results, "evaluated_at": code}))
            log(f"evaluated {run_dir} ({data.name}): " + ", ".join(f"{k} Dice {v['report']['mean']['dice']:.4f}"
                                                                   for k, v in results.items()))
        n += bool(todo)
    return n


# ------------------------------------------------------------------------------------------------------ collect


def _num(x: Any) -> Any:
    if isinstance(x, float):
        return None if math.isnan(x) else round(x, 5)
    if isinstance(x, dict):
        return {k: _num(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_num(v) for v in x]
    return x


def collect(out: Path, dest: Path, log=print) -> int:
    """Each evaluated run to ``dest/<data>/<arm>/seed<s>.json`` (config, commits, training and evaluation seconds,
    per-volume and mean scores per setting), and each data set's baseline to ``dest/<data>/baseline.json``."""
    n = 0
    for d in DATASETS:
        base = out / "data" / d / BASELINE_FILE
        if base.is_file():
            (dest / d).mkdir(parents=True, exist_ok=True)
            (dest / d / BASELINE_FILE).write_text(json.dumps(_num(json.loads(base.read_text())),
                                                             separators=(",", ":")))
    clean = out / "data" / CLEAN_SET
    for name in (BASELINE_FILE, STUDY_THRESHOLDS_FILE):
        if (clean / name).is_file():
            (dest / CLEAN_SET).mkdir(parents=True, exist_ok=True)
            (dest / CLEAN_SET / name).write_text(json.dumps(_num(json.loads((clean / name).read_text())),
                                                            separators=(",", ":")))
    for cell_file in sorted((out / "runs").glob(f"*/*/seed*/{CELL_FILE}")):
        run_dir = cell_file.parent
        if not (run_dir / EVAL_FILE).is_file():
            continue
        cell = json.loads(cell_file.read_text())
        study = json.loads((run_dir / EVAL_FILE).read_text())
        slim = {**cell, "train_seconds": round(cell["train_seconds"], 1), "evaluated_at": study["evaluated_at"],
                "settings": _num(study["settings"])}
        if (run_dir / CLEAN_EVAL_FILE).is_file():
            extra = json.loads((run_dir / CLEAN_EVAL_FILE).read_text())
            slim.update(clean_settings=_num(extra["settings"]), clean_evaluated_at=extra["evaluated_at"])
        target = dest / cell["data"] / cell["arm"] / f"seed{cell['seed']}.json"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(slim, separators=(",", ":")))
        n += 1
    log(f"collected {n} evaluated runs into {dest}")
    return n


# ------------------------------------------------------------------------------------------------------- report


def _scores(report: dict[str, Any], classes: Sequence[str]) -> dict[str, float]:
    """Mean Dice, per-class Dice and mean HD95 of an ``evaluate_folders`` report (NaN where a class is unscored)."""
    mean = report["mean"]
    per_class = mean.get("per_class", {})
    out = {"dice": float(mean["dice"]), "hd95": float(mean["hd95"]) if mean.get("hd95") is not None else math.nan}
    for i, c in enumerate(classes[1:], start=1):
        entry = per_class.get(str(i), {})
        out[c] = float(entry["dice"]) if entry.get("dice") is not None else math.nan
    return out


def load_cells(cells_root: Path) -> dict[str, dict[str, Any]]:
    """``{data: {"baseline": record or None, "runs": {(arm, setting): {seed: scores}}}}`` from the collected cells,
    and ``CLEAN_SET``: the brain runs' scores on the clean slabs, with ``baseline`` (thresholds tuned on the clean
    slabs) and ``study_thresholds`` (the brain set's thresholds applied to them)."""
    out: dict[str, dict[str, Any]] = {}

    def read(path: Path) -> Any:
        return json.loads(path.read_text()) if path.is_file() else None

    clean_runs: dict[tuple[str, str], dict[int, dict[str, float]]] = {}
    for d in DATASETS:
        runs: dict[tuple[str, str], dict[int, dict[str, float]]] = {}
        for f in sorted((cells_root / d).glob("*/seed*.json")):
            cell = json.loads(f.read_text())
            for key, target in (("settings", runs), ("clean_settings", clean_runs)):
                for setting, rec in cell.get(key, {}).items():
                    target.setdefault((cell["arm"], setting), {})[int(cell["seed"])] = _scores(rec["report"],
                                                                                               CLASSES[d])
        out[d] = {"baseline": read(cells_root / d / BASELINE_FILE), "runs": runs}
    out[CLEAN_SET] = {"baseline": read(cells_root / CLEAN_SET / BASELINE_FILE),
                      "study_thresholds": read(cells_root / CLEAN_SET / STUDY_THRESHOLDS_FILE), "runs": clean_runs}
    return out


def _ci(values: Sequence[float], digits: int = 4) -> str:
    from spadfast.study.stats import t_interval

    vals = [v for v in values if not math.isnan(v)]
    if not vals:
        return "not evaluated"
    mean, lo, hi = t_interval(vals)
    if len(vals) < 2:
        return f"{mean:.{digits}f} (n = 1, no interval)"
    return f"{mean:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def _paired(a: dict[int, dict[str, float]], b: dict[int, dict[str, float]] | None, key: str = "dice") -> str:
    from spadfast.study.stats import t_interval, verdict

    if not b:
        return "not evaluated"
    diffs = [a[s][key] - b[s][key] for s in sorted(set(a) & set(b))]
    if len(diffs) < 2:
        return f"n = {len(diffs)}: no verdict"
    mean, lo, hi = t_interval(diffs)
    return f"{mean:+.4f} [{lo:+.4f}, {hi:+.4f}] ({verdict(lo, hi, NULL_MARGIN)}, n = {len(diffs)})"


def _primary(arm: str) -> str:
    return "1x1" if ARMS[arm].get("objective") == "supervised" else PRIMARY_SETTING


def recommendation(runs: dict[tuple[str, str], dict[int, dict[str, float]]]) -> str:
    """The registered rule for the volume default on the brain set: the best arm by mean Dice (each at its primary
    setting) if the paired interval of best minus the next arm excludes 0, else the cheapest arm (``COST_ORDER``)
    whose mean is within ``NULL_MARGIN`` of the best; pending while an arm has fewer than 3 runs."""
    from spadfast.study.stats import t_interval

    scored = {a: runs.get((a, _primary(a)), {}) for a in REGISTERED_ARMS}
    if any(len(v) < len(SEEDS) for v in scored.values()):
        return "pending: not every arm has its registered runs"
    means = {a: float(np.mean([r["dice"] for r in v.values()])) for a, v in scored.items()}
    ranked = sorted(means, key=means.get, reverse=True)
    best, nxt = ranked[0], ranked[1]
    diffs = [scored[best][s]["dice"] - scored[nxt][s]["dice"] for s in sorted(set(scored[best]) & set(scored[nxt]))]
    _, lo, _ = t_interval(diffs)
    if lo > 0:
        return f"`{best}` (best by mean Dice; best minus `{nxt}` has an interval above 0)"
    cheapest = next(a for a in COST_ORDER if means[best] - means[a] <= NULL_MARGIN)
    return (f"`{cheapest}` (the cheapest arm within {NULL_MARGIN} of the best, `{best}`: its interval against `{nxt}` "
            "does not exclude 0)")


def _clean_section(entry: dict[str, Any]) -> list[str]:
    """The secondary of the third session's addendum: brain runs (trained on the transformed slabs) on the held-out
    slabs without their intensity transform, beside thresholds tuned on the clean training slabs and the study's."""
    from spadfast.study.stats import t_interval

    classes = CLASSES["brain"][1:]
    lines = [f"## `{CLEAN_SET}` (secondary, registration addendum): the held-out slabs without their intensity "
             "transform", "",
             "The same held-out slabs as the T1 template stores them (no gamma, bias field or noise), read through the "
             "brain set's fixed window; the models are the brain runs above (trained on the transformed slabs). "
             "Beside them: two thresholds tuned on the clean training slabs (the setting in which thresholds were "
             "first seen to win) and the study's thresholds (tuned on the transformed training slabs). A secondary: "
             "it changes no default.", ""]
    bases = {"tuned on the clean training slabs": entry["baseline"],
             "tuned on the transformed training slabs (the study's)": entry["study_thresholds"]}
    scores = {k: _scores(v["report"], CLASSES["brain"]) for k, v in bases.items() if v}
    if not scores:
        return lines + ["Not evaluated (the clean slabs are not prepared).", ""]
    sentence = "; ".join(f"thresholds {k}: mean Dice {v['dice']:.4f} (" + ", ".join(f"{c} {v[c]:.4f}" for c in classes)
                         + ")" for k, v in scores.items())
    lines += [sentence[:1].upper() + sentence[1:] + ".", "",
              "| arm | setting | runs | mean Dice | " + " | ".join(f"{c} Dice" for c in classes) + " |",
              "|---|---|---|---|" + "---|" * len(classes)]
    ref = scores.get("tuned on the clean training slabs")
    above, below, unclear, complete = [], [], [], True
    for arm in ARMS:
        setting = _primary(arm)
        runs = entry["runs"].get((arm, setting), {})
        label = "one pass" if ARMS[arm].get("objective") == "supervised" else setting.replace("x", " x ")
        if not runs:
            lines.append(f"| `{arm}` | {label} | 0 | not evaluated |" + " |" * len(classes))
            complete &= arm not in REGISTERED_ARMS
            continue
        lines.append(f"| `{arm}` | {label} | {len(runs)} | {_ci([r['dice'] for r in runs.values()])} | "
                     + " | ".join(_ci([r[c] for r in runs.values()]) for c in classes) + " |")
        complete &= len(runs) >= 2 or arm not in REGISTERED_ARMS
        if ref and len(runs) >= 2:
            _, lo, hi = t_interval([r["dice"] for r in runs.values()])
            (above if lo > ref["dice"] else below if hi < ref["dice"] else unclear).append(f"`{arm}`")
    lines.append("")
    if not ref or not complete:
        lines.append("Against thresholds tuned on the clean slabs: no verdict yet (some arm has fewer than 2 runs).")
    else:
        t = f"{ref['dice']:.4f}"
        lines.append(f"Against thresholds tuned on the clean slabs ({t}): beating them (whole interval above): "
                     f"{', '.join(above) or 'none'}; losing (below): {', '.join(below) or 'none'}; not "
                     f"distinguishable: {', '.join(unclear) or 'none'}.")
    return lines + [""]


def write_report(cells_root: Path, page: Path) -> str:
    """``page`` (docs/volume_study.md) from the cells: per data set and arm, mean Dice per class and overall with a
    95 % t-interval over runs, HD95, the paired differences against ``2d`` and against the supervised counterpart,
    the two-threshold baseline beside every row, and whether any model beats it; returns the text."""
    data = load_cells(cells_root)
    import textwrap

    lines = ["# The volume study: 2-D, 2.5-D and 3-D against two thresholds", "",
             "<!-- Generated by `python scripts/volume_study.py report` from docs/volume_study/cells; do not edit. -->",
             "", "Registered in [volume_study/registration.md](volume_study/registration.md) (issue 32.5). The unit is "
             "a training run (one seed); intervals are 95 % t-intervals over runs, paired differences pair runs of "
             "the same seed. Diffusion arms are scored at 1 step x 1 member and at 5 steps x 5 members (the library "
             "default when registered; primary); supervised arms in one pass. Dice is the mean over held-out volumes of each class's "
             "3-D Dice (`spadfast evaluate`), HD95 in mm (inf where a run predicted a class nowhere in a volume). The "
             "two-threshold baseline is deterministic: no interval.",
             ""]
    lines[-2] = textwrap.fill(lines[-2], 120, break_on_hyphens=False)
    for d in DATASETS:
        classes = CLASSES[d][1:]
        entry = data[d]
        base = entry["baseline"]
        base_scores = _scores(base["report"], CLASSES[d]) if base else None
        base_txt = f"{base_scores['dice']:.4f}" if base_scores else "not evaluated"
        lines += [f"## `{d}`", ""]
        if base_scores:
            lines += [f"Two-threshold baseline (tuned on the training volumes): mean Dice {base_scores['dice']:.4f}, "
                      + ", ".join(f"{c} {base_scores[c]:.4f}" for c in classes)
                      + f", HD95 {base_scores['hd95']:.2f} mm.", ""]
        lines += ["| arm | setting | runs | mean Dice | " + " | ".join(f"{c} Dice" for c in classes)
                  + " | HD95 (mm) | minus `2d` | minus supervised | thresholds |",
                  "|---|---|---|---|" + "---|" * len(classes) + "---|---|---|---|"]
        above, below, unclear = [], [], []
        for arm in ARMS:
            for steps, members in settings_of(arm):
                setting = f"{steps}x{members}"
                runs = entry["runs"].get((arm, setting), {})
                label = "one pass" if ARMS[arm].get("objective") == "supervised" else f"{steps} x {members}"
                if not runs:
                    lines.append(f"| `{arm}` | {label} | 0 | not evaluated |" + " |" * len(classes)
                                 + f" | | | {base_txt} |")
                    continue
                vs_2d = ("" if arm == "2d" or arm.startswith("supervised")
                         else _paired(runs, entry["runs"].get(("2d", setting))))
                sup = SUPERVISED_OF.get(arm)
                vs_sup = _paired(runs, entry["runs"].get((sup, "1x1"))) if sup else ""
                lines.append(f"| `{arm}` | {label} | {len(runs)} | {_ci([r['dice'] for r in runs.values()])} | "
                             + " | ".join(_ci([r[c] for r in runs.values()]) for c in classes)
                             + f" | {_ci([r['hd95'] for r in runs.values()], 2)} | {vs_2d} | {vs_sup} | {base_txt} |")
                if base_scores and len(runs) >= 2:
                    from spadfast.study.stats import t_interval

                    _, lo, hi = t_interval([r["dice"] for r in runs.values()])
                    side = above if lo > base_scores["dice"] else below if hi < base_scores["dice"] else unclear
                    side.append(f"`{arm}` ({label}{', secondary' if arm in SECONDARY_ARMS else ''})")
        lines.append("")
        complete = all(len(entry["runs"].get((a, _primary(a)), {})) >= 2 for a in REGISTERED_ARMS)
        if not base_scores:
            lines.append("Does any model beat the thresholds? Not evaluated (no baseline).")
        elif not complete:
            lines.append("Does any model beat the thresholds? No verdict yet: some arm has fewer than 2 evaluated "
                         "runs.")
        else:
            t = f"{base_scores['dice']:.4f}"
            lines.append(f"Models beating the thresholds (whole Dice interval above {t}): {', '.join(above)}."
                         if above else f"No model beats the thresholds: no arm's Dice interval lies above {t}.")
            if below:
                lines.append(f"Losing to them (interval below {t}): {', '.join(below)}.")
            if unclear:
                lines.append(f"Not distinguishable from them (interval holds {t}): {', '.join(unclear)}.")
        for arm, ref in SECONDARY_OF.items():
            runs = entry["runs"].get((arm, PRIMARY_SETTING), {})
            if runs:
                lines += ["", f"Secondary arm `{arm}` minus `{ref}` ({PRIMARY_SETTING.replace('x', ' x ')}, paired by "
                          f"seed, mean Dice): {_paired(runs, entry['runs'].get((ref, PRIMARY_SETTING)))}."]
        if d == "brain":
            lines += ["", f"The volume default by the registered rule: {recommendation(entry['runs'])}."]
        lines.append("")
    lines += _clean_section(data[CLEAN_SET])
    text = "\n".join(lines).rstrip() + "\n"
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text(text)
    return text


# ---------------------------------------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("step", choices=["prepare", "run", "evaluate", "collect", "report"])
    p.add_argument("--out", type=Path, default=Path("volume_study"), help="the study folder (outside the repository)")
    p.add_argument("--datasets", nargs="+", default=list(DATASETS))
    p.add_argument("--arms", nargs="+", default=list(ARMS))
    p.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS))
    p.add_argument("--steps", type=int, help=f"training steps (default {TRAIN_STEPS}; smaller only for a smoke test)")
    p.add_argument("--nilearn-wheel", type=Path, help="nilearn wheel, or a zip holding the same members")
    p.add_argument("--dest", type=Path, default=ROOT / "docs" / "volume_study" / "cells")
    p.add_argument("--page", type=Path, default=ROOT / "docs" / "volume_study.md")
    args = p.parse_args(argv)
    try:
        if args.step == "prepare":
            prepare(args.out, args.nilearn_wheel)
        elif args.step == "run":
            from spadfast.runtime.preemption import EXIT_STOPPED, Stopped

            cells = plan(args.datasets, args.arms, args.seeds)
            try:
                run(args.out, cells, {"train_steps": args.steps} if args.steps else None)
            except Stopped as e:  # a signal: the checkpoint is saved and the run resumes on the next call
                print(f"volume_study: {e}", flush=True)
                return EXIT_STOPPED
        elif args.step == "evaluate":
            evaluate(args.out)
        elif args.step == "collect":
            collect(args.out, args.dest)
        else:
            write_report(args.dest, args.page)
            print(f"wrote {args.page}")
    except ValueError as e:
        print(f"volume_study {args.step}: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
