#!/usr/bin/env bash
# One stage of a draft recipe: scripts/train_stage.sh STAGE CONFIG [--key value ...]
#   STAGE   a key of the config's "stages" (HASS: 1 = w 0 n 3; 2 = w 1 n 3 from stage 1's final, its init_from)
# A killed run continues from its latest checkpoint when rerun (--resume auto).
# NPROC=N trains under DeepSpeed ZeRO-2 (configs/ds_config.json): N GPUs, or N CPU processes over gloo.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 2 ]; then
  echo "usage: $0 STAGE CONFIG [--key value ...]" >&2
  exit 2
fi
stage=$1 config=$2
shift 2
args=(--config "$config" --stage "$stage" --resume auto "$@")
if [ "${NPROC:-1}" -gt 1 ]; then
  devices=$([ "$(python -c 'import torch; print(torch.cuda.is_available())')" = True ] && echo --num_gpus || echo --num_accelerators)
  exec deepspeed "$devices" "$NPROC" --module train.trainer "${args[@]}" --deepspeed configs/ds_config.json
fi
exec python -m train.trainer "${args[@]}"
