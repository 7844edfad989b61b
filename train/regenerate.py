"""Self-distillation data: answer ShareGPT's user turns with the target itself, for training a draft.

    python -m train.regenerate --data ShareGPT.json --base path/to/target --max-records 2000 \
        --turns 2 --max-new-tokens 512 --out data/regenerated.jsonl
    python -m train.prepare_data --data data/regenerated.jsonl --tokenizer path/to/target --out data/X.jsonl

A draft predicts the target, and at decoding time it drafts after the target's OWN answers. ShareGPT's fixed
answers (ChatGPT's, docs/METHOD.md section 4) are another model's text; a small target writes differently, so
training on its own answers puts the draft in the contexts it meets when decoding. This is an option beside
the paper's recipe, not part of it.

Each dialogue keeps its system message and its first ``--turns`` user turns; every assistant turn is replaced by
the target's answer (greedy, or sampled with ``--temperature``) to the dialogue so far, its own earlier answers
included. Prompts use the training template (``train.data.encode_prompt``), batches are left-padded. Output is
ShareGPT-style JSONL (``{"id", "conversations": [{"from", "value"}...]}``), one line per finished dialogue, so
``train.prepare_data`` reads it as it reads ShareGPT. Re-running with the same ``--out`` skips the dialogues
already written (a cut last line is dropped); the settings are saved beside it (``OUT.config.json``) and a
re-run with other settings is refused.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path
from typing import Callable

import torch
from tqdm import tqdm
from transformers import AutoModelForCausalLM, AutoTokenizer

from evaluation import run
from hass.files import atomic_write_text
from train.continuous import ContinuousBatcher
from train.data import TEMPLATES, Dialogue, encode_prompt, read_dialogues

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
RESUME_IGNORES = ("max_records", "batch_size")  # how much is done and how fast, not what an answer is


def user_turns(dialogue: Dialogue, turns: int) -> tuple[list[dict], list[str]]:
    """(leading system message or [], the first ``turns`` user messages)."""
    system = [m for m in dialogue.messages[:1] if m["role"] == "system"]
    users = [m["content"] for m in dialogue.messages if m["role"] == "user"][:turns]
    return system, users


def read_done(out: Path) -> set[str]:
    """Ids of the dialogues already written; a last line cut by a killed run is removed from the file."""
    if not out.is_file():
        return set()
    raw = out.read_bytes()
    good = raw[: raw.rfind(b"\n") + 1]  # everything up to the last complete line
    if len(good) != len(raw):
        with open(out, "r+b") as f:
            f.truncate(len(good))
    return {json.loads(line)["id"] for line in good.decode("utf-8").splitlines() if line.strip()}


def check_settings(out: Path, settings: dict) -> None:
    path = out.with_name(out.name + ".config.json")
    mine = {k: v for k, v in settings.items() if k not in RESUME_IGNORES}
    if path.is_file() and out.is_file():
        theirs = {k: v for k, v in json.loads(path.read_text()).items() if k not in RESUME_IGNORES}
        diff = [f"{k}: {theirs.get(k)!r} there, {mine.get(k)!r} now" for k in mine if mine.get(k) != theirs.get(k)]
        if diff:
            raise ValueError(f"{out} was written with other settings ({'; '.join(diff)}); use another --out")
    atomic_write_text(path, json.dumps(settings, indent=2) + "\n")


def loops(tokens: list[int], tail: int = 96, max_period: int = 48) -> bool:
    """Whether an answer ends in a loop: its last ``tail`` tokens repeat with some period <= ``max_period``."""
    if len(tokens) < tail:
        return False
    end = tokens[-tail:]
    return any(all(end[i] == end[i + p] for i in range(tail - p)) for p in range(1, max_period + 1))


class DialogueJob:
    """One dialogue for :class:`train.continuous.ContinuousBatcher`: its user turns, answered in order, each
    prompt holding the target's own earlier answers. ``on_done(self)`` is called once, when it ends."""

    def __init__(self, dialogue: Dialogue, turns: int, template: str, tokenizer, max_prompt_tokens: int,
                 on_done: Callable[["DialogueJob"], None]):
        system, self.users = user_turns(dialogue, turns)
        self.dialogue, self.history, self.meta = dialogue, list(system), []
        self.template, self.tokenizer, self.max_prompt_tokens, self.on_done = (template, tokenizer,
                                                                               max_prompt_tokens, on_done)
        self._asking: list[dict] | None = None
        self.first = self._next()

    def _next(self) -> list[int] | None:
        k = len(self.meta)
        if k < len(self.users):
            asking = self.history + [{"role": "user", "content": self.users[k]}]
            prompt = encode_prompt(asking, self.template, self.tokenizer)
            if len(prompt) <= self.max_prompt_tokens:  # a prompt over the limit ends the dialogue before it
                self._asking = asking
                return prompt
        self.on_done(self)
        return None

    def first_prompt(self) -> list[int] | None:
        return self.first

    def answered(self, answer: list[int], stopped: str) -> list[int] | None:
        reply = self.tokenizer.decode(answer, skip_special_tokens=True).strip()
        if not reply:  # an empty answer ends the dialogue: nothing to learn from it
            self.on_done(self)
            return None
        self.history = self._asking + [{"role": "assistant", "content": reply}]
        self.meta.append({"tokens": len(answer), "stopped": stopped, "loops": loops(answer)})
        return self._next()

    def record(self) -> dict | None:
        """The ShareGPT-style line to write, or None when no turn was answered."""
        if not self.meta:
            return None
        conv = [{"from": {"system": "system", "user": "human", "assistant": "gpt"}[m["role"]],
                 "value": m["content"]} for m in self.history]
        return {"id": self.dialogue.id, "conversations": conv, "answers": self.meta}


def regenerate(dialogues: list[Dialogue], target, tokenizer, out: Path, *, template: str, turns: int,
               max_new_tokens: int, temperature: float, batch_size: int, max_prompt_tokens: int,
               seed: int, max_context: int | None = None) -> int:
    """Answer and append every dialogue not yet in ``out`` (``batch_size`` slots, continuously refilled);
    returns how many were written. Dialogues run shortest first prompt first, so the slots hold contexts of
    similar lengths; each line is written when its dialogue ends, so a killed run loses only unfinished ones.
    ``max_context`` (default: max_prompt_tokens + max_new_tokens) caps prompt + answer: an answer that reaches
    it stops there (recorded as stopped by 'capacity')."""
    eos_ids = set(run.eos_ids(tokenizer, target))  # raises when nothing would stop an answer
    generator = torch.Generator().manual_seed(seed)
    written = 0
    with open(out, "a", encoding="utf-8") as f, tqdm(total=len(dialogues), desc="regenerating",
                                                    unit="dialogue") as bar:
        def done(job: DialogueJob) -> None:
            nonlocal written
            record = job.record()
            if record is not None:
                f.write(json.dumps(record) + "\n")
                f.flush()
                written += 1
            bar.update(1)

        jobs = [DialogueJob(d, turns, template, tokenizer, max_prompt_tokens, done) for d in dialogues]
        jobs = sorted((j for j in jobs if j.first is not None), key=lambda j: len(j.first))
        capacity = max_context if max_context is not None else max_prompt_tokens + max_new_tokens
        batcher = ContinuousBatcher(target, slots=batch_size, capacity=capacity,
                                    max_new_tokens=max_new_tokens, eos=eos_ids, temperature=temperature,
                                    generator=generator)
        start = time.perf_counter()
        stats = batcher.run(jobs, progress=lambda n: bar.set_postfix(
            tok_s=f"{n / (time.perf_counter() - start):.0f}", refresh=False))
    seconds = time.perf_counter() - start
    print(f"{stats.answer_tokens} answer tokens in {seconds:.0f}s ({stats.answer_tokens / max(seconds, 1e-9):.1f} "
          f"answer tokens/s); {stats.prefill_tokens} prompt tokens prefilled, {stats.reused_tokens} reused from "
          f"a slot's cache; answers stopped by {stats.stopped}")
    return written


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m train.regenerate", description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="ShareGPT-style JSON list or JSONL (may be truncated)")
    p.add_argument("--base", required=True, help="target model folder (with its tokenizer)")
    p.add_argument("--out", required=True, help="ShareGPT-style JSONL to write (appended to when resuming)")
    p.add_argument("--template", default="chat", choices=TEMPLATES)
    p.add_argument("--max-records", type=int, default=None, help="answer this many dialogues at most")
    p.add_argument("--seed", type=int, default=0, help="shuffle seed for choosing --max-records; sampling seed")
    p.add_argument("--turns", type=int, default=1, help="user turns answered per dialogue")
    p.add_argument("--max-new-tokens", type=int, default=512)
    p.add_argument("--max-prompt-tokens", type=int, default=1536, help="longer prompts end the dialogue there")
    p.add_argument("--max-context", type=int, default=None,
                   help="cap on prompt + answer tokens (default: --max-prompt-tokens + --max-new-tokens); set it to "
                        "the training max_length, past which nothing is trained on")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    p.add_argument("--batch-size", type=int, default=32, help="slots answered at once (continuous batching)")
    p.add_argument("--dtype", default="bf16", choices=sorted(DTYPES))
    args = p.parse_args(argv)
    for name in ("turns", "max_new_tokens", "max_prompt_tokens", "batch_size"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.max_records is not None and args.max_records < 1:
        p.error("--max-records must be >= 1")
    if args.max_context is not None and args.max_context <= args.max_prompt_tokens:
        p.error(f"--max-context ({args.max_context}) must be above --max-prompt-tokens ({args.max_prompt_tokens})")
    if not args.temperature >= 0:
        p.error(f"--temperature must be >= 0, got {args.temperature}")
    if not (Path(args.base) / "config.json").is_file():
        p.error(f"target model folder {args.base!r} does not exist or has no config.json")
    out = Path(args.out)
    start = time.perf_counter()
    try:
        dialogues, stats = read_dialogues(args.data)
        random.Random(args.seed).shuffle(dialogues)
        dialogues = dialogues[:args.max_records]
        out.parent.mkdir(parents=True, exist_ok=True)
        settings = {k: v for k, v in vars(args).items() if k != "out"}
        check_settings(out, settings)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    done = read_done(out)
    todo = [d for d in dialogues if d.id not in done]
    print(f"{args.data}: {stats.n_kept} usable dialogues, {len(dialogues)} chosen, {len(dialogues) - len(todo)} "
          f"already in {out}, {len(todo)} to answer")
    if not todo:
        return
    tokenizer = AutoTokenizer.from_pretrained(args.base)
    target = AutoModelForCausalLM.from_pretrained(args.base, dtype=DTYPES[args.dtype]).eval()
    n = regenerate(todo, target, tokenizer, out, template=args.template, turns=args.turns,
                   max_new_tokens=args.max_new_tokens, temperature=args.temperature, batch_size=args.batch_size,
                   max_prompt_tokens=args.max_prompt_tokens, seed=args.seed, max_context=args.max_context)
    print(f"{n} dialogues written to {out} ({len(todo) - n} had no answer), {time.perf_counter() - start:.0f}s")


if __name__ == "__main__":
    main()
