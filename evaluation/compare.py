"""Paired comparison of the acceptance length of two drafts (or settings) over the same questions.

    python -m evaluation.compare HASS=answers/hass/mt_bench.jsonl EAGLE2=answers/eagle2/mt_bench.jsonl

Each argument is NAME=ANSWER_FILE[:METHOD] (METHOD defaults to hass). Over the questions both answered, it
prints each side's tau_total (new tokens / target forwards, as in evaluation.report), the ratio A / B with a
95% bootstrap interval (questions resampled with replacement, seeded), and on how many questions each side
had the higher per-question tau. Acceptance length does not depend on the machine's load, so answer files
from different runs compare; their speedups do not (compare those within one run: hass[...] variants).
"""
from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

from hass.files import atomic_write_text

from .report import read_answer_file

BOOTSTRAP = 2000


def per_question(path: str, method: str) -> dict:
    """question_id -> (new tokens, target forwards) of ``method`` in an answer file."""
    f = read_answer_file(path)
    if method not in f.answers:
        raise ValueError(f"{path} holds no answers of method {method!r} (it has {', '.join(f.answers) or 'none'})")
    return {q: (sum(t["new_tokens"] for t in r["turns"]), sum(t["target_forwards"] for t in r["turns"]))
            for q, r in f.answers[method].items()}


def compare(a: dict, b: dict, seed: int = 0) -> dict:
    """tau of each side over the common questions, their ratio with a bootstrap 95% interval, and wins."""
    common = [q for q in a if q in b]
    if not common:
        raise ValueError("the two answer files have no question in common")

    def tau(side: dict, qs: list) -> float:
        return sum(side[q][0] for q in qs) / sum(side[q][1] for q in qs)

    rng = random.Random(seed)
    ratios = sorted(tau(a, s) / tau(b, s) for s in ([rng.choice(common) for _ in common] for _ in range(BOOTSTRAP)))
    per_q = [(a[q][0] / a[q][1], b[q][0] / b[q][1]) for q in common]
    return {"questions": len(common), "tau_a": tau(a, common), "tau_b": tau(b, common),
            "ratio": tau(a, common) / tau(b, common),
            "ratio_ci95": (ratios[int(0.025 * BOOTSTRAP)], ratios[int(0.975 * BOOTSTRAP) - 1]),
            "a_higher": sum(x > y for x, y in per_q), "b_higher": sum(x < y for x, y in per_q),
            "ties": sum(x == y for x, y in per_q)}


def _side(text: str) -> tuple[str, str, str]:
    name, sep, rest = text.partition("=")
    if not sep or not name or not rest:
        raise ValueError(f"expected NAME=ANSWER_FILE[:METHOD], got {text!r}")
    path, _, method = rest.partition(":")
    if not Path(path).is_file():
        raise ValueError(f"answer file {path!r} does not exist")
    return name, path, method or "hass"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m evaluation.compare", description=__doc__.splitlines()[0])
    p.add_argument("a", help="NAME=ANSWER_FILE[:METHOD]")
    p.add_argument("b", help="NAME=ANSWER_FILE[:METHOD]")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.add_argument("--out", default=None, help="also write the result as JSON here")
    args = p.parse_args(argv)
    try:
        (name_a, path_a, method_a), (name_b, path_b, method_b) = _side(args.a), _side(args.b)
        result = compare(per_question(path_a, method_a), per_question(path_b, method_b), args.seed)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    low, high = result["ratio_ci95"]
    print(f"{result['questions']} questions in common\n"
          f"tau_total: {name_a} {result['tau_a']:.3f}, {name_b} {result['tau_b']:.3f}\n"
          f"{name_a} / {name_b} = {result['ratio']:.3f} (95% bootstrap interval {low:.3f} - {high:.3f})\n"
          f"higher per-question tau: {name_a} on {result['a_higher']}, {name_b} on {result['b_higher']}, "
          f"equal on {result['ties']}")
    if args.out:
        atomic_write_text(args.out, json.dumps({"a": vars(args)["a"], "b": vars(args)["b"], "seed": args.seed,
                                                **result}, indent=2) + "\n")


if __name__ == "__main__":
    main()
