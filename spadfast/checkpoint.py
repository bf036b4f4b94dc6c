"""Checkpoint files: one safetensors file holding every tensor plus a JSON header, written atomically.

Tensor keys are fixed and versioned (``FORMAT_VERSION``): ``model.<param>``, ``ema.<param>``,
``optim.<index>.<state>``, ``scaler.<name>``, ``rng.<name>``. The safetensors ``__metadata__`` holds
``{"format": "spadfast", "version": 1, "meta": <JSON>}`` with the config, the step, optimizer hyperparameters and
anything else that is not a tensor. A crash mid-write leaves the previous checkpoint intact (temp file + rename).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

FORMAT = "spadfast"
FORMAT_VERSION = 1
CHECKPOINT_NAME = "checkpoint.safetensors"


def resolve_path(path: str | os.PathLike) -> Path:
    """A ``.safetensors`` path is used as is; anything else is a run directory holding ``checkpoint.safetensors``."""
    path = Path(path)
    return path if path.suffix == ".safetensors" else path / CHECKPOINT_NAME


def write_checkpoint(path: str | os.PathLike, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> Path:
    """Write ``tensors`` and ``meta`` to ``path`` atomically; returns the file written."""
    target = resolve_path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    flat, seen = {}, set()
    for k, v in tensors.items():
        v = v.detach().to("cpu").contiguous()
        if v.numel() and v.untyped_storage().data_ptr() in seen:
            v = v.clone()  # tied weights: safetensors refuses shared storage; loading re-ties them by copy
        if v.numel():
            seen.add(v.untyped_storage().data_ptr())
        flat[k] = v
    header = {"format": FORMAT, "version": str(FORMAT_VERSION), "meta": json.dumps(meta)}
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".safetensors", dir=target.parent)
    os.close(fd)
    try:
        save_file(flat, tmp, metadata=header)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; a checkpoint is shared like any other output file
        os.replace(tmp, target)
        _fsync_dir(target.parent)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def _fsync_dir(folder: Path) -> None:
    """Make the rename durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write a small text file (JSON reports) via a temp file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a checkpoint; a missing, corrupt or foreign file is a ``ValueError`` naming it."""
    target = resolve_path(path)
    if not target.is_file():
        raise ValueError(f"checkpoint {str(target)!r} does not exist")
    try:
        tensors = load_file(str(target))
        from safetensors import safe_open

        with safe_open(str(target), framework="pt") as f:
            header = f.metadata() or {}
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise ValueError(f"checkpoint {str(target)!r} is corrupt or not a safetensors file: {e}") from None
    if header.get("format") != FORMAT:
        raise ValueError(f"checkpoint {str(target)!r} is not a spadfast checkpoint (no spadfast header)")
    if int(header.get("version", -1)) != FORMAT_VERSION:
        raise ValueError(
            f"checkpoint {str(target)!r} has format version {header.get('version')}, this spadfast reads "
            f"{FORMAT_VERSION}"
        )
    try:
        meta = json.loads(header["meta"])
    except (KeyError, json.JSONDecodeError) as e:
        raise ValueError(f"checkpoint {str(target)!r} has a corrupt metadata header: {e}") from None
    return tensors, meta
