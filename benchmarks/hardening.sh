#!/usr/bin/env bash
# The hardening table of docs/security.md: trains every protection variant of Fashion-MNIST
# (plus the unprotected baseline), attacks each with `python -m isnn_jax.attack --attacks all`,
# then prints the table (benchmarks/hardening_table.py) and writes it as JSON.
#
#   bash benchmarks/hardening.sh                  # one variant after another (2 CPU cores: hours)
#   PARALLEL=1 bash benchmarks/hardening.sh       # all at once (one GPU: minutes)
#   VARIANTS="default shuffle" bash benchmarks/hardening.sh
#   DRY_RUN=1 bash benchmarks/hardening.sh        # tiny digits models, quick budgets (a smoke test)
#
# Env: RUNS (workdirs and licences, default runs/hardening), OUT (reports, default
# benchmarks/results/hardening), SOURCE_DIR (Fashion-MNIST IDX files), DATA_DIR (TFDS data dir).
# A rerun resumes: trained workdirs are reused, existing licences are not reissued.
set -uo pipefail

cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-.venv/bin/python}"
[ -x "$PYTHON" ] || PYTHON=python3
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD"
RUNS="${RUNS:-runs/hardening}"
OUT="${OUT:-benchmarks/results/hardening}"
VARIANTS="${VARIANTS:-default shuffle adversarial shuffle_adversarial amplitude}"
mkdir -p "$RUNS/logs" "$OUT"

BASE=(--config configs/fashion_mnist.py)
ATTACK_ARGS=()
if [ "${DRY_RUN:-0}" = "1" ]; then
  BASE=(--config tests/tiny_config.py --config.train.epochs=2 --config.train.batch_size=128)
  ATTACK_ARGS=(--preset quick)
fi
[ -n "${SOURCE_DIR:-}" ] && BASE+=("--config.data.source_dir=$SOURCE_DIR")
[ -n "${DATA_DIR:-}" ] && BASE+=("--config.data.data_dir=$DATA_DIR")

# The overrides that make each variant (docs/security.md names the same commands).
overrides() {
  case "$1" in
    default) ;;
    shuffle) echo "--config.licence.kind=shuffle_additive" ;;
    adversarial) echo "--config.hardening.unlock_perturbations=2 --config.hardening.estimate_min=8 --config.hardening.estimate_max=64" ;;
    shuffle_adversarial) echo "--config.licence.kind=shuffle_additive --config.hardening.unlock_perturbations=2 --config.hardening.estimate_min=8 --config.hardening.estimate_max=64" ;;
    amplitude) echo "--config.licence.epsilon=0.1" ;;
    shuffle7) echo "--config.licence.kind=shuffle_additive --config.licence.block_size=7" ;;
    *) echo "unknown variant $1 (choose from default shuffle shuffle7 adversarial shuffle_adversarial amplitude)" >&2; return 2 ;;
  esac
}

train() {  # train VARIANT: the protected model (issuing its licence on the first run)
  local variant="$1" licence="$RUNS/$1.licence.json" extra
  extra=$(overrides "$variant") || return 2
  local flag=--issue_licence
  [ -f "$licence" ] && flag=--licence
  # shellcheck disable=SC2086  # the overrides are separate words
  "$PYTHON" -m isnn_jax.train "${BASE[@]}" $extra --workdir "$RUNS/$variant" "$flag" "$licence" \
    > "$RUNS/logs/train_$variant.log" 2>&1
}

attack() {  # attack VARIANT: every attack, reports under $OUT/VARIANT
  local variant="$1"
  "$PYTHON" -m isnn_jax.attack --workdir "$RUNS/$variant" --licence "$RUNS/$variant.licence.json" \
    --attacks all --out "$OUT/$variant" --baseline_workdir "$RUNS/baseline" "${ATTACK_ARGS[@]}" \
    > "$RUNS/logs/attack_$variant.log" 2>&1
}

run_phase() {  # run_phase FUNCTION NAME...: each NAME through FUNCTION, in parallel or in turn
  local fn="$1" pids=() names=() status=0
  shift
  for name in "$@"; do
    if [ "${PARALLEL:-0}" = "1" ]; then
      "$fn" "$name" & pids+=($!); names+=("$name")
    else
      "$fn" "$name" || { echo "$fn $name failed: see $RUNS/logs/${fn}_$name.log"; status=1; }
    fi
  done
  for i in "${!pids[@]}"; do
    wait "${pids[$i]}" || { echo "$fn ${names[$i]} failed: see $RUNS/logs/${fn}_${names[$i]}.log"; status=1; }
  done
  return $status
}

baseline() {  # the unprotected model the attacks compare with
  "$PYTHON" -m isnn_jax.train "${BASE[@]}" --config.protect=False --workdir "$RUNS/baseline" \
    > "$RUNS/logs/train_baseline.log" 2>&1
}

start=$(date +%s)
# Prepare the TFDS files once, before parallel trainers read them.
"$PYTHON" - "${BASE[@]}" <<'EOF' || exit 1
import sys
from isnn_jax.data import load_split
args = dict(a.split("=", 1) for a in sys.argv[1:] if a.startswith("--config.data."))
name = "digits" if "tests/tiny_config.py" in sys.argv else "fashion_mnist_idx"
load_split(name, "test", data_dir=args.get("--config.data.data_dir") or None,
           source_dir=args.get("--config.data.source_dir") or None)
EOF
failed=0
if [ "${PARALLEL:-0}" = "1" ]; then
  baseline & base_pid=$!
  # shellcheck disable=SC2086
  run_phase train $VARIANTS || failed=1
  wait "$base_pid" || { echo "baseline training failed: see $RUNS/logs/train_baseline.log"; failed=1; }
else
  baseline || { echo "baseline training failed: see $RUNS/logs/train_baseline.log"; failed=1; }
  # shellcheck disable=SC2086
  run_phase train $VARIANTS || failed=1
fi
echo "trained in $(( $(date +%s) - start )) s"
# shellcheck disable=SC2086
run_phase attack $VARIANTS || failed=1
echo "attacked in $(( $(date +%s) - start )) s"
# shellcheck disable=SC2086
"$PYTHON" benchmarks/hardening_table.py --reports "$OUT" --variants $VARIANTS \
  --out "$OUT/hardening.json" || failed=1
exit $failed
