"""``spadfast demo``: train on synthetic lesions, segment a held-out synthetic split, write metrics and overlays.

Outputs under ``OUT``: ``run/checkpoint.safetensors`` and ``run/log.jsonl``, ``test/images`` + ``test/masks`` (the
held-out split), ``pred/`` (0/255 PNG masks), ``overlays/`` (image with predicted contour in green and ground truth in
red), ``metrics.json`` (the ``evaluate`` format), ``baselines.json`` (the trivial baselines' Dice on the same split:
:mod:`spadfast.evaluation.baselines`), ``config.json`` (the run's config), ``perturbation.png`` (rows p = 0, 0.25, 0.5, 0.75, 1;
columns mask, Canny edges, ScD, BcD, both: what SPAD does to a mask, when it is on).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import cv2
import torch

from .config import SPADConfig
from .evaluation.visualize import perturbation_grid
from .io.files import write_text_atomic

TEST_SEED = 987_654


def demo_config(device: str = "auto") -> SPADConfig:
    """The demo's defaults: small and quick on a 2-core CPU; a GPU trains longer and wider in similar time."""
    on_gpu = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if on_gpu:
        return SPADConfig(
            image_size=64, base_channels=32, train_steps=3000, prediction_type="sample", batch_size=32, lr=1e-3,
            warmup_steps=100,
            ema_decay=0.995, log_every=100, synthetic_train=4096, amp="bf16", device=device,
        )
    # x0 ("sample") prediction: on binary masks it reaches a usable model in a few hundred steps where epsilon
    # prediction needs several times more (Dice 0.95 vs 0.72 after 400 steps on this demo; 1000 steps: 0.95).
    return SPADConfig.preset("cpu-small", synthetic_train=2048, device=device)


def run_demo(out: str | Path, config: SPADConfig | None = None, test_size: int = 32) -> dict[str, Any]:
    """Run the demo end to end and return the ``evaluate`` report (also written to ``OUT/metrics.json``) with the
    trivial baselines (``OUT/baselines.json``) under ``"baselines"``.

    The demo owns ``OUT/run``, ``OUT/test``, ``OUT/pred`` and ``OUT/overlays``: a re-run deletes and rewrites them.
    """
    from .data.synthetic import SyntheticLesions, write_synthetic_folder
    from .evaluation.evaluate import evaluate_folders
    from .infer.segmenter import predict_folder
    from .train.trainer import SPADTrainer

    out = Path(out)
    cfg = config or demo_config()
    # a re-run replaces the previous demo's outputs (the CLI refuses folders holding anything else): a fresh log,
    # and no predictions left over from a different --test-size
    for sub in ("run", "test", "pred", "overlays"):
        shutil.rmtree(out / sub, ignore_errors=True)
    trainer = SPADTrainer(cfg, out_dir=out / "run")
    trainer.fit()
    trainer.save(out / "run")
    test_dir = out / "test"
    write_synthetic_folder(test_dir, test_size, cfg.image_size, TEST_SEED)
    _, example_mask = SyntheticLesions(1, image_size=64, seed=TEST_SEED).numpy(0)
    # what SPAD does to a mask over training (the illustration shows it even where training runs with it off)
    grid = perturbation_grid(torch.from_numpy(example_mask[0]), cfg=dataclasses.replace(cfg.perturb, enabled=True))
    cv2.imwrite(str(out / "perturbation.png"), grid)
    predict_folder(trainer, test_dir / "images", out / "pred", overlay=True, overlay_gt=test_dir / "masks",
                   overlay_dir=out / "overlays")
    report = evaluate_folders(out / "pred", test_dir / "masks")
    write_text_atomic(out / "metrics.json", json.dumps(report, indent=2))  # exactly the evaluate format
    baselines = _baselines(cfg, test_dir)
    write_text_atomic(out / "baselines.json", json.dumps(baselines, indent=2))
    report = {**report, "baselines": baselines}
    write_text_atomic(out / "config.json", json.dumps({**cfg.to_dict(), "device": str(trainer.device)}, indent=2))
    return report


def _baselines(cfg: SPADConfig, test_dir: Path) -> dict[str, float]:
    """:func:`spadfast.evaluation.baselines.trivial_baselines` on the demo's held-out split, tuned on (up to 256 of) the
    synthetic training images the model saw."""
    from .data.synthetic import SyntheticLesions
    from .evaluation.baselines import to_uint8, trivial_baselines
    from .io.files import index_folder, read_mask

    train = SyntheticLesions(min(cfg.synthetic_train, 256), image_size=cfg.image_size, seed=cfg.seed,
                             channels=cfg.image_channels)
    pairs = [train.numpy(i) for i in range(len(train))]
    files = index_folder(test_dir / "images")
    test_images = [cv2.imread(str(files[s]), cv2.IMREAD_GRAYSCALE) for s in sorted(files)]
    test_masks = [read_mask(test_dir / "masks" / f"{s}.png") for s in sorted(files)]
    return trivial_baselines([to_uint8(im) for im, _ in pairs], [m[0] > 0.5 for _, m in pairs], test_images,
                             test_masks)


def summary_line(report: dict[str, Any], out: str | Path) -> str:
    """The demo's one-line result, with the trivial baselines on the same held-out images beside it."""
    base = ", ".join(f"{k} {v:.3f}" for k, v in report.get("baselines", {}).items())
    return (f"spadfast demo: mean Dice {report['mean']['dice']:.3f}, IoU {report['mean']['iou']:.3f}, "
            f"HD95 {report['mean']['hd95']:.2f} px on {len(report['cases'])} held-out images (trivial baselines on "
            f"them, Dice: {base}); see {out}")
