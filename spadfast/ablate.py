"""``spadfast ablate``: train SPAD and its ablations on one split with one budget, evaluate each, tabulate.

Variants (names are stable; tables and tests use them):

- ``SPAD``: the base config (preset plus overrides) unchanged.
- ``w/o ScD``: ``perturb.scd_max = 0``.
- ``w/o BcD``: ``perturb.bcd_max = perturb.blur_sigma_max = perturb.band_radius_max = 0``.
- ``baseline``: ``perturb.enabled = False`` (plain conditional diffusion on clean masks).
- ``PaS <kind>``: ``perturb.pas_kind = <kind>`` for every PaS kind other than the base config's.
- ``<mode> mode``: ``perturb_mode = <mode>`` for the perturb mode other than the base config's (``condition mode``
  when the base is ``target``).

Every variant trains with the same data split, the same seeds ``seed, seed+1, ...`` and the same step budget, then
predicts the held-out images (:func:`spadfast.predict.predict_folder`) and scores them
(:func:`spadfast.evaluate.evaluate_folders`).

Layout of ``OUT``::

    OUT/settings.json                 what OUT was made with (a rerun with other settings is a ValueError)
    OUT/split.json                    the held-out split's file lists (fixed once written)
    OUT/data/train/{images,masks}/    the training split (copies; only without --val)
    OUT/data/val/{images,masks}/      held-out images (copies) and masks (0/255 PNG, named <stem>.png)
    OUT/runs/<slug>/seed<k>/          one run: checkpoint.safetensors, log.jsonl, pred/, metrics.json (done marker)
    OUT/ablation.md, ablation.json, ablation.png

The held-out split is also each trainer's validation data (``val_dice`` in ``log.jsonl``): monitoring only, no
checkpoint selection or early stopping, so the held-out scores are not tuned on it.

Resuming: a run whose ``metrics.json`` exists is skipped; a run with a checkpoint but no ``metrics.json`` continues
from the checkpoint (``SPADTrainer.from_checkpoint``; checkpoints are written every ``checkpoint_every`` steps).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["VARIANTS_CORE", "variant_overrides", "run_ablation", "aggregate", "format_markdown", "add_arguments",
           "main"]

VARIANTS_CORE = ("SPAD", "w/o ScD", "w/o BcD", "baseline")
SPLIT_FILE = "split.json"
SETTINGS_FILE = "settings.json"
DONE_FILE = "metrics.json"
METRICS = ("dice", "iou", "hd95")
# Config keys that may differ between a run and a rerun without invalidating it.
_FREE_KEYS = ("device", "progress_bar", "num_workers", "checkpoint_every", "log_every")


def variant_overrides(base: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Variant name -> config overrides (nested ``perturb`` dict), in table order, for a base config dict.

    Example:
        >>> from spadfast.config import SPADConfig
        >>> list(variant_overrides(SPADConfig().to_dict()))
        ['SPAD', 'w/o ScD', 'w/o BcD', 'baseline', 'PaS linear', 'PaS step', 'condition mode']
    """
    from .config import PERTURB_MODES
    from .schedule import PROGRESS_KINDS

    out: dict[str, dict[str, Any]] = {
        "SPAD": {},
        "w/o ScD": {"perturb": {"scd_max": 0.0}},
        "w/o BcD": {"perturb": {"bcd_max": 0.0, "blur_sigma_max": 0.0, "band_radius_max": 0}},
        "baseline": {"perturb": {"enabled": False}},
    }
    for kind in PROGRESS_KINDS:
        if kind != base["perturb"]["pas_kind"]:
            out[f"PaS {kind}"] = {"perturb": {"pas_kind": kind}}
    for mode in PERTURB_MODES:
        if mode != base["perturb_mode"]:
            out[f"{mode} mode"] = {"perturb_mode": mode}
    return out


def slug(name: str) -> str:
    """Folder name of a variant: ``"w/o ScD"`` -> ``"wo-scd"``, ``"PaS linear"`` -> ``"pas-linear"``."""
    s = re.sub(r"[^a-z0-9]+", "-", name.lower().replace("/", "")).strip("-")
    if not s:
        raise ValueError(f"variant name {name!r} has no letters or digits")
    return s


def _merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in changes.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _normalized(cfg: dict[str, Any]) -> dict[str, Any]:
    """A config dict in a JSON-stable form (tuples as lists), without the keys a rerun may change.

    Keys a newer spadfast added are filled with their defaults (what older runs did), so an upgrade does not
    invalidate finished runs unless it changed a default.
    """
    from .config import SPADConfig

    d = json.loads(json.dumps(SPADConfig.from_dict(dict(cfg)).to_dict()))
    for k in _FREE_KEYS:
        d.pop(k, None)
    return d


def _config_mismatch(saved: dict[str, Any], wanted: dict[str, Any]) -> str | None:
    """None when ``saved`` (a config dict read back from a run) trains like ``wanted``, else the reason."""
    try:
        a = _normalized(saved)
    except (ValueError, TypeError) as e:
        return f"its config cannot be read by this spadfast ({e})"
    b = _normalized(wanted)
    for key in sorted(set(a) | set(b)):
        if a.get(key) != b.get(key):
            return f"`{key}` is {json.dumps(a.get(key))} there but {json.dumps(b.get(key))} here"
    return None


# ------------------------------------------------------------------------------------------------------- split


def _pairs(folder: Path) -> tuple[dict[str, Path], dict[str, Path]]:
    from .files import index_folder

    images, masks = index_folder(folder / "images"), index_folder(folder / "masks")
    if not images:
        raise ValueError(f"{folder / 'images'} holds no images (PNG/JPEG/TIFF/BMP)")
    for stem, p in images.items():
        if stem not in masks:
            raise ValueError(f"{p} has no mask in {folder / 'masks'}")
    for stem, p in masks.items():
        if stem not in images:
            raise ValueError(f"{p} has no image in {folder / 'images'}")
    return images, masks


def make_split(stems: Sequence[str], val_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """A seeded split of ``stems``: ``(train, val)``, each sorted; ``val`` holds ``round(fraction * n)`` (>= 1).

    Example:
        >>> make_split(["a", "b", "c", "d"], 0.25, seed=0)
        (['a', 'b', 'd'], ['c'])
    """
    stems = sorted(stems)
    if not 0 < val_fraction < 1:
        raise ValueError(f"`val_fraction` must lie in (0, 1), got {val_fraction!r}")
    if len(stems) < 2:
        raise ValueError(f"a held-out split needs at least 2 image/mask pairs, got {len(stems)}")
    n_val = min(len(stems) - 1, max(1, round(val_fraction * len(stems))))
    perm = np.random.default_rng(seed).permutation(len(stems))
    val = sorted(stems[i] for i in perm[:n_val])
    train = sorted(set(stems) - set(val))
    return train, val


def prepare_split(
    data: Path, out: Path, val: Path | None, val_fraction: float, split_seed: int
) -> tuple[Path, Path, Path, dict[str, Any]]:
    """Fix the split in ``OUT/split.json`` (reused when present) and materialize it; returns
    ``(train_folder, val_images, val_masks, split)``. Held-out masks are rewritten as 0/255 ``<stem>.png``."""
    from .files import read_mask, write_mask_png, write_text_atomic

    images, masks = _pairs(data)
    split_path = out / SPLIT_FILE
    if val is not None:
        v_images, v_masks = _pairs(val)
        split = {"data": str(data), "val": str(val), "train": sorted(images), "heldout": sorted(v_images)}
    else:
        v_images, v_masks = images, masks
        train, held = make_split(list(images), val_fraction, split_seed)
        split = {"data": str(data), "val": None, "val_fraction": val_fraction, "split_seed": split_seed,
                 "train": train, "heldout": held}
    if split_path.is_file():
        saved = json.loads(split_path.read_text())
        if saved != split:
            raise ValueError(
                f"{split_path} holds another split (other data, --val or split settings, or the data folder "
                "changed): use a new --out, or delete that folder to start over"
            )
    root = out / "data"
    if val is None:
        train_dir = root / "train"
        for stem in split["train"]:
            for src, sub in ((images[stem], "images"), (masks[stem], "masks")):
                dst = train_dir / sub / src.name
                if not dst.is_file():
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(src, dst)
        val_images = root / "val" / "images"
        for stem in split["heldout"]:
            dst = val_images / v_images[stem].name
            if not dst.is_file():
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(v_images[stem], dst)
    else:
        train_dir, val_images = data, val / "images"
    val_masks = root / "val" / "masks"
    for stem in split["heldout"]:
        dst = val_masks / f"{stem}.png"
        if not dst.is_file():
            write_mask_png(dst, read_mask(v_masks[stem]))
    if not split_path.is_file():
        write_text_atomic(split_path, json.dumps(split, indent=1))
    return train_dir, val_images, val_masks, split


# -------------------------------------------------------------------------------------------------------- runs


def _truncate_log(run: Path, log_file: str, step: int) -> None:
    """Drop log records past ``step`` (written after the last checkpoint of an interrupted run)."""
    from .files import write_text_atomic

    path = run / log_file
    if not path.is_file():
        return
    kept = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= step]
    write_text_atomic(path, "".join(line + "\n" for line in kept))


def train_and_evaluate(
    run: Path, cfg_dict: dict[str, Any], train_dir: Path, val_images: Path, val_masks: Path,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """One run: train (or resume) in ``run``, predict the held-out images into ``run/pred``, evaluate, and write
    ``run/metrics.json`` last (the done marker). Returns that file's content."""
    from .checkpoint import read_checkpoint, resolve_path
    from .config import SPADConfig
    from .evaluate import evaluate_folders
    from .files import write_text_atomic
    from .predict import predict_folder
    from .trainer import SPADTrainer

    cfg = SPADConfig.from_dict(cfg_dict)
    t0 = time.perf_counter()
    if resolve_path(run).is_file():
        _, meta = read_checkpoint(run)
        why = _config_mismatch(meta["config"], cfg_dict)
        if why:
            raise ValueError(f"checkpoint {str(resolve_path(run))!r} was trained with another config than this "
                             f"ablation asks for ({why}): use a new --out, or delete that run folder")
        trainer = SPADTrainer.from_checkpoint(run, train_dir, val_images.parent, out_dir=run, device=cfg.device)
        _truncate_log(run, cfg.log_file, trainer.step)
        log(f"resuming at step {trainer.step} of {cfg.train_steps}")
    else:
        if (run / cfg.log_file).is_file():
            (run / cfg.log_file).unlink()  # a run that died before its first checkpoint starts over
        trainer = SPADTrainer(cfg, train_dir, val_images.parent, out_dir=run)
    start_step = trainer.step
    trainer.fit()
    trainer.save(run)
    train_s = time.perf_counter() - t0
    pred = run / "pred"
    if pred.is_dir():
        shutil.rmtree(pred)
    predict_folder(trainer, val_images, pred, uncertainty=True)
    report = evaluate_folders(pred, val_masks)
    record = {
        "config": json.loads(json.dumps(cfg.to_dict())),
        "steps": trainer.step,
        "resumed_from": start_step,
        "train_seconds": train_s,
        "report": report,
    }
    write_text_atomic(run / DONE_FILE, json.dumps(record, indent=1))
    return record


def run_ablation(
    data: str | Path,
    out: str | Path,
    val: str | Path | None = None,
    preset: str = "cpu-small",
    seeds: int = 1,
    steps: int | None = None,
    overrides: dict[str, Any] | None = None,
    variants: Sequence[str] | None = None,
    val_fraction: float = 0.25,
    split_seed: int = 0,
    device: str | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train, evaluate and tabulate every variant for ``seeds`` seeds; returns :func:`aggregate`'s result.

    Args:
        data: folder with ``images/`` and ``masks/`` (the training data; also the held-out split without ``val``).
        out: output folder (see the module docstring); rerunning with the same arguments skips finished runs.
        val: held-out folder with ``images/`` and ``masks/``; default: ``round(val_fraction * n)`` pairs of
            ``data`` drawn with ``split_seed``, fixed in ``OUT/split.json``.
        preset: :meth:`SPADConfig.preset` name of the base config.
        seeds: runs per variant, with ``config.seed = base seed + k`` for k < seeds (shared by all variants).
        steps: training steps of every run (default: the preset's ``train_steps``).
        overrides: more base-config keys (e.g. a tiny model for tests); nested ``perturb`` dicts merge.
        variants: variant names or their folder slugs (``"w/o ScD"`` or ``"wo-scd"``), in table order (default:
            all of :func:`variant_overrides`).
        device: overrides the preset's device.

    Raises:
        ValueError: bad folders, unknown variant names, or ``OUT`` made with other settings (names the file).
    """
    from .config import SPADConfig
    from .files import write_text_atomic

    data, out = Path(data), Path(out)
    val = Path(val) if val is not None else None
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"`seeds` must be an int >= 1, got {seeds!r}")
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
        raise ValueError(f"`steps` must be an int >= 1, got {steps!r}")
    base = SPADConfig.preset(preset).to_dict()
    changes: dict[str, Any] = dict(overrides or {})
    if steps is not None:
        changes["train_steps"] = steps
    if device is not None:
        changes["device"] = device
    changes.setdefault("progress_bar", False)
    base = SPADConfig.from_dict(_merge(base, changes)).to_dict()
    if not base["checkpoint_every"]:
        base["checkpoint_every"] = max(1, min(250, base["train_steps"] // 4))
    table = variant_overrides(base)
    by_slug = {slug(n): n for n in table}
    names = list(table) if variants is None else [v if v in table else by_slug.get(v, v) for v in variants]
    unknown = [n for n in names if n not in table]
    if unknown:
        raise ValueError(f"unknown variant {unknown[0]!r}; variants: {', '.join(table)}")
    if not names:
        raise ValueError("`variants` must name at least one variant")

    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {str(out)!r} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    settings = {"preset": preset, "base_config": _normalized(base)}
    settings_path = out / SETTINGS_FILE
    if settings_path.is_file():
        saved = json.loads(settings_path.read_text())
        why = (f"preset {saved.get('preset')!r} there but {preset!r} here" if saved.get("preset") != preset
               else _config_mismatch(saved.get("base_config", {}), base))
        if why:
            raise ValueError(f"{settings_path} records another preset, step budget or config than this run asks "
                             f"for ({why}): use a new --out, or delete that folder to start over")
    elif any(p.name != "data" for p in out.iterdir()) and not (out / SPLIT_FILE).is_file():
        raise ValueError(f"--out {str(out)!r} is not empty and is not an ablation folder (no {SETTINGS_FILE})")
    train_dir, val_images, val_masks, split = prepare_split(data, out, val, val_fraction, split_seed)
    write_text_atomic(settings_path, json.dumps(settings, indent=1))

    records: dict[str, list[dict[str, Any]]] = {}
    for name in names:
        for k in range(seeds):
            seed = base["seed"] + k
            run = out / "runs" / slug(name) / f"seed{seed}"
            cfg = SPADConfig.from_dict(_merge(base, {**table[name], "seed": seed})).to_dict()
            done = run / DONE_FILE
            prefix = f"ablate: {name} seed {seed}"
            if done.is_file():
                record = json.loads(done.read_text())
                why = _config_mismatch(record["config"], cfg)
                if why:
                    raise ValueError(f"{done} was trained with another config than this ablation asks for ({why}):"
                                     " use a new --out, or delete that run folder")
                log(f"{prefix}: done already, skipped")
            else:
                log(f"{prefix}: training {cfg['train_steps']} steps in {run}")
                record = train_and_evaluate(run, cfg, train_dir, val_images, val_masks,
                                            log=lambda m, p=prefix: log(f"{p}: {m}"))
                mean = record["report"]["mean"]
                log(f"{prefix}: Dice {mean['dice']:.4f}, IoU {mean['iou']:.4f}, HD95 {mean['hd95']:.3f} "
                    f"({record['train_seconds']:.0f} s)")
            records.setdefault(name, []).append({
                "seed": seed, "run": str(run.relative_to(out)), "mean": record["report"]["mean"],
                "case_dice": {c["name"]: c["dice"] for c in record["report"]["cases"]},
                "train_seconds": record["train_seconds"],
            })
    result = aggregate(records)
    result.update({"preset": preset, "train_steps": base["train_steps"], "seeds": seeds,
                   "n_train": len(split["train"]), "n_heldout": len(split["heldout"]),
                   "data": str(data), "val": str(val) if val is not None else None,
                   "out": str(out), "val_images": str(val_images), "val_masks": str(val_masks)})
    write_text_atomic(out / "ablation.json", json.dumps(result, indent=1))
    write_text_atomic(out / "ablation.md", format_markdown(result, table))
    try:
        from .plots import plot_ablation

        plot_ablation(result, out / "ablation.png")
    except ImportError:  # matplotlib missing: the table is the result, the plot a convenience
        log("ablate: matplotlib is not installed, no ablation.png")
    return result


# ---------------------------------------------------------------------------------------------------- summary


def _mean_std(values: list[float]) -> tuple[float, float]:
    a = np.asarray(values, dtype=np.float64)
    if not np.isfinite(a).all():
        return (math.nan, math.nan) if np.isnan(a).any() else (math.inf, math.nan)
    return float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else math.nan


def aggregate(records: dict[str, list[dict[str, Any]]], reference: str = "SPAD") -> dict[str, Any]:
    """Summarize runs per variant.

    Args:
        records: variant -> runs ``{"seed", "mean": {"dice", "iou", "hd95"}[, "case_dice": {name: dice}]
            [, "train_seconds"]}``.
        reference: the variant the paired differences are taken against.

    Returns:
        ``{"rows": [...], "best": {metric: [variants]}}``. Each row holds the mean and sample std (ddof 1; NaN for
        one seed) over seeds of each run's mean Dice, IoU and HD95, the mean training time, and ``d_dice`` /
        ``d_dice_se``: the mean per-case Dice difference to ``reference`` over the cases and seeds both ran
        (paired on the same held-out case and seed) and its standard error over those pairs (NaN where there
        are none; it reflects case-to-case spread, not seed-to-seed spread). Best: max Dice/IoU, min HD95; ties
        at 4 decimals all count as best.
    """
    rows = []
    ref = {r["seed"]: r.get("case_dice", {}) for r in records.get(reference, [])}
    for name, runs in records.items():
        row: dict[str, Any] = {"variant": name, "seeds": [r["seed"] for r in runs], "runs": runs}
        for m in METRICS:
            row[m], row[f"{m}_std"] = _mean_std([r["mean"][m] for r in runs])
        times = [r["train_seconds"] for r in runs if "train_seconds" in r]
        row["train_seconds"] = float(np.mean(times)) if times else math.nan
        diffs = [d - ref[r["seed"]][c] for r in runs if r["seed"] in ref
                 for c, d in r.get("case_dice", {}).items() if c in ref[r["seed"]]]
        a = np.asarray(diffs, dtype=np.float64)
        row["d_dice"] = float(a.mean()) if a.size and name != reference else math.nan
        row["d_dice_se"] = float(a.std(ddof=1) / np.sqrt(a.size)) if a.size > 1 and name != reference else math.nan
        rows.append(row)
    best: dict[str, list[str]] = {}
    for m in METRICS:
        vals = [(r["variant"], r[m]) for r in rows if not math.isnan(r[m])]
        if not vals:
            best[m] = []
            continue
        target = (max if m != "hd95" else min)(v for _, v in vals)
        best[m] = [n for n, v in vals if _fmt(v) == _fmt(target)]
    return {"rows": rows, "best": best, "reference": reference}


def _fmt(v: float, digits: int = 4) -> str:
    if math.isnan(v):
        return "n/a"
    return "inf" if math.isinf(v) else f"{v:.{digits}f}"


def format_markdown(result: dict[str, Any], table: dict[str, dict[str, Any]] | None = None) -> str:
    """``ablation.md``: one row per variant, mean ± std over seeds, the best value of each column in bold."""
    lines = [
        "# spadfast ablation",
        "",
        f"Preset `{result.get('preset')}`, {result.get('train_steps')} training steps per run, "
        f"{result.get('seeds')} seed(s) per variant; {result.get('n_train')} training pairs, "
        f"{result.get('n_heldout')} held-out pairs"
        + (f" (`{result['val']}`)." if result.get("val") else " (a seeded split of the data, `split.json`)."),
        "Values: mean over seeds of each run's mean over held-out cases; ± the sample std over seeds (none for "
        "one seed). HD95 in pixels, `inf` when some case has exactly one empty mask. Best of each column in bold. "
        f"ΔDice: mean per-case Dice difference to {result.get('reference', 'SPAD')} on the same held-out cases and "
        "seeds, ± its standard error over those pairs (case-to-case spread only; seed-to-seed spread is in the ± "
        "of the Dice column when there are several seeds). Train: mean seconds per run.",
        "",
        f"| Variant | Change from {result.get('reference', 'SPAD')} | Dice ↑ | IoU ↑ | HD95 ↓ | ΔDice | Train (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        change = _describe(table.get(row["variant"], {})) if table else ""
        cells = []
        for m in METRICS:
            text = _fmt(row[m]) + ("" if math.isnan(row[f"{m}_std"]) else f" ± {_fmt(row[f'{m}_std'])}")
            cells.append(f"**{text}**" if row["variant"] in result["best"].get(m, []) else text)
        d = row.get("d_dice", math.nan)
        delta = "—" if math.isnan(d) else f"{d:+.4f}" + (
            "" if math.isnan(row.get("d_dice_se", math.nan)) else f" ± {row['d_dice_se']:.4f}")
        cells += [delta, _fmt(row.get("train_seconds", math.nan), 0)]
        lines.append(f"| {row['variant']} | {change} | " + " | ".join(cells) + " |")
    first = result["rows"][0]["runs"][0].get("run") if result["rows"] and result["rows"][0].get("runs") else None
    if first and result.get("out"):
        run = f"{result['out']}/{first}"
        lines += [
            "",
            f"Each run keeps its checkpoint, `log.jsonl` and held-out predictions (with uncertainty maps) in "
            f"`{result['out']}/runs/<variant>/seed<k>/`. A report of one run, e.g.:",
            "",
            f"    spadfast evaluate --pred {run}/pred --gt {result['val_masks']} --images {result['val_images']} "
            f"--run {run} --report {run}/report",
        ]
    return "\n".join(lines) + "\n"


def _describe(changes: dict[str, Any], prefix: str = "") -> str:
    if not changes:
        return "—"
    parts = []
    for k, v in changes.items():
        if isinstance(v, dict):
            parts.append(_describe(v, f"{prefix}{k}."))
        else:
            parts.append(f"`{prefix}{k}={json.dumps(v)}`")
    return ", ".join(parts)


# -------------------------------------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``spadfast ablate``."""
    parser.add_argument("--data", type=Path, required=True, help="folder with images/ and masks/")
    parser.add_argument("--val", type=Path, help="held-out folder with images/ and masks/ (default: a seeded "
                        "split of --data, fixed in OUT/split.json)")
    parser.add_argument("--out", type=Path, required=True, help="ablation folder (rerun to resume)")
    parser.add_argument("--preset", default="cpu-small", help="SPADConfig preset (default: cpu-small)")
    parser.add_argument("--seeds", type=int, default=1, help="runs per variant (default: 1)")
    parser.add_argument("--steps", type=int, help="training steps per run (default: the preset's)")
    parser.add_argument("--variants", nargs="+", metavar="NAME",
                        help="only these variants, by name or slug: SPAD wo-scd wo-bcd baseline pas-linear pas-step "
                        "condition-mode (default: all)")
    parser.add_argument("--val-fraction", type=float, default=0.25, help="held-out fraction without --val")
    parser.add_argument("--split-seed", type=int, default=0, help="seed of the held-out split without --val")
    parser.add_argument("--device", help="cpu, cuda or auto (default: the preset's)")


def main(args: argparse.Namespace) -> int:
    """Handler of ``spadfast ablate``: runs :func:`run_ablation` and prints the table."""
    run_ablation(args.data, args.out, val=args.val, preset=args.preset, seeds=args.seeds, steps=args.steps,
                 variants=args.variants, val_fraction=args.val_fraction, split_seed=args.split_seed,
                 device=args.device)
    print((Path(args.out) / "ablation.md").read_text(), end="")
    return 0
