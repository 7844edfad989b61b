#!/usr/bin/env bash
# Stage 1 of a draft recipe (HASS: w = 0, n = 3): scripts/train_stage1.sh CONFIG [--key value ...]
# A killed run continues from its latest checkpoint when rerun (--resume auto).
# NPROC=N trains under DeepSpeed ZeRO-2 (configs/ds_config.json): N GPUs, or N CPU processes over gloo.
set -euo pipefail
cd "$(dirname "$0")/.."
config=${1:?usage: $0 CONFIG [--key value ...]}
shift
args=(--config "$config" --stage 1 --resume auto "$@")
if [ "${NPROC:-1}" -gt 1 ]; then
  devices=$([ "$(python -c 'import torch; print(torch.cuda.is_available())')" = True ] && echo --num_gpus || echo --num_accelerators)
  exec deepspeed "$devices" "$NPROC" --module train.trainer "${args[@]}" --deepspeed configs/ds_config.json
fi
exec python -m train.trainer "${args[@]}"
