"""Installation layout: the wheel ships the Triton kernels as spadfast.kernels; a bare source checkout finds them."""

import os
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from spadfast.ops.op_table import OPS

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow  # builds a wheel, runs subprocesses


def test_wheel_contains_kernels_and_console_script(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (wheel,) = tmp_path.glob("spadfast-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for module in [spec.kernel_module for spec in OPS.values()] + ["utils", "aot"]:
        assert f"spadfast/kernels/{module}.py" in names
    assert not any(n.startswith("kernels/") for n in names)  # never a top-level `kernels` package
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "spadfast = spadfast.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_source_checkout_without_install_finds_kernels(tmp_path):
    # -S skips site-packages' .pth files (the editable install's finder); torch comes in through PYTHONPATH.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *site.getsitepackages()]),
           "TRITON_INTERPRET": "1"}
    code = (
        "import torch, spadfast\n"
        "from spadfast import ops\n"
        "m = torch.zeros(9, 9); m[2:7, 3:8] = 1\n"
        "assert spadfast.kernels.__file__.endswith('kernels/__init__.py')\n"
        "assert torch.equal(ops.canny(m, backend='triton'), ops.canny(m, backend='reference'))\n"
    )
    proc = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_the_wheel_alone_installs_and_trains(tmp_path):
    """pyproject.toml's wheel, installed into a fresh target folder (not the checkout, not the editable install),
    imports from there and trains a step through its console entry point's module."""
    import json

    from .helpers import tiny_config

    wheels = tmp_path / "wheels"
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(ROOT)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (wheel,) = wheels.glob("spadfast-*.whl")
    target = tmp_path / "site"
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target),
                           str(wheel)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    cfg = tmp_path / "tiny.json"
    cfg.write_text(json.dumps(tiny_config(train_steps=1).to_dict()))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(target), *site.getsitepackages()])}
    code = ("import spadfast, sys; assert spadfast.__file__.startswith(sys.argv[1]), spadfast.__file__; "
            "from spadfast.cli import main; raise SystemExit(main(['train', '--out', sys.argv[2], '--config', "
            "sys.argv[3]]))")
    proc = subprocess.run([sys.executable, "-S", "-c", code, str(target), str(tmp_path / "run"), str(cfg)],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "run" / "checkpoint.safetensors").is_file()
