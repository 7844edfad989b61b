"""Record a draft's acceptance by depth, from an answer file, beside the draft (for hass.auto_tree).

    python -m evaluation.record_acceptance outputs/results/side_by_side_t8_d4_k2/T0/mt_bench.jsonl \
        --method hass --draft checkpoints/SmolLM2-135M-Instruct-HASS

The method's tree comes from the file (the run's tree, or the variant's ``tree=``); its rates
P(accepted >= d | accepted >= d - 1) for d = 1 .. depth are pooled over every target forward after a prefill of
the file (a depth no forward reached counts 0), and written to ``acceptance.json`` in the draft folder under
the tree's name, with the file, method and counts they come from.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hass.auto_tree import save_acceptance

from .report import depth_acceptance, read_answer_file
from .run import EvalConfig


def rates_of(path: str | Path, method: str) -> tuple[object, list[float], int]:
    """(tree, conditional rates, forwards) of ``method`` in an answer file."""
    f = read_answer_file(path)
    if method not in f.answers:
        raise ValueError(f"{path} has no answers of method {method!r}; it has {', '.join(sorted(f.answers))}")
    config = dict(f.header["config"])
    config["methods"] = tuple(config["methods"])
    cfg = EvalConfig.__new__(EvalConfig)  # the file's settings, without re-checking paths of another machine
    cfg.__dict__.update(config)
    tree = cfg.variant(method).tree if method.startswith("hass[") else cfg.tree
    lengths = [a for ans in f.answers[method].values() for t in ans["turns"] for a in t["accept_lengths"]]
    rates = [r if r is not None else 0.0 for r in depth_acceptance(lengths, tree.depth)]
    return tree, rates, len(lengths)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m evaluation.record_acceptance", description=__doc__.splitlines()[0])
    p.add_argument("answers", help="an evaluation.run answer file")
    p.add_argument("--method", default="hass", help="hass or a hass[...] variant of the file")
    p.add_argument("--draft", required=True, help="the draft folder to record it in (the method's draft)")
    args = p.parse_args(argv)
    if not Path(args.draft).is_dir():
        p.error(f"draft folder {args.draft!r} does not exist")
    try:
        tree, rates, forwards = rates_of(args.answers, args.method)
        path = save_acceptance(args.draft, tree, rates, {"answers": str(args.answers), "method": args.method,
                                                         "forwards": forwards})
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print(f"{path}: {tree.total_tokens}/{tree.depth}/{tree.top_k} acceptance by depth "
          f"{', '.join(f'{r:.3f}' for r in rates)} over {forwards} forwards")


if __name__ == "__main__":
    main()
