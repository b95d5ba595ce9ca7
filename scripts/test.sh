#!/usr/bin/env bash
# Run the whole suite: layering contracts, strict typing, then every test (root tests
# included: they need root and the real kernel, and fail loudly without them).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
# The tests drive a stand-in API server with the real kubectl (Debian's package).
if ! command -v kubectl >/dev/null; then
  echo "test: installing kubectl (Debian package)"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq kubectl >/dev/null \
    || { echo "test: kubectl is needed by tests/kubeapi and could not be installed" >&2; exit 1; }
fi
make -s -C bpf   # rebuild the BPF objects when their sources changed (incremental)
echo "== import-linter (layering)"; lint-imports --no-cache
echo "== mypy --strict"; mypy
echo "== pytest"; pytest "$@"
