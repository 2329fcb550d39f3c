#!/usr/bin/env bash
# Paper-scale checks on one large GPU in under 10 minutes (issue 15), all jobs side by side on the one GPU:
#   - TSSL-BP CNN 32C5-P2-64C5-P2-1024, T 5, all 60,000 training images, 100 epochs (paper 92.69 ± 0.09 %)
#   - TSSL-BP MLP 400-400, T 5, all 60,000 training images, 100 epochs (paper 89.75 ± 0.03 %)
#   both with the test set evaluated every epoch (data.val_on_test), so the final and the best test epoch
#   (the paper's protocol) are reported side by side;
#   - the few-shot KD family suite (recipes/distill/suite_fewshot100.yaml) at 200 epochs, 5 seeds.
# On this machine, once (puts omegaconf's wheels and Fashion-MNIST's gzip files in git-ignored folders):
#   bash scripts/gpu_check.sh prepare
# On the GPU machine, from the repository root, carrying .whl and .gpu_data with the working tree:
#   bash scripts/gpu_check.sh run          # writes $OUT/gpu_check.tar.gz (results.json + metrics.csv per run),
#                                          # summary.md and gpu_check.json (commit it as results/spiking/gpu_check.json)
#   SMOKE=1 bash scripts/gpu_check.sh run  # the same commands at a few batches: a rehearsal on a CPU (without the
#                                          # CNN, whose 10,000-image test pass alone takes minutes on one core)
# The GPU image holds torch, lightning, torchmetrics, timm and matplotlib; only omegaconf travels as wheels.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

prepare() {
  mkdir -p .whl .gpu_data
  python3 -m pip download --quiet --no-deps --only-binary=:all: -d .whl "omegaconf==2.3.0"
  python3 -m pip wheel --quiet --no-deps -w .whl "antlr4-python3-runtime==4.9.3"  # an sdist on PyPI: built here
  cp /usr/share/datasets/fashion-mnist/*.gz .gpu_data/
  ls -la .whl .gpu_data
}

run() {
  local out=${OUT:-runs/gpu_check} limit=${LIMIT_S:-540} cnn=100 mlp=100 kd=200 extra=()
  if [ -n "${SMOKE:-}" ]; then
    mlp=1 kd=2 limit=900
    extra=(trainer.limit_train_batches=3)
  fi
  mkdir -p "$out" /tmp/site
  if ! python3 -c "import omegaconf" 2>/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*
  fi
  export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1
  export LEANNET_DATA=${LEANNET_DATA:-/tmp/leannet_data}
  local raw="$LEANNET_DATA/FashionMNIST/raw"
  mkdir -p "$raw"
  for f in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
    [ -f "$raw/$f" ] || gunzip -c ".gpu_data/$f.gz" > "$raw/$f"
  done
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
  local cli="python3 -m leannet.cli" paper="data.val_size=0 data.val_on_test=true out_dir=runs/gpu_check"
  if [ -z "${SMOKE:-}" ]; then
    # shellcheck disable=SC2086
    timeout "$limit" $cli train recipes/spiking/fashion_mnist_cnn.yaml $paper name=cnn_tssl \
      trainer.max_epochs=$cnn > "$out/cnn_tssl.log" 2>&1 &
  fi
  # shellcheck disable=SC2086
  timeout "$limit" $cli train recipes/spiking/fashion_mnist_mlp.yaml $paper name=mlp_tssl \
    trainer.max_epochs=$mlp "${extra[@]}" > "$out/mlp_tssl.log" 2>&1 &
  local groups=("0 3" "1 4" "2")
  if [ -n "${SMOKE:-}" ]; then groups=("0"); fi
  for seeds in "${groups[@]}"; do
    # shellcheck disable=SC2086
    timeout "$limit" $cli suite recipes/distill/suite_fewshot100.yaml trainer.max_epochs=$kd "${extra[@]}" \
      --seeds $seeds > "$out/kd_seeds_${seeds// /_}.log" 2>&1 &
  done
  local failed=0
  for job in $(jobs -p); do wait "$job" || failed=$((failed + 1)); done
  echo "$failed jobs stopped early or failed (timeout ${limit}s: their metrics.csv still has every finished epoch)"
  tar -czf "$out/gpu_check.tar.gz" "$out"/*.log \
    $(find runs/gpu_check runs/distill_fewshot100 -name results.json -o -name metrics.csv -o -name config.yaml 2>/dev/null)
  python3 scripts/gpu_check_summary.py runs/gpu_check runs/distill_fewshot100 --json "$out/gpu_check.json" \
    | tee "$out/summary.md"
}

case "${1:-}" in
  prepare) prepare ;;
  run) run ;;
  *) echo "usage: bash scripts/gpu_check.sh prepare|run (see the comments at its top)" >&2; exit 2 ;;
esac
