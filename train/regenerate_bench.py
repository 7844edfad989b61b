"""How fast train.regenerate answers, side by side: padded ``generate`` batches vs continuous batching.

    python -m train.regenerate_bench --base TARGET --data ShareGPT.json --dialogues 48 --slots 16,32

Both answer the first user turn of the same dialogues (a seeded sample), greedy, with the same cap on new
tokens, in one process, one after the other: (a) what train.regenerate did before, ``model.generate`` on
left-padded batches of ``--batch-size`` dialogues in the order given, each batch running until its longest
answer ends; (b) ``train.continuous.ContinuousBatcher`` with each ``--slots`` value, shortest prompt first.
It prints answer tokens/s of each and the ratio to (a), with the machine (CPU capability, threads).
"""
from __future__ import annotations

import argparse
import json
import random
import time

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

from evaluation import run
from train.continuous import ContinuousBatcher
from train.data import encode_prompt, read_dialogues
from train.regenerate import DTYPES, user_turns


class _OneTurn:
    def __init__(self, prompt: list[int], answers: list):
        self.prompt, self.answers = prompt, answers

    def first_prompt(self):
        return self.prompt

    def answered(self, answer, stopped):
        self.answers.append(len(answer))
        return None


@torch.inference_mode()
def padded(target, prompts: list[list[int]], batch_size: int, max_new_tokens: int, eos: set[int], pad: int) -> int:
    """Answer tokens written by ``generate`` on left-padded batches (eos excluded)."""
    cfg = GenerationConfig(max_new_tokens=max_new_tokens, eos_token_id=sorted(eos), pad_token_id=pad,
                           do_sample=False)
    total = 0
    for s in range(0, len(prompts), batch_size):
        batch = prompts[s:s + batch_size]
        width = max(map(len, batch))
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in batch])
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in batch])
        for row in target.generate(ids, attention_mask=mask, generation_config=cfg)[:, width:].tolist():
            total += next((i for i, t in enumerate(row) if t in eos), len(row))
    return total


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m train.regenerate_bench", description=__doc__.splitlines()[0])
    p.add_argument("--base", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--dialogues", type=int, default=48)
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--max-prompt-tokens", type=int, default=1024)
    p.add_argument("--batch-size", type=int, default=32, help="the padded baseline's batch")
    p.add_argument("--slots", default="32", help="comma-separated slot counts for continuous batching")
    p.add_argument("--dtype", default="bf16", choices=sorted(DTYPES))
    p.add_argument("--skip-padded", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    tokenizer = AutoTokenizer.from_pretrained(args.base)
    target = AutoModelForCausalLM.from_pretrained(args.base, dtype=DTYPES[args.dtype]).eval()
    dialogues, _ = read_dialogues(args.data)
    random.Random(args.seed).shuffle(dialogues)
    prompts = []
    for d in dialogues:
        system, users = user_turns(d, 1)
        prompt = encode_prompt(system + [{"role": "user", "content": users[0]}], "chat", tokenizer)
        if len(prompt) <= args.max_prompt_tokens:
            prompts.append(prompt)
        if len(prompts) == args.dialogues:
            break
    eos = set(run.eos_ids(tokenizer, target))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(eos)
    print(f"{len(prompts)} prompts ({sum(map(len, prompts))} tokens), cap {args.max_new_tokens} new tokens, "
          f"{args.dtype}, machine {json.dumps(run.machine('cpu'))}")
    rows = []
    if not args.skip_padded:
        start = time.perf_counter()
        n = padded(target, prompts, args.batch_size, args.max_new_tokens, eos, pad)
        rows.append((f"generate, padded batches of {args.batch_size}", n, time.perf_counter() - start))
    for slots in map(int, args.slots.split(",")):
        answers: list[int] = []
        batcher = ContinuousBatcher(target, slots=slots, capacity=args.max_prompt_tokens + args.max_new_tokens + 1,
                                    max_new_tokens=args.max_new_tokens, eos=eos)
        start = time.perf_counter()
        stats = batcher.run([_OneTurn(q, answers) for q in sorted(prompts, key=len)])
        rows.append((f"continuous, {slots} slots", stats.answer_tokens, time.perf_counter() - start))
        print(json.dumps({"slots": slots, "decode_steps": stats.decode_steps, "prefill": stats.prefill_tokens,
                          "reused": stats.reused_tokens, "stopped": stats.stopped}))
    base = rows[0][1] / rows[0][2]
    print("| engine | answer tokens | seconds | answer tokens/s | vs first |\n|---|---|---|---|---|")
    for name, n, sec in rows:
        print(f"| {name} | {n} | {sec:.1f} | {n / sec:.1f} | {n / sec / base:.2f}x |")


if __name__ == "__main__":
    main()
