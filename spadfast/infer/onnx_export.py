"""``spadfast export --format onnx``: the model as ONNX graphs that onnxruntime runs, with the DDIM loop left in
Python (:mod:`spadfast.infer.onnx_model`).

The export is a folder:

- ``encoder.onnx`` (cached-encoder models): ``image`` float32 ``[N, C, S, S]`` -> ``f0 .. f{L-1}``, the image
  features of every level (``model.encode``), run once per image;
- ``denoiser.onnx``: ``x`` float32 ``[N, M, S, S]`` (the noisy mask, plus the condition channels in condition
  mode or with self_condition), ``t`` float32 ``[N]`` (training timesteps) and the features ``f0 ..`` -> ``out``
  ``[N, M_out, S, S]`` (``model.denoise``); a plain UNet has no encoder and its denoiser takes
  ``x = cat[x_t, image(, cond)]``;
- ``spadfast.json``: ``{"kind": "onnx", "config", "class_names", "step", "spadfast_version", "files": {name:
  sha256}}``.

S is the model's ``image_size`` (the window every image is resized or tiled to) and N is dynamic. A 3-D model
(``unet3d``, ``cached_unet3d``) exports the same graphs on ``[N, ., d, h, w]`` windows, ``(d, h, w)`` its
``patch_size_3d`` (every 3-D sliding window has that size). The EMA weights
are exported in float32; the graphs are traced by ``torch.onnx.export`` (dynamo) and each file is written
atomically.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch

from .._version import __version__
from ..config import MODEL_TYPES_3D
from ..io.files import write_atomic, write_text_atomic
from .onnx_model import ONNX_KIND, ONNX_META, file_sha256

__all__ = ["export_onnx", "main"]


class _Encoder(torch.nn.Module):
    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.model.encode(image))


class _Denoiser(torch.nn.Module):
    def __init__(self, model: torch.nn.Module, cached: bool) -> None:
        super().__init__()
        self.model, self.cached = model, cached

    def forward(self, x: torch.Tensor, t: torch.Tensor, *features: torch.Tensor) -> torch.Tensor:
        return self.model.denoise(x, list(features), t) if self.cached else self.model(x, t)


def _export_graph(module: torch.nn.Module, inputs: tuple, names: list[str], outputs: list[str], path: Path) -> None:
    import warnings

    batch = torch.export.Dim("batch", min=1, max=1 << 16)

    def write(tmp: Path) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's notes on torchvision ops and dim names
            # the batch axis of every input is dynamic (the *features of the denoiser are one nested entry)
            shapes = tuple({0: batch} for _ in inputs[:2]) + ((tuple({0: batch} for _ in inputs[2:]),)
                                                               if len(inputs) > 2 else ())
            program = torch.onnx.export(module, inputs, input_names=names, output_names=outputs,
                                        dynamic_shapes=shapes, dynamo=True,
                                        verbose=False, external_data=False)
        program.save(str(tmp))

    write_atomic(path, write)


def export_onnx(checkpoint: str | os.PathLike, out_dir: str | os.PathLike,
                class_names: list[str] | None = None) -> Path:
    """Write the ONNX export of ``checkpoint`` (a run folder, a checkpoint or a safetensors export) to ``out_dir``
    (created; see the module docstring). Returns the path of ``spadfast.json``.

    Raises:
        ValueError: onnx/onnxscript missing (names the extra), an unreadable checkpoint, ``class_names`` of the wrong
            length (names the file).
    """
    import importlib.util

    if importlib.util.find_spec("onnxscript") is None or importlib.util.find_spec("onnx") is None:
        raise ValueError("exporting ONNX needs onnx and onnxscript (torch's exporter uses them): pip install "
                         "'spadfast[onnx]'")
    from ..models.checkpoint import read_checkpoint, resolve_path
    from .segmenter import Segmenter

    out = Path(out_dir)
    _, meta = read_checkpoint(checkpoint)
    prior = (meta.get("config") or {}).get("prior", "none")
    if prior != "none":  # the sampler would need the prior's graph too; not exported yet
        raise ValueError(f"{str(resolve_path(checkpoint))!r} has a supervised prior (`prior: {prior}`): ONNX "
                         "export does not carry it yet; export it with --format safetensors and predict with PyTorch")
    segmenter = Segmenter.from_checkpoint(checkpoint, device="cpu", amp="none")
    cfg, model = segmenter.config, segmenter.model.float().eval()
    n = cfg.num_classes
    names = class_names if class_names is not None else meta.get("class_names")
    if names is not None and len(names) != n:
        raise ValueError(f"--labels names {len(names)} classes but the model in {str(resolve_path(checkpoint))!r} "
                         f"has num_classes = {n} (background included)")
    out.mkdir(parents=True, exist_ok=True)
    C, M = cfg.input_channels, cfg.mask_channels  # input: modalities x 2.5-D slices
    window = tuple(cfg.patch_size_3d) if cfg.model_type in MODEL_TYPES_3D else (cfg.image_size, cfg.image_size)
    x_channels = 2 * M if cfg.condition_channel else M  # the condition channels: condition mode or self_condition
    cached = callable(getattr(model, "encode", None)) and callable(getattr(model, "denoise", None))
    gen = torch.Generator().manual_seed(0)
    image = torch.rand(2, C, *window, generator=gen) * 2 - 1
    t = torch.tensor([10.0, 500.0])
    files = []
    with torch.no_grad():
        if cached:
            features = tuple(model.encode(image))
            level_names = [f"f{i}" for i in range(len(features))]
            _export_graph(_Encoder(model), (image,), ["image"], level_names, out / "encoder.onnx")
            x = torch.randn(2, x_channels, *window, generator=gen)
            _export_graph(_Denoiser(model, True), (x, t, *features), ["x", "t", *level_names], ["out"],
                          out / "denoiser.onnx")
            files = ["encoder.onnx", "denoiser.onnx"]
        else:
            x = torch.randn(2, x_channels + C, *window, generator=gen)
            _export_graph(_Denoiser(model, False), (x, t), ["x", "t"], ["out"], out / "denoiser.onnx")
            files = ["denoiser.onnx"]
    record = {"kind": ONNX_KIND, "config": meta["config"], "class_names": names, "step": meta.get("step"),
              "spadfast_version": __version__, "cached_encoder": cached,
              "files": {name: file_sha256(out / name) for name in files}}
    return write_text_atomic(out / ONNX_META, json.dumps(record, indent=2))


def main(args: argparse.Namespace) -> int:
    """Handler of ``spadfast export --format onnx``."""
    from ..io.paths import check_output_dir, model_inputs
    from ..models.checkpoint import resolve_path

    if args.half:
        raise ValueError("--half applies to safetensors exports; ONNX graphs are exported in float32")
    if args.out.suffix == ".safetensors":
        raise ValueError(f"--out {str(args.out)!r}: an ONNX export is a folder (encoder.onnx, denoiser.onnx, "
                         "spadfast.json), not a .safetensors file")
    check_output_dir(args.out, "--out", inputs=model_inputs([resolve_path(args.checkpoint)]),
                     overwrite=args.overwrite, own_files=("encoder.onnx", "denoiser.onnx", "spadfast.json"))
    meta = export_onnx(args.checkpoint, args.out, class_names=args.labels)
    size = sum(p.stat().st_size for p in args.out.glob("*.onnx")) / 2**20
    print(f"spadfast: exported {meta.parent} as ONNX ({size:.1f} MiB of graphs)")
    return 0
