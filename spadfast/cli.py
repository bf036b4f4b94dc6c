"""Command line: ``spadfast {demo,train,predict,evaluate,verify}`` (also ``python -m spadfast``)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from . import __version__


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help="YAML or JSON file of SPADConfig keys")
    p.add_argument("--steps", type=int, help="optimizer steps (overrides train_steps)")
    p.add_argument("--device", help="cpu, cuda, cuda:1 or auto (default: config.device)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spadfast", description=__doc__)
    parser.add_argument("--version", action="version", version=f"spadfast {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="{demo,train,predict,evaluate,verify}")

    p = sub.add_parser("demo", help="train on synthetic lesions, segment a held-out split, write metrics and overlays")
    p.add_argument("--out", type=Path, default=Path("demo_out"), help="output folder (default: demo_out)")
    p.add_argument("--test-size", type=int, default=32, help="held-out synthetic images (default: 32)")
    _add_config_args(p)

    p = sub.add_parser("train", help="train on DIR/images + DIR/masks (or synthetic data without --data)")
    p.add_argument("--data", type=Path, help="folder with images/ and masks/ (default: synthetic lesions)")
    p.add_argument("--val", type=Path, help="validation folder with images/ and masks/")
    p.add_argument("--out", type=Path, required=True, help="run folder: checkpoint.safetensors, log.jsonl")
    p.add_argument("--resume", action="store_true", help="continue from RUN/checkpoint.safetensors")
    _add_config_args(p)

    p = sub.add_parser("predict", help="segment every image of a folder with a trained checkpoint")
    p.add_argument("--checkpoint", type=Path, required=True, help="run folder or .safetensors file")
    p.add_argument("--images", type=Path, required=True, help="folder of images (PNG/JPEG/TIFF/BMP)")
    p.add_argument("--out", type=Path, required=True, help="folder for 0/255 PNG masks")
    p.add_argument("--steps", type=int, help="DDIM steps (default: config.sample_steps)")
    p.add_argument("--ensemble", type=int, help="ensemble members (default: config.ensemble)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=8, help="images per sampling batch")
    p.add_argument("--overlay", action="store_true", help="also write image-with-contour PNGs to OUT/overlays")
    p.add_argument("--uncertainty", action="store_true", help="also write ensemble std maps to OUT/uncertainty")
    p.add_argument("--device", help="cpu, cuda or auto (default: the checkpoint's)")

    p = sub.add_parser("evaluate", help="Dice / IoU / HD95 of predicted vs ground-truth PNG masks, paired by name")
    p.add_argument("--pred", type=Path, required=True)
    p.add_argument("--gt", type=Path, required=True)
    p.add_argument("--json", type=Path, help="write {cases, mean} here")
    p.add_argument("--spacing", type=float, nargs=2, default=(1.0, 1.0), metavar=("DY", "DX"))

    p = sub.add_parser("verify", help="check every Triton kernel against its reference on this device")
    p.add_argument("--device", help="cuda or cpu (cpu needs TRITON_INTERPRET=1); default: cuda if available")
    p.add_argument("--quick", action="store_true", help="fewer, smaller cases")
    p.add_argument("--compile-only", action="store_true",
                   help="compile every kernel launch variant ahead of time for --arch targets (no GPU needed)")
    p.add_argument("--arch", action="append", metavar="SM",
                   help="target for --compile-only, e.g. sm_80, sm_90 (repeatable; default: sm_80 and sm_90)")
    return parser


def _load_config(args):
    from .config import SPADConfig

    cfg = SPADConfig.from_file(args.config) if getattr(args, "config", None) else SPADConfig()
    changes = {}
    if getattr(args, "steps", None) is not None:
        changes["train_steps"] = args.steps
    if getattr(args, "device", None):
        changes["device"] = args.device
    if changes:
        cfg = SPADConfig.from_dict({**cfg.to_dict(), **changes})
    return cfg


def cmd_train(args) -> int:
    from .checkpoint import resolve_path
    from .trainer import SPADTrainer

    if args.resume:
        if not resolve_path(args.out).is_file():
            raise ValueError(f"--resume: no checkpoint at {str(resolve_path(args.out))!r}")
        trainer = SPADTrainer.from_checkpoint(args.out, args.data, args.val, out_dir=args.out, device=args.device)
        if args.steps is not None:
            if args.steps < 1:
                raise ValueError(f"`--steps` must be >= 1, got {args.steps}")
            if trainer.config.pas_steps is None:
                # PaS keeps the horizon it was trained with: "train longer" adds clean-mask steps, never
                # re-opens the perturbation by moving the progress p = step / horizon back
                trainer.config.pas_steps = trainer.config.train_steps
            trainer.config.train_steps = args.steps
    else:
        trainer = SPADTrainer(_load_config(args), args.data, args.val, out_dir=args.out)
    trainer.fit()
    path = trainer.save(args.out)
    if trainer.rank == 0:
        print(f"spadfast: trained to step {trainer.step}; checkpoint {path}")
    return 0


def cmd_predict(args) -> int:
    from .predict import Segmenter, predict_folder

    segmenter = Segmenter.from_checkpoint(args.checkpoint, device=args.device)
    names = predict_folder(
        segmenter, args.images, args.out, steps=args.steps, ensemble=args.ensemble, seed=args.seed,
        batch_size=args.batch_size, overlay=args.overlay, uncertainty=args.uncertainty,
    )
    print(f"spadfast: wrote {len(names)} masks to {args.out}")
    return 0


def cmd_evaluate(args) -> int:
    from .evaluate import evaluate_folders, format_table

    report = evaluate_folders(args.pred, args.gt, spacing=tuple(args.spacing))
    print(format_table(report))
    if args.json:
        from .files import write_text_atomic

        write_text_atomic(args.json, json.dumps(report, indent=2))
    return 0


def cmd_demo(args) -> int:
    from .config import SPADConfig
    from .demo import demo_config, run_demo

    base = SPADConfig.from_file(args.config) if args.config else demo_config(args.device or "auto")
    changes = {"train_steps": args.steps} if args.steps is not None else {}
    if args.device:
        changes["device"] = args.device
    cfg = SPADConfig.from_dict({**base.to_dict(), **changes}) if changes else base
    report = run_demo(args.out, cfg, test_size=args.test_size)
    print(f"spadfast demo: mean Dice {report['mean']['dice']:.3f}, IoU {report['mean']['iou']:.3f}, "
          f"HD95 {report['mean']['hd95']:.2f} px on {len(report['cases'])} held-out images; see {args.out}")
    return 0


def cmd_verify(args) -> int:
    from .verify import run_verify

    return run_verify(device=args.device, quick=args.quick, compile_only=args.compile_only, archs=args.arch)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    handler = {"demo": cmd_demo, "train": cmd_train, "predict": cmd_predict, "evaluate": cmd_evaluate,
               "verify": cmd_verify}[args.command]
    t0 = time.perf_counter()
    try:
        code = handler(args)
    except (ValueError, TypeError, FileNotFoundError) as e:
        print(f"spadfast {args.command}: error: {e}", file=sys.stderr)
        return 2
    if args.command in ("demo", "train"):
        print(f"spadfast {args.command}: {time.perf_counter() - t0:.1f} s")
    return code
