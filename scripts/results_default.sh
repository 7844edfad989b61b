#!/usr/bin/env bash
# The measurements behind README "Results" (issue 5), on this 2-core CPU, fp32, 128 new tokens per turn,
# QUESTIONS questions of each benchmark (default 3; the full 80-question sets take hours here).
#   1. each shipped draft (HASS, EAGLE-2) against vanilla decoding, paper tree 60/6/10, greedy (TEMPERATURES="0 1" adds T=1)
#   2. a tree sweep for this CPU with the HASS draft on MT-bench (2 questions), greedy
# Answers and reports land in outputs/results/ (rerunning resumes finished questions).
set -euo pipefail
cd "$(dirname "$0")/.."
q=${QUESTIONS:-3}
common=(--questions "$q" --max-new-tokens 128 --dtype fp32 --warmup 1)
for draft in HASS EAGLE2; do
  OUT=outputs/results/paper_tree METHODS=hass,vanilla TEMPERATURES="${TEMPERATURES:-0}" PYTHON=python \
    bash scripts/eval.sh SmolLM2-135M-Instruct "checkpoints/SmolLM2-135M-Instruct-$draft" mt_bench,humaneval,gsm8k "${common[@]}"
done
target=$(python -c 'from hass.zoo import ensure_smollm2; print(ensure_smollm2())')
for tree in "10 3 3" "5 4 1"; do  # 60 6 10 is measured above
  set -- $tree
  out=outputs/results/tree_sweep/t$1_d$2_k$3
  python -m evaluation.run --base "$target" --draft checkpoints/SmolLM2-135M-Instruct-HASS --bench mt_bench \
    --methods hass,vanilla --temperature 0 --total-tokens "$1" --depth "$2" --top-k "$3" "${common[@]}" --questions 2 --out "$out/mt_bench.jsonl"
  python -m evaluation.report "$out/mt_bench.jsonl" --out-dir "$out/report"
done
