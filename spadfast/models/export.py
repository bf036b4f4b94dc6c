"""``spadfast export``: a trained model without its training state, to ship and to predict with.

An export is a spadfast safetensors file (the checkpoint format: atomic write, per-tensor SHA-256) holding only the
EMA weights (``ema.*``, and ``prior.ema.*`` for a model with a supervised prior; float32, or float16 with ``half``)
and metadata ``{"kind": "export", "config", "step", "class_names", "half", "source_id", "spadfast_version"}``
(``source_id``: a digest of the source checkpoint's path, so that re-exporting a run may replace its earlier export and nothing else): about a quarter of a training checkpoint
(model, EMA and two Adam moments), an eighth with ``half``. :meth:`spadfast.infer.segmenter.Segmenter.from_checkpoint`
(and every command that reads a model) accepts it as it accepts a run, and an export without ``half`` predicts
byte-identically to its run.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from .._version import __version__
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


def _replaceable(out: Path, source: str, config: dict[str, Any]) -> str | None:
    """None when ``out`` may be (re)written by an export of ``source`` (whose config is ``config``): it does not
    exist, or it is an earlier export of the same run (the same source file, :func:`source_id`; exports written
    before the source was recorded: the same config). Else what ``out`` is, for the refusal."""
    if not out.exists():
        return None
    try:
        from safetensors import safe_open

        with safe_open(str(out), framework="pt") as f:
            header = f.metadata() or {}
        theirs = json.loads(header.get("meta", "{}"))
    except Exception:  # any unreadable file is simply not an export of ours
        return "not a spadfast export"
    if not is_export(theirs):
        return "a training checkpoint" if "config" in theirs else "not a spadfast export"
    same = theirs.get("source_id") == source_id(source) if "source_id" in theirs else theirs.get("config") == config
    return None if same else "the export of another run"


def source_id(source: str) -> str:
    """What an export records of the checkpoint it came from: a digest of its absolute path (the path itself would
    ship a machine's folder names with the model)."""
    return hashlib.sha256(source.encode("utf-8")).hexdigest()[:16]


def export_model(checkpoint: str | os.PathLike, out: str | os.PathLike, half: bool = False,
                 class_names: list[str] | None = None, overwrite: bool = False) -> Path:
    """Write the export of ``checkpoint`` (a run folder, a checkpoint or another export) to ``out`` (``.safetensors``).

    ``class_names``: one name per class, background included (``num_classes`` names), stored for readers.
    An existing ``out`` is replaced only when it is an earlier export of the same run (the metadata records a digest
    of the source checkpoint's path) or with ``overwrite``: another run's ``checkpoint.safetensors`` is never lost
    silently.
    Raises ValueError naming the file: unreadable checkpoint, ``out`` not a ``.safetensors`` path or an existing file
    that is not an earlier export of this run, a class-name count that disagrees with the model's classes.
    """
    out = Path(out)
    if out.suffix != ".safetensors":
        raise ValueError(f"--out {str(out)!r}: an export is one .safetensors file")
    tensors, meta = read_checkpoint(checkpoint)
    source = str(resolve_path(checkpoint).expanduser().resolve())
    if not overwrite:
        what = _replaceable(out, source, meta["config"])
        if what is not None:
            raise ValueError(f"--out {str(out)!r} already exists and is {what}, not an earlier export of "
                             f"{source!r}: pass --overwrite to replace it, or choose another path")
    config = meta["config"]
    n = int(config.get("num_classes", 2))
    if class_names is not None and len(class_names) != n:
        raise ValueError(f"--labels names {len(class_names)} classes but the model in "
                         f"{str(resolve_path(checkpoint))!r} has num_classes = {n} (background included)")
    ema = {k: (v.half() if half and v.is_floating_point() else v) for k, v in tensors.items()
           if k.startswith(("ema.", "prior.ema."))}
    if not ema:
        raise ValueError(f"{str(resolve_path(checkpoint))!r} holds no EMA weights to export")
    names = class_names if class_names is not None else meta.get("class_names")
    return write_checkpoint(out, ema, {"kind": EXPORT_KIND, "config": config, "step": meta.get("step"),
                                       "class_names": names, "half": bool(half),
                                       "source_id": source_id(source),
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
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out that is not an earlier "
                        "export of this run (safetensors), or write into a non-empty folder (onnx)")


def main(args: argparse.Namespace) -> int:
    """Handler of ``spadfast export``."""
    from ..io.paths import check_output_file

    check_output_file(args.out, "--out", inputs=[resolve_path(args.checkpoint)])
    path = export_model(args.checkpoint, args.out, half=args.half, class_names=args.labels,
                        overwrite=args.overwrite)
    size = path.stat().st_size / 2**20
    source = resolve_path(args.checkpoint).stat().st_size / 2**20
    print(f"spadfast: exported {path} ({size:.1f} MiB; the checkpoint is {source:.1f} MiB)")
    return 0

