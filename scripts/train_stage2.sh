#!/usr/bin/env bash
# Stage 2 of a draft recipe (HASS: w = 1, n = 3), started from stage 1's final checkpoint (the config's
# init_from): scripts/train_stage2.sh CONFIG [--key value ...]   (see scripts/train_stage.sh)
exec "$(dirname "$0")/train_stage.sh" 2 "$@"
