"""``spadfast ablate``: train SPAD and its ablations on one split with one budget, evaluate each, tabulate.

Variants (names are stable; tables and tests use them):

- ``SPAD``: the base config (preset plus overrides) unchanged.
- ``w/o ScD``: ``perturb.scd = False`` (BcD alone).
- ``w/o BcD``: ``perturb.bcd = False`` (ScD alone).
- ``baseline``: ``perturb.enabled = False`` (plain conditional diffusion on clean masks).
- ``PaS <kind>``: ``perturb.pas_kind = <kind>`` for every PaS kind other than the base config's.
- ``<mode> mode``: ``perturb_mode = <mode>`` for each perturb mode other than the base config's.
- ``SPAD input``: ``perturb_mode = "input"`` on half of each batch (``perturb_prob = 0.5``): x_t from the perturbed
  mask, clean target.
- ``DDPM-IP``: perturbation off, ``input_gamma = 0.1`` (Ning et al. 2023: noise added to the noise that builds x_t).
- ``SPAD no-fade`` / ``SPAD input no-fade``: the PaS horizon is twice the run (``pas_steps = 2 * train_steps``), so
  the perturbation never reaches 0.
- ``structured``: SPAD input with corruptions that survive the forward noise: ScD erases cells (``scd_kind =
  "erase"``), objects dilated/eroded by up to 2 px, contours warped by up to 1.5 px, one spurious blob per mask on
  average (:mod:`spadfast.diffusion.structured_perturb`).
- ``supervised``: not diffusion: the same network, one forward pass, BCE + Dice (``objective = "supervised"``).

Every variant trains with the same data split, the same seeds ``seed, seed+1, ...`` and the same step budget, then
predicts the held-out images (:func:`spadfast.infer.segmenter.predict_folder`) and scores them
(:func:`spadfast.evaluation.evaluate.evaluate_folders`).

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
import re
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..ops.checks import check_int
from .ablation_stats import aggregate, format_markdown
from .split import SPLIT_FILE, plan_split, write_split

__all__ = ["VARIANTS_CORE", "variant_overrides", "run_ablation", "add_arguments",
           "main"]

VARIANTS_CORE = ("SPAD", "w/o ScD", "w/o BcD", "baseline")
SETTINGS_FILE = "settings.json"
DONE_FILE = "metrics.json"
STUDY_FILE = "study_eval.json"  # --sample-steps x --ensembles scores of a run (spadfast.study.grid_eval)
# Config keys that may differ between a run and a rerun without invalidating it.
_FREE_KEYS = ("device", "progress_bar", "num_workers", "checkpoint_every", "log_every")


def variant_overrides(base: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Variant name -> config overrides (nested ``perturb`` dict), in table order, for a base config dict.

    Example:
        >>> from spadfast.config import SPADConfig
        >>> list(variant_overrides(SPADConfig().to_dict()))  # doctest: +NORMALIZE_WHITESPACE
        ['SPAD', 'w/o ScD', 'w/o BcD', 'baseline', 'PaS linear', 'PaS step', 'input mode', 'condition mode',
         'SPAD input', 'DDPM-IP', 'SPAD no-fade', 'SPAD input no-fade', 'structured', 'supervised',
         'nnU-Net augmentation', 'SPAD input object-BcD']
    """
    from ..config import PERTURB_MODES
    from ..diffusion.schedule import PROGRESS_KINDS

    out: dict[str, dict[str, Any]] = {
        "SPAD": {},
        "w/o ScD": {"perturb": {"scd": False}},
        "w/o BcD": {"perturb": {"bcd": False}},
        "baseline": {"perturb": {"enabled": False}},
    }
    for kind in PROGRESS_KINDS:
        if kind != base["perturb"]["pas_kind"]:
            out[f"PaS {kind}"] = {"perturb": {"pas_kind": kind}}
    for mode in PERTURB_MODES:
        if mode != base["perturb_mode"]:
            out[f"{mode} mode"] = {"perturb_mode": mode}
    input_share = {"perturb_mode": "input", "perturb_prob": 0.5}
    no_fade = {"pas_steps": 2 * base["train_steps"]}
    out["SPAD input"] = input_share
    out["DDPM-IP"] = {"perturb": {"enabled": False}, "input_gamma": 0.1}
    out["SPAD no-fade"] = no_fade
    out["SPAD input no-fade"] = {**input_share, **no_fade}
    out["structured"] = {**input_share, "perturb": {"scd_kind": "erase", "morph_px": 2, "warp_px": 1.5,
                                                      "blob_count": 1.0}}
    out["supervised"] = {"objective": "supervised", "perturb": {"enabled": False}, "x0_loss_weight": 0.0}
    # the baseline with nnU-Net's 2-D augmentation (rotation, scaling, gamma, noise, blur) on top of the flips
    from dataclasses import asdict

    from ..data.augmentation import AugmentConfig

    out["nnU-Net augmentation"] = {"perturb": {"enabled": False}, "augment": asdict(AugmentConfig.nnunet())}
    out["SPAD input object-BcD"] = {**input_share, "perturb": {"bcd_object_frac": 0.5}}  # BcD scaled per object
    # the perturbation is off by default (the study's result): every SPAD variant turns it on itself
    off = {"baseline", "DDPM-IP", "supervised", "nnU-Net augmentation"}
    return {name: v if name in off else _merge({"perturb": {"enabled": True}}, v) for name, v in out.items()}


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
    from ..config import SPADConfig

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


# -------------------------------------------------------------------------------------------------------- runs


def _truncate_log(run: Path, log_file: str, step: int) -> None:
    """Drop log records past ``step`` (written after the last checkpoint of an interrupted run)."""
    from ..io.files import write_text_atomic

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
    from ..config import SPADConfig
    from ..evaluation.evaluate import evaluate_folders
    from ..infer.segmenter import predict_folder
    from ..io.files import write_text_atomic
    from ..models.checkpoint import read_checkpoint, resolve_path
    from ..train.trainer import SPADTrainer

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
    if trainer.stopped_by:  # fit saved this step; a truncated run must never be scored and recorded as done
        from ..runtime.preemption import Stopped

        raise Stopped(f"{run} stopped at step {trainer.step} of {cfg.train_steps} by {trainer.stopped_by}; its "
                      "checkpoint is saved: rerun the same command to resume it")
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


def _run_once(run: Path, cfg: dict[str, Any], train_dir: Path, val_images: Path, val_masks: Path, tag: str,
              log: Callable[[str], None]) -> dict[str, Any]:
    """One cell: read a finished run's record (refusing one trained with another config), or train it."""
    done = run / DONE_FILE
    if done.is_file():
        record = json.loads(done.read_text())
        why = _config_mismatch(record["config"], cfg)
        if why:
            raise ValueError(f"{done} was trained with another config than this ablation asks for ({why}):"
                             " use a new --out, or delete that run folder")
        log(f"{tag}: done already, skipped")
        return record
    log(f"{tag}: training {cfg['train_steps']} steps in {run}")
    record = train_and_evaluate(run, cfg, train_dir, val_images, val_masks, log=lambda m: log(f"{tag}: {m}"))
    mean = record["report"]["mean"]
    log(f"{tag}: Dice {mean['dice']:.4f}, IoU {mean['iou']:.4f}, HD95 {mean['hd95']:.3f} "
        f"({record['train_seconds']:.0f} s)")
    return record


def _study_eval(run: Path, val_images: Path, val_masks: Path, sample_steps: Sequence[int],
                ensembles: Sequence[int]) -> dict[str, dict[str, float]]:
    """``"<steps>x<members>" -> {case: dice}`` from ``run/study_eval.json`` (computed once per run and grid)."""
    from ..io.files import write_text_atomic
    from .grid_eval import evaluate_checkpoint

    path = run / STUDY_FILE
    grid = [[s, e] for s in sample_steps for e in ensembles]
    saved = json.loads(path.read_text()) if path.is_file() else None
    if saved is None or saved.get("grid") != grid:
        records = evaluate_checkpoint(run, val_images, val_masks, sample_steps, ensembles)
        saved = {"grid": grid, "records": records}
        write_text_atomic(path, json.dumps(saved))
    return {f"{r['steps']}x{r['ensemble']}": {c["name"]: c["dice"] for c in r["cases"]} for r in saved["records"]}


def _check_existing_out(out: Path, preset: str, base: dict[str, Any], folds: int = 0) -> None:
    """An existing ``OUT`` must be an ablation folder made with this preset, base config and folds (or empty)."""
    settings_path = out / SETTINGS_FILE
    if settings_path.is_file():
        saved = json.loads(settings_path.read_text())
        why = (f"preset {saved.get('preset')!r} there but {preset!r} here" if saved.get("preset") != preset
               else f"--folds {saved.get('folds', 0)} there but {folds} here" if saved.get("folds", 0) != folds
               else _config_mismatch(saved.get("base_config", {}), base))
        if why:
            raise ValueError(f"{settings_path} records another preset, step budget or config than this run asks "
                             f"for ({why}): use a new --out, or delete that folder to start over")
    elif any(p.name != "data" for p in out.iterdir()) and not (out / SPLIT_FILE).is_file():
        raise ValueError(f"--out {str(out)!r} is not empty and is not an ablation folder (no {SETTINGS_FILE})")


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
    config: str | Path | dict[str, Any] | None = None,
    folds: int = 0,
    sample_steps: Sequence[int] = (),
    ensembles: Sequence[int] = (1,),
) -> dict[str, Any]:
    """Train, evaluate and tabulate every variant for ``seeds`` seeds; returns :func:`aggregate`'s result.

    Args:
        data: folder with ``images/`` and ``masks/`` (the training data; also the held-out split without ``val``).
        out: output folder (see the module docstring); rerunning with the same arguments skips finished runs.
        val: held-out folder with ``images/`` and ``masks/``; default: ``round(val_fraction * n)`` pairs of
            ``data`` drawn with ``split_seed``, fixed in ``OUT/split.json``.
        preset: :meth:`SPADConfig.preset` name of the base config (ignored when ``config`` is given).
        seeds: runs per variant, with ``config.seed = base seed + k`` for k < seeds (shared by all variants).
        steps: training steps of every run (default: the preset's ``train_steps``).
        overrides: more base-config keys (e.g. a tiny model for tests); nested ``perturb`` dicts merge.
        variants: variant names or their folder slugs (``"w/o ScD"`` or ``"wo-scd"``), in table order (default:
            all of :func:`variant_overrides`).
        device: overrides the preset's device.
        config: the base config instead of a preset: a YAML/JSON file or a config dict.
        folds: 0 for one held-out split; n >= 2 runs every variant and seed on each of n folds (block k of the sorted
            stems held out, :func:`spadfast.study.split.fold_split`) in ``OUT/fold<k>/``; the paired statistics
            then take each (fold, seed) run as a unit.
        sample_steps, ensembles: also score every run at these DDIM step counts x ensemble sizes with noise keyed
            per image (:func:`spadfast.study.grid_eval.evaluate_checkpoint`), tabulated as paired ΔDice per pair.

    Raises:
        ValueError: bad folders, unknown variant names, or ``OUT`` made with other settings (names the file).
    """
    from ..config import SPADConfig
    from ..io.files import write_text_atomic

    data, out = Path(data), Path(out)
    val = Path(val) if val is not None else None
    seeds = check_int(seeds, "seeds", 1)
    steps = check_int(steps, "steps", 1, optional=True)
    if config is None:
        base = SPADConfig.preset(preset).to_dict()
    else:
        loaded = SPADConfig.from_dict(dict(config)) if isinstance(config, dict) else SPADConfig.from_file(config)
        base, preset = loaded.to_dict(), "config"  # the base config itself is recorded in OUT/settings.json
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
    from ..diffusion.training_inputs import check_perturb_mode

    for name in names:  # a variant the trainer would refuse stops the ablation before any run trains
        try:
            check_perturb_mode(SPADConfig.from_dict(_merge(base, table[name])))
        except ValueError as err:
            raise ValueError(f"ablation variant {name!r}: {err}") from None

    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {str(out)!r} exists and is not a folder")
    folds = check_int(folds, "folds", 0)
    if folds == 1 or (folds and val is not None):
        raise ValueError("--folds must be 0 (one held-out split) or >= 2, and cannot be combined with --val")
    sample_steps = [check_int(s, "sample_steps", 1) for s in sample_steps]
    ensembles = [check_int(e, "ensembles", 1) for e in ensembles]
    settings = {"preset": preset, "base_config": _normalized(base), "folds": folds}
    if out.is_dir():
        _check_existing_out(out, preset, base, folds)
    splits = [(out, None)] if not folds else [(out / f"fold{k}", (k, folds)) for k in range(folds)]
    plans = [plan_split(data, where, val, val_fraction, split_seed, fold) for where, fold in splits]
    out.mkdir(parents=True, exist_ok=True)  # every check passed before OUT is created
    write_text_atomic(out / SETTINGS_FILE, json.dumps(settings, indent=1))

    records: dict[str, list[dict[str, Any]]] = {}
    for (where, fold), plan in zip(splits, plans):
        where.mkdir(parents=True, exist_ok=True)
        train_dir, val_images, val_masks = write_split(plan, where, val)
        for name in names:
            for k in range(seeds):
                seed = base["seed"] + k
                run = where / "runs" / slug(name) / f"seed{seed}"
                cfg = SPADConfig.from_dict(_merge(base, {**table[name], "seed": seed})).to_dict()
                tag = f"ablate: {name} seed {seed}" + (f" fold {fold[0]}" if fold else "")
                record = _run_once(run, cfg, train_dir, val_images, val_masks, tag, log)
                entry = {"seed": seed, "run": str(run.relative_to(out)), "mean": record["report"]["mean"],
                         "case_dice": {c["name"]: c["dice"] for c in record["report"]["cases"]},
                         "train_seconds": record["train_seconds"]}
                if fold:
                    entry["fold"] = fold[0]
                if sample_steps:
                    entry["study"] = _study_eval(run, val_images, val_masks, sample_steps, ensembles)
                records.setdefault(name, []).append(entry)
    split = plans[0].split
    result = aggregate(records)
    result.update({"preset": preset, "train_steps": base["train_steps"], "seeds": seeds,
                   "n_train": len(split["train"]), "n_heldout": len(split["heldout"]),
                   "data": str(data), "val": str(val) if val is not None else None,
                   "out": str(out), "val_images": str(val_images), "val_masks": str(val_masks)})
    write_text_atomic(out / "ablation.json", json.dumps(result, indent=1))
    write_text_atomic(out / "ablation.md", format_markdown(result, table))
    try:
        from ..evaluation.plots import plot_ablation

        plot_ablation(result, out / "ablation.png")
    except ImportError:  # matplotlib missing: the table is the result, the plot a convenience
        log("ablate: matplotlib is not installed, no ablation.png")
    return result


# -------------------------------------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``spadfast ablate``."""
    parser.add_argument("--data", type=Path, required=True, help="folder with images/ and masks/")
    parser.add_argument("--val", type=Path, help="held-out folder with images/ and masks/ (default: a seeded "
                        "split of --data, fixed in OUT/split.json)")
    parser.add_argument("--out", type=Path, required=True, help="ablation folder (rerun to resume)")
    parser.add_argument("--preset", default="cpu-small", help="SPADConfig preset (default: cpu-small)")
    parser.add_argument("--config", type=Path, help="base config file (YAML/JSON) instead of --preset")
    parser.add_argument("--folds", type=int, default=0, help="n >= 2: every variant and seed on n folds of --data "
                        "(contiguous blocks of the sorted file names held out in turn); runs are the unit")
    parser.add_argument("--sample-steps", type=int, nargs="+", default=[], metavar="S",
                        help="also score every run at these DDIM step counts (e.g. 1 2 5 10 25)")
    parser.add_argument("--ensembles", type=int, nargs="+", default=[1], metavar="K",
                        help="ensemble sizes for --sample-steps (default: 1)")
    parser.add_argument("--seeds", type=int, default=1, help="runs per variant (default: 1)")
    parser.add_argument("--steps", type=int, help="training steps per run (default: the preset's)")
    parser.add_argument("--variants", nargs="+", metavar="NAME",
                        help="only these variants, by name or slug: SPAD wo-scd wo-bcd baseline pas-linear pas-step "
                        "input-mode condition-mode spad-input ddpm-ip spad-no-fade spad-input-no-fade structured supervised (default: all)")
    parser.add_argument("--val-fraction", type=float, default=0.25, help="held-out fraction without --val")
    parser.add_argument("--split-seed", type=int, default=0, help="seed of the held-out split without --val")
    parser.add_argument("--device", help="cpu, cuda or auto (default: the preset's)")


def main(args: argparse.Namespace) -> int:
    """Handler of ``spadfast ablate``: runs :func:`run_ablation` and prints the table; a stop signal ends it with
    :data:`spadfast.runtime.preemption.EXIT_STOPPED` and one line (the interrupted run resumes on the next call)."""
    from ..runtime.preemption import EXIT_STOPPED, Stopped

    try:
        run_ablation(args.data, args.out, val=args.val, preset=args.preset, seeds=args.seeds, steps=args.steps,
                     variants=args.variants, val_fraction=args.val_fraction, split_seed=args.split_seed,
                     device=args.device, config=args.config, folds=args.folds, sample_steps=args.sample_steps,
                     ensembles=args.ensembles)
    except Stopped as e:
        print(f"spadfast ablate: {e}", flush=True)
        return EXIT_STOPPED
    print((Path(args.out) / "ablation.md").read_text(), end="")
    return 0
