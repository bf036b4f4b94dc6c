#!/usr/bin/env bash
# Bootstrap ./.venv if needed, then run the test suite on CPU (Triton kernels under TRITON_INTERPRET=1).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/bootstrap.sh
export TRITON_INTERPRET=1
exec .venv/bin/python -m pytest tests spadfast kernels --doctest-modules -q "$@"
