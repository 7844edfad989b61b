"""Count the answer tokens of a prepared-data file and store the counts beside a draft (hass.draft_vocab).

    python -m train.token_counts --data data/sharegpt_2000.jsonl --draft checkpoints/MY-DRAFT

Writes ``MY-DRAFT/token_counts.safetensors`` (one count per vocabulary id, assistant tokens only, atomically)
and prints the share of the counted tokens that the N most frequent ids cover, to help choose
``draft_vocab_size``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from hass.draft_vocab import count_tokens, save_token_counts
from train.data import read_prepared

SIZES = (2048, 4096, 8192, 16384, 32768)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m train.token_counts", description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="prepared JSONL written by train.prepare_data")
    parser.add_argument("--draft", required=True, help="draft folder (its config.json gives the vocabulary size)")
    args = parser.parse_args(argv)
    config = Path(args.draft) / "config.json"
    try:  # every input checked before the (long) count
        vocab_size = int(json.loads(config.read_text())["vocab_size"])
        if not Path(args.data).is_file():
            raise FileNotFoundError(f"prepared data file {args.data!r} does not exist")
        header, samples = read_prepared(args.data)
        counts = count_tokens(samples, vocab_size)
    except (OSError, ValueError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    path = save_token_counts(args.draft, counts, source=str(args.data))
    total = int(counts.sum())
    ranked = counts.sort(descending=True).values.cumsum(0)
    seen = int((counts > 0).sum())
    print(f"{path}: {total} answer tokens of {len(samples)} samples, {seen} distinct ids of {vocab_size}")
    for size in SIZES:
        if size < vocab_size:
            print(f"  the {size} most frequent ids cover {int(ranked[size - 1]) / max(total, 1):.1%} of them")


if __name__ == "__main__":
    main()
