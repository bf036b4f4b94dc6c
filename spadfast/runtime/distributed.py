"""torchrun / DDP helpers: device resolution, process-group set-up from the environment, rank queries, rank-0 guards."""

from __future__ import annotations

import os
import warnings

import torch
import torch.distributed as dist


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    return rank() == 0


def init_from_env(device: torch.device) -> bool:
    """Join the process group torchrun describes (``WORLD_SIZE`` > 1); nccl on CUDA, gloo on CPU.

    Returns True when running distributed. A group someone else initialised is reused as is.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return dist.is_available() and dist.is_initialized()
    if device.type == "cuda":
        torch.cuda.set_device(device)  # NCCL communicators bind to the current device: one GPU per rank
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return True


def env_rank() -> int:
    """This process's global rank as torchrun sets it (``RANK``; 0 outside torchrun), before any process group."""
    return int(os.environ.get("RANK", "0"))


def env_world_size() -> int:
    """The number of processes torchrun started (``WORLD_SIZE``; 1 outside torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def sum_over_ranks(value: int) -> int:
    """``value`` summed over every rank of the process group (itself without one)."""
    if not (dist.is_available() and dist.is_initialized()):
        return value
    on_gpu = dist.get_backend() == "nccl"
    t = torch.tensor([value], dtype=torch.int64, device=torch.cuda.current_device() if on_gpu else "cpu")
    dist.all_reduce(t)
    return int(t.item())


def gather(value: object) -> list:
    """``value`` from every rank, in rank order (``[value]`` without a process group); picklable objects only."""
    if not (dist.is_available() and dist.is_initialized()):
        return [value]
    out: list = [None] * dist.get_world_size()
    dist.all_gather_object(out, value)
    return out


def gather_or_raise(work):
    """Run ``work()`` on this rank and return every rank's result in rank order (``[work()]`` without a process
    group). When ``work`` raises ValueError, TypeError or OSError on any rank, every rank raises: its own error, or
    else a ValueError with the first failing rank's message, so no rank waits forever on a peer that gave up."""
    try:
        value, error = work(), None
    except (ValueError, TypeError, OSError) as e:
        value, error = None, e
    parts = gather((value, None if error is None else f"rank {rank()}: {error}"))
    if error is not None:
        raise error
    failed = [message for _, message in parts if message is not None]
    if failed:
        raise ValueError(failed[0])
    return [v for v, _ in parts]


def shard_of(names: list[str], shard: tuple[int, int]) -> list[str]:
    """Process ``shard = (rank, world)``'s share of ``names``: every ``world``-th from ``rank`` (one process: all)."""
    rank, world = shard
    if not (isinstance(world, int) and world >= 1 and isinstance(rank, int) and 0 <= rank < world):
        raise ValueError(f"`shard` must be (rank, world) with 0 <= rank < world, got {shard!r}")
    return names[rank::world]


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def shutdown(wait: bool = True) -> None:
    """Leave the process group: every rank waits for the others (``wait``), then tears it down. After an error on
    one rank, pass ``wait=False``: the others may never reach the barrier.

    Left to interpreter shutdown (or torn down while a peer is still talking), gloo's worker threads can be destroyed
    while joinable and the rank aborts ("terminate called without an active exception") after its work is done.
    """
    if dist.is_available() and dist.is_initialized():
        if wait:
            dist.barrier()
        dist.destroy_process_group()


def exit_process(code: int) -> None:
    """End a torchrun worker now, after :func:`shutdown`: flush stdio and skip the interpreter's teardown.

    Even after the process group is destroyed, tearing down torch's C++ state at interpreter exit sometimes aborts
    a rank ("terminate called without an active exception", SIGABRT/SIGSEGV after all work is done; seen about once
    in 15 two-rank CPU runs), and torchrun then reports the whole job as failed. Every file spadfast writes is
    closed and atomically renamed before this point.
    """
    import sys

    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def resolve_device(name: str) -> torch.device:
    """``"auto"``: this rank's CUDA device when available, else CPU. Under torchrun each rank uses cuda:LOCAL_RANK.
    ``"mps"`` (Apple GPUs) is taken only when asked for: the reference ops run there (no Triton, no CUDA graphs)."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ValueError(f"`device` is {name!r} but this machine has no usable Apple GPU (torch.backends.mps is not "
                         "available: macOS 12.3+ on Apple silicon with a torch build that has MPS)")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"`device` is {name!r} but CUDA is not available")
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if device.index is not None and world > 1 and device.index != local_rank():
            warnings.warn(f"`device` {name!r} under torchrun: using cuda:{local_rank()} for this rank "
                          "(one GPU per process)", stacklevel=3)
            device = torch.device("cuda", local_rank())
        if device.index is None:
            device = torch.device("cuda", local_rank())
        if device.index >= torch.cuda.device_count():
            raise ValueError(f"`device` {str(device)!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device
