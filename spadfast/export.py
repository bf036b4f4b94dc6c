"""``spadfast export``: a trained model without its training state, to ship and to predict with.

An export is a spadfast safetensors file (the checkpoint format: atomic write, per-tensor SHA-256) holding only the
EMA weights (``ema.*``, float32, or float16 with ``half``) and metadata ``{"kind": "export", "config", "step",
"class_names", "spadfast_version"}``: about a quarter of a training checkpoint (model, EMA and two Adam moments), an
eighth with ``half``. :meth:`spadfast.predict.Segmenter.from_checkpoint` (and every command that reads a model)
accepts it as it accepts a run, and an export without ``half`` predicts byte-identically to its run.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from ._version import __version__
from .checkpoint import read_checkpoint, resolve_path, write_checkpoint

__all__ = ["EXPORT_KIND", "export_model", "is_export", "check_export_version", "add_arguments", "main"]

EXPORT_KIND = "export"


def check_export_version(meta: dict[str, Any], source: str) -> None:
    """ValueError naming ``source`` for an export written by another spadfast major version (its weights and
    config may mean something else there)."""
    if not is_export(meta):
        return
    theirs = str(meta.get("spadfast_version", "?"))
    if theirs.split(".")[0] != __version__.split(".")[0]:
        raise ValueError(f"{source} was exported by spadfast {theirs}; this spadfast is {__version__} (another "
                         "major version): export it again with this version from its run")


def is_export(meta: dict[str, Any]) -> bool:
    """True for the metadata of an export (no optimizer state, no random streams)."""
    return meta.get("kind") == EXPORT_KIND


def export_model(checkpoint: str | os.PathLike, out: str | os.PathLike, half: bool = False,
                 class_names: list[str] | None = None) -> Path:
    """Write the export of ``checkpoint`` (a run folder, a checkpoint or another export) to ``out`` (``.safetensors``).

    ``class_names``: one name per class, background included (``num_classes`` names), stored for readers.
    Raises ValueError naming the file: unreadable checkpoint, ``out`` not a ``.safetensors`` path, a class-name
    count that disagrees with the model's classes.
    """
    out = Path(out)
    if out.suffix != ".safetensors":
        raise ValueError(f"--out {str(out)!r}: an export is one .safetensors file")
    tensors, meta = read_checkpoint(checkpoint)
    config = meta["config"]
    n = int(config.get("num_classes", 2))
    if class_names is not None and len(class_names) != n:
        raise ValueError(f"--labels names {len(class_names)} classes but the model in "
                         f"{str(resolve_path(checkpoint))!r} has num_classes = {n} (background included)")
    ema = {k: (v.half() if half and v.is_floating_point() else v) for k, v in tensors.items() if k.startswith("ema.")}
    if not ema:
        raise ValueError(f"{str(resolve_path(checkpoint))!r} holds no EMA weights to export")
    names = class_names if class_names is not None else meta.get("class_names")
    return write_checkpoint(out, ema, {"kind": EXPORT_KIND, "config": config, "step": meta.get("step"),
                                       "class_names": names, "half": bool(half),
                                       "spadfast_version": __version__})


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``spadfast export``."""
    parser.add_argument("--checkpoint", type=Path, required=True, help="run folder or .safetensors checkpoint")
    parser.add_argument("--out", type=Path, required=True,
                        help="the export: a .safetensors file, or a folder with --format onnx")
    parser.add_argument("--format", choices=("safetensors", "onnx"), default="safetensors",
                        help="onnx: encoder.onnx + denoiser.onnx + spadfast.json, run by predict --runtime onnxruntime")
    parser.add_argument("--half", action="store_true", help="store the weights as float16 (half the size)")
    parser.add_argument("--labels", nargs="+", metavar="NAME",
                        help="class names, background first (num_classes names)")


def main(args: argparse.Namespace) -> int:
    """Handler of ``spadfast export``."""
    from .paths import check_output_file

    check_output_file(args.out, "--out", inputs=[resolve_path(args.checkpoint)])
    path = export_model(args.checkpoint, args.out, half=args.half, class_names=args.labels)
    size = path.stat().st_size / 2**20
    source = resolve_path(args.checkpoint).stat().st_size / 2**20
    print(f"spadfast: exported {path} ({size:.1f} MiB; the checkpoint is {source:.1f} MiB)")
    return 0

