#!/usr/bin/env bash
# Create .venv (if missing) and install the pinned requirements and hass itself (editable).
# torch==2.13.0 resolves to the CPU build on CPU-only machines; nothing here downloads a model.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -r requirements.txt
.venv/bin/python -m pip install -q --no-deps -r requirements-nodeps.txt
.venv/bin/python -m pip install -q --no-deps -e .
.venv/bin/python -c "import torch, transformers, hass; print(f'hass {hass.__version__}: torch {torch.__version__}, transformers {transformers.__version__}, {torch.get_num_threads()} threads')"
