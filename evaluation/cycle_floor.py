"""The least a tree verification can cost on this CPU: each extra row is compute the cores must do.

    python -m evaluation.cycle_floor --base TARGET --step-ms 22.2 --rows 4,8,60

A one-token step of a small target reads its weights once and does little arithmetic; a verification of R rows
reads the same weights and does R times the multiply-adds. However the weights are stored, R - 1 extra rows cost
at least (R - 1) x 2 x (multiply-adds per token) / (the cores' fp32 rate). This prints that floor beside a measured
one-token step: the lowest ``verify / step`` ratio any fp32 kernel could reach here, drafting not counted. The
fp32 rate is measured on this machine as the throughput of a large square fp32 product (oneDNN's GEMM runs near
the FMA units' peak); the multiply-adds per token are the target's linear layers and its lm_head, counted from its
config on the meta device (attention over the context is left out: the floor only gets higher with it).
"""
from __future__ import annotations

import argparse
import json
import time

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM

from hass.files import atomic_write_text


def linear_macs_per_token(config) -> int:
    """Multiply-adds per token in the linear layers of a model built from ``config`` (lm_head included, tied or
    not), without allocating weights."""
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    total = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear))
    head = model.get_output_embeddings()
    if head is not None and not isinstance(head, nn.Linear):
        total += head.weight.numel()
    return int(total)


def extra_rows_floor_ms(macs_per_token: int, flops_per_s: float, rows: int) -> float:
    """The compute the rows beyond the first add to a forward, at the given rate, in milliseconds."""
    if rows < 1 or flops_per_s <= 0:
        raise ValueError(f"rows must be >= 1 and the rate positive, got rows={rows}, rate={flops_per_s}")
    return (rows - 1) * 2.0 * macs_per_token / flops_per_s * 1e3


def gemm_flops(n: int = 2048, repeats: int = 5) -> float:
    """fp32 multiply-add throughput of this machine's threads, in FLOP/s: the best of ``repeats`` n^3 products."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)  # warm-up (oneDNN picks and caches its kernel)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t)
    return 2.0 * n ** 3 / best


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m evaluation.cycle_floor", description=__doc__.split("\n")[0])
    p.add_argument("--base", required=True, help="target model folder (its config is all that is read)")
    p.add_argument("--step-ms", type=float, required=True,
                   help="a measured one-token step of that target here, ms (evaluation.auto_tree / cycle_cost)")
    p.add_argument("--rows", default="4,8,20,60", help="verification sizes, comma-separated")
    p.add_argument("--out", default=None, help="write the table (.md) and the numbers (.json beside it)")
    args = p.parse_args(argv)
    try:
        rows = [int(r) for r in args.rows.split(",")]
    except ValueError:
        p.error(f"--rows must be integers separated by commas, got {args.rows!r}")
    if any(r < 1 for r in rows) or args.step_ms <= 0:
        p.error("--rows must be >= 1 and --step-ms positive")
    config = AutoConfig.from_pretrained(args.base)  # fails here, before any timing, on a bad folder
    macs = linear_macs_per_token(config)
    rate = gemm_flops()
    lines = [f"threads {torch.get_num_threads()}, fp32 GEMM {rate / 1e9:.0f} GFLOP/s, {macs / 1e6:.1f}M multiply-adds "
             f"a token; one-token step {args.step_ms:.1f} ms", "",
             "| rows verified | extra rows' floor (ms) | verify floor / step |", "|---|---|---|"]
    result = {"threads": torch.get_num_threads(), "gemm_flops": rate, "macs_per_token": macs,
              "step_ms": args.step_ms, "rows": {}}
    for r in rows:
        extra = extra_rows_floor_ms(macs, rate, r)
        result["rows"][r] = {"extra_ms": extra, "verify_over_step": 1 + extra / args.step_ms}
        lines.append(f"| {r} | {extra:.1f} | {1 + extra / args.step_ms:.2f} |")
    text = "\n".join(lines)
    print(text)
    if args.out:
        atomic_write_text(args.out, text + "\n")
        atomic_write_text(args.out.rsplit(".", 1)[0] + ".json", json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
