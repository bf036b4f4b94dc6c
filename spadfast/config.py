"""``SPADConfig`` and ``PerturbConfig``: every knob of a spadfast run in dataclasses, loadable from YAML or JSON."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .data.augmentation import AugmentConfig
from .diffusion.perturb import PerturbConfig
from .diffusion.sampler import STEP_FUSIONS
from .diffusion.schedule import BETA_SCHEDULES, TIMESTEP_SPACINGS
from .ops.constants import BACKENDS, INTENSITY_NORMS, PREDICTION_TYPES
from .ops.fields import check_fields

CT_NORMALIZATIONS = ("dataset", "volume")
PERTURB_MODES = ("target", "input", "condition")  # spadfast.diffusion.training_inputs
AMP_DTYPES = ("none", "bf16", "fp16")
MODEL_TYPES = ("unet", "cached_unet", "unet3d", "cached_unet3d")
MODEL_TYPES_3D = ("unet3d", "cached_unet3d")  # models of [B, C, D, H, W] volumes
OBJECTIVES = ("diffusion", "supervised")
# x0_loss_weight of a diffusion model when the config leaves it None: the diffusion study's best variant (x0-loss,
# weight chosen by its pilot; docs/diffusion_study.md, docs/diffusion_study/choice.md)
DEFAULT_X0_LOSS_WEIGHT = 0.3
PRIORS = ("none", "supervised")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")  # torch >= 2.1


@dataclass
class SPADConfig:
    """Hyperparameters of model, diffusion, SPAD perturbation, training and sampling.

    ``batch_size`` is per process (DDP multiplies it by the world size). ``device="auto"`` picks CUDA when available.
    Load with :meth:`from_file` (YAML or JSON) or :meth:`from_dict`; unknown keys are a ``ValueError`` naming the key.
    """

    # model
    # cached_unet (default): image encoder once per image + light mask denoiser per step, 13.8x faster sampling than
    # the unet on CPU at equal Dice (benchmarks/RESULTS.md); unet: the plain concatenating UNet;
    # unet3d: a 3-D UNet on 3-D patches of NIfTI volumes (spadfast.models.unet3d; needs patch_size_3d);
    # cached_unet3d: its cached-encoder form (image encoder once per 3-D window, light denoiser per step)
    model_type: str = "cached_unet"
    # 3-D models: (d, h, w) voxels of a training patch and of a prediction window, along the volume's array axes
    patch_size_3d: tuple[int, ...] = ()
    # 3-D models: (d, h, w) voxel spacing in mm the pooling is planned for (an axis is not pooled while it is over twice
    # the finest); () fills it at training start with the training volumes' median spacing
    spacing_3d: tuple[float, ...] = ()
    image_size: int = 64  # side of the training patch and inference window (resize: true: every image resized to it)
    image_channels: int = 1  # channels of the input image (1 gray, 3 RGB; volumes: one per modality)
    num_classes: int = 2  # label classes, background included: K = num_classes - 1 mask channels (binary: 2)
    # label-map folders: this pixel value marks "not annotated": no loss and no validation score there (None:
    # every value must be a class); e.g. 255, Pascal VOC's boundary value
    ignore_label: int | None = None
    # volumes: "RAS" permutes/flips each case to RAS axis order before slicing (outputs go back onto the input's
    # grid), so one anatomy stored in any orientation gives one prediction; None slices the array as stored
    reorient: str | None = None
    # volumes with resize: false: () slices at the native in-plane pixel size; (dy, dx) mm resamples every slice to
    # that in-plane spacing (image bilinear, labels nearest) and predictions back onto the input's grid
    target_spacing: tuple[float, ...] = ()
    slice_axis: int | None = None  # volumes: the array axis slices are taken along (None: the coarsest spacing)
    # volumes, 2.5-D: the k neighbouring slices on each side join the slice as extra image channels (edge slices
    # replicated); the model then sees image_channels x (2k + 1) channels. 0: each slice alone
    context_slices: int = 0
    foreground_fraction: float = 0.5  # volumes: probability a training slice is drawn from slices with foreground
    modalities: tuple[str, ...] = ()  # volumes: modality per image channel ("CT", "MR", ...), recorded from the data
    intensity_window: tuple[float, ...] = ()  # volumes: fixed (lo, hi) window for every channel; () = per modality
    # volumes, CT channels: "dataset" clips and z-scores with the training set's foreground statistics (nnU-Net's
    # CTNormalization, computed at training start into ct_stats); "volume" uses each volume's own percentiles
    # (checkpoints written before this key: "volume")
    ct_normalization: str = "dataset"
    # (p0.5, p99.5, mean, std) of the training set's foreground voxels per image channel (4 values a channel; non-CT
    # channels hold zeros); filled at training start with ct_normalization: dataset, stored in the checkpoint
    ct_stats: tuple[float, ...] = ()
    intensity_norm: str = "dtype"  # image files -> [-1, 1]: dtype | minmax | percentile (per image)
    # native resolution: False keeps image files at their own pixel size (training patches of image_size, sliding
    # windows at inference); True resizes every image to image_size (checkpoints written before this key: True)
    resize: bool = False
    tile_overlap: float = 0.5  # sliding-window overlap in [0, 1) (resize: false)
    foreground_oversample: float = 1 / 3  # share of training patches centred on a foreground pixel (resize: false)
    base_channels: int = 32  # UNet width at the first level
    channel_mults: tuple[int, ...] = (1, 2, 4)  # width multiplier per UNet level (one level per entry)
    num_res_blocks: int = 1  # residual blocks per UNet level
    attention_levels: tuple[int, ...] = (2,)  # UNet levels with self-attention (() none; also the bottleneck)
    dropout: float = 0.0  # dropout probability in the residual blocks
    # diffusion
    num_train_timesteps: int = 1000  # T, the diffusion steps of the noise schedule
    beta_schedule: str = "linear"  # linear | scaled_linear | squaredcos_cap_v2 | cosine
    beta_start: float = 1e-4  # first beta of the linear schedules
    beta_end: float = 0.02  # last beta of the linear schedules
    prediction_type: str = "epsilon"  # what the denoiser outputs: epsilon | sample (x0) | v_prediction
    perturb_mode: str = "target"  # where the SPAD perturbation enters, when on: target | input | condition
    objective: str = "diffusion"  # diffusion | supervised (one forward pass, BCE + Dice; no perturbation, no DDIM)
    condition_dropout: float = 0.5  # "condition" mode: probability that the condition channel is zeroed in training
    perturb_prob: float = 1.0  # share of each batch's rows that get the perturbation ("target" and "input" modes)
    input_gamma: float = 0.0  # DDPM-IP: x_t is built with noise eps + gamma * xi, the target from eps (0: off)
    # self-conditioning (Analog Bits, Chen et al. 2023): an extra input channel holds a first no-grad pass's x0
    # estimate on a self_condition_prob share of rows (zeros on the rest); sampling feeds the previous step's
    # estimate. perturb_mode "condition" is this plus SPAD's perturbation of the estimate, so the two exclude
    self_condition: bool = False
    self_condition_prob: float = 0.5  # self_condition: share of training rows whose channel holds the estimate
    # recycling (ImgX-DiffSeg, Fu et al. 2023): x_t is re-noised from the model's own no-grad x0 estimate at t + 1,
    # never from the ground truth; the loss targets the ground truth (needs prediction_type sample, SPAD off)
    recycle: bool = False
    # Diff-UNet (Xing et al. 2023): + weight * (BCE + soft Dice) of the x0 estimate against the mask (0: off). None
    # (the default): 0.3 (DEFAULT_X0_LOSS_WEIGHT) with objective diffusion (the diffusion study's best variant,
    # docs/diffusion_study.md), 0 with objective supervised
    x0_loss_weight: float | None = None
    # supervised prior (MedSegDiff-V2, HiDiff, PGRD): "supervised" first trains the same architecture with objective
    # supervised for prior_steps steps, freezes it, and feeds its probabilities (scaled to [-1, 1]) to the diffusion
    # model as K more channels after the image; "none": off
    prior: str = "none"
    # prior supervised: the first prior_steps of train_steps train the prior, the rest the diffusion model (each
    # phase with its own warm-up, EMA ramp and optimizer); in [1, train_steps)
    prior_steps: int = 0
    # off by default: the SPAD study found no gain from any SPAD variant (docs/spad_study.md); a `perturb` block turns
    # it on unless it says `enabled: false`
    perturb: PerturbConfig = field(default_factory=lambda: PerturbConfig(enabled=False))
    # training
    train_steps: int = 2000  # optimizer steps of the run
    pas_steps: int | None = None  # PaS horizon: progress p = step / pas_steps (None: train_steps)
    batch_size: int = 16  # images per step and process (DDP: times the world size)
    # cached_unet: each image of a batch is encoded once and its mask trained at this many noise levels (rows),
    # so a step sees batch_size * noise_levels denoiser rows for batch_size encoder passes
    noise_levels: int = 1
    lr: float = 2e-4  # AdamW peak learning rate
    weight_decay: float = 0.0  # AdamW weight decay
    warmup_steps: int = 100  # linear learning-rate warm-up steps
    grad_clip: float = 1.0  # gradient-norm clip (0: off)
    grad_accum: int = 1  # micro-batches accumulated per optimizer step
    ema_decay: float = 0.999  # EMA of the weights; sampling, export and predict use the EMA model
    amp: str = "none"  # autocast: none | bf16 | fp16 (fp16 with a grad scaler, CUDA only)
    seed: int = 0  # seeds every random draw of the run, in [0, 2**32)
    device: str = "auto"  # auto (CUDA when available, else CPU) | cpu | cuda | cuda:N | mps
    compile: bool = False  # torch.compile the model
    compile_mode: str = "default"  # torch.compile mode: default | reduce-overhead | max-autotune(-no-cudagraphs)
    ops_backend: str = "auto"  # SPAD perturbation and DDIM update: auto (Triton on CUDA) | reference | triton
    channels_last: bool = True  # channels-last memory format for the model and its inputs
    augment: AugmentConfig = field(default_factory=AugmentConfig)  # a block, or a bool: flips on/off, the rest off
    num_workers: int = 0  # DataLoader worker processes per rank
    synthetic_train: int = 1024  # synthetic lesion images when no training data is given
    synthetic_val: int = 32  # synthetic validation images when no validation data is given
    log_every: int = 50  # steps between log records (loss, learning rate, PaS strength)
    log_file: str = "log.jsonl"  # JSONL log file name inside the run folder
    log_tensorboard: bool = False  # also write the log's scalars and validation overlays to RUN/tensorboard
    val_every: int = 0  # steps between validation Dice records of the EMA model (0: off)
    val_samples: int = 16  # validation images (volumes: slices, fixed and seeded) scored each time
    checkpoint_every: int = 0  # steps between checkpoints during fit (0: only when the run ends or is stopped)
    # signals that finish the step, checkpoint and exit with status 3 (spadfast.runtime.preemption)
    stop_signals: tuple[str, ...] = ("SIGTERM", "SIGUSR1")
    progress_bar: bool = True  # tqdm bar during fit
    # sampling
    # the default (5 steps x 16 members, step_fusion mean) is the diffusion study's best measured setting
    # (docs/diffusion_study.md); 1 step x 1 member is one network pass (within 0.003 Dice there)
    sample_steps: int = 5
    ensemble: int = 16  # K members averaged per image; their std is the uncertainty
    eta: float = 0.0  # DDIM eta in [0, 1] (0: deterministic given the initial noise)
    timestep_spacing: str = "trailing"  # DDIM step selection: leading | trailing | linspace
    clip_sample: float | None = 1.0  # x0 estimate clipped to [-v, v] at each step (None: off)
    threshold: float = 0.5  # foreground where the members' mean probability exceeds it
    sample_chunk: int = 64  # most images x members per denoiser call (bounds sampling memory)
    cuda_graph: bool = True  # CUDA: capture the whole DDIM loop as one CUDA graph
    # "none": keep the last DDIM sample; "mean" / "uncertainty": fuse every step's x0 estimate, plain or weighted by
    # step and members' entropy (Diff-UNet's step-uncertainty fusion; spadfast.diffusion.sampler.fusion_weight)
    step_fusion: str = "mean"

    def __post_init__(self) -> None:
        if self.x0_loss_weight is None:
            self.x0_loss_weight = DEFAULT_X0_LOSS_WEIGHT if self.objective == "diffusion" else 0.0
        check_fields(self, _NULLABLE)
        self.channel_mults = tuple(int(c) for c in self.channel_mults)
        self.modalities = tuple(self.modalities)
        self.intensity_window = tuple(float(v) for v in self.intensity_window)
        self.ct_stats = tuple(float(v) for v in self.ct_stats)
        self.target_spacing = tuple(float(v) for v in self.target_spacing)
        self.patch_size_3d = tuple(int(v) for v in self.patch_size_3d)
        self.spacing_3d = tuple(float(v) for v in self.spacing_3d)
        self.attention_levels = tuple(int(c) for c in self.attention_levels)
        if isinstance(self.perturb, dict):
            self.perturb = _build(PerturbConfig, self.perturb, "perturb.")
        if isinstance(self.augment, bool):  # configs and checkpoints from before the block: flips on or off
            self.augment = AugmentConfig(flips=self.augment)
        elif isinstance(self.augment, dict):
            self.augment = _build(AugmentConfig, self.augment, "augment.")
        if not isinstance(self.augment, AugmentConfig):
            raise TypeError(f"`augment` must be a bool or a mapping of AugmentConfig keys, got {self.augment!r}")
        if not isinstance(self.perturb, PerturbConfig):
            raise TypeError(f"`perturb` must be a mapping of PerturbConfig keys, got {self.perturb!r}")
        checks = [
            (self.model_type in MODEL_TYPES, "model_type", f"one of {MODEL_TYPES}"),
            (self.image_size >= 8, "image_size", ">= 8"),
            (self.is_3d or not self.patch_size_3d, "patch_size_3d",
             f"() unless model_type is a 3-D model {MODEL_TYPES_3D}"),
            (not self.is_3d or (len(self.patch_size_3d) == 3 and min(self.patch_size_3d) >= 1),
             "patch_size_3d", f"(d, h, w), 3 ints >= 1, with model_type {self.model_type}"),
            (not self.spacing_3d or (len(self.spacing_3d) == 3 and min(self.spacing_3d) > 0), "spacing_3d",
             "() or (d, h, w) mm, all > 0"),
            (not self.is_3d or not self.attention_levels, "attention_levels",
             f"() with model_type {self.model_type} (the 3-D UNet has no attention)"),
            (not self.is_3d or self.context_slices == 0, "context_slices",
             f"0 with model_type {self.model_type} (the 3-D model sees the neighbouring slices already)"),
            (not self.is_3d or not self.perturb.enabled, "perturb",
             f"disabled with model_type {self.model_type} (the SPAD perturbation is 2-D)"),
            (not self.is_3d or self.prior == "none", "prior", f"'none' with model_type {self.model_type}"),
            (not self.is_3d or not self.target_spacing, "target_spacing",
             f"() with model_type {self.model_type} (3-D patches are cut on each volume's own voxel grid; no "
             "resampling yet)"),
            (not self.is_3d or not (self.augment.spatial or self.augment.intensity), "augment",
             f"flips only with model_type {self.model_type} (3-D patches are flipped along each axis; no 3-D "
             "rotation, scaling, elastic or intensity augmentation yet)"),
            (not self.is_3d or not self.resize, "resize",
             f"false with model_type {self.model_type} (volumes are read at their own voxel grid)"),
            (self.image_channels >= 1, "image_channels", ">= 1"),
            (self.num_classes >= 2, "num_classes", ">= 2 (background + at least one class)"),
            (self.slice_axis in (None, 0, 1, 2), "slice_axis", "None, 0, 1 or 2"),
            (self.reorient in (None, "RAS"), "reorient", "None or 'RAS'"),
            (self.noise_levels >= 1 and (self.noise_levels == 1 or (self.model_type == "cached_unet"
                                                                   and self.objective == "diffusion")),
             "noise_levels", ">= 1; above 1 only for model_type cached_unet with objective diffusion (the plain UNet "
             "encodes the image with every row)"),
            (not self.target_spacing or (len(self.target_spacing) == 2 and min(self.target_spacing) > 0
                                         and not self.resize), "target_spacing",
             "() or (dy, dx) in mm, both > 0, with resize: false (image_size then sets the patch)"),
            (self.ignore_label is None or self.num_classes <= self.ignore_label <= 65535, "ignore_label",
             "None or a pixel value in [num_classes, 65535] (not a class)"),
            (0 <= self.foreground_fraction <= 1, "foreground_fraction", "in [0, 1]"),
            (0 <= self.context_slices <= 16, "context_slices", "an int in [0, 16] (slices on each side)"),
            (len(self.intensity_window) in (0, 2) and (not self.intensity_window
             or self.intensity_window[0] < self.intensity_window[1]), "intensity_window", "() or (lo, hi), lo < hi"),
            (not self.modalities or len(self.modalities) == self.image_channels, "modalities",
             "empty or one name per image channel"),
            (self.ct_normalization in CT_NORMALIZATIONS, "ct_normalization", f"one of {CT_NORMALIZATIONS}"),
            (not self.ct_stats or (len(self.ct_stats) == 4 * self.image_channels
                                   and all(math.isfinite(v) for v in self.ct_stats)), "ct_stats",
             "() or 4 finite values (p0.5, p99.5, mean, std) per image channel"),
            (self.intensity_norm in INTENSITY_NORMS, "intensity_norm", f"one of {INTENSITY_NORMS}"),
            (self.base_channels >= 1, "base_channels", ">= 1"),
            (len(self.channel_mults) >= 1, "channel_mults", "non-empty"),
            (self.num_train_timesteps >= 1, "num_train_timesteps", ">= 1"),
            (0 < self.beta_start < 1, "beta_start", "in (0, 1)"),
            (self.beta_start <= self.beta_end < 1, "beta_end", "in [beta_start, 1)"),
            (self.weight_decay >= 0, "weight_decay", ">= 0"),
            (self.grad_clip >= 0, "grad_clip", ">= 0 (0 disables clipping)"),
            (self.num_workers >= 0, "num_workers", ">= 0"),
            (_valid_device(self.device), "device", "'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'"),
            (self.beta_schedule in BETA_SCHEDULES, "beta_schedule", f"one of {BETA_SCHEDULES}"),
            (self.prediction_type in PREDICTION_TYPES, "prediction_type", f"one of {PREDICTION_TYPES}"),
            (self.perturb_mode in PERTURB_MODES, "perturb_mode", f"one of {PERTURB_MODES}"),
            (self.objective in OBJECTIVES, "objective", f"one of {OBJECTIVES}"),
            (self.objective == "diffusion" or self.perturb_mode != "condition", "objective",
             "'diffusion' with perturb_mode 'condition' (a supervised model has no condition channel)"),
            (0 <= self.condition_dropout <= 1, "condition_dropout", "in [0, 1]"),
            (0 <= self.perturb_prob <= 1, "perturb_prob", "in [0, 1]"),
            (0 <= self.tile_overlap < 1, "tile_overlap", "in [0, 1)"),
            (0 <= self.foreground_oversample <= 1, "foreground_oversample", "in [0, 1]"),
            (0 <= self.input_gamma <= 1, "input_gamma", "in [0, 1]"),
            (0 <= self.self_condition_prob <= 1, "self_condition_prob", "in [0, 1]"),
            (not self.self_condition or self.perturb_mode != "condition", "self_condition",
             "false with perturb_mode 'condition' (that mode already self-conditions, with SPAD's perturbation of the "
             "estimate and condition_dropout): use one of them"),
            (self.x0_loss_weight >= 0, "x0_loss_weight", ">= 0 (0: off)"),
            (self.prior in PRIORS, "prior", f"one of {PRIORS}"),
            (self.prior == "none" or self.objective == "diffusion", "prior",
             "'none' with objective 'supervised' (the prior is itself the supervised network)"),
            (self.prior == "none" or self.perturb_mode != "condition", "prior",
             "'none' with perturb_mode 'condition' (its condition channel is the model's own perturbed estimate; "
             "self_condition combines with the prior)"),
            (self.prior_steps >= 0 and (self.prior == "none" or 1 <= self.prior_steps < self.train_steps),
             "prior_steps", "in [1, train_steps) with prior 'supervised' (the rest of train_steps trains the "
             "diffusion), >= 0 otherwise"),
            (not self.recycle or self.prediction_type == "sample", "recycle",
             "false unless prediction_type is 'sample' (x_t comes from the model's estimate, the loss targets the "
             "ground truth: epsilon/v targets would be up to ~100x the noise scale at small t)"),
            (not self.recycle or (self.perturb_mode != "condition" and not self.perturb.enabled), "recycle",
             "false with perturb_mode 'condition' or a SPAD perturbation on (the model's own estimate is the "
             "perturbation; use self_condition for a condition channel)"),
            (self.objective == "diffusion" or not (self.self_condition or self.recycle or self.x0_loss_weight),
             "objective", "'diffusion' with self_condition, recycle or x0_loss_weight > 0 (a supervised model is "
             "trained by BCE + Dice in one pass; x0_loss_weight None or 0 with objective supervised)"),
            (self.train_steps >= 1, "train_steps", ">= 1"),
            (self.pas_steps is None or self.pas_steps >= 1, "pas_steps", "None or >= 1"),
            (self.batch_size >= 1, "batch_size", ">= 1"),
            (self.lr > 0, "lr", "> 0"),
            (self.warmup_steps >= 0, "warmup_steps", ">= 0"),
            (self.grad_accum >= 1, "grad_accum", ">= 1"),
            (0 <= self.ema_decay < 1, "ema_decay", "in [0, 1)"),
            (self.amp in AMP_DTYPES, "amp", f"one of {AMP_DTYPES}"),
            (self.compile_mode in compile_modes(self.compile_mode), "compile_mode",
             f"one of torch.compile's modes {compile_modes(self.compile_mode)}"),
            (self.ops_backend in BACKENDS, "ops_backend", f"one of {BACKENDS}"),
            (0 <= self.seed < 2**32, "seed", "in [0, 2**32)"),
            (self.sample_steps >= 1, "sample_steps", ">= 1"),
            (self.sample_steps <= self.num_train_timesteps, "sample_steps", "<= num_train_timesteps"),
            (self.ensemble >= 1, "ensemble", ">= 1"),
            (0 <= self.eta <= 1, "eta", "in [0, 1] (above 1 the DDIM update is NaN)"),
            (self.timestep_spacing in TIMESTEP_SPACINGS, "timestep_spacing", f"one of {TIMESTEP_SPACINGS}"),
            (self.clip_sample is None or self.clip_sample > 0, "clip_sample", "None or > 0"),
            (0 < self.threshold < 1, "threshold", "in (0, 1)"),
            (self.sample_chunk >= 1, "sample_chunk", ">= 1"),
            (self.step_fusion in STEP_FUSIONS, "step_fusion", f"one of {STEP_FUSIONS}"),
            (self.log_every >= 1, "log_every", ">= 1"),
            (self.val_every >= 0, "val_every", ">= 0 (0 disables validation)"),
            (self.val_samples >= 1, "val_samples", ">= 1"),
            (self.checkpoint_every >= 0, "checkpoint_every", ">= 0 (0 disables periodic checkpoints)"),
            (_plain_file_name(self.log_file), "log_file", "a plain, non-empty file name (no folders)"),
        ]
        from .runtime.preemption import check_signal_names

        self.stop_signals = check_signal_names(self.stop_signals)
        for ok, name, what in checks:
            if not ok:
                raise ValueError(f"`{name}` must be {what}, got {getattr(self, name)!r}")
        if self.image_size % (2 ** (len(self.channel_mults) - 1)) != 0:
            raise ValueError(
                f"`image_size` must be divisible by 2**(len(channel_mults)-1) = {2 ** (len(self.channel_mults) - 1)}, "
                f"got {self.image_size}"
            )

    @property
    def mask_channels(self) -> int:
        """K = num_classes - 1: one mask channel per foreground class (one-hot, in [-1, 1] for the diffusion)."""
        return self.num_classes - 1

    @property
    def is_3d(self) -> bool:
        """Whether ``model_type`` is a 3-D model (``MODEL_TYPES_3D``): it trains on 3-D patches of volumes."""
        return self.model_type in MODEL_TYPES_3D

    @property
    def model_in_channels(self) -> int:
        """K noisy mask channels + :attr:`model_image_channels` (+ K condition channels: "condition" mode or
        self_condition)."""
        k = self.mask_channels
        return k + self.model_image_channels + (k if self.condition_channel else 0)

    @property
    def input_channels(self) -> int:
        """Channels of one model input image: ``image_channels`` (modalities) x ``2 context_slices + 1`` slices."""
        return self.image_channels * (2 * self.context_slices + 1)

    @property
    def model_image_channels(self) -> int:
        """What the denoiser sees per image: :attr:`input_channels`, + K prior probability channels with ``prior``
        (the cached encoder encodes both, once per image)."""
        return self.input_channels + (self.mask_channels if self.prior != "none" else 0)

    @property
    def prior_phase_steps(self) -> int:
        """Optimizer steps that train the prior before the diffusion model: ``prior_steps`` with a prior, else 0."""
        return self.prior_steps if self.prior != "none" else 0

    def prior_config(self) -> SPADConfig:
        """The prior network's config: this run's architecture and data with ``objective: supervised`` and the
        diffusion-only options off."""
        return dataclasses.replace(self, objective="supervised", prior="none", prior_steps=0, perturb_mode="target",
                                   self_condition=False, recycle=False, x0_loss_weight=0.0, noise_levels=1,
                                   train_steps=self.prior_steps)

    @property
    def condition_channel(self) -> bool:
        """The denoiser sees a condition channel (the previous x0 estimate): ``perturb_mode: condition`` or
        ``self_condition``."""
        return self.perturb_mode == "condition" or self.self_condition

    @property
    def pas_horizon(self) -> int:
        """Diffusion steps over which PaS runs from p = 0 to p = 1 (``pas_steps``, or ``train_steps`` less the
        prior's phase when unset)."""
        return self.pas_steps if self.pas_steps is not None else self.train_steps - self.prior_phase_steps

    @property
    def amp_dtype(self):
        """``amp`` as a torch dtype (None for "none")."""
        import torch

        return {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[self.amp]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> SPADConfig:
        """A named starting point (:data:`PRESETS`), with ``overrides`` applied; unknown names are a ValueError.

        ``cpu-small``: 32 px, a 0.2M-parameter UNet, x0 prediction, 1000 steps: minutes on a laptop CPU.
        ``cpu-medium``: 64 px, wider, 3000 steps. ``gpu-base``: 128 px, the default UNet width, bf16, 20000 steps.
        """
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; presets: {', '.join(PRESETS)}")
        return cls.from_dict({**PRESETS[name], **overrides})

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SPADConfig:
        if not isinstance(data, dict):
            raise TypeError(f"`config` must be a mapping, got {type(data).__name__}")
        return _build(cls, data, "")

    @classmethod
    def from_checkpoint_meta(cls, meta: dict[str, Any], source: str, device: str | None = None) -> SPADConfig:
        """The run's config from a checkpoint's metadata, on ``device`` when given (fp16 AMP falls back to none
        off CUDA, with a warning); a header without a spadfast trainer's keys is a ValueError naming ``source``."""
        import warnings

        from .runtime.distributed import resolve_device

        needed = ("config",) if meta.get("kind") == "export" else ("config", "step", "optimizer_param_groups")
        for key in needed:
            if key not in meta:
                raise ValueError(f"checkpoint {source!r} lacks {key!r} in its metadata: not a SPADTrainer checkpoint")
        cfg_dict = dict(meta["config"])
        cfg_dict.setdefault("resize", True)  # written before native resolution existed: it resized every image
        cfg_dict.setdefault("ct_normalization", "volume")  # written before data-set CT statistics existed
        cfg_dict.setdefault("x0_loss_weight", 0.0)  # written before the x0 loss existed: trained without it
        cfg_dict.setdefault("step_fusion", "none")  # written before step fusion existed: kept the last step
        if device is not None:
            cfg_dict["device"] = device
        if cfg_dict.get("amp") == "fp16" and resolve_device(cfg_dict.get("device", "auto")).type != "cuda":
            warnings.warn("checkpoint trained with amp='fp16' continues with amp='none' off CUDA", stacklevel=3)
            cfg_dict["amp"] = "none"
        return cls.from_dict(cfg_dict)

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


PRESETS: dict[str, dict[str, Any]] = {
    "cpu-small": dict(
        image_size=32, base_channels=16, channel_mults=(1, 2, 2), attention_levels=(), train_steps=1000,
        batch_size=16, lr=2e-3, warmup_steps=50, ema_decay=0.99, log_every=50, prediction_type="sample",
        val_every=250, val_samples=16, device="cpu",
    ),
    "cpu-medium": dict(
        image_size=64, base_channels=24, channel_mults=(1, 2, 2), attention_levels=(), train_steps=3000,
        batch_size=16, lr=1e-3, warmup_steps=100, ema_decay=0.995, log_every=100, prediction_type="sample",
        val_every=500, val_samples=16, device="cpu",
    ),
    "gpu-base": dict(
        image_size=128, base_channels=32, train_steps=20000, batch_size=32, lr=5e-4, warmup_steps=500,
        ema_decay=0.999, log_every=100, prediction_type="sample", amp="bf16",
        val_every=1000, val_samples=32, device="auto",
    ),
}

_NULLABLE = {"clip_sample", "pas_steps", "slice_axis", "ignore_label", "reorient"}  # fields documented as "None disables"


def cpu_training_hint(config: SPADConfig, device_type: str) -> str | None:
    """One warning line when a config sized for a GPU (``gpu-base``) is about to train on a CPU, with the fix; None
    otherwise. The work per step is estimated as ``image_size^2 * batch_size * grad_accum * base_channels^2``
    against the ``cpu-medium`` preset's, and warned about above 4x it (``gpu-base`` is ~14x)."""
    if device_type != "cpu":
        return None

    def work(c: dict[str, Any]) -> float:
        return float(c["image_size"]) ** 2 * c["batch_size"] * c.get("grad_accum", 1) * c["base_channels"] ** 2

    mine = dict(image_size=config.image_size, batch_size=config.batch_size, grad_accum=config.grad_accum,
                base_channels=config.base_channels)
    ratio = work(mine) / work(PRESETS["cpu-medium"])
    if ratio <= 4:
        return None
    return (f"spadfast train: warning: this config (image_size {config.image_size}, batch_size {config.batch_size}, "
            f"base_channels {config.base_channels}) is sized for a GPU, ~{ratio:.0f}x the work per step of preset "
            "cpu-medium, and trains on the CPU, where each step is slow; use --preset cpu-small or cpu-medium here, "
            "or a CUDA device")


def _plain_file_name(name: str) -> bool:
    return bool(name) and name not in (".", "..") and "/" not in name and "\\" not in name and "\0" not in name


def compile_modes(wanted: str = "default") -> tuple[str, ...]:
    """``torch.compile``'s modes; torch is asked only for a mode outside the ones every supported torch has."""
    if wanted in COMPILE_MODES:
        return COMPILE_MODES
    try:
        from torch._inductor import list_mode_options

        return tuple(list_mode_options())
    except (ImportError, AttributeError):
        return COMPILE_MODES


def _valid_device(name: str) -> bool:
    if name == "auto":
        return True
    try:
        import torch

        return torch.device(name).type in ("cpu", "cuda", "mps")
    except (RuntimeError, ValueError):
        return False


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
    if cls is SPADConfig and isinstance(kwargs.get("augment"), dict):
        kwargs["augment"] = _build(AugmentConfig, kwargs["augment"], "augment.")
    return cls(**kwargs)
