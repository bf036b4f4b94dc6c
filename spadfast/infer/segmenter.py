"""Segment a folder of images with a trained trainer: 0/255 PNG masks, optional overlays and uncertainty maps."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from ..config import MODEL_TYPES_3D
from ..diffusion.sampler import (
    DDIMSampler,
    SampleResult,
    check_step_fusion,
    check_volume_images,
    image_noise_key,
    labels_from_probs,
)
from ..evaluation.visualize import overlay_contour
from ..io.files import (
    check_channels,
    check_size,
    index_folder,
    intensity_range,
    read_image,
    read_mask,
    read_model_input,
    resize_image,
    stored_array,
    stored_to_model,
    warn_low_range,
    write_bytes_atomic,
    write_mask_png,
)
from ..io.input_folders import check_one_input_kind
from ..ops.checks import check_images, check_int
from ..ops.constants import MIN_SIDE
from ..runtime.distributed import shard_of
from .ensemble import ModelEnsemble, check_members
from .prediction import Prediction
from .sliding_window import segment_image
from .tta import with_tta


class Segmenter:
    """Inference only: a checkpoint's EMA model and its sampler (no optimizer, no DDP, no datasets).

    ``segment`` has :meth:`spadfast.SPADTrainer.segment`'s signature, so either can drive :func:`predict_folder`.
    ``prior``: the supervised prior network of a ``prior: supervised`` model (its EMA weights, ``prior.ema.*``).
    """

    def __init__(self, config, model: torch.nn.Module, alphas_cumprod: torch.Tensor,
                 prior: torch.nn.Module | None = None) -> None:
        self.config = config
        self.model = model.eval().requires_grad_(False)
        self.prior = prior.eval().requires_grad_(False) if prior is not None else None
        self.sampler = DDIMSampler.from_config(config, self.model, alphas_cumprod, prior=self.prior)

    @property
    def step_fusion(self) -> str:
        """How the sampler combines its steps: ``"none"`` (last sample), ``"mean"`` or ``"uncertainty"``
        (:func:`spadfast.diffusion.sampler.fusion_weight`); set it to change every later prediction (the config's
        ``step_fusion`` follows)."""
        return self.sampler.step_fusion

    @step_fusion.setter
    def step_fusion(self, value: str) -> None:
        self.sampler.step_fusion = check_step_fusion(value)
        self.config.step_fusion = value

    @classmethod
    def from_checkpoint(cls, path, device: str | None = None, amp: str | None = None,
                        compile: bool = False) -> Segmenter:
        """Load the EMA weights of a run folder or ``.safetensors`` file onto ``device`` (default: the config's).

        ``amp``: None keeps the run's; ``"none"``/``"bf16"``/``"fp16"`` force one; ``"auto"`` picks bf16 on CUDA and
        on CPUs with native bf16 (:func:`spadfast.runtime.cpu_features.cpu_has_native_bf16`), float32 elsewhere.
        ``compile``: ``torch.compile`` the denoiser (the per-step part of a cached-encoder model); inductor caches
        the compiled code on disk, so later processes start faster.
        """
        from ..config import SPADConfig
        from ..diffusion.schedule import alphas_cumprod, make_betas
        from ..models.checkpoint import read_checkpoint, resolve_path
        from ..models.factory import build_model
        from ..runtime.distributed import resolve_device

        tensors, meta = read_checkpoint(path)
        source = str(resolve_path(path))
        from ..models.export import check_export_version

        check_export_version(meta, source)
        cfg = SPADConfig.from_checkpoint_meta(meta, source, device)
        if amp is not None:
            cfg = SPADConfig.from_dict({**cfg.to_dict(), "amp": _resolve_amp(amp, resolve_device(cfg.device))})
        channels_last = cfg.channels_last and not cfg.is_3d  # 5-D weights have no channels_last
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        nets = {"ema.": build_model(cfg)}
        if cfg.prior != "none":
            nets["prior.ema."] = build_model(cfg.prior_config())
        elif any(k.startswith("prior.") for k in tensors):
            raise ValueError(f"checkpoint {source!r} holds prior.* weights but its config has `prior: none`")
        for prefix, net in nets.items():
            ema = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
            try:
                net.load_state_dict(ema)
            except RuntimeError as e:
                raise ValueError(f"checkpoint {source!r} does not match the {'prior' if 'prior' in prefix else 'model'}"
                                 f": {e}") from None
            nets[prefix] = net.to(resolve_device(cfg.device), memory_format=memory_format)
        model = nets["ema."]
        betas = make_betas(cfg.beta_schedule, cfg.num_train_timesteps, cfg.beta_start, cfg.beta_end)
        segmenter = cls(cfg, model, alphas_cumprod(betas), prior=nets.get("prior.ema."))
        if compile:
            if callable(getattr(model, "denoise", None)):
                model.denoise = torch.compile(model.denoise)
            else:
                segmenter.sampler.model = torch.compile(model)
            segmenter.sampler.cuda_graph = False  # compiled code manages its own graphs (mode="reduce-overhead")
        return segmenter

    @classmethod
    def load(cls, path, device: str | None = None):
        """:meth:`from_checkpoint` for a run folder, a checkpoint or an export (``spadfast export``; an ONNX export
        folder runs on onnxruntime: :meth:`from_onnx`); a list of them is a
        :class:`spadfast.infer.ensemble.ModelEnsemble` (members split across the models)."""
        from .onnx_model import is_onnx_export

        if isinstance(path, (list, tuple)):
            if len(path) != 1:
                return ModelEnsemble([cls.load(p, device=device) for p in path], [str(p) for p in path])
            path = path[0]
        if is_onnx_export(path):
            if device not in (None, "auto", "cpu"):
                raise ValueError(f"{path} is an ONNX export: it runs on onnxruntime's CPU provider, not on {device!r}")
            return cls.from_onnx(path)
        return cls.from_checkpoint(path, device=device)

    @classmethod
    def from_onnx(cls, folder, threads: int | None = None) -> Segmenter:
        """The ONNX export in ``folder`` (``spadfast export --format onnx``) run by onnxruntime on the CPU: same
        sampler, windows and outputs as the PyTorch model (:mod:`spadfast.infer.onnx_model`)."""
        from .onnx_model import load_onnx_parts

        return cls(*load_onnx_parts(folder, threads))

    def predict(self, x, steps: int | None = None, ensemble: int | None = None, seed: int = 0,
                name: str | None = None, tta: bool = False) -> Prediction:
        """Segment one image or volume at the input's size or voxel grid.

        ``x``: a path (PNG/TIFF/... or NIfTI ``.nii``/``.nii.gz``), a nibabel image, or a numpy array as Python image
        readers return it: ``[H,W]`` gray or ``[H,W,C]`` in RGB(A) order (PIL, imageio, scikit-image, tifffile,
        napari; convert ``cv2.imread``'s BGR with ``cv2.cvtColor`` first), bool, uint8, uint16, float in [0, 1] or
        another integer type (:func:`array_to_model`), normalised as training normalised files. A
        2-D input must be at least ``MIN_SIDE`` (8) px on each side for a native-resolution model, as in
        ``predict``; ``ensemble`` below the number of models, or ``tta`` with fewer than 2 members per model, is
        refused (:func:`spadfast.infer.ensemble.check_members`). Returns a
        :class:`spadfast.infer.prediction.Prediction` (attributes, or keys ``"labels"``, ``"mask"``, ``"foreground"``,
        ``"probs"``, ``"std"``): for a 2-D input ``labels`` = ``mask`` int ``[H,W]`` (0 background),
        ``foreground`` bool, ``probs``/``std`` float32 ``[H,W]`` (binary) or ``[M,H,W]``; for a volume ``labels``
        ``[I,J,K]`` and ``probs``/``std`` ``[I,J,K,M]``. These are what ``predict`` writes for the
        same file (the noise is keyed by ``name``, default the file's stem or ``"array"``). ``tta``: flips (and
        transposes) spread over the members (:mod:`spadfast.infer.tta`; a volume's slices each)."""
        check_members(self, ensemble, tta)
        if _is_volume_input(x):
            return _predict_volume_input(self, x, steps, ensemble, seed, tta)
        cfg = self.config
        check_not_volume_only(cfg, "`x` is a 2-D image")
        native = not getattr(cfg, "resize", True)
        size = None if native else cfg.image_size
        if isinstance(x, (str, Path)):
            image, hw, _ = read_model_input(x, size, cfg.image_channels, cfg.intensity_norm)
            name = name or Path(x).stem
        else:
            image, hw = array_to_model(np.asarray(x) if isinstance(x, torch.Tensor) else x, size,
                                       cfg.image_channels, cfg.intensity_norm)
            name = name or "array"
        if native:
            check_min_side(hw, str(x) if isinstance(x, (str, Path)) else "`x`")
        tensor = torch.from_numpy(image).float()
        segment = with_tta(self) if tta else self.segment
        if native:
            probs_t, std_t = segment_image(self, tensor, name, steps, ensemble, seed, segment=segment)
            probs, std = probs_t.numpy(), std_t.numpy()
        else:
            result = segment(tensor[None], steps=steps, ensemble=ensemble, seed=seed,
                             noise_keys=[image_noise_key(name)])
            probs = np.stack([_to_native(p, *hw) for p in result.probs[0].float().cpu().numpy()])
            std = np.stack([_to_native(u, *hw) for u in result.std[0].float().cpu().numpy()])
        labels = labels_from_probs(probs, cfg.threshold)
        if probs.shape[0] == 1:
            probs, std = probs[0], std[0]
        return Prediction(labels, probs, std)

    def segment(self, images: torch.Tensor, steps: int | None = None, ensemble: int | None = None,
                seed: int | None = 0, return_members: bool = False,
                noise_keys: list[int] | None = None, step_fusion: str | None = None) -> SampleResult:
        """``images`` float ``[B,C,H,W]`` in [-1, 1] -> :class:`SampleResult`; ``None`` arguments take the config's
        (``step_fusion``: the sampler's, :attr:`step_fusion`)."""
        cfg = self.config
        if getattr(cfg, "model_type", None) in MODEL_TYPES_3D:  # a 3-D model: windows [B,C,D,H,W]
            images = check_volume_images(images, cfg.input_channels)
        else:
            images, _ = check_images(images, cfg.input_channels)
        return self.sampler.sample(
            images, steps=cfg.sample_steps if steps is None else steps,
            ensemble=cfg.ensemble if ensemble is None else ensemble, seed=seed, threshold=cfg.threshold,
            return_members=return_members, noise_keys=noise_keys, validate=False, step_fusion=step_fusion,
        )

    def segment_fusion_grid(self, images: torch.Tensor, steps: int | None = None, ensemble: int | None = None,
                            subsets: list[int] | None = None, seed: int | None = 0,
                            noise_keys: list[int] | None = None) -> dict[tuple[str, int], torch.Tensor]:
        """Every step fusion x the first-``e``-member ensembles of one sampling pass
        (:meth:`~spadfast.diffusion.sampler.DDIMSampler.sample_fusion_grid`): ``{(fusion, e): members}``, float32
        ``[B,e,M,H,W]`` in [0, 1], each what :meth:`segment` with that ``step_fusion`` and ``ensemble=e`` returns
        as members. ``images`` as for :meth:`segment`."""
        cfg = self.config
        if getattr(cfg, "model_type", None) in MODEL_TYPES_3D:
            images = check_volume_images(images, cfg.input_channels)
        else:
            images, _ = check_images(images, cfg.input_channels)
        return self.sampler.sample_fusion_grid(
            images, steps=cfg.sample_steps if steps is None else steps,
            ensemble=cfg.ensemble if ensemble is None else ensemble, subsets=subsets, seed=seed,
            noise_keys=noise_keys, validate=False,
        )


def check_min_side(hw: tuple[int, int], what: str) -> None:
    """The one size rule of native-resolution prediction (CLI and API): at least ``MIN_SIDE`` px on each side."""
    if min(hw) < MIN_SIDE:
        raise ValueError(f"{what} is {hw[1]}x{hw[0]} (WxH): images must be at least {MIN_SIDE} px on each side")


def array_to_model(array: np.ndarray, size: tuple[int, int] | int | None, channels: int,
                   norm: str = "dtype") -> tuple[np.ndarray, tuple[int, int]]:
    """An image array as Python image readers return it as model input, exactly as
    :func:`spadfast.io.files.read_model_input` treats a file holding the same pixels: float32 ``[C,H,W]`` in
    ``[-1, 1]`` and the native ``(H, W)``.

    ``array``: ``[H,W]`` gray, ``[H,W,1]``, ``[H,W,2]`` gray + alpha, ``[H,W,3]`` RGB or ``[H,W,4]`` RGBA (channels
    in RGB order, as PIL, imageio, scikit-image, tifffile and napari return them; alpha is dropped; OpenCV's
    ``cv2.imread`` returns BGR: convert with ``cv2.cvtColor(a, cv2.COLOR_BGR2RGB)`` first). dtypes: bool, uint8
    (/255), uint16 (/65535), float in [0, 1], and other integer types holding values a file could: int8 in
    [0, 255] as 8-bit, int16/int32/int64/uint32/uint64 in [0, 65535] as 16-bit (PIL opens 16-bit PNGs as int32).
    Integers outside that range are read by value under ``norm`` ``"minmax"``/``"percentile"`` and refused under
    ``"dtype"``. A wrong rank, an empty array, NaN/inf or such a refused range is a ValueError naming ``x``."""
    if not isinstance(array, np.ndarray):
        raise TypeError(f"`x` must be a numpy array, a path or a tensor, got {type(array).__name__}")
    if array.ndim not in (2, 3) or array.dtype.kind not in "biuf":
        raise ValueError(f"`x` must be an [H,W] or [H,W,C] image array of numbers, got shape {array.shape} "
                         f"dtype {array.dtype}")
    if array.size == 0:
        raise ValueError(f"`x` is empty (shape {array.shape}): an image needs at least one pixel")
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise ValueError("`x` holds NaN or inf")
    rgb = _array_rgb_or_gray(array)
    size = check_size(size)
    channels = check_channels(channels, allow_none=False)
    if rgb.dtype.kind == "b":
        rgb = rgb.astype(np.uint8) * np.uint8(255)
    elif rgb.dtype == np.float16:
        rgb = rgb.astype(np.float32)  # OpenCV resizes float32/float64, not float16
    elif rgb.dtype.kind in "iu" and rgb.dtype not in (np.uint8, np.uint16):
        lo, hi = int(rgb.min()), int(rgb.max())
        top = 255 if rgb.dtype.itemsize == 1 else 65535
        if 0 <= lo and hi <= top:
            rgb = rgb.astype(np.uint8 if top == 255 else np.uint16)
        elif norm == "dtype":
            raise ValueError(f"`x` is {rgb.dtype} with values in [{lo}, {hi}]: with intensity_norm 'dtype' an "
                             f"integer image must hold values in [0, {top}] as an 8/16-bit file does; pass floats "
                             "in [0, 1] or use a model trained with intensity_norm 'minmax' or 'percentile'")
        else:  # minmax/percentile read the values themselves: no dtype range is involved
            values = rgb.astype(np.float32)
            lo_f, hi_f = intensity_range(values, 1.0, norm)
            stored = resize_image(values, size) if size is not None else values
            return stored_to_model(stored, lo_f, hi_f, channels), values.shape[:2]
    stored, lo_f, hi_f, _ = stored_array(rgb, Path("<x>"), size, norm)
    return stored_to_model(stored, lo_f, hi_f, channels), rgb.shape[:2]


def _array_rgb_or_gray(array: np.ndarray) -> np.ndarray:
    """An in-memory image (RGB(A) or gray(+alpha) channel order) as ``[H,W]`` gray or ``[H,W,3]`` RGB."""
    if array.ndim == 2:
        return array
    if array.shape[2] in (1, 2):
        return array[:, :, 0]
    if array.shape[2] in (3, 4):
        return np.ascontiguousarray(array[:, :, :3])
    raise ValueError(f"`x` has {array.shape[2]} channels (shape {array.shape}): expected gray [H,W], or [H,W,C] "
                     "with C = 1 (gray), 2 (gray + alpha), 3 (RGB) or 4 (RGBA)")


def _is_volume_input(x) -> bool:
    """A NIfTI path or an in-memory nibabel image."""
    if isinstance(x, (str, Path)):
        return Path(x).name.lower().endswith((".nii", ".nii.gz"))
    return type(x).__module__.startswith("nibabel")


def _predict_volume_input(segmenter, x, steps, ensemble, seed, tta: bool = False) -> Prediction:
    """:meth:`Segmenter.predict` of a volume: the settings ``spadfast predict`` uses on NIfTI folders."""
    import tempfile

    from .volumes import segment_volume

    kwargs = dict(steps=steps, ensemble=ensemble, seed=seed, write_probabilities=True, write_uncertainty=True,
                  tta=tta)  # the preprocessing: the model's own (predict_volumes.model_preprocessing)
    if isinstance(x, (str, Path)):
        out = segment_volume(segmenter, [x], **kwargs)
    else:  # a nibabel image: the readers take files
        import nibabel as nib

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "image.nii.gz"
            nib.save(x, str(path))
            out = segment_volume(segmenter, [path], **kwargs)
    return Prediction(out["labels"], out["probs"], out["std"])


def _resolve_amp(amp: str, device: torch.device) -> str:
    if amp == "auto":
        if device.type == "mps":
            return "none"  # float32 on Apple GPUs: their autocast covers fewer ops
        from ..runtime.cpu_features import cpu_has_native_bf16

        return "bf16" if device.type == "cuda" or cpu_has_native_bf16() else "none"
    if amp not in ("none", "bf16", "fp16"):
        raise ValueError(f"`amp` must be one of auto, none, bf16, fp16, got {amp!r}")
    return amp


def _to_native(values: np.ndarray, h: int, w: int) -> np.ndarray:
    """Bilinear resize of a float map back to the image's native size (no-op when sizes agree)."""
    if values.shape == (h, w):
        return values
    return cv2.resize(values, (w, h), interpolation=cv2.INTER_LINEAR)


def _write_outputs(out_dir: Path, overlay_dir: Path, stem: str, image_path: Path, native: tuple[int, int],
                   prob: np.ndarray, std: np.ndarray, threshold: float, uncertainty: bool, overlay: bool,
                   overlay_gt: Path | None, probabilities: bool = False) -> None:
    """Everything ``predict_folder`` writes for one image (runs on the writer thread). ``prob``/``std``: ``[H,W]``
    (binary) or ``[M,H,W]`` (M foreground classes: the PNG holds class values 0..M, the uncertainty the largest
    class std)."""
    h, w = native
    if probabilities:  # one 16-bit PNG per foreground class: probability x 65535
        for k, p in enumerate(prob if prob.ndim == 3 else prob[None], start=1):
            scaled = np.rint(np.clip(_to_native(p, h, w), 0, 1) * 65535).astype(np.uint16)
            write_bytes_atomic(out_dir / "probabilities" / f"{stem}_{k}.png", _png(scaled))
    if prob.ndim == 3:
        labels = labels_from_probs(np.stack([_to_native(p, h, w) for p in prob]), threshold)
        write_bytes_atomic(out_dir / f"{stem}.png", _png(labels.astype(np.uint8 if prob.shape[0] < 255 else
                                                                           np.uint16)))
        mask, std = labels > 0, std.max(axis=0)
    else:
        mask = _to_native(prob, h, w) > threshold
        write_mask_png(out_dir / f"{stem}.png", mask)
    if uncertainty:
        u = _to_native(std, h, w)
        write_bytes_atomic(out_dir / "uncertainty" / f"{stem}.png",
                           _png(np.clip(u * 2 * 255, 0, 255).astype(np.uint8)))
    if overlay:
        canvas = np.clip(np.rint(read_image(image_path) * 255), 0, 255).astype(np.uint8)
        if canvas.ndim == 3:
            canvas = cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR)
        if overlay_gt is not None and (overlay_gt / f"{stem}.png").is_file():
            canvas = overlay_contour(canvas, read_mask(overlay_gt / f"{stem}.png"), color=(0, 0, 255))
        canvas = overlay_contour(canvas, mask, color=(0, 255, 0))
        write_bytes_atomic(overlay_dir / f"{stem}.png", _png(canvas))


def _png(array: np.ndarray) -> bytes:
    ok, encoded = cv2.imencode(".png", array)
    if not ok:
        raise ValueError(f"cannot encode an array of shape {array.shape} as PNG")
    return encoded.tobytes()


def check_not_volume_only(config, what: str) -> None:
    """ValueError for a 2.5-D model (``context_slices`` > 0: it reads neighbouring slices) or a 3-D model
    (``model_type`` in ``MODEL_TYPES_3D``) given a 2-D input."""
    if getattr(config, "model_type", None) in MODEL_TYPES_3D:
        raise ValueError(f"{what}, and the model is 3-D (model_type {config.model_type}): it segments volumes only "
                         "(NIfTI, NRRD/MetaImage or DICOM series)")
    k = int(getattr(config, "context_slices", 0) or 0)
    if k:
        raise ValueError(f"{what}, and the model reads {k} neighbouring slice(s) on each side (context_slices {k}): "
                         "it segments volumes only (NIfTI, NRRD/MetaImage or DICOM series)")


def predict_folder(
    segmenter,
    images_dir: str | Path,
    out_dir: str | Path,
    steps: int | None = None,
    ensemble: int | None = None,
    seed: int = 0,
    batch_size: int = 8,
    overlay: bool = False,
    uncertainty: bool = False,
    overlay_gt: str | Path | None = None,
    overlay_dir: str | Path | None = None,
    progress: bool = False,
    shard: tuple[int, int] = (0, 1),
    tta: bool = False,
    probabilities: bool = False,
) -> list[str]:
    """Write ``OUT/<stem>.png`` (0/255) for every image of ``images_dir``; returns the stems.

    ``segmenter`` is a :class:`Segmenter` or a :class:`~spadfast.SPADTrainer`. Images are sampled ``batch_size`` at a
    time across the folder; while a batch samples, a reader thread decodes the next batch and a writer thread
    writes the previous results, so file I/O overlaps compute (``progress`` shows images/s). Each image's initial
    noise is keyed by its file stem (:func:`spadfast.diffusion.sampler.image_noise_key`), so its mask does not depend on
    ``batch_size`` or on the other files of the folder. Images are resized to ``config.image_size`` for the model
    exactly as training folders are (:func:`spadfast.io.files.read_model_input`); probabilities are resized back to
    each image's native size (bilinear) before thresholding. ``overlay`` writes ``overlays/<stem>.png``
    (prediction in green, and ground truth from ``overlay_gt/<stem>.png`` in red when given); ``uncertainty``
    writes the ensemble std scaled to 0-255 to ``uncertainty/<stem>.png``. A multi-class model writes label PNGs
    holding class values 0..num_classes-1 (:func:`spadfast.evaluation.metrics.labels_from_probs`; uncertainty: the largest
    class std). ``probabilities`` writes ``probabilities/<stem>_<k>.png`` for each foreground class k = 1..M:
    16-bit, the class probability x 65535 at the image's native size.
    ``tta``: test-time augmentation spread over the ensemble members (:mod:`spadfast.infer.tta`).
    ``shard = (rank, world)``: only this process's share of the files (:func:`spadfast.runtime.distributed.shard_of`; torchrun ranks split a
    folder, each mask byte-identical to a one-process run since the noise is keyed by file name).
    """
    from concurrent.futures import ThreadPoolExecutor

    images_dir, out_dir = Path(images_dir), Path(out_dir)
    check_one_input_kind(images_dir)
    files = index_folder(images_dir)
    if not files:
        raise ValueError(f"`images` folder {str(images_dir)!r} holds no images (PNG/JPEG/TIFF/BMP)")
    batch_size = check_int(batch_size, "batch_size", 1)
    check_members(segmenter, ensemble, tta)
    cfg = segmenter.config
    check_not_volume_only(cfg, f"`images` folder {str(images_dir)!r} holds 2-D images")
    stems = shard_of(sorted(files), shard)
    if not stems:
        return []
    batches = [stems[i : i + batch_size] for i in range(0, len(stems), batch_size)]
    overlay_dir = Path(overlay_dir) if overlay_dir is not None else out_dir / "overlays"
    gt = Path(overlay_gt) if overlay_gt is not None else None

    native = not getattr(cfg, "resize", True)  # sliding windows over each image at its own size
    segment = with_tta(segmenter) if tta else segmenter.segment

    def load(chunk: list[str]) -> list[tuple[np.ndarray, tuple[int, int], float]]:
        size = None if native else cfg.image_size
        items = [read_model_input(files[s], size, cfg.image_channels, cfg.intensity_norm) for s in chunk]
        if native:
            for s, item in zip(chunk, items):
                check_min_side(item[1], str(files[s]))
        return items

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(stems), desc="spadfast predict", unit="img", dynamic_ncols=True)
    used: list[float] = []
    with ThreadPoolExecutor(1) as reader, ThreadPoolExecutor(1) as writer:
        pending_reads = reader.submit(load, batches[0])
        writes = []
        for n, chunk in enumerate(batches):
            loaded = pending_reads.result()
            if n + 1 < len(batches):
                pending_reads = reader.submit(load, batches[n + 1])
            used += [item[2] for item in loaded]
            if native:
                tiled = [segment_image(segmenter, torch.from_numpy(item[0]).float(), s, steps, ensemble, seed,
                                       chunk=batch_size, segment=segment) for s, item in zip(chunk, loaded)]
                probs = [p[0].numpy() if cfg.mask_channels == 1 else p.numpy() for p, _ in tiled]
                std = [u[0].numpy() if cfg.mask_channels == 1 else u.numpy() for _, u in tiled]
            else:
                batch = torch.from_numpy(np.stack([item[0] for item in loaded])).float()
                keys = [image_noise_key(s) for s in chunk]
                result = segment(batch, steps=steps, ensemble=ensemble, seed=seed, noise_keys=keys)
                probs, std = result.probs.float().cpu().numpy(), result.std.float().cpu().numpy()
                if cfg.mask_channels == 1:
                    probs, std = probs[:, 0], std[:, 0]
            for i, stem in enumerate(chunk):
                writes.append(writer.submit(_write_outputs, out_dir, overlay_dir, stem, files[stem], loaded[i][1],
                                            probs[i], std[i], cfg.threshold, uncertainty, overlay, gt,
                                            probabilities))
            if bar is not None:
                bar.update(len(chunk))
        for w in writes:
            w.result()  # re-raise the first write error
    if bar is not None:
        bar.close()
    if cfg.intensity_norm == "dtype":
        warn_low_range(used, str(images_dir))
    return stems
