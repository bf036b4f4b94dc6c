#!/usr/bin/env bash
# Bootstrap ./.venv if needed, then run the whole test suite on CPU (Triton kernels under TRITON_INTERPRET=1):
# every test, slow ones included (-m "" overrides pytest.ini's `-m "not slow"`), and the doctests, spread over the
# CPU cores.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/bootstrap.sh
export TRITON_INTERPRET=1
# One worker process per CPU core (pytest-xdist, each file's tests in one worker; every worker runs torch on one
# thread, tests/conftest.py). SPADFAST_TEST_WORKERS=0 runs everything in this process.
count=${SPADFAST_TEST_WORKERS:-auto}
workers=()
if [ "$count" != 0 ] && .venv/bin/python -c "import xdist" 2>/dev/null; then
  workers=(-n "$count" --dist loadfile)
fi
exec .venv/bin/python -m pytest tests spadfast kernels --doctest-modules -m "" -q ${workers[@]+"${workers[@]}"} "$@"
