"""spadfast.study.ablate: variants, the fixed split, seeds, skip-on-rerun, resume from a checkpoint, bad settings."""

from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path

import numpy as np
import pytest

from spadfast.config import SPADConfig
from spadfast.data.synthetic import write_synthetic_folder
from spadfast.study import ablate
from spadfast.study.ablate import (
    _merge,
    add_arguments,
    main,
    run_ablation,
    slug,
    variant_overrides,
)
from spadfast.study.ablation_stats import aggregate, format_markdown
from spadfast.study.split import fold_split, make_split

TINY = dict(image_size=16, base_channels=8, channel_mults=(1, 2), attention_levels=(), sample_steps=2, ensemble=1,
            batch_size=2, val_every=0, log_every=1, checkpoint_every=100)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_synthetic_folder(tmp_path_factory.mktemp("data"), n=8, image_size=16, seed=0)


def _runs(out: Path) -> list[str]:
    return sorted(str(p.parent.relative_to(out / "runs")) for p in (out / "runs").rglob("metrics.json"))


def test_variants_and_their_configs():
    from spadfast.data.augmentation import AugmentConfig

    base = SPADConfig.preset("cpu-small", perturb={"enabled": True}).to_dict()  # a base with SPAD on, as the study's
    table = variant_overrides(base)
    assert list(table) == ["SPAD", "w/o ScD", "w/o BcD", "baseline", "PaS linear", "PaS step", "input mode",
                           "condition mode", "SPAD input", "DDPM-IP", "SPAD no-fade", "SPAD input no-fade",
                           "structured", "supervised", "nnU-Net augmentation",
                           "SPAD input object-BcD"]
    cfg = {n: SPADConfig.from_dict(_merge(base, o)) for n, o in table.items()}
    assert cfg["SPAD"].to_dict() == base
    for name, off in (("w/o ScD", "scd"), ("w/o BcD", "bcd")):  # one switch off, every other knob as in SPAD
        want = _merge(base, {"perturb": {off: False}})
        assert cfg[name].to_dict() == want and want["perturb"][off] is False and base["perturb"][off] is True
    assert cfg["baseline"].perturb.enabled is False
    default = SPADConfig.preset("cpu-small").to_dict()  # SPAD off: the SPAD variants turn it on
    assert default["perturb"]["enabled"] is False
    assert SPADConfig.from_dict(_merge(default, variant_overrides(default)["SPAD"])).to_dict() == base
    assert cfg["PaS step"].perturb.pas_kind == "step" and cfg["condition mode"].perturb_mode == "condition"
    linear_base = _merge(base, {"perturb": {"pas_kind": "linear"}, "perturb_mode": "condition"})
    assert list(variant_overrides(linear_base))[4:7] == ["PaS cosine", "PaS step", "target mode"]
    assert [slug(n) for n in table] == ["spad", "wo-scd", "wo-bcd", "baseline", "pas-linear", "pas-step", "input-mode",
                                        "condition-mode", "spad-input", "ddpm-ip", "spad-no-fade",
                                        "spad-input-no-fade", "structured", "supervised", "nnu-net-augmentation",
                                        "spad-input-object-bcd"]
    augmented = cfg["nnU-Net augmentation"]  # the baseline plus nnU-Net's augmentation, nothing else
    assert augmented.augment == AugmentConfig.nnunet() and augmented.perturb.enabled is False
    assert _merge(augmented.to_dict(), {"augment": base["augment"]}) == cfg["baseline"].to_dict()


def _flat(d, prefix=""):
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


@pytest.mark.parametrize("spad_in_base", [True, False])
def test_each_variant_changes_exactly_the_keys_its_name_says(spad_in_base):
    """On a base with SPAD on (the study's) and on the default base (SPAD off): each variant changes what its name
    says, and every SPAD variant switches the perturbation on itself."""
    base = SPADConfig.preset("cpu-small", perturb={"enabled": spad_in_base}).to_dict()
    want = {
        "SPAD": {}, "w/o ScD": {"perturb.scd": False}, "w/o BcD": {"perturb.bcd": False},
        "baseline": {"perturb.enabled": False}, "PaS linear": {"perturb.pas_kind": "linear"},
        "PaS step": {"perturb.pas_kind": "step"}, "input mode": {"perturb_mode": "input"},
        "condition mode": {"perturb_mode": "condition"},
        "SPAD input": {"perturb_mode": "input", "perturb_prob": 0.5},
        "DDPM-IP": {"perturb.enabled": False, "input_gamma": 0.1},
        "SPAD no-fade": {"pas_steps": 2 * base["train_steps"]},
        "SPAD input no-fade": {"perturb_mode": "input", "perturb_prob": 0.5, "pas_steps": 2 * base["train_steps"]},
        "structured": {"perturb_mode": "input", "perturb_prob": 0.5, "perturb.scd_kind": "erase", "perturb.morph_px": 2,
                       "perturb.warp_px": 1.5, "perturb.blob_count": 1.0},
        "supervised": {"objective": "supervised", "perturb.enabled": False, "x0_loss_weight": 0.0},
        "nnU-Net augmentation": {"perturb.enabled": False, "augment.rotate_prob": 0.2, "augment.scale_prob": 0.2,
                                 "augment.gamma_prob": 0.3, "augment.noise_prob": 0.1, "augment.blur_prob": 0.2},
        "SPAD input object-BcD": {"perturb_mode": "input", "perturb_prob": 0.5, "perturb.bcd_object_frac": 0.5},
    }
    flat_base = _flat(base)
    for name, changes in variant_overrides(base).items():
        flat = _flat(SPADConfig.from_dict(_merge(base, changes)).to_dict())
        expected = dict(want[name])
        if not spad_in_base:  # the perturbation is off already; the SPAD variants turn it on
            if expected.pop("perturb.enabled", True):
                expected["perturb.enabled"] = True
        assert {k: v for k, v in flat.items() if flat_base[k] != v} == expected, name


def test_split_is_seeded_and_disjoint():
    stems = [f"{i:02d}" for i in range(10)]
    train, val = make_split(stems, 0.3, seed=1)
    assert len(val) == 3 and sorted(train + val) == stems and not set(train) & set(val)
    assert make_split(list(reversed(stems)), 0.3, seed=1) == (train, val)
    assert make_split(stems, 0.3, seed=2) != (train, val)
    with pytest.raises(ValueError, match="at least 2"):
        make_split(["a"], 0.5, 0)


@pytest.mark.slow
def test_seeds_split_skip_and_table(data, tmp_path, monkeypatch):
    out = tmp_path / "abl"
    lines: list[str] = []
    result = run_ablation(data, out, seeds=2, steps=2, overrides=TINY, variants=["SPAD", "baseline"], log=lines.append)
    assert _runs(out) == ["baseline/seed0", "baseline/seed1", "spad/seed0", "spad/seed1"]
    split = json.loads((out / "split.json").read_text())
    assert len(split["heldout"]) == 2 and sorted(split["train"] + split["heldout"]) == [f"{i:04d}" for i in range(8)]
    assert sorted(p.stem for p in (out / "data" / "val" / "masks").iterdir()) == split["heldout"]
    assert sorted(p.stem for p in (out / "data" / "train" / "images").iterdir()) == split["train"]
    for variant in ("spad", "baseline"):
        for seed in (0, 1):
            record = json.loads((out / "runs" / variant / f"seed{seed}" / "metrics.json").read_text())
            assert record["config"]["seed"] == seed and record["steps"] == 2
            assert record["config"]["perturb"]["enabled"] is (variant == "spad")
            assert [c["name"] for c in record["report"]["cases"]] == [f"{s}.png" for s in split["heldout"]]
    row = {r["variant"]: r for r in result["rows"]}
    assert row["SPAD"]["seeds"] == [0, 1] and row["baseline"]["seeds"] == [0, 1]
    md = (out / "ablation.md").read_text()
    assert "| SPAD |" in md and "| baseline |" in md and "**" in md and "±" in md
    assert (out / "ablation.png").is_file() and json.loads((out / "ablation.json").read_text())["seeds"] == 2

    # rerun: everything is skipped (training would fail), a new seed and variant run, the split is unchanged
    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(ablate, "train_and_evaluate", no_training)
    # folders written by an older spadfast lack config keys added since (here: `augment`): defaults fill them in
    for path in (out / "settings.json", out / "runs" / "spad" / "seed0" / "metrics.json"):
        saved = json.loads(path.read_text())
        (saved.get("base_config") or saved["config"]).pop("augment")
        path.write_text(json.dumps(saved))
    lines.clear()
    run_ablation(data, out, seeds=2, steps=2, overrides=TINY, variants=["SPAD", "baseline"], log=lines.append)
    assert sum("skipped" in line for line in lines) == 4
    monkeypatch.undo()
    run_ablation(data, out, seeds=1, steps=2, overrides=TINY, variants=["wo-scd"], log=lines.append)  # a slug
    assert "wo-scd/seed0" in _runs(out) and json.loads((out / "split.json").read_text()) == split
    record = json.loads((out / "runs" / "wo-scd" / "seed0" / "metrics.json").read_text())
    assert record["config"]["perturb"]["scd"] is False and record["config"]["perturb"]["bcd"] is True

    with pytest.raises(ValueError, match=r"settings.json .*`train_steps` is 2 there but 3 here"):  # another budget
        run_ablation(data, out, seeds=1, steps=3, overrides=TINY, variants=["SPAD"], log=lines.append)
    with pytest.raises(ValueError, match="split.json"):  # another split in the same folder
        run_ablation(data, out, seeds=1, steps=2, overrides=TINY, variants=["SPAD"], split_seed=5,
                     log=lines.append)
    with pytest.raises(ValueError, match="unknown variant 'nope'"):
        run_ablation(data, out, steps=2, overrides=TINY, variants=["nope"], log=lines.append)


@pytest.mark.slow
def test_a_stop_signal_ends_the_ablation_without_recording_a_truncated_run(data, tmp_path, monkeypatch):
    """SIGUSR1 mid-run (a scheduler's preemption): the run's checkpoint is saved, the run is not scored or marked
    done, the job stops; the next call resumes it to the full budget."""
    import os
    import signal

    from spadfast.runtime.preemption import Stopped

    out = tmp_path / "abl"
    # delivered to the main thread's handler, as a scheduler's signal would be
    _at_step(monkeypatch, 2, lambda: os.kill(os.getpid(), signal.SIGUSR1))
    with pytest.raises(Stopped, match="stopped at step 2 of 4 by SIGUSR1"):
        run_ablation(data, out, steps=4, overrides=TINY, variants=["SPAD", "baseline"], log=lambda m: None)
    run = out / "runs" / "spad" / "seed0"
    assert (run / "checkpoint.safetensors").is_file() and not (run / "metrics.json").exists()
    assert not (out / "runs" / "baseline").exists()  # the job ended there
    monkeypatch.undo()
    run_ablation(data, out, steps=4, overrides=TINY, variants=["SPAD", "baseline"], log=lambda m: None)
    record = json.loads((run / "metrics.json").read_text())
    assert record["resumed_from"] == 2 and record["steps"] == 4


def _at_step(monkeypatch, n: int, action) -> None:
    """Run ``action()`` when the n-th training step of this test starts (then the step itself)."""
    from spadfast.train.trainer import SPADTrainer

    real_step = SPADTrainer.train_step
    calls = {"n": 0}

    def step(self, batches):
        calls["n"] += 1
        if calls["n"] == n:
            action()
        return real_step(self, batches)

    monkeypatch.setattr(SPADTrainer, "train_step", step)


@pytest.mark.slow
def test_resume_from_checkpoint(data, tmp_path, monkeypatch):
    out = tmp_path / "abl"

    def power_cut():
        raise KeyboardInterrupt("power cut")

    _at_step(monkeypatch, 3, power_cut)
    overrides = {**TINY, "checkpoint_every": 2}
    with pytest.raises(KeyboardInterrupt):
        run_ablation(data, out, steps=4, overrides=overrides, variants=["SPAD"], log=lambda m: None)
    run = out / "runs" / "spad" / "seed0"
    assert (run / "checkpoint.safetensors").is_file() and not (run / "metrics.json").exists()
    monkeypatch.undo()
    lines: list[str] = []
    run_ablation(data, out, steps=4, overrides=overrides, variants=["SPAD"], log=lines.append)
    record = json.loads((run / "metrics.json").read_text())
    assert record["resumed_from"] == 2 and record["steps"] == 4
    assert any("resuming at step 2" in line for line in lines)
    steps = [json.loads(line)["step"] for line in (run / "log.jsonl").read_text().splitlines()
             if "loss" in json.loads(line)]
    assert steps == [1, 2, 3, 4]  # no duplicate records from the interrupted attempt


@pytest.mark.slow
def test_val_folder_and_foreign_out(data, tmp_path):
    val = write_synthetic_folder(tmp_path / "val", n=3, image_size=16, seed=9)
    out = tmp_path / "abl"
    run_ablation(data, out, val=val, steps=1, overrides=TINY, variants=["baseline"], log=lambda m: None)
    split = json.loads((out / "split.json").read_text())
    assert split["val"] == str(val) and len(split["train"]) == 8 and split["heldout"] == ["0000", "0001", "0002"]
    assert not (out / "data" / "train").exists()
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("x")
    with pytest.raises(ValueError, match="foreign"):
        run_ablation(data, foreign, steps=1, overrides=TINY, variants=["SPAD"], log=lambda m: None)


def test_aggregate_and_markdown_bold_ties():
    runs = {
        "SPAD": [{"seed": 0, "mean": {"dice": 0.9, "iou": 0.8, "hd95": 1.0}},
                 {"seed": 1, "mean": {"dice": 0.8, "iou": 0.7, "hd95": 2.0}}],
        "baseline": [{"seed": 0, "mean": {"dice": 0.85, "iou": 0.75, "hd95": float("inf")}},
                     {"seed": 1, "mean": {"dice": 0.85, "iou": 0.75, "hd95": 1.0}}],
    }
    runs["SPAD"][0]["case_dice"] = {"a": 0.9, "b": 0.8}
    runs["SPAD"][1]["case_dice"] = {"a": 1.0, "b": 0.6}
    runs["baseline"][0]["case_dice"] = {"a": 0.8, "b": 0.8}
    runs["baseline"][1]["case_dice"] = {"a": 0.8, "b": 0.8, "c": 0.1}  # "c": no SPAD counterpart, not paired
    result = aggregate(runs)
    spad = result["rows"][0]
    base = result["rows"][1]
    # per seed: seed 0 (-.1 + 0) / 2 = -.05, seed 1 (-.2 + .2) / 2 = 0; mean -.025, SE std([-.05, 0]) / sqrt(2)
    assert base["d_dice"] == pytest.approx(-0.025) and math.isnan(spad["d_dice"])
    assert base["d_dice_se"] == pytest.approx(0.025) and base["d_dice_n"] == 2 and base["d_dice_unit"] == "seeds"
    assert spad["dice"] == pytest.approx(0.85) and spad["dice_std"] == pytest.approx(0.0707107, abs=1e-6)
    assert result["best"] == {"dice": ["SPAD", "baseline"], "iou": ["SPAD", "baseline"], "hd95": ["SPAD"]}
    md = format_markdown({**result, "preset": "p", "train_steps": 1, "seeds": 2, "n_train": 1, "n_heldout": 1})
    assert "| SPAD |  | **0.8500 ± 0.0707** |" in md and "| inf |" in md
    assert "| -0.0250 ± 0.0250 [-0.3427, +0.2927] |" in md  # t(0.975, 1) = 12.706


def _synthetic_runs(rng, seeds, n_cases, run_shift_sd, case_sd, effect):
    """SPAD and baseline runs with a per-run random shift of the baseline (run-to-run spread) and case noise."""
    spad, other = [], []
    for seed in seeds:
        shift = effect + rng.normal(0, run_shift_sd)
        cases = {f"c{i}": float(rng.uniform(0.5, 0.9)) for i in range(n_cases + seed)}  # unequal case counts
        spad.append({"seed": seed, "mean": {"dice": 0.7, "iou": 0.6, "hd95": 1.0}, "case_dice": cases})
        other.append({"seed": seed, "mean": {"dice": 0.7, "iou": 0.6, "hd95": 1.0},
                      "case_dice": {c: d + shift + float(rng.normal(0, case_sd)) for c, d in cases.items()}})
    return {"SPAD": spad, "baseline": other}


def test_paired_difference_takes_the_training_run_as_unit():
    from scipy import stats

    rng = np.random.default_rng(0)
    runs = _synthetic_runs(rng, seeds=[0, 1, 2, 3], n_cases=30, run_shift_sd=0.05, case_sd=0.01, effect=-0.02)
    row = aggregate(runs)["rows"][1]
    ref = {r["seed"]: r["case_dice"] for r in runs["SPAD"]}
    per_seed = [statistics.mean(d - ref[r["seed"]][c] for c, d in r["case_dice"].items()) for r in runs["baseline"]]
    se = statistics.stdev(per_seed) / math.sqrt(len(per_seed))
    ci = stats.ttest_1samp(per_seed, 0.0).confidence_interval(0.95)
    assert row["d_dice"] == pytest.approx(statistics.mean(per_seed), abs=1e-12)
    assert row["d_dice_se"] == pytest.approx(se, rel=1e-9) and row["d_dice_n"] == 4
    assert row["d_dice_ci"] == pytest.approx([ci.low, ci.high], rel=1e-9)
    # the unit is the run: pooled (case, seed) pairs give a far smaller SE, which this is not
    pooled = [d - ref[r["seed"]][c] for r in runs["baseline"] for c, d in r["case_dice"].items()]
    assert row["d_dice_se"] > 3 * statistics.stdev(pooled) / math.sqrt(len(pooled))
    # every case copied ten times: per-seed means, hence the statistics, are unchanged
    for r in runs["SPAD"] + runs["baseline"]:
        r["case_dice"] = {f"{c}-{k}": d for c, d in r["case_dice"].items() for k in range(10)}
    again = aggregate(runs)["rows"][1]
    assert again["d_dice"] == pytest.approx(row["d_dice"]) and again["d_dice_se"] == pytest.approx(row["d_dice_se"])


def test_one_seed_reports_the_case_level_se_as_conditional_on_that_run():
    rng = np.random.default_rng(1)
    runs = _synthetic_runs(rng, seeds=[0], n_cases=12, run_shift_sd=0.0, case_sd=0.02, effect=0.01)
    result = aggregate(runs)
    row = result["rows"][1]
    ref = runs["SPAD"][0]["case_dice"]
    diffs = [d - ref[c] for c, d in runs["baseline"][0]["case_dice"].items()]
    assert row["d_dice"] == pytest.approx(statistics.mean(diffs), abs=1e-12)
    assert row["d_dice_se"] == pytest.approx(statistics.stdev(diffs) / math.sqrt(len(diffs)), rel=1e-9)
    assert row["d_dice_unit"] == "cases of one run" and row["d_dice_n"] == len(diffs)
    md = format_markdown({**result, "preset": "p", "train_steps": 1, "seeds": 1, "n_train": 1, "n_heldout": 12})
    cell = next(line for line in md.splitlines() if line.startswith("| baseline |")).split(" | ")[5]
    assert cell.endswith("(1 run)") and "conditional on that one training run" in md


def _cli_refusals(data: Path, tmp: Path) -> dict[str, list[str]]:
    """Each refused ``spadfast ablate`` argument set (besides --data/--out, which the caller adds unless given)."""
    empty = tmp / "empty"
    (empty / "images").mkdir(parents=True)
    (empty / "masks").mkdir()
    one = write_synthetic_folder(tmp / "one", n=1, image_size=16, seed=0)
    orphan = write_synthetic_folder(tmp / "orphan", n=3, image_size=16, seed=0)
    next((orphan / "masks").iterdir()).unlink()
    return {
        "seeds": ["--seeds", "0"], "steps": ["--steps", "0"], "preset": ["--preset", "nope"],
        "variant": ["--variants", "nope"], "folds_one": ["--folds", "1"], "steps_zero": ["--sample-steps", "0"],
        "fraction_high": ["--val-fraction", "1.5"],
        "fraction_zero": ["--val-fraction", "0"], "split_seed": ["--split-seed", "-1"],
        "device": ["--device", "tpu"], "missing_data": ["--data", str(tmp / "nowhere")],
        "empty_data": ["--data", str(empty)], "one_pair": ["--data", str(one)], "orphan": ["--data", str(orphan)],
        "missing_val": ["--val", str(tmp / "nowhere")], "empty_val": ["--val", str(empty)],
    }


def test_cli_refusals_create_nothing(data, tmp_path, capsys):
    from spadfast.cli import main as cli_main

    for name, extra in _cli_refusals(data, tmp_path / "inputs").items():
        parent = tmp_path / name
        out = parent / "abl"
        argv = ["ablate", "--out", str(out), *([] if "--data" in extra else ["--data", str(data)]), *extra]
        assert cli_main(argv) == 2, name
        err = capsys.readouterr().err.strip()
        assert err.startswith("spadfast ablate: error:") and "\n" not in err, (name, err)
        assert not parent.exists(), f"{name}: {parent} was created"


@pytest.mark.slow
def test_cli_handler_on_finished_folder(data, tmp_path, capsys, monkeypatch):
    out = tmp_path / "abl"
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--data", str(data), "--out", str(out), "--steps", "1", "--variants", "baseline"])
    # the CLI has no model-size flags: give the preset the tiny model for this test
    real_preset = SPADConfig.preset.__func__
    monkeypatch.setattr(SPADConfig, "preset", classmethod(lambda cls, name, **kw: real_preset(cls, name,
                                                                                             **{**TINY, **kw})))
    assert main(args) == 0
    assert "| baseline |" in capsys.readouterr().out


@pytest.mark.parametrize("n", range(2, 21))
def test_folds_are_contiguous_disjoint_blocks_covering_every_pair(n):
    stems = [f"y{i:03d}" for i in range(n)]
    for folds in range(2, min(n, 6) + 1):
        held = [fold_split(list(reversed(stems)), folds, k)[1] for k in range(folds)]
        assert sum(held, []) == stems  # in order, each stem held out exactly once
        assert max(map(len, held)) - min(map(len, held)) <= 1
        for k in range(folds):
            train, h = fold_split(stems, folds, k)
            assert sorted(train + h) == stems and not set(train) & set(h)
    with pytest.raises(ValueError, match="folds"):
        fold_split(stems, 1, 0)
    with pytest.raises(ValueError, match="at least"):
        fold_split(stems[:2], 3, 0)


def test_paired_difference_takes_fold_and_seed_runs_as_units():
    from scipy import stats

    rng = np.random.default_rng(0)
    ref, var, unit_means = [], [], []
    for fold in range(2):
        for seed in range(3):
            base = {f"c{i}": float(x) for i, x in enumerate(rng.random(5))}
            shift = float(rng.normal(0.01, 0.01))
            ref.append({"fold": fold, "seed": seed, "case_dice": base})
            var.append({"fold": fold, "seed": seed, "case_dice": {c: v + shift for c, v in base.items()}})
            unit_means.append(shift)
    from spadfast.study.ablation_stats import paired_difference

    d = paired_difference(var, ref)
    assert d["d_dice_n"] == 6 and d["d_dice_unit"] == "seeds"
    assert d["d_dice"] == pytest.approx(np.mean(unit_means))
    assert d["d_dice_ci"] == pytest.approx(list(stats.t.interval(0.95, 5, np.mean(unit_means), stats.sem(unit_means))))
    assert sorted(d["d_dice_per_seed"]) == [f"fold{f}/seed{s}" for f in range(2) for s in range(3)]


@pytest.mark.slow
def test_folds_and_sampling_grid_resume_exactly(data, tmp_path):
    out = tmp_path / "abl"
    kwargs = dict(seeds=1, steps=2, overrides=TINY, variants=["SPAD", "baseline"], folds=2, sample_steps=(1, 2),
                  ensembles=(1, 2), log=lambda m: None)
    first = run_ablation(data, out, **kwargs)
    assert sorted(str(p.relative_to(out)) for p in out.glob("fold*/runs/*/seed*/study_eval.json")) == [
        f"fold{k}/runs/{v}/seed0/study_eval.json" for k in range(2) for v in ("baseline", "spad")]
    row = next(r for r in first["rows"] if r["variant"] == "baseline")
    assert sorted(row["d_dice_per_seed"]) == ["fold0/seed0", "fold1/seed0"]
    assert list(row["study"]) == ["1x1", "1x2", "2x1", "2x2"] and all(c["n"] == 2 for c in row["study"].values())
    assert "by DDIM steps x ensemble members" in (out / "ablation.md").read_text()
    lines: list[str] = []
    again = run_ablation(data, out, **{**kwargs, "log": lines.append})
    assert sum("done already" in m for m in lines) == 4
    assert json.dumps(again["rows"], sort_keys=True) == json.dumps(first["rows"], sort_keys=True)
    with pytest.raises(ValueError, match="folds"):
        run_ablation(data, out, **{**kwargs, "folds": 3})
