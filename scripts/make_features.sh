#!/usr/bin/env bash
# Offline target features for draft training (resumable: rerun the same command after a kill).
#   scripts/make_features.sh TARGET DATA OUT [--shard-size N] [--target-dtype bfloat16|float32]
# TARGET: a model folder or a hass.zoo name; DATA: a prepared file (python -m train.prepare_data).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 3 ]; then
  echo "usage: $0 TARGET DATA OUT [--shard-size N] [--target-dtype bfloat16|float32]" >&2
  exit 2
fi
target=$1 data=$2 out=$3
shift 3
exec python -m train.features --target "$target" --data "$data" --out "$out" "$@"
