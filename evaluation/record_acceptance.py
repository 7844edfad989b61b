"""Record a draft's acceptance by depth, from an answer file, beside the draft (for hass.auto_tree).

    python -m evaluation.record_acceptance outputs/results/calibration/held_out.jsonl \
        --method "hass[tree=8/4/2]" --draft checkpoints/SmolLM2-135M-Instruct-HASS

The method's tree comes from the file (the run's tree, or the variant's ``tree=``); its rates
P(accepted >= d | accepted >= d - 1) for d = 1 .. depth are pooled over every target forward after a prefill of
the file (a depth no forward reached counts 0), and written to ``acceptance.json`` in the draft folder under
the tree's name, with the file, method and counts they come from. Where the file has them (answers written
since the tree sizes were recorded), the mean tokens verified per forward and the mean depth of the tree go
with them: hass.auto_tree times a confidence-bounded tree at that size instead of its full one.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hass.auto_tree import save_acceptance, tree_name

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
    turns = [t for ans in f.answers[method].values() for t in ans["turns"]]
    lengths = [a for t in turns for a in t["accept_lengths"]]
    rates = [r if r is not None else 0.0 for r in depth_acceptance(lengths, tree.depth)]
    return tree, rates, len(lengths)


def mean_shape(path: str | Path, method: str) -> dict:
    """{"mean_tokens", "mean_depth"} of the trees ``method`` verified in an answer file; {} where the file does
    not record them (written before the tree sizes were)."""
    turns = [t for ans in read_answer_file(path).answers[method].values() for t in ans["turns"]]
    if not turns or any("tree_sizes" not in t for t in turns):
        return {}
    sizes = [s for t in turns for s in t["tree_sizes"]]
    depths = [d for t in turns for d in t["tree_depths"]]
    if not sizes:
        return {}
    return {"mean_tokens": sum(sizes) / len(sizes), "mean_depth": sum(depths) / len(depths)}


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
        shape = mean_shape(args.answers, args.method)
        path = save_acceptance(args.draft, tree, rates, {"answers": str(args.answers), "method": args.method,
                                                         "forwards": forwards, **shape})
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print(f"{path}: {tree_name(tree)} acceptance by depth "
          f"{', '.join(f'{r:.3f}' for r in rates)} over {forwards} forwards"
          + (f"; {shape['mean_tokens']:.1f} tokens verified per forward, depth {shape['mean_depth']:.2f}"
             if shape else ""))


if __name__ == "__main__":
    main()
