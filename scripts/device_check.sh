#!/usr/bin/env bash
# The GPU check, in one device call of under 8 minutes on a fresh GPU machine that can download nothing:
# the CUDA tests, then evaluation.gpu_speed (a random SmolLM2-shaped target with a draft built to agree with it:
# tree-forward / one-token cost per token count, tokens/s against plain decoding, identical outputs).
# Everything it writes lands in $OUT (the device tool's folder that comes back), else outputs/device.
#
# The machine's python3 has torch with CUDA but an older transformers. Once, here, fetch the pinned pure-Python
# wheels it lacks, into an ignored folder that the call carries (about 15 MB):
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_17_x86_64 --platform any -d .whl transformers==5.23.0 huggingface_hub==2.4.0
# then call the device tool's run with carry [".whl"] and the command `bash scripts/device_check.sh`.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-outputs/device}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
if ls .whl/*.whl > /dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
python3 -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__,
            torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA device")' | tee "$out/versions.txt"
timeout 200 python3 -m pytest -q -p no:cacheprovider -m gpu tests 2>&1 | tee "$out/gpu_tests.txt"
timeout 240 python3 -m evaluation.gpu_speed --device cuda --dtype bf16 --out "$out/gpu_speed.md" 2>&1 \
  | tee "$out/gpu_speed.log"
