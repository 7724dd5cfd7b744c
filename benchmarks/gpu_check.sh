#!/usr/bin/env bash
# One prepared device check: throughput.py at GPU-sized batches for the small CNN and ResNet-18
# (CIFAR-shaped 32x32x3 inputs for ResNet-18), JAX ISNN vs plain step vs the PyTorch reference.
#
#   bash benchmarks/gpu_check.sh                  # on a machine with one GPU (about 8 minutes)
#   DRY_RUN=1 bash benchmarks/gpu_check.sh        # the CPU path with tiny sizes (a smoke test)
#   MODELS_BATCHES="cnn:1024 resnet18:256" REPEATS=3 STEPS=5 bash benchmarks/gpu_check.sh  # shorter
#
# Writes $OUT/throughput_gpu.json (OUT defaults to benchmarks/results) and the log next to it.
# Needs jax with CUDA (`pip install -e .[cuda,bench]`; torch 2.13.0 with CUDA for the reference);
# without a CUDA torch the PyTorch columns are skipped and the JAX columns are still measured.
set -euo pipefail

cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-.venv/bin/python}"
[ -x "$PYTHON" ] || PYTHON=python3
OUT="${OUT:-benchmarks/results}"
mkdir -p "$OUT"
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD"

if [ "${DRY_RUN:-0}" = "1" ]; then
  export JAX_PLATFORMS=cpu
  MODELS_BATCHES=("cnn:4" "resnet18:2")
  REPEATS=2
  STEPS=1
  TORCH_DEVICE=cpu
  NAME=throughput_dry_run.json
else
  # GPU-sized batches that fit an 80 GB card: ResNet-18 at 256 clean images builds 5 views,
  # 1,280 images through the network per step. Three runs fit one 10-minute device call.
  read -ra MODELS_BATCHES <<< "${MODELS_BATCHES:-cnn:1024 cnn:4096 resnet18:256}"
  REPEATS="${REPEATS:-5}"
  STEPS="${STEPS:-10}"
  TORCH_DEVICE=cuda
  NAME=throughput_gpu.json
  "$PYTHON" - <<'EOF'
import jax
devices = jax.devices()
print("jax", jax.__version__, "devices:", devices)
if devices[0].platform != "gpu":
    raise SystemExit("gpu_check.sh: JAX sees no GPU; install jax[cuda12] or run with DRY_RUN=1")
EOF
  nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv || true
fi

TORCH_FORMATS=channels_last,contiguous
if ! "$PYTHON" -c "import torch, sys; sys.exit(0 if '$TORCH_DEVICE' == 'cpu' or torch.cuda.is_available() else 1)" 2>/dev/null; then
  echo "gpu_check.sh: no usable torch for device $TORCH_DEVICE; measuring JAX only"
  TORCH_FORMATS=""
fi

RESULTS=()
for pair in "${MODELS_BATCHES[@]}"; do
  model="${pair%%:*}"
  batch="${pair##*:}"
  file="$OUT/${NAME%.json}_${model}_${batch}.json"
  echo "=== $model batch $batch"
  "$PYTHON" benchmarks/throughput.py --models "$model" --batches "$batch" --repeats "$REPEATS" \
    --steps "$STEPS" --torch_formats "$TORCH_FORMATS" --torch_device "$TORCH_DEVICE" --out "$file" \
    2>&1 | tee -a "$OUT/${NAME%.json}.log"
  RESULTS+=("$file")
done

# One JSON with every (model, batch) run.
"$PYTHON" - "$OUT/$NAME" "${RESULTS[@]}" <<'EOF'
import json, sys
out, parts = sys.argv[1], sys.argv[2:]
records = [json.load(open(p)) for p in parts]
json.dump({"command": "bash benchmarks/gpu_check.sh", "runs": records}, open(out, "w"), indent=2)
print("wrote", out)
EOF
