"""NVTX ranges, active only when the optional ``nvtx`` package imports and ``SPADFAST_NVTX=1``."""

from __future__ import annotations

import contextlib
import os


def _make_range():
    if os.environ.get("SPADFAST_NVTX") != "1":
        return None
    try:
        import nvtx
    except ImportError:
        return None
    return nvtx.annotate


_ANNOTATE = _make_range()


def nvtx_range(name: str):
    """Context manager marking ``name`` in Nsight timelines; a no-op unless enabled."""
    if _ANNOTATE is None:
        return contextlib.nullcontext()
    return _ANNOTATE(name, domain="spadfast")


def enabled() -> bool:
    return _ANNOTATE is not None
