#!/usr/bin/env bash
# Set up a machine for meshcore: Debian packages, then every distribution (core and the
# three adapters) installed editable into .venv at the repository root. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

DEBIAN_PACKAGES=(clang llvm libbpf-dev libbpf1 bpftool linux-libc-dev make gcc iproute2 iptables iperf3 wrk curl procps)
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3

missing=()
for p in "${DEBIAN_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

stamp=.venv/.meshcore-setup
want=$(cat pyproject.toml src/adapters/*/pyproject.toml setup.py src/adapters/istio/setup.py bpf/Makefile $(find src/adapters/istio/proto -name "*.proto" | sort) 2>/dev/null | sha256sum | cut -c1-16)
make -s -C bpf
if [ -x .venv/bin/python ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q \
  -e ".[dev]" \
  -e src/adapters/istio \
  -e src/adapters/gateway \
  -e src/adapters/envoycrd
echo "$want" > "$stamp"
echo "setup: .venv ready ($(.venv/bin/meshcore --version))"
