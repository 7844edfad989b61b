"""What one speculative cycle costs on this machine, and the acceptance length a tree needs to pay off.

    python -m evaluation.cycle_cost --base BASE --draft DRAFT --dtype fp32 --draft-dtype bf16 \
        --trees 60/6/10,10/3/3,5/4/1 [--draft-vocab 16384,8192] --out outputs/cycle_cost.json

A cycle of HassModel is: draft the tree (``expand_tree``: depth - 1 batched draft forwards plus the level-1
projection and the re-ranking), one target forward over the tree's total_tokens, and the draft consuming the
accepted tokens. Vanilla decoding is one target forward of one token per token. So a tree gives a speedup of

    speedup = tau * vanilla_step / cycle        (tau = tokens per cycle, bonus included)

and breaks even at tau = cycle / vanilla_step. This script times every piece on real weights over a
``--context``-token cache, round-robin (each repeat times every piece once, so load changes hit all alike),
and prints the median of each, the break-even tau of each tree and the tau it needs for 2x. It measures cost
only; the acceptance length comes from ``evaluation.run``. No answer depends on the draft's weights here.
``--draft-vocab`` adds, for each size N, every tree drafted with the N most frequent tokens only
(hass.draft_vocab), timed in the same round-robin. ``--draft-dtype bf16,fp32`` times the draft in each dtype,
also in the same round-robin (rows of the later ones end in ``[fp32]``): whether bf16 drafting pays depends on
the CPU (hass.precision).
"""
from __future__ import annotations

import argparse
import json
import sys

import torch
from transformers import AutoConfig, AutoModelForCausalLM

from hass import DraftModel, HassModel, TreeConfig
from hass.cycle_timing import measure
from hass.draft_vocab import draft_vocab_from
from hass.files import atomic_write_text
from hass.kernels import apply_cpu_kernels, pack_draft, resolve_cpu_kernels
from hass.precision import bf16_is_fast, resolve_dtype_name

from .run import DTYPES


def parse_trees(text: str) -> list[TreeConfig]:
    return [TreeConfig.parse(item) for item in text.split(",")]


def table(result: dict) -> str:
    ms = result["milliseconds"]
    steps = "; ".join(f"{k}: {v:.1f} ms" for k, v in ms.items() if k.startswith("vanilla step"))
    lines = [f"{steps} (1 token); draft consume: {ms['draft consume (2 tokens)']:.1f} ms",
             "", "| tree | verify ms (lm_head rows) | verify / vanilla step | drafting ms | cycle ms | break-even tau "
                 "| tau for 2x |",
             "|---|---|---|---|---|---|---|"]
    for r in result["trees"]:
        lines.append(f"| {r['tree']} | {r['verify_ms']:.1f} ({r['logit_rows']}) | {r['verify_over_vanilla']:.2f} | "
                     f"{r['drafting_ms']:.1f} | {r['cycle_ms']:.1f} | {r['break_even_tau']:.2f} | {r['tau_for_2x']:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m evaluation.cycle_cost", description=__doc__.split("\n")[0])
    p.add_argument("--base", required=True, help="target model folder")
    p.add_argument("--draft", required=True, help="draft model folder")
    p.add_argument("--dtype", default="fp32", help=" | ".join(DTYPES))
    p.add_argument("--draft-dtype", default=None,
                   help="default: --dtype; auto = bf16 where the device has bf16 matrix units, else fp32. Several, "
                        "comma-separated (e.g. bf16,fp32), time the draft in each, side by side; the first is the main")
    p.add_argument("--trees", default="60/6/10,20/4/4,10/3/3,8/4/2,5/4/1", help="TOTAL/DEPTH/TOP_K,...")
    p.add_argument("--draft-vocab", default="", help="also time drafting with these draft vocabulary sizes: N,N,...")
    p.add_argument("--context", type=int, default=300, help="cached tokens before the cycle (a typical prompt)")
    p.add_argument("--cpu-kernels", default="default",
                   help="default | onednn | affine, or several comma-separated (e.g. onednn,affine: the later ones "
                        "time another copy of the target and the draft with those kernels, side by side; "
                        "hass.kernels)")
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--out", default=None, help="write the result (and the settings) as JSON here")
    args = p.parse_args(argv)
    if args.dtype not in DTYPES:
        p.error(f"unknown dtype {args.dtype!r}; choose one of {', '.join(DTYPES)}")
    try:
        draft_dtypes = [resolve_dtype_name(name.strip()) for name in (args.draft_dtype or args.dtype).split(",")]
    except ValueError as e:
        p.error(f"--draft-dtype: {e}")
    if len(set(draft_dtypes)) < len(draft_dtypes):
        p.error(f"--draft-dtype: {args.draft_dtype!r} names one dtype twice (auto is {resolve_dtype_name('auto')} here)")
    try:
        trees = parse_trees(args.trees)
    except ValueError as e:
        p.error(str(e))
    if args.context < 3 or args.repeats < 1:
        p.error("--context must be >= 3 and --repeats >= 1")
    vocabs = {}
    if args.draft_vocab:
        try:
            sizes = [int(x) for x in args.draft_vocab.split(",")]
            vocab_size = AutoConfig.from_pretrained(args.base).vocab_size
            vocabs = {size: draft_vocab_from(args.draft, size, vocab_size) for size in sizes}
        except (ValueError, OSError) as e:  # also CheckpointError: no, a broken or a mismatched counts file
            p.error(f"--draft-vocab: {e}")
        if min(sizes) < max(t.top_k for t in trees):
            p.error("--draft-vocab: a size is below a tree's top_k")
    kernels = [k.strip() for k in args.cpu_kernels.split(",")]
    if any(k not in ("default", "onednn", "affine") for k in kernels) or len(set(kernels)) < len(kernels):
        p.error(f"--cpu-kernels: expected distinct names out of default, onednn, affine, got {args.cpu_kernels!r}")
    try:
        for k in kernels:
            resolve_cpu_kernels(k, "cpu", DTYPES[args.dtype], flag="--cpu-kernels")
    except ValueError as e:
        p.error(str(e))
    model = HassModel.from_pretrained(args.base, args.draft, dtype=DTYPES[args.dtype],
                                      draft_dtype=DTYPES[draft_dtypes[0]], cpu_kernels=kernels[0])
    others = {name: DraftModel.from_pretrained(args.draft, dtype=DTYPES[name]) for name in draft_dtypes[1:]}
    other_targets = {}
    for k in kernels[1:]:  # the same weights, packed (or not) the other way, the draft as from_pretrained does it
        other = AutoModelForCausalLM.from_pretrained(args.base, dtype=DTYPES[args.dtype]).eval()
        its_draft = DraftModel.from_pretrained(args.draft, dtype=DTYPES[draft_dtypes[0]])
        apply_cpu_kernels(other, k)
        pack_draft(its_draft, k)
        other_targets[f"kernels={k}"] = (other, its_draft)
    result = measure(model, trees, args.context, args.repeats, vocabs=vocabs, other_drafts=others,
                     other_targets=other_targets)
    result["settings"] = {**vars(args), "draft_dtypes": draft_dtypes, "threads": torch.get_num_threads(),
                          "torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                          "bf16_matmul_fast": bf16_is_fast()}
    print(table(result))
    if args.out:
        out = atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
        print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
