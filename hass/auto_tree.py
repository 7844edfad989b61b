"""Choosing the draft tree for the machine at hand: the shape with the most expected tokens per second.

    speed(tree) = expected accept length(tree) / cycle time(tree)      (plain decoding: 1 / one-token step)

The accept length comes from the draft's measured acceptance by depth on a tree of that width
(``acceptance.json`` beside the draft, written by ``python -m evaluation.record_acceptance``): with conditional
rates a_d = P(accepted >= d | accepted >= d - 1), a tree of depth D accepts 1 + sum_{d<=D} prod_{j<=d} a_j
tokens per forward on average (the bonus token included). A shallower tree of the same width and top-k is a
candidate too, estimated with the prefix of the same rates (a conservative estimate: its levels could only be
as wide or wider). The cycle times come from timing each candidate on this machine (evaluation.cycle_cost;
``python -m evaluation.auto_tree`` does both and caches the timings). The choice itself is the pure function
:func:`choose_tree`.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from .config import TreeConfig
from .errors import CheckpointError
from .files import atomic_write_text

ACCEPTANCE_FILE = "acceptance.json"


def tree_name(tree: TreeConfig) -> str:
    """TOTAL/DEPTH/TOP_K, with @MIN_PROB for a confidence-bounded tree (what TreeConfig.parse reads)."""
    bound = f"@{tree.min_prob:g}" if tree.min_prob else ""
    return f"{tree.total_tokens}/{tree.depth}/{tree.top_k}{bound}"


def expected_accept_length(rates: list[float], depth: int) -> float:
    """1 + sum_{d=1..depth} prod_{j<=d} rates[j-1]: tokens per target forward, the bonus token included."""
    if depth > len(rates):
        raise ValueError(f"acceptance is known to depth {len(rates)}, not {depth}")
    total, reach = 1.0, 1.0
    for rate in rates[:depth]:
        reach *= rate
        total += reach
    return total


def candidates(recorded: dict[str, list[float]]) -> dict[TreeConfig, float]:
    """Every recorded tree and its shallower versions (same top-k, total cut to what the depth allows), each
    with its expected accept length; where two recordings give the same tree, the higher estimate is kept."""
    out: dict[TreeConfig, float] = {}
    for name, rates in recorded.items():
        tree = TreeConfig.parse(name)
        for depth in range(1, tree.depth + 1):
            limit = 1 + tree.top_k + (depth - 1) * tree.top_k ** 2
            shallow = TreeConfig(min(tree.total_tokens, limit), depth, tree.top_k, tree.min_prob)
            tau = expected_accept_length(rates, depth)
            out[shallow] = max(out.get(shallow, 0.0), tau)
    return out


@dataclass(frozen=True)
class Choice:
    tree: TreeConfig | None  # None: no tree beats plain decoding on this machine
    speedup: float  # expected, against plain decoding through the same loop
    table: list[tuple[str, float, float, float]]  # (tree, expected tau, cycle ms, expected speedup), best first


def choose_tree(taus: dict[TreeConfig, float], cycle_ms: dict[TreeConfig, float], step_ms: float) -> Choice:
    """The tree with the highest expected tau / cycle, or None when none beats one token per ``step_ms``."""
    if step_ms <= 0:
        raise ValueError(f"the one-token step must take a positive time, got {step_ms}")
    missing = [tree_name(t) for t in taus if t not in cycle_ms]
    if missing:
        raise ValueError(f"no cycle time for {', '.join(missing)}")
    rows = sorted(((tree_name(t), tau, cycle_ms[t], tau * step_ms / cycle_ms[t]) for t, tau in taus.items()),
                  key=lambda r: -r[3])
    if not rows or rows[0][3] <= 1.0:
        return Choice(None, 1.0, rows)
    return Choice(TreeConfig.parse(rows[0][0]), rows[0][3], rows)


def load_acceptance(draft_dir: str | os.PathLike) -> dict[str, list[float]]:
    """The acceptance by depth recorded beside a draft: {tree name: conditional rates}."""
    path = Path(draft_dir) / ACCEPTANCE_FILE
    if not path.is_file():
        raise CheckpointError(f"{draft_dir} has no {ACCEPTANCE_FILE}, the draft's measured acceptance by depth that "
                              f"choosing a tree needs; record it from an answer file with `python -m "
                              f"evaluation.record_acceptance ANSWERS.jsonl --draft {draft_dir}`")
    try:
        trees = json.loads(path.read_text())["trees"]
        return {name: [float(x) for x in entry["rates"]] for name, entry in trees.items()}
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{path} is not an acceptance record ({e})") from e


def save_acceptance(draft_dir: str | os.PathLike, tree: TreeConfig, rates: list[float], source: dict) -> Path:
    """Add (or replace) one tree's conditional acceptance rates in the draft's record, atomically."""
    path = Path(draft_dir) / ACCEPTANCE_FILE
    record = json.loads(path.read_text()) if path.is_file() else {"trees": {}}
    if len(rates) != tree.depth or not all(0.0 <= r <= 1.0 for r in rates):
        raise ValueError(f"a tree of depth {tree.depth} needs {tree.depth} rates in [0, 1], got {rates}")
    record["trees"][tree_name(tree)] = {"rates": rates, **source}
    return atomic_write_text(path, json.dumps(record, indent=2) + "\n")
