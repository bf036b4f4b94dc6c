"""``SPADConfig``: every knob of a spadfast run in one dataclass, loadable from YAML or JSON."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .perturb import PerturbConfig
from .schedule import BETA_SCHEDULES, TIMESTEP_SPACINGS

PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")
PERTURB_MODES = ("target", "condition")
AMP_DTYPES = ("none", "bf16", "fp16")


@dataclass
class SPADConfig:
    """Hyperparameters of model, diffusion, SPAD perturbation, training and sampling.

    ``batch_size`` is per process (DDP multiplies it by the world size). ``device="auto"`` picks CUDA when available.
    Load with :meth:`from_file` (YAML or JSON) or :meth:`from_dict`; unknown keys are a ``ValueError`` naming the key.
    """

    # model
    image_size: int = 64
    image_channels: int = 1
    base_channels: int = 32
    channel_mults: tuple[int, ...] = (1, 2, 4)
    num_res_blocks: int = 1
    attention_levels: tuple[int, ...] = (2,)
    dropout: float = 0.0
    # diffusion
    num_train_timesteps: int = 1000
    beta_schedule: str = "linear"
    beta_start: float = 1e-4
    beta_end: float = 0.02
    prediction_type: str = "epsilon"
    perturb_mode: str = "target"
    condition_dropout: float = 0.5  # "condition" mode: probability that the condition channel is zeroed in training
    perturb: PerturbConfig = field(default_factory=PerturbConfig)
    # training
    train_steps: int = 2000
    batch_size: int = 16
    lr: float = 2e-4
    weight_decay: float = 0.0
    warmup_steps: int = 100
    grad_clip: float = 1.0
    grad_accum: int = 1
    ema_decay: float = 0.999
    amp: str = "none"
    seed: int = 0
    device: str = "auto"
    compile: bool = False
    compile_mode: str = "default"
    ops_backend: str = "auto"  # SPAD perturbation and DDIM update: auto (Triton on CUDA) | reference | triton
    channels_last: bool = True
    augment: bool = True
    num_workers: int = 0
    synthetic_train: int = 1024
    synthetic_val: int = 32
    log_every: int = 50
    log_file: str = "log.jsonl"
    val_every: int = 0
    val_samples: int = 16
    checkpoint_every: int = 0
    progress_bar: bool = True
    # sampling
    sample_steps: int = 25
    ensemble: int = 5
    eta: float = 0.0
    timestep_spacing: str = "trailing"
    clip_sample: float | None = 1.0
    threshold: float = 0.5
    sample_chunk: int = 64
    cuda_graph: bool = True

    def __post_init__(self) -> None:
        _check_types(self)
        self.channel_mults = tuple(int(c) for c in self.channel_mults)
        self.attention_levels = tuple(int(c) for c in self.attention_levels)
        if isinstance(self.perturb, dict):
            self.perturb = _build(PerturbConfig, self.perturb, "perturb.")
        if not isinstance(self.perturb, PerturbConfig):
            raise TypeError(f"`perturb` must be a mapping of PerturbConfig keys, got {self.perturb!r}")
        checks = [
            (self.image_size >= 8, "image_size", ">= 8"),
            (self.image_channels >= 1, "image_channels", ">= 1"),
            (self.base_channels >= 1, "base_channels", ">= 1"),
            (len(self.channel_mults) >= 1, "channel_mults", "non-empty"),
            (self.num_train_timesteps >= 1, "num_train_timesteps", ">= 1"),
            (0 < self.beta_start < 1, "beta_start", "in (0, 1)"),
            (self.beta_start <= self.beta_end < 1, "beta_end", "in [beta_start, 1)"),
            (self.weight_decay >= 0, "weight_decay", ">= 0"),
            (self.grad_clip >= 0, "grad_clip", ">= 0 (0 disables clipping)"),
            (self.num_workers >= 0, "num_workers", ">= 0"),
            (_valid_device(self.device), "device", "'auto', 'cpu', 'cuda' or 'cuda:N'"),
            (self.beta_schedule in BETA_SCHEDULES, "beta_schedule", f"one of {BETA_SCHEDULES}"),
            (self.prediction_type in PREDICTION_TYPES, "prediction_type", f"one of {PREDICTION_TYPES}"),
            (self.perturb_mode in PERTURB_MODES, "perturb_mode", f"one of {PERTURB_MODES}"),
            (0 <= self.condition_dropout <= 1, "condition_dropout", "in [0, 1]"),
            (self.train_steps >= 1, "train_steps", ">= 1"),
            (self.batch_size >= 1, "batch_size", ">= 1"),
            (self.lr > 0, "lr", "> 0"),
            (self.warmup_steps >= 0, "warmup_steps", ">= 0"),
            (self.grad_accum >= 1, "grad_accum", ">= 1"),
            (0 <= self.ema_decay < 1, "ema_decay", "in [0, 1)"),
            (self.amp in AMP_DTYPES, "amp", f"one of {AMP_DTYPES}"),
            (self.ops_backend in ("auto", "reference", "triton"), "ops_backend", "one of auto, reference, triton"),
            (self.seed >= 0, "seed", ">= 0"),
            (self.sample_steps >= 1, "sample_steps", ">= 1"),
            (self.sample_steps <= self.num_train_timesteps, "sample_steps", "<= num_train_timesteps"),
            (self.ensemble >= 1, "ensemble", ">= 1"),
            (self.eta >= 0, "eta", ">= 0"),
            (self.timestep_spacing in TIMESTEP_SPACINGS, "timestep_spacing", f"one of {TIMESTEP_SPACINGS}"),
            (self.clip_sample is None or self.clip_sample > 0, "clip_sample", "None or > 0"),
            (0 < self.threshold < 1, "threshold", "in (0, 1)"),
            (self.sample_chunk >= 1, "sample_chunk", ">= 1"),
            (self.log_every >= 1, "log_every", ">= 1"),
        ]
        for ok, name, what in checks:
            if not ok:
                raise ValueError(f"`{name}` must be {what}, got {getattr(self, name)!r}")
        if self.image_size % (2 ** (len(self.channel_mults) - 1)) != 0:
            raise ValueError(
                f"`image_size` must be divisible by 2**(len(channel_mults)-1) = {2 ** (len(self.channel_mults) - 1)}, "
                f"got {self.image_size}"
            )

    @property
    def model_in_channels(self) -> int:
        """Noisy mask + image channels (+ the condition channel in "condition" mode)."""
        return 1 + self.image_channels + (1 if self.perturb_mode == "condition" else 0)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SPADConfig:
        if not isinstance(data, dict):
            raise TypeError(f"`config` must be a mapping, got {type(data).__name__}")
        return _build(cls, data, "")

    @classmethod
    def from_file(cls, path: str | Path) -> SPADConfig:
        """Load a YAML (``.yaml``/``.yml``) or JSON file; errors name the file."""
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as e:
            raise ValueError(f"config file {str(path)!r} cannot be read: {e}") from None
        try:
            if path.suffix.lower() in (".yaml", ".yml"):
                import yaml

                data = yaml.safe_load(text) or {}
            else:
                data = json.loads(text)
        except Exception as e:
            raise ValueError(f"config file {str(path)!r} is not valid {path.suffix[1:] or 'JSON'}: {e}") from None
        try:
            return cls.from_dict(data)
        except (ValueError, TypeError) as e:
            raise type(e)(f"config file {str(path)!r}: {e}") from None


_NULLABLE = {"clip_sample"}  # fields documented as "None disables"


def _valid_device(name: str) -> bool:
    if name == "auto":
        return True
    try:
        import torch

        return torch.device(name).type in ("cpu", "cuda")
    except (RuntimeError, ValueError):
        return False


def _check_types(obj) -> None:
    """Scalar fields keep the type of their default (ints accepted for floats); errors name the field."""
    for f in dataclasses.fields(obj):
        if f.default is dataclasses.MISSING:
            continue
        value, default = getattr(obj, f.name), f.default
        if value is None and f.name in _NULLABLE:
            continue
        if default is None:
            ok = value is None or (isinstance(value, (int, float)) and not isinstance(value, bool)
                                   and math.isfinite(value))
            kind = "a finite number or null"
        elif isinstance(default, bool):
            ok, kind = isinstance(value, bool), "a bool"
        elif isinstance(default, int):
            ok, kind = isinstance(value, int) and not isinstance(value, bool), "an int"
        elif isinstance(default, float):
            if isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string
                try:
                    value = float(value)
                except ValueError:
                    pass
            ok, kind = isinstance(value, (int, float)) and not isinstance(value, bool), "a finite number"
            ok = ok and math.isfinite(value)
            if ok:
                setattr(obj, f.name, float(value))
        elif isinstance(default, str):
            ok, kind = isinstance(value, str), "a string"
        elif isinstance(default, tuple):
            ok = isinstance(value, (list, tuple)) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
            kind = "a list of ints"
        else:
            continue
        if not ok:
            raise TypeError(f"`{f.name}` must be {kind}, got {value!r}")


def _build(cls, data: dict[str, Any], prefix: str):
    if not isinstance(data, dict):
        raise TypeError(f"`{prefix.rstrip('.') or 'config'}` must be a mapping, got {type(data).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"unknown config key `{prefix}{unknown[0]}` (known keys: {', '.join(sorted(names))})")
    kwargs = dict(data)
    if cls is SPADConfig and isinstance(kwargs.get("perturb"), dict):
        kwargs["perturb"] = _build(PerturbConfig, kwargs["perturb"], "perturb.")
    return cls(**kwargs)
