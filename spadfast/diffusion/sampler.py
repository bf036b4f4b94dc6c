"""DDIM sampling of segmentation masks with ensembles, chunking and CUDA-graph capture.

The loop denoises ``x_T ~ N(0, I)`` of shape ``[B*K, M, H, W]`` (K ensemble members per image, sampled as one
batch; M mask channels, one per foreground class, 1 for binary masks) conditioned on the images. Every per-step
coefficient is precomputed into device tensors by :meth:`set_timesteps`, so a step never syncs with the host; on
CUDA (``eta == 0``) the whole S-step loop is captured in a CUDA graph and replayed. The graph cache is keyed by
everything the loop depends on (shapes, dtype, steps, device, model identity, prediction type, perturb mode, eta,
clipping, spacing, backend, autocast dtype, memory format), bounded (least recently used, ``graph_cache_size``
entries), and a failed capture warns once and samples eagerly. A model with ``encode(image)`` and
``denoise(x, features, t)`` (:class:`spadfast.models.cached_unet.SPADCachedUNet`) has its image features computed once
per image (``chunk`` images per ``encode`` call, under the sampler's autocast) and reused by every member and
step. Members are mapped to probabilities ``(x0 + 1) / 2`` clipped to [0, 1]; the result is their mean, their
standard deviation (uncertainty) and the labels (background unless a class exceeds the threshold).

Step fusion (``step_fusion``, after Diff-UNet's step-uncertainty fusion, Xing et al., MICCAI 2023) replaces each
member's last sample by a weighted mean of the x0 estimates of all S steps; see :func:`fusion_weight`.
"""

from __future__ import annotations

import math
import warnings
import zlib
from collections import OrderedDict
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .. import ops
from ..ops.checks import check_images, check_int, is_int
from ..runtime.profiling import nvtx_range
from .schedule import check_eta, ddim_alphas, ddim_timesteps

STEP_FUSIONS = ("none", "mean", "uncertainty")


@dataclass
class SampleResult:
    """Ensemble output for B images, M = num_classes - 1 foreground classes (M = 1 for binary masks), K members.

    ``probs``, ``std``: float32 ``[B,M,H,W]`` per-class probability (member mean) and uncertainty (member std);
    ``mask``: bool ``[B,M,H,W]``, one-hot of ``labels`` (binary: ``probs > threshold``); ``labels``: int64
    ``[B,H,W]`` in ``0..M`` (:func:`labels_from_probs`: background unless some class exceeds the threshold);
    ``members``: member probabilities ``[B,K,H,W]`` (binary) or ``[B,K,M,H,W]``, only when asked for.
    """

    probs: torch.Tensor
    std: torch.Tensor
    mask: torch.Tensor
    members: torch.Tensor | None = None
    labels: torch.Tensor | None = None

    @classmethod
    def from_members(cls, members: torch.Tensor, threshold: float, return_members: bool = False) -> SampleResult:
        """The ensemble of ``members`` float ``[B,K,M,H,W]`` in [0, 1]: member mean and std, labels and masks."""
        M = members.shape[2]
        probs = members.mean(dim=1)
        std = members.std(dim=1, unbiased=False)
        labels = labels_from_probs(probs, threshold)
        if M == 1:
            mask, kept = probs > threshold, members[:, :, 0]
        else:
            classes = torch.arange(1, M + 1, device=labels.device).view(1, M, *[1] * (labels.dim() - 1))
            mask = labels.unsqueeze(1) == classes
            kept = members
        return cls(probs, std, mask, kept if return_members else None, labels)


def check_step_fusion(value: object, name: str = "step_fusion") -> str:
    """``value`` if it is one of :data:`STEP_FUSIONS`, else a ValueError naming ``name``."""
    if not isinstance(value, str) or value not in STEP_FUSIONS:
        raise ValueError(f"`{name}` must be one of {STEP_FUSIONS}, got {value!r}")
    return value


def fusion_weight(x0: torch.Tensor, step: int, steps: int, members: int, fusion: str) -> torch.Tensor | float:
    """Weight of step ``step`` (0-based, of ``steps``) in the fused estimate; ``x0`` float ``[N,M,H,W]`` in [-1, 1]:
    the clipped x0 estimates of that step, ``N`` = images x ``members`` rows, image-major.

    - ``"mean"``: 1 for every step (the plain mean of the S estimates).
    - ``"uncertainty"`` (Diff-UNet's step-uncertainty fusion): per image, class channel and pixel,
      ``w_i = exp(sigmoid((i + 1) / S) * (1 - u_i))`` with ``u_i`` the binary entropy of the members' mean
      probability ``p_i = (mean_k x0_{i,k} + 1) / 2`` in bits (0 where the members agree on 0 or 1, 1 at p = 0.5).
      The step term grows with progress (sigmoid(1/S) .. sigmoid(1) = 0.73); a confident pixel weighs up to e times
      an uncertain one. Diff-UNet uses ``-p log p`` of the sigmoid output; spadfast takes the symmetric binary
      entropy (background and foreground confidence count alike) and normalises by the weight sum (Diff-UNet sums
      logits and thresholds at 0). Returns float32 ``[N,M,H,W]``, equal for the members of an image.

    The fused estimate of member k is ``sum_i w_i x0_{i,k} / sum_i w_i``; since the weights are shared by the members,
    the members' mean of fused estimates is the fused members' mean.
    """
    if fusion == "mean":
        return 1.0
    p = (x0.view(-1, members, *x0.shape[1:]).mean(dim=1) + 1) / 2
    entropy = -(torch.xlogy(p, p) + torch.xlogy(1 - p, 1 - p)) / math.log(2)
    step_term = 1.0 / (1.0 + math.exp(-(step + 1) / steps))  # a Python float: no host sync, constant in a graph
    return torch.exp(step_term * (1 - entropy)).repeat_interleave(members, dim=0)


def check_volume_images(images: object, channels: int | None = None) -> torch.Tensor:
    """A 3-D model's input: a finite floating tensor ``[B,C,D,H,W]``, B >= 1, ``C == channels`` when given; a
    one-line ValueError/TypeError naming ``images`` otherwise (a 2-D batch included). Returns it."""
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"`images` must be a torch.Tensor, got {type(images).__name__}")
    if images.dim() != 5 or images.shape[0] == 0:
        raise ValueError(f"`images` must have shape [B,C,D,H,W] with B >= 1 for a 3-D model (model_type unet3d or "
                         f"cached_unet3d), got {tuple(images.shape)}")
    if channels is not None and images.shape[1] != channels:
        raise ValueError(f"`images` must have {channels} channel(s) (config.image_channels), got shape "
                         f"{tuple(images.shape)}")
    if not images.is_floating_point():
        raise TypeError(f"`images` must be a floating tensor in [-1, 1], got {images.dtype}")
    if not bool(torch.isfinite(images).all()):
        raise ValueError("`images` must be finite (no NaN or inf)")
    return images


def prior_condition(prior: nn.Module, images: torch.Tensor, mask_channels: int) -> torch.Tensor:
    """The supervised prior's channels of ``images`` (float ``[N,C,H,W]``): ``2 sigmoid(logits) - 1``, float32
    ``[N,K,H,W]`` in [-1, 1], the logits of one pass of ``prior`` (``objective: supervised``) on ``cat[0, image]`` at
    t = 0. The diffusion model sees them after the image channels; the trainer and the sampler both call this."""
    n, _, H, W = images.shape
    empty = images.new_zeros(n, mask_channels, H, W)
    logits = prior(torch.cat([empty, images], dim=1), images.new_zeros(n))
    return torch.sigmoid(logits.float()) * 2 - 1


def image_noise_key(name: str) -> int:
    """A stable 31-bit key for an image name (CRC-32): its initial noise then depends on the name only."""
    return zlib.crc32(name.encode("utf-8")) & 0x7FFFFFFF


class _CudaGraphs:
    """Captures a loop function in a CUDA graph on the device of its inputs. Replaced by a fake in CPU tests."""

    def supports(self, x: torch.Tensor) -> bool:
        return x.is_cuda

    def capture(self, fn, static_inputs: tuple[torch.Tensor, ...]):
        """Warm ``fn(*static_inputs)`` up on a side stream, capture it; returns ``(replay, static_out)``."""
        device = static_inputs[0].device
        with torch.cuda.device(device):  # streams and the capture belong to the tensors' device, not the current
            side = torch.cuda.Stream(device=device)
            side.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(side):
                for _ in range(2):  # warm-up: Triton compilation, cuDNN autotuning, allocator
                    fn(*static_inputs)
            torch.cuda.current_stream(device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                static_out = fn(*static_inputs)

        def replay() -> None:
            with torch.cuda.device(device):
                graph.replay()

        return replay, static_out


class DDIMSampler:
    """DDIM sampler for a conditional mask denoiser ``model(cat[x_t, image(, cond)], t) -> prediction``.

    Args:
        model: the denoiser; it sees ``[N, M + C (+ M), H, W]`` and float timesteps ``[N]``. A model that also has
            ``encode(image) -> features`` and ``denoise(cat[x_t(, cond)], features, t)`` is called that way, with
            the features computed once per image.
        alphas_cumprod: float32 ``[T]`` training schedule.
        prediction_type: what the model predicts: ``"epsilon"``, ``"sample"`` or ``"v_prediction"``.
        perturb_mode: ``"condition"`` adds the previous step's x0 estimate as an input channel (zeros at step 0).
        self_condition: adds that channel too (self-conditioning, the config's ``self_condition``).
        steps, eta, spacing, clip_sample: DDIM settings (``clip_sample`` None disables clipping of x0; ``eta`` in
            [0, 1]).
        chunk: most rows (images x members) per forward; larger batches run in chunks.
        cuda_graph: capture and replay the loop on CUDA when ``eta == 0``.
        amp_dtype: autocast dtype for the model (None: full precision).
        channels_last: feed the model channels-last inputs.
        backend: ops backend for the DDIM update.
        graph_cache_size: most captured graphs kept (least recently used evicted).
        mask_channels: M, the mask channels the model denoises (num_classes - 1).
        step_fusion: ``"none"`` keeps the last sample; ``"mean"`` / ``"uncertainty"`` fuse the x0 estimates of
            every step (:func:`fusion_weight`). ``"uncertainty"`` needs all members of an image in one chunk, so its
            chunks hold whole images (at least ``ensemble`` rows, more than ``chunk`` when ``ensemble > chunk``).
        prior: the frozen supervised prior (config ``prior: supervised``): its channels
            (:func:`prior_condition`) are computed once per image, ``chunk`` images a pass, before the loop and
            appended to the image channels, so the model sees ``M + C + M (+ M)`` channels.
    """

    def __init__(
        self,
        model: nn.Module,
        alphas_cumprod: torch.Tensor,
        prediction_type: str = "epsilon",
        perturb_mode: str = "target",
        steps: int = 25,
        eta: float = 0.0,
        spacing: str = "trailing",
        clip_sample: float | None = 1.0,
        chunk: int = 64,
        cuda_graph: bool = True,
        amp_dtype: torch.dtype | None = None,
        channels_last: bool = False,
        backend: str = "auto",
        graph_cache_size: int = 4,
        mask_channels: int = 1,
        objective: str = "diffusion",
        self_condition: bool = False,
        step_fusion: str = "none",
        prior: nn.Module | None = None,
    ) -> None:
        self.model = model
        self.prior = prior
        self.self_condition = bool(self_condition)
        self.step_fusion = check_step_fusion(step_fusion)
        self.objective = objective
        self.alphas_cumprod = alphas_cumprod.float().cpu()
        self.prediction_type = prediction_type
        self.perturb_mode = perturb_mode
        self.eta = check_eta(eta)
        self.spacing = spacing
        self.clip_sample = clip_sample
        self.chunk = int(chunk)
        self.cuda_graph = cuda_graph
        self.amp_dtype = amp_dtype
        self.channels_last = channels_last
        self.backend = backend
        self.graph_cache_size = int(graph_cache_size)
        self.mask_channels = int(mask_channels)
        self._graphs: OrderedDict[tuple, tuple] = OrderedDict()
        self._graph_backend = _CudaGraphs()
        self._graph_failed_warned = False
        self._coeffs: dict[tuple, tuple] = {}
        self.steps = steps

    @classmethod
    def from_config(cls, config, model: nn.Module, alphas_cumprod: torch.Tensor,
                    prior: nn.Module | None = None) -> DDIMSampler:
        """The sampler a :class:`~spadfast.SPADConfig` describes (the one place that maps config keys to it);
        ``prior``: the supervised prior network of a ``prior: supervised`` config (required there)."""
        if (getattr(config, "prior", "none") != "none") != (prior is not None):
            raise ValueError(f"`prior` must be the prior network exactly when the config's `prior` is 'supervised' "
                             f"(config: {getattr(config, 'prior', 'none')!r}, module given: {prior is not None})")
        return cls(
            model, alphas_cumprod, prediction_type=config.prediction_type, perturb_mode=config.perturb_mode,
            steps=config.sample_steps, eta=config.eta, spacing=config.timestep_spacing,
            clip_sample=config.clip_sample, chunk=config.sample_chunk, cuda_graph=config.cuda_graph,
            amp_dtype=config.amp_dtype, channels_last=config.channels_last, backend=config.ops_backend,
            mask_channels=config.mask_channels, objective=config.objective,
            self_condition=getattr(config, "self_condition", False),
            step_fusion=getattr(config, "step_fusion", "none"), prior=prior,
        )

    def set_timesteps(self, steps: int, device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Precompute ``(t_model [S] float32, alpha_prod_t [S], alpha_prod_t_prev [S])`` on ``device`` (cached)."""
        key = (steps, str(device), self.spacing)
        if key not in self._coeffs:
            T = self.alphas_cumprod.numel()
            ts = ddim_timesteps(T, steps, self.spacing)
            a_t, a_prev = ddim_alphas(self.alphas_cumprod, ts)
            self._coeffs[key] = (ts.float().to(device), a_t.to(device), a_prev.to(device))
        return self._coeffs[key]

    def _model_device(self) -> torch.device:
        p = next(self.model.parameters(), None)
        return p.device if p is not None else torch.device("cpu")

    def _cached_encoder(self) -> bool:
        return callable(getattr(self.model, "encode", None)) and callable(getattr(self.model, "denoise", None))

    def _autocast(self, device: torch.device):
        """The model's autocast context on ``device`` (a no-op without ``amp_dtype``)."""
        if self.amp_dtype is None:
            return nullcontext()
        # cache_enabled=False: autocast's weight-cast cache must not outlive a CUDA-graph capture
        return torch.autocast(device.type, dtype=self.amp_dtype, cache_enabled=False)

    def _with_prior(self, images: torch.Tensor) -> torch.Tensor:
        """``images`` with the prior's channels appended (:func:`prior_condition`, ``chunk`` images a pass under
        autocast); ``images`` itself without a prior."""
        if self.prior is None:
            return images
        parts = []
        with self._autocast(images.device):
            for start in range(0, images.shape[0], self.chunk):
                parts.append(prior_condition(self.prior, images[start : start + self.chunk], self.mask_channels))
        out = torch.cat([images, torch.cat(parts).to(images.dtype)], dim=1)
        return out.contiguous(memory_format=torch.channels_last) if self.channels_last else out

    def _per_image_context(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """What the loop is conditioned on, one row per image: ``(images,)`` for a plain denoiser, else the image
        features of ``model.encode`` (one tensor per level), encoded ``chunk`` images at a time under autocast;
        with a prior, the images carry its channels (:meth:`_with_prior`)."""
        images = self._with_prior(images)
        if not self._cached_encoder():
            return (images,)
        parts = []
        with self._autocast(images.device):
            for start in range(0, images.shape[0], self.chunk):
                parts.append(self.model.encode(images[start : start + self.chunk]))
        return tuple(torch.cat(level) if len(level) > 1 else level[0] for level in zip(*parts))

    @staticmethod
    def _rows_context(per_image: tuple[torch.Tensor, ...], K: int, start: int, stop: int) -> tuple[torch.Tensor, ...]:
        """Rows ``start:stop`` of the per-member context (each image's row repeated K times, image-major), built
        from the images those rows belong to only."""
        first, last = start // K, (stop - 1) // K + 1
        lo, hi = start - first * K, stop - first * K
        return tuple(c[first:last].repeat_interleave(K, dim=0)[lo:hi] for c in per_image)

    def _loop(self, x: torch.Tensor, *context: torch.Tensor, steps: int, eta_seed: int | None = None,
              total_rows: int = 0, row0: int = 0, fusion: str = "none", members: int = 1,
              subsets: tuple[int, ...] = ()) -> torch.Tensor:
        """Run the S-step loop from ``x = x_T``; returns the final sample ``[N,M,H,W]`` (float32), or with
        ``fusion`` other than ``"none"`` the fused x0 estimate (accumulated on the device). No host sync.

        ``fusion="grid"`` (:meth:`DDIMSampler.sample_fusion_grid`; ``x`` holds whole images of ``members`` rows)
        returns every fusion of the one trajectory, concatenated along rows: the final sample ``[N]``, the
        ``"mean"`` fusion ``[N]``, then for each ``e`` in ``subsets`` the ``"uncertainty"`` fusion of each image's
        first ``e`` members ``[N / members * e]`` (weights from those members alone, as an ``e``-member call has).

        ``context`` is ``(images,)`` for a plain denoiser or the image features of a cached-encoder model. With
        ``eta > 0`` the step noise is keyed by ``eta_seed`` and offset by step, row and pixel: ``x`` holds rows
        ``row0 .. row0 + N`` of the call's ``total_rows`` (images x members), so chunks never share noise.
        """
        t_model, a_t, a_prev = self.set_timesteps(steps, x.device)
        n = x.shape[0]
        cond = torch.zeros_like(x) if self.perturb_mode == "condition" or self.self_condition else None
        cached = self._cached_encoder()
        autocast = self._autocast(x.device)
        fused = weights = None
        grid = fusion == "grid"
        sub_fused: list[torch.Tensor | None] = [None] * len(subsets)
        sub_weights: list[torch.Tensor | None] = [None] * len(subsets)
        for i in range(steps):
            with nvtx_range(f"ddim_step_{i}"):
                with autocast:
                    if cached:
                        inp = x if cond is None else torch.cat([x, cond], dim=1)
                        out = self.model.denoise(inp, list(context), t_model[i].expand(n))
                    else:
                        parts = [x, *context] if cond is None else [x, *context, cond]
                        out = self.model(torch.cat(parts, dim=1), t_model[i].expand(n))
                rows = x.shape[:2].numel()  # the ops take [rows,1,H,W]: class channels become rows
                plane = (rows, 1, -1, x.shape[-1])  # a volume's [D,H,W] as [D*H,W]: the update is elementwise
                x_next, x0 = ops.ddim_step(
                    x.reshape(plane), out.float().reshape(plane), a_t[i], a_prev[i],
                    self.eta, None, self.clip_sample, self.prediction_type, seed=eta_seed,
                    offset=(i * total_rows + row0) * x[0].numel(), validate=False, backend=self.backend,
                )
                x, x0 = x_next.view(x.shape), x0.view(x.shape)
                if cond is not None:
                    cond = x0
                if fusion != "none":
                    est = x0.clamp(-1, 1)
                    w = fusion_weight(est, i, steps, members, "mean" if grid else fusion)
                    fused = w * est if fused is None else fused + w * est
                    weights = w if weights is None else weights + w
                if grid:
                    for j, e in enumerate(subsets):
                        sub = est.view(-1, members, *est.shape[1:])[:, :e].reshape(-1, *est.shape[1:])
                        w = fusion_weight(sub, i, steps, e, "uncertainty")
                        sub_fused[j] = w * sub if sub_fused[j] is None else sub_fused[j] + w * sub
                        sub_weights[j] = w if sub_weights[j] is None else sub_weights[j] + w
        if grid:
            return torch.cat([x, fused / weights, *(f / w for f, w in zip(sub_fused, sub_weights))])
        return x if fused is None else fused / weights

    def _supervised_probs(self, per_image: tuple[torch.Tensor, ...], B: int, spatial: Sequence[int],
                          device: torch.device) -> torch.Tensor:
        """``objective="supervised"``: sigmoid of one forward pass per image with an empty mask input at t = 0;
        float32 ``[B,M,*spatial]`` (``spatial``: ``(H, W)``, or ``(D, H, W)`` for volumes)."""
        outs = []
        for start in range(0, B, self.chunk):
            stop = min(start + self.chunk, B)
            context = self._rows_context(per_image, 1, start, stop)
            empty = torch.zeros(stop - start, self.mask_channels, *spatial, device=device)
            t = torch.zeros(stop - start, device=device)
            with self._autocast(device):
                if self._cached_encoder():
                    out = self.model.denoise(empty, list(context), t)
                else:
                    out = self.model(torch.cat([empty, *context], dim=1), t)
                outs.append(out.float())
        return torch.sigmoid(torch.cat(outs))

    def _graph_key(self, x: torch.Tensor, context: tuple[torch.Tensor, ...], steps: int, fusion: str = "none",
                   members: int = 1, subsets: tuple[int, ...] = ()) -> tuple:
        return (fusion, members if fusion in ("uncertainty", "grid") else 0, subsets,
            tuple(x.shape), tuple((tuple(c.shape), c.dtype, c.is_contiguous(memory_format=torch.channels_last))
                                  for c in context),
            steps, x.device, id(self.model), self.prediction_type, self.perturb_mode, self.self_condition, self.eta,
            self.clip_sample,
            self.spacing, self.backend, self.amp_dtype, self.channels_last, tuple(self.alphas_cumprod.shape),
        )

    def _run(self, x: torch.Tensor, context: tuple[torch.Tensor, ...], steps: int, eta_seed: int | None = None,
             total_rows: int = 0, row0: int = 0, fusion: str = "none", members: int = 1,
             subsets: tuple[int, ...] = ()) -> torch.Tensor:
        """The loop on rows ``row0 .. row0 + len(x)`` of ``total_rows`` (see :meth:`_loop`): replayed from a cached
        CUDA graph when ``eta == 0`` (no step noise, so the graph does not depend on the rows), else eager."""
        use_graph = self.cuda_graph and self.eta == 0.0 and self._graph_backend.supports(x)
        if not use_graph:
            return self._loop(x, *context, steps=steps, eta_seed=eta_seed, total_rows=total_rows, row0=row0,
                              fusion=fusion, members=members, subsets=subsets)
        key = self._graph_key(x, context, steps, fusion, members, subsets)
        entry = self._graphs.get(key)
        if entry is None:
            static = (x.clone(), *(c.clone() for c in context))
            try:
                replay, static_out = self._graph_backend.capture(
                    lambda *a: self._loop(*a, steps=steps, fusion=fusion, members=members, subsets=subsets), static)
            except Exception as e:  # noqa: BLE001  (any capture failure: sample eagerly instead)
                if not self._graph_failed_warned:
                    warnings.warn(f"CUDA-graph capture of the sampling loop failed ({type(e).__name__}: {e}); "
                                  "sampling eagerly from now on", RuntimeWarning, stacklevel=3)
                    self._graph_failed_warned = True
                self.cuda_graph = False
                return self._loop(x, *context, steps=steps, eta_seed=eta_seed, total_rows=total_rows, row0=row0,
                                  fusion=fusion, members=members, subsets=subsets)
            # the model is kept alive by the entry, so id(model) in the key cannot be reused while it is cached
            entry = (replay, static, static_out, self.model)
            self._graphs[key] = entry
            while len(self._graphs) > max(1, self.graph_cache_size):
                self._graphs.popitem(last=False)
        self._graphs.move_to_end(key)
        replay, static, static_out, _ = entry
        for dst, src in zip(static, (x, *context)):
            dst.copy_(src)
        replay()
        return static_out.clone()

    def _initial_noise(
        self, B: int, K: int, spatial: Sequence[int], seed: int | None, keys: Sequence[int] | None
    ) -> torch.Tensor:
        """``x_T`` ``[B*K,M,*spatial]`` on the CPU: one draw for the batch, or per image from ``(seed, keys[b])``.

        Keyed draws give each member a row padded to a multiple of 16 values: torch's CPU ``randn`` transforms
        uniforms in blocks of 16 and redraws the last 16 of a length that is not a multiple of 16, so without the
        padding member k of a K-member draw would differ from member k of a larger one whenever ``M*H*W`` is not a
        multiple of 16 (sizes that are draw exactly what an unpadded draw does)."""
        M = self.mask_channels
        if keys is None:
            gen = torch.Generator().manual_seed(seed) if seed is not None else None
            return torch.randn((B * K, M, *spatial), generator=gen)
        base = 0 if seed is None else seed
        n = M * math.prod(spatial)
        row = -(-n // 16) * 16
        parts = [
            torch.randn((K, row), generator=torch.Generator().manual_seed((base * 1_000_003 + k) % 2**63))[:, :n]
            for k in keys
        ]
        return torch.cat(parts).reshape(B * K, M, *spatial)

    @torch.no_grad()
    def sample(
        self,
        images: torch.Tensor,
        steps: int | None = None,
        ensemble: int = 1,
        seed: int | None = 0,
        threshold: float = 0.5,
        return_members: bool = False,
        noise_keys: Sequence[int] | None = None,
        validate: bool = True,
        step_fusion: str | None = None,
    ) -> SampleResult:
        """Segment ``images`` (float ``[B,C,H,W]`` in [-1, 1]) with a K-member DDIM ensemble.

        ``seed`` fixes the initial noise (drawn on the CPU, so with ``eta == 0`` results do not depend on the chunk
        size or the device); ``None`` draws from torch's global generator. ``noise_keys`` (B ints >= 0, e.g.
        :func:`image_noise_key` of file names) draws each image's noise from ``(seed, key)`` alone, so an image
        gets the same mask whatever batch it is in or wherever it sits. With ``eta > 0`` the step noise is
        in-kernel Philox keyed by (step, row, pixel) on the Triton backend, so chunking does not change it either;
        the reference backend draws it per chunk (deterministic for a given seed and chunk size). ``validate=False``
        skips the image checks, for a caller that has run :func:`~spadfast.ops.checks.check_images` already.
        ``step_fusion`` (None: the sampler's own) fuses every step's x0 estimate (:func:`fusion_weight`).
        """
        fusion = check_step_fusion(self.step_fusion if step_fusion is None else step_fusion)
        members = self._sample_members(images, steps, ensemble, seed, noise_keys, validate, fusion, ())[0]
        return SampleResult.from_members(members, threshold, return_members)

    @torch.no_grad()
    def sample_fusion_grid(
        self,
        images: torch.Tensor,
        steps: int | None = None,
        ensemble: int = 1,
        subsets: Sequence[int] | None = None,
        seed: int | None = 0,
        noise_keys: Sequence[int] | None = None,
        validate: bool = True,
    ) -> dict[tuple[str, int], torch.Tensor]:
        """Every step fusion of one ``ensemble``-member trajectory, for ensembles of the first ``e`` members.

        Returns ``{(fusion, e): members}`` for each fusion in :data:`STEP_FUSIONS` and each ``e`` in ``subsets``
        (ints in ``1..ensemble``, default ``(ensemble,)``), ``members`` float32 ``[B,e,M,*spatial]`` in [0, 1]:
        what :meth:`sample` with ``ensemble=e, step_fusion=fusion, return_members=True`` and the same ``seed`` and
        ``noise_keys`` returns as members (``SampleResult.from_members`` gives its means, std and labels), from
        one sampling pass instead of ``3 * len(subsets)``: the trajectory does not depend on the fusion, an
        ensemble of ``e`` holds the first ``e`` members of a larger one (noise keyed per image), and the
        uncertainty fusion of ``e`` members is weighted by those members alone. Needs ``noise_keys`` (an unkeyed
        draw lays the batch's noise out image-major, so its first ``e`` members are not an ``e``-member draw),
        ``eta == 0`` (with step noise the rows of a larger call draw other noise) and the diffusion objective.
        """
        if noise_keys is None:
            raise ValueError("`noise_keys` is required by `sample_fusion_grid`: only keyed noise makes an ensemble of "
                             "e members the first e members of a larger one (image_noise_key of each image's name)")
        if self.objective == "supervised":
            raise ValueError("`sample_fusion_grid` needs a diffusion model: a supervised network has no steps to fuse")
        if self.eta != 0.0:
            raise ValueError(f"`sample_fusion_grid` needs eta == 0 (got {self.eta}): with step noise an ensemble of "
                             "e members is not the first e members of a larger one")
        ensemble = check_int(ensemble, "ensemble", 1)
        subsets = (ensemble,) if subsets is None else tuple(check_int(e, "subsets", 1, ensemble) for e in subsets)
        if not subsets or len(set(subsets)) != len(subsets):
            raise ValueError(f"`subsets` must list distinct member counts in 1..{ensemble}, got {list(subsets)}")
        last, mean, *fused = self._sample_members(images, steps, ensemble, seed, noise_keys, validate, "grid",
                                                  subsets)
        out = {}
        for j, e in enumerate(subsets):
            out["none", e] = last[:, :e]
            out["mean", e] = mean[:, :e]
            out["uncertainty", e] = fused[j]
        return out

    def _sample_members(
        self, images: torch.Tensor, steps: int | None, ensemble: int, seed: int | None,
        noise_keys: Sequence[int] | None, validate: bool, fusion: str, subsets: tuple[int, ...],
    ) -> list[torch.Tensor]:
        """Member probabilities float32 ``[B,K,M,*spatial]`` in [0, 1] (:meth:`sample`'s arguments); with
        ``fusion="grid"`` (:meth:`sample_fusion_grid`) the last sample's, the ``"mean"`` fusion's, and one
        ``[B,e,M,*spatial]`` uncertainty fusion per ``e`` in ``subsets``."""
        if validate:
            if isinstance(images, torch.Tensor) and images.dim() == 5:
                check_volume_images(images)
            else:
                check_images(images)
        seed = check_int(seed, "seed", 0, optional=True)
        steps = check_int(self.steps if steps is None else steps, "steps", 1, self.alphas_cumprod.numel())
        ensemble = check_int(ensemble, "ensemble", 1)
        B, _, *spatial = images.shape  # (H, W), or (D, H, W) for a 3-D model's volumes
        if noise_keys is not None:
            noise_keys = list(noise_keys)
            if len(noise_keys) != B or any(not is_int(k) or k < 0 for k in noise_keys):
                raise ValueError(f"`noise_keys` must be {B} ints >= 0 (one per image), got {noise_keys!r}")
        device = self._model_device()
        K = ensemble
        x_T = self._initial_noise(B, K, spatial, seed, noise_keys)
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        eta_seed = int(torch.randint(0, 2**31 - 1, (1,), generator=gen)) if self.eta > 0 else None
        imgs = images.to(device=device, dtype=torch.float32)
        if self.channels_last and imgs.dim() == 4:
            imgs = imgs.contiguous(memory_format=torch.channels_last)
        was_training = self.model.training
        self.model.eval()
        if self.prior is not None:
            self.prior.eval()
        try:
            per_image = self._per_image_context(imgs)
            if self.objective == "supervised":
                x = self._supervised_probs(per_image, B, spatial, device)
            else:
                # the row counts of each output of one chunk of n rows (n / K whole images in grid mode)
                def sizes(n: int) -> list[int]:
                    return [n, n, *(n // K * e for e in subsets)] if fusion == "grid" else [n]

                parts: list[list[torch.Tensor]] = [[] for _ in sizes(K)]
                # uncertainty fusion reads all members of an image at every step: chunks of whole images
                whole = fusion in ("uncertainty", "grid")
                chunk = max(K, self.chunk // K * K) if whole else self.chunk
                for start in range(0, B * K, chunk):
                    stop = min(start + chunk, B * K)
                    context = self._rows_context(per_image, K, start, stop)
                    out = self._run(x_T[start:stop].to(device), context, steps, eta_seed, B * K, start, fusion, K,
                                    subsets)
                    for part, piece in zip(parts, out.split(sizes(stop - start))):
                        part.append(piece)
                outs = [torch.cat(part) for part in parts]
        finally:
            self.model.train(was_training)
        M = self.mask_channels
        if self.objective == "supervised":  # one deterministic prediction: every member is it, the std is 0
            results = [x.view(B, 1, M, *spatial).expand(B, K, M, *spatial)]
        else:
            counts = [K, K, *subsets] if fusion == "grid" else [K]
            results = [((x.float().clamp(-1, 1) + 1) / 2).view(B, k, M, *spatial) for x, k in zip(outs, counts)]
        if not all(bool(torch.isfinite(r).all()) for r in results):
            raise FloatingPointError(
                "sampling produced non-finite values: the model weights or the images hold NaN/inf"
            )
        return results


def labels_from_probs(probs: torch.Tensor | np.ndarray, threshold: float = 0.5) -> torch.Tensor | np.ndarray:
    """The one rule from class probabilities to labels: argmax over ``[background, class 1, ..., class K]`` where
    background wins unless some class probability exceeds ``threshold``.

    Label = ``1 + argmax_k probs[k]`` where ``max_k probs[k] > threshold``, else 0 (ties go to the lower class). For
    ``K == 1`` this is exactly ``probs > threshold``, the binary rule.

    Args:
        probs: class probabilities ``[K,H,W]`` or ``[B,K,H,W]`` (the class axis is third from the end), or a 3-D
            model's ``[B,K,D,H,W]`` (class axis 1); torch tensor (any device) or numpy array, floating.
        threshold: a class must exceed this probability to beat the background.

    Returns:
        int64 labels in ``0..K``, ``[H,W]``, ``[B,H,W]`` or ``[B,D,H,W]``, of the input's kind (a torch tensor
        stays on its device).

    Example:
        >>> import torch
        >>> probs = torch.tensor([[[0.9, 0.2, 0.6]], [[0.05, 0.7, 0.6]]])  # K=2 classes, 1x3 image
        >>> labels_from_probs(probs)
        tensor([[1, 2, 1]])
    """
    if probs.ndim not in (3, 4, 5):  # type: ignore[union-attr]
        raise ValueError(  # type: ignore[union-attr]
            f"`probs` must be [K,H,W], [B,K,H,W] or [B,K,D,H,W], got shape {tuple(probs.shape)}")  # type: ignore
    c = 1 if probs.ndim == 5 else -3  # the class axis  # type: ignore[union-attr]
    if probs.shape[c] < 1:  # type: ignore[union-attr]
        raise ValueError(f"`probs` must hold at least one class, got shape {tuple(probs.shape)}")  # type: ignore
    if isinstance(probs, torch.Tensor):
        best_k = probs.argmax(dim=c)  # documented: the first maximal index
        best_p = probs.gather(c, best_k.unsqueeze(c)).squeeze(c)
        return torch.where(best_p > threshold, best_k + 1, torch.zeros_like(best_k)).to(torch.int64)
    if isinstance(probs, np.ndarray):
        best_k = probs.argmax(axis=c)
        best_p = np.take_along_axis(probs, np.expand_dims(best_k, c), axis=c).squeeze(c)
        return np.where(best_p > threshold, best_k + 1, 0).astype(np.int64)
    raise TypeError(f"`probs` must be a torch.Tensor or numpy.ndarray, got {type(probs).__name__}")
