#!/usr/bin/env bash
# Train the two shipped SmolLM2-135M-Instruct drafts on this CPU (issue 5), HASS then EAGLE-2, same data,
# steps and seed, and copy each final draft into checkpoints/. Rerunning resumes a killed run.
#   bash scripts/train_default_drafts.sh        (logs: runs/smollm2_cpu_<kind>/stage<N>/log.jsonl)
set -euo pipefail
cd "$(dirname "$0")/.."
data=data/SmolLM2-135M-Instruct_sharegpt_2000.jsonl
if [ ! -f "$data" ]; then
  bash scripts/prepare_data.sh SmolLM2-135M-Instruct 2000   # writes data/sharegpt_SmolLM2-135M-Instruct_2000.jsonl
  mv data/sharegpt_SmolLM2-135M-Instruct_2000.jsonl "$data"
fi
for kind in hass eagle2; do
  for stage in 1 2 3; do
    python -m train.trainer --config configs/smollm2_cpu_$kind.json --stage $stage --resume auto
  done
done
python - <<'PY'
import shutil
from pathlib import Path
for kind, name in (("hass", "HASS"), ("eagle2", "EAGLE2")):
    run, dst = Path(f"runs/smollm2_cpu_{kind}"), Path(f"checkpoints/SmolLM2-135M-Instruct-{name}")
    dst.mkdir(parents=True, exist_ok=True)
    for f in ("config.json", "model.safetensors"):
        shutil.copy(run / "stage3/final" / f, dst / f)
    for stage in (1, 2, 3):  # the resolved config and the training curve of each stage
        shutil.copy(run / f"stage{stage}/final/train_config.json", dst / f"train_config_stage{stage}.json")
        shutil.copy(run / f"stage{stage}/training_curve.png", dst / f"training_curve_stage{stage}.png")
    print("shipped", dst)
PY
for name in HASS EAGLE2; do  # answer-token counts for draft_vocab_size (hass.draft_vocab)
  python -m train.token_counts --data "$data" --draft "checkpoints/SmolLM2-135M-Instruct-$name"
done
