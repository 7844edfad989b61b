#!/usr/bin/env bash
# The final measurement of issue 18: the shipped HASS and EAGLE-2 drafts side by side against ONE vanilla, on
# MT-bench, HumanEval and GSM8K, at T = 0 and T = 1, in one process per (benchmark, temperature), question by
# question, so every ratio is measured under the same machine load.
#
#   bash scripts/results_final.sh                 # all 80 questions of each set (hours on 2 CPU cores)
#   QUESTIONS=10 bash scripts/results_final.sh    # the 10-question check used while developing
#
# Every run resumes: rerun the same command after a kill or a session's end and it answers only what is missing
# (the answer files are small; commit them between sessions). Settings, with their defaults:
#   HASS=checkpoints/SmolLM2-135M-Instruct-HASS  EAGLE=checkpoints/SmolLM2-135M-Instruct-EAGLE2
#   QUESTIONS=80  OUT=outputs/results/final_q$QUESTIONS  MAX_NEW_TOKENS=128  DRAFT_DTYPE=auto  DRAFT_VOCAB=16384
#   BENCHES="mt_bench humaneval gsm8k"  TEMPERATURES="0 1"
#   DEMO_TREE: the demo's tree; default: the automatic tree of the HASS draft on this machine
#     (evaluation.auto_tree), chosen once and kept in $OUT/demo_tree.txt so every part of the run uses the same
#   PAPER_TREE=60/6/10  PAPER_BENCHES="mt_bench" (the benchmarks that also run the paper tree)
# Methods: T = 0: vanilla, transformers' generate (hf), prompt lookup (pld), both drafts on the demo's tree, and on
# PAPER_BENCHES both drafts on the paper tree (its tau goal is MT-bench's; at ~0.5x vanilla on this CPU its two
# drafts cost as much as four demo-tree ones, so the other benchmarks skip it unless named).
# T = 1: vanilla and both drafts on the demo's tree (PAPER_AT_T1=1 adds the paper tree on PAPER_BENCHES).
# Cost on 2 AVX2 cores, 80 questions: 40-60 minutes of answers per method and temperature for vanilla, hf and pld
# (MT-bench is half of it: two turns), less for the drafts (their speedup), twice as much for a paper-tree draft:
# ~7 hours in all, so over sessions (it resumes).
# Then, per temperature: evaluation.report (tau, speedup as the ratio of total times with the per-question spread,
# acceptance by depth), evaluation.compare (the paired HASS / EAGLE-2 tau ratio with its 95% interval, per
# benchmark and tree), evaluation.matrix (one table and plot of every cell) and evaluation.headline (per
# temperature, the README's table and plot: both drafts on the demo's tree, vanilla, generate, prompt lookup).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
hass_draft=${HASS:-checkpoints/SmolLM2-135M-Instruct-HASS}
eagle_draft=${EAGLE:-checkpoints/SmolLM2-135M-Instruct-EAGLE2}
q=${QUESTIONS:-80}
out=${OUT:-outputs/results/final_q$q}
benches=${BENCHES:-"mt_bench humaneval gsm8k"}
temperatures=${TEMPERATURES:-"0 1"}
paper=${PAPER_TREE:-60/6/10}
vocab=${DRAFT_VOCAB:-16384}
draft_dtype=${DRAFT_DTYPE:-auto}
for d in "$hass_draft" "$eagle_draft"; do
  [[ -f $d/config.json && -f $d/model.safetensors ]] || { echo "error: no draft at $d (config.json + model.safetensors)" >&2; exit 2; }
done
mkdir -p "$out"
target="$("$PYTHON" -c 'from hass.zoo import ensure_smollm2; print(ensure_smollm2())' | tail -n 1)"

demo=${DEMO_TREE:-}
if [[ -z $demo && -f $out/demo_tree.txt ]]; then
  demo=$(cat "$out/demo_tree.txt")
fi
if [[ -z $demo ]]; then
  chosen="$("$PYTHON" -m evaluation.auto_tree --base "$target" --draft "$hass_draft" --dtype fp32 \
      --draft-dtype "$draft_dtype" --draft-vocab "$vocab" | tail -n 1)"
  demo=${chosen#tree }
  [[ $demo == none ]] && { echo "the automatic tree is plain decoding here; set DEMO_TREE" >&2; exit 2; }
fi
[[ $demo =~ ^[0-9]+/[0-9]+/[0-9]+(@[0-9.]+)?$ ]] || {
  echo "error: DEMO_TREE must be TOTAL/DEPTH/TOP_K[@MIN_PROB], got $demo" >&2; exit 2; }
tmp=$(mktemp "$out/.demo_tree.XXXXXX") && echo "$demo" > "$tmp" && mv "$tmp" "$out/demo_tree.txt"
echo "demo tree $demo, paper tree $paper, $q questions per set, output in $out"
IFS=/ read -r total depth top_k <<< "${demo%@*}"
# the drafts on the demo's tree: plain hass methods, or variants carrying its confidence bound (T/D/K@P)
hass_demo=hass eagle_demo="hass[draft=$eagle_draft]"
if [[ $demo == *@* ]]; then hass_demo="hass[tree=$demo]" eagle_demo="hass[draft=$eagle_draft,tree=$demo]"; fi

common=(--base "$target" --draft "$hass_draft" --max-new-tokens "${MAX_NEW_TOKENS:-128}" --dtype fp32
        --draft-dtype "$draft_dtype" --draft-vocab "$vocab" --total-tokens "$total" --depth "$depth" --top-k "$top_k"
        --warmup 1 --questions "$q")
paper_benches=" ${PAPER_BENCHES:-mt_bench} "
for temp in $temperatures; do
  files=()
  for bench in $benches; do
    methods="vanilla,$hass_demo,$eagle_demo"
    if [[ $temp == 0 ]]; then methods="vanilla,hf,pld,$hass_demo,$eagle_demo"; fi
    if [[ $paper != "$demo" && $paper_benches == *" $bench "* && ( $temp == 0 || ${PAPER_AT_T1:-0} == 1 ) ]]; then
      methods="$methods,hass[tree=$paper],hass[draft=$eagle_draft,tree=$paper]"
    fi
    "$PYTHON" -m evaluation.run "${common[@]}" --bench "$bench" --methods "$methods" --temperature "$temp" \
      --out "$out/T$temp/$bench.jsonl"
    files+=("$out/T$temp/$bench.jsonl")
    for tree in "$demo" "$paper"; do
      if [[ $tree == "$demo" ]]; then h=$hass_demo; e=$eagle_demo; else h="hass[tree=$tree]"; e="hass[draft=$eagle_draft,tree=$tree]"; fi
      [[ $methods == *"$h"* ]] || continue
      "$PYTHON" -m evaluation.compare "HASS=$out/T$temp/$bench.jsonl:$h" "EAGLE2=$out/T$temp/$bench.jsonl:$e" \
        --out "$out/compare/T${temp}_${bench}_t${tree//\//_}.json"
    done
  done
  "$PYTHON" -m evaluation.report "${files[@]}" --out-dir "$out/T$temp/report"
done
"$PYTHON" -m evaluation.matrix "$out" --questions "$q" --out "$out/matrix.md" --plot "$out/matrix.png"
for temp in $temperatures; do  # the README's headline: both drafts on the demo's tree against the baselines
  "$PYTHON" -m evaluation.headline "$out" --temperature "$temp" --tree "$demo" --questions "$q" \
    --label "$(basename "$hass_draft")=HASS" --label "$(basename "$eagle_draft")=EAGLE-2" \
    --out "$out/headline_T$temp.md" --plot "$out/headline_T$temp.png"
done
