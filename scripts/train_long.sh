#!/usr/bin/env bash
# The long training run of docs/TRAINING_PLAN.md (issue 18), over as many sessions and machines as it takes.
#
#   bash scripts/train_long.sh data      # ShareGPT sample, held-out dialogues, offline features (resumable)
#   bash scripts/train_long.sh eagle2    # the EAGLE-2 draft, the whole budget (resumable)
#   bash scripts/train_long.sh hass_warm # HASS from EAGLE-2's weights at step 12,528, and its EAGLE-2 control
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
warm_at=12528  # budget - 1 epoch (1,392 steps)

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
  hass_warm)
    make_data
    from=checkpoints/milestones/eagle2_at_$warm_at
    long train --name hass_warm --config configs/long_smollm2_hass_warm.json --start-from "$from" "${threads[@]}"
    long train --name eagle2_cont --config configs/long_smollm2_eagle2.json --start-from "$from" "${threads[@]}"
    long milestone --name hass_warm
    long milestone --name eagle2_cont ;;
  milestone) long milestone --name "${2:?which run}" ;;
  status) long status ;;
  *) echo "usage: $0 data|eagle2|hass_warm|milestone NAME|status" >&2; exit 2 ;;
esac
