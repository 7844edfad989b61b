"""Target forward time with the default CPU kernels against oneDNN-packed linear layers, side by side.

    python -m evaluation.kernel_bench --base TARGET_DIR --dtypes fp32,bf16 --tokens 1,8,16,60

For each dtype it loads the target twice (one copy packed with hass.kernels.pack_linears), fills a KV cache with
a ``--context``-token prompt, then times a forward of each token count over that cache (what a vanilla step,
a tree verification and a prefill are), alternating the two copies repeat by repeat, and prints the medians,
their ratio and the largest logit difference between the two.
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import time

import torch
from transformers import AutoModelForCausalLM

from hass import hf
from hass.kernels import pack_linears

from .run import DTYPES, machine


@torch.inference_mode()
def _prepare(model, context: int):
    cache = hf.new_cache(model.config, context + 256)
    ids = torch.randint(0, model.config.vocab_size, (1, context), generator=torch.Generator().manual_seed(0))
    hf.target_forward(model, ids, torch.arange(context)[None], None, cache, context - 1)
    return cache


@torch.inference_mode()
def _forward(model, cache, context: int, n: int):
    x = torch.randint(0, model.config.vocab_size, (1, n), generator=torch.Generator().manual_seed(n))
    keep = torch.ones(n, context + n, dtype=torch.bool).tril(context)
    mask = hf.additive_mask(keep, model.get_input_embeddings().weight.dtype)[None, None]
    cache.crop(context)
    start = time.perf_counter()
    _, logits = hf.target_forward(model, x, torch.arange(context, context + n)[None], mask, cache)
    return time.perf_counter() - start, logits


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m evaluation.kernel_bench", description=__doc__.splitlines()[0])
    p.add_argument("--base", required=True)
    p.add_argument("--dtypes", default="fp32,bf16")
    p.add_argument("--tokens", default="1,8,16,60")
    p.add_argument("--context", type=int, default=300)
    p.add_argument("--repeats", type=int, default=15)
    args = p.parse_args(argv)
    counts = [int(x) for x in args.tokens.split(",")]
    print(f"machine {json.dumps(machine('cpu'))}; context {args.context}, {args.repeats} repeats, medians")
    print("| dtype | tokens | default (ms) | oneDNN packed (ms) | speedup | max logit difference |\n|---|---|---|---|---|---|")
    for name in args.dtypes.split(","):
        plain = AutoModelForCausalLM.from_pretrained(args.base, dtype=DTYPES[name]).eval()
        packed = copy.deepcopy(plain)
        pack_linears(packed)
        caches = {"plain": _prepare(plain, args.context), "packed": _prepare(packed, args.context)}
        for n in counts:
            times = {"plain": [], "packed": []}
            logits = {}
            for _ in range(args.repeats):
                for label, model in (("plain", plain), ("packed", packed)):
                    seconds, logits[label] = _forward(model, caches[label], args.context, n)
                    times[label].append(seconds)
            a, b = (statistics.median(times[k]) * 1000 for k in ("plain", "packed"))
            diff = float((logits["plain"] - logits["packed"]).abs().max())
            print(f"| {name} | {n} | {a:.1f} | {b:.1f} | {a / b:.2f}x | {diff:.1e} |", flush=True)
        del plain, packed, caches


if __name__ == "__main__":
    main()
