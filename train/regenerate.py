"""Self-distillation data: answer ShareGPT's user turns with the target itself, for training a draft.

    python -m train.regenerate --data ShareGPT.json --base path/to/target --max-records 2000 \
        --turns 2 --max-new-tokens 512 --out data/regenerated.jsonl
    python -m train.prepare_data --data data/regenerated.jsonl --tokenizer path/to/target --out data/X.jsonl

A draft predicts the target, and at decoding time it drafts after the target's OWN answers. ShareGPT's fixed
answers (ChatGPT's, REFERENCE.md section 4) are another model's text; a small target writes differently, so
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

import torch
from tqdm import tqdm
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

from evaluation import run
from hass.files import atomic_write_text
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


@torch.inference_mode()
def answer_batch(target, tokenizer, histories: list[list[dict]], template: str, gen_cfg: GenerationConfig,
                 eos: set[int]) -> list[str]:
    """The target's answer to each history (a list of messages ending with a user turn), batched."""
    prompts = [encode_prompt(h, template, tokenizer) for h in histories]
    width = max(len(p) for p in prompts)
    pad = gen_cfg.pad_token_id
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    out = target.generate(ids, attention_mask=mask, generation_config=gen_cfg)
    answers = []
    for row in out[:, width:].tolist():
        cut = next((i for i, tok in enumerate(row) if tok in eos), len(row))
        answers.append(tokenizer.decode(row[:cut], skip_special_tokens=True).strip())
    return answers


def regenerate(dialogues: list[Dialogue], target, tokenizer, out: Path, *, template: str, turns: int,
               max_new_tokens: int, temperature: float, batch_size: int, max_prompt_tokens: int,
               seed: int) -> int:
    """Answer and append every dialogue not yet in ``out``; returns how many were written."""
    eos_ids = set(run.eos_ids(tokenizer, target))  # raises when nothing would stop an answer
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(eos_ids)
    knobs = {"do_sample": False} if temperature == 0 else {"do_sample": True, "temperature": temperature,
                                                            "top_k": 0, "top_p": 1.0}
    gen_cfg = GenerationConfig(max_new_tokens=max_new_tokens, eos_token_id=sorted(eos_ids), pad_token_id=pad,
                               repetition_penalty=1.0, **knobs)
    written = 0
    with open(out, "a", encoding="utf-8") as f, tqdm(total=len(dialogues), desc="regenerating",
                                                    unit="dialogue") as bar:
        for start in range(0, len(dialogues), batch_size):
            batch = dialogues[start:start + batch_size]
            torch.manual_seed(seed * 1_000_003 + start)
            split = [user_turns(d, turns) for d in batch]  # keyed by position: ids need not be unique
            histories = {j: system for j, (system, _) in enumerate(split)}
            users = {j: asked for j, (_, asked) in enumerate(split)}
            alive = set(range(len(batch)))
            for k in range(turns):
                asking = {i: histories[i] + [{"role": "user", "content": users[i][k]}]
                          for i in sorted(alive) if k < len(users[i])}
                for i, h in list(asking.items()):  # a prompt over the limit ends its dialogue before this turn
                    if len(encode_prompt(h, template, tokenizer)) > max_prompt_tokens:
                        alive.discard(i)
                        del asking[i]
                if not asking:
                    break
                replies = answer_batch(target, tokenizer, list(asking.values()), template, gen_cfg, eos_ids)
                for (i, h), reply in zip(asking.items(), replies):
                    if reply:
                        histories[i] = h + [{"role": "assistant", "content": reply}]
                    else:  # an empty answer ends the dialogue: nothing to learn from it
                        alive.discard(i)
            for j, d in enumerate(batch):
                conv = [{"from": {"system": "system", "user": "human", "assistant": "gpt"}[m["role"]],
                         "value": m["content"]} for m in histories[j]]
                if any(c["from"] == "gpt" for c in conv):
                    f.write(json.dumps({"id": d.id, "conversations": conv}) + "\n")
                    written += 1
            f.flush()
            bar.update(len(batch))
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
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--dtype", default="bf16", choices=sorted(DTYPES))
    args = p.parse_args(argv)
    for name in ("turns", "max_new_tokens", "max_prompt_tokens", "batch_size"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.max_records is not None and args.max_records < 1:
        p.error("--max-records must be >= 1")
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
                   max_prompt_tokens=args.max_prompt_tokens, seed=args.seed)
    print(f"{n} dialogues written to {out} ({len(todo) - n} had no answer), {time.perf_counter() - start:.0f}s")


if __name__ == "__main__":
    main()
