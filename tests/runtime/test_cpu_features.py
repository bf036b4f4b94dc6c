"""cpu_has_native_bf16 reads the CPU's flags; it never guesses from the architecture."""

from __future__ import annotations

import platform
from pathlib import Path

from spadfast.runtime import cpu_features
from spadfast.runtime.cpu_features import cpu_flags, cpu_has_native_bf16, flags_have_native_bf16

ZEN4 = "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16 avx512_vnni\n"
ZEN3 = "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu sse2 avx2 fma\n"
SPR = "processor\t: 0\nflags\t\t: avx512f amx_tile amx_bf16 amx_int8\n"
GRAVITON3 = "processor\t: 0\nBogoMIPS\t: 2100.00\nFeatures\t: fp asimd sve bf16 i8mm\n"
GRAVITON2 = "processor\t: 0\nFeatures\t: fp asimd evtstrm aes crc32 atomics\n"


def test_flags_parsed_from_cpuinfo_text():
    assert "avx512_bf16" in cpu_flags(ZEN4)
    assert cpu_flags("model name : something\n") == frozenset()
    assert "bf16" in cpu_flags(GRAVITON3)


def test_native_bf16_decided_by_flags():
    assert flags_have_native_bf16(cpu_flags(ZEN4), "x86_64")
    assert flags_have_native_bf16(cpu_flags(SPR), "x86_64")
    assert not flags_have_native_bf16(cpu_flags(ZEN3), "x86_64")
    assert flags_have_native_bf16(cpu_flags(GRAVITON3), "aarch64")
    assert not flags_have_native_bf16(cpu_flags(GRAVITON2), "aarch64")
    # a flag of the other architecture does not count ("bf16" is Arm's name; x86 names it avx512_bf16)
    assert not flags_have_native_bf16(frozenset({"bf16"}), "x86_64")
    assert not flags_have_native_bf16(cpu_flags(ZEN4), "riscv64")


def test_this_machine_agrees_with_its_cpuinfo():
    cpu_has_native_bf16.cache_clear()
    got = cpu_has_native_bf16()
    assert isinstance(got, bool)
    info = Path("/proc/cpuinfo")
    if info.is_file():
        flags = cpu_flags(info.read_text(errors="replace"))
        if flags:
            assert got == flags_have_native_bf16(flags, platform.machine())


def test_unreadable_cpuinfo_is_not_native(monkeypatch):
    monkeypatch.setattr(cpu_features, "cpu_flags", lambda cpuinfo=None: frozenset())
    monkeypatch.setattr(cpu_features.platform, "system", lambda: "Linux")
    cpu_has_native_bf16.cache_clear()
    try:
        assert cpu_has_native_bf16() is False
    finally:
        cpu_has_native_bf16.cache_clear()
