"""Choosing the draft tree for the machine at hand: the shape with the most expected tokens per second.

    speed(tree) = expected accept length(tree) / cycle time(tree)      (plain decoding: 1 / one-token step)

The accept length comes from the draft's measured acceptance by depth on a tree of that width
(``acceptance.json`` beside the draft, written by ``python -m evaluation.record_acceptance``): with conditional
rates a_d = P(accepted >= d | accepted >= d - 1), a tree of depth D accepts 1 + sum_{d<=D} prod_{j<=d} a_j
tokens per forward on average (the bonus token included). A shallower tree of the same width and top-k is a
candidate too, estimated with the prefix of the same rates (a conservative estimate: its levels could only be
as wide or wider). The cycle times come from timing each candidate on this machine (hass.cycle_timing; a
confidence-bounded tree at the mean size and depth it verified where its record has them, :func:`timing_tree`,
else at its full size, the most it can cost). The choice itself is the pure function
:func:`choose_tree`; :func:`auto_tree` (``HassModel.auto_tree()``, ``generate(tree="auto")``, ``python -m
evaluation.auto_tree``) times the candidates once per machine and settings, caches the timings under
``$HASS_CACHE/auto_tree/``, and chooses.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from .config import TreeConfig
from .errors import CheckpointError
from .files import atomic_write_text
from .kernels import kernel_names
from .precision import cpu_name
from .zoo import cache_root

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


def timing_tree(tree: TreeConfig, shapes: dict[str, tuple[float, float]]) -> TreeConfig:
    """The fixed tree whose cycle stands for ``tree``'s: a confidence-bounded tree with a recorded mean shape
    (``shapes``: tree name -> (mean tokens verified, mean depth), from acceptance.json) is timed as an unbounded
    tree of that many tokens and that depth (its verification reads that many rows; its expansion stopped about
    there); any other tree at its own full size."""
    full = TreeConfig(tree.total_tokens, tree.depth, tree.top_k)
    shape = shapes.get(tree_name(tree)) if tree.min_prob else None
    if shape is None:
        return full
    tokens = min(max(2, round(shape[0])), tree.total_tokens)
    depth = min(max(1, round(shape[1])), tree.depth, tokens - 1)
    return TreeConfig(min(tokens, TreeConfig(2, depth, tree.top_k).max_total_tokens), depth, tree.top_k)


@dataclass(frozen=True)
class Choice:
    tree: TreeConfig | None  # None: no tree beats plain decoding on this machine
    speedup: float  # expected, against plain decoding through the same loop
    table: list[tuple[str, float, float, float]]  # (tree, expected tau, cycle ms, expected speedup), best first
    step_ms: float = 0.0  # the one-token step the speedups are against


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
        return Choice(None, 1.0, rows, step_ms)
    return Choice(TreeConfig.parse(rows[0][0]), rows[0][3], rows, step_ms)


def load_shapes(draft_dir: str | os.PathLike) -> dict[str, tuple[float, float]]:
    """{tree name: (mean tokens verified, mean depth)} of the recorded trees that have them (see load_acceptance)."""
    load_acceptance(draft_dir)  # the same checks and errors
    trees = json.loads((Path(draft_dir) / ACCEPTANCE_FILE).read_text())["trees"]
    return {name: (float(e["mean_tokens"]), float(e["mean_depth"])) for name, e in trees.items()
            if "mean_tokens" in e and "mean_depth" in e}


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


def machine_key(device: torch.device) -> dict:
    """What a timing depends on besides the model: the processor, its torch kernels and the thread count."""
    key = {"cpu": cpu_name(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
           "threads": torch.get_num_threads(), "torch": torch.__version__, "device": str(device)}
    if device.type == "cuda":
        key["gpu"] = torch.cuda.get_device_name(device)
    return key


def auto_tree(model, acceptance: str | os.PathLike | dict[str, list[float]] | None = None, *, context: int = 300,
              repeats: int = 7, refresh: bool = False, cache_dir: str | os.PathLike | None = None,
              verbose: bool = True) -> Choice:
    """The tree with the most expected tokens/s for ``model`` (a HassModel with a draft) on this machine.

    ``acceptance``: the draft's acceptance by depth, as a draft folder holding ``acceptance.json`` (default: the
    folder ``model`` loaded its draft from) or as {tree name: conditional rates}. Every recorded tree and its
    shallower versions are timed here (hass.cycle_timing, about 10 s for SmolLM2 on 2 CPU cores) and the timings
    cached in ``cache_dir`` (default ``$HASS_CACHE/auto_tree``, else ``~/.cache/hass/auto_tree``) under a key of
    the machine, the weights' identity and dtypes, the kernels, the draft vocabulary, ``context`` and the
    candidates; ``refresh`` times again. Returns a :class:`Choice`: ``choice.tree`` is None where no tree beats
    plain decoding. Raises CheckpointError, before any timing, when there is no acceptance record, saying how
    to make one.
    """
    if model.draft is None:
        raise ValueError("auto_tree chooses the draft's tree, but this HassModel has no draft")
    if acceptance is None:
        acceptance = getattr(model, "draft_path", None)
        if acceptance is None:
            raise CheckpointError("this HassModel was not loaded from a draft folder: pass acceptance= (a draft "
                                  "folder with acceptance.json, or {tree name: rates})")
    source = acceptance if isinstance(acceptance, dict) else str(Path(acceptance).resolve())
    taus = candidates(acceptance if isinstance(acceptance, dict) else load_acceptance(acceptance))
    shapes = {} if isinstance(acceptance, dict) else load_shapes(acceptance)
    if not taus:
        raise CheckpointError(f"the acceptance record of {source} names no tree")
    names = sorted(tree_name(t) for t in taus)
    target, draft = model.target, model.draft
    # which products the target and the draft run (hass.kernels): a change of kernels is a new timing
    packed = [kernel_names(net) for net in (target, model.draft)]
    vocab = None if model.draft_vocab is None else int(model.draft_vocab.numel())
    identity = [machine_key(model.device), getattr(target.config, "_name_or_path", ""),
                str(target.get_input_embeddings().weight.dtype), packed, source, str(draft.fc.weight.dtype), vocab,
                context, names, sorted(shapes.items())]
    key = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]
    cached = cache_root(cache_dir) / "auto_tree" / f"{key}.json"
    timing = None
    if cached.is_file() and not refresh:
        try:
            timing = json.loads(cached.read_text())
            cycle = {t: float(timing["cycle_ms"][tree_name(t)]) for t in taus}
            step = float(timing["step_ms"])
        except (ValueError, KeyError, TypeError):
            timing = None  # a damaged cache entry is timed again
        else:
            if verbose:
                print(f"auto tree: timings from {cached}", file=sys.stderr)
    if timing is None:
        from .cycle_timing import measure  # imports the generation loop, which imports this module

        if verbose:
            print(f"auto tree: timing {len(taus)} candidate trees on this machine ...", file=sys.stderr)
        timed = {t: timing_tree(t, shapes) for t in taus}
        vocabs = {vocab: model.draft_vocab} if vocab is not None else None
        result = measure(model, sorted(set(timed.values()), key=tree_name), context, repeats, vocabs=vocabs)
        suffix = f" V={vocab}" if vocab is not None else ""
        by_name = {r["tree"]: r["cycle_ms"] for r in result["trees"]}
        step = result["milliseconds"]["vanilla step"]
        cycle = {t: by_name[tree_name(timed[t]) + suffix] for t in taus}
        atomic_write_text(cached, json.dumps({"step_ms": step, "cycle_ms": {tree_name(t): ms for t, ms in cycle.items()},
                                              "key": identity}, indent=2, default=str) + "\n")
    return choose_tree(taus, cycle, step)


def format_choice(choice: Choice) -> str:
    """The one-token step, the candidates as a markdown table (best first), and the choice as its last line."""
    lines = [f"one-token step {choice.step_ms:.1f} ms", ""]
    lines += ["| tree | expected tau | cycle ms | expected speedup |", "|---|---|---|---|"]
    lines += [f"| {name} | {tau:.2f} | {ms:.1f} | {speedup:.2f}x |" for name, tau, ms, speedup in choice.table]
    lines.append(f"tree {tree_name(choice.tree) if choice.tree else 'none'}")
    return "\n".join(lines)
