#!/usr/bin/env bash
# Bootstrap ./.venv if needed, then run the main job: the synthetic-data demo (GPU if present, CPU otherwise).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/bootstrap.sh
exec .venv/bin/python -m spadfast demo --out "${1:-demo_out}"
