#!/usr/bin/env bash
# The benchmark suite on a GPU machine, in one command and at most about 5 minutes:
#   bash bench/gpu.sh            (writes bench-gpu.json, or $OUT/bench-gpu.json)
# It prints the train-step table (float32 / float16 / bfloat16, XLA off / on) with the projected
# time of 2 COCO epochs (41,391 steps at batch 4, 256²) and the stylize latency at 256, 512 and
# 1024. TensorFlow must see the GPU: `pip install "tensorflow[and-cuda]"` where pip can reach
# PyPI, or carry a virtual environment that has it.
set -euo pipefail
cd "$(dirname "$0")/.."
python -c "import kstyle" 2>/dev/null || python -m pip install --quiet -e .
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python -c "import tensorflow as tf; print('GPUs:', tf.config.list_physical_devices('GPU'))"
timeout 300 python bench/bench.py --onednn default --quick \
  --sections train,stylize --sizes 256,512,1024 --precisions off,float16,bfloat16 --xla both \
  --paths model.predict,stylize_array,tf.function,tf.function+XLA \
  --json "${OUT:-.}/bench-gpu.json"
