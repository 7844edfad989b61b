#!/usr/bin/env bash
# Ship the long-run drafts of issue 18 (docs/TRAINING_PLAN.md) in place of checkpoints/SmolLM2-135M-Instruct-HASS
# and -EAGLE2: their weights, curves, acceptance by depth and model cards.
#
#   bash scripts/ship_drafts.sh            # weights + held-out curves, calibration (acceptance.json), cards
#   bash scripts/ship_drafts.sh calibrate  # only measure the shipped drafts' acceptance again (acceptance.json)
#   bash scripts/ship_drafts.sh cards      # only rewrite the cards, e.g. with RESULTS=outputs/results/final_q80
#
# HASS_FROM (default checkpoints/milestones/hass_warm) and EAGLE_FROM (default checkpoints/milestones/eagle2_cont,
# HASS's EAGLE-2 control, where hass_warm made it; else eagle2_ext where the EAGLE-2 run was extended past its
# budget, else checkpoints/milestones/eagle2) are
# shipped to HASS_DST / EAGLE_DST (default the two folders above; CAL_OUT: the calibration answers). Both are
# train.long_run milestones; a run that has not reached its budget is refused (PARTIAL=1 ships it anyway, for a
# check). Each shipped folder holds config.json, model.safetensors, token_counts.safetensors, train_config.json,
# milestone.json (step, tokens seen, resolved config, data and target identity), log.jsonl (thinned, global steps)
# and held_out.png / held_out.json (train.long_run curves); it replaces the old folder atomically.
# Calibration: CAL_QUESTIONS (10) questions from the held-out training dialogues (CAL_HELD_OUT, default
# data/long/held_out.jsonl, train.held_out_questions: prompts no test set holds; MT-bench's first questions where
# the checkout has no long-run data), T = 0, 128 new tokens, fp32 target, draft dtype auto,
# draft vocabulary 16,384, each draft on every tree of CAL_TREES (default "8/4/2 8/4/2@0.1 60/6/10 60/6/10@0.02
# 20/4/4 5/4/1": the chain and its shallower versions 2/1/1 - 4/3/1 are the cheapest cycles where the target's
# one-token step is fast, as on the affine kernels, outputs/results/cycle_cost_affine_avx2), in one process; evaluation.record_acceptance writes each tree's rates and mean size beside the draft
# (what tree="auto" and the demo choose from). Acceptance does not depend on the machine's load.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
hass_from=${HASS_FROM:-checkpoints/milestones/hass_warm}
# the EAGLE-2 run past its budget where the stopping rule made one (train_long.sh eagle2_ext), else the budget run;
# its control run (eagle2_cont: the warm start's weights continued with n = 1, w = 0 on the HASS run's batches, fresh
# optimiser as HASS's) where hass_warm made one, so the shipped pair differs only in the HASS objective
ext=""
[[ -f checkpoints/milestones/eagle2_ext/milestone.json ]] && ext=1
eagle_default=checkpoints/milestones/eagle2${ext:+_ext}
[[ -f checkpoints/milestones/eagle2_cont/milestone.json ]] && eagle_default=checkpoints/milestones/eagle2_cont
eagle_from=${EAGLE_FROM:-$eagle_default}
eagle_train="bash scripts/train_long.sh eagle2${ext:+ && bash scripts/train_long.sh eagle2_ext}"
hass_dst=${HASS_DST:-checkpoints/SmolLM2-135M-Instruct-HASS}
eagle_dst=${EAGLE_DST:-checkpoints/SmolLM2-135M-Instruct-EAGLE2}
cal_trees=${CAL_TREES:-"8/4/2 8/4/2@0.1 60/6/10 60/6/10@0.02 20/4/4 5/4/1"}
cal=${CAL_OUT:-outputs/results/calibration}

ship_one() {  # SRC DST
  local src=$1 dst=$2 tmp old
  [[ -f $src/milestone.json ]] || { echo "error: $src has no milestone.json (bash scripts/train_long.sh milestone NAME)" >&2; exit 2; }
  "$PYTHON" - "$src" "${PARTIAL:-0}" <<'PY'
import json, sys
m = json.load(open(f"{sys.argv[1]}/milestone.json"))
if m["global_step"] < m["total_steps"] and sys.argv[2] != "1":
    sys.exit(f"error: {sys.argv[1]} is at step {m['global_step']} of {m['total_steps']}: not finished (PARTIAL=1 ships it)")
PY
  tmp="$(dirname "$dst")/.$(basename "$dst").tmp"
  old="$(dirname "$dst")/.$(basename "$dst").old"
  rm -rf "$tmp" "$old"
  mkdir -p "$tmp"
  for f in config.json model.safetensors token_counts.safetensors train_config.json milestone.json log.jsonl; do
    [[ -f $src/$f ]] && cp "$src/$f" "$tmp/$f"
  done
  "$PYTHON" -m train.long_run curves --runs "$tmp" --labels "$(basename "$dst")" --out "$tmp/held_out.png" \
    --json "$tmp/held_out.json"
  [[ -e $dst ]] && mv "$dst" "$old"
  mv "$tmp" "$dst"
  rm -rf "$old"
  echo "shipped $src -> $dst"
}

calibrate() {
  local target methods=() tree
  target="$("$PYTHON" -c 'from hass.zoo import ensure_smollm2; print(ensure_smollm2())' | tail -n 1)"
  for tree in $cal_trees; do
    methods+=("hass[tree=$tree]" "hass[draft=$eagle_dst,tree=$tree]")
  done
  local joined
  joined=$(IFS=,; echo "${methods[*]}")
  mkdir -p "$cal"
  # the held-out training dialogues (outside every test set) when this checkout has them, else MT-bench's first
  local questions=() answers=$cal/mt_bench.jsonl held=${CAL_HELD_OUT:-data/long/held_out.jsonl}
  if [[ -f $held ]]; then
    "$PYTHON" -m train.held_out_questions --prepared "$held" --limit "${CAL_QUESTIONS:-10}" \
      --out "$cal/held_out_questions.jsonl"
    questions=(--question-file "$cal/held_out_questions.jsonl")
    answers=$cal/held_out.jsonl
  else
    echo "note: no $held (bash scripts/train_long.sh data): calibrating on MT-bench's first questions" >&2
  fi
  rm -f "$answers"  # the drafts changed: answer afresh
  "$PYTHON" -m evaluation.run --base "$target" --draft "$hass_dst" --bench mt_bench "${questions[@]}" \
    --methods "$joined" --temperature 0 --questions "${CAL_QUESTIONS:-10}" --max-new-tokens 128 --dtype fp32 \
    --draft-dtype auto --draft-vocab 16384 --warmup 1 --out "$answers"
  rm -f "$hass_dst/acceptance.json" "$eagle_dst/acceptance.json"
  for tree in $cal_trees; do
    "$PYTHON" -m evaluation.record_acceptance "$answers" --method "hass[tree=$tree]" --draft "$hass_dst"
    "$PYTHON" -m evaluation.record_acceptance "$answers" --method "hass[draft=$eagle_dst,tree=$tree]" \
      --draft "$eagle_dst"
  done
}

cards() {
  local results=() run branch ext eagle_train
  [[ -n ${RESULTS:-} ]] && results=(--results "$RESULTS")
  # what was shipped, read from the shipped folders (a fresh clone has no local milestones to go by): the EAGLE-2
  # run's name, and whether the HASS warm start branched from the extended run
  run=$("$PYTHON" -c 'import json, sys; print(json.load(open(sys.argv[1]))["name"])' "$eagle_dst/milestone.json")
  branch=$("$PYTHON" -c 'import json, sys; print(json.load(open(sys.argv[1])).get("init_from") or "")' \
    "$hass_dst/train_config.json")
  ext=""
  [[ $branch == *eagle2_ext* ]] && ext=1
  eagle_train="bash scripts/train_long.sh eagle2${ext:+ && bash scripts/train_long.sh eagle2_ext}"
  "$PYTHON" -m train.model_card --draft "$hass_dst" --other "$eagle_dst" "${results[@]}" \
    --title "HASS draft (warm start: the EAGLE-2 draft's weights one epoch before its budget, then that last epoch with HCA n = 3 and HOD)" \
    --reproduce "bash scripts/train_long.sh data && $eagle_train && bash scripts/train_long.sh hass_warm${ext:+ eagle2_ext}" \
    --reproduce "bash scripts/ship_drafts.sh" --reproduce "bash scripts/results_final.sh"
  local title="EAGLE-2 draft (n = 1, w = 0, the whole budget)" train=$eagle_train
  if [[ $run == eagle2_cont ]]; then
    title="EAGLE-2 draft (n = 1, w = 0 throughout; HASS's control: the same weights one epoch before the budget, continued on the same batches)"
    train="$eagle_train && bash scripts/train_long.sh hass_warm${ext:+ eagle2_ext}"
  fi
  "$PYTHON" -m train.model_card --draft "$eagle_dst" --other "$hass_dst" "${results[@]}" \
    --title "$title" \
    --reproduce "bash scripts/train_long.sh data && $train" \
    --reproduce "bash scripts/ship_drafts.sh" --reproduce "bash scripts/results_final.sh"
}

case "${1:-all}" in
  all)
    ship_one "$hass_from" "$hass_dst"
    ship_one "$eagle_from" "$eagle_dst"
    calibrate
    cards ;;
  calibrate) calibrate ;;
  cards) cards ;;
  *) echo "usage: $0 [all|calibrate|cards]" >&2; exit 2 ;;
esac
