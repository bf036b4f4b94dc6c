"""``SPADTrainer``: train a SPAD segmentation diffusion model, sample from it, checkpoint and resume exactly.

Shape of the loop (lucidrains' Trainer, nanoGPT's hygiene): every random draw of step ``s`` is a function of
(seed, rank, s) or of generator states saved in the checkpoint, so ``fit(6)`` and ``fit(3); save; resume; fit(3)``
produce bit-identical tensors on CPU. The hot path has no host syncs; losses are read every ``log_every`` steps.
"""

from __future__ import annotations

import copy
import json
import math
import os
import time
import warnings
from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from . import distributed as dist_utils
from .checkpoint import read_checkpoint, resolve_path, write_checkpoint
from .config import SPADConfig
from .metrics import dice
from .model import SPADUNet
from .perturb import spad_perturb
from .profiling import nvtx_range
from .sampler import DDIMSampler, SampleResult
from .schedule import alphas_cumprod, make_betas

_AMP = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(name: str) -> torch.device:
    """``"auto"``: this rank's CUDA device when available, else CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"`device` is {name!r} but CUDA is not available")
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if device.index is not None and world > 1 and device.index != dist_utils.local_rank():
            warnings.warn(f"`device` {name!r} under torchrun: using cuda:{dist_utils.local_rank()} for this rank "
                          "(one GPU per process)", stacklevel=3)
            device = torch.device("cuda", dist_utils.local_rank())
        if device.index is None:
            device = torch.device("cuda", dist_utils.local_rank())
    return device


class _BatchIndexStream(torch.utils.data.Sampler):
    """Endless stream of per-rank index batches starting at micro-batch ``start``, epoch after epoch.

    Epoch ``e`` is a ``DistributedSampler`` permutation seeded by (seed, e), so position ``i`` of the stream is a pure
    function of i: resuming at any step needs no iterator state.
    """

    def __init__(self, dataset: Dataset, batch_size: int, seed: int, start: int = 0) -> None:
        self.sampler = DistributedSampler(
            dataset, num_replicas=dist_utils.world_size(), rank=dist_utils.rank(), shuffle=True, seed=seed
        )
        self.batch_size = batch_size
        self.start = start

    def __iter__(self) -> Iterator[list[int]]:
        per_epoch = len(self.sampler)
        first = self.start * self.batch_size
        epoch, pos = divmod(first, per_epoch)
        buf: list[int] = []
        while True:
            self.sampler.set_epoch(epoch)
            buf.extend(list(self.sampler)[pos:])
            pos = 0
            epoch += 1
            while len(buf) >= self.batch_size:
                yield buf[: self.batch_size]
                buf = buf[self.batch_size :]

    def __len__(self) -> int:  # endless; DataLoader only needs a number
        return 2**62


class SPADTrainer:
    """Train and sample a SPAD model.

    Args:
        config: a :class:`SPADConfig` (or a dict / YAML or JSON path accepted by it).
        train_data: a Dataset of ``(image [C,H,W] in [-1,1], mask [1,H,W] in {0,1})``, a folder path holding
            ``images/`` and ``masks/``, or None for built-in synthetic lesions.
        val_data: same forms; None uses a held-out synthetic split when ``train_data`` is None.
        model: optional denoiser taking ``(cat[x_t, image(, cond)], t)``; default :class:`SPADUNet` from the config.
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
        self.device = resolve_device(cfg.device)
        if cfg.amp == "fp16" and self.device.type != "cuda":
            raise ValueError("`amp` 'fp16' needs a CUDA device (use 'bf16' on CPU)")
        self.distributed = dist_utils.init_from_env(self.device)
        self.rank, self.world_size = dist_utils.rank(), dist_utils.world_size()
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.amp_dtype = _AMP[cfg.amp]

        self.train_data = self._resolve_data(train_data, "train_data", cfg.synthetic_train, cfg.seed)
        if val_data is None and train_data is None:
            val_data = self._resolve_data(None, "val_data", cfg.synthetic_val, cfg.seed + 10_007)
        self.val_data = self._resolve_data(val_data, "val_data", 0, 0) if val_data is not None else None

        torch.manual_seed(cfg.seed)  # model initialisation is identical on every rank
        if model is None:
            model = SPADUNet(
                in_channels=cfg.model_in_channels, out_channels=1, base_channels=cfg.base_channels,
                channel_mults=cfg.channel_mults, num_res_blocks=cfg.num_res_blocks,
                attention_levels=cfg.attention_levels, dropout=cfg.dropout,
            )
        if not isinstance(model, nn.Module):
            raise TypeError(f"`model` must be a torch.nn.Module, got {type(model).__name__}")
        memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
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
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=cfg.amp == "fp16")
        betas = make_betas(cfg.beta_schedule, cfg.num_train_timesteps, cfg.beta_start, cfg.beta_end)
        self.alphas_cumprod = alphas_cumprod(betas).to(self.device)
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(cfg.seed * 1_000 + self.rank)
        self.step = 0
        self.history: list[dict[str, Any]] = []
        self.sampler = DDIMSampler(
            self.ema, alphas_cumprod(betas), prediction_type=cfg.prediction_type, perturb_mode=cfg.perturb_mode,
            steps=cfg.sample_steps, eta=cfg.eta, spacing=cfg.timestep_spacing, clip_sample=cfg.clip_sample,
            chunk=cfg.sample_chunk, cuda_graph=cfg.cuda_graph, amp_dtype=self.amp_dtype,
            channels_last=cfg.channels_last, backend=cfg.ops_backend,
        )

    # ------------------------------------------------------------------------------------------------ data
    def _resolve_data(self, data, name: str, synthetic_n: int, seed: int) -> Dataset:
        from .data import SegmentationFolder, SyntheticLesions

        cfg = self.config
        if data is None:
            return SyntheticLesions(synthetic_n, image_size=cfg.image_size, seed=seed, channels=cfg.image_channels)
        if isinstance(data, (str, Path)):
            return SegmentationFolder(data, image_size=cfg.image_size, channels=cfg.image_channels, augment=False)
        if not hasattr(data, "__getitem__") or not hasattr(data, "__len__"):
            raise TypeError(f"`{name}` must be a Dataset, a folder path or None, got {type(data).__name__}")
        if len(data) == 0:
            raise ValueError(f"`{name}` is empty")
        image, mask = data[0]
        if not isinstance(image, torch.Tensor) or not isinstance(mask, torch.Tensor):
            raise TypeError(
                f"`{name}` must yield (image, mask) torch tensors, got ({type(image).__name__}, {type(mask).__name__})"
            )
        if not image.is_floating_point() or not bool(torch.isfinite(image).all()):
            raise ValueError(f"`{name}` images must be finite floating tensors in [-1, 1] (item 0: {image.dtype})")
        if not bool(((mask == 0) | (mask == 1)).all()):
            raise ValueError(f"`{name}` masks must hold only 0 and 1 (item 0 holds {mask.unique()[:4].tolist()})")
        if image.dim() != 3 or image.shape[0] != cfg.image_channels:
            raise ValueError(
                f"`{name}` images must be [C={cfg.image_channels},H,W] (config.image_channels), "
                f"got {tuple(image.shape)}"
            )
        if mask.dim() != 3 or mask.shape[0] != 1 or mask.shape[1:] != image.shape[1:]:
            raise ValueError(f"`{name}` masks must be [1,H,W] matching the image, got {tuple(mask.shape)}")
        return data

    def _loader(self, start_micro: int) -> Iterator:
        stream = _BatchIndexStream(self.train_data, self.config.batch_size, self.config.seed, start_micro)
        loader = DataLoader(
            self.train_data, batch_sampler=stream, num_workers=self.config.num_workers,
            pin_memory=self.device.type == "cuda", persistent_workers=False,
            # a private generator: the loader must not consume the global RNG (dropout's), or resume drifts
            generator=torch.Generator().manual_seed(self.config.seed + start_micro),
        )
        return iter(loader)

    def _augment(self, image: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-sample flips and 90-degree rotations, identical for image and mask, from the trainer's generator."""
        B = image.shape[0]
        ops = torch.randint(0, 8, (B,), generator=self.generator, device=self.device)
        if image.shape[-1] != image.shape[-2]:
            ops = ops % 4  # rotations by 90 degrees need square images
        both = torch.cat([image, mask], dim=1)
        out = both
        flip_h = (ops % 2 == 1).view(B, 1, 1, 1)
        flip_v = ((ops // 2) % 2 == 1).view(B, 1, 1, 1)
        transpose = (ops // 4 == 1).view(B, 1, 1, 1)
        out = torch.where(flip_h, out.flip(-1), out)
        out = torch.where(flip_v, out.flip(-2), out)
        if image.shape[-1] == image.shape[-2]:
            out = torch.where(transpose, out.transpose(-1, -2), out)
        return out[:, : image.shape[1]], out[:, image.shape[1] :]

    # -------------------------------------------------------------------------------------------- training
    def _lr(self, step: int) -> float:
        if self.config.warmup_steps == 0:
            return self.config.lr
        return self.config.lr * min(1.0, (step + 1) / self.config.warmup_steps)

    def _loss(self, image: torch.Tensor, mask: torch.Tensor, micro: int) -> torch.Tensor:
        cfg = self.config
        B = mask.shape[0]
        progress = self.step / cfg.train_steps
        with nvtx_range("spad_perturb"):
            offset = (micro * self.world_size + self.rank) * 2 * mask.numel()
            perturbed = spad_perturb(
                mask, progress, cfg.perturb, seed=cfg.seed, offset=offset, validate=False, backend=cfg.ops_backend
            )
        clean = mask * 2 - 1
        pert = perturbed * 2 - 1
        x0, cond = (pert, None) if cfg.perturb_mode == "target" else (clean, pert)
        if cond is not None and cfg.condition_dropout > 0:
            keep = torch.rand((B, 1, 1, 1), generator=self.generator, device=self.device) >= cfg.condition_dropout
            cond = cond * keep
        t = torch.randint(0, cfg.num_train_timesteps, (B,), generator=self.generator, device=self.device)
        eps = torch.randn(x0.shape, generator=self.generator, device=self.device)
        a = self.alphas_cumprod[t].view(B, 1, 1, 1)
        x_t = a.sqrt() * x0 + (1 - a).sqrt() * eps
        if cfg.prediction_type == "epsilon":
            target = eps
        elif cfg.prediction_type == "sample":
            target = x0
        else:
            target = a.sqrt() * eps - (1 - a).sqrt() * x0
        parts = [x_t, image] if cond is None else [x_t, image, cond]
        inp = torch.cat(parts, dim=1)
        if cfg.channels_last:
            inp = inp.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
            with nvtx_range("forward"):
                pred = self._train_model(inp, t.float())
        return F.mse_loss(pred.float(), target)

    @torch.no_grad()
    def _update_ema(self) -> None:
        decay = min(self.config.ema_decay, (1 + self.step) / (10 + self.step))
        ema_p = list(self.ema.parameters())
        torch._foreach_lerp_(ema_p, [p.detach() for p in self.model.parameters()], 1.0 - decay)
        for eb, b in zip(self.ema.buffers(), self.model.buffers()):
            eb.copy_(b)

    def train_step(self, batches: Iterator) -> torch.Tensor:
        """One optimizer step (``grad_accum`` micro-batches); returns the mean loss as a device tensor (no sync)."""
        cfg = self.config
        for group in self.optimizer.param_groups:
            group["lr"] = self._lr(self.step)
        total = torch.zeros((), device=self.device)
        for k in range(cfg.grad_accum):
            image, mask = next(batches)
            image = image.to(self.device, non_blocking=True).float()
            mask = mask.to(self.device, non_blocking=True).float()
            if cfg.augment:
                image, mask = self._augment(image, mask)
            last = k == cfg.grad_accum - 1
            sync_ctx = self._train_model.no_sync() if self.distributed and not last and hasattr(
                self._train_model, "no_sync") else nullcontext()
            with sync_ctx:
                loss = self._loss(image, mask, self.step * cfg.grad_accum + k) / cfg.grad_accum
                with nvtx_range("backward"):
                    self.scaler.scale(loss).backward()
            total += loss.detach()
        with nvtx_range("optimizer"):
            if cfg.grad_clip > 0:
                self.scaler.unscale_(self.optimizer)
                nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.optimizer.zero_grad(set_to_none=True)
            self._update_ema()
        self.step += 1
        return total

    def fit(self, steps: int | None = None) -> list[dict[str, Any]]:
        """Run ``steps`` more optimizer steps (default: up to ``config.train_steps``); returns the log records."""
        cfg = self.config
        if steps is None:
            steps = max(0, cfg.train_steps - self.step)
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            raise ValueError(f"`steps` must be an int >= 0, got {steps!r}")
        if steps == 0:
            return []
        self.model.train()
        batches = self._loader(self.step * cfg.grad_accum)
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
                if cfg.val_every and self.step % cfg.val_every == 0 and self.val_data is not None:
                    record["val_dice"] = self.validate()
                records.append(record)
                self.history.append(record)  # before any mid-fit checkpoint, so it carries the log so far
                self._log(record)
                if bar is not None:
                    bar.set_postfix(loss=f"{loss:.4f}", **({"dice": f"{record['val_dice']:.3f}"}
                                                          if "val_dice" in record else {}))
            elif cfg.val_every and self.step % cfg.val_every == 0 and self.val_data is not None:
                self._log({"step": self.step, "val_dice": self.validate()})
            if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0 and self.out_dir is not None:
                self.save(self.out_dir)
        if bar is not None:
            bar.close()
        return records

    def _log(self, record: dict[str, Any]) -> None:
        if self.out_dir is None or not dist_utils.is_main():
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        with open(self.out_dir / self.config.log_file, "a") as f:
            f.write(json.dumps(record) + "\n")

    @torch.no_grad()
    def validate(self, n: int | None = None) -> float:
        """Mean Dice of EMA single-member samples on the first ``n`` (``config.val_samples``) validation pairs."""
        if self.val_data is None:
            raise ValueError("no validation data: pass `val_data` or use the synthetic default")
        n = min(n or self.config.val_samples, len(self.val_data))
        pairs = [self.val_data[i] for i in range(n)]
        images = torch.stack([p[0] for p in pairs])
        masks = torch.stack([p[1] for p in pairs])
        result = self.segment(images, ensemble=1, seed=self.config.seed)
        return float(torch.as_tensor(dice(result.mask.cpu()[:, 0], masks[:, 0] > 0.5)).double().mean())

    # -------------------------------------------------------------------------------------------- sampling
    def _check_images(self, images) -> tuple[torch.Tensor, bool]:
        if not isinstance(images, torch.Tensor):
            raise TypeError(f"`images` must be a torch.Tensor, got {type(images).__name__}")
        squeeze = images.dim() == 3
        if squeeze:
            images = images.unsqueeze(0)
        if images.dim() != 4 or images.shape[0] == 0:
            raise ValueError(f"`images` must be [B,C,H,W] or [C,H,W] with B >= 1, got {tuple(images.shape)}")
        if images.shape[1] != self.config.image_channels:
            raise ValueError(
                f"`images` must have {self.config.image_channels} channel(s) (config.image_channels), "
                f"got shape {tuple(images.shape)}"
            )
        return images, squeeze

    def segment(
        self, images: torch.Tensor, steps: int | None = None, ensemble: int | None = None, seed: int | None = 0,
        return_members: bool = False,
    ) -> SampleResult:
        """EMA-model DDIM ensemble: probabilities, uncertainty and thresholded masks (see :class:`SampleResult`)."""
        images, _ = self._check_images(images)
        return self.sampler.sample(
            images, steps=self.config.sample_steps if steps is None else steps,
            ensemble=self.config.ensemble if ensemble is None else ensemble, seed=seed,
            threshold=self.config.threshold, return_members=return_members,
        )

    def sample(
        self, images: torch.Tensor, steps: int | None = None, ensemble: int | None = None, seed: int | None = 0
    ) -> torch.Tensor:
        """Foreground probabilities in [0, 1]: ``[B,1,H,W]`` for ``[B,C,H,W]`` images (``[1,H,W]`` for ``[C,H,W]``)."""
        images_b, squeeze = self._check_images(images)
        probs = self.segment(images_b, steps, ensemble, seed).probs
        return probs[0] if squeeze else probs

    # ------------------------------------------------------------------------------------------ checkpoint
    def state_tensors(self) -> dict[str, torch.Tensor]:
        tensors: dict[str, torch.Tensor] = {}
        for k, v in self.model.state_dict().items():
            tensors[f"model.{k}"] = v
        for k, v in self.ema.state_dict().items():
            tensors[f"ema.{k}"] = v
        for idx, state in self.optimizer.state_dict()["state"].items():
            for k, v in state.items():
                tensors[f"optim.{idx}.{k}"] = v if isinstance(v, torch.Tensor) else torch.tensor(v)
        for k, v in self.scaler.state_dict().items():
            if isinstance(v, (int, float)):
                tensors[f"scaler.{k}"] = torch.tensor(float(v), dtype=torch.float64)
        per_rank = [self._rng_states()]
        if self.distributed:  # a collective: every rank calls save()
            per_rank = [None] * self.world_size
            torch.distributed.all_gather_object(per_rank, self._rng_states())
        for r, states in enumerate(per_rank):
            for k, v in states.items():
                tensors[f"rng.rank{r}.{k}"] = v
        return tensors

    def _rng_states(self) -> dict[str, torch.Tensor]:
        """This rank's random states: the trainer's generator, torch's CPU RNG (dropout on CPU), CUDA RNG."""
        states = {"generator": self.generator.get_state(), "torch_cpu": torch.get_rng_state()}
        if self.device.type == "cuda":
            states["torch_cuda"] = torch.cuda.get_rng_state(self.device)
        return states

    def _restore_rng(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any], source: str) -> None:
        prefix = f"rng.rank{self.rank}."
        same_device = meta.get("device_type") == self.device.type
        if same_device and f"{prefix}generator" in tensors:
            self.generator.set_state(tensors[f"{prefix}generator"])
            torch.set_rng_state(tensors[f"{prefix}torch_cpu"])
            if f"{prefix}torch_cuda" in tensors and self.device.type == "cuda":
                torch.cuda.set_rng_state(tensors[f"{prefix}torch_cuda"], self.device)
            return
        # Another device type or world size: the saved streams do not apply. Reseed deterministically from
        # (seed, rank, step); training continues correctly, but not bit-identically to an uninterrupted run.
        warnings.warn(
            f"checkpoint {source!r} was written on {meta.get('device_type')} with {meta.get('world_size')} "
            f"process(es); resuming on {self.device.type} as rank {self.rank} of {self.world_size} reseeds the "
            "random streams, so the continuation is not bit-identical to an uninterrupted run",
            stacklevel=3,
        )
        mixed = (self.config.seed * 1_000_003 + self.step) * 1_009 + self.rank
        self.generator.manual_seed(mixed % 2**63)
        torch.manual_seed(mixed % 2**63)

    def save(self, path: str | Path) -> Path:
        """Write a checkpoint (rank 0; other ranks wait) atomically; ``path`` is a run directory or a file."""
        written = resolve_path(path)
        tensors = self.state_tensors()  # every rank: gathers the per-rank random states
        if dist_utils.is_main():
            groups = [
                {k: v for k, v in g.items() if k != "params"} for g in self.optimizer.state_dict()["param_groups"]
            ]
            meta = {
                "config": self.config.to_dict(),
                "step": self.step,
                "optimizer_param_groups": groups,
                "world_size": self.world_size,
                "device_type": self.device.type,
                "history": self.history[-100:],
                "spadfast_version": __import__("spadfast").__version__,
            }
            written = write_checkpoint(path, tensors, meta)
        dist_utils.barrier()
        return written

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        train_data: Dataset | str | Path | None = None,
        val_data: Dataset | str | Path | None = None,
        model: nn.Module | None = None,
        out_dir: str | Path | None = None,
        device: str | None = None,
    ) -> SPADTrainer:
        """Rebuild a trainer from ``save``'s checkpoint and resume exactly where it stopped."""
        tensors, meta = read_checkpoint(path)
        source = str(resolve_path(path))
        for key in ("config", "step", "optimizer_param_groups"):
            if key not in meta:
                raise ValueError(f"checkpoint {source!r} lacks {key!r} in its metadata: not a SPADTrainer checkpoint")
        cfg_dict = dict(meta["config"])
        if device is not None:
            cfg_dict["device"] = device
        if cfg_dict.get("amp") == "fp16" and resolve_device(cfg_dict.get("device", "auto")).type != "cuda":
            warnings.warn("checkpoint trained with amp='fp16' continues with amp='none' off CUDA", stacklevel=2)
            cfg_dict["amp"] = "none"
        trainer = cls(SPADConfig.from_dict(cfg_dict), train_data, val_data, model, out_dir)
        trainer.load_state(tensors, meta, source)
        return trainer

    def load_state(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any], source: str = "checkpoint") -> None:
        def sub(prefix: str) -> dict[str, torch.Tensor]:
            return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}

        try:
            self.model.load_state_dict(sub("model."))
            self.ema.load_state_dict(sub("ema."))
        except RuntimeError as e:
            raise ValueError(f"checkpoint {source!r} does not match the model: {e}") from None
        state: dict[int, dict[str, torch.Tensor]] = {}
        for k, v in sub("optim.").items():
            idx, name = k.split(".", 1)
            state.setdefault(int(idx), {})[name] = v
        params = list(self.model.parameters())
        for idx, st in state.items():
            for name, v in st.items():
                if v.dim() > 0 and (idx >= len(params) or v.shape != params[idx].shape):
                    raise ValueError(f"checkpoint {source!r}: optimizer state {idx}.{name} does not match the model")
        groups = meta["optimizer_param_groups"]
        params = self.optimizer.state_dict()["param_groups"]
        for g, p in zip(groups, params):
            g["params"] = p["params"]
        self.optimizer.load_state_dict({"state": state, "param_groups": groups})
        scaler_state = {k: (int(v.item()) if k.endswith("tracker") else v.item()) for k, v in sub("scaler.").items()}
        if scaler_state and self.scaler.is_enabled():
            self.scaler.load_state_dict(scaler_state)
        self.step = int(meta["step"])
        self.history = list(meta.get("history", []))
        self._restore_rng(tensors, meta, source)
