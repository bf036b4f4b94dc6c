"""The diffusion study's pilot choice (``docs/diffusion_study/choice.json``, ``choice.md``), its page
(``docs/diffusion_study.md``) and the default the registered rule gives, from the collected cells
(``docs/diffusion_study/cells``), as registered in ``docs/diffusion_study/registration.md``.

Used by ``python scripts/diffusion_study.py choose`` and ``... report``; reads only the committed cells, so both can be
rebuilt anywhere. The unit is a training run (fold, seed); a comparison is the mean paired difference over the units
both arms have, each arm at its own setting (DDIM steps, members, step fusion), with a 95 % t-interval
(``spadfast.study.stats``). Cells are keyed by the variant name their JSON records (``x0-loss-0.1``), not by the
folder's slug (``x0-loss-0-1``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import diffusion_study as ds
import numpy as np
from spad_study_report import load_cells

from spadfast.study.ablate import slug
from spadfast.study.stats import hierarchical_bootstrap, holm, t_interval, t_pvalue, unit_differences, verdict

FUSIONS = ("none", "mean", "uncertainty")  # spadfast.diffusion.sampler.STEP_FUSIONS; the order breaks exact ties
PILOT_DATA, PILOT_SEEDS = "nuclei-noisy", (0, 1)
X0_WEIGHTS = {0.1: "x0-loss-0.1", 0.3: "x0-loss-0.3", 1.0: "x0-loss-1"}  # rule 1's candidates, pilot variant names
SINGLE_CHANGES = ("self-cond", "recycle", "x0-loss", "prior")  # rule 3's candidates
CANDIDATES = ("baseline", *SINGLE_CHANGES, "best-combination")  # rule 4's candidates
DIFFUSION = CANDIDATES
TIE_MARGIN, NULL_MARGIN, TOL = 0.002, 0.003, 1e-9  # TOL: a difference of exactly 0.002 is a tie despite float error
FROZEN = ("x0_loss_weight", "best_combination", "best_variant")
SECONDARY_METRICS = (("dice", "Dice", "higher"), ("hd95", "HD95 (px)", "lower"), ("ece", "ECE", "lower"),
                     ("brier", "Brier", "lower"), ("ece_band", "ECE, 3-px band", "lower"),
                     ("brier_band", "Brier, 3-px band", "lower"), ("aurc", "AURC", "lower"))
N_BOOT = 2000

Setting = tuple[int, int, str]  # (DDIM steps, members, step fusion)
Cells = dict[tuple[str, str, str, int], dict]  # (data, "fold<k>", variant name, seed) -> cell
Baselines = dict[tuple[str, str], dict[str, float]]  # (data, "fold<k>") -> {baseline name: Dice}


# -------------------------------------------------------------------------------------------------------- cells


def load(cells_root: Path) -> Cells:
    """(data set, ``"fold<k>"``, variant name, seed) -> cell, for every ``<data>/fold<k>/<slug>/seed<s>.json`` under
    ``cells_root`` (the variant name from the cell's JSON, the folder's slug where it has none); every cell checked
    by :func:`check_cell` first."""
    cells = load_cells(Path(cells_root))
    for (d, f, v, s), c in cells.items():
        check_cell(Path(cells_root) / d / f / v / f"seed{s}.json", c)
    return {(d, f, c.get("variant", v), s): c for (d, f, v, s), c in cells.items()}


def registered_steps(variant: str) -> int:
    """The training steps the registration gives ``variant``: ``BASE``'s, or the variant's own (6000 with a prior;
    ``best-combination``: its two chosen variants' overrides merged, so the pilot's choice must exist)."""
    entry = ds.VARIANTS.get(variant, {})
    if isinstance(entry, str):
        entry = ds.variant_overrides(variant)
    return int(entry.get("train_steps", ds.BASE["train_steps"]))


def check_cell(path: Path, cell: Mapping[str, Any]) -> None:
    """A cell of this study's protocol: a known data set and variant matching its folder, a grid of scored records,
    and the registered training steps (a smoke run's cell, or one of the SPAD study's, is another protocol).

    Raises:
        ValueError: naming ``path`` and what does not fit.
    """
    def bad(why: str) -> ValueError:
        return ValueError(f"{path}: {why} (a cell of another protocol? this study's cells come from "
                          "`scripts/diffusion_study.py collect`)")

    known = {*ds.VARIANTS, "supervised-x5"}
    if cell.get("data") not in ds.DATASETS:
        raise bad(f"data set {cell.get('data')!r} is not one of {ds.DATASETS}")
    if cell.get("variant") not in known:
        raise bad(f"variant {cell.get('variant')!r} is not one of the study's")
    if path.parts[-4] != cell["data"] or path.parts[-2] != slug(cell["variant"]):
        raise bad(f"it holds {cell['data']}/{cell['variant']} but sits under {'/'.join(path.parts[-4:-1])}")
    records = cell.get("study")
    if not isinstance(records, list) or not records or not all(
            isinstance(r, Mapping) and {"steps", "ensemble", "cases"} <= set(r) for r in records):
        raise bad("no grid of scored records (`study`: steps, ensemble, cases)")
    config = cell.get("config")
    if cell["variant"] != "supervised-x5":
        trained = (config or {}).get("train_steps"), cell.get("steps")
        want = registered_steps(cell["variant"])
        if trained != (want, want):
            raise bad(f"trained {trained[1]} of {trained[0]} steps where the registration gives {want}")


def _setting(value: Setting | Mapping[str, Any]) -> Setting:
    if isinstance(value, Mapping):
        return int(value["steps"]), int(value["members"]), str(value["fusion"])
    steps, members, fusion = value
    return int(steps), int(members), str(fusion)


def _fold(fold: int | str) -> str:
    return fold if isinstance(fold, str) else f"fold{fold}"


def setting_cases(cell: dict, steps: int, members: int, fusion: str, metric: str) -> dict[str, float]:
    """{case name: ``metric``} of ``cell``'s record at (``steps``, ``members``, ``fusion``) (a record without
    ``step_fusion`` is unfused); None becomes NaN.

    Raises:
        KeyError: no such record, or its cases lack ``metric``.
    """
    for r in cell["study"]:
        if r["steps"] == steps and r["ensemble"] == members and r.get("step_fusion", "none") == fusion:
            return {c["name"]: math.nan if c[metric] is None else float(c[metric]) for c in r["cases"]}
    raise KeyError((steps, members, fusion))


def settings_of(cell: dict) -> list[Setting]:
    """Every (steps, members, fusion) ``cell`` was scored at, in its order."""
    return [(int(r["steps"]), int(r["ensemble"]), r.get("step_fusion", "none")) for r in cell["study"]]


def run_mean(cell: dict, setting: Setting, metric: str = "dice") -> float:
    """One run's mean of ``metric`` over its cases (finite values) at ``setting``; NaN when none is finite.

    Raises:
        KeyError: ``cell`` has no such setting or metric.
    """
    values = np.array(list(setting_cases(cell, *setting, metric).values()), dtype=np.float64)
    values = values[np.isfinite(values)]
    return float(values.mean()) if values.size else math.nan


def _passes(setting: Setting) -> int:
    return setting[0] * setting[1]


# --------------------------------------------------------------------------------------------------- the choice


def _pilot_runs(cells: Cells, variant: str) -> dict[int, dict]:
    return {s: c for (d, f, v, s), c in cells.items()
            if d == PILOT_DATA and f == _fold(ds.PILOT_FOLD) and v == variant and s in PILOT_SEEDS}


def _missing(cells: Cells, variants: Iterable[str]) -> list[str]:
    out = []
    for v in variants:
        have = _pilot_runs(cells, v)
        out += [f"{v} seed{s}" for s in PILOT_SEEDS if s not in have]
    return out


def pilot_grid(runs: Mapping[int, dict]) -> dict[Setting, float]:
    """{setting: mean over ``runs`` of each run's mean Dice} for every setting of the registered grid
    (``EVAL_STEPS`` x ``EVAL_MEMBERS`` x ``FUSIONS``, or the one setting of a supervised run) that every run has."""
    common = None
    for cell in runs.values():
        have = set(settings_of(cell))
        common = have if common is None else common & have
    grid = [(s, m, f) for s in ds.EVAL_STEPS for m in ds.EVAL_MEMBERS for f in FUSIONS]
    extra = sorted((common or set()) - set(grid))  # e.g. supervised-x5's (1, 5, none) when it is the only one
    keep = [x for x in grid if x in (common or set())] or extra
    return {x: float(np.mean([run_mean(c, x) for c in runs.values()])) for x in keep}


def best_setting(grid: Mapping[Setting, float]) -> Setting:
    """Registration rule 2: the setting with the highest mean pilot Dice; every setting within ``TIE_MARGIN`` (0.002)
    of that Dice ties, and a tie goes to the fewest network passes (steps x members), then (equal passes) to the
    higher Dice, then to the step fusion first in ``FUSIONS`` (none < mean < uncertainty). The registration names
    only the first of these tie rules; the other two were fixed here, before any pilot run but the first was seen.

    Raises:
        ValueError: an empty grid.
    """
    finite = {x: d for x, d in grid.items() if math.isfinite(d)}
    if not finite:
        raise ValueError("no setting with a finite Dice to choose from")
    top = max(finite.values())
    near = [x for x, d in finite.items() if d >= top - TIE_MARGIN - TOL]
    return min(near, key=lambda x: (_passes(x), -finite[x], FUSIONS.index(x[2]) if x[2] in FUSIONS else 99, x))


def _record(setting: Setting, dice: float) -> dict[str, Any]:
    return {"steps": setting[0], "members": setting[1], "fusion": setting[2], "dice": round(dice, 6),
            "passes": _passes(setting)}


def _rank(settings: Mapping[str, dict], names: Sequence[str]) -> list[str]:
    # highest Dice first; exact ties: fewer passes, then the registration's order of the names
    return sorted(names, key=lambda v: (-settings[v]["dice"], settings[v]["passes"], names.index(v)))


def pilot_choice(cells: Cells) -> dict[str, Any]:
    """The registration's choice rules 1-4 on the pilot (``nuclei-noisy``, fold 0, seeds 0 and 1; both seeds are
    needed for every variant used; ``cells`` as :func:`load` returns them):

    1. ``x0_loss_weight``: the weight of 0.1 / 0.3 / 1.0 (variants ``x0-loss-0.1``, ``-0.3``, ``-1``) with the highest
       mean Dice at 10 steps, 1 member, no step fusion (an exact tie goes to the smaller weight).
    2. ``settings``: each diffusion variant's best setting by :func:`best_setting` (ties within 0.002 of the best Dice
       go to the fewest passes, then the higher Dice, then fusion none < mean < uncertainty: the registration is
       silent beyond the fewest passes); the ``x0-loss`` arm is the chosen weight's runs.
    3. ``best_combination``: the two of self-cond, recycle, x0-loss, prior with the highest Dice at their best
       settings (highest first; exact ties go to fewer passes, then that order).
    4. ``best_variant``: of baseline, self-cond, recycle, x0-loss, prior, best-combination, the highest Dice at its
       best setting (same tie order); only once both ``best-combination`` pilot runs exist, else ``pending`` says so.

    Returns a JSON-able dict: ``x0_loss_weight`` (float), ``x0_loss_dice`` {weight: Dice}, ``settings`` {variant:
    {steps, members, fusion, dice, passes}}, ``best_combination`` [two variant names], ``best_variant`` (when rule 4
    ran), ``pilot_table`` {variant: [{steps, members, fusion, dice, passes}, ...]} (every pilot variant with both
    seeds, supervised included, chosen or not), ``pilot`` (data, fold, seeds) and ``pending`` (sentences).

    Raises:
        ValueError: a needed pilot run is missing (every missing variant and seed named), or a run lacks 10 steps x
        1 member (rule 1).
    """
    needed = ["baseline", "self-cond", "recycle", *X0_WEIGHTS.values(), "prior"]
    missing = _missing(cells, needed)
    if missing:
        raise ValueError(f"the pilot choice needs both pilot runs ({PILOT_DATA}, fold {ds.PILOT_FOLD}, seeds "
                         f"{', '.join(map(str, PILOT_SEEDS))}) of {', '.join(needed)}; missing: {', '.join(missing)}")
    x0_dice = {}
    for w, name in X0_WEIGHTS.items():
        try:
            x0_dice[w] = float(np.mean([run_mean(c, (10, 1, "none")) for c in _pilot_runs(cells, name).values()]))
        except KeyError as e:
            raise ValueError(f"{name}: a pilot run lacks 10 steps x 1 member, no fusion (rule 1)") from e
    weight = max(X0_WEIGHTS, key=lambda w: (x0_dice[w], -w))
    arms = {"baseline": "baseline", "self-cond": "self-cond", "recycle": "recycle", "x0-loss": X0_WEIGHTS[weight],
            "prior": "prior"}
    pending = []
    combo_missing = _missing(cells, ["best-combination"])
    if combo_missing:
        pending.append("rule 4 (the best variant) waits for the best-combination pilot runs: missing "
                       + ", ".join(combo_missing))
    else:
        arms["best-combination"] = "best-combination"
    grids = {v: pilot_grid(_pilot_runs(cells, run)) for v, run in arms.items()}
    settings = {}
    for v, grid in grids.items():
        chosen = best_setting(grid)
        settings[v] = _record(chosen, grid[chosen])
    combination = _rank(settings, list(SINGLE_CHANGES))[:2]
    table_variants = [v for v in dict.fromkeys([*ds.PILOT_VARIANTS, "best-combination", *ds.VARIANTS])
                      if v != "x0-loss" and not _missing(cells, [v])]
    pilot_table = {v: [_record(x, d) for x, d in pilot_grid(_pilot_runs(cells, v)).items()] for v in table_variants}
    out: dict[str, Any] = {
        "x0_loss_weight": float(weight), "x0_loss_dice": {str(w): round(d, 6) for w, d in x0_dice.items()},
        "settings": settings, "best_combination": combination,
        "pilot": {"data": PILOT_DATA, "fold": ds.PILOT_FOLD, "seeds": list(PILOT_SEEDS)},
        "pilot_table": pilot_table, "pending": pending}
    if "best-combination" in settings:
        out["best_variant"] = _rank(settings, list(CANDIDATES))[0]
    return out


def _frozen_conflicts(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    out = [f"{k}: {old[k]!r} -> {new.get(k)!r}" for k in FROZEN if k in old and new.get(k) != old[k]]
    for v, s in old.get("settings", {}).items():
        now = new.get("settings", {}).get(v)
        if now is None or _setting(now) != _setting(s):
            out.append(f"settings[{v!r}]: {_setting(s)} -> {_setting(now) if now else None}")
    return out


def _fmt_setting(s: Mapping[str, Any] | Setting) -> str:
    steps, members, fusion = _setting(s)
    return f"{steps} step{'s' if steps != 1 else ''} x {members} member{'s' if members != 1 else ''}, fusion {fusion}"


def choice_markdown(choice: Mapping[str, Any]) -> str:
    """``choice.md``: the pilot's numbers and what rules 1-4 chose from them."""
    p = choice["pilot"]
    lines = ["# The pilot's choice (registration.md, rules 1-4)", "",
             f"Made by `python scripts/diffusion_study.py choose` from the pilot cells ({p['data']}, fold {p['fold']}, "
             f"seeds {', '.join(map(str, p['seeds']))}), before any primary-fold run was evaluated. Dice: whole "
             "held-out strip, mean over the two pilot runs. The numbers are in `choice.json`.", "",
             "## Rule 1: the x0-loss weight (10 steps, 1 member, no fusion)", "", "| weight | Dice |", "|---|---|"]
    lines += [f"| {w} | {d:.4f} |" for w, d in choice["x0_loss_dice"].items()]
    lines += ["", f"Chosen: **{choice['x0_loss_weight']}**.", "",
              "## Rule 2: each variant's best setting", "",
              "Ties within 0.002 of the best Dice go to the fewest network passes (steps x members), then the higher "
              "Dice, then fusion none < mean < uncertainty.", "",
              "| variant | setting | passes | Dice |", "|---|---|---|---|"]
    lines += [f"| {v} | {_fmt_setting(s)} | {s['passes']} | {s['dice']:.4f} |" for v, s in choice["settings"].items()]
    lines += ["", f"## Rule 3: best combination: **{' + '.join(choice['best_combination'])}**", "",
              "## Rule 4: best variant", ""]
    if "best_variant" in choice:
        bv = choice["best_variant"]
        lines.append(f"**{bv}** at {_fmt_setting(choice['settings'][bv])} (Dice {choice['settings'][bv]['dice']:.4f}).")
    else:
        lines.append("Not chosen yet.")
    lines += [f"- {p}" for p in choice.get("pending", [])]
    return "\n".join(lines) + "\n"


def write_choice(cells_root: Path, choice_json: Path, choice_md: Path) -> dict[str, Any]:
    """Run :func:`pilot_choice` on the cells under ``cells_root`` and write ``choice_json`` (the keys the runner reads,
    ``x0_loss_weight`` and ``best_combination``, and the rest) and ``choice_md``; returns the choice.

    Raises:
        ValueError: pilot runs missing (see :func:`pilot_choice`), or ``choice_json`` already records an
            ``x0_loss_weight``, ``best_combination``, ``best_variant`` or variant setting that this choice would
            change or drop (the registration freezes them; adding ``best_variant`` or a setting is allowed).
    """
    choice = pilot_choice(load(cells_root))
    choice_json, choice_md = Path(choice_json), Path(choice_md)
    if choice_json.is_file():
        conflicts = _frozen_conflicts(json.loads(choice_json.read_text()), choice)
        if conflicts:
            raise ValueError(f"{choice_json} is frozen (registration.md); this choice would change "
                             + "; ".join(conflicts))
    choice_json.parent.mkdir(parents=True, exist_ok=True)
    choice_json.write_text(json.dumps(choice, indent=1) + "\n")
    choice_md.write_text(choice_markdown(choice))
    return choice


# -------------------------------------------------------------------------------------------------- comparisons


def _units(cells: Cells, data: str, variant: str, setting: Setting, metric: str, folds: set[str],
           seeds: set[int] | None) -> dict[tuple[str, int], dict[str, float]]:
    out = {}
    for (d, f, v, s), c in cells.items():
        if d == data and v == variant and f in folds and (seeds is None or s in seeds):
            try:
                out[f, s] = setting_cases(c, *setting, metric)
            except KeyError:
                continue  # a run not scored at this setting or metric is no unit of this comparison
    return out


def compare_arms(cells: Cells, a: tuple[str, str, Any], b: tuple[str, str, Any], metric: str,
                 folds: Iterable[int | str], margin: float = NULL_MARGIN, n_boot: int = 0,
                 seeds: Iterable[int] | None = None) -> dict[str, Any]:
    """Like :func:`compare_settings` with each arm a (data set, variant, setting) triple, so the two arms may come
    from different data sets (the positive control). Returns the same dict."""
    fold_set, seed_set = {_fold(f) for f in folds}, None if seeds is None else set(seeds)
    diffs = unit_differences(_units(cells, a[0], a[1], _setting(a[2]), metric, fold_set, seed_set),
                             _units(cells, b[0], b[1], _setting(b[2]), metric, fold_set, seed_set))
    unit_means = [float(d.mean()) for d in diffs.values()]
    mean, lo, hi = t_interval(unit_means)
    blo, bhi = hierarchical_bootstrap(diffs, n_boot=n_boot) if diffs and n_boot else (math.nan, math.nan)
    return {"n": len(unit_means), "mean": mean, "ci": (lo, hi), "boot": (blo, bhi), "p": t_pvalue(unit_means),
            "verdict": verdict(lo, hi, margin),
            "per_unit": {f"{f}/seed{s}": m for (f, s), m in zip(diffs, unit_means)}}


def compare_settings(cells: Cells, data: str, a: str, a_setting: Any, b: str, b_setting: Any, metric: str,
                     folds: Iterable[int | str], margin: float = NULL_MARGIN, n_boot: int = 0,
                     seeds: Iterable[int] | None = None) -> dict[str, Any]:
    """Mean paired difference ``a - b`` of ``metric`` on ``data`` over the (fold, seed) units of ``folds`` (and
    ``seeds``, when given) that both variants have, each at its own setting ((steps, members, fusion) or a dict with
    those keys); per unit the mean over cases of the per-case difference.

    Returns ``spad_study_report.compare``'s dict: ``n``, ``mean``, ``ci`` (95 % t-interval), ``boot`` (hierarchical
    bootstrap interval with ``n_boot`` > 0, NaN otherwise), ``p``, ``verdict`` (against +-``margin``; meaningless for
    n < 2) and ``per_unit`` {"fold<k>/seed<s>": difference}.
    """
    return compare_arms(cells, (data, a, a_setting), (data, b, b_setting), metric, folds, margin, n_boot, seeds)


def _num(x: float, digits: int = 4) -> str:
    return f"{x:+.{digits}f}"


def _estimate(r: Mapping[str, Any], digits: int = 4) -> str:
    if r["n"] == 0:
        return "no paired runs yet"
    if r["n"] < 2 or math.isnan(r["ci"][0]):
        return f"{_num(r['mean'], digits)} (n={r['n']}, no interval)"
    return f"{_num(r['mean'], digits)} [{_num(r['ci'][0], digits)}, {_num(r['ci'][1], digits)}] (n={r['n']})"


def _boot(r: Mapping[str, Any]) -> str:
    return "" if math.isnan(r["boot"][0]) else f"[{_num(r['boot'][0])}, {_num(r['boot'][1])}]"


def _p(p: float) -> str:
    return "-" if math.isnan(p) else (f"{p:.2g}" if p < 0.001 else f"{p:.3f}")


# ------------------------------------------------------------------------------------------------------- report


def _mean_over_runs(cells: Cells, data: str, variant: str, setting: Setting, folds: set[str],
                    metric: str = "dice") -> tuple[float, int]:
    values = []
    for (d, f, v, _), c in cells.items():
        if d == data and v == variant and f in folds:
            try:
                values.append(run_mean(c, setting, metric))
            except KeyError:
                continue
    return (float(np.nanmean(values)) if values and not np.all(np.isnan(values)) else math.nan), len(values)


def load_baselines(cells_root: Path) -> Baselines:
    """(data set, ``"fold<k>"``) -> the trivial baselines ``scripts/diffusion_study.py collect`` wrote there
    (``<data>/fold<k>/baselines.json``: Otsu per image and a tuned threshold, Dice on the same held-out images)."""
    return {(p.parts[-3], p.parts[-2]): json.loads(p.read_text())
            for p in sorted(Path(cells_root).glob(f"*/fold*/{ds.BASELINES_FILE}"))}


def _supervised_row(cells: Cells, data: str, folds: set[str], width: int, baselines: Baselines | None = None) -> str:
    """The supervised network's mean Dice on ``data``'s ``folds``, and beneath it the trivial baselines' mean over
    the same folds (when collected): the references printed beside every Dice table."""
    mean, n = _mean_over_runs(cells, data, "supervised", (1, 1, "none"), folds)
    value = f"{mean:.4f} (mean of {n} runs)" if n else "no runs yet"
    rows = [f"| *supervised network's mean Dice ({data}), for reference* | {value} |" + " |" * (width - 2)]
    have = [baselines[data, f] for f in sorted(folds) if baselines and (data, f) in baselines]
    if have:
        text = ", ".join(f"{name} {np.mean([b[name] for b in have]):.4f}" for name in have[0])
        rows.append(f"| *trivial baselines ({data}), same held-out images, mean over {len(have)} fold(s)* | {text} |"
                    + " |" * (width - 2))
    return "\n".join(rows)


def _choice_for_page(cells: Cells, choice_file: Path) -> tuple[dict | None, list[str]]:
    """The choice the page uses and the page's lines about it: the frozen one (``choice_file``) when written, with
    what the pilot cells add to it since (``best_variant``, a new variant's setting) marked as not committed; else the
    one the pilot cells give, marked likewise; None (and what it waits for) when neither exists."""
    try:
        computed, why = pilot_choice(cells), None
    except ValueError as e:
        computed, why = None, str(e)
    frozen = json.loads(choice_file.read_text()) if choice_file.is_file() else None
    lines = ["## The pilot's choice (registration rules 1-4; nuclei-noisy, fold 0, seeds 0 and 1)", ""]
    if frozen is None and computed is None:
        return None, lines + [f"Not made yet: {why}.", ""]
    uncommitted = ("**not committed yet** (`python scripts/diffusion_study.py choose` writes "
                   "`docs/diffusion_study/choice.json`); the primaries below use it provisionally")
    if frozen is None:
        choice = computed
        lines.append(f"Computed from the pilot cells, {uncommitted}.")
    else:
        choice = {**frozen, "settings": dict(frozen.get("settings", {}))}
        md = choice_file.parent / "choice.md"
        lines.append("Committed in " + ("[diffusion_study/choice.md](diffusion_study/choice.md)" if md.is_file()
                                        else "`choice.json`") + ".")
        if computed:
            conflicts = _frozen_conflicts(frozen, computed)
            if conflicts:
                lines.append(f"**Warning: the pilot cells now give a different choice** ({'; '.join(conflicts)}); "
                             "the committed one is used below.")
            added = [k for k in FROZEN if k in computed and k not in frozen]
            added += [f"the setting of {v}" for v in computed["settings"] if v not in choice["settings"]]
            if added:
                choice.update({k: computed[k] for k in FROZEN if k in computed and k not in frozen})
                choice["settings"] = {**computed["settings"], **choice["settings"]}
                lines.append(f"The pilot cells now also give {', '.join(added)}: {uncommitted}.")
            choice["pending"] = computed["pending"]
    lines += ["", f"- Rule 1, x0-loss weight: **{choice['x0_loss_weight']}** (Dice at 10 steps x 1 member: "
              + ", ".join(f"{w}: {d:.4f}" for w, d in choice.get("x0_loss_dice", {}).items()) + ")",
              f"- Rule 3, best combination: **{' + '.join(choice['best_combination'])}**",
              f"- Rule 4, best variant: **{choice['best_variant']}**" if "best_variant" in choice
              else "- Rule 4, best variant: not chosen yet", "",
              "| variant | best setting (rule 2) | passes | pilot Dice |", "|---|---|---|---|"]
    lines += [f"| {v} | {_fmt_setting(s)} | {s['passes']} | {s['dice']:.4f} |" for v, s in choice["settings"].items()]
    lines += [""] + [f"- {p}" for p in choice.get("pending", [])] + [""]
    return choice, lines


def _planned(data: str) -> int:
    return (len(ds.PRIMARY_FOLDS) if data in ds.NUCLEI else 1) * ds.SEEDS[data]


def _primary_row(label: str, r: Mapping[str, Any] | None, planned: int, waits: str | None = None) -> str:
    if r is None:
        return f"| {label} | not evaluated ({waits}) | | |"
    if r["n"] < planned:
        return f"| {label} | not evaluated ({r['n']} runs of {planned}) | | |"
    shown = r["verdict"] if r["n"] >= 2 else "-"
    return f"| {label} | {_estimate(r)} | {_boot(r)} | {shown} |"


def _primaries(cells: Cells, choice: dict | None, baselines: Baselines | None = None) -> list[str]:
    noisy, amb = "nuclei-noisy", "ambiguous"
    folds = list(ds.PRIMARY_FOLDS)
    n_noisy, n_amb = _planned(noisy), _planned(amb)
    seeds_noisy, seeds_amb = range(ds.SEEDS[noisy]), range(ds.SEEDS[amb])
    lines = ["## Primary comparisons (registered; each judged on its own)", "",
             f"Folds {', '.join(map(str, folds))} x seeds 0-{ds.SEEDS[noisy] - 1} on nuclei-noisy (n = {n_noisy}); "
             f"seeds 0-{ds.SEEDS[amb] - 1} on the ambiguous set (n = {n_amb}). Verdict by the whole 95 % t-interval "
             "against +-0.003: null inside it, higher / lower when it excludes 0, else inconclusive; the bootstrap "
             "interval is reported beside it, not used. A comparison is evaluated once it has all its runs.", "",
             "| comparison | estimate [95 % CI] (n) | bootstrap 95 % | verdict |", "|---|---|---|---|"]
    bv = choice.get("best_variant") if choice else None
    if bv is None or bv not in choice["settings"]:
        waits = "waits for the pilot's best variant (rule 4) and its setting"
        rows = [_primary_row(label, None, 0, waits) for label in
                ("1. best variant at its best setting minus supervised, Dice",
                 "2. best variant, Dice(10 steps) - Dice(1 step)", "3. best variant GED minus supervised x5 GED")]
    else:
        steps, members, fusion = _setting(choice["settings"][bv])
        r1 = compare_settings(cells, noisy, bv, (steps, members, fusion), "supervised", (1, 1, "none"), "dice",
                              folds, n_boot=N_BOOT, seeds=seeds_noisy)
        r2 = compare_settings(cells, noisy, bv, (10, members, fusion), bv, (1, members, fusion), "dice", folds,
                              n_boot=N_BOOT, seeds=seeds_noisy)
        r3 = compare_settings(cells, amb, bv, (steps, 16, fusion), "supervised-x5", (1, 5, "none"), "ged",
                              [ds.PILOT_FOLD], n_boot=N_BOOT, seeds=seeds_amb)
        rows = [_primary_row(f"1. {bv} at {_fmt_setting((steps, members, fusion))} minus supervised, nuclei-noisy, "
                             "whole-strip Dice (higher is better)", r1, n_noisy),
                _primary_row(f"2. {bv}, Dice(10 steps) - Dice(1 step), {members} member(s), fusion {fusion}, "
                             "nuclei-noisy", r2, n_noisy),
                _primary_row(f"3. {bv} GED at {_fmt_setting((steps, 16, fusion))} minus supervised x5 GED, "
                             "ambiguous set, 8 annotators (**lower is better**: a negative difference favours "
                             "diffusion)", r3, n_amb)]
    lines += rows
    lines.append(_supervised_row(cells, noisy, {_fold(f) for f in folds}, 4, baselines))
    return lines + [""]


def _positive_control(cells: Cells, baselines: Baselines | None = None) -> tuple[list[str], list[str]]:
    """The section, and a warning for the top of the page when the complete control fails."""
    planned = _planned("nuclei-noisy")
    r = compare_arms(cells, ("nuclei-noisy", "baseline", (1, 1, "none")), ("nuclei-clean", "baseline", (1, 1, "none")),
                     "dice", ds.PRIMARY_FOLDS, n_boot=N_BOOT, seeds=range(ds.SEEDS["nuclei-noisy"]))
    lines = ["## Positive control (registered)", "",
             "Baseline trained on noisy minus baseline trained on clean annotations, clean test strips, whole-strip "
             "Dice at 1 step x 1 member, folds 1-3 x seeds 0-3. Expected: the interval lies below 0.", "",
             "| comparison | estimate [95 % CI] (n) | bootstrap 95 % | verdict |", "|---|---|---|---|",
             _primary_row("baseline, noisy minus clean annotations", r, planned),
             _supervised_row(cells, "nuclei-noisy", {_fold(f) for f in ds.PRIMARY_FOLDS}, 4, baselines), ""]
    warning = []
    if r["n"] >= planned:
        passed = r["ci"][1] < 0
        lines += [f"The control {'passes' if passed else '**fails**'}: the interval "
                  f"{'lies below 0' if passed else 'does not lie below 0'}.", ""]
        if not passed:
            warning = ["**The positive control failed** (baseline on noisy minus clean annotations: "
                       f"{_estimate(r)}, not below 0): this study cannot detect the effects it looks for, and every "
                       "result below must be read with that in mind.", ""]
    return lines, warning


# ------------------------------------------------------------------------------------------- the default decision

DECISION_SETS = ds.NUCLEI  # a candidate must qualify on both nuclei sets (registration addendum, third session)
AURC_RELATIVE_MARGIN = 0.10  # AURC "no worse": upper end <= 10 % of supervised's mean AURC on the set


def _candidate_grid() -> list[Setting]:
    return [(s, m, f) for s in ds.EVAL_STEPS for m in ds.EVAL_MEMBERS for f in FUSIONS]


def _complete(cells: Cells, data: str, variant: str) -> int:
    folds = {_fold(f) for f in (ds.PRIMARY_FOLDS if data in ds.NUCLEI else (ds.PILOT_FOLD,))}
    return sum(1 for (d, f, v, s) in cells if d == data and v == variant and f in folds and s < ds.SEEDS[data])


def default_decision(cells: Cells, choice: Mapping[str, Any] | None) -> dict[str, Any]:
    """The registered default rule ("What the result decides", with the third session's addendum): among the best
    variant and ``baseline`` at every grid setting, the cheapest (fewest passes) whose Dice minus supervised has a
    95 % lower end >= -0.003, whose band ECE minus supervised has an upper end <= +0.003 and whose AURC minus
    supervised has an upper end <= ``AURC_RELATIVE_MARGIN`` x supervised's mean AURC, on both nuclei sets; when none
    qualifies, the candidate with the highest Dice averaged over the two sets. The chosen setting's variant, members
    and fusion then get the multi-step check: Dice(10 steps) minus Dice(1 step), lower end >= -0.003 on every set
    where the variant has all its runs.

    Returns a dict: ``status`` ("waiting" or "decided"); ``missing`` (sentences naming arms without all their runs);
    when decided, ``rows`` (one per candidate and setting: ``variant``, ``setting``, ``passes``, ``dice`` {set: mean
    Dice}, ``checks`` {set: {"dice", "ece_band", "aurc": compare dict}}, ``failed`` [criteria], ``qualifies``),
    ``default`` (the chosen row), ``qualified`` (whether it met the rule) and ``multistep`` {set: compare dict}.
    """
    bv = choice.get("best_variant") if choice else None
    if bv is None:
        return {"status": "waiting", "missing": ["the pilot's best variant (rule 4)"]}
    variants = list(dict.fromkeys([bv, "baseline"]))
    missing = [f"{v} on {d}: {_complete(cells, d, v)} runs of {_planned(d)}" for d in DECISION_SETS
               for v in (*variants, "supervised") if _complete(cells, d, v) < _planned(d)]
    if missing:
        return {"status": "waiting", "missing": missing}
    folds = list(ds.PRIMARY_FOLDS)
    one = (1, 1, "none")
    rows = []
    for v in variants:
        for setting in _candidate_grid():
            checks, dice, failed = {}, {}, []
            for d in DECISION_SETS:
                seeds = range(ds.SEEDS[d])
                c = {m: compare_settings(cells, d, v, setting, "supervised", one, m, folds, seeds=seeds)
                     for m in ("dice", "ece_band", "aurc")}
                if c["dice"]["n"] < _planned(d):
                    break  # not every run was scored at this setting: no candidate
                checks[d] = c
                dice[d] = _mean_over_runs(cells, d, v, setting, {_fold(f) for f in folds})[0]
                aurc_ref = _mean_over_runs(cells, d, "supervised", one, {_fold(f) for f in folds}, "aurc")[0]
                if not c["dice"]["ci"][0] >= -NULL_MARGIN - TOL:
                    failed.append(f"Dice on {d}")
                if not c["ece_band"]["ci"][1] <= NULL_MARGIN + TOL:
                    failed.append(f"band ECE on {d}")
                if not c["aurc"]["ci"][1] <= AURC_RELATIVE_MARGIN * aurc_ref + TOL:
                    failed.append(f"AURC on {d}")
            else:
                rows.append({"variant": v, "setting": setting, "passes": _passes(setting), "dice": dice,
                             "checks": checks, "failed": failed, "qualifies": not failed})

    def mean_dice(row: Mapping[str, Any]) -> float:
        return float(np.mean(list(row["dice"].values())))

    def order(row: Mapping[str, Any]) -> tuple:
        return (variants.index(row["variant"]), FUSIONS.index(row["setting"][2]), row["setting"])

    if not rows:
        return {"status": "waiting", "missing": ["no candidate setting was scored on every run"]}
    qualified = [r for r in rows if r["qualifies"]]
    if qualified:
        default = min(qualified, key=lambda r: (r["passes"], -mean_dice(r), *order(r)))
    else:
        default = min(rows, key=lambda r: (-round(mean_dice(r), 12), r["passes"], *order(r)))
    steps, members, fusion = default["setting"]
    multistep = {}
    for d in ds.DATASETS:
        if _complete(cells, d, default["variant"]) < _planned(d):
            continue
        fold_list = list(ds.PRIMARY_FOLDS) if d in ds.NUCLEI else [ds.PILOT_FOLD]
        multistep[d] = compare_settings(cells, d, default["variant"], (10, members, fusion), default["variant"],
                                        (1, members, fusion), "dice", fold_list, seeds=range(ds.SEEDS[d]))
    return {"status": "decided", "missing": [], "rows": rows, "default": default, "qualified": bool(qualified),
            "multistep": multistep}


def _decision(cells: Cells, choice: dict | None) -> list[str]:
    lines = ["## What the result decides (registered rule; addendum of the third session)", "",
             "Candidates: the best variant and baseline at every grid setting. A candidate qualifies when, on both "
             "nuclei sets, Dice minus supervised has a 95 % lower end >= -0.003, band ECE minus supervised an upper "
             f"end <= +0.003 and AURC minus supervised an upper end <= {AURC_RELATIVE_MARGIN:.0%} of supervised's "
             "AURC. The "
             "default is the cheapest qualifying setting (fewest passes); when none qualifies, the best measured "
             "setting (highest Dice over the two sets). Then Dice(10 steps) - Dice(1 step) at the default's members "
             "and fusion must have a lower end >= -0.003 on every set.", ""]
    decision = default_decision(cells, choice)
    if decision["status"] == "waiting":
        return lines + ["Not decided: waits for " + "; ".join(decision["missing"]) + ".", ""]
    d = decision["default"]
    mean = float(np.mean(list(d["dice"].values())))
    how = "the cheapest qualifying setting" if decision["qualified"] else \
        "no candidate qualifies; the best measured setting"
    lines += [f"**Default: {d['variant']} at {_fmt_setting(d['setting'])}** ({how}; Dice {mean:.4f} averaged over "
              "the two nuclei sets).", ""]
    if not decision["qualified"]:
        lines += [f"It fails: {', '.join(d['failed'])}.", ""]
    lines += ["| set | Dice(10 steps) - Dice(1 step) at the default's members and fusion | holds |", "|---|---|---|"]
    for data, r in decision["multistep"].items():
        holds = "yes" if r["ci"][0] >= -NULL_MARGIN - TOL else "**no**"
        lines.append(f"| {data} | {_estimate(r)} | {holds} |")
    lines += ["", "Candidates at one member without fusion and the default (every setting is in the script's "
              "output):", "", "| candidate | passes | " + " | ".join(f"Dice - supervised, {x}" for x in DECISION_SETS)
              + " | fails |", "|---|---|" + "---|" * len(DECISION_SETS) + "---|"]
    for r in decision["rows"]:
        if (r["setting"][1], r["setting"][2]) != (1, "none") and r is not d:
            continue
        cols = " | ".join(_estimate(r["checks"][x]["dice"]) for x in DECISION_SETS)
        lines.append(f"| {r['variant']}, {_fmt_setting(r['setting'])} | {r['passes']} | {cols} | "
                     f"{', '.join(r['failed']) or 'qualifies'} |")
    return lines + [""]


def secondary_results(cells: Cells, choice: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """The registered secondary comparisons on the primary folds of nuclei-noisy and nuclei-clean, for each metric of
    ``SECONDARY_METRICS``: every diffusion variant minus baseline (at the same setting) and minus supervised (its one
    pass), at 1 step x 1 member and at the variant's best setting in ``choice`` (when chosen and not 1 x 1), primary 1
    left out; supervised x5 minus supervised.

    Returns one dict per comparison: ``data``, ``metric``, ``label``, ``result`` (:func:`compare_settings`'s dict) and
    ``holm`` (Holm-adjusted p over every comparison with a p-value; NaN for the others).
    """
    folds = {_fold(f) for f in ds.PRIMARY_FOLDS}
    settings = choice["settings"] if choice else {}
    bv = choice.get("best_variant") if choice else None
    one = (1, 1, "none")
    out = []
    for data in ds.NUCLEI:
        for metric, _, _ in SECONDARY_METRICS:
            for v in DIFFUSION:
                at = [("1 step x 1 member", one)]
                if v in settings and _setting(settings[v]) != one:
                    at.append((f"best: {_fmt_setting(settings[v])}", _setting(settings[v])))
                for where, s in at:
                    for ref, ref_s in (("baseline", s), ("supervised", one)):
                        primary_1 = ((data, metric, v, ref) == ("nuclei-noisy", "dice", bv, "supervised")
                                     and s == _setting(settings[v]))
                        if v == ref or primary_1:
                            continue  # baseline minus itself; primary 1 (reported above)
                        out.append({"data": data, "metric": metric, "label": f"{v} minus {ref}, {where}",
                                    "result": compare_settings(cells, data, v, s, ref, ref_s, metric, folds)})
            out.append({"data": data, "metric": metric, "label": "supervised x5 minus supervised",
                        "result": compare_settings(cells, data, "supervised-x5", (1, 5, "none"), "supervised", one,
                                                   metric, folds)})
            for v in DIFFUSION:  # step fusion on minus off, at the variant's best steps and members
                if v not in settings:
                    continue
                steps, members, _ = _setting(settings[v])
                for fusion in FUSIONS[1:]:
                    out.append({"data": data, "metric": metric,
                                "label": f"{v}, {fusion} fusion minus none, {steps} steps x {members} members",
                                "result": compare_settings(cells, data, v, (steps, members, fusion), v,
                                                           (steps, members, "none"), metric, folds)})
    # the ambiguous set: HM-IoU (higher is better) of each variant's 16 samples at its best step count and fusion
    # against the 5 networks of supervised x5, as primary 3 compares GED
    for v in DIFFUSION:
        if v not in settings:
            continue
        steps, _, fusion = _setting(settings[v])
        out.append({"data": "ambiguous", "metric": "hm_iou",
                    "label": f"{v} minus supervised x5, {steps} steps x 16 members, fusion {fusion}",
                    "result": compare_settings(cells, "ambiguous", v, (steps, 16, fusion), "supervised-x5",
                                               (1, 5, "none"), "hm_iou", {_fold(0)})})
    adjusted = holm({i: r["result"]["p"] for i, r in enumerate(out)})
    for i, r in enumerate(out):
        r["holm"] = adjusted[i]
    return out


def _secondaries(cells: Cells, choice: dict | None, baselines: Baselines | None = None) -> list[str]:
    results = secondary_results(cells, choice)
    settings = choice["settings"] if choice else {}
    tested = sum(not math.isnan(r["result"]["p"]) for r in results)
    lines = ["## Secondary comparisons (registered; Holm over all of them)", "",
             f"Primary folds 1-3, every variant minus baseline (at the same setting) and minus supervised (its one "
             f"pass), at 1 step x 1 member and at the variant's best setting from the pilot; supervised x5 minus "
             f"supervised. Raw and Holm-adjusted p (two-sided t-test over runs); Holm runs over the {tested} "
             "comparisons that have a p-value so far, so adjusted values grow as runs arrive. None changes a default "
             "by itself. Step fusion on minus off is compared at each variant's best steps and members; HM-IoU on "
             "the ambiguous set. Seconds per image per setting are measured apart from the runs "
             "(`benchmarks/test_bench_settings.py`, benchmarks/RESULTS.md): the runs were timed beside other study "
             "processes.", ""]
    if not settings:
        lines += ["The best-setting rows wait for the pilot's choice.", ""]
    folds = {_fold(f) for f in ds.PRIMARY_FOLDS}
    for data, metric, name, better in [*((d, *m) for d in ds.NUCLEI for m in SECONDARY_METRICS),
                                       ("ambiguous", "hm_iou", "HM-IoU", "higher")]:
        rs = [r for r in results if r["data"] == data and r["metric"] == metric]
        if not any(r["result"]["n"] for r in rs):
            continue
        lines += [f"### {data}, {name} ({better} is better)", "",
                  "| comparison | estimate [95 % CI] (n) | p | Holm p |", "|---|---|---|---|"]
        lines += [f"| {r['label']} | {_estimate(r['result'])} | {_p(r['result']['p'])} | {_p(r['holm'])} |"
                  for r in rs]
        if metric == "dice":
            lines.append(_supervised_row(cells, data, folds, 4, baselines))
        lines.append("")
    if not any(r["result"]["n"] for r in results):
        lines += ["No primary-fold runs with paired references yet.", ""]
    return lines


def _pilot_tables(cells: Cells, choice: dict | None, baselines: Baselines | None = None) -> list[str]:
    fold = _fold(ds.PILOT_FOLD)
    chosen = {}
    if choice:
        for v, s in choice["settings"].items():
            chosen[X0_WEIGHTS.get(choice["x0_loss_weight"], v) if v == "x0-loss" else v] = _setting(s)
    lines = ["## Pilot table: mean Dice at every setting (fold 0, mean over the pilot runs)", "",
             "Whole held-out strip; **bold**: the variant's best setting (rule 2). Read along a row to see how Dice "
             "moves with DDIM steps.", ""]
    found = False
    for data in ds.NUCLEI:
        variants = list(dict.fromkeys(v for (d, f, v, _) in sorted(cells) if d == data and f == fold))
        if not variants:
            continue
        found = True
        steps = " | ".join(f"{s} step{'s' if s != 1 else ''}" for s in ds.EVAL_STEPS)
        lines += [f"### {data}", "", f"| variant | runs | members | fusion | {steps} |",
                  "|---|---|---|---|" + "---|" * len(ds.EVAL_STEPS)]
        for v in sorted(variants, key=lambda x: (x.startswith("supervised"), x)):
            runs = {s: c for (d, f, x, s), c in cells.items() if d == data and f == fold and x == v}
            have = set().union(*(settings_of(c) for c in runs.values()))
            for m in ds.EVAL_MEMBERS:
                for fu in FUSIONS:
                    if not any((s, m, fu) in have for s in ds.EVAL_STEPS):
                        continue
                    row = []
                    for s in ds.EVAL_STEPS:
                        mean, n = _mean_over_runs(cells, data, v, (s, m, fu), {fold})
                        text = "-" if not n else f"{mean:.4f}"
                        row.append(f"**{text}**" if data == PILOT_DATA and chosen.get(v) == (s, m, fu) else text)
                    lines.append(f"| {v} | {len(runs)} | {m} | {fu} | " + " | ".join(row) + " |")
        lines.append(_supervised_row(cells, data, {fold}, 5 + len(ds.EVAL_STEPS) - 1, baselines))
        lines.append("")
    return lines if found else lines + ["No pilot runs yet.", ""]


def _runs_table(cells: Cells) -> list[str]:
    by: dict[tuple[str, str, str], list[int]] = {}
    for d, f, v, s in sorted(cells):
        by.setdefault((d, f, v), []).append(s)
    lines = ["## Runs collected per data set, fold and variant", "", "| data | fold | variant | runs | seeds |",
             "|---|---|---|---|---|"]
    lines += [f"| {d} | {f} | {v} | {len(s)} | {', '.join(map(str, s))} |" for (d, f, v), s in sorted(by.items())]
    return lines + [""]


def _curves(cells: Cells) -> list[str]:
    lines = ["## Validation curves (last value, mean over runs; monitoring only)", "",
             "| data | variant | runs | val Dice |", "|---|---|---|---|"]
    by: dict[tuple[str, str], list[float]] = {}
    for (d, _, v, _), c in cells.items():
        if c.get("curve"):
            by.setdefault((d, v), []).append(c["curve"][-1][1])
    return lines + [f"| {d} | {v} | {len(x)} | {np.mean(x):.4f} |" for (d, v), x in sorted(by.items())] + [""]


def write_report(cells_root: Path, page: Path, choice_file: Path | None = None) -> str:
    """Write ``page`` (``docs/diffusion_study.md``) from the cells under ``cells_root`` and return its text: the runs
    collected, the pilot's choice (``choice_file``, default ``cells_root/../choice.json``; computed from the pilot
    cells, marked uncommitted, when absent; or what it waits for), the positive control, the three registered
    primaries (each "not evaluated (n runs of m)" until it has all its runs), the default the registered rule gives
    (:func:`default_decision`; "not decided" until its runs are complete), the secondary comparisons with raw and
    Holm-adjusted p, the pilot table and the validation curves' last values. No verdict is printed for n < 2."""
    cells_root, page = Path(cells_root), Path(page)
    cells = load(cells_root)
    choice, choice_lines = _choice_for_page(cells, Path(choice_file) if choice_file else cells_root.parent /
                                            "choice.json")
    baselines = load_baselines(cells_root)
    control, warning = _positive_control(cells, baselines)
    lines = ["# Does diffusion earn its steps?", "", *warning,
             "Registered before any run: [diffusion_study/registration.md](diffusion_study/registration.md). "
             "Built by `python scripts/diffusion_study.py report` from `docs/diffusion_study/cells` (one JSON per "
             "training run, with the commit that trained it). The unit is a training run (fold, seed); every "
             "difference is paired on the same fold, seed and sampling noise.", "",
             f"Runs collected: **{len(cells)}**.", ""]
    lines += _runs_table(cells) + choice_lines + control + _primaries(cells, choice, baselines)
    lines += _decision(cells, choice) + _secondaries(cells, choice, baselines)
    lines += _pilot_tables(cells, choice, baselines) + _curves(cells)
    text = "\n".join(lines).rstrip() + "\n"
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text(text)
    return text
