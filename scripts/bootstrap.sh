#!/usr/bin/env bash
# Create ./.venv with pinned dependencies (CPU torch wheel) and spadfast installed in editable mode.
# Idempotent: a second run only re-installs spadfast itself.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.spadfast-deps-v5
if [ ! -f "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  # torch pinned first so that nothing later resolves an unpinned (multi-GB CUDA) torch.
  .venv/bin/python -m pip install -q "torch==2.13.0" "triton==3.6.0" "numpy<2.4" opencv-python-headless \
    safetensors pyyaml tqdm scipy "nibabel>=5.2" matplotlib tensorboard pytest pytest-benchmark diffusers monai SimpleITK \
    onnx onnxscript onnxruntime
  .venv/bin/python -m pip install -q nvtx || echo "bootstrap: nvtx not installed (optional)"
  touch "$stamp"
fi
.venv/bin/python -m pip install -q --no-deps -e .
