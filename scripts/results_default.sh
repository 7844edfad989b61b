#!/usr/bin/env bash
# The sweep behind the first drafts' results (issue 5; the shipped drafts' are scripts/results_final.sh's, and the
# answers of this sweep for the first drafts are in git history), on a 2-core CPU: fp32 target (exact), bf16 draft
# (changes only the proposals), 128 new tokens per turn, QUESTIONS questions of each benchmark (default 3;
# the full 80-question sets take hours here). Answers and reports land in outputs/results/; rerunning resumes.
#   1. the cost of one cycle per tree on this machine (evaluation.cycle_cost): break-even tau of each tree
#   2. a tree sweep with the HASS draft on MT-bench (2 questions), greedy; BEST_TREE once more with an fp32 draft
#   3. each shipped draft (HASS, EAGLE-2) against vanilla decoding on MT-bench, HumanEval and GSM8K:
#      the paper tree 60/6/10 greedy, and the CPU tree BEST_TREE (default 8/4/2, the sweep's best) at T=0 and T=1
#   4. draft vocabularies (hass.draft_vocab): a size sweep (HASS, BEST_TREE, MT-bench 2 questions), then
#      BEST_TREE with the DRAFT_VOCAB (default 16384) most frequent answer tokens, both drafts, T=0 and T=1
#   5. side by side in ONE process against one vanilla (full vocabulary, T=0 and T=1, each tree of SIDE_TREES,
#      default BEST_TREE and the paper tree 60/6/10): both drafts, question by question, so the HASS / EAGLE-2
#      speedups share the machine's load (HumanEval, GSM8K, MT-bench)
#   6. HASS vs EAGLE-2 tau, paired over the questions both answered, with a bootstrap interval (evaluation.compare)
#   7. one table of every side-by-side cell (evaluation.matrix -> outputs/results/matrix.md, matrix.png)
set -euo pipefail
cd "$(dirname "$0")/.."
q=${QUESTIONS:-3}
best=${BEST_TREE:-8/4/2}
trees=${SWEEP_TREES:-"60/6/10 20/4/4 10/3/3 8/4/2 5/4/1"}
vocab=${DRAFT_VOCAB:-16384}
vocab_sizes=${SWEEP_VOCABS:-"8192 16384 32768"}
common=(--max-new-tokens 128 --dtype fp32 --draft-dtype bf16 --warmup 1)
mkdir -p outputs/results
target=$(python -c 'from hass.zoo import ensure_smollm2; print(ensure_smollm2())' | tail -n 1)
hass_draft=checkpoints/SmolLM2-135M-Instruct-HASS

python -m evaluation.cycle_cost --base "$target" --draft "$hass_draft" --dtype fp32 --draft-dtype bf16 \
  --trees "${trees// /,}" --draft-vocab "${vocab_sizes// /,}" --out outputs/results/cycle_cost.json | tee outputs/results/cycle_cost.md

for tree in $trees; do
  IFS=/ read -r total depth top_k <<< "$tree"
  out=outputs/results/tree_sweep/t${total}_d${depth}_k${top_k}
  python -m evaluation.run --base "$target" --draft "$hass_draft" --bench mt_bench --methods hass,vanilla \
    --temperature 0 --total-tokens "$total" --depth "$depth" --top-k "$top_k" "${common[@]}" --questions 2 \
    --out "$out/mt_bench.jsonl"
  python -m evaluation.report "$out/mt_bench.jsonl" --out-dir "$out/report"
done

IFS=/ read -r total depth top_k <<< "$best"
out=outputs/results/tree_sweep_fp32_draft/t${total}_d${depth}_k${top_k}  # the same output, slower drafting
python -m evaluation.run --base "$target" --draft "$hass_draft" --bench mt_bench --methods hass,vanilla \
  --temperature 0 --total-tokens "$total" --depth "$depth" --top-k "$top_k" "${common[@]}" --draft-dtype fp32 \
  --questions 2 --out "$out/mt_bench.jsonl"
python -m evaluation.report "$out/mt_bench.jsonl" --out-dir "$out/report"

for draft in HASS EAGLE2; do
  OUT=outputs/results/paper_tree METHODS=hass,vanilla TEMPERATURES=0 PYTHON=python \
    bash scripts/eval.sh SmolLM2-135M-Instruct "checkpoints/SmolLM2-135M-Instruct-$draft" mt_bench,humaneval,gsm8k \
    --questions "$q" "${common[@]}"
  OUT=outputs/results/cpu_tree_t${total}_d${depth}_k${top_k} METHODS=hass,vanilla TEMPERATURES="0 1" PYTHON=python \
    bash scripts/eval.sh SmolLM2-135M-Instruct "checkpoints/SmolLM2-135M-Instruct-$draft" mt_bench,humaneval,gsm8k \
    --questions "$q" --total-tokens "$total" --depth "$depth" --top-k "$top_k" "${common[@]}"
done

for size in $vocab_sizes; do
  out=outputs/results/vocab_sweep/t${total}_d${depth}_k${top_k}_v${size}
  python -m evaluation.run --base "$target" --draft "$hass_draft" --bench mt_bench --methods hass,vanilla \
    --temperature 0 --total-tokens "$total" --depth "$depth" --top-k "$top_k" "${common[@]}" --questions 2 \
    --draft-vocab "$size" --out "$out/mt_bench.jsonl"
  python -m evaluation.report "$out/mt_bench.jsonl" --out-dir "$out/report"
done

for draft in HASS EAGLE2; do
  OUT=outputs/results/cpu_tree_t${total}_d${depth}_k${top_k}_v${vocab} METHODS=hass,vanilla TEMPERATURES="0 1" PYTHON=python \
    bash scripts/eval.sh SmolLM2-135M-Instruct "checkpoints/SmolLM2-135M-Instruct-$draft" mt_bench,humaneval,gsm8k \
    --questions "$q" --total-tokens "$total" --depth "$depth" --top-k "$top_k" --draft-vocab "$vocab" "${common[@]}"
done

eagle_draft=checkpoints/SmolLM2-135M-Instruct-EAGLE2
side_trees=${SIDE_TREES:-"$best 60/6/10"}
for tree in $side_trees; do
  IFS=/ read -r s_total s_depth s_top_k <<< "$tree"
  side=outputs/results/side_by_side_t${s_total}_d${s_depth}_k${s_top_k}
  for temp in 0 1; do
    for bench in humaneval gsm8k mt_bench; do
      python -m evaluation.run --base "$target" --draft "$hass_draft" --bench "$bench" \
        --methods "vanilla,hass,hass[draft=$eagle_draft]" --temperature "$temp" \
        --total-tokens "$s_total" --depth "$s_depth" --top-k "$s_top_k" "${common[@]}" --questions "$q" \
        --out "$side/T$temp/$bench.jsonl"
    done
    python -m evaluation.report "$side/T$temp/humaneval.jsonl" "$side/T$temp/gsm8k.jsonl" "$side/T$temp/mt_bench.jsonl" \
      --out-dir "$side/T$temp/report"
    for bench in humaneval gsm8k mt_bench; do   # step 6 for the side-by-side files
      python -m evaluation.compare "HASS=$side/T$temp/$bench.jsonl:hass" \
        "EAGLE2=$side/T$temp/$bench.jsonl:hass[draft=$eagle_draft]" \
        --out "outputs/results/compare/side_by_side_t${s_total}_d${s_depth}_k${s_top_k}_T${temp}_$bench.json"
    done
  done
done

pair=SmolLM2-135M-Instruct__SmolLM2-135M-Instruct
for run in paper_tree cpu_tree_t${total}_d${depth}_k${top_k}; do
  for bench in mt_bench humaneval gsm8k; do
    python -m evaluation.compare "HASS=outputs/results/$run/${pair}-HASS/T0/$bench.jsonl" \
      "EAGLE2=outputs/results/$run/${pair}-EAGLE2/T0/$bench.jsonl" --out "outputs/results/compare/${run}_T0_$bench.json"
  done
done

# 7. the matrix of README "Results": every side-by-side cell in one table (tau / speedup, "not run" where missing)
side_dirs=()
for tree in $side_trees; do
  IFS=/ read -r s_total s_depth s_top_k <<< "$tree"
  side_dirs+=("outputs/results/side_by_side_t${s_total}_d${s_depth}_k${s_top_k}")
done
python -m evaluation.matrix "${side_dirs[@]}" --questions "$q" --out outputs/results/matrix.md --plot outputs/results/matrix.png
