"""Peak memory of a long prompt's prefill: a dense prompt x prompt float mask (what HassModel passed before)
against the model's own causal path (what it passes now), each in a fresh process.

    python -m evaluation.prefill_memory --base TARGET_DIR --tokens 8000 --dtype fp32

Each run loads the target, then prefills ``--tokens`` random token ids through ``hass.hf.target_forward`` into a
preallocated KV cache, and reports the process's peak resident memory above what it held after loading.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def _child(base: str, tokens: int, dtype: str, dense: bool) -> dict:
    import torch
    from transformers import AutoModelForCausalLM

    from evaluation.run import DTYPES
    from hass import hf

    target = AutoModelForCausalLM.from_pretrained(base, dtype=DTYPES[dtype]).eval()
    ids = torch.randint(0, target.config.vocab_size, (1, tokens), generator=torch.Generator().manual_seed(0))
    cache = hf.new_cache(target.config, tokens + 1)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    with torch.inference_mode():
        mask = None
        if dense:
            keep = torch.ones(tokens, tokens, dtype=torch.bool).tril()
            mask = hf.additive_mask(keep, target.get_input_embeddings().weight.dtype)[None, None]
        hf.target_forward(target, ids, torch.arange(tokens)[None], mask, cache, tokens - 1)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"mask": "dense" if dense else "none (causal)", "tokens": tokens, "dtype": dtype,
            "peak_above_loaded_mb": round(peak - before, 1), "seconds": round(time.perf_counter() - start, 1)}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m evaluation.prefill_memory", description=__doc__.splitlines()[0])
    p.add_argument("--base", required=True)
    p.add_argument("--tokens", type=int, default=8000)
    p.add_argument("--dtype", default="fp32")
    p.add_argument("--child", choices=("dense", "none"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(_child(args.base, args.tokens, args.dtype, args.child == "dense")))
        return
    rows = []
    for mode in ("dense", "none"):
        out = subprocess.run([sys.executable, "-m", "evaluation.prefill_memory", "--base", args.base, "--tokens",
                              str(args.tokens), "--dtype", args.dtype, "--child", mode],
                             capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print("| prefill mask | tokens | dtype | peak memory above the loaded model (MB) | seconds |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['mask']} | {r['tokens']} | {r['dtype']} | {r['peak_above_loaded_mb']} | {r['seconds']} |")


if __name__ == "__main__":
    main()
