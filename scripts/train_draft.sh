#!/usr/bin/env bash
# Train a draft for a target, both stages: scripts/train_draft.sh TARGET KIND [--key value ...]
#   TARGET  a model folder or a hass.zoo name (SmolLM2-135M-Instruct, Qwen2.5-Coder-0.5B-Instruct)
#   KIND    hass (stage 1 w=0 n=3, stage 2 w=1 n=3) or eagle2 (w=0 n=1 in both stages)
# Environment: DATA (prepared file; made from ShareGPT if missing, MAX_RECORDS dialogues, default 2000),
# FEATURES (a folder: compute target features offline once and train from them), OUT (default
# runs/<target>_<kind>), CONFIG (default configs/train_smollm2_<kind>.json), NPROC (DeepSpeed).
# Extra --key value pairs go to both stages. The draft ends in $OUT/stage2/final.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 2 ]; then
  echo "usage: $0 TARGET hass|eagle2 [--key value ...]" >&2
  exit 2
fi
target=$1 kind=$2
shift 2
case $kind in hass|eagle2) ;; *) echo "KIND must be hass or eagle2, got '$kind'" >&2; exit 2 ;; esac

target_dir=$(python -c 'import sys; from hass.zoo import ensure_target; print(ensure_target(sys.argv[1]))' "$target" | tail -n 1)
name=$(basename "$target_dir")
data=${DATA:-data/${name}_sharegpt.jsonl}
if [ ! -f "$data" ]; then
  sharegpt=$(python -c 'from hass.zoo import ensure_sharegpt; print(ensure_sharegpt())' | tail -n 1)
  python -m train.prepare_data --data "$sharegpt" --tokenizer "$target_dir" --template chat \
    --max-records "${MAX_RECORDS:-2000}" --out "$data"
fi
common=(--target "$target_dir" --data "$data")
if [ -n "${FEATURES:-}" ]; then
  scripts/make_features.sh "$target_dir" "$data" "$FEATURES"
  common+=(--features "$FEATURES")
fi
config=${CONFIG:-configs/train_smollm2_${kind}.json}
out=${OUT:-runs/${name}_${kind}}
scripts/train_stage1.sh "$config" "${common[@]}" --output_dir "$out/stage1" "$@"
scripts/train_stage2.sh "$config" "${common[@]}" --init_from "$out/stage1/final" --output_dir "$out/stage2" "$@"
echo "draft ready: $out/stage2/final"
