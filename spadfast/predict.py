"""Segment a folder of images with a trained trainer: 0/255 PNG masks, optional overlays and uncertainty maps."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from .data import _index_folder, _resize_image, overlay_contour, read_image, read_mask, write_mask_png


def load_for_model(path: Path, channels: int, size: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Image file -> float32 ``[C,size,size]`` in [-1, 1] and its native ``(H, W)``."""
    image = read_image(path)  # [H,W] or [H,W,3] RGB in [0, 1]
    native = image.shape[:2]
    if image.ndim == 3 and channels == 1:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    elif image.ndim == 2 and channels == 3:
        image = np.repeat(image[:, :, None], 3, axis=2)
    image = _resize_image(image, (size, size))
    if image.ndim == 2:
        image = image[:, :, None]
    return np.ascontiguousarray(image.transpose(2, 0, 1)) * 2.0 - 1.0, native


def _to_native(values: np.ndarray, h: int, w: int) -> np.ndarray:
    """Bilinear resize of a float map back to the image's native size (no-op when sizes agree)."""
    if values.shape == (h, w):
        return values
    return cv2.resize(values, (w, h), interpolation=cv2.INTER_LINEAR)


def predict_folder(
    trainer,
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
) -> list[str]:
    """Write ``OUT/<stem>.png`` (0/255) for every image of ``images_dir``; returns the stems.

    Images are resized to ``config.image_size`` for the model; probabilities are resized back to each image's
    native size (bilinear) before thresholding. ``overlay`` writes ``overlays/<stem>.png`` (prediction in green,
    and ground truth from ``overlay_gt/<stem>.png`` in red when given); ``uncertainty`` writes the ensemble std
    scaled to 0-255 to ``uncertainty/<stem>.png``.
    """
    images_dir, out_dir = Path(images_dir), Path(out_dir)
    files = _index_folder(images_dir)
    if not files:
        raise ValueError(f"`images` folder {str(images_dir)!r} holds no images (PNG/JPEG/TIFF/BMP)")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"`batch_size` must be an int >= 1, got {batch_size!r}")
    cfg = trainer.config
    loaded = {stem: load_for_model(p, cfg.image_channels, cfg.image_size) for stem, p in files.items()}
    stems = sorted(loaded)
    overlay_dir = Path(overlay_dir) if overlay_dir is not None else out_dir / "overlays"
    for start in range(0, len(stems), batch_size):
        chunk = stems[start : start + batch_size]
        batch = torch.from_numpy(np.stack([loaded[s][0] for s in chunk])).float()
        result = trainer.segment(batch, steps=steps, ensemble=ensemble, seed=seed + start)
        probs, std = result.probs[:, 0].float().cpu().numpy(), result.std[:, 0].float().cpu().numpy()
        for i, stem in enumerate(chunk):
            h, w = loaded[stem][1]
            prob = _to_native(probs[i], h, w)
            mask = prob > cfg.threshold
            write_mask_png(out_dir / f"{stem}.png", mask)
            if uncertainty:
                u = _to_native(std[i], h, w)
                (out_dir / "uncertainty").mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(out_dir / "uncertainty" / f"{stem}.png"),
                            np.clip(u * 2 * 255, 0, 255).astype(np.uint8))
            if overlay:
                canvas = read_image(files[stem])
                canvas = np.clip(np.rint(canvas * 255), 0, 255).astype(np.uint8)
                if canvas.ndim == 3:
                    canvas = cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR)
                if overlay_gt is not None and (Path(overlay_gt) / f"{stem}.png").is_file():
                    canvas = overlay_contour(canvas, read_mask(Path(overlay_gt) / f"{stem}.png"), color=(0, 0, 255))
                canvas = overlay_contour(canvas, mask, color=(0, 255, 0))
                overlay_dir.mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(overlay_dir / f"{stem}.png"), canvas)
    return stems
