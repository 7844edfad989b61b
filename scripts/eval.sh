#!/usr/bin/env bash
# Speed evaluation of a target and a draft: MT-bench, HumanEval and GSM8K with hass, vanilla and hf, at
# temperature 0 and 1, then one report per temperature (docs/METHOD.md section 7).
#
#   scripts/eval.sh TARGET DRAFT [BENCHES] [more evaluation.run options...]
#     TARGET   a target known to hass.zoo (e.g. SmolLM2-135M-Instruct) or a model folder
#     DRAFT    a draft model folder
#     BENCHES  comma-separated subset of mt_bench,humaneval,gsm8k (default: all three); bench:full for the
#              benchmark's full set (HumanEval 164, GSM8K 1,319) instead of the 80 questions, in <bench>_full.jsonl
#   e.g. scripts/eval.sh SmolLM2-135M-Instruct checkpoints/smollm2-hass mt_bench --quick --dtype fp32
#
# Environment: METHODS (default hass,vanilla,hf), TEMPERATURES (default "0 1"), OUT (default outputs/eval).
# Answers: $OUT/<target>__<draft>[_quick]/T<t>/<bench>.jsonl; re-running resumes them. Reports: .../T<t>/report/.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"

if [[ $# -lt 2 ]]; then
    sed -n '5,9p' "$0" >&2
    exit 2
fi
target="$1"
draft="$2"
shift 2
benches="mt_bench,humaneval,gsm8k"
if [[ $# -gt 0 && "$1" != -* ]]; then
    benches="$1"
    shift
fi
methods="${METHODS:-hass,vanilla,hf}"
temperatures="${TEMPERATURES:-0 1}"

# every question set must be found before any model loads (not needed when --question-file names one)
if [[ " $* " != *" --question-file"* ]]; then
    full=()
    if [[ " $* " == *" --full "* ]]; then
        full=(--full)
    fi
    if ! found="$("$PYTHON" -m evaluation.benchmarks "$benches" "${full[@]}" 2>&1 > /dev/null)"; then
        echo "$found" >&2
        exit 1
    fi
fi

# the path is the last line: a library imported while converting (deepspeed) may print to stdout first
model="$("$PYTHON" -c 'import sys; from hass.zoo import ensure_target; print(ensure_target(sys.argv[1]))' "$target" | tail -n 1)"
run_dir="${OUT:-outputs/eval}/$(basename "$model")__$(basename "$draft")"
if [[ " $* " == *" --quick "* ]]; then
    run_dir="${run_dir}_quick"  # quick answers never resume into (and clash with) a full run's files
fi

for t in $temperatures; do
    answers=()
    for spec in ${benches//,/ }; do
        bench="${spec%%:*}"
        size=()
        name="$bench"
        if [[ "$spec" == *:full ]]; then
            size=(--full)
            name="${bench}_full"
        fi
        out="$run_dir/T$t/$name.jsonl"
        "$PYTHON" -m evaluation.run --base "$model" --draft "$draft" --bench "$bench" --methods "$methods" \
            --temperature "$t" --out "$out" "${size[@]}" "$@"
        answers+=("$out")
    done
    "$PYTHON" -m evaluation.report "${answers[@]}" --out-dir "$run_dir/T$t/report"
done
