#!/usr/bin/env bash
# The checks that need a CUDA GPU, in one short script: CUDA paths of the augmentation tests, a short
# GPU training run (bf16 autocast, channels_last) whose kNN must beat its random init, and the CUDA
# section of the throughput benchmark. Writes its logs and docs/benchmarks.md into ${OUT:-/tmp/gpu_out}.
set -uo pipefail
OUT=${OUT:-/tmp/gpu_out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
nvidia-smi -L | tee "$OUT/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())" | tee -a "$OUT/gpu.txt"
python3 -m pytest -q tests/test_augment.py tests/test_losses.py 2>&1 | tail -5 | tee "$OUT/pytest_cuda.txt"
python3 -m autofix run conf=simclr data=shapes model=resnet18 trainer=gpu trainer.max_steps=300 \
  trainer.batch_size=512 optimizer.warmup_steps=30 tracking.enabled=false trainer.progress=false \
  hydra.run.dir=/tmp/gpu_run 2>&1 | tail -25 | tee "$OUT/train_resnet18_shapes.txt"
python3 scripts/bench_throughput.py --out docs/benchmarks.md 2>&1 | tee "$OUT/bench.txt"
cp docs/benchmarks.md "$OUT/benchmarks.md"
