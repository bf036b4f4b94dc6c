#!/usr/bin/env bash
# Create ./.venv with pinned dependencies (CPU torch wheel) and spadfast installed in editable mode.
# Idempotent: a second run only re-installs spadfast itself.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.spadfast-deps-v6
if [ ! -f "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  # torch pinned first so that nothing later resolves an unpinned (multi-GB CUDA) torch.
  .venv/bin/python -m pip install -q "torch==2.13.0" "triton==3.6.0" "numpy<2.4" opencv-python-headless \
    safetensors pyyaml tqdm scipy "nibabel>=5.2" matplotlib tensorboard pytest pytest-benchmark diffusers monai SimpleITK \
    onnx onnxscript onnxruntime
  .venv/bin/python -m pip install -q nvtx || echo "bootstrap: nvtx not installed (optional)"
  # Optional: the napari plugin's and the MONAI Label app's tests. Pinned, and never allowed to move torch, numpy or
  # triton (a constraints file); a failed install only makes those tests skip with a printed reason.
  pins=.venv/spadfast-pins.txt
  printf 'torch==2.13.0\ntriton==3.6.0\nnumpy==%s\n' "$(.venv/bin/python -c 'import numpy; print(numpy.__version__)')" > "$pins"
  .venv/bin/python -m pip install -q -c "$pins" "napari[pyqt5]==0.9.2" "npe2==0.10.0" "pytest-qt==4.5.0" \
    || echo "bootstrap: napari not installed (optional): tests/viewers/test_napari_plugin.py will skip"
  # napari's OpenGL canvas needs an X display (the tests run Qt's xcb platform on it): Xvfb (apt, root only,
  # skipped when present)
  if ! command -v Xvfb >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    (apt-get install -y -qq xvfb >/dev/null 2>&1 || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq xvfb >/dev/null 2>&1; }) \
      || echo "bootstrap: xvfb not installed (optional): the napari viewer tests will skip"
  fi
  # monailabel's full requirement list pulls SAM2, OpenSlide and MLflow and may replace torch: --no-deps, plus the
  # pinned packages its server imports (pyproject's [monailabel] extra)
  # (pydicom-seg declares numpy<2 but is only imported for DICOM SEG output: --no-deps too)
  .venv/bin/python -m pip install -q --no-deps "monailabel==0.8.5" "pydicom-seg==0.4.1" \
    && .venv/bin/python -m pip install -q -c "$pins" "itk==5.4.3" "google-auth==2.40.3" "girder-client==5.0.21" \
    "fastapi==0.115.12" "uvicorn==0.34.2" "python-multipart==0.0.20" "httpx==0.28.1" "pydantic-settings" "python-dotenv" \
    "schedule==1.2.2" "timeloop==1.0.2" "expiringdict==1.2.2" "expiring-dict==1.1.2" "cachetools==5.5.2" \
    "watchdog==6.0.0" "pydicom==2.4.4" "dicomweb-client==0.59.3" "passlib==1.7.4" "pyjwt==2.10.1" "bcrypt==4.3.0" \
    "pynrrd==1.1.3" "requests-toolbelt==1.0.0" "einops==0.8.1" "filelock" \
    || echo "bootstrap: monailabel not installed (optional): tests/viewers/test_monailabel.py will skip"
  touch "$stamp"
fi
# Optional, outside the stamp so that existing environments get it too: scripts/test.sh spreads the tests over the
# CPU cores with it (one process when it is missing).
.venv/bin/python -c "import xdist" 2>/dev/null || .venv/bin/python -m pip install -q "pytest-xdist==3.8.0" \
  || echo "bootstrap: pytest-xdist not installed (optional): scripts/test.sh runs the tests in one process"
.venv/bin/python -m pip install -q --no-deps -e .
