#!/usr/bin/env bash
# Everything a fresh machine needs: a virtual environment, leannet and its dependencies, Fashion-MNIST.
# Sourced by scripts/main.sh and scripts/test.sh; safe to run again (finished steps are skipped).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [ ! -x .venv/bin/python ]; then
  "${PYTHON:-python3}" -m venv .venv
fi
# shellcheck disable=SC1091
. .venv/bin/activate

stamp=.venv/.leannet-setup
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  if ! python -c "import torch, torchvision" 2>/dev/null; then
    # Pinned to the release whose wheels lie on the project's machines; install your own CUDA build
    # of torch into .venv first to keep it. CPU-only machines: TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
    # installs the CPU wheels (no CUDA libraries, about 3 GB less).
    python -m pip install --quiet ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} "torch==2.14.1" "torchvision==0.29.1"
  fi
  python -m pip install --quiet -e ".[dev]"
  echo "$want" > "$stamp"
fi

# Fashion-MNIST: Debian's package when we are root with apt, else leannet downloads it.
if [ ! -d /usr/share/datasets/fashion-mnist ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) >/dev/null 2>&1 \
    || echo "apt could not install dataset-fashion-mnist; leannet will try to download it"
fi
leannet data fetch fashion_mnist
