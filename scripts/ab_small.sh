#!/usr/bin/env bash
# The A/B of the training pipeline at a small fixed budget (EAGLE-2 recipe, configs/ab_smollm2_eagle2.json):
#   (a) ShareGPT's answers vs the target's own (self-distilled, train.regenerate), same user turns
#   (b) a draft vocabulary of 16,384 tokens vs the full vocabulary
#   (c) the draft layer initialised from the target's last layer vs random
# Every arm trains STEPS optimiser steps (batch 2) on offline features of the same DIALOGUES dialogues (the same
# ShareGPT ids in both data arms, each seen once at the defaults), evaluates held-out top-1 on the same held-out
# self-distilled dialogues (left out of every arm), then all drafts answer QUESTIONS MT-bench questions at T=0
# side by side against one vanilla (tree 8 / 4 / 2, oneDNN kernels), and one table is printed. The compute dtype
# is "auto" (bf16 only where this CPU has bf16 units). Resumable: rerun to continue.
#
#   bash scripts/ab_small.sh     # STEPS=200 DIALOGUES=400 QUESTIONS=10 REGEN=datasets/smollm2_sharegpt_2000/smollm2_sharegpt_2000.jsonl.gz
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
steps=${STEPS:-200}
dialogues=${DIALOGUES:-400}
regen=${REGEN:-datasets/smollm2_sharegpt_2000/smollm2_sharegpt_2000.jsonl.gz}
out=${OUT:-runs/ab}
mkdir -p "$out" data/ab
[[ -f "$regen" ]] || { echo "no self-distilled data at $regen (python -m train.regenerate, then train.pack_regen)" >&2; exit 2; }
target="$("$PYTHON" -c 'from hass.zoo import ensure_smollm2; print(ensure_smollm2())' | tail -n 1)"
sharegpt="$("$PYTHON" -c 'from hass.zoo import ensure_sharegpt; print(ensure_sharegpt())' | tail -n 1)"
n=$("$PYTHON" -c 'import json,sys; print(json.load(open(sys.argv[1]))["dialogues"])' "${regen%.jsonl.gz}.stats.json")

# the same dialogues in both arms: the seeded sample regenerate took (seed 0, 2,000 records)
[[ -f data/ab/sharegpt_all.jsonl ]] || "$PYTHON" -m train.prepare_data --data "$sharegpt" --tokenizer "$target" \
    --max-records 2000 --seed 0 --max-length 1024 --out data/ab/sharegpt_all.jsonl
[[ -f data/ab/regen_all.jsonl ]] || "$PYTHON" -m train.prepare_data --data "$regen" --tokenizer "$target" \
    --max-length 1024 --out data/ab/regen_all.jsonl
# held out: ~3% of the self-distilled dialogues; then the first DIALOGUES other ids that both files hold
[[ -f data/ab/held_out.jsonl ]] || "$PYTHON" - "$dialogues" <<'PY'
import random, sys
from train.data import read_prepared, write_prepared
want = int(sys.argv[1])
rh, regen = read_prepared("data/ab/regen_all.jsonl")
sh, share = read_prepared("data/ab/sharegpt_all.jsonl")
held = random.Random(0).sample(regen, max(20, len(regen) // 30))
held_ids = {s["id"] for s in held}
share_by_id = {s["id"]: s for s in share}
ids = [s["id"] for s in regen if s["id"] not in held_ids and s["id"] in share_by_id][:want]
if len(ids) < want:
    sys.exit(f"only {len(ids)} dialogues are in both files outside the held-out ones; lower DIALOGUES")
regen_by_id = {s["id"]: s for s in regen}
write_prepared("data/ab/regen.jsonl", dict(rh, subset_of="data/ab/regen_all.jsonl"), [regen_by_id[i] for i in ids])
write_prepared("data/ab/sharegpt.jsonl", dict(sh, subset_of="data/ab/sharegpt_all.jsonl"), [share_by_id[i] for i in ids])
write_prepared("data/ab/held_out.jsonl", dict(rh, held_out_of="data/ab/regen_all.jsonl"), held)
tokens = lambda xs: sum(len(s["input_ids"]) for s in xs)
print(f"{len(held)} held-out self-distilled dialogues; {len(ids)} training dialogues per arm: "
      f"{tokens(regen_by_id[i] for i in ids)} tokens self-distilled, {tokens(share_by_id[i] for i in ids)} ShareGPT")
PY
for arm in sharegpt regen; do
  "$PYTHON" -m train.features --target "$target" --data "data/ab/$arm.jsonl" --out "data/ab/features_$arm"
done

train() {  # NAME DATA [--key value ...]
  local name=$1 data=$2
  shift 2
  "$PYTHON" -m train.trainer --config configs/ab_smollm2_eagle2.json --data "data/ab/$data.jsonl" \
      --features "data/ab/features_$data" --eval_data data/ab/held_out.jsonl --max_steps "$steps" \
      --output_dir "$out/$name" --resume auto "$@"
}
train sharegpt_v16k sharegpt --draft_vocab_size 16384
train regen_v16k regen --draft_vocab_size 16384
train regen_full regen
train regen_v16k_init regen --draft_vocab_size 16384 --init_layer target

methods="vanilla"
for name in sharegpt_v16k regen_v16k regen_full regen_v16k_init; do
  methods="$methods,hass[draft=$out/$name/final]"
done
"$PYTHON" -m evaluation.run --base "$target" --draft "$out/regen_v16k/final" --bench mt_bench \
    --methods "$methods" --questions "${QUESTIONS:-10}" --temperature 0 --total-tokens 8 --depth 4 --top-k 2 \
    --max-new-tokens 128 --dtype fp32 --draft-dtype bf16 --cpu-kernels onednn --warmup 1 --out "$out/mt_bench_T0.jsonl"
"$PYTHON" -m evaluation.report "$out/mt_bench_T0.jsonl" --out-dir "$out/report"
"$PYTHON" - "$out" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
print("| arm | held-out top-1 (final eval) | outside the draft vocabulary |\n|---|---|---|")
for name in ("sharegpt_v16k", "regen_v16k", "regen_full", "regen_v16k_init"):
    evals = [json.loads(l) for l in (out / name / "log.jsonl").read_text().splitlines() if '"eval"' in l]
    last = evals[-1]
    print(f"| {name} | {last['acc_s1']:.3f} | {last.get('outside', float('nan')):.3f} |")
PY
