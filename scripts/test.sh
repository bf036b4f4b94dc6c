#!/usr/bin/env bash
# Bootstrap ./.venv if needed, then run the whole test suite on CPU (Triton kernels under TRITON_INTERPRET=1):
# every test, slow ones included (-m "" overrides pytest.ini's `-m "not slow"`), and the doctests.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/bootstrap.sh
export TRITON_INTERPRET=1
exec .venv/bin/python -m pytest tests spadfast kernels --doctest-modules -m "" -q "$@"
