"""``SPADTrainer``: train a SPAD segmentation diffusion model, sample from it, checkpoint and resume exactly.

Shape of the loop (lucidrains' Trainer, nanoGPT's hygiene): every random draw of step ``s`` is a function of
(seed, rank, s) or of generator states saved in the checkpoint, so ``fit(6)`` and ``fit(3); save; resume; fit(3)``
produce bit-identical tensors on CPU. The hot path has no host syncs; losses are read every ``log_every`` steps.
"""

from __future__ import annotations

import copy
import math
import time
import warnings
from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Dataset

from .._version import __version__
from ..config import SPADConfig
from ..data.augmentation import augment_batch
from ..data.batches import batch_iterator, resume_data_line, resume_source, training_datasets, validation_pairs
from ..data.patches3d import flips_3d
from ..diffusion.perturb import perturb_factor, spad_perturb
from ..diffusion.sampler import DDIMSampler, SampleResult, check_volume_images, prior_condition
from ..diffusion.schedule import add_noise, alphas_cumprod, make_betas
from ..diffusion.training_inputs import (
    check_perturb_mode,
    diffusion_x0,
    masked_mse,
    noised_pair,
    perturbed_rows,
    recycle_timesteps,
    recycled_pair,
    self_condition,
    self_condition_rows,
    split_ignored,
    supervised_loss,
    x0_from_prediction,
    x0_mask_loss,
)
from ..evaluation.class_scores import present_class_dice
from ..models.checkpoint import (
    capture_rng,
    check_same_run,
    optimizer_param_groups,
    pack_training_state,
    read_checkpoint,
    resolve_path,
    restore_rng,
    save_from_main,
    unpack_training_state,
)
from ..models.factory import build_model, check_fits_memory
from ..ops.checks import check_images, check_int
from ..runtime import distributed as dist_utils
from ..runtime.distributed import resolve_device
from ..runtime.preemption import StopSignals
from ..runtime.profiling import nvtx_range
from ..runtime.runlock import hold_run_lock
from .run_log import RunLog


class SPADTrainer:
    """Train and sample a SPAD model.

    Args:
        config: a :class:`SPADConfig` (or a dict / YAML or JSON path accepted by it).
        train_data: a Dataset of ``(image [C,H,W] in [-1,1], mask [M,H,W] in {0,1})`` (M = num_classes - 1: one
            channel per foreground class), a folder path holding ``images/`` and ``masks/``, or None for built-in
            synthetic lesions.
        val_data: same forms; None uses a held-out synthetic split when ``train_data`` is None.
        model: optional denoiser taking ``(cat[x_t, image(, cond)], t)``; default: the config's ``model_type``
            (:func:`spadfast.models.factory.build_model`).
        out_dir: where logs and periodic checkpoints go (rank 0 only); None disables both.

    Example:
        >>> cfg = SPADConfig(image_size=16, base_channels=8, channel_mults=(1, 2), attention_levels=(),
        ...                  train_steps=2, batch_size=2, synthetic_train=4, synthetic_val=2, progress_bar=False,
        ...                  sample_steps=2, ensemble=2, device="cpu")
        >>> trainer = SPADTrainer(cfg)
        >>> _ = trainer.fit()
        >>> trainer.sample(torch.zeros(1, 1, 16, 16)).shape
        torch.Size([1, 1, 16, 16])
    """

    def __init__(
        self,
        config: SPADConfig | dict | str | Path,
        train_data: Dataset | str | Path | None = None,
        val_data: Dataset | str | Path | None = None,
        model: nn.Module | None = None,
        out_dir: str | Path | None = None,
    ) -> None:
        if isinstance(config, dict):
            config = SPADConfig.from_dict(config)
        elif isinstance(config, (str, Path)):
            config = SPADConfig.from_file(config)
        if not isinstance(config, SPADConfig):
            raise TypeError(f"`config` must be a SPADConfig, dict or file path, got {type(config).__name__}")
        self.config = cfg = config
        check_perturb_mode(cfg)
        self.device = resolve_device(cfg.device)
        if cfg.amp == "fp16" and self.device.type != "cuda":
            raise ValueError("`amp` 'fp16' needs a CUDA device (use 'bf16' on CPU)")
        self.distributed = dist_utils.init_from_env(self.device)
        self.rank, self.world_size = dist_utils.rank(), dist_utils.world_size()
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.amp_dtype = cfg.amp_dtype
        if model is None:
            check_fits_memory(cfg, self.device)

        self.train_data, self.val_data, self.data_sources = training_datasets(cfg, train_data, val_data)

        torch.manual_seed(cfg.seed)  # model initialisation is identical on every rank
        model = build_model(cfg) if model is None else model
        if not isinstance(model, nn.Module):
            raise TypeError(f"`model` must be a torch.nn.Module, got {type(model).__name__}")
        prior = None
        if cfg.prior != "none":
            torch.manual_seed(cfg.seed)  # the prior starts as the supervised run of this seed starts
            prior = build_model(cfg.prior_config())
        # dropout and other global draws differ per rank (DDP ranks must not share dropout masks)
        torch.manual_seed((cfg.seed * 1_000_003 + 7_919 * (self.rank + 1)) % 2**63)
        channels_last = cfg.channels_last and not cfg.is_3d  # 5-D weights have no channels_last
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.model = model.to(self.device, memory_format=memory_format)
        self.ema = copy.deepcopy(self.model).requires_grad_(False).eval()
        self._train_model: nn.Module = self.model
        if self.distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self._train_model = DistributedDataParallel(self.model, device_ids=ids)
        if cfg.compile:
            self._train_model = torch.compile(self._train_model, mode=cfg.compile_mode)

        fused = self.device.type == "cuda"
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused or None
        )
        # the supervised prior (config `prior`): trained for the first prior_steps, then frozen; its EMA feeds the
        # diffusion model's prior channels in training and sampling
        self.prior_model = self.prior_ema = self.prior_optimizer = self._train_prior = None
        if prior is not None:
            self.prior_model = prior.to(self.device, memory_format=memory_format)
            self.prior_ema = copy.deepcopy(self.prior_model).requires_grad_(False).eval()
            self._train_prior = self.prior_model
            if self.distributed:
                self._train_prior = DistributedDataParallel(self.prior_model, device_ids=ids)
            if cfg.compile:
                self._train_prior = torch.compile(self._train_prior, mode=cfg.compile_mode)
            self.prior_optimizer = torch.optim.AdamW(
                self.prior_model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused or None
            )
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=cfg.amp == "fp16")
        betas = make_betas(cfg.beta_schedule, cfg.num_train_timesteps, cfg.beta_start, cfg.beta_end)
        self.alphas_cumprod = alphas_cumprod(betas).to(self.device)
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(cfg.seed * 1_000 + self.rank)
        self.step = 0
        self.stopped_by: str | None = None  # the signal that ended the last fit early (spadfast.runtime.preemption)
        self.history: list[dict[str, Any]] = []
        self.run_log = RunLog(self.out_dir, cfg.log_file, cfg.log_tensorboard, dist_utils.is_main(),
                              lambda step: perturb_factor(self._phase_step(step) / cfg.pas_horizon, cfg.perturb))
        self.sampler = DDIMSampler.from_config(cfg, self.ema, alphas_cumprod(betas), prior=self.prior_ema)
        self.prior_sampler = (DDIMSampler.from_config(cfg.prior_config(), self.prior_ema, alphas_cumprod(betas))
                              if self.prior_ema is not None else None)

    # -------------------------------------------------------------------------------------------- training
    @property
    def phase(self) -> str:
        """``"prior"`` while the next optimizer step trains the supervised prior (config ``prior``), else
        ``"diffusion"``."""
        return "prior" if self.step < self.config.prior_phase_steps else "diffusion"

    def _phase_step(self, step: int) -> int:
        """``step`` counted from the start of its phase (the prior's steps come first)."""
        p = self.config.prior_phase_steps
        return step if step < p else step - p

    def _lr(self, step: int) -> float:
        if self.config.warmup_steps == 0:
            return self.config.lr
        return self.config.lr * min(1.0, (self._phase_step(step) + 1) / self.config.warmup_steps)

    def _loss(self, image: torch.Tensor, mask: torch.Tensor, micro: int,
              valid: torch.Tensor | None = None) -> torch.Tensor:
        """Diffusion loss of one micro-batch: perturb (SPAD), noise, predict, MSE to the target of ``perturb_mode``
        (:mod:`spadfast.diffusion.training_inputs`); ``valid`` (``[B,1,H,W]``, 0/1) limits it to annotated pixels.

        The study's options (off by default, each drawing nothing when off): ``recycle`` builds x_t from a no-grad
        estimate at t + 1; ``self_condition`` feeds a no-grad estimate on x_t as the condition channel on a
        ``self_condition_prob`` share of rows; ``x0_loss_weight`` adds BCE + soft Dice of the x0 estimate."""
        cfg = self.config
        if self.phase == "prior":  # the supervised prior's step, as a run with objective supervised takes it
            empty, t0 = torch.zeros_like(mask), torch.zeros(mask.shape[0], dtype=torch.long, device=self.device)
            logits = self._forward(empty, image, None, t0, model=self._train_prior, levels=1)
            return supervised_loss(logits.float(), mask, valid=valid)
        if self.prior_ema is not None:  # the frozen prior's channels follow the image's
            with torch.no_grad(), torch.autocast(self.device.type, dtype=self.amp_dtype,
                                                 enabled=self.amp_dtype is not None):
                image = torch.cat([image, prior_condition(self.prior_ema, image, cfg.mask_channels)], dim=1)
        if cfg.noise_levels > 1:  # every image's mask at several noise levels; the image is encoded once
            mask, valid = (v.repeat_interleave(cfg.noise_levels, 0) if v is not None else None for v in (mask, valid))
        B, K = mask.shape[:2]
        ones = (1,) * (mask.dim() - 1)  # per-row values broadcast over [K,H,W], or [K,D,H,W] for volumes
        if cfg.objective == "supervised":
            empty, t0 = torch.zeros_like(mask), torch.zeros(B, dtype=torch.long, device=self.device)
            return supervised_loss(self._forward(empty, image, None, t0).float(), mask, valid=valid)
        clean = mask * 2 - 1
        t = torch.randint(0, cfg.num_train_timesteps, (B,), generator=self.generator, device=self.device)
        eps = torch.randn(clean.shape, generator=self.generator, device=self.device)
        a = self.alphas_cumprod[t].view(B, *ones)
        input_noise = None
        if cfg.input_gamma > 0:
            input_noise = cfg.input_gamma * torch.randn(clean.shape, generator=self.generator, device=self.device)
        rows = perturbed_rows(B, cfg.perturb_prob, self.generator, self.device)
        rows = rows.view(B, *ones) if rows is not None else None
        estimate = binary = None
        if cfg.perturb_mode == "condition":
            noise = eps if input_noise is None else eps + input_noise
            estimate = self._self_estimate(image, add_noise(clean, noise, a), t, a)
            binary = (estimate > 0).float()
        with nvtx_range("spad_perturb"):
            offset = (micro * self.world_size + self.rank) * 2 * mask.numel()
            source = mask if binary is None else binary
            # one perturbation per class channel: channels become rows of the [B*K,1,H,W] batch the ops take
            perturbed = spad_perturb(source.reshape(B * K, 1, *mask.shape[2:]),
                                     self._phase_step(self.step) / cfg.pas_horizon, cfg.perturb,
                                     seed=cfg.seed, offset=offset, validate=False,
                                     backend=cfg.ops_backend).view(mask.shape)
        if cfg.recycle:  # x_t from the model's own estimate at t + 1, re-noised at t; the target stays the truth
            t_re = recycle_timesteps(t, cfg.num_train_timesteps)
            a_re = self.alphas_cumprod[t_re].view(B, *ones)
            recycled = self._self_estimate(image, add_noise(clean, eps, a_re), t_re, a_re)
            eps = torch.randn(clean.shape, generator=self.generator, device=self.device)
            x_t, target = recycled_pair(cfg.prediction_type, clean, recycled, eps, a, input_noise)
        else:
            x_t, target = noised_pair(cfg.perturb_mode, cfg.prediction_type, clean, perturbed * 2 - 1, rows, eps, a,
                                      input_noise)
        cond = None
        if estimate is not None:
            cond = self_condition(estimate, perturbed, binary)
            if cfg.condition_dropout > 0:
                keep = torch.rand((B, *ones), generator=self.generator, device=self.device) >= cfg.condition_dropout
                cond = cond * keep
        elif cfg.self_condition:
            cond = self_condition_rows(self._self_estimate(image, x_t, t, a), cfg.self_condition_prob, self.generator)
        pred = self._forward(x_t, image, cond, t)
        loss = masked_mse(pred.float(), target, valid)
        if cfg.x0_loss_weight > 0:
            x0 = x0_from_prediction(cfg.prediction_type, x_t, pred.float(), a)
            truth = clean if cfg.recycle else diffusion_x0(cfg.perturb_mode, clean, perturbed * 2 - 1, rows)
            loss = loss + cfg.x0_loss_weight * x0_mask_loss(x0, (truth + 1) / 2, valid)
        return loss

    def _forward(self, x_t: torch.Tensor, image: torch.Tensor, cond: torch.Tensor | None, t: torch.Tensor,
                 model: nn.Module | None = None, levels: int | None = None) -> torch.Tensor:
        # > 1: rows come in groups sharing one image (cached_model.forward)
        levels = self.config.noise_levels if levels is None else levels
        image = image.repeat_interleave(levels, dim=0) if levels > 1 else image
        inp = torch.cat([x_t, image] if cond is None else [x_t, image, cond], dim=1)
        if self.config.channels_last and inp.dim() == 4:
            inp = inp.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
            with nvtx_range("forward"):
                return (model or self._train_model)(inp, t.float(), **({"repeats": levels} if levels > 1 else {}))

    @torch.no_grad()
    def _self_estimate(self, image: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """The model's own x0 estimate with an empty condition (the sampler's first step), detached, clipped; float
        ``[B,K,H,W]`` for ``x_t`` ``[B,K,H,W]`` (without a condition channel when the model has none: recycling)."""
        cond = torch.zeros_like(x_t) if self.config.condition_channel else None
        out = self._forward(x_t, image, cond, t, model=self.model).float()
        limit = self.config.clip_sample or 1.0
        return x0_from_prediction(self.config.prediction_type, x_t, out, a).clamp(-limit, limit)

    @torch.no_grad()
    def _update_ema(self, model: nn.Module, ema: nn.Module) -> None:
        step = self._phase_step(self.step)
        decay = min(self.config.ema_decay, (1 + step) / (10 + step))
        ema_p = list(ema.parameters())
        torch._foreach_lerp_(ema_p, [p.detach() for p in model.parameters()], 1.0 - decay)
        for eb, b in zip(ema.buffers(), model.buffers()):
            eb.copy_(b)

    def train_step(self, batches: Iterator) -> torch.Tensor:
        """One optimizer step (``grad_accum`` micro-batches) of the network of :attr:`phase`; returns the mean loss
        as a device tensor (no sync)."""
        cfg = self.config
        if self.phase == "prior":
            model, train_model, ema = self.prior_model, self._train_prior, self.prior_ema
            optimizer = self.prior_optimizer
        else:
            model, train_model, optimizer, ema = self.model, self._train_model, self.optimizer, self.ema
        for group in optimizer.param_groups:
            group["lr"] = self._lr(self.step)
        total = torch.zeros((), device=self.device)
        for k in range(cfg.grad_accum):
            image, mask = next(batches)
            image = image.to(self.device, non_blocking=True).float()
            mask = mask.to(self.device, non_blocking=True).float()
            if image.dim() == 5:  # 3-D patches: flips along D, H, W (the config refuses other augmentation)
                if cfg.augment.flips:
                    image, mask = flips_3d(image, mask, self.generator)
            else:
                image, mask = augment_batch(image, mask, cfg.augment, self.generator)
            mask, valid = split_ignored(mask) if cfg.ignore_label is not None else (mask, None)
            last = k == cfg.grad_accum - 1
            no_sync = self.distributed and not last and hasattr(train_model, "no_sync")
            with train_model.no_sync() if no_sync else nullcontext():
                loss = self._loss(image, mask, self.step * cfg.grad_accum + k, valid) / cfg.grad_accum
                with nvtx_range("backward"):
                    self.scaler.scale(loss).backward()
            total += loss.detach()
        with nvtx_range("optimizer"):
            if cfg.grad_clip > 0:
                self.scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            self.scaler.step(optimizer)
            self.scaler.update()
            optimizer.zero_grad(set_to_none=True)
            self._update_ema(model, ema)
        self.step += 1
        return total

    def fit(self, steps: int | None = None) -> list[dict[str, Any]]:
        """Run ``steps`` more optimizer steps (default: up to ``config.train_steps``); returns the log records.

        ``out_dir`` stays locked meanwhile (:mod:`spadfast.runtime.runlock`): a second process training there is refused."""
        with hold_run_lock(self.out_dir if dist_utils.is_main() else None, "out_dir"):
            with StopSignals(self.config.stop_signals) as stops:
                return self._fit(steps, stops)

    def _fit(self, steps: int | None, stops: StopSignals) -> list[dict[str, Any]]:
        cfg = self.config
        if steps is None:
            steps = max(0, cfg.train_steps - self.step)
        steps = check_int(steps, "steps", 0)
        if steps == 0:
            return []
        self.model.train()
        batches = batch_iterator(self.train_data, cfg.batch_size, cfg.seed, self.step * cfg.grad_accum,
                                 cfg.num_workers, pin_memory=self.device.type == "cuda")
        bar = None
        if cfg.progress_bar and dist_utils.is_main():
            from tqdm.auto import tqdm

            bar = tqdm(total=steps, desc="spadfast train", dynamic_ncols=True)
        running = torch.zeros((), device=self.device)
        n_running, t0 = 0, time.perf_counter()
        records = []
        for _ in range(steps):
            running += self.train_step(batches)
            n_running += 1
            if bar is not None:
                bar.update(1)
            validate = bool(cfg.val_every) and self.step % cfg.val_every == 0 and self.val_data is not None
            if self.step % cfg.log_every == 0 or self.step == cfg.train_steps:
                loss = (running / n_running).item()  # sync point: once per log interval
                if not math.isfinite(loss):
                    raise FloatingPointError(
                        f"training loss is {loss} at step {self.step}: check the data (NaN/inf images?) or lower `lr`"
                    )
                elapsed = time.perf_counter() - t0
                record = {"step": self.step, "loss": loss, "lr": self._lr(self.step - 1),
                          "steps_per_s": n_running / max(elapsed, 1e-9)}
                running.zero_()
                n_running, t0 = 0, time.perf_counter()
                if validate:
                    record["val_dice"] = self.validate()
                records.append(record)
                self.history.append(record)  # before any mid-fit checkpoint, so it carries the log so far
                self.run_log.write(record)
                if bar is not None:
                    bar.set_postfix(loss=f"{loss:.4f}", **({"dice": f"{record['val_dice']:.3f}"}
                                                          if "val_dice" in record else {}))
            elif validate:
                self.run_log.write({"step": self.step, "val_dice": self.validate()})
            if not self.distributed or self.step % cfg.log_every == 0:
                # under DDP ranks agree by an all-reduce and a host sync: only at log steps, which sync anyway (a
                # scheduler's grace period outlasts log_every steps; the signal is kept until then)
                self.stopped_by = stops.requested(self.distributed, self.device)
            if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0 and self.out_dir is not None or (
                    self.stopped_by and self.out_dir is not None):
                self.save(self.out_dir)
            if self.stopped_by:  # a scheduler's signal: this step is saved, the caller says how to continue
                break
        if bar is not None:
            bar.close()
        return records

    def _log_overlays(self, images: torch.Tensor, masks: torch.Tensor, result: SampleResult) -> None:
        """Up to four validation images with ground truth (red) and prediction (green) contours, to TensorBoard."""
        if self.run_log.tensorboard() is None:
            return
        from ..evaluation.visualize import overlay_contour

        for i in range(min(4, images.shape[0])):
            canvas = overlay_contour(images[i], masks[i].amax(0) > 0.5, color=(0, 0, 255))
            canvas = overlay_contour(canvas, result.labels[i].cpu() > 0, color=(0, 255, 0))
            self.run_log.image(f"val/overlay_{i}", canvas, self.step)

    @torch.no_grad()
    def validate(self, n: int | None = None) -> float:
        """Mean Dice of EMA single-member samples on ``n`` (``config.val_samples``) validation pairs.

        The pairs (:func:`spadfast.data.batches.validation_pairs`): for volume slices a fixed set seeded by
        ``config.seed``, half of it slices that hold foreground; for other datasets the first ``n`` items. The mean
        runs over (image, foreground class) pairs in which the class is in the prediction or the ground truth: a
        class absent from both says nothing about the model and is left out (1.0 when no pair holds any class).
        """
        if self.val_data is None:
            raise ValueError("no validation data: pass `val_data` or use the synthetic default")
        pairs = validation_pairs(self.val_data, n or self.config.val_samples, self.config.seed)
        if self.config.is_3d:  # fixed, seeded 3-D patches (epoch 0 draws), Dice per patch and class
            images = torch.stack([p[0] for p in pairs])
            masks = torch.stack([p[1] for p in pairs])
            result = self._segment_checked(images, None, 1, self.config.seed)
            pred, truth = result.mask.cpu().flatten(2), masks.flatten(2)
            pred = pred & (truth >= 0)
            scores = present_class_dice(pred.flatten(0, 1)[:, None], truth.flatten(0, 1)[:, None] > 0.5)
            return sum(scores) / len(scores) if scores else 1.0
        size = self.config.image_size
        if any(tuple(p[0].shape[-2:]) != (size, size) for p in pairs):  # native-size images: sliding windows
            from ..infer.sliding_window import validate_whole_images

            return validate_whole_images(self, pairs)
        images = torch.stack([p[0] for p in pairs])
        masks = torch.stack([p[1] for p in pairs])
        result = self.segment(images, ensemble=1, seed=self.config.seed)
        self._log_overlays(images, masks, result)
        H, W = masks.shape[-2:]
        pred, truth = result.mask.cpu().reshape(-1, H, W), masks.reshape(-1, H, W) > 0.5
        pred = pred & (masks.reshape(-1, H, W) >= 0)  # ignored pixels (-1) are scored as neither
        scores = present_class_dice(pred, truth)
        return sum(scores) / len(scores) if scores else 1.0

    # -------------------------------------------------------------------------------------------- sampling
    def segment(
        self, images: torch.Tensor, steps: int | None = None, ensemble: int | None = None, seed: int | None = 0,
        return_members: bool = False, noise_keys: list[int] | None = None,
    ) -> SampleResult:
        """EMA-model DDIM ensemble: probabilities, uncertainty and thresholded masks (see :class:`SampleResult`).

        With a supervised prior (config ``prior``), up to the end of its phase (``step <= prior_steps``) this is the
        prior's own prediction (the diffusion model is untrained then), so validation scores the prior."""
        if self.config.is_3d:
            images = check_volume_images(images, self.config.input_channels)
        else:
            images, _ = check_images(images, self.config.input_channels, unbatched=True)
        return self._segment_checked(images, steps, ensemble, seed, return_members, noise_keys)

    def _segment_checked(self, images, steps, ensemble, seed, return_members=False, noise_keys=None) -> SampleResult:
        """:meth:`segment` of ``[B,C,H,W]`` images that passed :func:`check_images`."""
        prior_only = self.prior_sampler is not None and self.step <= self.config.prior_steps
        sampler = self.prior_sampler if prior_only else self.sampler
        return sampler.sample(
            images, steps=self.config.sample_steps if steps is None else steps,
            ensemble=self.config.ensemble if ensemble is None else ensemble, seed=seed,
            threshold=self.config.threshold, return_members=return_members, noise_keys=noise_keys, validate=False,
        )

    def sample(
        self, images: torch.Tensor, steps: int | None = None, ensemble: int | None = None, seed: int | None = 0
    ) -> torch.Tensor:
        """Foreground probabilities in [0, 1]: ``[B,M,H,W]`` for ``[B,C,H,W]`` images (``[M,H,W]`` for ``[C,H,W]``),
        M = num_classes - 1."""
        if self.config.is_3d:
            images_b, squeeze = check_volume_images(images, self.config.input_channels), False
        else:
            images_b, squeeze = check_images(images, self.config.input_channels, unbatched=True)
        probs = self._segment_checked(images_b, steps, ensemble, seed).probs
        return probs[0] if squeeze else probs

    # ------------------------------------------------------------------------------------------ checkpoint
    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Every tensor of the run, every rank's random states included (a collective under DDP)."""
        per_rank = [capture_rng(self.generator, self.device)]
        if self.distributed:
            per_rank = [None] * self.world_size
            torch.distributed.all_gather_object(per_rank, capture_rng(self.generator, self.device))
        prior = (self.prior_model, self.prior_ema, self.prior_optimizer) if self.prior_model is not None else None
        return pack_training_state(self.model, self.ema, self.optimizer, self.scaler, per_rank, prior)

    def save(self, path: str | Path) -> Path:
        """Write a checkpoint (rank 0; other ranks wait) atomically; ``path`` is a run directory or a file.

        Raises ``OSError`` naming the file when the write fails (a full disk): the previous checkpoint is unchanged
        and the trainer keeps its state, so ``save`` can be called again once there is room."""
        tensors = self.state_tensors()  # every rank: gathers the per-rank random states
        return save_from_main(path, tensors, lambda: {
            "config": self.config.to_dict(),
            "step": self.step,
            "optimizer_param_groups": optimizer_param_groups(self.optimizer),
            "phase": self.phase,
            **({"prior_optimizer_param_groups": optimizer_param_groups(self.prior_optimizer)}
               if self.prior_optimizer is not None else {}),
            "world_size": self.world_size,
            "device_type": self.device.type,
            "history": self.history,
            "data": self.data_sources,
            "spadfast_version": __version__,
        })

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        train_data: Dataset | str | Path | None = None,
        val_data: Dataset | str | Path | None = None,
        model: nn.Module | None = None,
        out_dir: str | Path | None = None,
        device: str | None = None,
        allow_data_change: bool = False,
    ) -> SPADTrainer:
        """Rebuild a trainer from ``save``'s checkpoint and resume exactly where it stopped.

        Data: ``train_data``/``val_data`` default to the folders the run recorded; a recorded folder that is gone
        or whose files changed, or other data than recorded, is a ValueError unless ``allow_data_change``.
        """
        tensors, meta = read_checkpoint(path)
        if meta.get("kind") == "export":
            raise ValueError(f"{path!s}: an export holds weights only (no optimizer state or random streams); "
                             "continue training from the run folder, or predict with spadfast.infer.segmenter.Segmenter")
        source = str(resolve_path(path))
        cfg = SPADConfig.from_checkpoint_meta(meta, source, device)
        records = meta.get("data") or {}
        given = {"train": train_data, "val": val_data}
        if records:
            train_data = resume_source(records.get("train"), train_data, "train_data", source, allow_data_change)
            if records.get("val") is not None or val_data is not None:
                val_data = resume_source(records.get("val"), val_data, "val_data", source, allow_data_change)
        trainer = cls(cfg, train_data, val_data, model, out_dir)
        trainer.load_state(tensors, meta, source)
        if dist_utils.is_main():
            print(resume_data_line(trainer.data_sources, given, records, source, trainer.step), flush=True)
        return trainer

    def load_state(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any], source: str = "checkpoint") -> None:
        """Load a checkpoint's tensors and metadata into this trainer (model, EMA, optimizer, scaler, RNG, step);
        a checkpoint of another ``prediction_type`` (or other run-defining key) is a ValueError naming both values."""
        check_same_run(meta, self.config.to_dict(), source)
        prior = (self.prior_model, self.prior_ema, self.prior_optimizer) if self.prior_model is not None else None
        unpack_training_state(tensors, meta, self.model, self.ema, self.optimizer, self.scaler, source, prior)
        self.step = int(meta["step"])
        if meta.get("phase", self.phase) != self.phase:
            raise ValueError(f"checkpoint {source!r} records phase {meta['phase']!r} at step {self.step}, but this "
                             f"config's prior_steps puts that step in phase {self.phase!r}")
        self.history = list(meta.get("history", []))
        saved_device, saved_world = meta.get("device_type"), meta.get("world_size")
        if saved_device == self.device.type and saved_world == self.world_size:
            if restore_rng(tensors, self.rank, self.generator, self.device):
                return
        # Another device type or world size: the saved streams do not apply (rank r's stream belongs to another data
        # partition). Reseed deterministically from (seed, rank, step): training continues correctly, but not
        # bit-identically to an uninterrupted run.
        warnings.warn(
            f"checkpoint {source!r} was written on {saved_device} with {saved_world} process(es); resuming on "
            f"{self.device.type} as rank {self.rank} of {self.world_size} reseeds the random streams, so the "
            "continuation is not bit-identical to an uninterrupted run",
            stacklevel=3,
        )
        mixed = ((self.config.seed * 1_000_003 + self.step) * 1_009 + self.rank) % 2**63
        self.generator.manual_seed(mixed)
        torch.manual_seed(mixed)
