"""docs/spad_study.md from the collected cells (``docs/spad_study/cells``): every comparison as estimate [95 % CI]
with the training run (fold x seed) as the unit, per-run tables, a figure, the time it took.

Used by ``python scripts/spad_study.py report``; reads only the committed cells, so the page can be rebuilt anywhere.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from spadfast.study.stats import hierarchical_bootstrap, holm, t_interval, t_pvalue, unit_differences, verdict

STEPS = (1, 2, 5, 10, 25)
ENSEMBLES = (1, 5)
NAMES = {"baseline": "baseline", "spad": "SPAD (target)", "spad-input": "SPAD input", "ddpm-ip": "DDPM-IP",
         "spad-no-fade": "SPAD no-fade", "spad-input-no-fade": "SPAD input no-fade",
         "supervised": "supervised (not diffusion)", "structured": "structured (SPAD input, erase/morph/warp/blobs)",
         "nnu-net-augmentation": "nnU-Net augmentation (baseline + rotation, scaling, gamma, noise, blur)",
         "spad-input-object-bcd": "SPAD input, BcD scaled per object (bcd_object_frac 0.5)"}
# fixed before any result was seen: (data set, variant, label)
PRIMARY = (("clean", "spad-input", "SPAD input vs baseline, clean annotations"),
           ("noisy", "spad-no-fade", "SPAD no-fade vs baseline, noisy annotations"),
           ("noisy", "spad-input-no-fade", "SPAD input no-fade vs baseline, noisy annotations"))
PRIMARY_AT = (10, 1)  # DDIM steps, ensemble members
# the study's folds; later folds hold registered confirmatory tests (docs/spad_study/confirmatory.md), reported apart
STUDY_FOLDS = ("fold0", "fold1")
# registered before their runs: the confirmatory test, and the primary comparisons again (beside the planned result)
EXTENSION_FOLDS = ("fold2", "fold3")
# (data set, variant, label): fixed before their runs, tested on EXTENSION_FOLDS
CONFIRMATORY = (("clean", "structured", "structured vs baseline, clean annotations"),)
SECONDARY_METRICS = (("boundary_f1", "boundary F1 (1 px)", 0.003), ("ece_band", "ECE near the boundary", 0.003),
                     ("brier_band", "Brier near the boundary", 0.003), ("spurious", "spurious components", 0.05))


def load_cells(root: Path) -> dict[tuple[str, str, str, int], dict]:
    """(data set, fold, variant slug, seed) -> the collected cell."""
    cells = {}
    for f in sorted(root.glob("*/fold*/*/seed*.json")):
        data, fold, variant = f.parts[-4:-1]
        cells[(data, fold, variant, int(f.stem[4:]))] = json.loads(f.read_text())
    return cells


def _cases(cell: dict, steps: int, ensemble: int, metric: str) -> dict[str, float]:
    for r in cell["study"]:
        if r["steps"] == steps and r["ensemble"] == ensemble:
            return {c["name"]: c[metric] for c in r["cases"]}
    raise KeyError((steps, ensemble))


def _units(cells, data: str, variant: str, steps: int, ensemble: int, metric: str):
    return {(fold, seed): _cases(c, steps, ensemble, metric)
            for (d, fold, v, seed), c in cells.items() if d == data and v == variant}


def compare(cells, data_a, variant_a, data_b, variant_b, steps, ensemble, metric, margin=0.003,
            n_boot: int = 0) -> dict:
    """Mean paired difference a - b over (fold, seed) units, with the t-interval, the verdict and (``n_boot`` > 0)
    the hierarchical bootstrap interval (NaN otherwise)."""
    diffs = unit_differences(_units(cells, data_a, variant_a, steps, ensemble, metric),
                             _units(cells, data_b, variant_b, steps, ensemble, metric))
    unit_means = [float(d.mean()) for d in diffs.values()]
    mean, lo, hi = t_interval(unit_means)
    blo, bhi = hierarchical_bootstrap(diffs, n_boot=n_boot) if diffs and n_boot else (math.nan, math.nan)
    return {"n": len(unit_means), "mean": mean, "ci": (lo, hi), "boot": (blo, bhi), "p": t_pvalue(unit_means),
            "verdict": verdict(lo, hi, margin), "per_unit": {f"{f}/seed{s}": m for (f, s), m in
                                                              zip(diffs, unit_means)}}


def _cell(r: dict, digits: int = 4) -> str:
    if r["n"] == 0:
        return "no runs yet"
    if math.isnan(r["ci"][0]):
        return f"{r['mean']:+.{digits}f} (n={r['n']}, no interval)"
    return f"{r['mean']:+.{digits}f} [{r['ci'][0]:+.{digits}f}, {r['ci'][1]:+.{digits}f}] (n={r['n']})"


def _figure(cells, data_sets, variants, path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(1, len(data_sets), figsize=(5 * len(data_sets), 4.6), squeeze=False)
    for ax, data in zip(axes[0], data_sets):
        for j, v in enumerate(variants):
            rs = [compare(cells, data, v, data, "baseline", s, 1, "dice") for s in STEPS]
            x = np.arange(len(STEPS)) + (j - len(variants) / 2) * 0.06
            mean = np.array([r["mean"] for r in rs])
            lo = np.array([r["ci"][0] for r in rs])
            hi = np.array([r["ci"][1] for r in rs])
            err = np.where(np.isnan(lo), 0, [mean - lo, hi - mean])
            ax.errorbar(x, mean, yerr=err, marker="o", ms=3, capsize=2, label=NAMES.get(v, v))
        ax.axhline(0, color="k", lw=0.8)
        ax.axhspan(-0.003, 0.003, color="0.9")
        ax.set_xticks(range(len(STEPS)), [str(s) for s in STEPS])
        ax.set_xlabel("DDIM steps (1 member)")
        ax.set_ylabel("Dice - baseline Dice")
        ax.set_title(f"{data} training annotations")
    handles, labels = axes[0][0].get_legend_handles_labels()  # below the panels: inside, it hides a curve
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _mean_dice(cells, data: str, variant: str, folds, steps: int, ensemble: int) -> float:
    """Mean over runs of each run's mean Dice."""
    return float(np.mean([np.mean(list(_cases(c, steps, ensemble, "dice").values()))
                          for (d, f, v, _), c in cells.items() if d == data and v == variant and f in folds]))


def _confirmatory(all_cells, old, steps: int, ensemble: int, baselines: dict | None = None) -> list[str]:
    """The registered confirmatory tests: the new folds alone (the test) and pooled with the study's folds
    (``old``: the study's cells)."""
    out = []
    folds = EXTENSION_FOLDS
    new = {k: c for k, c in all_cells.items() if k[1] in folds}
    for data, v, label in CONFIRMATORY:
        if not any(k[0] == data and k[2] == v for k in new):
            continue
        test, found, pooled = (compare(x, data, v, data, "baseline", steps, ensemble, "dice")
                               for x in (new, old, {**old, **new}))
        verdict = ("confirmed" if test["n"] >= 2 and test["ci"][0] > 0 else "not confirmed")
        out += ["## Confirmatory test (registered before its runs: `spad_study/confirmatory.md`)", "",
                f"| {label}, Dice, {steps} steps, {ensemble} member | Δ Dice [95 % CI] |", "|---|---|",
                f"| found on {', '.join(STUDY_FOLDS)} | {_cell(found)} |",
                f"| **test on {', '.join(folds)}** | **{_cell(test)}** |",
                f"| pooled | {_cell(pooled)} |", "",
                f"Verdict by the registered rule (the test interval above zero): **{verdict}**"
                + ("" if test["n"] >= 6 else f" so far ({test['n']} of 6 runs)") + ".", ""]
        absolute = ", ".join(f"{NAMES[x]} {_mean_dice(new, data, x, folds, steps, ensemble):.4f}"
                             for x in ("baseline", v))
        trivial = ("; trivial baselines on the same tiles: " + ", ".join(f"{k} {b:.4f}" for k, b in baselines.items())
                   if baselines else "")
        out += [f"Mean Dice on {', '.join(folds)} (mean over runs): {absolute}{trivial}.", ""]
    return out


def write_report(cells_root: Path, page: Path, baselines: dict | None = None, planned: int | None = None,
                 plan: list[tuple[str, str, str, int]] | None = None, code: str | None = None,
                 confirm_baselines: dict | None = None) -> str:
    all_cells = load_cells(cells_root)
    cells = {k: c for k, c in all_cells.items() if k[1] in STUDY_FOLDS}
    data_sets = sorted({k[0] for k in cells})
    variants = [v for v in NAMES if v != "baseline" and any(k[2] == v for k in cells)]
    lines = ["# Does SPAD help? The study", ""]
    n_runs = len(all_cells)
    hours = sum(c["train_seconds"] for c in all_cells.values()) / 3600
    units = sorted({(k[1], k[3]) for k in cells})
    done_planned = len([p for p in plan if p in cells]) if plan else n_runs
    if planned:
        extra = f" (and {n_runs - done_planned} runs of extensions outside the plan)" if n_runs > done_planned else ""
        primary_n = min(compare(cells, d, v, d, "baseline", *PRIMARY_AT, "dice")["n"] for d, v, _ in PRIMARY)
        if done_planned == planned:
            state = "the study is complete"
        elif primary_n >= len(units) >= 6:
            state = ("every primary comparison has its planned runs; the secondary variants are still running (the "
                     "study resumes where it stopped)")
        else:
            state = ("the study is still running (it resumes where it stopped); no verdict below is final until the "
                     "primary comparisons have their planned runs")
        lines += [f"**Status: {done_planned} of {planned} planned runs finished{extra}; {state}.**", ""]
    lines += [
        f"Runs finished: **{n_runs}** (training time {hours:.1f} h on a shared 2-core CPU, one thread per run); "
        f"(fold, seed) units with at least one run: {len(units)}. Protocol, data and reproduction: below. "
        "Every difference is variant minus baseline on the same fold, seed and sampling noise (the training run is "
        "the unit); [95 % t-interval over runs] (n = runs). Null: the whole interval inside +-0.003 Dice.", "",
        "Scored on 32x32 test tiles. The later endpoints (whole held-out strips through sliding windows, Dice over "
        "non-empty tiles, AURC, GED) could not be applied here: this study kept its cells, not its checkpoints. The "
        "diffusion study ([diffusion_study.md](diffusion_study.md)) measures them on its own runs of the same image "
        "and folds.", ""]
    s, e = PRIMARY_AT
    # registered extension: the primary comparisons again on the later folds, shown pooled beside the planned result
    extended = {k: c for k, c in all_cells.items() if k[1] in STUDY_FOLDS + EXTENSION_FOLDS}
    more = any(k[1] in EXTENSION_FOLDS and k[2] in {v for _, v, _ in PRIMARY} for k in extended)
    ext_head, ext_rule = (f" {', '.join(STUDY_FOLDS + EXTENSION_FOLDS)} (extension) |", "---|") if more else ("", "")
    lines += [f"## Primary comparisons (fixed in advance; Dice, {s} DDIM steps, {e} member)", "",
              f"| comparison | Δ Dice [95 % CI] | bootstrap 95 % | verdict |{ext_head}",
              f"|---|---|---|---|{ext_rule}"]

    def ext_cell(data_a, v_a, data_b) -> str:
        return f" {_cell(compare(extended, data_a, v_a, data_b, 'baseline', s, e, 'dice'))} |" if more else ""

    for data, v, label in PRIMARY:
        r = compare(cells, data, v, data, "baseline", s, e, "dice", n_boot=2000)
        boot = "" if math.isnan(r["boot"][0]) else f"[{r['boot'][0]:+.4f}, {r['boot'][1]:+.4f}]"
        lines.append(f"| {label} | {_cell(r)} | {boot} | {r['verdict'] if r['n'] else 'not run yet'} |"
                     + ext_cell(data, v, data))
    pc = compare(cells, "noisy", "baseline", "clean", "baseline", s, e, "dice")
    lines += [f"| positive control: baseline on noisy vs clean annotations | {_cell(pc)} | | "
              f"{pc['verdict'] if pc['n'] else 'not run yet'} (must be lower) |"
              + ext_cell("noisy", "baseline", "clean"), ""]
    if more:
        lines += [f"The last column adds the registered extension's runs on {', '.join(EXTENSION_FOLDS)} "
                  "(`spad_study/confirmatory.md`): an estimate over more runs, not a new test.", ""]
    if baselines:
        lines += [f"Trivial baselines on the test tiles of {', '.join(STUDY_FOLDS)} (no training): " + ", ".join(
            f"{k} Dice {v:.4f}" for k, v in baselines.items()) + ".", ""]
    lines += _confirmatory(all_cells, cells, s, e, confirm_baselines)
    secondary = {}
    for data in data_sets:
        for v in variants:
            if (data, v) not in {(d, x) for d, x, _ in PRIMARY}:
                secondary[f"{data}/{v}"] = compare(cells, data, v, data, "baseline", s, e, "dice")["p"]
    adjusted = holm(secondary)

    def ran_on(data: str) -> list[str]:
        return [v for v in variants if any(k[0] == data and k[2] == v for k in cells)]

    not_run = [f"{NAMES[v]} on {data} annotations" for data in data_sets for v in variants if v not in ran_on(data)]
    lines += ["## Δ Dice by DDIM steps and ensemble size", ""]
    for data in data_sets:
        lines += [f"### {data} training annotations", "",
                  "| variant | members | " + " | ".join(f"{st} steps" for st in STEPS) + " |",
                  "|---|---|" + "---|" * len(STEPS)]
        for v in ran_on(data):
            for ens in ENSEMBLES:
                row = [_cell(compare(cells, data, v, data, "baseline", st, ens, "dice")) for st in STEPS]
                lines.append(f"| {NAMES[v]} | {ens} | " + " | ".join(row) + " |")
        lines.append("")
    if not_run:
        lines += ["Not run (extensions on one data set only): " + "; ".join(not_run) + ".", ""]
    holm_text = ", ".join(f"{k} {p:.3f}" for k, p in adjusted.items() if not math.isnan(p)) or "none yet"
    lines += [f"Holm-adjusted p-values of the secondary Dice comparisons (10 steps, 1 member): {holm_text}.", ""]
    lines += ["## Boundary and calibration (10 steps, 5 members)", "",
              "| data | variant | " + " | ".join(label for _, label, _ in SECONDARY_METRICS) + " |",
              "|---|---|" + "---|" * len(SECONDARY_METRICS)]
    for data in data_sets:
        for v in ran_on(data):
            row = [_cell(compare(cells, data, v, data, "baseline", 10, 5, m, margin)) for m, _, margin in
                   SECONDARY_METRICS]
            lines.append(f"| {data} | {NAMES[v]} | " + " | ".join(row) + " |")
    lines += ["", "(Boundary F1: higher is better; ECE, Brier, spurious components: lower is better.)", ""]
    lines += ["## Per run: mean Dice (10 steps, 1 member)", "",
              "| data | fold | seed | " + " | ".join(NAMES[v] for v in ["baseline", *variants]) + " |",
              "|---|---|---|" + "---|" * (len(variants) + 1)]
    for data in data_sets:
        for fold, seed in units:
            vals = []
            for v in ["baseline", *variants]:
                c = cells.get((data, fold, v, seed))
                vals.append(f"{np.mean(list(_cases(c, 10, 1, 'dice').values())):.4f}" if c else "-")
            if any(x != "-" for x in vals):
                lines.append(f"| {data} | {fold} | {seed} | " + " | ".join(vals) + " |")
    fig = page.parent / "spad_study" / "delta_dice_vs_steps.png"
    if cells and _figure(cells, data_sets, variants, fig):
        lines += ["", f"![Δ Dice vs DDIM steps]({fig.relative_to(page.parent)})", ""]
    if plan:
        missing = [p for p in plan if p not in cells]
        lines += ["", f"## Missing runs ({len(missing)} of {len(plan)})", ""]
        lines += [", ".join(f"{d}/{f}/{NAMES.get(v, v)}/seed{s}" for d, f, v, s in missing) or "none", ""]
    if code:
        lines += [f"Code: {code}. Each cell in `docs/spad_study/cells` records its run's full config (seed, steps) and "
                  "training time.", ""]
    lines += ["", PROTOCOL]
    return "\n".join(lines) + "\n"


PROTOCOL = """## Protocol

- **Data**: the DSB2018 nuclei image and its instance mask shipped in the stardist 0.9.2 wheel (512x512, 125
  nuclei, `stardist/data/images/img2d.tif`, `mask2d.tif`). Fold k holds out the horizontal strip k of 128 rows as 64
  non-overlapping 32x32 test tiles; training tiles (32x32, stride 16) come from the other strips, at least 16 rows
  away from the held-out strip (folds 0 and 1: 682 training tiles each).
- **Noisy annotations**: the same folds with each training nucleus dilated or eroded by 1-2 px (seeded per object)
  and a smooth contour warp (up to 1.5 px); 24.9 % of the foreground area changes. Test masks are always clean.
- **Training**: the `cpu-small` preset (cached-encoder model, 16 channels, x0 prediction), 1000 steps of 16 tiles,
  `val_every` 0, through `spadfast ablate --config` (one folder per data set and fold), seeds 0, 1, 2.
- **Variants** (`spadfast.study.ablate.variant_overrides`): baseline (perturbation off); SPAD (target mode, the
  default); SPAD input (x_t from the perturbed mask on half of each batch, clean target); DDPM-IP (gamma 0.1);
  SPAD no-fade and SPAD input no-fade (PaS horizon twice the run); supervised (not diffusion: the same network,
  one forward pass, BCE + Dice, same tiles and steps); structured (SPAD input with cell erasure, per-object
  dilation/erosion up to 2 px, contour warps up to 1.5 px, one spurious blob per tile on average). An extension
  outside the 96 planned runs, on clean annotations only: nnU-Net augmentation (the baseline with nnU-Net's 2-D
  augmentation, `AugmentConfig.nnunet()`, on top of the flips), which decides spadfast's `augment` default. A
  second extension, on both data sets: SPAD input with the BcD band and blur scaled to each object's size
  (`bcd_object_frac` 0.5: a nucleus of equivalent radius r gets at most a 0.5 r band), the option that answers
  "the BcD band covers most of a small object". A confirmatory test registered after the study's results
  (`spad_study/confirmatory.md`): structured vs baseline on clean annotations, on folds 2 and 3 (held-out strips
  2 and 3), seeds 0-2; on the same folds, the primary comparisons again (registered likewise), pooled with folds 0-1
  beside the planned result.
- **Evaluation** (`spadfast.study.grid_eval`): every run's EMA weights at 1, 2, 5, 10 and 25 DDIM steps, with 1 and 5
  members (the first k of one 5-member draw), initial noise keyed per tile name (common random numbers).
- **Statistics** (`spadfast.study.stats`): unit = training run (fold, seed); mean paired difference to the baseline
  with a t-interval over runs and a hierarchical bootstrap (seeds within folds, tiles within runs); Holm for the
  secondary comparisons; a result is null when its whole interval lies inside +-0.003 Dice.

## Reproduce

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python scripts/spad_study.py run --out spad_study
    OMP_NUM_THREADS=1 .venv/bin/python scripts/spad_study.py evaluate --out spad_study
    # the extensions
    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python scripts/spad_study.py run --out spad_study --datasets clean \\
        --variants "nnU-Net augmentation"
    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python scripts/spad_study.py run --out spad_study \\
        --variants "SPAD input object-BcD"
    # the confirmatory test on folds 2-3
    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python scripts/spad_study.py run --out spad_study --folds 4 \\
        --datasets clean --variants baseline structured
    # the primary comparisons on folds 2-3
    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python scripts/spad_study.py run --out spad_study --folds 4 \\
        --datasets clean --variants "SPAD input"
    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python scripts/spad_study.py run --out spad_study --folds 4 \\
        --datasets noisy --variants baseline "SPAD no-fade" "SPAD input no-fade"
    OMP_NUM_THREADS=1 .venv/bin/python scripts/spad_study.py evaluate --out spad_study
    .venv/bin/python scripts/spad_study.py collect --out spad_study
    .venv/bin/python scripts/spad_study.py report
"""
