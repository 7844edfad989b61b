"""Questions from the held-out training dialogues, for calibrating a draft on prompts no benchmark holds.

    python -m train.held_out_questions --prepared data/long/held_out.jsonl --out held_out_questions.jsonl \\
        --limit 10

The held-out file (a ``hass-prepared-v1`` file whose samples were left out of training) names its dialogues by
id; their text is read from the dialogue file its header names as ``source`` (relative to the repository, as
``train.prepare_data`` records it) or from ``--source``. Each dialogue becomes one FastChat / MT-bench style
record ``{question_id, category: "held_out", turns}`` whose turns are its user messages (at most
``--turns``), so ``python -m evaluation.run --bench mt_bench --question-file OUT`` asks them as MT-bench
questions: the model answers each turn itself. Dialogues whose first user message is shorter than
``--min-chars`` (greetings) are left out. ``scripts/ship_drafts.sh`` records the drafts' acceptance on these,
so the tree the demo picks is chosen on prompts outside every test set.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from hass.files import atomic_write_text
from train.data import read_dialogues, read_prepared

REPO_ROOT = Path(__file__).resolve().parent.parent


def held_out_questions(prepared: str | Path, source: str | Path | None = None, *, limit: int | None = None,
                       turns: int = 2, min_chars: int = 20) -> list[dict]:
    """The held-out dialogues of ``prepared`` as question records, in the file's order."""
    header, samples = read_prepared(prepared)
    if source is None:
        if not header.get("source"):
            raise ValueError(f"{prepared}: its header names no source dialogue file; pass --source")
        source = Path(header["source"])
        if not source.is_absolute():
            source = REPO_ROOT / source
    source = Path(source)
    if not source.is_file():
        raise FileNotFoundError(f"source dialogue file {str(source)!r} of {prepared} does not exist")
    if turns < 1:
        raise ValueError(f"turns must be at least 1, got {turns}")
    dialogues = {d.id: d for d in read_dialogues(source)[0]}
    missing = [s["id"] for s in samples if s["id"] not in dialogues]
    if missing:
        raise ValueError(f"{len(missing)} held-out ids of {prepared} are not in {source} (first: {missing[0]!r}); "
                         f"is it the file the held-out set was made from?")
    records = []
    for s in samples:
        users = [m["content"] for m in dialogues[s["id"]].messages if m["role"] == "user"][:turns]
        if len(users[0].strip()) < min_chars:
            continue
        records.append({"question_id": s["id"], "category": "held_out", "turns": users})
        if limit is not None and len(records) == limit:
            break
    if not records:
        raise ValueError(f"no held-out dialogue of {prepared} has a first user message of {min_chars}+ characters")
    return records


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m train.held_out_questions", description=__doc__.splitlines()[0])
    p.add_argument("--prepared", required=True, help="the held-out hass-prepared-v1 file (data/long/held_out.jsonl)")
    p.add_argument("--source", default=None, help="the dialogue file it was made from (default: its header's)")
    p.add_argument("--out", required=True, help="question file to write (JSONL, FastChat layout)")
    p.add_argument("--limit", type=int, default=None, help="at most this many questions")
    p.add_argument("--turns", type=int, default=2, help="user turns per question (MT-bench has 2)")
    p.add_argument("--min-chars", type=int, default=20, help="skip dialogues opening with a shorter message")
    args = p.parse_args(argv)
    if args.limit is not None and args.limit < 1:
        p.error(f"--limit must be at least 1, got {args.limit}")
    try:
        records = held_out_questions(args.prepared, args.source, limit=args.limit, turns=args.turns,
                                     min_chars=args.min_chars)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    atomic_write_text(args.out, "".join(json.dumps(r) + "\n" for r in records))
    print(f"{len(records)} held-out questions -> {args.out}")


if __name__ == "__main__":
    main()
