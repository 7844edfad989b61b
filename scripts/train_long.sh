#!/usr/bin/env bash
# The long training run of docs/TRAINING_PLAN.md (issue 18), over as many sessions and machines as it takes.
#
#   bash scripts/train_long.sh data      # ShareGPT sample, held-out dialogues, offline features (resumable)
#   bash scripts/train_long.sh eagle2    # the EAGLE-2 draft, the whole budget (resumable)
#   bash scripts/train_long.sh eagle2_ext # EAGLE-2 past its budget, 2 more epochs, if it had not flattened (the
#                                        # rule below; FORCE=1 extends anyway); else it says so and does nothing
#   bash scripts/train_long.sh hass_warm [auto|eagle2|eagle2_ext]  # HASS from that EAGLE-2 run's weights one
#                                        # epoch before its budget, and its EAGLE-2 control (auto: eagle2_ext where
#                                        # it was made, else eagle2)
#   bash scripts/train_long.sh milestone NAME   # copy NAME's newest weights to checkpoints/milestones/NAME
#   bash scripts/train_long.sh status    # where each run stands
#
# Every step is idempotent: rerun the same command after a kill, a session's end or on a new machine.
# - data: RECORDS (default 3000) ShareGPT records, seed 0, max length 1,024, with the 61 held-out self-distilled
#   dialogues of scripts/ab_small.sh (same ids, same seed) left out; offline features of every dialogue.
# - a run resumes from its newest local checkpoint (optimiser state included: the same result as an uninterrupted
#   run). When the local state is gone (a fresh machine) and a milestone was committed under
#   checkpoints/milestones/NAME, the run restarts from those weights at the step they were saved, with a short
#   warm-up of the learning rate (fresh optimiser moments), on the batches not yet seen; the log says so.
# - the stopping rule: a run whose held-out top-1 rose by 0.005 or more over the last 20% of its steps has not
#   flattened; eagle2_ext then continues eagle2's final weights for 2 more epochs (to step 16,704, the tail of a
#   12-epoch schedule), and the HASS warm start branches from it one epoch before its end.
# THREADS (default: all cores) sets the torch threads of the training process. HASS_LONG_STORE (default
# $HASS_CACHE/long) holds data/long and runs/long, which the checkout links to.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
records=${RECORDS:-3000}
regen=datasets/smollm2_sharegpt_2000/smollm2_sharegpt_2000.jsonl.gz
d=data/long
# data/long and runs/long live in the cache by default (HASS_LONG_STORE), linked from the checkout: a new checkout on
# the same machine keeps the features (~50 minutes of target forwards on 2 AVX2 cores) and the resume state
store=${HASS_LONG_STORE:-${HASS_CACHE:-$HOME/.cache/hass}/long}
mkdir -p data runs "$store/data" "$store/runs"
[[ -e data/long ]] || ln -s "$store/data" data/long
[[ -e runs/long ]] || ln -s "$store/runs" runs/long
[[ -L data/long && -L runs/long ]] || echo "note: data/long or runs/long is a folder of this checkout, not in $store" >&2
echo "data/long -> $(readlink -f data/long), runs/long -> $(readlink -f runs/long)"

target="$("$PYTHON" -c 'from hass.zoo import ensure_smollm2; print(ensure_smollm2())' | tail -n 1)"

make_data() {
  local sharegpt
  sharegpt="$("$PYTHON" -c 'from hass.zoo import ensure_sharegpt; print(ensure_sharegpt())' | tail -n 1)"
  [[ -f $d/sharegpt_all.jsonl ]] || "$PYTHON" -m train.prepare_data --data "$sharegpt" --tokenizer "$target" \
      --max-records "$records" --seed 0 --max-length 1024 --out "$d/sharegpt_all.jsonl"
  [[ -f $d/regen_all.jsonl ]] || "$PYTHON" -m train.prepare_data --data "$regen" --tokenizer "$target" \
      --max-length 1024 --out "$d/regen_all.jsonl"
  # the held-out dialogues of scripts/ab_small.sh: ~3% of the self-distilled ones, seed 0
  [[ -f $d/sharegpt.jsonl ]] || "$PYTHON" - "$d" <<'PY'
import random, sys
from train.data import read_prepared, write_prepared
d = sys.argv[1]
rh, regen = read_prepared(f"{d}/regen_all.jsonl")
sh, share = read_prepared(f"{d}/sharegpt_all.jsonl")
held = random.Random(0).sample(regen, max(20, len(regen) // 30))
held_ids = {s["id"] for s in held}
train = [s for s in share if s["id"] not in held_ids]
write_prepared(f"{d}/held_out.jsonl", dict(rh, held_out_of=f"{d}/regen_all.jsonl"), held)
write_prepared(f"{d}/sharegpt.jsonl", dict(sh, held_out=sorted(held_ids), subset_of=f"{d}/sharegpt_all.jsonl"), train)
print(f"{len(held)} held-out self-distilled dialogues; {len(train)} ShareGPT training dialogues, "
      f"{sum(len(s['input_ids']) for s in train)} tokens ({len(share) - len(train)} left out: held-out ids)")
PY
  "$PYTHON" -m train.features --target "$target" --data "$d/sharegpt.jsonl" --out "$d/features"
}

threads=()
[[ -n ${THREADS:-} ]] && threads=(--threads "$THREADS")
long() { "$PYTHON" -m train.long_run "$@"; }
epoch=1392  # steps of batch 2 per epoch of the 2,784 training dialogues
budget=13920  # eagle2: 10 epochs
ext_budget=16704  # eagle2_ext: 12 epochs, branched from eagle2's final weights with the 12-epoch schedule's tail
warm_at=$((budget - epoch))

case "${1:-}" in
  data) make_data ;;
  eagle2)
    make_data
    # the EAGLE-2 weights at the warm start's step, kept as a milestone of their own
    if [[ ! -f checkpoints/milestones/eagle2_at_$warm_at/milestone.json ]]; then
      long train --name eagle2 --config configs/long_smollm2_eagle2.json --stop-at "$warm_at" "${threads[@]}"
      long milestone --name eagle2 --step "$warm_at" --out "checkpoints/milestones/eagle2_at_$warm_at"
    fi
    long train --name eagle2 --config configs/long_smollm2_eagle2.json "${threads[@]}"
    long milestone --name eagle2 ;;
  eagle2_ext)
    # the stopping rule (docs/TRAINING_PLAN.md): EAGLE-2 continues past its budget when its held-out top-1 rose by
    # 0.005 or more over the last 20% of training; the warm start then branches from this run instead
    ext_at=$((ext_budget - epoch))
    rule=0
    "$PYTHON" - "$budget" "${FORCE:-0}" <<'PY' || rule=$?
import json, sys
from pathlib import Path
from train.long_run import held_out_curve, rise_over_tail
m = Path("checkpoints/milestones/eagle2")
step = json.loads((m / "milestone.json").read_text())["global_step"] if (m / "milestone.json").is_file() else None
if step != int(sys.argv[1]):
    print(f"error: eagle2_ext branches from the finished eagle2 run; checkpoints/milestones/eagle2 is at step "
          f"{step} of {sys.argv[1]} (bash scripts/train_long.sh eagle2)", file=sys.stderr)
    sys.exit(2)
r = rise_over_tail(held_out_curve(m))
print(f"eagle2: held-out top-1 rose {r['rise']:+.4f} over the last 20% (steps {r['from_step']}-{r['to_step']}: "
      f"{r['from']:.4f} -> {r['to']:.4f}); the rule extends a run that rose by 0.005 or more")
sys.exit(0 if r["rise"] >= 0.005 or sys.argv[2] == "1" else 3)
PY
    case $rule in
      0) ;;
      3) echo "eagle2 has flattened: no extension (FORCE=1 extends it anyway)"; exit 0 ;;
      *) exit "$rule" ;;
    esac
    make_data
    ext=(--name eagle2_ext --config configs/long_smollm2_eagle2.json --max_steps "$ext_budget"
         --start-from checkpoints/milestones/eagle2 "${threads[@]}")
    if [[ ! -f checkpoints/milestones/eagle2_ext_at_$ext_at/milestone.json ]]; then
      long train "${ext[@]}" --stop-at "$ext_at"
      long milestone --name eagle2_ext --step "$ext_at" --out "checkpoints/milestones/eagle2_ext_at_$ext_at"
    fi
    long train "${ext[@]}"
    long milestone --name eagle2_ext ;;
  hass_warm)
    which=${2:-auto}
    if [[ $which == auto ]]; then  # the extended run where one was made
      which=eagle2; [[ -f checkpoints/milestones/eagle2_ext/milestone.json ]] && which=eagle2_ext
      echo "hass_warm branches from $which"
    fi
    case "$which" in
      eagle2) total=$budget; from=checkpoints/milestones/eagle2_at_$warm_at ;;
      eagle2_ext) total=$ext_budget; from=checkpoints/milestones/eagle2_ext_at_$((ext_budget - epoch)) ;;
      *) echo "hass_warm branches from eagle2 or eagle2_ext (or auto), not $which" >&2; exit 2 ;;
    esac
    make_data
    long train --name hass_warm --config configs/long_smollm2_hass_warm.json --max_steps "$total" \
      --start-from "$from" "${threads[@]}"
    long train --name eagle2_cont --config configs/long_smollm2_eagle2.json --max_steps "$total" \
      --start-from "$from" "${threads[@]}"
    long milestone --name hass_warm
    long milestone --name eagle2_cont ;;
  milestone) long milestone --name "${2:?which run}" ;;
  status) long status ;;
  *) echo "usage: $0 data|eagle2|eagle2_ext|hass_warm [auto|eagle2|eagle2_ext]|milestone NAME|status" >&2; exit 2 ;;
esac
