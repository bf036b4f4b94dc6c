#!/usr/bin/env bash
# On a GPU machine with a CUDA build of torch and triton already installed: install spadfast without touching them,
# then run the CUDA kernel tests, `spadfast verify` and the benchmark suite, and collect everything in OUT
# (default gpu_results/) for benchmarks/RESULTS.md: device, date, commit, commands, raw JSON and markdown tables.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-gpu_results}
mkdir -p "$out"
python -m pip install -q --no-deps -e . || exit 1
{
  date -u
  git rev-parse --short HEAD 2>/dev/null || echo "commit: unknown (no git)"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
} > "$out/device.txt" 2>&1
python -m spadfast verify > "$out/verify.txt" 2>&1; echo "verify exit $?" >> "$out/verify.txt"
python -m pytest tests/kernels tests/diffusion tests/ops -m "" -q -rs > "$out/tests.txt" 2>&1; echo "tests exit $?" >> "$out/tests.txt"
python -m pytest benchmarks/ --benchmark-only -q --benchmark-json "$out/bench.json" > "$out/bench.txt" 2>&1
echo "benchmarks exit $?" >> "$out/bench.txt"
[ -f "$out/bench.json" ] && python benchmarks/to_markdown.py "$out/bench.json" > "$out/tables.md"
tail -n 3 "$out"/*.txt
