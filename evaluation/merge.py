"""Join the parts of one evaluation run into one answer file.

    python -m evaluation.run ... --questions 40 --out part1.jsonl                     # on one machine
    python -m evaluation.run ... --first-question 40 --questions 80 --out part2.jsonl  # on another
    python -m evaluation.merge part1.jsonl part2.jsonl --out mt_bench.jsonl

The parts must share one configuration (everything ``evaluation.run`` checks when it resumes: every setting
but --questions / --first-question / --warmup / --out, and the question file) and no (question, method)
answer may be in two parts. The joined file is the first part's header and records, then, for each later
part, a ``{"record": "resume", ..., "merged_from": PART}`` record carrying that part's versions and machine
(from its header) followed by its records unchanged. So reports, ``evaluation.compare`` and
``evaluation.matrix`` read it as one run and still list the machine behind every part, and
``evaluation.run`` resumes it like any other answer file. ``--out`` may be one of the parts: it is
replaced only once the joined file is complete (temporary name, then rename).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from hass.files import atomic_write_text

from .report import FORMAT, read_answer_file
from .run import header_differences



def _records(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def check_parts(paths: list[Path]) -> None:
    """Refuse parts that are not answer files, differ in configuration, or answer one question twice."""
    if len(set(p.resolve() for p in paths)) != len(paths):
        raise ValueError("a part is given twice")
    parts = [read_answer_file(p) for p in paths]  # also checks each is a hass-answers file
    first = parts[0]
    seen: dict[tuple, Path] = {}
    for part in parts:
        diff = [f"{k}: {a!r} in {first.path}, {b!r} in {part.path}"
                for k, a, b in header_differences(first.header, part.header)]
        if first.header.get("eos_token_ids") != part.header.get("eos_token_ids"):  # answers cut at other ends
            diff.append(f"eos_token_ids differ between {first.path} and {part.path}")
        if diff:
            raise ValueError(f"the parts are not one configuration ({'; '.join(diff)})")
        for method, answers in part.answers.items():
            for q in answers:
                if (q, method) in seen:
                    raise ValueError(f"question {q!r}, method {method!r} is answered in both {seen[q, method]} "
                                     f"and {part.path}")
                seen[q, method] = part.path


def merge(paths: list[str | Path], out: str | Path) -> dict:
    """Write the parts ``paths`` joined into ``out`` (checked first, written atomically); returns a summary."""
    paths = [Path(p) for p in paths]
    if not paths:
        raise ValueError("no parts to join")
    check_parts(paths)
    lines, answers = [], 0
    for i, path in enumerate(paths):
        records = _records(path)
        header, rest = records[0], records[1:]
        if i == 0:
            lines.append(header)
        else:  # the part's own run, on record like a resumed run
            lines.append({"record": "resume", **{k: header[k] for k in ("versions", "machine", "created")
                                                  if k in header}, "merged_from": str(path)})
        lines += rest
        answers += sum(1 for r in rest if r.get("record") != "resume")
    atomic_write_text(out, "".join(json.dumps(r) + "\n" for r in lines))
    joined = read_answer_file(out)
    return {"out": str(out), "parts": len(paths), "answers": answers,
            "questions": len(joined.question_ids()), "methods": list(joined.answers)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m evaluation.merge", description=__doc__.split("\n")[0])
    parser.add_argument("parts", nargs="+", help=f"{FORMAT} answer files of one configuration")
    parser.add_argument("--out", required=True, help="the joined answer file (may be one of the parts)")
    args = parser.parse_args(argv)
    try:
        summary = merge(args.parts, args.out)
    except (ValueError, FileNotFoundError, KeyError, json.JSONDecodeError) as e:
        parser.error(str(e))
    print(f"{summary['out']}: {summary['parts']} parts, {summary['answers']} answers, {summary['questions']} "
          f"questions answered by every method ({', '.join(summary['methods'])})")


if __name__ == "__main__":
    main(sys.argv[1:])
