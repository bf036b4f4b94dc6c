"""Helpers shared by the spadfast benchmarks (imported by conftest.py and the test_bench_*.py files).

Kept out of conftest.py so benchmark modules can import them by name (``from benchutils import ...``).
"""

from __future__ import annotations

import os
import resource
from collections.abc import Callable

import pytest
import torch

from spadfast.ops.blobs import blob_masks

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
ON_CUDA = DEVICE.type == "cuda"
TRITON_INTERPRET = os.environ.get("TRITON_INTERPRET", "") not in ("", "0")

# Providers that need a CUDA device (the CPU suite skips them with a reason).
CUDA_PROVIDERS = {"triton", "triton-philox", "kornia", "cuda_graph", "compiled+kernels", "compiled+reference"}
TRITON_PROVIDERS = {"triton", "triton-philox", "compiled+kernels"}

# SPADFAST_BENCH_FULL=1 on a CPU machine: the default UNet and the full-size sampling/training cases (slow; minutes).
FULL_CPU = os.environ.get("SPADFAST_BENCH_FULL") == "1"

GPU_ONLY = pytest.mark.skipif(not ON_CUDA, reason="large case: GPU only (the CPU suite keeps to small shapes)")
FULL_ONLY = pytest.mark.skipif(not (ON_CUDA or FULL_CPU), reason="full-size case: GPU or SPADFAST_BENCH_FULL=1")
CPU_ONLY = pytest.mark.skipif(ON_CUDA, reason="CPU-sized case: the GPU suite runs the full-size one")

# Denoiser used by the sampling and training benchmarks (untrained: timing does not need a trained model).
# GPU: SPADConfig's default UNet. CPU: a tiny UNet, so the CPU suite finishes in minutes on 2 cores.
MODEL_CONFIG: dict[str, object] = (
    {}
    if ON_CUDA or FULL_CPU
    else {"base_channels": 8, "channel_mults": (1, 2), "num_res_blocks": 1, "attention_levels": ()}
)

# Op shapes (B, H, W): the CPU suite runs the small ones only, so it finishes in minutes on 2 cores.
OP_CASES = [
    pytest.param((1, 256, 256), id="1x256x256"),
    pytest.param((8, 256, 256), id="8x256x256"),
    pytest.param((64, 256, 256), id="64x256x256", marks=GPU_ONLY),
    pytest.param((1, 512, 512), id="1x512x512", marks=GPU_ONLY),
    pytest.param((64, 512, 512), id="64x512x512", marks=GPU_ONLY),
]

# A larger budget than dynamo's default: every op is compiled once per shape (dynamic=False).
for _name in ("recompile_limit", "cache_size_limit"):
    if hasattr(torch._dynamo.config, _name):
        setattr(torch._dynamo.config, _name, 64)


def sync(device: torch.device | str = DEVICE) -> None:
    """Wait for queued device work (CUDA); a no-op on CPU."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def skip_unless_available(provider: str, uses_triton: bool = False) -> None:
    """Skip the current test with a clear reason when ``provider`` cannot run here.

    ``uses_triton``: the provider reaches the Triton kernels through ``backend="auto"`` (training, sampling on CUDA).
    """
    if provider in CUDA_PROVIDERS and not ON_CUDA:
        pytest.skip(f"provider {provider!r} needs CUDA (this run: {device_name()})")
    # On CUDA, torch.compile (inductor) generates Triton code too.
    if provider in TRITON_PROVIDERS or uses_triton or (ON_CUDA and "compiled" in provider):
        if TRITON_INTERPRET:
            pytest.skip(f"TRITON_INTERPRET={os.environ['TRITON_INTERPRET']} is set: the interpreter is never timed")
        from spadfast.ops import triton_available

        if not triton_available():
            pytest.skip("provider needs Triton, which does not import here")


def device_name(device: torch.device | str = DEVICE) -> str:
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "")
    except OSError:
        pass
    cores, threads = os.cpu_count(), torch.get_num_threads()
    return f"cpu: {model or platform.processor() or 'unknown'} ({cores} logical cores, {threads} torch threads)"


def nbytes(*tensors) -> int:
    """Bytes of the given tensors / numpy arrays (None ignored), for the estimate 'inputs read + outputs written'."""
    total = 0
    for t in tensors:
        if t is None:
            continue
        if isinstance(t, torch.Tensor):
            total += t.numel() * t.element_size()
        else:  # numpy array
            total += int(t.nbytes)
    return total


def synthetic_images(mask: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Float32 images in [-1, 1] of a mask's shape: the mask's contrast plus Gaussian texture."""
    g = torch.Generator().manual_seed(seed + 1)
    texture = torch.randn(mask.shape, generator=g).to(mask.device)
    return (0.6 * (mask * 2 - 1) + 0.3 * texture).clamp(-1, 1)


def mask_batch(B: int, H: int, W: int, device: torch.device | str = DEVICE, seed: int = 0) -> torch.Tensor:
    """Float32 ``[B,1,H,W]`` 0/1 masks of :func:`spadfast.data.synthetic.blob_masks` (cells of 32 px, a third foreground)
    on ``device``."""
    return blob_masks((B, 1, H, W), seed=seed, cell=32, threshold=2 / 3).float().to(device)


def warmup(fn: Callable[[], object], device: torch.device | str = DEVICE, n: int = 3) -> None:
    """Call ``fn`` ``n`` times and sync: compilation, autotuning and allocator warm-up happen before any timing."""
    for _ in range(n):
        fn()
    sync(device)


def record_throughput(benchmark, bytes_moved: int | None, device: torch.device | str = DEVICE) -> None:
    """After the timed run: bytes moved and, on CUDA, achieved GB/s = bytes / mean time (when stats exist)."""
    if bytes_moved is not None:
        benchmark.extra_info["bytes_moved"] = int(bytes_moved)
    stats = getattr(benchmark, "stats", None)
    mean = getattr(getattr(stats, "stats", None), "mean", None)
    if mean:
        benchmark.extra_info["mean_s"] = mean
        if bytes_moved is not None and torch.device(device).type == "cuda":
            benchmark.extra_info["achieved_GBps"] = round(bytes_moved / mean / 1e9, 2)


def peak_memory_info(device: torch.device | str = DEVICE) -> dict[str, object]:
    """Peak memory after a run: CUDA allocator peak, or on CPU the process's max RSS (an approximation)."""
    device = torch.device(device)
    if device.type == "cuda":
        return {"peak_memory_bytes": torch.cuda.max_memory_allocated(device), "peak_memory_kind": "cuda_max_allocated"}
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return {
        "peak_memory_bytes": kib * 1024,
        "peak_memory_kind": "cpu_ru_maxrss (approximation: whole-process high-water mark since start)",
    }


def reset_peak_memory(device: torch.device | str = DEVICE) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


_COMPILED: dict[str, Callable] = {}


def compiled_reference(op: str) -> Callable:
    """``torch.compile(spadfast.ops.reference.<op>)``, one wrapper per op (static shapes: one graph per shape)."""
    if op not in _COMPILED:
        from spadfast.ops.op_table import OPS

        _COMPILED[op] = torch.compile(OPS[op].reference, dynamic=False)
    return _COMPILED[op]


def triton_launcher(op: str) -> Callable:
    """The Triton launcher of ``op`` from the op table (same signature as the reference)."""
    from spadfast.ops.op_table import OPS

    return OPS[op].launcher


def op_provider(op: str, provider: str, args: tuple, explicit: dict, philox: dict) -> Callable[[], object] | None:
    """The timed callable of a spadfast op for the shared providers, or None for a peer the caller handles.

    ``reference``, ``compiled`` and ``triton`` call ``op(*args, **explicit)`` (explicit noise: the same work for
    every provider); ``triton-philox`` calls the launcher with ``philox`` (seed/offset, noise drawn in-kernel).
    """
    if provider == "reference":
        from spadfast.ops.op_table import OPS

        fn, kwargs = OPS[op].reference, explicit
    elif provider == "compiled":
        fn, kwargs = compiled_reference(op), explicit
    elif provider == "triton":
        fn, kwargs = triton_launcher(op), explicit
    elif provider == "triton-philox":
        fn, kwargs = triton_launcher(op), philox
    else:
        return None
    return lambda: fn(*args, **kwargs, validate=False)


def run_timed(
    benchmark,
    fn: Callable[[], object],
    *,
    group: str,
    info: dict[str, object],
    bytes_moved: int | None,
    device: torch.device | str = DEVICE,
    warmup_calls: int = 3,
) -> None:
    """Warm ``fn`` up (compile, autotune), then time ``fn(); sync(device)`` and record extra_info."""
    benchmark.group = group
    benchmark.extra_info.update(info)
    warmup(fn, device, warmup_calls)

    def timed():
        out = fn()
        sync(device)
        return out

    benchmark(timed)
    record_throughput(benchmark, bytes_moved, device)
