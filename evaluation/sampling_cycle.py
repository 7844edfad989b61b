"""What sampling adds to a decode cycle: milliseconds per target forward at T = 0 and at T = 1, side by side.

    python -m evaluation.sampling_cycle --base TARGET --draft DRAFT --tree 8/4/2 --dtype fp32 --draft-dtype bf16 \
        --cpu-kernels onednn --out outputs/results/sampling_cycle.json

A cycle at T = 1 differs from a greedy one only in its verification: the target's distribution is processed
(temperature, top-k, top-p) and sampled on the rows the rejection walk visits, against the draft's. Drafting, the
tree forward and the consume are the same work. So the decode itself is timed: each prompt is answered at T = 0
and at each sampling setting in turn (round-robin, so load changes hit all alike), and the cost of a cycle is the
time over the target forwards after the prefill. The prefill (the same at every setting) is left out by timing it
alone once per prompt. Plain decoding (the same loop, no draft) is timed the same way, as the reference step.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from hass import HassModel, TreeConfig
from hass.files import atomic_write_text
from hass.kernels import CPU_KERNELS

from .run import DTYPES, machine

PROMPTS = ["Write a short story about a lighthouse keeper who finds a message in a bottle.",
           "Explain how a hash table works and when its lookups become slow.",
           "What are the main causes of inflation? Answer in a few paragraphs.",
           "Write a Python function that returns the n-th Fibonacci number, with a docstring and tests."]
SETTINGS = {"T=0": (0.0, 1.0, 0), "T=1": (1.0, 1.0, 0), "T=1 top-p 0.9 top-k 50": (1.0, 0.9, 50)}


@torch.inference_mode()
def measure(model: HassModel, prompts: list[torch.Tensor], tree: TreeConfig | None, new_tokens: int,
            repeats: int, seed: int = 0) -> dict[str, dict[str, float]]:
    """{setting: {"ms_per_forward", "tau"}} over ``repeats`` rounds of every prompt at every setting."""
    total = {name: [0.0, 0, 0] for name in SETTINGS}  # seconds after the prefill, forwards, tokens
    for r in range(repeats + 1):  # round 0 warms up
        for i, ids in enumerate(prompts):
            start = time.perf_counter()
            model.generate(ids, max_new_tokens=1, eos_token_id=[])  # the prefill alone
            prefill = time.perf_counter() - start
            for name, (temperature, top_p, top_k) in SETTINGS.items():
                gen = torch.Generator().manual_seed(seed + 1000 * r + i)
                start = time.perf_counter()
                out = model.generate(ids, max_new_tokens=new_tokens, temperature=temperature, top_p=top_p,
                                     top_k=top_k, tree=tree, eos_token_id=[], generator=gen)
                if r:
                    acc = total[name]
                    acc[0] += time.perf_counter() - start - prefill
                    acc[1] += len(out.accept_lengths)
                    acc[2] += out.new_tokens - 1
    return {name: {"ms_per_forward": 1000 * s / n, "tau": tokens / n} for name, (s, n, tokens) in total.items()}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m evaluation.sampling_cycle", description=__doc__.splitlines()[0])
    p.add_argument("--base", required=True)
    p.add_argument("--draft", required=True)
    p.add_argument("--tree", default="8/4/2", help="TOTAL/DEPTH/TOP_K[@MIN_PROB]")
    p.add_argument("--dtype", default="fp32")
    p.add_argument("--draft-dtype", default="bf16")
    p.add_argument("--cpu-kernels", default="auto", choices=CPU_KERNELS)
    p.add_argument("--new-tokens", type=int, default=96)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    try:
        tree = TreeConfig.parse(args.tree)
    except ValueError as e:
        p.error(f"--tree: {e}")
    for name in (args.dtype, args.draft_dtype):
        if name not in DTYPES:
            p.error(f"unknown dtype {name!r}")
    if args.new_tokens < 2 or args.repeats < 1:
        p.error("--new-tokens must be >= 2 and --repeats >= 1")
    model = HassModel.from_pretrained(args.base, args.draft, dtype=DTYPES[args.dtype],
                                      draft_dtype=DTYPES[args.draft_dtype], cpu_kernels=args.cpu_kernels)
    plain = HassModel(model.target, None, model.tokenizer)
    if model.tokenizer is None:
        p.error(f"{args.base} has no tokenizer to encode the prompts")
    prompts = [model.tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                                   return_tensors="pt", return_dict=True)["input_ids"]
               for text in PROMPTS]
    spec = measure(model, prompts, tree, args.new_tokens, args.repeats)
    base = measure(plain, prompts, None, args.new_tokens, args.repeats)
    greedy = spec["T=0"]["ms_per_forward"]
    lines = [f"tree {args.tree}; plain decoding {base['T=0']['ms_per_forward']:.1f} ms per token at T=0", "",
             "| setting | ms per cycle | / T=0 cycle | tau | plain ms per token |", "|---|---|---|---|---|"]
    for name, row in spec.items():
        lines.append(f"| {name} | {row['ms_per_forward']:.1f} | {row['ms_per_forward'] / greedy:.3f} | "
                     f"{row['tau']:.2f} | {base[name]['ms_per_forward']:.1f} |")
    print("\n".join(lines))
    if args.out:
        record = {"settings": vars(args), "machine": machine("cpu"), "speculative": spec, "plain": base}
        print(f"wrote {atomic_write_text(args.out, json.dumps(record, indent=2) + chr(10))}", file=sys.stderr)


if __name__ == "__main__":
    main()
