"""Checkpoint files: one safetensors file holding every tensor plus a JSON header, written atomically.

Tensor keys are fixed and versioned (``FORMAT_VERSION``): ``model.<param>``, ``ema.<param>``,
``optim.<index>.<state>``, ``scaler.<name>``, ``rng.<name>``; a run with a supervised prior (config ``prior``) adds
``prior.model.``, ``prior.ema.`` and ``prior.optim.`` keys (the prior network, its EMA and its optimizer state, whose
hyperparameters are the metadata's ``prior_optimizer_param_groups``). The safetensors ``__metadata__`` holds
``{"format": "spadfast", "version": 1, "meta": <JSON>, "sha256": <JSON>}`` with the config, the step, optimizer
hyperparameters and anything else that is not a tensor, and a SHA-256 of every tensor's bytes, verified on load
(a flipped bit is an error naming the tensor; model and EMA weights must also be finite). A crash mid-write
leaves the previous checkpoint intact (:func:`spadfast.io.files.write_atomic`: temp file, fsync, rename).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..io.files import write_atomic
from ..io.paths import CHECKPOINT_NAME
from ..runtime import distributed as dist_utils
from ..runtime.runlock import hold_run_lock

FORMAT = "spadfast"
FORMAT_VERSION = 1


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
    header = {"format": FORMAT, "version": str(FORMAT_VERSION), "meta": json.dumps(meta),
              "sha256": json.dumps({k: tensor_digest(v) for k, v in flat.items()})}
    return write_atomic(target, lambda tmp: _save_file(flat, tmp, header))


def _save_file(flat: dict[str, torch.Tensor], tmp: Path, header: dict[str, str]) -> None:
    """``safetensors.torch.save_file``, with its I/O failures (a full disk) raised as the ``OSError`` they are."""
    try:
        save_file(flat, str(tmp), metadata=header)
    except SafetensorError as e:
        code = re.search(r"os error (\d+)", str(e))  # safetensors reports Rust's io::Error as text only
        if code is None:
            raise ValueError(f"cannot serialize the checkpoint to {str(tmp)!r}: {e}") from None
        raise OSError(int(code.group(1)), os.strerror(int(code.group(1))), str(tmp)) from None


def save_from_main(path: str | os.PathLike, tensors: dict[str, torch.Tensor], make_meta: Callable[[], dict]) -> Path:
    """Rank 0 writes ``tensors`` and ``make_meta()`` (:func:`write_checkpoint`) with the checkpoint's folder locked
    (:mod:`spadfast.runtime.runlock`); every rank returns the file, or raises when rank 0's write failed, so no rank waits
    for a write that will not come. A failed write leaves the previous checkpoint as it was and may be retried."""
    written, error = resolve_path(path), None
    if dist_utils.is_main():
        try:
            with hold_run_lock(written.parent, "checkpoint folder"):
                written = write_checkpoint(path, tensors, make_meta())
        except (OSError, ValueError) as e:
            error = e
    if dist_utils.world_size() > 1:
        shared = [None if error is None else f"{type(error).__name__}: {error}"]
        torch.distributed.broadcast_object_list(shared, src=0)  # also each rank's wait for rank 0's write
        if error is None and shared[0] is not None:
            raise OSError(f"rank 0 could not write {str(written)!r}: {shared[0]}")
    if error is not None:
        raise error
    return written


# config keys that give the same weights another meaning: a checkpoint resumes only into a run that shares them
RUN_DEFINING_KEYS = ("prediction_type", "perturb_mode", "self_condition", "objective", "num_classes", "beta_schedule",
                     "num_train_timesteps", "beta_start", "beta_end", "prior", "prior_steps")


def check_same_run(meta: dict[str, Any], config: dict[str, Any], source: str) -> None:
    """A ``ValueError`` naming the key and both values when the checkpoint's config differs from ``config`` in a
    :data:`RUN_DEFINING_KEYS` key (e.g. an x0-prediction checkpoint loaded into an epsilon-prediction trainer)."""
    saved = meta.get("config") or {}
    for key in RUN_DEFINING_KEYS:
        if key in saved and key in config and saved[key] != config[key]:
            raise ValueError(f"checkpoint {source!r} was trained with `{key}` {saved[key]!r}, but this trainer has "
                             f"`{key}` {config[key]!r}: build the trainer from the checkpoint's config")


def tensor_digest(t: torch.Tensor) -> str:
    """SHA-256 (hex) of a CPU tensor's bytes, dtype and shape."""
    h = hashlib.sha256(f"{t.dtype}{tuple(t.shape)}".encode())
    if t.numel():
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def read_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read and verify a checkpoint; a missing, corrupt, tampered or foreign file is a ``ValueError`` naming it.

    Every tensor's SHA-256 must match the header's (checkpoints written before checksums existed are read
    unverified), and model/EMA weights must be finite.
    """
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
    if "sha256" in header:
        try:
            digests = json.loads(header["sha256"])
        except json.JSONDecodeError as e:
            raise ValueError(f"checkpoint {str(target)!r} has a corrupt checksum header: {e}") from None
        if set(digests) != set(tensors):
            raise ValueError(f"checkpoint {str(target)!r}: its tensors do not match its checksum list (tampered?)")
        for k, v in tensors.items():
            if tensor_digest(v) != digests[k]:
                raise ValueError(f"checkpoint {str(target)!r}: tensor {k!r} fails its SHA-256 check (corrupt file)")
    for k, v in tensors.items():
        weight = k.startswith(("model.", "ema.", "prior.model.", "prior.ema."))
        if weight and v.is_floating_point() and not bool(torch.isfinite(v).all()):
            raise ValueError(f"checkpoint {str(target)!r}: weight {k!r} holds NaN or inf; the run diverged or the "
                             "file was damaged")
    return tensors, meta


# ----------------------------------------------------------------------------------------- training state


def pack_training_state(
    model: torch.nn.Module,
    ema: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    rng_per_rank: list[dict[str, torch.Tensor]],
    prior: tuple[torch.nn.Module, torch.nn.Module, torch.optim.Optimizer] | None = None,
) -> dict[str, torch.Tensor]:
    """Every tensor of a training run under the checkpoint's fixed keys (see the module docstring); ``prior``:
    the supervised prior's ``(model, ema, optimizer)``, under ``prior.*``."""
    tensors: dict[str, torch.Tensor] = {}
    nets = [("", model, ema, optimizer)] + ([("prior.", *prior)] if prior is not None else [])
    for prefix, net, net_ema, opt in nets:
        for k, v in net.state_dict().items():
            tensors[f"{prefix}model.{k}"] = v
        for k, v in net_ema.state_dict().items():
            tensors[f"{prefix}ema.{k}"] = v
        for idx, state in opt.state_dict()["state"].items():
            for k, v in state.items():
                tensors[f"{prefix}optim.{idx}.{k}"] = v if isinstance(v, torch.Tensor) else torch.tensor(v)
    for k, v in scaler.state_dict().items():
        if isinstance(v, (int, float)):
            tensors[f"scaler.{k}"] = torch.tensor(float(v), dtype=torch.float64)
    for r, states in enumerate(rng_per_rank):
        for k, v in states.items():
            tensors[f"rng.rank{r}.{k}"] = v
    return tensors


def optimizer_param_groups(optimizer: torch.optim.Optimizer) -> list[dict[str, Any]]:
    """The optimizer's hyperparameters (JSON), without the parameter lists."""
    return [{k: v for k, v in g.items() if k != "params"} for g in optimizer.state_dict()["param_groups"]]


def unpack_training_state(
    tensors: dict[str, torch.Tensor],
    meta: dict[str, Any],
    model: torch.nn.Module,
    ema: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None,
    scaler: torch.amp.GradScaler | None,
    source: str,
    prior: tuple[torch.nn.Module, torch.nn.Module, torch.optim.Optimizer | None] | None = None,
) -> None:
    """Load :func:`pack_training_state`'s tensors into the modules (optimizer and scaler optional, for inference);
    ``prior``: the prior's ``(model, ema, optimizer)`` for the ``prior.*`` keys (a checkpoint without them, or with
    them when ``prior`` is None, is a ValueError naming ``source``)."""
    has_prior = any(k.startswith("prior.") for k in tensors)
    if has_prior != (prior is not None):
        raise ValueError(f"checkpoint {source!r} {'holds' if has_prior else 'lacks'} a supervised prior (prior.* "
                         f"tensors) but the model {'has none' if has_prior else 'needs one'}")
    _load_net(tensors, "", model, ema, optimizer, meta.get("optimizer_param_groups"), source)
    if prior is not None:
        _load_net(tensors, "prior.", *prior, meta.get("prior_optimizer_param_groups"), source)
    if scaler is not None and scaler.is_enabled():
        scaler_state = {k[len("scaler."):]: (int(v.item()) if k.endswith("tracker") else v.item())
                        for k, v in tensors.items() if k.startswith("scaler.")}
        if scaler_state:
            scaler.load_state_dict(scaler_state)


def _load_net(tensors: dict[str, torch.Tensor], prefix: str, model: torch.nn.Module, ema: torch.nn.Module,
              optimizer: torch.optim.Optimizer | None, param_groups: list[dict[str, Any]] | None, source: str) -> None:
    """One network's ``<prefix>model.``, ``<prefix>ema.`` and ``<prefix>optim.`` tensors into its modules."""

    def sub(p: str) -> dict[str, torch.Tensor]:
        return {k[len(p):]: v for k, v in tensors.items() if k.startswith(p)}

    try:
        model.load_state_dict(sub(f"{prefix}model."))
        ema.load_state_dict(sub(f"{prefix}ema."))
    except RuntimeError as e:
        raise ValueError(f"checkpoint {source!r} does not match the {prefix or 'model'}: {e}") from None
    if optimizer is None:
        return
    if param_groups is None:
        raise ValueError(f"checkpoint {source!r} lacks the {prefix}optimizer's hyperparameters in its metadata")
    state: dict[int, dict[str, torch.Tensor]] = {}
    for k, v in sub(f"{prefix}optim.").items():
        idx, name = k.split(".", 1)
        state.setdefault(int(idx), {})[name] = v
    params = list(model.parameters())
    for idx, st in state.items():
        for name, v in st.items():
            if v.dim() > 0 and (idx >= len(params) or v.shape != params[idx].shape):
                raise ValueError(f"checkpoint {source!r}: optimizer state {prefix}{idx}.{name} does not match the "
                                 "model")
    groups = [dict(g) for g in param_groups]
    for g, p in zip(groups, optimizer.state_dict()["param_groups"]):
        g["params"] = p["params"]
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def capture_rng(generator: torch.Generator, device: torch.device) -> dict[str, torch.Tensor]:
    """This process's random states: the trainer's generator, torch's CPU RNG (dropout on CPU), the CUDA RNG."""
    states = {"generator": generator.get_state(), "torch_cpu": torch.get_rng_state()}
    if device.type == "cuda":
        states["torch_cuda"] = torch.cuda.get_rng_state(device)
    return states


def restore_rng(
    tensors: dict[str, torch.Tensor], rank: int, generator: torch.Generator, device: torch.device
) -> bool:
    """Restore rank ``rank``'s saved random states; False (nothing changed) when the checkpoint lacks them."""
    prefix = f"rng.rank{rank}."
    if f"{prefix}generator" not in tensors:
        return False
    generator.set_state(tensors[f"{prefix}generator"])
    torch.set_rng_state(tensors[f"{prefix}torch_cpu"])
    if f"{prefix}torch_cuda" in tensors and device.type == "cuda":
        torch.cuda.set_rng_state(tensors[f"{prefix}torch_cuda"], device)
    return True
