#!/usr/bin/env bash
# The checks that need a CUDA GPU, in one short script (a GPU session has about 10 minutes of device time):
#   1. the CUDA paths of the augmentation and loss tests;
#   2. the CUDA section of the throughput benchmark (ResNet-18 / ViT-S, bf16, channels_last; monitor overhead);
#   3. the held-out healthy runs of the seed plan (conf/monitor/_calibration.yaml), trained on the GPU, into
#      their own record file (docs/data/ holds the CPU's), and the detection page made from them;
#   4. where a monitor check spends its time on the GPU (scripts/profile_monitor.py).
# Each step writes into ${OUT:-/tmp/gpu_out} as it finishes, so a timeout keeps what was done.
set -uo pipefail
OUT=${OUT:-/tmp/gpu_out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
nvidia-smi -L | tee "$OUT/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())" | tee -a "$OUT/gpu.txt"
python3 -m pytest -q -rs -p no:cacheprovider tests/test_augment.py tests/test_losses.py 2>&1 | tail -8 | tee "$OUT/pytest_cuda.txt"
cp docs/benchmarks.md "$OUT/benchmarks.md"
python3 scripts/bench_throughput.py --out "$OUT/benchmarks.md" 2>&1 | grep --line-buffered -v Warning | tee "$OUT/bench.txt"
python3 scripts/fault_bench.py --train --held-out --no-faults --workers 8 --threads 2 \
  --records "$OUT/detection_gpu.json.gz" --page "$OUT/detection.md" \
  2>&1 | grep --line-buffered -v Warning > "$OUT/fault_bench.txt"; tail -30 "$OUT/fault_bench.txt"
python3 scripts/profile_monitor.py simclr byol vicreg mae --gpu --table 2>&1 | grep --line-buffered -v Warning \
  > "$OUT/profile.txt"; head -60 "$OUT/profile.txt"
# 8 files at most come back from $OUT: gpu, pytest_cuda, benchmarks, bench, detection_gpu, detection, fault_bench, profile
