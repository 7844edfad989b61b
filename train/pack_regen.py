"""Pack train.regenerate's output for committing: gzip it, count what it holds, fingerprint it.

    python -m train.pack_regen data/regen/X.jsonl datasets/X        # -> datasets/X/X.jsonl.gz + X.stats.json

The stats file holds the regeneration settings (``X.jsonl.config.json``), the counts (dialogues, answered
turns, answer tokens, how many answers stopped at eos / the token cap / the context cap, how many end in a
loop) and the sha256 of the compressed and of the plain file, so a later run can check what it trains on.
Packing a file a run is still appending to packs the dialogues finished so far (a cut last line is left out);
run it again later to replace the pack. ``train.prepare_data --data X.jsonl.gz`` reads the packed file.
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import sys
from pathlib import Path

from hass.files import atomic_path, atomic_write_text


def stats_of(lines: list[str]) -> dict:
    """Counts over regenerated records (lines of ShareGPT-style JSON with an "answers" list)."""
    out = {"dialogues": 0, "answers": 0, "answer_tokens": 0, "stopped": {"eos": 0, "length": 0, "capacity": 0},
           "loops": 0, "turns_per_dialogue": {}}
    for line in lines:
        record = json.loads(line)
        answers = record.get("answers", [])
        out["dialogues"] += 1
        out["answers"] += len(answers)
        key = str(len(answers))
        out["turns_per_dialogue"][key] = out["turns_per_dialogue"].get(key, 0) + 1
        for a in answers:
            out["answer_tokens"] += a["tokens"]
            out["stopped"][a["stopped"]] = out["stopped"].get(a["stopped"], 0) + 1
            out["loops"] += bool(a["loops"])
    return out


def pack(source: Path, dest: Path) -> dict:
    raw = source.read_bytes()
    raw = raw[: raw.rfind(b"\n") + 1]  # only complete lines
    lines = [ln for ln in raw.decode("utf-8").splitlines() if ln.strip()]
    if not lines:
        raise ValueError(f"{source} holds no finished dialogue")
    settings_path = source.with_name(source.name + ".config.json")
    settings = json.loads(settings_path.read_text()) if settings_path.is_file() else None
    dest.mkdir(parents=True, exist_ok=True)
    gz = dest / (source.name + ".gz")
    with atomic_path(gz) as tmp:
        with gzip.GzipFile(tmp, "wb", mtime=0) as f:  # mtime 0: the same input packs to the same bytes
            f.write(raw)
    info = {"file": gz.name, "sha256_gz": hashlib.sha256(gz.read_bytes()).hexdigest(),
            "sha256_jsonl": hashlib.sha256(raw).hexdigest(), "settings": settings, **stats_of(lines)}
    atomic_write_text(dest / (source.stem + ".stats.json"), json.dumps(info, indent=2) + "\n")
    return info


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m train.pack_regen", description=__doc__.splitlines()[0])
    p.add_argument("source", help="a train.regenerate output (.jsonl)")
    p.add_argument("dest", help="folder to write NAME.jsonl.gz and NAME.stats.json into")
    args = p.parse_args(argv)
    source = Path(args.source)
    if not source.is_file():
        p.error(f"{source} does not exist")
    try:
        info = pack(source, Path(args.dest))
    except (ValueError, KeyError, json.JSONDecodeError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print(json.dumps({k: v for k, v in info.items() if k != "settings"}, indent=2))


if __name__ == "__main__":
    main()
