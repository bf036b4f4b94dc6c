"""scripts/diffusion_study_report.py: the pilot's choice follows registration rules 1-4 (tie and cheapest-pass rules
included), refuses missing pilot runs and a change of a frozen choice; paired differences equal a hand computation;
Holm runs over the secondaries; the page renders with partial and with full data, and from the real cells."""

from __future__ import annotations

import json
import math
import re
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
pytest.importorskip("scipy.stats")
import diffusion_study as ds  # noqa: E402
import diffusion_study_report as rep  # noqa: E402

from spadfast.study.ablate import slug  # noqa: E402
from spadfast.study.stats import holm  # noqa: E402

GRID = [(s, m, f) for s in ds.EVAL_STEPS for m in ds.EVAL_MEMBERS for f in rep.FUSIONS]
ONE = (1, 1, "none")


def _case(name: str, dice: float, ged: float | None) -> dict:
    case = {"name": name, "dice": dice, "iou": dice - 0.05, "hd95": 10 * (1 - dice), "boundary_f1": dice - 0.1,
            "spurious": 0.0, "brier": (1 - dice) / 3, "ece": (1 - dice) / 4, "brier_band": (1 - dice) / 2,
            "ece_band": (1 - dice) / 5, "aurc": (1 - dice) / 10}
    if ged is not None:
        case.update(ged=ged, hm_iou=dice - 0.2, brier_prob=0.1, ece_prob=0.1)
    return case


def write_cell(root: Path, data: str, fold: int, variant: str, seed: int, dice, grid=GRID,
               cases=("strip",), ged=None, curve=None) -> Path:
    """A cell whose case ``name`` at ``setting`` has Dice ``dice(setting, name)`` (or the float ``dice``) and GED
    ``ged(setting, name)`` when given."""
    study = []
    for s, m, f in grid:
        cs = [_case(n, dice(((s, m, f)), n) if callable(dice) else dice,
                    None if ged is None else ged((s, m, f), n)) for n in cases]
        study.append({"steps": float(s), "ensemble": float(m), "step_fusion": f, "seconds_per_image": None,
                      "mean": {"dice": float(np.mean([c["dice"] for c in cs]))}, "cases": cs})
    path = root / data / f"fold{fold}" / slug(variant) / f"seed{seed}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    steps = rep.registered_steps(variant) if variant != "supervised-x5" else None
    path.write_text(json.dumps({"data": data, "fold": fold, "variant": variant, "seed": seed, "train_seconds": 1.0,
                                "config": {"train_steps": steps} if steps else None, "steps": steps,
                                "curve": curve or [[3000, 0.9]], "study": study}))
    return path


# the pilot: {variant: (default Dice, {setting: Dice})}; the mean over seeds 0 and 1 is the listed value
PILOT = {
    "baseline": (0.90, {}),
    # rule 2, tie within 0.002: 0.9281 at 2 passes beats 0.9300 at 400 and 0.9295 at 80
    "self-cond": (0.91, {(25, 16, "mean"): 0.930, (5, 16, "none"): 0.9295, (2, 1, "none"): 0.9281}),
    # 0.0021 below the best is no tie; of the two ties at 5 passes the higher Dice wins
    "recycle": (0.90, {(25, 16, "none"): 0.925, (2, 1, "none"): 0.9229, (5, 1, "none"): 0.9245,
                       (1, 5, "mean"): 0.9248}),
    # equal Dice and passes: fusion none < mean < uncertainty
    "prior": (0.905, {(2, 1, "uncertainty"): 0.92, (2, 1, "mean"): 0.92, (2, 1, "none"): 0.92}),
    # rule 1: 0.3 has the highest Dice at 10 steps x 1 member
    "x0-loss-0.1": (0.90, {(10, 1, "none"): 0.91}),
    "x0-loss-0.3": (0.915, {}),
    "x0-loss-1": (0.90, {(10, 1, "none"): 0.905}),
}
COMBINATION = (0.935, {})


def write_pilot(root: Path, table=PILOT, seeds=(0, 1), skip=()) -> None:
    for variant, (default, special) in table.items():
        for seed in seeds:
            if (variant, seed) in skip:
                continue
            jitter = 0.001 if seed == 0 else -0.001  # the two runs differ; their mean is the listed value

            def dice(setting, _name, default=default, special=special, jitter=jitter):
                return special.get(setting, default) + jitter

            write_cell(root, "nuclei-noisy", 0, variant, seed, dice)
    for seed in seeds:
        write_cell(root, "nuclei-noisy", 0, "supervised", seed, 0.89, grid=[ONE])


def test_setting_cases_picks_the_record_and_raises_key_error(tmp_path):
    path = write_cell(tmp_path, "ambiguous", 0, "baseline", 0, lambda s, n: 0.5 + s[0] / 100 + s[1] / 1000,
                      cases=("z076", "z078"), ged=lambda s, n: 0.3)
    cell = json.loads(path.read_text())
    assert rep.setting_cases(cell, 10, 5, "mean", "dice") == pytest.approx({"z076": 0.605, "z078": 0.605})
    assert rep.setting_cases(cell, 1, 16, "none", "ged") == {"z076": 0.3, "z078": 0.3}
    with pytest.raises(KeyError):
        rep.setting_cases(cell, 3, 1, "none", "dice")
    with pytest.raises(KeyError):
        rep.setting_cases(cell, 1, 1, "sharpest", "dice")
    with pytest.raises(KeyError):
        rep.setting_cases(cell, 1, 1, "none", "no_such_metric")
    # a record without step_fusion (an older grid) counts as unfused
    del cell["study"][0]["step_fusion"]
    assert rep.setting_cases(cell, 1, 1, "none", "dice") == pytest.approx({"z076": 0.511, "z078": 0.511})


def test_best_setting_tie_rules():
    # within 0.002 of the best: fewest passes; exactly 0.002 below is still a tie
    assert rep.best_setting({(25, 16, "none"): 0.930, (2, 1, "none"): 0.928, (1, 1, "none"): 0.9279}) == (2, 1, "none")
    # equal passes: the higher Dice, then fusion none < mean < uncertainty
    assert rep.best_setting({(5, 1, "none"): 0.9245, (1, 5, "mean"): 0.9248, (25, 16, "none"): 0.925}) == (1, 5, "mean")
    assert rep.best_setting({(2, 1, "uncertainty"): 0.92, (2, 1, "mean"): 0.92}) == (2, 1, "mean")
    assert rep.best_setting({(2, 1, "uncertainty"): 0.92, (2, 1, "mean"): 0.92, (2, 1, "none"): 0.92}) == (2, 1, "none")
    # a clear best (more than 0.002 above) wins whatever it costs
    assert rep.best_setting({(25, 16, "mean"): 0.93, (1, 1, "none"): 0.9279}) == (25, 16, "mean")
    with pytest.raises(ValueError):
        rep.best_setting({(1, 1, "none"): math.nan})


def test_pilot_choice_follows_rules_1_to_4(tmp_path):
    write_pilot(tmp_path)
    choice = rep.pilot_choice(rep.load(tmp_path))
    # rule 1
    assert choice["x0_loss_weight"] == 0.3
    assert choice["x0_loss_dice"] == pytest.approx({"0.1": 0.91, "0.3": 0.915, "1.0": 0.905})
    s = {v: (x["steps"], x["members"], x["fusion"]) for v, x in choice["settings"].items()}
    # rule 2: tie within 0.002 -> cheapest; 0.0021 below is no tie; equal passes -> higher Dice; then fusion order
    assert s["self-cond"] == (2, 1, "none") and choice["settings"]["self-cond"]["dice"] == pytest.approx(0.9281)
    assert choice["settings"]["self-cond"]["passes"] == 2
    assert s["recycle"] == (1, 5, "mean") and choice["settings"]["recycle"]["passes"] == 5
    assert s["prior"] == (2, 1, "none")
    assert s["baseline"] == ONE  # every setting equal: the cheapest
    assert s["x0-loss"] == ONE and choice["settings"]["x0-loss"]["dice"] == pytest.approx(0.915)  # the 0.3 runs
    # rule 3: self-cond 0.9281 and recycle 0.9248 beat prior 0.92 and x0-loss 0.915
    assert choice["best_combination"] == ["self-cond", "recycle"]
    # rule 4 waits for the best-combination pilot runs
    assert "best_variant" not in choice and "best-combination" in choice["pending"][0]
    assert "x0-loss-0.1" in choice["pilot_table"] and "supervised" in choice["pilot_table"]
    assert len(choice["pilot_table"]["baseline"]) == len(GRID)
    json.dumps(choice)  # JSON-able
    write_pilot(tmp_path, {"best-combination": COMBINATION})
    choice = rep.pilot_choice(rep.load(tmp_path))
    assert choice["best_variant"] == "best-combination" and choice["pending"] == []
    assert choice["settings"]["best-combination"]["steps"] == 1


def test_rule_3_names_x0_loss_and_rule_4_can_pick_a_single_change(tmp_path):
    table = dict(PILOT)
    table["x0-loss-0.3"] = (0.915, {(10, 1, "none"): 0.915, (5, 1, "none"): 0.94})
    write_pilot(tmp_path, table)
    write_pilot(tmp_path, {"best-combination": (0.93, {})})
    choice = rep.pilot_choice(rep.load(tmp_path))
    assert choice["best_combination"] == ["x0-loss", "self-cond"]
    assert choice["best_variant"] == "x0-loss"
    assert choice["settings"]["x0-loss"]["steps"] == 5


def test_missing_pilot_seeds_are_refused_by_name(tmp_path):
    write_pilot(tmp_path, skip={("prior", 1), ("x0-loss-1", 0)})
    with pytest.raises(ValueError, match="missing: x0-loss-1 seed0, prior seed1"):
        rep.pilot_choice(rep.load(tmp_path))
    # one best-combination run is not enough for rule 4: it stays pending, naming the missing seed
    write_pilot(tmp_path / "b")
    write_pilot(tmp_path / "b", {"best-combination": COMBINATION}, seeds=(0,))
    choice = rep.pilot_choice(rep.load(tmp_path / "b"))
    assert "best_variant" not in choice and "best-combination seed1" in choice["pending"][0]
    # runs of other folds or data sets do not stand in for the pilot's
    write_pilot(tmp_path / "c", skip={("baseline", 0)})
    write_cell(tmp_path / "c", "nuclei-noisy", 1, "baseline", 0, 0.9)
    write_cell(tmp_path / "c", "nuclei-clean", 0, "baseline", 0, 0.9)
    with pytest.raises(ValueError, match="missing: baseline seed0"):
        rep.pilot_choice(rep.load(tmp_path / "c"))


def test_write_choice_writes_what_the_runner_reads_and_freezes_it(tmp_path, monkeypatch):
    cells, choice_json, choice_md = tmp_path / "cells", tmp_path / "choice.json", tmp_path / "choice.md"
    write_pilot(cells)
    rep.write_choice(cells, choice_json, choice_md)
    saved = json.loads(choice_json.read_text())
    assert saved["x0_loss_weight"] == 0.3 and isinstance(saved["x0_loss_weight"], float)
    assert saved["best_combination"] == ["self-cond", "recycle"] and "best_variant" not in saved
    md = choice_md.read_text()
    assert "0.9281" in md and "self-cond + recycle" in md and "Not chosen yet" in md
    # the runner resolves the chosen variants from it
    monkeypatch.setattr(ds, "CHOICE_FILE", choice_json)
    try:
        assert ds.variant_overrides("x0-loss") == {"x0_loss_weight": 0.3}
        assert ds.variant_overrides("best-combination") == {"self_condition": True, "recycle": True}
    except ValueError as e:  # a spadfast without one of these config keys
        assert "lacks" in str(e)
    # the same cells again: nothing changes; adding best_variant later is allowed
    rep.write_choice(cells, choice_json, choice_md)
    write_pilot(cells, {"best-combination": COMBINATION})
    rep.write_choice(cells, choice_json, choice_md)
    saved = json.loads(choice_json.read_text())
    assert saved["best_variant"] == "best-combination" and saved["x0_loss_weight"] == 0.3
    assert "**best-combination**" in choice_md.read_text()
    # new pilot numbers that would change a frozen key are refused and leave the file as it was
    before = choice_json.read_text()
    write_pilot(cells, {"x0-loss-1": (0.90, {(10, 1, "none"): 0.95})})
    with pytest.raises(ValueError, match="x0_loss_weight: 0.3 -> 1.0"):
        rep.write_choice(cells, choice_json, choice_md)
    assert choice_json.read_text() == before
    write_pilot(cells, {"x0-loss-1": (0.90, {(10, 1, "none"): 0.905})})
    write_pilot(cells, {"prior": (0.95, {})})
    with pytest.raises(ValueError, match="best_combination"):
        rep.write_choice(cells, choice_json, choice_md)


def test_choose_step_of_the_runner(tmp_path, monkeypatch, capsys):
    cells = tmp_path / "cells"
    write_pilot(cells)
    monkeypatch.setattr(ds, "CHOICE_FILE", tmp_path / "out" / "choice.json")
    assert ds.main(["choose", "--dest", str(cells)]) == 0
    assert json.loads((tmp_path / "out" / "choice.json").read_text())["best_combination"] == ["self-cond", "recycle"]
    assert (tmp_path / "out" / "choice.md").is_file()
    assert ds.main(["choose", "--dest", str(tmp_path / "no-cells")]) == 2
    assert "missing: baseline seed0" in capsys.readouterr().err


def test_paired_differences_equal_a_hand_computation(tmp_path):
    from scipy import stats

    cases = ("z1", "z2", "z3")
    a_vals, b_vals = {}, {}
    rng = np.random.default_rng(0)
    for fold in (1, 2):
        for seed in (0, 1, 2):
            a_vals[fold, seed] = rng.uniform(0.8, 0.9, 3)
            b_vals[fold, seed] = rng.uniform(0.8, 0.9, 3)
            a_vals[fold, seed][2] = math.nan if (fold, seed) == (1, 1) else a_vals[fold, seed][2]
            # a at 10 steps x 5 members (mean fusion); other settings of a hold other numbers
            write_cell(tmp_path, "ambiguous", fold, "recycle", seed,
                       lambda s, n, v=a_vals[fold, seed]: v[cases.index(n)] if s == (10, 5, "mean") else 0.1,
                       cases=cases)
            write_cell(tmp_path, "ambiguous", fold, "supervised", seed,
                       lambda s, n, v=b_vals[fold, seed]: v[cases.index(n)], grid=[ONE], cases=cases)
    write_cell(tmp_path, "ambiguous", 3, "recycle", 0, 0.5, cases=cases)  # fold 3: not asked for
    write_cell(tmp_path, "ambiguous", 2, "recycle", 7, 0.5, cases=cases)  # no supervised pair: no unit
    cells = rep.load(tmp_path)
    r = rep.compare_settings(cells, "ambiguous", "recycle", (10, 5, "mean"), "supervised", ONE, "dice", [1, 2])
    per_unit = []
    for fold in (1, 2):
        for seed in (0, 1, 2):
            d = a_vals[fold, seed] - b_vals[fold, seed]
            per_unit.append(float(np.mean(d[np.isfinite(d)])))
    mean = np.mean(per_unit)
    half = stats.t.ppf(0.975, 5) * np.std(per_unit, ddof=1) / math.sqrt(6)
    assert r["n"] == 6 and r["mean"] == pytest.approx(mean)
    assert r["ci"] == pytest.approx((mean - half, mean + half))
    assert r["p"] == pytest.approx(stats.ttest_1samp(per_unit, 0).pvalue)
    assert r["per_unit"]["fold1/seed1"] == pytest.approx(per_unit[1])
    assert math.isnan(r["boot"][0])
    assert r["verdict"] == rep.verdict(*r["ci"], 0.003)
    # the setting can be a dict; seeds filter; the bootstrap on request
    r2 = rep.compare_settings(cells, "ambiguous", "recycle", {"steps": 10, "members": 5, "fusion": "mean"},
                              "supervised", ONE, "dice", ["fold1", "fold2"], n_boot=200, seeds=[0, 2])
    assert r2["n"] == 4 and r2["mean"] == pytest.approx(np.mean([per_unit[i] for i in (0, 2, 3, 5)]))
    assert r2["boot"][0] <= r2["boot"][1]
    # a setting a run was not scored at gives no unit
    assert rep.compare_settings(cells, "ambiguous", "recycle", (3, 1, "none"), "supervised", ONE, "dice",
                                [1, 2])["n"] == 0


def _noise(*key) -> float:
    """A fixed N(0, 0.002) draw per key (not ``hash``: string hashes change between processes)."""
    return float(np.random.default_rng(zlib.crc32(repr(key).encode())).normal(0, 0.002))


def write_primary(root: Path, folds=(1, 2, 3), seeds=range(4), amb_seeds=range(6)) -> None:
    """Primary-fold cells: best-combination about 0.03 above supervised, 10 steps within +-0.001 of 1 step, the
    noisy baseline 0.03 below the clean one, and on the ambiguous set a GED 0.05 below supervised x5."""
    for fold in folds:
        for seed in seeds:
            for data, base in (("nuclei-noisy", 0.90), ("nuclei-clean", 0.93)):
                u = _noise(data, fold, seed)
                write_cell(root, data, fold, "baseline", seed, lambda s, n, b=base + u: b + 0.001 * s[0] / 25)
                write_cell(root, data, fold, "supervised", seed, base - 0.003 + _noise(data, fold, seed, "s"),
                           grid=[ONE])
                write_cell(root, data, fold, "supervised-x5", seed, base + _noise(data, fold, seed, "x5"),
                           grid=[(1, 5, "none")])
                e = _noise(data, fold, seed, "c")
                write_cell(root, data, fold, "best-combination", seed,
                           lambda s, n, b=base + 0.03 + u, e=e: b + (e / 4 if s[0] == 10 else 0))
    for seed in amb_seeds:
        names = [f"z{z:03d}" for z in ds.AMBIG_TEST]
        write_cell(root, "ambiguous", 0, "best-combination", seed, 0.8, cases=names,
                   ged=lambda s, n, seed=seed: 0.30 + _noise("g", seed, n))
        write_cell(root, "ambiguous", 0, "supervised-x5", seed, 0.8, cases=names, grid=[(1, 5, "none")],
                   ged=lambda s, n, seed=seed: 0.35 + _noise("x", seed, n))


def _row(page: str, start: str) -> str:
    return next(line for line in page.splitlines() if line.startswith(start))


def test_page_with_partial_data_says_not_evaluated(tmp_path):
    cells = tmp_path / "cells"
    write_pilot(cells, skip={("prior", 1)})
    page = rep.write_report(cells, tmp_path / "page.md")
    assert page == (tmp_path / "page.md").read_text()
    assert "Not made yet" in page and "prior seed1" in page
    assert "not evaluated (waits for the pilot's best variant" in page
    assert "| baseline, noisy minus clean annotations | not evaluated (0 runs of 12) |" in page
    # the choice made, a few primary runs in: "not evaluated (n runs of m)", no verdict anywhere
    write_pilot(cells)
    write_pilot(cells, {"best-combination": COMBINATION})
    write_primary(cells, folds=(1,), seeds=(0, 1), amb_seeds=(0,))
    write_cell(cells, "nuclei-clean", 2, "recycle", 0, 0.9)
    write_cell(cells, "nuclei-clean", 2, "baseline", 0, 0.9)
    page = rep.write_report(cells, tmp_path / "page.md")
    assert "not committed yet" in page
    for start in ("| 1. best-combination", "| 2. best-combination", "| 3. best-combination",
                  "| baseline, noisy minus clean"):
        row = _row(page, start)
        assert "not evaluated (" in row and row.endswith(") | | |")  # no estimate, bootstrap or verdict
    assert "not evaluated (2 runs of 12)" in _row(page, "| 1. best-combination")
    assert "not evaluated (1 runs of 6)" in _row(page, "| 3. best-combination")
    # a secondary with one run shows its estimate without an interval and without a verdict
    assert "| recycle minus baseline, 1 step x 1 member | +0.0000 (n=1, no interval) | - | - |" in page
    assert "supervised network's mean Dice (nuclei-noisy), for reference* | 0.8900 (mean of 2 runs)" in page
    assert "| nuclei-noisy | fold0 | self-cond | 2 | 0, 1 |" in page
    # the pilot table shows every setting, the chosen one in bold
    assert "**0.9281**" in page and "| self-cond | 2 | 16 | mean |" in page


def test_page_with_full_data_shows_verdicts_and_holm(tmp_path):
    cells = tmp_path / "cells"
    write_pilot(cells)
    write_pilot(cells, {"best-combination": COMBINATION})
    rep.write_choice(cells, tmp_path / "choice.json", tmp_path / "choice.md")
    write_primary(cells)
    page = rep.write_report(cells, tmp_path / "page.md")
    assert "Committed in" in page and "not committed yet" not in page
    assert _row(page, "| 1. best-combination").endswith("| higher |")
    assert _row(page, "| 2. best-combination").endswith("| null |")
    row3 = _row(page, "| 3. best-combination")
    assert row3.endswith("| lower |") and "lower is better" in row3 and "(n=6)" in row3
    assert "(n=12)" in _row(page, "| 1. best-combination")
    assert _row(page, "| baseline, noisy minus clean").endswith("| lower |") and "The control passes" in page
    assert "positive control failed" not in page
    # Holm: over every secondary with a p-value, as spadfast.study.stats.holm computes it
    choice = json.loads((tmp_path / "choice.json").read_text())
    results = rep.secondary_results(rep.load(cells), choice)
    pvalues = {i: r["result"]["p"] for i, r in enumerate(results)}
    assert sum(not math.isnan(p) for p in pvalues.values()) > 10
    expected = holm(pvalues)
    for i, r in enumerate(results):
        assert (math.isnan(r["holm"]) and math.isnan(expected[i])) or r["holm"] == pytest.approx(expected[i])
        assert math.isnan(r["result"]["p"]) or r["holm"] >= r["result"]["p"]
    finite = sorted(p for p in pvalues.values() if not math.isnan(p))
    smallest = min((r for r in results if not math.isnan(r["result"]["p"])), key=lambda r: r["result"]["p"])
    assert smallest["holm"] == pytest.approx(min(1.0, len(finite) * finite[0]))
    # primary 1 is not repeated among the secondaries
    labels = {(r["data"], r["metric"], r["label"]) for r in results}
    assert ("nuclei-noisy", "dice", "best-combination minus supervised, 1 step x 1 member") not in labels
    assert ("nuclei-clean", "dice", "best-combination minus supervised, 1 step x 1 member") in labels
    row = next(r for r in results if r["data"] == "nuclei-clean" and r["metric"] == "dice"
               and r["label"] == "best-combination minus supervised, 1 step x 1 member")
    assert f"| {row['label']} | {rep._estimate(row['result'])} | {rep._p(row['result']['p'])} | " \
           f"{rep._p(row['holm'])} |" in page


def test_trivial_baselines_stand_beside_every_supervised_reference(tmp_path):
    cells = tmp_path / "cells"
    write_pilot(cells)
    write_primary(cells, folds=(1, 2), seeds=(0,), amb_seeds=())
    for fold, otsu in ((0, 0.70), (1, 0.80), (2, 0.90)):
        (cells / "nuclei-noisy" / f"fold{fold}" / ds.BASELINES_FILE).write_text(json.dumps(
            {"Otsu per image": otsu, "intensity threshold tuned on training images": otsu + 0.01}))
    assert rep.load_baselines(cells)["nuclei-noisy", "fold1"]["Otsu per image"] == 0.80
    page = rep.write_report(cells, tmp_path / "page.md")
    rows = [line for line in page.splitlines() if line.startswith("| *trivial baselines (nuclei-noisy)")]
    # primaries, positive control and the secondary Dice table over the primary folds (1, 2); the pilot table (fold 0)
    primary = ("| *trivial baselines (nuclei-noisy), same held-out images, mean over 2 fold(s)* | Otsu per image "
               "0.8500, intensity threshold tuned on training images 0.8600 |")
    assert sum(r.startswith(primary) for r in rows) == 3
    assert any(r.startswith("| *trivial baselines (nuclei-noisy), same held-out images, mean over 1 fold(s)* | Otsu "
                            "per image 0.7000,") for r in rows)
    supervised = [i for i, line in enumerate(page.splitlines()) if line.startswith("| *supervised network's")]
    assert all(page.splitlines()[i + 1].startswith("| *trivial baselines") for i in supervised
               if "(nuclei-noisy)" in page.splitlines()[i])


def test_a_failed_positive_control_is_said_first(tmp_path):
    cells = tmp_path / "cells"
    for fold in (1, 2, 3):
        for seed in range(4):
            write_cell(cells, "nuclei-noisy", fold, "baseline", seed, 0.93 + _noise(fold, seed, "n"))
            write_cell(cells, "nuclei-clean", fold, "baseline", seed, 0.93 + _noise(fold, seed, "c"))
    page = rep.write_report(cells, tmp_path / "page.md")
    assert page.index("positive control failed") < page.index("## Primary comparisons")
    assert "The control **fails**" in page


def test_runner_report_delegates_and_keeps_its_progress_lines(tmp_path, monkeypatch):
    cells = tmp_path / "cells"
    write_cell(cells, "ambiguous", 0, "baseline", 0, 0.7, grid=[(1, 1, "none"), (1, 2, "none"), (2, 1, "none"),
                                                                 (2, 2, "none")], cases=("z007",),
               curve=[[2, 0.5], [4, 0.6]])
    monkeypatch.setattr(ds, "CHOICE_FILE", tmp_path / "choice.json")
    page = ds.write_report(cells, tmp_path / "page.md")
    assert "Runs collected: **1**" in page and "| ambiguous | baseline | 1 | 0.6000 |" in page


def test_report_on_the_real_cells(tmp_path):
    cells = ROOT / "docs" / "diffusion_study" / "cells"
    page = rep.write_report(cells, tmp_path / "page.md", choice_file=ROOT / "docs" / "diffusion_study" /
                            "choice.json")
    n = len(list(cells.glob("*/fold*/*/seed*.json")))
    assert f"Runs collected: **{n}**" in page and "## Primary comparisons" in page
    assert "## Pilot table" in page and "## Validation curves" in page
    verdicts = [line for line in page.splitlines() if re.search(r"\| (higher|lower|null|inconclusive) \|", line)]
    for line in page.splitlines():
        if re.search(r"\(n=[01]\b", line) or "not evaluated" in line:  # (n=12) is a full comparison
            assert line not in verdicts, line
        if line.startswith(("| 1. ", "| 2. ")) and "(n=12)" in line:  # a complete nuclei primary has its verdict
            assert line in verdicts, line


def test_page_marks_what_the_cells_add_to_a_committed_choice(tmp_path):
    cells = tmp_path / "cells"
    write_pilot(cells)
    rep.write_choice(cells, tmp_path / "choice.json", tmp_path / "choice.md")  # before rule 4 can run
    page = rep.write_report(cells, tmp_path / "page.md")
    assert "Committed in [diffusion_study/choice.md]" in page and "Rule 4, best variant: not chosen yet" in page
    write_pilot(cells, {"best-combination": COMBINATION})
    write_primary(cells, folds=(1,), seeds=(0,), amb_seeds=())
    page = rep.write_report(cells, tmp_path / "page.md")
    assert "now also give best_variant, the setting of best-combination: **not committed yet**" in page
    assert "Rule 4, best variant: **best-combination**" in page
    assert "not evaluated (1 runs of 12)" in _row(page, "| 1. best-combination")
    # cells that contradict the committed choice: a warning, and the committed choice stays in use
    write_pilot(cells, {"x0-loss-1": (0.90, {(10, 1, "none"): 0.95})})
    page = rep.write_report(cells, tmp_path / "page.md")
    assert "Warning: the pilot cells now give a different choice" in page and "x0-loss weight: **0.3**" in page


def test_secondaries_compare_fusion_on_and_off_and_hm_iou_on_the_ambiguous_set(tmp_path):
    """Step fusion on minus off at the variant's best steps and members, per fusion; HM-IoU of the 16 samples at its
    best step count and fusion against supervised x5 on the ambiguous set; both inside Holm's family."""
    for fold in (1, 2, 3):
        for seed in range(2):
            u = _noise("f", fold, seed)
            write_cell(tmp_path, "nuclei-noisy", fold, "recycle", seed,
                       lambda s, n, u=u: 0.90 + u + {"none": 0.0, "mean": 0.01, "uncertainty": 0.02}[s[2]])
    names = ("z1", "z2")
    for seed in range(3):
        write_cell(tmp_path, "ambiguous", 0, "recycle", seed, 0.8, cases=names,
                   ged=lambda s, n: 0.3)  # hm_iou = dice - 0.2 = 0.6 at every setting
        write_cell(tmp_path, "ambiguous", 0, "supervised-x5", seed, 0.7 + 0.01 * seed, cases=names,
                   grid=[(1, 5, "none")], ged=lambda s, n: 0.3)  # hm_iou 0.5 + 0.01 seed
    choice = {"settings": {"recycle": {"steps": 10, "members": 5, "fusion": "mean"}}, "best_variant": "recycle"}
    results = rep.secondary_results(rep.load(tmp_path), choice)
    by_label = {(r["data"], r["metric"], r["label"]): r for r in results}
    mean_on = by_label["nuclei-noisy", "dice", "recycle, mean fusion minus none, 10 steps x 5 members"]["result"]
    unc_on = by_label["nuclei-noisy", "dice", "recycle, uncertainty fusion minus none, 10 steps x 5 members"]["result"]
    assert mean_on["n"] == 6 and mean_on["mean"] == pytest.approx(0.01)
    assert unc_on["n"] == 6 and unc_on["mean"] == pytest.approx(0.02)
    hm = by_label["ambiguous", "hm_iou", "recycle minus supervised x5, 10 steps x 16 members, fusion mean"]["result"]
    assert hm["n"] == 3 and hm["mean"] == pytest.approx(0.6 - np.mean([0.5, 0.51, 0.52]))
    tested = {i: r["result"]["p"] for i, r in enumerate(results)}
    assert [r["holm"] for r in results] == pytest.approx(list(holm(tested).values()), nan_ok=True)
    page = rep.write_report(tmp_path, tmp_path / "page.md", choice_file=tmp_path / "none.json")
    assert "HM-IoU" in page and "benchmarks/test_bench_settings.py" in page


def test_cells_of_another_protocol_are_refused_naming_the_file(tmp_path):
    good = write_cell(tmp_path, "nuclei-noisy", 1, "baseline", 0, 0.9)
    assert len(rep.load(tmp_path)) == 1
    cell = json.loads(good.read_text())
    for change, match in ((dict(config={"train_steps": 4}, steps=4), "trained 4 of 4 steps where the registration "
                                                                     "gives 3000"),
                          (dict(variant="spad-input"), "variant 'spad-input'"),
                          (dict(data="clean"), "data set 'clean'"),
                          (dict(variant="recycle"), "sits under"),
                          (dict(study=[]), "no grid")):
        good.write_text(json.dumps({**cell, **change}))
        with pytest.raises(ValueError, match=match) as err:
            rep.load(tmp_path)
        assert str(good) in str(err.value) and "another protocol" in str(err.value)
    assert rep.registered_steps("prior") == 6000 and rep.registered_steps("x0-loss") == 3000


def _choose(cells: Path, tmp_path: Path) -> dict:
    write_pilot(cells)
    write_pilot(cells, {"best-combination": COMBINATION})
    return rep.write_choice(cells, tmp_path / "choice.json", tmp_path / "choice.md")


def test_default_decision_waits_for_every_run_and_names_what_is_missing(tmp_path):
    cells = tmp_path / "cells"
    choice = _choose(cells, tmp_path)
    assert rep.default_decision(rep.load(cells), None)["status"] == "waiting"
    write_primary(cells, folds=(1, 2, 3), seeds=range(3))
    decision = rep.default_decision(rep.load(cells), choice)
    assert decision["status"] == "waiting"
    assert "best-combination on nuclei-noisy: 9 runs of 12" in decision["missing"]
    assert "supervised on nuclei-clean: 9 runs of 12" in decision["missing"]
    page = rep.write_report(cells, tmp_path / "page.md")
    assert "Not decided: waits for best-combination on nuclei-clean: 9 runs of 12" in page


def test_default_decision_takes_the_cheapest_qualifying_setting_and_checks_multistep(tmp_path):
    cells = tmp_path / "cells"
    choice = _choose(cells, tmp_path)
    write_primary(cells)
    decision = rep.default_decision(rep.load(cells), choice)
    assert decision["status"] == "decided" and decision["qualified"]
    # best-combination and baseline both qualify at 1 x 1 (1 pass); the higher Dice over both sets wins
    assert (decision["default"]["variant"], decision["default"]["setting"]) == ("best-combination", ONE)
    assert len(decision["rows"]) == 2 * len(GRID)
    assert set(decision["multistep"]) == {"nuclei-noisy", "nuclei-clean", "ambiguous"}
    assert all(r["ci"][0] >= -0.003 for r in decision["multistep"].values())
    page = rep.write_report(cells, tmp_path / "page.md")
    assert "**Default: best-combination at 1 step x 1 member, fusion none** (the cheapest qualifying" in page
    assert page.index("## What the result decides") < page.index("## Secondary comparisons")

    # best-combination loses 0.05 Dice at 1 member: the cheapest qualifying setting is baseline's 1 x 1
    for fold in (1, 2, 3):
        for seed in range(4):
            for data, base in (("nuclei-noisy", 0.90), ("nuclei-clean", 0.93)):
                u = _noise(data, fold, seed)
                write_cell(cells, data, fold, "best-combination", seed,
                           lambda s, n, b=base + 0.03 + u: b - (0.05 if s[1] == 1 else 0))
    decision = rep.default_decision(rep.load(cells), choice)
    assert (decision["default"]["variant"], decision["default"]["setting"]) == ("baseline", ONE)
    failed = next(r for r in decision["rows"] if r["variant"] == "best-combination" and r["setting"] == ONE)["failed"]
    # -0.017 Dice; band ECE (1 - Dice) / 5: +0.0034 > 0.003; AURC (1 - Dice) / 10: +0.0017 > 10 % of about 0.01
    assert failed == [f"{m} on {d}" for d in ("nuclei-clean", "nuclei-noisy") for m in ("Dice", "band ECE", "AURC")]


def test_default_decision_when_nothing_qualifies_and_steps_lower_dice(tmp_path):
    cells = tmp_path / "cells"
    choice = _choose(cells, tmp_path)
    write_primary(cells)
    for fold in (1, 2, 3):
        for seed in range(4):
            for data, base in (("nuclei-noisy", 0.90), ("nuclei-clean", 0.93)):
                # supervised 0.05 above everything; best-combination loses 0.02 per step count above 1
                write_cell(cells, data, fold, "supervised", seed, base + 0.08 + _noise(data, fold, seed, "s"),
                           grid=[ONE])
                u = _noise(data, fold, seed)
                write_cell(cells, data, fold, "best-combination", seed,
                           lambda s, n, b=base + 0.03 + u: b - (0.02 if s[0] > 1 else 0) + 0.001 * (s[1] > 1))
    decision = rep.default_decision(rep.load(cells), choice)
    assert decision["status"] == "decided" and not decision["qualified"]
    # the highest Dice: best-combination at 1 step with 5 members (16 ties it at more passes)
    assert (decision["default"]["variant"], decision["default"]["setting"]) == ("best-combination", (1, 5, "none"))
    assert "Dice on nuclei-noisy" in decision["default"]["failed"]
    noisy = decision["multistep"]["nuclei-noisy"]
    assert noisy["mean"] == pytest.approx(-0.02) and noisy["ci"][0] < -0.003
    page = rep.write_report(cells, tmp_path / "page.md")
    assert "no candidate qualifies; the best measured setting" in page
    assert "| nuclei-noisy | -0.0200 [" in page and _row(page, "| nuclei-noisy | -0.0200").endswith("| **no** |")
