"""Pick the draft tree for this machine: time the candidate trees of a draft's acceptance record, choose the
one with the most expected tokens per second (hass.auto_tree), print why, and cache the timings.

    python -m evaluation.auto_tree --base TARGET --draft DRAFT --dtype fp32 --draft-dtype bf16 --cpu-kernels onednn

The candidates are the trees in the draft's ``acceptance.json`` (evaluation.record_acceptance) and their
shallower versions. Each is timed with evaluation.cycle_cost (drafting, the verification forward, the
consume; round-robin), with the draft vocabulary the draft uses by default. The timings are cached in
``$HASS_CACHE/auto_tree/`` under a key of the machine, the settings and the candidates, so a second call
costs nothing; ``--refresh`` times again. The last line is the choice, e.g. ``tree 8/4/2`` (or ``tree none``:
plain decoding is faster here).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys

import torch

from hass import HassModel
from hass.auto_tree import candidates, choose_tree, load_acceptance, tree_name
from hass.errors import CheckpointError
from hass.files import atomic_write_text

from .benchmarks import cache_dir
from .cycle_cost import measure
from .run import DTYPES, machine


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m evaluation.auto_tree", description=__doc__.splitlines()[0])
    p.add_argument("--base", required=True)
    p.add_argument("--draft", required=True)
    p.add_argument("--dtype", default="fp32")
    p.add_argument("--draft-dtype", default="bf16")
    p.add_argument("--cpu-kernels", default="default", choices=("default", "onednn"))
    p.add_argument("--draft-vocab", default=None,
                   help="draft over the N most frequent tokens (default: the N the draft was trained over, else all)")
    p.add_argument("--context", type=int, default=300)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--refresh", action="store_true", help="time again even if cached")
    args = p.parse_args(argv)
    for name in (args.dtype, args.draft_dtype):
        if name not in DTYPES:
            p.error(f"unknown dtype {name!r}")
    try:
        taus = candidates(load_acceptance(args.draft))
    except (CheckpointError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    names = sorted(tree_name(t) for t in taus)
    vocab = None if args.draft_vocab is None else ("all" if args.draft_vocab == "all" else int(args.draft_vocab))
    key = hashlib.sha256(json.dumps([machine("cpu"), args.base, args.draft, args.dtype, args.draft_dtype,
                                     args.cpu_kernels, args.context, vocab, names], sort_keys=True).encode()).hexdigest()[:16]
    cached = cache_dir() / "auto_tree" / f"{key}.json"
    if cached.is_file() and not args.refresh:
        timing = json.loads(cached.read_text())
        print(f"timings from {cached}", file=sys.stderr)
    else:
        model = HassModel.from_pretrained(args.base, args.draft, dtype=DTYPES[args.dtype],
                                          draft_dtype=DTYPES[args.draft_dtype], cpu_kernels=args.cpu_kernels,
                                          draft_vocab_size=vocab)
        vocabs = {int(model.draft_vocab.numel()): model.draft_vocab} if model.draft_vocab is not None else None
        result = measure(model, list(taus), args.context, args.repeats, vocabs=vocabs)
        suffix = f" V={next(iter(vocabs))}" if vocabs else ""
        timing = {"step_ms": result["milliseconds"]["vanilla step"],
                  "cycle_ms": {r["tree"].removesuffix(suffix): r["cycle_ms"] for r in result["trees"]
                               if r["tree"].endswith(suffix) and (suffix or " " not in r["tree"])}}
        atomic_write_text(cached, json.dumps(timing, indent=2) + "\n")
    cycle = {t: timing["cycle_ms"][tree_name(t)] for t in taus}
    choice = choose_tree(taus, cycle, timing["step_ms"])
    print(f"one-token step {timing['step_ms']:.1f} ms\n\n| tree | expected tau | cycle ms | expected speedup |\n"
          "|---|---|---|---|")
    for name, tau, ms, speedup in choice.table:
        print(f"| {name} | {tau:.2f} | {ms:.1f} | {speedup:.2f}x |")
    print(f"tree {tree_name(choice.tree) if choice.tree else 'none'}")


if __name__ == "__main__":
    main()
