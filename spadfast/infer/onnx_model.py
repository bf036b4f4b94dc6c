"""``predict --runtime onnxruntime``: an ONNX export (:mod:`spadfast.infer.onnx_export`) run by onnxruntime inside the
same DDIM sampler, sliding windows and writers as the PyTorch model.

:class:`OnnxCachedModel` (and :class:`OnnxModel` for a plain UNet) look to :class:`spadfast.diffusion.sampler.DDIMSampler`
like the PyTorch modules they were exported from (``encode``/``denoise``, or ``forward``): tensors go in and come
out on the CPU in float32. :func:`load_onnx_segmenter` checks the export (kind, spadfast major version, SHA-256 of
each graph) before any session is built.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch

__all__ = ["ONNX_KIND", "ONNX_META", "OnnxCachedModel", "OnnxModel", "check_runtime", "file_sha256", "is_onnx_export",
           "load_onnx_parts", "read_onnx_meta"]

ONNX_KIND = "onnx"
ONNX_META = "spadfast.json"


def is_onnx_export(path: str | os.PathLike) -> bool:
    """A folder written by :func:`spadfast.infer.onnx_export.export_onnx` (it holds ``spadfast.json``)."""
    return Path(path).is_dir() and (Path(path) / ONNX_META).is_file()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_runtime(checkpoints: list, runtime: str, compile: bool, amp: str | None,
                  device: str | None = None) -> list[bool]:
    """``predict``'s checks of ``--runtime`` against its ``--checkpoint``s; returns which of them are ONNX exports.
    ValueError: ``--runtime onnxruntime`` with a PyTorch checkpoint, ``--compile``/``--amp`` or a non-CPU ``--device``
    with an ONNX export."""
    flags = [is_onnx_export(c) for c in checkpoints]
    for checkpoint, onnx in zip(checkpoints, flags):
        if runtime == "onnxruntime" and not onnx:
            raise ValueError(f"--runtime onnxruntime: {str(checkpoint)!r} is not an ONNX export; make one with "
                             "spadfast export --format onnx --checkpoint RUN --out DIR")
        if onnx and (compile or amp not in (None, "none") or device not in (None, "auto", "cpu")):
            raise ValueError(f"--checkpoint {str(checkpoint)!r} is an ONNX export (run by onnxruntime in float32 on "
                             "the CPU): --compile, --amp and --device apply to PyTorch models")
    return flags


def _session(path: Path, threads: int | None):
    try:
        import onnxruntime as ort
    except ImportError:
        raise ValueError(f"{path.parent}: running an ONNX export needs onnxruntime (pip install onnxruntime, or "
                         "'spadfast[onnx]')") from None
    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = int(threads)
    options.log_severity_level = 3  # errors only
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def _np(t: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.detach().to("cpu", torch.float32).numpy())


class OnnxModel(torch.nn.Module):
    """A plain denoiser graph: ``forward(cat[x_t, image(, cond)], t) -> out`` (float32, CPU)."""

    def __init__(self, folder: Path, threads: int | None = None) -> None:
        super().__init__()
        self.denoiser = _session(folder / "denoiser.onnx", threads)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = t.expand(x.shape[0]) if t.dim() == 0 else t
        return torch.from_numpy(self.denoiser.run(None, {"x": _np(x), "t": _np(t)})[0])


class OnnxCachedModel(torch.nn.Module):
    """A cached-encoder export: ``encode(image) -> features`` once per image, ``denoise(x, features, t)`` per step."""

    def __init__(self, folder: Path, threads: int | None = None) -> None:
        super().__init__()
        self.encoder = _session(folder / "encoder.onnx", threads)
        self.denoiser = _session(folder / "denoiser.onnx", threads)
        self.levels = [o.name for o in self.encoder.get_outputs()]

    def encode(self, image: torch.Tensor) -> list[torch.Tensor]:
        return [torch.from_numpy(f) for f in self.encoder.run(None, {"image": _np(image)})]

    def denoise(self, x: torch.Tensor, features: list[torch.Tensor], t: torch.Tensor) -> torch.Tensor:
        t = t.expand(x.shape[0]) if t.dim() == 0 else t
        feeds = {"x": _np(x), "t": _np(t), **{name: _np(f) for name, f in zip(self.levels, features)}}
        return torch.from_numpy(self.denoiser.run(None, feeds)[0])


def read_onnx_meta(folder: str | os.PathLike) -> dict:
    """``spadfast.json`` of an ONNX export, checked: kind, spadfast major version, every graph's SHA-256."""
    from ..models.export import check_export_version

    folder = Path(folder)
    path = folder / ONNX_META
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read {path}: {e}") from None
    if not isinstance(meta, dict) or meta.get("kind") != ONNX_KIND or not isinstance(meta.get("files"), dict):
        raise ValueError(f"{path} is not a spadfast ONNX export's description")
    check_export_version({**meta, "kind": "export"}, str(folder))
    for name, digest in meta["files"].items():
        graph = folder / name
        if not graph.is_file():
            raise ValueError(f"{graph} is missing from the ONNX export")
        if file_sha256(graph) != digest:
            raise ValueError(f"{graph} does not match its SHA-256 in {ONNX_META}: the file is corrupt or was changed")
    return meta


def load_onnx_parts(folder: str | os.PathLike, threads: int | None = None):
    """``(config, model, alphas_cumprod)`` of the ONNX export in ``folder``, run by onnxruntime (CPU, float32, no
    CUDA graphs): what :meth:`spadfast.infer.segmenter.Segmenter.from_onnx` is built from."""
    from ..config import SPADConfig
    from ..diffusion.schedule import alphas_cumprod, make_betas

    folder = Path(folder)
    meta = read_onnx_meta(folder)
    cfg = SPADConfig.from_checkpoint_meta({**meta, "kind": "export"}, str(folder), "cpu")
    cfg = SPADConfig.from_dict({**cfg.to_dict(), "amp": "none", "cuda_graph": False, "channels_last": False})
    model = (OnnxCachedModel if meta.get("cached_encoder", True) else OnnxModel)(folder, threads)
    betas = make_betas(cfg.beta_schedule, cfg.num_train_timesteps, cfg.beta_start, cfg.beta_end)
    return cfg, model, alphas_cumprod(betas)
