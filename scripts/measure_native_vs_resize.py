"""The README's native-resolution example: the same model trained and evaluated with ``resize: true`` (every image
squashed to ``image_size``) and ``resize: false`` (patches and sliding windows at native resolution).

Data: the DSB2018 nuclei image in the stardist 0.9.2 wheel (see scripts/spad_study.py). Training: two 192x512
strips (rows 0-383); held out: the 128x512 strip below them. Prints Dice / IoU / HD95 of each mode and of a
threshold tuned on the training strips.

    OMP_NUM_THREADS=2 .venv/bin/python scripts/measure_native_vs_resize.py --out /tmp/native --wheel stardist.whl
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from spad_study import _dsb  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--wheel", type=Path)
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--image-size", type=int, default=64)
    args = p.parse_args()
    from spadfast import SPADTrainer
    from spadfast.config import SPADConfig
    from spadfast.evaluation.evaluate import evaluate_folders
    from spadfast.evaluation.metrics import dice, hd95, iou
    from spadfast.infer.segmenter import predict_folder

    image, labels = _dsb(args.wheel, args.out / "source")
    mask = labels > 0
    for sub, rows in (("train", [(0, 192), (192, 384)]), ("test", [(384, 512)])):
        for i, (a, b) in enumerate(rows):
            for kind, arr in (("images", image[a:b]), ("masks", mask[a:b].astype(np.uint8) * 255)):
                (args.out / sub / kind).mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(args.out / sub / kind / f"strip{i}.png"), arr)
    train_pix, train_fg = image[:384].ravel(), mask[:384].ravel()
    best = max(range(256), key=lambda t: 2 * (train_fg & (train_pix > t)).sum() / (train_fg.sum() + (train_pix > t).sum()))
    test_gt, test_img = mask[384:], image[384:]
    rows = [("intensity threshold tuned on the training strips", test_img > best)]
    for resize in (True, False):
        cfg = SPADConfig.preset("cpu-small", image_size=args.image_size, train_steps=args.steps, resize=resize,
                                val_every=0)
        run = args.out / f"run_resize_{resize}"
        trainer = SPADTrainer(cfg, args.out / "train", out_dir=run)
        trainer.fit()
        trainer.save(run)
        pred = args.out / f"pred_resize_{resize}"
        predict_folder(trainer, args.out / "test" / "images", pred)
        report = evaluate_folders(pred, args.out / "test" / "masks")
        rows.append((f"resize: {str(resize).lower()}", cv2.imread(str(pred / "strip0.png"), 0) > 0))
        assert report["cases"]
    print("| method | Dice | IoU | HD95 (px) |\n|---|---|---|---|")
    for name, pred_mask in rows:
        print(f"| {name} | {dice(pred_mask, test_gt):.4f} | {iou(pred_mask, test_gt):.4f} | "
              f"{hd95(pred_mask, test_gt):.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
