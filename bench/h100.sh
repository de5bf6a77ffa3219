#!/usr/bin/env bash
# The H100 measurements that docs/benchmarks.md asks for, one part per call (the lent GPU machine runs
# a command for at most 10 minutes). Each part writes what it prints to $OUT/<part>.txt (OUT defaults
# to bench-results/) beside the machine and software versions, ready to be copied into the docs.
#
#   bash bench/h100.sh train_step       # issue #3: our step vs a bare loop, ViT-B/32 and B/16, eager and compiled
#   bash bench/h100.sh input_pipeline   # issue #4: our loader and evaluation cache vs the ceiling and PIL
#   bash bench/h100.sh soup_memory      # issue #5: 16 ViT-B/32-size ingredients, 10,000 held-out images
set -euo pipefail
cd "$(dirname "$0")/.."
part=${1:?"name a part: train_step, input_pipeline or soup_memory"}
out=${OUT:-bench-results}
mkdir -p "$out"

run() {  # the command, then what it printed, into the part's file
  echo "\$ $*" | tee -a "$out/$part.txt"
  "$@" 2>&1 | tee -a "$out/$part.txt"
}

{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
  python -c "import torch, open_clip; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'open_clip', open_clip.__version__)"
} > "$out/$part.txt"

case "$part" in
  train_step)
    run python bench/train_step.py --model ViT-B-32 --batch 256 --rounds 5 --steps 50
    run python bench/train_step.py --model ViT-B-32 --batch 256 --rounds 5 --steps 50 --compile
    run python bench/train_step.py --model ViT-B-16 --batch 128 --rounds 5 --steps 30
    run python bench/train_step.py --model ViT-B-16 --batch 128 --rounds 5 --steps 30 --compile
    ;;
  input_pipeline)
    run python bench/input_pipeline.py --images 10000 --model ViT-B-32 --size 224 --store-size 256 --batch 256 \
      --warmup 5 --steps 30 --eval-images 8192 --workers 16 --device cuda
    ;;
  soup_memory)
    run python bench/soup_memory.py --preset h100
    ;;
  *)
    echo "unknown part $part: use train_step, input_pipeline or soup_memory" >&2
    exit 2
    ;;
esac
