#!/usr/bin/env bash
# Stage 1 of a draft recipe (HASS: w = 0, n = 3): scripts/train_stage1.sh CONFIG [--key value ...]
# (see scripts/train_stage.sh: resumable, NPROC=N for DeepSpeed ZeRO-2)
exec "$(dirname "$0")/train_stage.sh" 1 "$@"
