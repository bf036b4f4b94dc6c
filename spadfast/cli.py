"""Command line: ``spadfast {demo,train,predict,evaluate,export,verify,plot,ablate}`` (also ``python -m spadfast``).

Every command checks its output paths before any work (:mod:`spadfast.io.paths`) and turns a bad input, a bad path or
an ``OSError`` into one line naming the argument, key or file, with exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
from pathlib import Path

from ._version import __version__
from .runtime import distributed as dist_utils

COMMANDS = ("demo", "train", "predict", "evaluate", "export", "verify", "plot", "ablate")
# config keys that a resumed run may change with --config (the rest define the run and must match the checkpoint)
RESUMABLE_KEYS = frozenset({
    "train_steps", "pas_steps", "log_every", "val_every", "val_samples", "checkpoint_every", "progress_bar",
    "num_workers", "device", "sample_steps", "ensemble", "threshold", "sample_chunk", "cuda_graph", "compile",
    "compile_mode",
})


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help="YAML or JSON file of SPADConfig keys")
    p.add_argument("--preset", help="start from a SPADConfig preset (cpu-small, cpu-medium, gpu-base); "
                   "--config keys override it")
    p.add_argument("--steps", type=int, help="optimizer steps (overrides train_steps)")
    p.add_argument("--device", help="cpu, cuda, cuda:1, mps or auto (default: config.device)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spadfast", description=__doc__.split("\n")[0])
    parser.add_argument("--version", action="version", version=f"spadfast {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="{" + ",".join(COMMANDS) + "}")

    p = sub.add_parser("demo", help="train on synthetic lesions, segment a held-out split, write metrics and overlays")
    p.add_argument("--out", type=Path, default=Path("demo_out"), help="output folder (default: demo_out)")
    p.add_argument("--test-size", type=int, default=32, help="held-out synthetic images (default: 32)")
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty folder that is not a demo's")
    _add_config_args(p)

    p = sub.add_parser("train", help="train on DIR/images + DIR/masks (or synthetic data without --data)")
    p.add_argument("--data", type=Path, help="folder with images/ and masks/ (default: synthetic lesions; on "
                   "--resume: the folder the run recorded)")
    p.add_argument("--val", type=Path, help="validation folder with images/ and masks/")
    p.add_argument("--out", type=Path, required=True, help="run folder: checkpoint.safetensors, log.jsonl")
    p.add_argument("--resume", action="store_true", help="continue from RUN/checkpoint.safetensors")
    p.add_argument("--overwrite", action="store_true", help="start a new run in an existing run folder (its "
                   "checkpoint and log are replaced)")
    p.add_argument("--allow-data-change", action="store_true",
                   help="on --resume, accept data other than the run recorded")
    _add_config_args(p)

    p = sub.add_parser("predict", help="segment every image of a folder with a trained checkpoint")
    p.add_argument("--checkpoint", type=Path, required=True, nargs="+",
                   help="run folder, checkpoint, export or ONNX export folder; several: an ensemble of models (members "
                   "split across them)")
    p.add_argument("--images", type=Path, required=True, help="folder of images (PNG/JPEG/TIFF/BMP) or of NIfTI "
                   "volumes (e.g. DATA/imagesTs: <case>_0000.nii.gz, ...)")
    p.add_argument("--out", type=Path, required=True, help="new (or empty) folder for 0/255 PNG masks")
    p.add_argument("--steps", type=int, help="DDIM steps (default: config.sample_steps)")
    p.add_argument("--ensemble", type=int, help="ensemble members (default: config.ensemble)")
    p.add_argument("--step-fusion", choices=("none", "mean", "uncertainty"), help="combine the x0 estimates of every "
                   "DDIM step: plain mean or Diff-UNet's step-uncertainty weights (default: config.step_fusion)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=8, help="images per sampling batch")
    p.add_argument("--overlay", action="store_true", help="also write image-with-contour PNGs to OUT/overlays "
                   "(2-D images; refused for volumes)")
    p.add_argument("--tta", action="store_true", help="test-time augmentation: flips (and transposes) spread over "
                   "the ensemble members, undone before averaging (images, and each slice of a volume; no extra "
                   "denoiser rows when K >= views)")
    p.add_argument("--uncertainty", action="store_true", help="also write ensemble std maps to OUT/uncertainty "
                   "(volumes: OUT/uncertainty/<case>.nii.gz)")
    p.add_argument("--probabilities", action="store_true", help="also write class probabilities: OUT/probabilities/"
                   "<case>.nii.gz for volumes, OUT/probabilities/<stem>_<k>.png (16-bit, x 65535) per foreground class "
                   "k for images")
    p.add_argument("--uint8-maps", action="store_true", help="volumes: hold and write probability/uncertainty maps "
                   "as uint8 scaled by 1/255 (a quarter of float32's memory and disk)")
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty --out folder")
    p.add_argument("--device", help="cpu, cuda, mps or auto (default: the checkpoint's)")
    p.add_argument("--amp", choices=("auto", "none", "bf16", "fp16"),
                   help="autocast for sampling (default: the run's; auto: bf16 on CUDA and on CPUs with native bf16)")
    p.add_argument("--compile", action="store_true", help="torch.compile the denoiser (cached on disk by inductor)")
    p.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's, one per core)")
    p.add_argument("--runtime", choices=("torch", "onnxruntime"), default="torch",
                   help="onnxruntime: run an ONNX export (spadfast export --format onnx); an ONNX export folder given "
                   "as --checkpoint always runs on onnxruntime")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")

    p = sub.add_parser("evaluate", help="Dice / IoU / HD95 of predicted vs ground-truth masks, paired by name")
    p.add_argument("--pred", type=Path, required=True)
    p.add_argument("--gt", type=Path, required=True)
    p.add_argument("--json", type=Path, help="write {cases, mean} here")
    p.add_argument("--spacing", type=float, nargs="+", metavar="D",
                   help="pixel size DY DX (PNG; default 1 1) or voxel size D0 D1 D2 overriding NIfTI headers")
    p.add_argument("--ignore", type=int, metavar="VALUE",
                   help="ground-truth value of unannotated pixels (e.g. 255): scored as neither class nor error")
    from .evaluation.report import add_arguments as add_report_arguments

    add_report_arguments(p)

    p = sub.add_parser("verify", help="check every Triton kernel against its reference on this device")
    p.add_argument("--device", help="cuda or cpu (cpu needs TRITON_INTERPRET=1); default: cuda if available")
    p.add_argument("--quick", action="store_true", help="fewer, smaller cases")
    p.add_argument("--compile-only", action="store_true",
                   help="compile every kernel launch variant ahead of time for --arch targets (no GPU needed)")
    p.add_argument("--arch", action="append", metavar="SM",
                   help="target for --compile-only, e.g. sm_80, sm_90 (repeatable; default: sm_80 and sm_90)")

    from .evaluation.plots import add_arguments as add_plot_arguments
    from .study.ablate import add_arguments as add_ablate_arguments

    add_plot_arguments(sub.add_parser("plot", help="training curves (loss, validation Dice, PaS) of a run"))
    from .models.export import add_arguments as add_export_arguments

    add_export_arguments(sub.add_parser("export", help="a run's EMA weights and config as one small file to ship"))
    add_ablate_arguments(sub.add_parser("ablate", help="train and compare SPAD, w/o ScD, w/o BcD and the baseline"))
    return parser


def _load_config(args):
    from .config import SPADConfig

    base = SPADConfig.preset(args.preset).to_dict() if getattr(args, "preset", None) else {}
    if getattr(args, "config", None):
        base.update(_read_config_keys(args.config))
    changes = {}
    if getattr(args, "steps", None) is not None:
        changes["train_steps"] = args.steps
    if getattr(args, "device", None):
        changes["device"] = args.device
    return SPADConfig.from_dict({**base, **changes})


def _read_config_keys(path: Path) -> dict:
    """The keys a config file sets (validated as a whole config)."""
    from .config import SPADConfig

    SPADConfig.from_file(path)  # validates every key, naming the file
    text = Path(path).read_text()
    if Path(path).suffix.lower() in (".yaml", ".yml"):
        import yaml

        return yaml.safe_load(text) or {}
    return json.loads(text)


def _check_steps(steps: int | None) -> None:
    if steps is not None and steps < 1:
        raise ValueError(f"`--steps` must be >= 1, got {steps}")


def cmd_train(args) -> int:
    from .io.paths import check_input_dir
    from .runtime.runlock import hold_run_lock

    _check_steps(args.steps)
    for name, folder in (("--data", args.data), ("--val", args.val)):
        if folder is not None:
            check_input_dir(folder, name)
    if args.resume and args.overwrite:
        raise ValueError("--resume and --overwrite exclude each other: continue the run, or replace it")
    writer = int(os.environ.get("RANK", "0")) == 0  # under torchrun, rank 0 writes the run and holds its lock
    with hold_run_lock(_train_out(args.out) if writer else None, "--out"):
        return _train_locked(args)


def _train_out(out: Path) -> Path:
    from .io.paths import check_output_dir

    return check_output_dir(out, "--out", overwrite=True)  # a folder the lock file can go in


def _train_locked(args) -> int:
    from .io.files import remove_stale_temps
    from .io.paths import check_output_dir
    from .models.checkpoint import resolve_path
    from .train.trainer import SPADTrainer

    run = Path(args.out)
    checkpoint = resolve_path(run)
    if args.resume:
        if not checkpoint.is_file():
            raise ValueError(f"--resume: no checkpoint at {str(checkpoint)!r}")
    else:
        log_file = _load_config(args).log_file
        existing = [p.name for p in (checkpoint, run / log_file) if p.is_file()]
        if existing and not args.overwrite:
            raise ValueError(f"--out {str(run)!r} already holds a run ({', '.join(existing)}): pass --resume to "
                             "continue it or --overwrite to replace it")
    check_output_dir(run, "--out", inputs=[args.data, args.val], overwrite=True)
    remove_stale_temps(run)

    if args.resume:
        if args.preset:
            raise ValueError("--preset does not apply on --resume: the run's config is in its checkpoint")
        trainer = SPADTrainer.from_checkpoint(run, args.data, args.val, out_dir=run, device=args.device,
                                              allow_data_change=args.allow_data_change)
        cfg = trainer.config
        changes = _read_config_keys(args.config) if args.config else {}
        for key, value in sorted(changes.items()):
            current = getattr(cfg, key)
            same = list(current) == list(value) if isinstance(current, tuple) else current == value
            if not same and key not in RESUMABLE_KEYS:
                raise ValueError(f"config key `{key}` cannot change on --resume ({current!r} in the checkpoint, "
                                 f"{value!r} in {str(args.config)!r}); keys that may: "
                                 f"{', '.join(sorted(RESUMABLE_KEYS))}")
        if args.steps is not None:
            changes["train_steps"] = args.steps
        if changes.get("train_steps", trainer.step) < trainer.step:
            given = "--steps" if args.steps is not None else f"`train_steps` in {str(args.config)!r}"
            raise ValueError(f"{given} {changes['train_steps']} is below the run's step {trainer.step}: a resumed "
                             "run only trains on (its checkpoint is left as it is)")
        if "train_steps" in changes and cfg.pas_steps is None and "pas_steps" not in changes:
            # PaS keeps the horizon it was trained with: "train longer" adds clean-mask steps, never re-opens the
            # perturbation by moving the progress p = step / horizon back
            changes["pas_steps"] = cfg.train_steps
        for key, value in changes.items():
            if key != "device":
                setattr(trainer.config, key, value)
        type(cfg).from_dict(trainer.config.to_dict())  # re-validate the changed config
    else:
        cfg = _load_config(args)
        data = args.data
        if data is not None:
            cfg, data = _volume_data(cfg, data, args.config)
        if args.overwrite:
            for p in (checkpoint, run / cfg.log_file):
                p.unlink(missing_ok=True)  # a clean log: the replaced run's records do not continue into this one
        trainer = SPADTrainer(cfg, data, args.val, out_dir=run)
    from .config import cpu_training_hint

    hint = cpu_training_hint(trainer.config, trainer.device.type)
    if hint and trainer.rank == 0:
        print(hint, file=sys.stderr, flush=True)
    trainer.fit()
    if trainer.stopped_by:  # fit saved this step's checkpoint before stopping
        from .runtime.preemption import EXIT_STOPPED

        if trainer.rank == 0:
            print(f"spadfast train: stopped at step {trainer.step} by {trainer.stopped_by}; checkpoint "
                  f"{checkpoint}; continue with --resume", flush=True)
        return EXIT_STOPPED
    path = trainer.save(run)
    if trainer.rank == 0:
        print(f"spadfast: trained to step {trainer.step}; checkpoint {path}")
    return 0


def _volume_data(cfg, data: Path, config_file: Path | None):
    """For a Decathlon / nnU-Net folder: read it once and take ``num_classes``, ``image_channels`` and the slicing
    axis from it (a config file that sets them differently is an error naming the key)."""
    from .data.batches import volume_dataset
    from .io.nifti import is_volume_folder

    if not is_volume_folder(data):
        return cfg, data
    dataset = volume_dataset(data, cfg)  # the constructor --resume and the library use: the same slice draws
    ds = getattr(dataset, "dataset", dataset)  # the VolumeSlices under PatchDraws (resize: false)
    given = _read_config_keys(config_file) if config_file else {}
    found = {"num_classes": ds.num_classes, "image_channels": ds.image_channels, "slice_axis": ds.axis,
             "modalities": list(ds.modalities)}
    for key, value in found.items():
        if key in given and given[key] not in (None, []) and given[key] != value:
            raise ValueError(f"config key `{key}` is {given[key]!r} but {str(data)!r} has {value!r}")
    return type(cfg).from_dict({**cfg.to_dict(), **found}), dataset


def cmd_predict(args) -> int:
    from .infer.onnx_model import check_runtime
    from .infer.segmenter import Segmenter, check_members, predict_folder
    from .io.paths import check_input_dir, check_output_dir, model_inputs
    from .models.checkpoint import resolve_path

    check_input_dir(args.images, "--images")
    if args.overlay:
        from .io.input_folders import check_no_volumes

        check_no_volumes(args.images, "--overlay draws contours on 2-D images")
    onnx = check_runtime(args.checkpoint, args.runtime, args.compile, args.amp, args.device)
    checkpoints = [Path(c) if o else resolve_path(c) for c, o in zip(args.checkpoint, onnx)]
    for checkpoint, o in zip(checkpoints, onnx):
        if not o and not checkpoint.is_file():
            raise ValueError(f"--checkpoint: no checkpoint at {str(checkpoint)!r}")
    shard = (dist_utils.env_rank(), dist_utils.env_world_size())  # under torchrun, ranks split the files
    if shard[1] > 1:  # a gloo group for the barrier and the summary (the model itself runs per process)
        import torch

        dist_utils.init_from_env(torch.device("cpu"))
    check_output_dir(args.out, "--out", inputs=[args.images, *model_inputs(args.checkpoint)],
                     overwrite=args.overwrite)
    dist_utils.barrier()  # every rank has checked --out before any writes into it
    if args.threads is not None:
        most = 4 * (os.cpu_count() or 1)
        if not 1 <= args.threads <= most:
            raise ValueError(f"`--threads` must be in [1, {most}] (4 per CPU core), got {args.threads}")
        import torch

        torch.set_num_threads(args.threads)
    models = [Segmenter.from_onnx(c, threads=args.threads) if o else
              Segmenter.from_checkpoint(c, device=args.device, amp=args.amp, compile=args.compile)
              for c, o in zip(args.checkpoint, onnx)]
    if getattr(args, "step_fusion", None) is not None:
        for model in models:
            model.step_fusion = args.step_fusion
    if len(models) > 1:
        from .infer.ensemble import ModelEnsemble

        segmenter = ModelEnsemble(models, [str(c) for c in args.checkpoint])
    else:
        segmenter = models[0]
    check_members(segmenter, args.ensemble, args.tta, name="--ensemble")  # before any sampling
    from .io.nifti import volume_files

    if volume_files(args.images):
        from .infer.volumes import predict_volume_folder

        names = predict_volume_folder(  # preprocessed as the model was trained (its config, read there)
            segmenter, args.images, args.out, steps=args.steps, ensemble=args.ensemble, seed=args.seed,
            batch_size=args.batch_size, write_probabilities=args.probabilities, write_uncertainty=args.uncertainty,
            shard=shard, uint8_maps=args.uint8_maps, tta=args.tta,
            progress=not args.no_progress and sys.stderr.isatty() and shard[0] == 0,
        )
        _print_total(len(names), "label volumes", args.out)
        return 0
    names = predict_folder(
        segmenter, args.images, args.out, steps=args.steps, ensemble=args.ensemble, seed=args.seed,
        batch_size=args.batch_size, overlay=args.overlay, uncertainty=args.uncertainty,
        progress=not args.no_progress and sys.stderr.isatty() and shard[0] == 0, shard=shard, tta=args.tta,
        probabilities=args.probabilities,
    )
    _print_total(len(names), "masks", args.out)
    return 0


def _print_total(count: int, what: str, out) -> None:
    """One summary line on rank 0 with every rank's count (one process: its own)."""
    total = dist_utils.sum_over_ranks(count)
    if dist_utils.is_main():
        print(f"spadfast: wrote {total} {what} to {out}")


def cmd_export(args) -> int:
    if args.format == "onnx":
        from .infer.onnx_export import main as onnx_main

        return onnx_main(args)
    from .models.export import main as export_main

    return export_main(args)


def cmd_evaluate(args) -> int:
    from .evaluation import report as report_mod
    from .evaluation.evaluate import evaluate_folders, format_table
    from .io.files import write_text_atomic
    from .io.paths import check_input_dir, check_output_file

    check_input_dir(args.pred, "--pred")
    check_input_dir(args.gt, "--gt")
    if args.json:
        check_output_file(args.json, "--json", inputs=[args.pred, args.gt])
    report_mod.check_arguments(args)
    shard = (dist_utils.env_rank(), dist_utils.env_world_size())  # under torchrun, ranks score a share of the cases
    if shard[1] > 1:
        import torch

        dist_utils.init_from_env(torch.device("cpu"))
    report = evaluate_folders(args.pred, args.gt, spacing=tuple(args.spacing) if args.spacing else None,
                              shard=shard, ignore=args.ignore)
    if not dist_utils.is_main():  # rank 0 holds the whole report and writes it once
        return 0
    print(format_table(report))
    if args.json:
        write_text_atomic(args.json, json.dumps(report, indent=2))
    return report_mod.main(args, report)


def cmd_demo(args) -> int:
    from .config import SPADConfig
    from .demo import demo_config, run_demo, summary_line
    from .io.paths import check_output_dir

    _check_steps(args.steps)
    own = ("run", "test", "pred", "overlays", "metrics.json", "baselines.json", "config.json", "perturbation.png")
    check_output_dir(args.out, "--out", overwrite=args.overwrite, own_files=own)
    base = demo_config(args.device or "auto")
    if args.preset:
        base = SPADConfig.preset(args.preset)
    cfg_dict = base.to_dict()
    if args.config:
        cfg_dict.update(_read_config_keys(args.config))
    if args.steps is not None:
        cfg_dict["train_steps"] = args.steps
    if args.device:
        cfg_dict["device"] = args.device
    report = run_demo(args.out, SPADConfig.from_dict(cfg_dict), test_size=args.test_size)
    print(summary_line(report, args.out))
    return 0


def cmd_verify(args) -> int:
    from .verify import run_verify

    return run_verify(device=args.device, quick=args.quick, compile_only=args.compile_only, archs=args.arch)


def _delegate(module: str):
    """The handler of a subcommand whose module has ``main(args)`` (imported when the subcommand runs)."""
    return lambda args: importlib.import_module(f".{module}", __package__).main(args)


def _error_line(e: Exception) -> str | None:
    """The one line a user sees for an input/environment error (None: a bug, re-raised with its traceback)."""
    if isinstance(e, NotImplementedError):  # an op without an Apple-GPU kernel: which one, and the ways around it
        return None if "mps" not in str(e).lower() else (
            f"on device 'mps': {str(e).splitlines()[0]} Set PYTORCH_ENABLE_MPS_FALLBACK=1 (that op then runs on "
            "the CPU) or use --device cpu")
    if isinstance(e, OSError):  # FileNotFoundError, PermissionError, disk full, ...: names its path
        return f"{e.strerror or e}{f': {e.filename!r}' if getattr(e, 'filename', None) else ''}"
    return str(e)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    handler = {"demo": cmd_demo, "train": cmd_train, "predict": cmd_predict, "evaluate": cmd_evaluate,
               "verify": cmd_verify, "plot": _delegate("evaluation.plots"), "ablate": _delegate("study.ablate"), "export": cmd_export}[args.command]
    t0 = time.perf_counter()
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1  # a torchrun worker: see distributed.exit_process
    try:
        code = handler(args)
    except (ValueError, TypeError, FloatingPointError, OSError, NotImplementedError) as e:
        text = _error_line(e)  # every message is one line
        if text is None:
            raise
        print(f"spadfast {args.command}: error: {' '.join(text.split())}", file=sys.stderr)
        dist_utils.shutdown(wait=False)
        if distributed:
            dist_utils.exit_process(2)
        return 2
    dist_utils.shutdown()
    if args.command in ("demo", "train"):
        print(f"spadfast {args.command}: {time.perf_counter() - t0:.1f} s")
    if distributed:
        dist_utils.exit_process(code)
    return code
