"""The diffusion study (/work/shared/DIFFUSION_STUDY.md, registered in docs/diffusion_study/registration.md).

Steps (each resumable; rerunning skips what is done):

    python scripts/diffusion_study.py prepare --out STUDY     # nuclei folds (stardist wheel) and the ambiguous set
    python scripts/diffusion_study.py run --out STUDY         # train variants x folds x seeds (hours to days on a CPU)
    python scripts/diffusion_study.py evaluate --out STUDY    # each finished run: DDIM steps x members, keyed noise
    python scripts/diffusion_study.py collect --out STUDY     # finished cells into docs/diffusion_study/cells
    python scripts/diffusion_study.py choose                  # the pilot's choice: docs/diffusion_study/choice.json
    python scripts/diffusion_study.py report                  # docs/diffusion_study.md from the cells

Data sets: ``nuclei-clean`` / ``nuclei-noisy``: the SPAD study's folds (helpers imported from ``spad_study``), each
held-out strip kept whole as one 128x512 image. ``ambiguous``: axial slices of the MNI152 2009a T1 template and its
grey-matter probability map from the nilearn wheel (``pip download --no-deps nilearn``; pass ``--nilearn-wheel`` or
let ``prepare`` download it), split by slice position with a guard gap; training items are annotators drawn per item
and epoch (:class:`spadfast.data.ambiguous.AmbiguousSlices`), test masks are the consensus, ``test/prob`` the map
and ``test/annotators/tau<t>`` 8 fixed annotators.

Variants are config overrides (``VARIANTS``; ``--variant-file`` JSON replaces or adds entries): a variant whose key
this spadfast's ``SPADConfig`` lacks is refused in one line before any run starts. Run with one thread per process
and ``nice``: ``OMP_NUM_THREADS=1 nice -n 10 python scripts/diffusion_study.py run``.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import subprocess
import sys
import time
import zipfile
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
import spad_study  # noqa: E402  (the SPAD study's data helpers, reused)

STRIP, TILE = spad_study.STRIP, spad_study.TILE
NUCLEI = ("nuclei-clean", "nuclei-noisy")
DATASETS = (*NUCLEI, "ambiguous")
PILOT_FOLD, PRIMARY_FOLDS = 0, (1, 2, 3)  # registration.md: settings are chosen on the pilot fold only
SEEDS = {"nuclei-clean": 4, "nuclei-noisy": 4, "ambiguous": 6}
EVAL_STEPS, EVAL_MEMBERS = (1, 2, 5, 10, 25), (1, 5, 16)
# x0_loss_weight pinned to 0 (the library default when the study ran; variants override it): the default became 0.3
# from this study's answer, and "baseline" must stay today's diffusion of the registration
BASE = {"train_steps": 3000, "val_every": 250, "checkpoint_every": 250, "num_workers": 0, "progress_bar": False,
        "x0_loss_weight": 0.0}

# the MNI152 2009a templates inside the nilearn wheel
GM_MEMBER = "nilearn/datasets/data/mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz"
T1_MEMBER = "nilearn/datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
AMBIG_SLICES = (30, 140)  # axial slices holding grey matter (registration.md)
AMBIG_TEST = tuple(range(76, 92, 2))
AMBIG_VAL = tuple(range(116, 124, 2))
AMBIG_GUARD = 8  # slices (mm) between a training slice and any test or validation slice
CROP_THRESHOLD, CROP_MARGIN = 0.05, 4  # the crop: the map's support over the whole volume, plus a margin
CONSENSUS, N_ANNOTATORS = 0.5, 8

# variant -> config overrides. "{choice:<key>}" is read from docs/diffusion_study/choice.json (the pilot's choices,
# registration.md); a variant whose value is still unchosen cannot run.
VARIANTS: dict[str, dict[str, Any]] = {
    "baseline": {},
    "self-cond": {"self_condition": True},
    "recycle": {"recycle": True},
    "x0-loss": {"x0_loss_weight": "{choice:x0_loss_weight}"},
    "x0-loss-0.1": {"x0_loss_weight": 0.1},  # pilot fold only: the weight is chosen among these
    "x0-loss-0.3": {"x0_loss_weight": 0.3},
    "x0-loss-1": {"x0_loss_weight": 1.0},
    # the first half trains the prior: the same 3000 steps as "supervised" (bit-identical to that run of the seed), so
    # the pair compares the refinement with its own input; then 3000 diffusion steps, as every diffusion variant gets
    # (2x the training of either; a --steps smoke run is overridden by these keys)
    "prior": {"prior": "supervised", "prior_steps": 3000, "train_steps": 6000},
    "best-combination": "{choice:best_combination}",  # the overrides of the two chosen variants, merged
    "supervised": {"objective": "supervised"},
    **{f"supervised-m{j}": {"objective": "supervised", "seed_offset": 100 * j} for j in range(1, 5)},
}
PILOT_VARIANTS = ("baseline", "self-cond", "recycle", "x0-loss-0.1", "x0-loss-0.3", "x0-loss-1", "prior",
                  "supervised")
PRIMARY_VARIANTS = ("baseline", "self-cond", "recycle", "x0-loss", "prior", "best-combination", "supervised",
                    *(f"supervised-m{j}" for j in range(1, 5)))
CHOICE_FILE = ROOT / "docs" / "diffusion_study" / "choice.json"
CELL_FILE, EVAL_FILE = "cell.json", "study_eval.json"


# -------------------------------------------------------------------------------------------------------- data


def extract_mni(wheel: Path, dest: Path) -> tuple[np.ndarray, np.ndarray]:
    """The T1 template (uint8 ``[I,J,K]``) and grey-matter probability map (float32 ``[I,J,K]`` in [0, 1]) from a
    nilearn wheel (or any zip holding ``GM_MEMBER`` and ``T1_MEMBER``), copied to ``dest`` first."""
    import nibabel as nib

    dest.mkdir(parents=True, exist_ok=True)
    arrays = []
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        for member in (T1_MEMBER, GM_MEMBER):
            if member not in names:
                raise ValueError(f"{wheel}: holds no {member} (a nilearn wheel with the MNI152 2009a templates?)")
            path = dest / Path(member).name
            path.write_bytes(z.read(member))
            arrays.append(np.asarray(nib.load(str(path)).dataobj))
    t1, gm = arrays
    if t1.shape != gm.shape or t1.ndim != 3:
        raise ValueError(f"{wheel}: T1 {t1.shape} and grey-matter map {gm.shape} must be one 3-D grid")
    scale = 255.0 if np.issubdtype(gm.dtype, np.integer) else 1.0  # the wheel stores both as uint8 0..255
    t1 = np.clip(np.round(t1.astype(np.float64) * (255.0 / max(float(t1.max()), 1e-8))), 0, 255).astype(np.uint8)
    return t1, np.clip(gm.astype(np.float32) / scale, 0, 1)


def split_slices(lo: int, hi: int, test: Sequence[int], val: Sequence[int], guard: int) -> list[int]:
    """Training slices of ``[lo, hi)``: those more than ``guard`` slices from every test and validation slice."""
    held = [*test, *val]
    if not held or any(not lo <= z < hi for z in held):
        raise ValueError(f"test and validation slices must lie in [{lo}, {hi}), got {held}")
    return [z for z in range(lo, hi) if all(abs(z - h) > guard for h in held)]


def _write_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), array):
        raise ValueError(f"could not write {path}")


def prepare_ambiguous(t1: np.ndarray, gm: np.ndarray, root: Path, slices: tuple[int, int] = AMBIG_SLICES,
                      test: Sequence[int] = AMBIG_TEST, val: Sequence[int] = AMBIG_VAL,
                      guard: int = AMBIG_GUARD) -> dict[str, Any]:
    """Axial slices (axis 2) cropped to the map's support: ``root/slices.npz`` (``image`` uint8 ``[N,H,W]``,
    ``prob`` float32, ``z``; the training slices), ``root/val/{images,masks}`` (consensus), ``root/test/{images,
    masks}`` (consensus), ``root/test/prob/<name>.npy`` and ``root/test/annotators/tau<t>/<name>.png``."""
    from spadfast.data.ambiguous import fixed_taus

    train = split_slices(*slices, test, val, guard)
    support = np.argwhere(gm[:, :, slices[0]:slices[1]] > CROP_THRESHOLD)
    (r0, c0), (r1, c1) = support.min(0)[:2], support.max(0)[:2]
    r0, c0 = max(0, r0 - CROP_MARGIN), max(0, c0 - CROP_MARGIN)
    r1, c1 = min(gm.shape[0], r1 + 1 + CROP_MARGIN), min(gm.shape[1], c1 + 1 + CROP_MARGIN)

    def plane(volume: np.ndarray, z: int) -> np.ndarray:
        return np.ascontiguousarray(volume[r0:r1, c0:c1, z])

    root.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(root / "slices.npz", image=np.stack([plane(t1, z) for z in train]),
                        prob=np.stack([plane(gm, z) for z in train]), z=np.array(train))
    taus = fixed_taus(N_ANNOTATORS)
    for part, zs in (("val", val), ("test", test)):
        for z in zs:
            name, prob = f"z{z:03d}", plane(gm, z)
            _write_png(root / part / "images" / f"{name}.png", plane(t1, z))
            _write_png(root / part / "masks" / f"{name}.png", (prob > CONSENSUS).astype(np.uint8) * 255)
            if part == "test":
                (root / "test" / "prob").mkdir(parents=True, exist_ok=True)
                np.save(root / "test" / "prob" / f"{name}.npy", prob)
                for tau in taus:
                    _write_png(root / "test" / "annotators" / f"tau{tau:.3f}" / f"{name}.png",
                               (prob > tau).astype(np.uint8) * 255)
    info = {"crop": [int(r0), int(r1), int(c0), int(c1)], "train": train, "val": list(val), "test": list(test),
            "guard": guard, "annotators": taus, "consensus": CONSENSUS}
    (root / "split.json").write_text(json.dumps(info, indent=1))
    (root / "done").write_text("")
    return info


def ambiguous_train(root: Path, seed: int):
    """The ambiguous set's training slices (``AmbiguousSlices``, images ``[1,H,W]`` in [-1, 1]) for a run of ``seed``;
    :func:`run` cuts patches of them with ``PatchDraws``, whose ``draw`` passes the batch stream's epoch on, so each
    item is a new annotator every epoch."""
    from spadfast.data.ambiguous import AmbiguousSlices

    data = np.load(root / "slices.npz")
    return AmbiguousSlices(data["image"].astype(np.float32) / 127.5 - 1, data["prob"], seed=seed,
                           names=[f"z{z:03d}" for z in data["z"]])


def prepare_nuclei(image: np.ndarray, labels: np.ndarray, out: Path, folds: int = 4) -> None:
    """The SPAD study's folds (training tiles as ``spad_study.prepare`` cuts them) with each held-out strip kept as
    one whole image: ``out/data/nuclei-<clean|noisy>/fold<k>/{train,test}/{images,masks}``."""
    clean = labels > 0
    masks = {"nuclei-clean": clean, "nuclei-noisy": spad_study.noisy_annotation(labels, seed=0)}
    for k in range(folds):
        lo, hi = k * STRIP, (k + 1) * STRIP
        for name, train_mask in masks.items():
            root = out / "data" / name / f"fold{k}"
            if (root / "done").is_file():
                continue
            spad_study._write_pair(root / "test", f"strip{k}", image[lo:hi], clean[lo:hi])
            for y in range(0, image.shape[0] - TILE + 1, spad_study.TRAIN_STRIDE):
                if y + TILE > lo - spad_study.GUARD and y < hi + spad_study.GUARD:
                    continue
                for x in range(0, image.shape[1] - TILE + 1, spad_study.TRAIN_STRIDE):
                    spad_study._write_pair(root / "train", f"y{y:03d}_x{x:03d}", image[y:y + TILE, x:x + TILE],
                                           train_mask[y:y + TILE, x:x + TILE])
            (root / "done").write_text("")


def prepare(out: Path, stardist_wheel: Path | None, nilearn_wheel: Path | None) -> None:
    image, labels = spad_study._dsb(stardist_wheel, out / "source")
    prepare_nuclei(image, labels, out)
    root = out / "data" / "ambiguous"
    if not (root / "done").is_file():
        if nilearn_wheel is None:
            subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "nilearn", "-d",
                            str(out / "source")], check=True)
            nilearn_wheel = sorted((out / "source").glob("nilearn-*.whl"))[-1]
        info = prepare_ambiguous(*extract_mni(nilearn_wheel, out / "source"), root)
        print(f"ambiguous: {len(info['train'])} training, {len(info['val'])} validation, {len(info['test'])} test "
              f"slices, crop {info['crop']}")
    print(f"prepared {out / 'data'}")


# ----------------------------------------------------------------------------------------------------- variants


def _choice(key: str) -> Any:
    choice = json.loads(CHOICE_FILE.read_text()) if CHOICE_FILE.is_file() else {}
    if key not in choice:
        raise ValueError(f"{CHOICE_FILE} does not record {key!r} yet: the pilot (fold {PILOT_FOLD}) chooses it "
                         "first (registration.md)")
    return choice[key]


def _resolve(value: Any, table: dict[str, Any]) -> Any:
    if isinstance(value, str) and value.startswith("{choice:"):
        chosen = _choice(value[len("{choice:"):-1])
        if value == "{choice:best_combination}":
            merged: dict[str, Any] = {}
            for name in chosen:
                merged.update(variant_overrides(name, table))
            return merged
        return chosen
    if isinstance(value, dict):
        return {k: _resolve(v, table) for k, v in value.items()}
    return value


def variant_overrides(name: str, table: dict[str, Any] | None = None) -> dict[str, Any]:
    """Config overrides of variant ``name`` (choices resolved; ``seed_offset`` kept for :func:`run_config`).

    Raises:
        ValueError: unknown variant, an unchosen choice, or a key ``SPADConfig`` lacks (named).
    """
    from spadfast.config import SPADConfig

    table = VARIANTS if table is None else table
    if name not in table:
        raise ValueError(f"unknown variant {name!r}; variants: {', '.join(table)}")
    overrides = _resolve(table[name], table)
    fields = {f.name for f in dataclasses.fields(SPADConfig)}
    missing = sorted(set(overrides) - fields - {"seed_offset"})
    if missing:
        raise ValueError(f"variant {name!r} needs config key {missing[0]!r}, which this spadfast's SPADConfig lacks")
    return overrides


def run_config(name: str, seed: int, table: dict[str, Any] | None = None,
               extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The config dict of one run: ``cpu-small`` + ``BASE`` + the variant + ``extra``, seed ``seed`` (+ the
    variant's ``seed_offset``); checked by ``SPADConfig``."""
    from spadfast.config import SPADConfig

    overrides = dict(variant_overrides(name, table))
    offset = int(overrides.pop("seed_offset", 0))
    cfg = {**BASE, **(extra or {}), **overrides, "seed": seed + offset}
    return SPADConfig.preset("cpu-small", **cfg).to_dict()


# ---------------------------------------------------------------------------------------------------------- run


def _commit() -> dict[str, Any]:
    from spadfast.study.provenance import code_commit

    return code_commit(ROOT)


def plan(datasets: Sequence[str], folds: Sequence[int], seeds: int | None, variants: Sequence[str]
         ) -> list[tuple[str, int, str, int]]:
    """(data set, fold, variant, seed) in run order: seed-major, so complete paired units finish first; the
    ambiguous set has one split (fold 0)."""
    cells = []
    top = max(seeds or SEEDS[d] for d in datasets)
    for s in range(top):
        for d in datasets:
            if s >= (seeds or SEEDS[d]):
                continue
            for k in (folds if d in NUCLEI else (0,)):
                cells.extend((d, k, v, s) for v in variants)
    return cells


def run(out: Path, cells: list[tuple[str, int, str, int]], table: dict[str, Any] | None = None,
        extra: dict[str, Any] | None = None, log=print) -> int:
    """Train (or resume, or skip) every cell; returns how many were trained. Every variant's config is built and
    checked before the first run starts."""
    import torch

    from spadfast.data.patches import PatchDraws
    from spadfast.io.files import write_text_atomic
    from spadfast.study.ablate import DONE_FILE, slug, train_and_evaluate

    configs = {(d, v, s): run_config(v, s, table, extra) for d, _, v, s in cells}
    torch.set_num_threads(1)
    trained = 0
    for d, k, v, s in cells:
        root = out / "data" / d / f"fold{k}" if d in NUCLEI else out / "data" / d
        run_dir = out / "runs" / d / f"fold{k}" / slug(v) / f"seed{s}"
        if (run_dir / DONE_FILE).is_file() and (run_dir / CELL_FILE).is_file():
            continue
        cfg = configs[d, v, s]
        val = root / "test" if d in NUCLEI else root / "val"  # the trainer's validation curves (monitoring only)
        if d in NUCLEI:
            train: Any = root / "train"
        else:
            train = PatchDraws(ambiguous_train(root, cfg["seed"]), cfg["image_size"], seed=cfg["seed"],
                               foreground_share=cfg["foreground_oversample"])
        started = _commit()
        log(f"[{d} fold{k} {v} seed{s}] training {cfg['train_steps']} steps at {started['commit']}")
        record = train_and_evaluate(run_dir, cfg, train, val / "images", val / "masks",
                                    log=lambda m, tag=f"[{d} fold{k} {v} seed{s}]": log(f"{tag} {m}"))
        cell = {"data": d, "fold": k, "variant": v, "seed": s, "started_at": started, "finished_at": _commit(),
                "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "train_seconds": record["train_seconds"]}
        write_text_atomic(run_dir / CELL_FILE, json.dumps(cell, indent=1))
        trained += 1
    return trained


# ----------------------------------------------------------------------------------------------------- evaluate


def _grid_kwargs(fn, data: str, test: Path, diffusion: bool) -> tuple[dict[str, Any], list[str]]:
    """The grid evaluation's keyword arguments this data set needs, those that ``fn`` accepts; and the endpoints
    left out because it does not (recorded in the run's evaluation, never silently)."""
    wanted: dict[str, Any] = {"whole_image": True}  # strips and slices scored whole, with sliding windows
    if data in NUCLEI:
        wanted["tile"] = TILE  # non-empty-tile Dice and the empty-tile false-positive rate
    else:
        wanted["annotator_dirs"] = sorted((test / "annotators").iterdir())  # GED, HM-IoU
        wanted["prob_dir"] = test / "prob"  # ECE and Brier against the grey-matter probability map
    if diffusion:
        from spadfast.diffusion import sampler

        if hasattr(sampler, "STEP_FUSIONS"):
            wanted["fusions"] = tuple(sampler.STEP_FUSIONS)  # "none" first: the unfused cells come first
    accepted = set(inspect.signature(fn).parameters)
    return ({k: v for k, v in wanted.items() if k in accepted},
            [f"{k} (grid_eval.evaluate_checkpoint takes no `{k}`)" for k in wanted if k not in accepted])


def primary_runs_may_be_scored(choice_file: Path | None = None) -> bool:
    """Whether runs outside the pilot (primary folds, the ambiguous set) may be evaluated: only once the pilot's
    whole choice, its best variant included, is in ``choice_file`` (registration.md: the choice is committed before
    any primary-fold run is evaluated; primary runs may train before it)."""
    path = CHOICE_FILE if choice_file is None else choice_file
    return path.is_file() and "best_variant" in json.loads(path.read_text())


def is_pilot_run(cell: dict[str, Any]) -> bool:
    """A run of the pilot: nuclei, fold ``PILOT_FOLD``."""
    return cell["data"] in NUCLEI and int(cell["fold"]) == PILOT_FOLD


def evaluate(out: Path, log=print) -> int:
    """Score every trained run without ``study_eval.json`` on its whole test images at ``EVAL_STEPS`` x
    ``EVAL_MEMBERS`` x step fusions (supervised runs: one pass): ``{"grid": [...], "seconds", "left_out",
    "evaluated_at"}``. Runs outside the pilot wait until :func:`primary_runs_may_be_scored`."""
    import torch

    from spadfast.io.files import write_text_atomic
    from spadfast.study import grid_eval

    torch.set_num_threads(1)
    fn = grid_eval.evaluate_checkpoint
    code = _commit()  # the code this process loaded, recorded with every cell (HEAD may move while it runs)
    n = waiting = 0
    for cell_file in sorted((out / "runs").glob(f"*/fold*/*/seed*/{CELL_FILE}")):
        run_dir = cell_file.parent
        if (run_dir / EVAL_FILE).is_file():
            continue
        cell = json.loads(cell_file.read_text())
        if not is_pilot_run(cell) and not primary_runs_may_be_scored():
            waiting += 1
            continue
        d = cell["data"]
        test = out / "data" / d / (f"fold{cell['fold']}" if d in NUCLEI else "") / "test"
        supervised = cell["variant"].startswith("supervised")
        kwargs, left_out = _grid_kwargs(fn, d, test, diffusion=not supervised)
        grid_args = dict(steps=(1,) if supervised else EVAL_STEPS, ensembles=(1,) if supervised else EVAL_MEMBERS)
        t0 = time.perf_counter()
        try:
            grid = fn(run_dir, test / "images", test / "masks", **grid_args, **kwargs)
        except ValueError as e:
            if "annotator_dirs" not in kwargs or "annotator_dirs" not in str(e):
                raise
            kwargs.pop("annotator_dirs")  # grid_eval scores annotators only at the model's size
            left_out.append(f"GED and HM-IoU against the annotators ({e})")
            grid = fn(run_dir, test / "images", test / "masks", **grid_args, **kwargs)
        seconds = time.perf_counter() - t0
        write_text_atomic(run_dir / EVAL_FILE, json.dumps({"grid": grid, "seconds": seconds, "left_out": left_out,
                                                           "evaluated_at": code}))
        log(f"evaluated {run_dir} ({seconds:.0f} s){'; left out: ' + ', '.join(left_out) if left_out else ''}")
        n += 1
    if waiting:
        log(f"{waiting} trained runs outside the pilot wait for the pilot's committed choice ({CHOICE_FILE})")
    return n + evaluate_supervised_x5(out, log)


def evaluate_supervised_x5(out: Path, log=print) -> int:
    """``supervised x5`` of each unit (registration.md): the runs ``supervised`` (seed s) and ``supervised-m1..m4``
    (seeds s + 100 j) scored as one ensemble of 5 (one pass each), written to ``<fold>/supervised-x5/seed<s>/``
    once all five are trained; returns how many were scored."""
    from spadfast.io.files import write_text_atomic
    from spadfast.study import grid_eval

    n = 0
    for first in sorted((out / "runs").glob(f"*/fold*/supervised/seed*/{CELL_FILE}")):
        unit = first.parent
        runs = [unit] + [unit.parent.parent / f"supervised-m{j}" / unit.name for j in range(1, 5)]
        if not all((r / CELL_FILE).is_file() for r in runs):
            continue
        dest = unit.parent.parent / "supervised-x5" / unit.name
        if (dest / EVAL_FILE).is_file():
            continue
        cell = json.loads(first.read_text())
        if not is_pilot_run(cell) and not primary_runs_may_be_scored():
            continue
        d = cell["data"]
        test = out / "data" / d / (f"fold{cell['fold']}" if d in NUCLEI else "") / "test"
        kwargs, left_out = _grid_kwargs(grid_eval.evaluate_checkpoint, d, test, diffusion=False)
        t0 = time.perf_counter()
        grid = grid_eval.evaluate_checkpoint(runs, test / "images", test / "masks", steps=(1,), ensembles=(5,),
                                             **kwargs)
        dest.mkdir(parents=True, exist_ok=True)
        write_text_atomic(dest / CELL_FILE, json.dumps({**cell, "variant": "supervised-x5",
                                                        "members": [str(r) for r in runs]}))
        write_text_atomic(dest / EVAL_FILE, json.dumps({"grid": grid, "seconds": time.perf_counter() - t0,
                                                        "left_out": left_out, "evaluated_at": _commit()}))
        log(f"evaluated {dest} (5 supervised runs as one ensemble)")
        n += 1
    return n


# ------------------------------------------------------------------------------------------------------ collect


def _curve(run_dir: Path) -> list[list[float]]:
    log_file = run_dir / "log.jsonl"
    if not log_file.is_file():
        return []
    records = [json.loads(line) for line in log_file.read_text().splitlines() if line.strip()]
    return [[r["step"], round(float(r["val_dice"]), 4)] for r in records if "val_dice" in r]


def _slim(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    def num(x: Any) -> Any:
        return round(float(x), 5) if isinstance(x, (int, float)) and not isinstance(x, bool) else x

    return [{**{k: num(v) for k, v in r.items() if k not in ("mean", "cases")},
             "mean": {k: num(x) for k, x in r["mean"].items()},
             "cases": [{k: num(x) for k, x in c.items()} for c in r["cases"]]} for r in records]


BASELINES_FILE = "baselines.json"


def trivial_baselines(data_root: Path, fold: int) -> dict[str, float]:
    """Dice, on the held-out images the runs are scored on (whole strips; the ambiguous set's test slices against the
    consensus), of Otsu per image and of one intensity threshold tuned on the training images with the masks the
    models trained on (nuclei: the set's own, noisy or clean; ambiguous: the consensus of the training slices' maps):
    :func:`spadfast.evaluation.baselines.trivial_baselines`, mean over the held-out images."""
    import cv2

    from spadfast.evaluation.baselines import trivial_baselines as baselines
    from spadfast.io.files import index_folder, read_mask

    def folder(root: Path) -> tuple[list[np.ndarray], list[np.ndarray]]:
        files = index_folder(root / "images")
        return ([cv2.imread(str(files[n]), cv2.IMREAD_GRAYSCALE) for n in sorted(files)],
                [read_mask(root / "masks" / f"{n}.png") for n in sorted(files)])

    if (data_root / "slices.npz").is_file():  # the ambiguous set
        slices = np.load(data_root / "slices.npz")
        train = (list(slices["image"]), [p > CONSENSUS for p in slices["prob"]])
        test = folder(data_root / "test")
    else:
        root = data_root / f"fold{fold}"
        train, test = folder(root / "train"), folder(root / "test")
    return baselines(*train, *test)


def collect(out: Path, dest: Path) -> int:
    """Each evaluated run to ``dest/<data>/fold<k>/<variant>/seed<s>.json``: config, commit, training time, the
    validation curve, the grid per image (steps x members x step fusion), what was left out; and for every data set
    and fold with a run, its trivial baselines (:func:`trivial_baselines`) to ``dest/<data>/fold<k>/baselines.json``."""
    from spadfast.study.ablate import DONE_FILE

    n = 0
    for fold_dir in sorted({c.parent.parent.parent for c in (out / "runs").glob(f"*/fold*/*/seed*/{CELL_FILE}")}):
        data, fold = fold_dir.parent.name, int(fold_dir.name.removeprefix("fold"))
        target = dest / data / fold_dir.name / BASELINES_FILE
        if not target.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            values = trivial_baselines(out / "data" / data, fold)
            target.write_text(json.dumps({k: round(v, 6) for k, v in values.items()}, indent=1) + "\n")
    for cell_file in sorted((out / "runs").glob(f"*/fold*/*/seed*/{CELL_FILE}")):
        run_dir = cell_file.parent
        if not (run_dir / EVAL_FILE).is_file():
            continue
        cell = json.loads(cell_file.read_text())
        done = run_dir / DONE_FILE  # none for supervised-x5: an ensemble of five trained runs, not a run
        record = json.loads(done.read_text()) if done.is_file() else {"config": None, "steps": None}
        study = json.loads((run_dir / EVAL_FILE).read_text())
        slim = {**cell, "config": record["config"], "steps": record["steps"], "curve": _curve(run_dir),
                "study": _slim(study["grid"]),
                "eval_seconds": round(study["seconds"], 1), "left_out": study["left_out"],
                "evaluated_at": study["evaluated_at"]}
        target = dest / Path(*run_dir.relative_to(out / "runs").parts).with_suffix(".json")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(slim, separators=(",", ":")))
        n += 1
    print(f"collected {n} evaluated runs into {dest}")
    return n


# ------------------------------------------------------------------------------------------------------- report


def write_report(cells_root: Path, page: Path) -> str:
    """docs/diffusion_study.md from the collected cells (``diffusion_study_report.write_report``: progress, the pilot's
    choice, the positive control, the registered primaries and secondaries, the pilot table, the validation curves);
    returns the page's text."""
    import diffusion_study_report

    return diffusion_study_report.write_report(cells_root, page, choice_file=CHOICE_FILE)


def choose(cells_root: Path) -> dict[str, Any]:
    """The pilot's choice (registration rules 1-4) from the cells under ``cells_root`` into ``CHOICE_FILE`` and
    ``choice.md`` beside it (``diffusion_study_report.write_choice``: refuses to change a frozen choice); returns it."""
    import diffusion_study_report

    return diffusion_study_report.write_choice(cells_root, CHOICE_FILE, CHOICE_FILE.parent / "choice.md")


# ---------------------------------------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("step", choices=["prepare", "run", "evaluate", "collect", "choose", "report"])
    p.add_argument("--out", type=Path, default=Path("diffusion_study"))
    p.add_argument("--phase", choices=["pilot", "primary"], default="pilot",
                   help="run: pilot = fold 0, seeds 0-1, the pilot variants; primary = folds 1-3, every seed")
    p.add_argument("--datasets", nargs="+", choices=DATASETS)
    p.add_argument("--variants", nargs="+", help="default: the phase's variants")
    p.add_argument("--seeds", type=int, help="default: the phase's (pilot 2; primary per data set, SEEDS)")
    p.add_argument("--steps", type=int, help="training steps (default 3000; smaller only for a smoke test)")
    p.add_argument("--variant-file", type=Path, help="JSON {variant: overrides} replacing or adding VARIANTS rows")
    p.add_argument("--stardist-wheel", type=Path)
    p.add_argument("--nilearn-wheel", type=Path)
    p.add_argument("--dest", type=Path, default=ROOT / "docs" / "diffusion_study" / "cells")
    args = p.parse_args(argv)
    table = dict(VARIANTS)
    if args.variant_file:
        table.update(json.loads(args.variant_file.read_text()))
    if args.step == "prepare":
        prepare(args.out, args.stardist_wheel, args.nilearn_wheel)
    elif args.step == "run":
        from spadfast.runtime.preemption import EXIT_STOPPED, Stopped

        pilot = args.phase == "pilot"
        datasets = args.datasets or (NUCLEI if pilot else DATASETS)
        variants = args.variants or (PILOT_VARIANTS if pilot else PRIMARY_VARIANTS)
        cells = plan(datasets, (PILOT_FOLD,) if pilot else PRIMARY_FOLDS, args.seeds or (2 if pilot else None),
                     variants)
        extra = {"train_steps": args.steps} if args.steps else None
        try:
            run(args.out, cells, table, extra)
        except Stopped as e:  # a signal: the run's checkpoint is saved and it resumes on the next call
            print(f"diffusion_study: {e}", flush=True)
            return EXIT_STOPPED
    elif args.step == "evaluate":
        evaluate(args.out)
    elif args.step == "collect":
        collect(args.out, args.dest)
    elif args.step == "choose":
        try:
            made = choose(args.dest)
        except ValueError as e:  # pilot runs missing, or a frozen choice it would change: one line, nothing written
            print(f"diffusion_study choose: {e}", file=sys.stderr)
            return 2
        print(f"wrote {CHOICE_FILE}: x0_loss_weight {made['x0_loss_weight']}, best combination "
              f"{' + '.join(made['best_combination'])}, best variant {made.get('best_variant', 'pending')}")
    else:
        page = ROOT / "docs" / "diffusion_study.md"
        write_report(args.dest, page)
        print(f"wrote {page}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
