"""DDIM sampling of segmentation masks with ensembles, chunking and CUDA-graph capture.

The loop denoises ``x_T ~ N(0, I)`` of shape ``[B*K, 1, H, W]`` (K ensemble members per image, sampled as one batch)
conditioned on the images. Every per-step coefficient is precomputed into device tensors by :meth:`set_timesteps`,
so a step never syncs with the host; on CUDA (``eta == 0``) the whole S-step loop is captured once per
(rows, size, steps) in a CUDA graph and replayed. Members are mapped to probabilities ``(x0 + 1) / 2`` clipped to
[0, 1]; the result is their mean, their standard deviation (uncertainty) and the mean thresholded.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import torch
from torch import nn

from . import ops
from .profiling import nvtx_range
from .schedule import ddim_alphas, ddim_timesteps


@dataclass
class SampleResult:
    """Ensemble output. ``probs``, ``std``: float32 ``[B,1,H,W]``; ``mask``: bool ``[B,1,H,W]``;
    ``members``: float32 ``[B,K,H,W]`` member probabilities (only when asked for)."""

    probs: torch.Tensor
    std: torch.Tensor
    mask: torch.Tensor
    members: torch.Tensor | None = None


class DDIMSampler:
    """DDIM sampler for a conditional mask denoiser ``model(cat[x_t, image(, cond)], t) -> prediction``.

    Args:
        model: the denoiser; it sees ``[N, 1 + C (+1), H, W]`` and float timesteps ``[N]``.
        alphas_cumprod: float32 ``[T]`` training schedule.
        prediction_type: what the model predicts: ``"epsilon"``, ``"sample"`` or ``"v_prediction"``.
        perturb_mode: ``"condition"`` adds the previous step's x0 estimate as an input channel (zeros at step 0).
        steps, eta, spacing, clip_sample: DDIM settings (``clip_sample`` None disables clipping of x0).
        chunk: most rows (images x members) per forward; larger batches run in chunks.
        cuda_graph: capture and replay the loop on CUDA when ``eta == 0``.
        amp_dtype: autocast dtype for the model (None: full precision).
        channels_last: feed the model channels-last inputs.
        backend: ops backend for the DDIM update.
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
    ) -> None:
        self.model = model
        self.alphas_cumprod = alphas_cumprod.float().cpu()
        self.prediction_type = prediction_type
        self.perturb_mode = perturb_mode
        self.eta = float(eta)
        self.spacing = spacing
        self.clip_sample = clip_sample
        self.chunk = int(chunk)
        self.cuda_graph = cuda_graph
        self.amp_dtype = amp_dtype
        self.channels_last = channels_last
        self.backend = backend
        self._eta_seed: int | None = None
        self._rows = 0  # rows (images x members) of the current call: eta-noise offsets never overlap across chunks
        self._graphs: dict[tuple, tuple] = {}
        self._coeffs: dict[tuple, tuple] = {}
        self.steps = steps

    def set_timesteps(self, steps: int, device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Precompute ``(t_model [S] float32, alpha_prod_t [S], alpha_prod_t_prev [S])`` on ``device`` (cached)."""
        key = (steps, str(device))
        if key not in self._coeffs:
            T = self.alphas_cumprod.numel()
            ts = ddim_timesteps(T, steps, self.spacing)
            a_t, a_prev = ddim_alphas(self.alphas_cumprod, ts)
            self._coeffs[key] = (ts.float().to(device), a_t.to(device), a_prev.to(device))
        return self._coeffs[key]

    def _model_device(self) -> torch.device:
        p = next(self.model.parameters(), None)
        return p.device if p is not None else torch.device("cpu")

    def _loop(self, x: torch.Tensor, images: torch.Tensor, steps: int, row0: int = 0) -> torch.Tensor:
        """Run the S-step loop from ``x = x_T``; returns the final sample ``[N,1,H,W]`` (float32). No host sync."""
        t_model, a_t, a_prev = self.set_timesteps(steps, x.device)
        n = x.shape[0]
        cond = torch.zeros_like(x) if self.perturb_mode == "condition" else None
        # cache_enabled=False: autocast's weight-cast cache must not outlive a CUDA-graph capture
        autocast = (
            torch.autocast(x.device.type, dtype=self.amp_dtype, cache_enabled=False)
            if self.amp_dtype is not None
            else nullcontext()
        )
        for i in range(steps):
            with nvtx_range(f"ddim_step_{i}"):
                parts = [x, images] if cond is None else [x, images, cond]
                with autocast:
                    out = self.model(torch.cat(parts, dim=1), t_model[i].expand(n))
                x, x0 = ops.ddim_step(
                    x, out.float(), a_t[i], a_prev[i], self.eta, None, self.clip_sample, self.prediction_type,
                    seed=self._eta_seed, offset=(i * self._rows + row0) * x[0].numel(), validate=False,
                    backend=self.backend,
                )
                if cond is not None:
                    cond = x0
        return x

    def _run(self, x: torch.Tensor, images: torch.Tensor, steps: int, row0: int = 0) -> torch.Tensor:
        use_graph = self.cuda_graph and x.is_cuda and self.eta == 0.0
        if not use_graph:
            return self._loop(x, images, steps, row0)
        key = (tuple(x.shape), tuple(images.shape), images.dtype, steps, x.device)
        if key not in self._graphs:
            self._graphs[key] = self._capture(x, images, steps)
        graph, static_x, static_img, static_out = self._graphs[key]
        static_x.copy_(x)
        static_img.copy_(images)
        graph.replay()
        return static_out.clone()

    def _capture(self, x: torch.Tensor, images: torch.Tensor, steps: int):
        static_x, static_img = x.clone(), images.clone()
        side = torch.cuda.Stream(device=x.device)
        side.wait_stream(torch.cuda.current_stream(x.device))
        with torch.cuda.stream(side):
            for _ in range(2):  # warm-up: Triton compilation, cuDNN autotuning, allocator
                self._loop(static_x, static_img, steps)
        torch.cuda.current_stream(x.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out = self._loop(static_x, static_img, steps)
        return graph, static_x, static_img, static_out

    @torch.no_grad()
    def sample(
        self,
        images: torch.Tensor,
        steps: int | None = None,
        ensemble: int = 1,
        seed: int | None = 0,
        threshold: float = 0.5,
        return_members: bool = False,
    ) -> SampleResult:
        """Segment ``images`` (float ``[B,C,H,W]`` in [-1, 1]) with a K-member DDIM ensemble.

        ``seed`` fixes the initial noise (drawn on the CPU, so with ``eta == 0`` results do not depend on the chunk
        size or the device); ``None`` draws from torch's global generator. With ``eta > 0`` the step noise is
        in-kernel Philox keyed by (step, row, pixel) on the Triton backend, so chunking does not change it either;
        the reference backend draws it per chunk (deterministic for a given seed and chunk size).
        """
        if not isinstance(images, torch.Tensor):
            raise TypeError(f"`images` must be a torch.Tensor, got {type(images).__name__}")
        if images.dim() != 4 or images.shape[0] == 0:
            raise ValueError(f"`images` must have shape [B,C,H,W] with B >= 1, got {tuple(images.shape)}")
        if not images.is_floating_point():
            raise TypeError(f"`images` must be a floating tensor in [-1, 1], got {images.dtype}")
        if not bool(torch.isfinite(images).all()):
            raise ValueError("`images` must be finite (no NaN or inf)")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
            raise TypeError(f"`seed` must be an int >= 0 or None, got {seed!r}")
        steps = self.steps if steps is None else steps
        T = self.alphas_cumprod.numel()
        if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= T:
            raise ValueError(f"`steps` must be an int in [1, {T}], got {steps!r}")
        if isinstance(ensemble, bool) or not isinstance(ensemble, int) or ensemble < 1:
            raise ValueError(f"`ensemble` must be an int >= 1, got {ensemble!r}")
        device = self._model_device()
        B, _, H, W = images.shape
        K = ensemble
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        x_T = torch.randn((B * K, 1, H, W), generator=gen)
        self._rows = B * K
        self._eta_seed = int(torch.randint(0, 2**31 - 1, (1,), generator=gen)) if self.eta > 0 else None
        imgs = images.to(device=device, dtype=torch.float32).repeat_interleave(K, dim=0)
        if self.channels_last:
            imgs = imgs.contiguous(memory_format=torch.channels_last)
        was_training = self.model.training
        self.model.eval()
        try:
            outs = []
            for start in range(0, B * K, self.chunk):
                xs = x_T[start : start + self.chunk].to(device)
                outs.append(self._run(xs, imgs[start : start + self.chunk], steps, start))
            x = torch.cat(outs)
        finally:
            self.model.train(was_training)
        members = ((x.float().clamp(-1, 1) + 1) / 2).view(B, K, H, W)
        probs = members.mean(dim=1, keepdim=True)
        std = members.std(dim=1, keepdim=True, unbiased=False)
        return SampleResult(probs, std, probs > threshold, members if return_members else None)
