"""Pick the draft tree for this machine: time the candidate trees of a draft's acceptance record, choose the
one with the most expected tokens per second (hass.auto_tree), print why, and cache the timings.

    python -m evaluation.auto_tree --base TARGET --draft DRAFT --dtype fp32 --draft-dtype bf16 --cpu-kernels onednn

The candidates are the trees in the draft's ``acceptance.json`` (evaluation.record_acceptance) and their
shallower versions. Each is timed with hass.cycle_timing (drafting, the verification forward, the consume;
round-robin), with the draft vocabulary the draft uses by default. The timings are cached in
``$HASS_CACHE/auto_tree/`` under a key of the machine, the settings and the candidates, so a second call
costs nothing; ``--refresh`` times again. In Python: ``HassModel.auto_tree()`` or ``generate(tree="auto")``. The last line is the choice, e.g. ``tree 8/4/2`` (or ``tree none``:
plain decoding is faster here).
"""
from __future__ import annotations

import argparse
import sys

from hass import HassModel
from hass.auto_tree import auto_tree, format_choice, load_acceptance
from hass.errors import CheckpointError
from hass.kernels import CPU_KERNELS
from hass.precision import resolve_dtype_name

from .run import DTYPES


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m evaluation.auto_tree", description=__doc__.splitlines()[0])
    p.add_argument("--base", required=True)
    p.add_argument("--draft", required=True)
    p.add_argument("--dtype", default="fp32")
    p.add_argument("--draft-dtype", default="bf16", help="bf16 | fp16 | fp32 | auto (bf16 where the CPU has bf16 "
                   "units or on a GPU, else fp32)")
    p.add_argument("--cpu-kernels", default="auto", choices=CPU_KERNELS)
    p.add_argument("--draft-vocab", default=None,
                   help="draft over the N most frequent tokens (default: the N the draft was trained over, else all)")
    p.add_argument("--context", type=int, default=300)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--refresh", action="store_true", help="time again even if cached")
    args = p.parse_args(argv)
    if args.draft_dtype == "auto":
        args.draft_dtype = resolve_dtype_name("auto", "cpu")
    for name in (args.dtype, args.draft_dtype):
        if name not in DTYPES:
            p.error(f"unknown dtype {name!r}")
    vocab = None if args.draft_vocab is None else ("all" if args.draft_vocab == "all" else int(args.draft_vocab))
    try:
        load_acceptance(args.draft)  # before any weights load
        model = HassModel.from_pretrained(args.base, args.draft, dtype=DTYPES[args.dtype],
                                          draft_dtype=DTYPES[args.draft_dtype], cpu_kernels=args.cpu_kernels,
                                          draft_vocab_size=vocab)
        choice = auto_tree(model, args.draft, context=args.context, repeats=args.repeats, refresh=args.refresh)
    except (CheckpointError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print(format_choice(choice))


if __name__ == "__main__":
    main()
