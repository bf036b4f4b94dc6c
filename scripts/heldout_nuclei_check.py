"""Issue 31's last check, on nuclei the diffusion study never saw: is the chosen diffusion setting no worse than the
supervised network of the same encoder, and are 10 DDIM steps no worse than 1?

    python scripts/heldout_nuclei_check.py prepare --out CHECK    # training tiles and held-out slices (stardist wheel)
    python scripts/heldout_nuclei_check.py run --out CHECK        # seeds x (chosen variant, supervised), 3000 steps
    python scripts/heldout_nuclei_check.py evaluate --out CHECK   # whole slices, sliding windows, keyed noise
    python scripts/heldout_nuclei_check.py collect --out CHECK    # scored runs into docs/diffusion_study/heldout_cells
    python scripts/heldout_nuclei_check.py report                 # docs/diffusion_study/heldout_nuclei.md from them

Data: training = the whole DSB2018 image of the study (stardist 0.9.2 wheel) with the study's noisy annotation
(``spad_study.noisy_annotation``, seed 0), cut into 32x32 tiles at stride 16 (the study's tiles, from every row);
held-out = the z-slices of the wheel's *other* nuclei sample (``img3d.tif``/``mask3d.tif``: 31 slices of 61x57,
another microscope), each slice holding a nucleus, stretched to 8 bits between its 1st and 99.8th percentiles (the
study's images are 8-bit), clean masks (``mask3d > 0``). No held-out slice is in the study.

Arms: the study's default once its registered rule has decided it (``diffusion_study_report.default_decision`` on
the committed cells), until then the pilot's best variant and setting (``docs/diffusion_study/choice.json``), with
the study's config for the variant; and ``supervised``; seeds 0..SEEDS-1, the training run as the unit. The variant
is scored at that setting and at 1 and 10 steps (the setting's members and fusion); supervised in one pass. A run
scored at another setting (the default decided after it was evaluated) is scored again. The report gives the paired
differences with 95 % t-intervals beside Otsu and a tuned intensity threshold, from the committed cells (each with
the commit it trained and was scored at), so a run folder lost with its machine loses no result.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
import diffusion_study as study  # noqa: E402
import spad_study  # noqa: E402

SEEDS, TILE, STRIDE = 4, 32, 16
EVAL_FILE = "heldout_eval.json"
PAGE = ROOT / "docs" / "diffusion_study" / "heldout_nuclei.md"
HELDOUT_CELLS = ROOT / "docs" / "diffusion_study" / "heldout_cells"  # this check's committed cells
CELLS_ROOT = ROOT / "docs" / "diffusion_study" / "cells"  # the study's committed cells: its default comes from them


def stretch_to_uint8(plane: np.ndarray, low: float = 1.0, high: float = 99.8) -> np.ndarray:
    """``plane`` (any real dtype ``[H,W]``) linearly mapped from its ``low``/``high`` percentiles to 0..255, uint8."""
    lo, hi = np.percentile(plane.astype(np.float64), [low, high])
    scaled = (plane.astype(np.float64) - lo) / max(hi - lo, 1e-9) * 255
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def heldout_slices(wheel: Path) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The held-out images (uint8 ``[61,57]``) and masks (bool) of the wheel's 3-D nuclei sample, one per z-slice
    holding a nucleus."""
    import tifffile

    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        members = [f"stardist/data/images/{n}.tif" for n in ("img3d", "mask3d")]
        missing = [m for m in members if m not in names]
        if missing:
            raise ValueError(f"{wheel}: holds no {missing[0]} (the stardist 0.9.2 wheel?)")
        image, labels = (tifffile.imread(io.BytesIO(z.read(m))) for m in members)
    if image.shape != labels.shape or image.ndim != 3:
        raise ValueError(f"{wheel}: img3d {image.shape} and mask3d {labels.shape} must be one 3-D grid")
    keep = [k for k in range(image.shape[0]) if (labels[k] > 0).any()]
    return [stretch_to_uint8(image[k]) for k in keep], [labels[k] > 0 for k in keep]


def prepare(out: Path, wheel: Path | None) -> None:
    """``out/train/{images,masks}`` (tiles of the noisy-annotated study image) and ``out/test/{images,masks}``
    (the held-out slices), plus ``out/baselines.json`` (Otsu, tuned threshold)."""
    from spadfast.evaluation.baselines import trivial_baselines

    if (out / "done").is_file():
        return
    image, labels = spad_study._dsb(wheel, out / "source")
    wheel = wheel or next((out / "source").glob("stardist-0.9.2-*.whl"))
    noisy = spad_study.noisy_annotation(labels, seed=0)
    tiles, tile_masks = [], []
    for y in range(0, image.shape[0] - TILE + 1, STRIDE):
        for x in range(0, image.shape[1] - TILE + 1, STRIDE):
            tile, mask = image[y:y + TILE, x:x + TILE], noisy[y:y + TILE, x:x + TILE]
            spad_study._write_pair(out / "train", f"y{y:03d}_x{x:03d}", tile, mask)
            tiles.append(tile)
            tile_masks.append(mask)
    test_images, test_masks = heldout_slices(wheel)
    for k, (im, m) in enumerate(zip(test_images, test_masks)):
        spad_study._write_pair(out / "test", f"slice{k:02d}", im, m)
    baselines = trivial_baselines(tiles, tile_masks, test_images, test_masks)
    (out / "baselines.json").write_text(json.dumps(baselines, indent=1))
    (out / "done").write_text("")
    print(f"prepared {len(tiles)} training tiles and {len(test_images)} held-out slices in {out}")


def chosen(choice_file: Path | None = None) -> tuple[str, tuple[int, int, str]]:
    """The pilot's best variant and its setting ``(steps, members, fusion)``; ValueError before the pilot chose."""
    path = study.CHOICE_FILE if choice_file is None else choice_file
    choice = json.loads(path.read_text()) if path.is_file() else {}
    best = choice.get("best_variant")
    if not best:
        raise ValueError(f"{path} records no best_variant yet: this check runs after the pilot's choice")
    s = choice["settings"][best]
    return best, (int(s["steps"]), int(s["members"]), str(s["fusion"]))


def target(choice_file: Path | None = None, cells_root: Path | None = None
           ) -> tuple[str, tuple[int, int, str], str]:
    """``(variant, (steps, members, fusion), source)``: the study's default when its rule has decided one from the
    cells under ``cells_root`` (default ``CELLS_ROOT``), else the pilot's choice (:func:`chosen`);
    ``source`` says which, for the page."""
    import diffusion_study_report as rep

    variant, setting = chosen(choice_file)
    cells_root = CELLS_ROOT if cells_root is None else cells_root
    path = study.CHOICE_FILE if choice_file is None else choice_file
    decision = rep.default_decision(rep.load(cells_root), json.loads(path.read_text())) if cells_root.is_dir() \
        else {"status": "waiting"}
    if decision["status"] == "decided":
        d = decision["default"]
        return d["variant"], tuple(d["setting"]), "the study's default (its registered rule)"
    return variant, setting, "the pilot's choice (the study has not decided its default yet)"


def run(out: Path, seeds: int, steps: int | None, log=print) -> None:
    """Train the :func:`target` variant and supervised for ``seeds`` seeds (resumable)."""
    from spadfast.io.files import write_text_atomic
    from spadfast.study.ablate import DONE_FILE, slug, train_and_evaluate

    variant, _, _ = target()
    extra = {"train_steps": steps} if steps else None
    for seed in range(seeds):
        for arm in (variant, "supervised"):
            run_dir = out / "runs" / slug(arm) / f"seed{seed}"
            if (run_dir / DONE_FILE).is_file() and (run_dir / study.CELL_FILE).is_file():
                continue
            cfg = study.run_config(arm, seed, extra=extra)
            started = study._commit()
            log(f"[{arm} seed{seed}] training {cfg['train_steps']} steps at {started['commit']}")
            record = train_and_evaluate(run_dir, cfg, out / "train", out / "test" / "images", out / "test" / "masks",
                                        log=lambda m, tag=f"[{arm} seed{seed}]": log(f"{tag} {m}"))
            write_text_atomic(run_dir / study.CELL_FILE, json.dumps({
                "variant": arm, "seed": seed, "steps": cfg["train_steps"], "started_at": started,
                "finished_at": study._commit(), "train_seconds": record["train_seconds"]}, indent=1))


def evaluate(out: Path, log=print) -> int:
    """Score each trained run on the whole held-out slices: the variant at its setting and at 1 and 10 steps,
    supervised in one pass."""
    import torch

    from spadfast.io.files import write_text_atomic
    from spadfast.study import grid_eval

    torch.set_num_threads(1)
    _, (steps, members, fusion), _ = target()
    code, n = study._commit(), 0
    for cell_file in sorted((out / "runs").glob(f"*/seed*/{study.CELL_FILE}")):
        run_dir = cell_file.parent
        supervised = json.loads(cell_file.read_text())["variant"] == "supervised"
        setting = None if supervised else [steps, members, fusion]
        if (run_dir / EVAL_FILE).is_file() and json.loads((run_dir / EVAL_FILE).read_text()).get(
                "setting") == setting:
            continue
        kwargs: dict[str, Any] = dict(steps=(1,), ensembles=(1,)) if supervised else dict(
            steps=tuple(sorted({1, 10, steps})), ensembles=(members,), fusions=(fusion,))
        t0 = time.perf_counter()
        grid = grid_eval.evaluate_checkpoint(run_dir, out / "test" / "images", out / "test" / "masks",
                                             whole_image=True, tile=TILE, **kwargs)
        write_text_atomic(run_dir / EVAL_FILE, json.dumps({"grid": grid, "seconds": time.perf_counter() - t0,
                                                           "evaluated_at": code, "setting": setting}))
        log(f"evaluated {run_dir}")
        n += 1
    return n


def collect(out: Path, dest: Path = HELDOUT_CELLS) -> int:
    """Each scored run to ``dest/<variant>/seed<s>.json`` (the run's cell: variant, seed, commits, training seconds;
    its setting, scoring commit and seconds; per grid row the mean scores and each slice's Dice) and the trivial
    baselines to ``dest/baselines.json``; returns how many runs."""
    from spadfast.study.ablate import slug

    dest.mkdir(parents=True, exist_ok=True)
    (dest / "baselines.json").write_text((out / "baselines.json").read_text())
    n = 0
    for cell_file in sorted((out / "runs").glob(f"*/seed*/{study.CELL_FILE}")):
        run_dir = cell_file.parent
        if not (run_dir / EVAL_FILE).is_file():
            continue
        cell, scored = json.loads(cell_file.read_text()), json.loads((run_dir / EVAL_FILE).read_text())
        grid = [{"steps": int(r["steps"]), "ensemble": int(r["ensemble"]),
                 "step_fusion": r.get("step_fusion", "none"), "mean": r["mean"],
                 "dice": {c["name"]: c["dice"] for c in r["cases"]}} for r in scored["grid"]]
        target_file = dest / slug(cell["variant"]) / f"seed{cell['seed']}.json"
        target_file.parent.mkdir(parents=True, exist_ok=True)
        target_file.write_text(json.dumps({**cell, "setting": scored["setting"], "evaluated_at": scored["evaluated_at"],
                                           "eval_seconds": round(scored["seconds"], 1), "grid": grid}, indent=1))
        n += 1
    return n


def _dice(cell: dict[str, Any], steps: int, members: int = 1, fusion: str = "none") -> float | None:
    """The cell's mean Dice at one grid row, None when it was not scored there."""
    return next((float(r["mean"]["dice"]) for r in cell["grid"] if (r["steps"], r["ensemble"], r["step_fusion"])
                 == (steps, members, fusion)), None)


def report(cells_root: Path = HELDOUT_CELLS, page: Path = PAGE) -> str:
    """The check's page from the committed cells: per seed Dice, the paired differences with 95 % t-intervals, the
    commits, the trivial baselines."""
    from spadfast.study.ablate import slug
    from spadfast.study.stats import t_interval, verdict

    variant, (steps, members, fusion), source = target()
    rows, diff_sup, diff_steps, commits, budgets = [], [], [], set(), set()
    dice_at, dice_sup = [], []
    for seed in range(SEEDS):
        files = (cells_root / slug(variant) / f"seed{seed}.json", cells_root / "supervised" / f"seed{seed}.json")
        if not all(f.is_file() for f in files):
            continue
        v, s = (json.loads(f.read_text()) for f in files)
        at, one, ten = (_dice(v, k, members, fusion) for k in (steps, 1, 10))
        sup = _dice(s, 1)
        if None in (at, one, ten, sup):
            continue  # scored at another setting than the one this page reports: evaluate again
        rows.append(f"| {seed} | {at:.4f} | {one:.4f} | {ten:.4f} | {sup:.4f} |")
        diff_sup.append(at - sup)
        diff_steps.append(ten - one)
        dice_at.append(at)
        dice_sup.append(sup)
        for c in (v, s):
            budgets.add(str(c.get("steps", "?")))
            commits.add(f"trained at {c['started_at']['commit']}, scored at {c['evaluated_at']['commit']}")
    baselines = json.loads((cells_root / "baselines.json").read_text()) if (cells_root / "baselines.json").is_file() \
        else {}
    lines = ["# Held-out nuclei check (issue 31)", "",
             "<!-- Generated by `python scripts/heldout_nuclei_check.py report` from docs/diffusion_study/"
             "heldout_cells; do not edit. -->", "",
             __doc__.split("\n\n")[0].replace("\n", " "), "",
             f"Variant: **{variant}** at {steps} steps x {members} members, fusion {fusion} ({source}); "
             f"trained on the study image's noisy annotation ({'/'.join(sorted(budgets)) or '?'} steps, the study's "
             "config), scored on the "
             "z-slices of the stardist wheel's 3-D nuclei sample (another microscope; clean masks), each slice "
             "whole. The training run is the unit; differences pair runs of the same seed.", "",
             "| seed | variant at its setting | 1 step | 10 steps | supervised |", "|---|---|---|---|---|", *rows, ""]
    for label, diffs in (("variant at its setting minus supervised", diff_sup), ("10 steps minus 1 step", diff_steps)):
        mean, lo, hi = t_interval(diffs)
        # the criterion ("no worse"): the interval's lower end at or above -0.003, as in the study's rule
        text = (f"{mean:+.4f} [{lo:+.4f}, {hi:+.4f}] (n={len(diffs)}), {verdict(lo, hi, 0.003)}; no worse (lower end "
                f">= -0.003): {'yes' if lo >= -0.003 else '**not shown**'}"
                if len(diffs) >= 2 else f"not evaluated ({len(diffs)} of {SEEDS} seeds)")
        lines.append(f"- {label}: {text}")
    means = {"variant": float(np.mean(dice_at)), "supervised": float(np.mean(dice_sup))} if rows else {}
    beaten = [k for k, v in baselines.items() if means and v > max(means.values())]
    lines += ["", "Trivial baselines on the same slices: "
              + (", ".join(f"{k} {v:.4f}" for k, v in baselines.items()) or "not collected yet")
              + (f". **{' and '.join(beaten)} scored above both models' mean Dice** (variant {means['variant']:.4f}, "
                 "supervised " f"{means['supervised']:.4f}): on this other microscope's slices neither network "
                 "trained on the study image beats a per-image threshold." if beaten else ""), "",
              "Runs: " + ("; ".join(sorted(commits)) or "none collected yet") + " (one CPU thread each, the project's "
              "2-core machine).", ""]
    text = "\n".join(lines)
    page.write_text(text)
    return text


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("step", choices=["prepare", "run", "evaluate", "collect", "report"])
    p.add_argument("--out", type=Path, default=Path("heldout_nuclei"))
    p.add_argument("--stardist-wheel", type=Path)
    p.add_argument("--seeds", type=int, default=SEEDS)
    p.add_argument("--dest", type=Path, default=HELDOUT_CELLS, help="the committed cells (collect writes, report reads)")
    p.add_argument("--steps", type=int, help="training steps (default: the study's; smaller only for a smoke test)")
    args = p.parse_args(argv)
    if args.step == "prepare":
        prepare(args.out, args.stardist_wheel)
    elif args.step == "run":
        run(args.out, args.seeds, args.steps)
    elif args.step == "evaluate":
        evaluate(args.out)
    elif args.step == "collect":
        print(f"collected {collect(args.out, args.dest)} scored runs into {args.dest}")
    else:
        print(report(args.dest))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
