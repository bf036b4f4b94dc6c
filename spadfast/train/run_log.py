"""The log of a training run: one JSON record per line in ``RUN/<log_file>``, and optionally TensorBoard.

Rank 0 with a run folder writes; every other process (or a trainer without ``out_dir``) gets a log that writes
nothing, so the training loop calls it unconditionally. TensorBoard is optional: asking for it without the
package installed is a ValueError naming ``log_tensorboard`` at the first write.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["RunLog"]


class RunLog:
    """JSONL records and TensorBoard scalars / images of one run.

    Args:
        out_dir: the run folder (created at the first write); None writes nothing.
        log_file: the JSONL file's name inside ``out_dir``.
        tensorboard: also write to ``out_dir/tensorboard``.
        enabled: whether this process writes (rank 0).
        pas_strength: step -> perturbation strength, written to TensorBoard with every record as
            ``train/pas_strength``.
    """

    def __init__(self, out_dir: Path | None, log_file: str, tensorboard: bool, enabled: bool,
                 pas_strength: Callable[[int], float]) -> None:
        self.out_dir = out_dir if enabled else None
        self.log_file = log_file
        self.use_tensorboard = tensorboard
        self.pas_strength = pas_strength
        self._writer = None

    def write(self, record: dict[str, Any]) -> None:
        """Append ``record`` (a ``"step"`` and numbers) as one JSON line; its numbers also go to TensorBoard
        (``train/<key>``, ``val_dice`` as ``val/dice``) with the step's ``train/pas_strength``."""
        if self.out_dir is None:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        with open(self.out_dir / self.log_file, "a") as f:
            f.write(json.dumps(record) + "\n")
        writer = self.tensorboard()
        if writer is not None:
            step = record["step"]
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)):
                    writer.add_scalar(f"train/{key}" if key != "val_dice" else "val/dice", value, step)
            writer.add_scalar("train/pas_strength", self.pas_strength(step), step)
            writer.flush()

    def image(self, tag: str, image_bgr: np.ndarray, step: int) -> None:
        """A uint8 ``[H, W, 3]`` BGR image to TensorBoard under ``tag`` (nothing without TensorBoard)."""
        writer = self.tensorboard()
        if writer is not None:
            writer.add_image(tag, image_bgr[:, :, ::-1].copy(), step, dataformats="HWC")

    def tensorboard(self):
        """The TensorBoard writer under ``out_dir/tensorboard``, made at the first call; None when off."""
        if not self.use_tensorboard or self.out_dir is None:
            return None
        if self._writer is None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as e:
                raise ValueError("`log_tensorboard` needs the tensorboard package: pip install tensorboard") from e
            self._writer = SummaryWriter(str(self.out_dir / "tensorboard"))
        return self._writer
