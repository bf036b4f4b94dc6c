"""Statistics and the markdown table of ``spadfast ablate``: per-variant means over seeds and the paired ΔDice.

The paired ΔDice of a variant takes the training run as its unit: per seed, the mean over held-out cases of the
case's Dice minus the reference variant's Dice on the same case (same seed); then the mean of those per-seed
differences, with its standard error and 95 % t-interval over seeds. Cases of one run share that run's weights, so
treating (case, seed) pairs as independent would understate the run-to-run spread. With one seed there is no spread
over runs: the standard error and interval are then over cases, conditional on that one training run, and labelled so.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

__all__ = ["aggregate", "format_markdown", "paired_difference", "study_differences"]
UNIT_SEEDS = "seeds"
UNIT_CASES = "cases of one run"


def _mean_std(values: list[float]) -> tuple[float, float]:
    a = np.asarray(values, dtype=np.float64)
    if not np.isfinite(a).all():
        return (math.nan, math.nan) if np.isnan(a).any() else (math.inf, math.nan)
    return float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else math.nan


def _mean_se_interval(values: list[float]) -> tuple[float, float, list[float]]:
    """Mean, standard error (ddof 1) and two-sided 95 % t-interval of ``values``; NaN where undefined."""
    from scipy import stats

    a = np.asarray(values, dtype=np.float64)
    if a.size == 0:
        return math.nan, math.nan, [math.nan, math.nan]
    mean = float(a.mean())
    if a.size < 2:
        return mean, math.nan, [math.nan, math.nan]
    se = float(a.std(ddof=1) / math.sqrt(a.size))
    half = float(stats.t.ppf(0.975, a.size - 1)) * se
    return mean, se, [mean - half, mean + half]


def _unit(run: dict[str, Any]) -> tuple[int | None, int]:
    """A run's unit: ``(fold, seed)`` (fold None for one held-out split)."""
    return run.get("fold"), run["seed"]


def _unit_name(unit: tuple[int | None, int]) -> str:
    return str(unit[1]) if unit[0] is None else f"fold{unit[0]}/seed{unit[1]}"


def paired_difference(runs: list[dict[str, Any]], reference_runs: list[dict[str, Any]]) -> dict[str, Any]:
    """ΔDice of a variant's runs to the reference's runs, paired on run (fold and seed) and held-out case.

    Args:
        runs, reference_runs: runs ``{"seed": int[, "fold": int], "case_dice": {case name: dice}}``.

    Returns:
        ``d_dice`` (mean over runs of the per-run mean case difference), ``d_dice_se`` and ``d_dice_ci`` (standard
        error and 95 % t-interval over runs), ``d_dice_n`` (runs paired) and ``d_dice_unit`` (``"seeds"``), and
        ``d_dice_per_seed`` ({seed, or "fold<k>/seed<s>" with folds: difference}). One paired run: the SE and
        interval are over that run's cases, ``d_dice_n`` counts cases and ``d_dice_unit`` is
        ``"cases of one run"``. Nothing paired: NaN, n 0.
    """
    ref = {_unit(r): r.get("case_dice", {}) for r in reference_runs}
    per_case: dict[tuple[int | None, int], list[float]] = {}
    for r in runs:
        ref_cases = ref.get(_unit(r), {})
        diffs = [d - ref_cases[c] for c, d in r.get("case_dice", {}).items() if c in ref_cases]
        if diffs:
            per_case[_unit(r)] = diffs
    per_seed = {unit: float(np.mean(d)) for unit, d in per_case.items()}
    if len(per_seed) == 1:
        (cases,) = per_case.values()
        mean, se, ci = _mean_se_interval(cases)
        n, unit = len(cases), UNIT_CASES
    else:
        mean, se, ci = _mean_se_interval(list(per_seed.values()))
        n, unit = len(per_seed), UNIT_SEEDS
    return {"d_dice": mean, "d_dice_se": se, "d_dice_ci": ci, "d_dice_n": n, "d_dice_unit": unit,
            "d_dice_per_seed": {_unit_name(u): d for u, d in per_seed.items()}}


def study_differences(runs: list[dict[str, Any]], reference_runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per ``"<steps>x<members>"`` of the runs' ``study`` scores: mean paired ΔDice over runs with its 95 %
    t-interval (:mod:`spadfast.study.stats`; NaN bounds with fewer than two runs)."""
    from .stats import t_interval, unit_differences

    out: dict[str, Any] = {}
    keys = [k for r in runs[:1] for k in r.get("study", {})]
    for key in keys:
        diffs = unit_differences({_unit(r): r["study"][key] for r in runs if key in r.get("study", {})},
                                 {_unit(r): r["study"][key] for r in reference_runs if key in r.get("study", {})})
        mean, lo, hi = t_interval([float(d.mean()) for d in diffs.values()])
        out[key] = {"d_dice": mean, "ci": [lo, hi], "n": len(diffs)}
    return out


def aggregate(records: dict[str, list[dict[str, Any]]], reference: str = "SPAD") -> dict[str, Any]:
    """Summarize runs per variant.

    Args:
        records: variant -> runs ``{"seed", "mean": {"dice", "iou", "hd95"}[, "case_dice": {name: dice}]
            [, "train_seconds"]}``.
        reference: the variant the paired differences are taken against.

    Returns:
        ``{"rows": [...], "best": {metric: [variants]}, "reference": reference}``. Each row holds the mean and sample
        std (ddof 1; NaN for one seed) over seeds of each run's mean Dice, IoU and HD95, the mean training time, and
        :func:`paired_difference` to ``reference`` (NaN for the reference itself). Best: max Dice/IoU, min HD95;
        ties at 4 decimals all count as best.
    """
    from ..evaluation.metrics import METRICS

    keys = [k for k in METRICS if all(k in r["mean"] for runs in records.values() for r in runs)]
    rows = []
    for name, runs in records.items():
        row: dict[str, Any] = {"variant": name, "seeds": [r["seed"] for r in runs], "runs": runs}
        for m in keys:
            row[m], row[f"{m}_std"] = _mean_std([r["mean"][m] for r in runs])
        times = [r["train_seconds"] for r in runs if "train_seconds" in r]
        row["train_seconds"] = float(np.mean(times)) if times else math.nan
        row.update(paired_difference(runs if name != reference else [], records.get(reference, [])))
        if name != reference and any("study" in r for r in runs):
            row["study"] = study_differences(runs, records.get(reference, []))
        rows.append(row)
    best: dict[str, list[str]] = {}
    for m in keys:
        vals = [(r["variant"], r[m]) for r in rows if not math.isnan(r[m])]
        if not vals:
            best[m] = []
            continue
        target = METRICS[m].best(v for _, v in vals)
        best[m] = [n for n, v in vals if _fmt(v) == _fmt(target)]
    return {"rows": rows, "best": best, "reference": reference, "metrics": keys}


def _fmt(v: float, digits: int = 4) -> str:
    if math.isnan(v):
        return "n/a"
    return "inf" if math.isinf(v) else f"{v:.{digits}f}"


def _delta_cell(row: dict[str, Any]) -> str:
    """``+d ± se [lo, hi]`` over seeds; over the cases of one run, marked ``(1 run)``; ``—`` without pairs."""
    d = row.get("d_dice", math.nan)
    if math.isnan(d):
        return "—"
    text = f"{d:+.4f}"
    se = row.get("d_dice_se", math.nan)
    if not math.isnan(se):
        lo, hi = row.get("d_dice_ci", [math.nan, math.nan])
        text += f" ± {se:.4f} [{lo:+.4f}, {hi:+.4f}]"
    return text + (" (1 run)" if row.get("d_dice_unit") == UNIT_CASES else "")


def format_markdown(result: dict[str, Any], table: dict[str, dict[str, Any]] | None = None) -> str:
    """``ablation.md``: one row per variant, mean ± std over seeds, the best value of each column in bold."""
    from ..evaluation.metrics import METRICS

    reference = result.get("reference", "SPAD")
    keys = result.get("metrics", [k for k in METRICS if all(k in r for r in result["rows"])])
    heads = " | ".join(f"{METRICS[m].label} {METRICS[m].arrow}" if m in METRICS else m for m in keys)
    lines = [
        "# spadfast ablation",
        "",
        f"Preset `{result.get('preset')}`, {result.get('train_steps')} training steps per run, "
        f"{result.get('seeds')} seed(s) per variant; {result.get('n_train')} training pairs, "
        f"{result.get('n_heldout')} held-out pairs"
        + (f" (`{result['val']}`)." if result.get("val") else " (a seeded split of the data, `split.json`)."),
        "Values: mean over seeds of each run's mean over held-out cases; ± the sample std over seeds (none for "
        "one seed). HD95 in pixels, `inf` when some case has exactly one empty mask. Best of each column in bold. "
        f"ΔDice: per seed, the mean over held-out cases of the Dice difference to {reference} on the same case; "
        "the cell is the mean of these per-seed differences ± its standard error over seeds [95 % t-interval over "
        "seeds]: the training run is the unit, so run-to-run spread counts. Marked (1 run): one seed only, the ± "
        "and interval are over held-out cases, conditional on that one training run (they say nothing about how "
        "another run would differ). Train: mean seconds per run.",
        "",
        f"| Variant | Change from {reference} | {heads} | ΔDice | Train (s) |",
        "|---|---|" + "---|" * len(keys) + "---|---|",
    ]
    for row in result["rows"]:
        change = _describe(table.get(row["variant"], {})) if table else ""
        cells = []
        for m in keys:
            text = _fmt(row[m]) + ("" if math.isnan(row[f"{m}_std"]) else f" ± {_fmt(row[f'{m}_std'])}")
            cells.append(f"**{text}**" if row["variant"] in result["best"].get(m, []) else text)
        cells += [_delta_cell(row), _fmt(row.get("train_seconds", math.nan), 0)]
        lines.append(f"| {row['variant']} | {change} | " + " | ".join(cells) + " |")
    lines += _study_section(result, reference)
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


def _study_section(result: dict[str, Any], reference: str) -> list[str]:
    """ΔDice to the reference per DDIM steps x members, when the runs were scored on that grid."""
    rows = [r for r in result["rows"] if r.get("study")]
    if not rows:
        return []
    keys = list(rows[0]["study"])
    lines = ["", f"ΔDice to {reference} by DDIM steps x ensemble members (noise keyed per image, the same for every "
             "variant): mean over runs [95 % t-interval over runs] (n runs).", "",
             "| Variant | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
    for r in rows:
        cells = []
        for k in keys:
            c = r["study"].get(k, {"d_dice": math.nan, "ci": [math.nan, math.nan], "n": 0})
            text = "—" if math.isnan(c["d_dice"]) else f"{c['d_dice']:+.4f}"
            if not math.isnan(c["ci"][0]):
                text += f" [{c['ci'][0]:+.4f}, {c['ci'][1]:+.4f}]"
            cells.append(f"{text} ({c['n']})")
        lines.append(f"| {r['variant']} | " + " | ".join(cells) + " |")
    return lines


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
