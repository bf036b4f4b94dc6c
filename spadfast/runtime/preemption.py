"""Stop a training run cleanly on a scheduler's signal (SLURM preemption, ``scancel``, ``kill``).

While :class:`StopSignals` is active, the configured signals (``config.stop_signals``, default SIGTERM and SIGUSR1)
only set a flag: the trainer finishes the optimizer step it is in (under DDP: goes on to the next step that is a
multiple of ``log_every``, where every rank agrees to stop at the same step by one tiny all-reduce, so the hot path
has no per-step collective or host sync; a scheduler's grace period must outlast ``log_every`` steps), rank 0 writes
the checkpoint atomically, and ``spadfast train`` exits with
:data:`EXIT_STOPPED` and one line naming the step and the signal. A second signal while saving only sets the flag
again, and the checkpoint is written by rename, so it is never half-written. ``--resume`` then continues
bit-identically to a run that was never stopped.
"""

from __future__ import annotations

import signal
import threading

import torch

__all__ = ["EXIT_STOPPED", "StopSignals", "Stopped", "check_signal_names"]

EXIT_STOPPED = 3  # `spadfast train` stopped by a signal after writing its checkpoint (errors exit 2)


class Stopped(Exception):
    """A run inside a larger job (``spadfast ablate``, the study) was stopped by a signal after writing its checkpoint:
    the job ends here, without recording the run as finished; rerunning the same command resumes it."""


def check_signal_names(names: object) -> tuple[str, ...]:
    """``names`` as a tuple of signal names this platform has (``"SIGTERM"``, ``"SIGUSR1"``, ...); ValueError else."""
    if isinstance(names, str) or not all(isinstance(n, str) for n in names):  # type: ignore[union-attr]
        raise ValueError(f"`stop_signals` must be a list of signal names such as ['SIGTERM', 'SIGUSR1'], got {names!r}")
    names = tuple(names)  # type: ignore[arg-type]
    for n in names:
        if not n.startswith("SIG") or not hasattr(signal, n) or n in ("SIGKILL", "SIGSTOP"):
            raise ValueError(f"`stop_signals`: {n!r} is not a signal that can be caught here")
    return names


class StopSignals:
    """Context manager: the named signals set :attr:`received` instead of ending the process.

    Handlers are installed only in the main thread (Python delivers signals there); elsewhere the context is inert.
    The previous handlers come back on exit.
    """

    def __init__(self, names: tuple[str, ...]) -> None:
        self.names = check_signal_names(names)
        self.received: str | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for name in self.names:
                num = getattr(signal, name)
                self._previous[num] = signal.signal(num, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for num, handler in self._previous.items():
            signal.signal(num, handler)  # type: ignore[arg-type]
        self._previous.clear()

    def _handle(self, signum: int, frame) -> None:
        self.received = self.received or signal.Signals(signum).name

    def requested(self, distributed: bool, device: torch.device) -> str | None:
        """The signal that stops this step on every rank (None: go on). Under DDP, any rank's signal stops all: a
        collective and a host sync, so every rank must call it at the same steps (the trainer: at log steps)."""
        if not distributed:
            return self.received
        import torch.distributed as dist

        code = torch.tensor([self.names.index(self.received) + 1 if self.received else 0], device=device)
        dist.all_reduce(code, op=dist.ReduceOp.MAX)
        n = int(code.item())
        return self.names[n - 1] if n else None
