"""What this CPU supports natively, read from the system (never assumed from the architecture name).

``cpu_has_native_bf16()`` is True when the CPU has bf16 arithmetic instructions: on x86, ``avx512_bf16`` (AVX-512
BF16: Cooper Lake, Sapphire Rapids, AMD Zen 4 and later) or ``amx_bf16`` (AMX tiles: Sapphire Rapids and later); on
Arm, the ``bf16`` feature (Armv8.6 BF16: Graviton 3, Neoverse V1/N2, Apple M2 and later). Without them, PyTorch
still runs bf16 on the CPU but converts to float32 around every op, which is usually slower than float32.

Sources, first that answers: ``/proc/cpuinfo`` (Linux: the ``flags`` line on x86, ``Features`` on Arm), then
``sysctl -n hw.optional.arm.FEAT_BF16`` (macOS). Where neither answers, the answer is False (unknown is not native).
"""

from __future__ import annotations

import functools
import platform
import subprocess
from pathlib import Path

__all__ = ["cpu_flags", "cpu_has_native_bf16", "flags_have_native_bf16"]

X86_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
ARM_BF16_FLAGS = frozenset({"bf16"})


def cpu_flags(cpuinfo: str | None = None) -> frozenset[str]:
    """The feature flags of the first CPU listed in ``/proc/cpuinfo`` (``flags`` on x86, ``Features`` on Arm).

    ``cpuinfo``: the file's text (for tests); by default it is read, and an unreadable file gives no flags.
    """
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            return frozenset()
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() in ("flags", "features"):
            return frozenset(value.split())
    return frozenset()


def flags_have_native_bf16(flags: frozenset[str] | set[str], machine: str) -> bool:
    """True when ``flags`` (from :func:`cpu_flags`) name a native bf16 instruction set for ``machine``
    (``platform.machine()``: x86_64/AMD64/i686, aarch64/arm64)."""
    m = machine.lower()
    if m in ("x86_64", "amd64", "i386", "i686", "x86"):
        return bool(X86_BF16_FLAGS & set(flags))
    if m in ("aarch64", "arm64") or m.startswith("armv"):
        return bool(ARM_BF16_FLAGS & set(flags))
    return False


@functools.cache
def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (see the module docstring); cached for the process."""
    machine = platform.machine()
    flags = cpu_flags()
    if flags:
        return flags_have_native_bf16(flags, machine)
    if platform.system() == "Darwin":
        try:
            out = subprocess.run(["sysctl", "-n", "hw.optional.arm.FEAT_BF16"], capture_output=True, text=True,
                                 timeout=5)
        except (OSError, subprocess.SubprocessError):
            return False
        return out.returncode == 0 and out.stdout.strip() == "1"
    return False
