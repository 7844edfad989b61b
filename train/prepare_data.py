"""Tokenize ShareGPT-style dialogues with the target's template into a prepared-data file for training.

    python -m train.prepare_data --data ShareGPT_V3_unfiltered_cleaned_split.json \
        --tokenizer path/to/target --template chat --max-records 2000 --out data/sharegpt_2000.jsonl

Dialogues are shuffled with `--seed` before `--max-records` are taken, so a small file is a random sample
of the whole, not its first conversations.
"""
from __future__ import annotations

import argparse
import random
import time

from tqdm import tqdm
from transformers import AutoTokenizer

from train.data import TEMPLATES, read_dialogues, tokenize_dialogues, write_prepared


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="ShareGPT-style JSON list or JSONL (may be truncated)")
    parser.add_argument("--tokenizer", required=True, help="folder of the target's tokenizer")
    parser.add_argument("--template", default="chat", choices=TEMPLATES,
                        help="chat: the tokenizer's chat template; vicuna / llama-2: FastChat's templates")
    parser.add_argument("--max-length", type=int, default=2048, help="tokens per sample (longer ones are cut)")
    parser.add_argument("--max-records", type=int, default=None, help="keep this many dialogues at most")
    parser.add_argument("--seed", type=int, default=0, help="shuffle seed for choosing --max-records")
    parser.add_argument("--out", required=True, help="prepared JSONL file to write")
    args = parser.parse_args(argv)
    if args.max_length < 2:
        parser.error(f"--max-length must be >= 2, got {args.max_length}")
    if args.max_records is not None and args.max_records < 1:
        parser.error(f"--max-records must be >= 1, got {args.max_records}")

    start = time.perf_counter()
    dialogues, stats = read_dialogues(args.data)
    print(f"{args.data}: {stats.n_records} records read, {stats.n_skipped} skipped "
          f"({stats.n_unusable} without a user->assistant exchange, {stats.n_invalid} invalid JSON, "
          f"{stats.tail_chars} trailing characters ignored), {stats.n_kept} kept; "
          f"{stats.n_leading_dropped} had leading non-user turns dropped, {stats.n_cut} were cut at a "
          f"malformed turn")
    random.Random(args.seed).shuffle(dialogues)
    dialogues = dialogues[:args.max_records]

    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    samples, n_empty = tokenize_dialogues(tqdm(dialogues, desc="tokenizing", unit="dialogue"), tokenizer,
                                          args.template, args.max_length)
    n_tokens = sum(len(s["input_ids"]) for s in samples)
    n_assistant = sum(sum(s["loss_mask"]) for s in samples)
    header = {"tokenizer": args.tokenizer, "template": args.template, "max_length": args.max_length,
              "n_skipped": stats.n_skipped + n_empty, "source": args.data, "seed": args.seed,
              "n_tokens": n_tokens, "n_assistant_tokens": n_assistant}
    write_prepared(args.out, header, samples)
    print(f"{len(dialogues)} dialogues tokenized, {n_empty} dropped (no answer token within "
          f"{args.max_length} tokens), {len(samples)} samples written to {args.out}: {n_tokens} tokens, "
          f"{n_assistant} assistant tokens ({n_assistant / max(n_tokens, 1):.1%}), "
          f"{time.perf_counter() - start:.1f}s")


if __name__ == "__main__":
    main()
