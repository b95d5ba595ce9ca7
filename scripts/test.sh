#!/usr/bin/env bash
# Run the whole suite: layering contracts, strict typing, then every test (root tests
# included: they need root and the real kernel, and fail loudly without them).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
make -s -C bpf   # rebuild the BPF objects when their sources changed (incremental)
echo "== import-linter (layering)"; lint-imports --no-cache
echo "== mypy --strict"; mypy
echo "== pytest"; pytest "$@"
