"""What one speculative cycle of HassModel costs on this machine, piece by piece (evaluation.cycle_cost prints
it; hass.auto_tree chooses a tree with it).

A cycle is: draft the tree (``expand_tree``: depth - 1 batched draft forwards plus the level-1 projection and the
re-ranking), one target forward over the tree's total_tokens with lm_head over the rows verification reads, and
the draft consuming the accepted tokens. Plain decoding is one target forward of one token per token, so

    speedup = tau * vanilla_step / cycle        (tau = tokens per cycle, bonus included)

:func:`measure` times every piece on the model's real weights over a ``context``-token cache of random tokens,
round-robin (each repeat times every piece once, so load changes hit all alike), and returns the medians. It
measures cost only: no timing depends on the draft's weights beyond the tree's internal-node count.
"""
from __future__ import annotations

import statistics
import time

import torch

from . import hf
from .config import TreeConfig
from .generation import HassModel, draft_projections, expand_tree
from .verify import internal_nodes


@torch.inference_mode()
def measure(model: HassModel, trees: list[TreeConfig], context: int, repeats: int, seed: int = 0,
            vocabs: dict[int, torch.Tensor] | None = None, other_drafts: dict[str, torch.nn.Module] | None = None,
            other_targets: dict[str, torch.nn.Module] | None = None) -> dict:
    """Median milliseconds of: the vanilla step, each tree's target forward, drafting, and the draft's consume.

    A tree's target forward is timed as the loop runs it: the forward over all its tokens, then lm_head over
    its internal nodes plus one bonus row (hass.verify.NodeLogits), the internal count taken from a tree this
    draft actually drafts over the cache. ``vocabs`` (size -> token ids): also time each tree drafted with each
    of these draft vocabularies. ``other_drafts`` (label -> draft, e.g. {"fp32": the same draft in fp32}): also
    time drafting and consuming with each of them, in the same round-robin; their pieces and tree rows carry
    `` [label]``. ``other_targets`` (label -> target, e.g. {"kernels=onednn": a packed copy}): the same for the
    target's pieces (vanilla step, tree forwards), combined with the main draft, or with its own where the value
    is a (target, draft) pair (e.g. both packed for oneDNN: the draft then projects with that target's lm_head).
    A confidence-bounded tree (``min_prob``) is timed at its full size: the cost it can reach, whatever the text.
    """
    trees = [TreeConfig(t.total_tokens, t.depth, t.top_k) for t in trees]  # a bound's pruning on random tokens
    # says nothing about real text: a bounded tree is timed at its full size, the most it can cost
    target = model.target
    dtype = target.get_input_embeddings().weight.dtype
    gen = torch.Generator().manual_seed(seed)
    vocab = target.config.vocab_size
    prompt = torch.randint(0, vocab, (1, context), generator=gen)
    positions = torch.arange(context)[None]
    biggest = max(t.total_tokens for t in trees)
    t_cache = hf.new_cache(target.config, context + biggest + 1)
    causal = hf.additive_mask(torch.ones(context, context, dtype=torch.bool).tril(), dtype)[None, None]
    features, _ = hf.target_forward(target, prompt, positions, causal, t_cache, context - 1)

    def target_step(n: int, rows: int, target=target, t_cache=t_cache):
        tokens = torch.randint(0, vocab, (1, n), generator=gen)
        keep = torch.ones(n, context + n, dtype=torch.bool).tril(context)
        mask = hf.additive_mask(keep, dtype)[None, None]
        pos = torch.arange(context, context + n)[None]
        head = target.get_output_embeddings()

        def run():
            features, _ = hf.target_forward(target, tokens, pos, mask, t_cache, logits_from=None)
            head(features[0, :rows])  # the internal nodes and the bonus row
            t_cache.crop(context)
        return run

    def draft_pieces(draft, suffix: str, tgt=target) -> dict:
        """The drafting and consume pieces of one draft, over its own cache holding the prompt; its projections
        are ``tgt``'s (packed when that target's are)."""
        ddtype = draft.fc.weight.dtype
        embed, head = draft_projections(tgt.get_input_embeddings(), tgt.get_output_embeddings(), ddtype)
        heads = {size: draft_projections(tgt.get_input_embeddings(), tgt.get_output_embeddings(), ddtype,
                                         ids)[1] for size, ids in (vocabs or {}).items()}
        d_cache = hf.new_cache(draft.config, context + max(t.top_k * t.depth for t in trees) + 4)
        hidden = draft(features[:, :-2].to(ddtype), embed(prompt[:, 1:-1]), positions[:, :-2], None, d_cache)[:, -1]
        consumed = d_cache.length  # the draft holds context - 2 positions; "consume" adds the last 2, then crops
        last = int(prompt[0, -1])

        def consume():
            draft(features[:, -2:].to(ddtype), embed(prompt[:, -2:]), positions[:, -2:], None, d_cache)
            d_cache.crop(consumed)

        pieces = {f"draft consume (2 tokens){suffix}": consume}
        for tree in trees:
            name = f"{tree.total_tokens}/{tree.depth}/{tree.top_k}"
            pieces[f"drafting {name}{suffix}"] = (
                lambda tree=tree: expand_tree(draft, embed, head, hidden, d_cache, last, tree))
            for size in heads:
                pieces[f"drafting {name} V={size}{suffix}"] = (
                    lambda tree=tree, size=size: expand_tree(draft, embed, heads[size], hidden, d_cache, last, tree,
                                                             vocabs[size]))
        return pieces

    rows_read = {}  # tree -> internal nodes of a tree the main draft drafts here, + 1 bonus row
    d = model.draft
    embed, head = draft_projections(target.get_input_embeddings(), target.get_output_embeddings(), d.fc.weight.dtype)
    probe_cache = hf.new_cache(d.config, context + max(t.top_k * t.depth for t in trees) + 4)
    hidden = d(features[:, :-1].to(d.fc.weight.dtype), embed(prompt[:, 1:]), positions[:, :-1], None, probe_cache)[:, -1]
    for tree in trees:
        rows_read[tree] = len(internal_nodes(expand_tree(d, embed, head, hidden, probe_cache, int(prompt[0, -1]), tree))) + 1
    pieces = {}
    target_suffixes = [""] + [f" [{label}]" for label in (other_targets or {})]
    own_draft = set()  # target suffixes that come with a draft of their own (e.g. packed with the same kernels)
    for entry, suffix in zip([target, *(other_targets or {}).values()], target_suffixes):
        tgt = entry
        if isinstance(entry, tuple):
            tgt, its_draft = entry
            pieces |= draft_pieces(its_draft, suffix, tgt)
            own_draft.add(suffix)
        cache = t_cache
        if tgt is not target:  # its own cache, filled by its own prefill
            cache = hf.new_cache(tgt.config, context + biggest + 1)
            hf.target_forward(tgt, prompt, positions, causal, cache, context - 1)
        pieces[f"vanilla step{suffix}"] = target_step(1, 1, tgt, cache)
        for tree in trees:
            pieces[f"target forward T={tree.total_tokens}{suffix}"] = target_step(tree.total_tokens, rows_read[tree],
                                                                                 tgt, cache)
    suffixes = [""] + [f" [{label}]" for label in (other_drafts or {})]
    for draft, suffix in zip([model.draft, *(other_drafts or {}).values()], suffixes):
        pieces |= draft_pieces(draft, suffix)
    times = {name: [] for name in pieces}
    for fn in pieces.values():  # warm-up
        fn()
    for _ in range(repeats):
        for name, fn in pieces.items():
            start = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - start) * 1000)
    ms = {name: statistics.median(v) for name, v in times.items()}
    rows = []
    for suffix in target_suffixes[1:]:  # another target's kernels, with its own draft or the main one
        draft_suffix = suffix if suffix in own_draft else ""
        for tree in trees:
            for v in [""] + ([f" V={size}" for size in (vocabs or {})] if draft_suffix else []):
                name = f"{tree.total_tokens}/{tree.depth}/{tree.top_k}{v}"
                verify = ms[f"target forward T={tree.total_tokens}{suffix}"]
                drafted = ms[f"drafting {name}{draft_suffix}"]
                cycle = verify + drafted + ms[f"draft consume (2 tokens){draft_suffix}"]
                step = ms[f"vanilla step{suffix}"]
                rows.append({"tree": f"{name}{suffix}", "verify_ms": verify, "drafting_ms": drafted, "cycle_ms": cycle,
                             "verify_over_vanilla": verify / step, "break_even_tau": cycle / step,
                             "tau_for_2x": 2 * cycle / step, "logit_rows": rows_read[tree]})
    for suffix in suffixes:
        for tree in trees:
            for v in [""] + [f" V={size}" for size in (vocabs or {})]:
                name = f"{tree.total_tokens}/{tree.depth}/{tree.top_k}{v}{suffix}"
                verify, drafted = ms[f"target forward T={tree.total_tokens}"], ms[f"drafting {name}"]
                cycle = verify + drafted + ms[f"draft consume (2 tokens){suffix}"]
                rows.append({"tree": name, "verify_ms": verify, "drafting_ms": drafted, "cycle_ms": cycle,
                             "verify_over_vanilla": verify / ms["vanilla step"],
                             "break_even_tau": cycle / ms["vanilla step"], "tau_for_2x": 2 * cycle / ms["vanilla step"],
                             "logit_rows": rows_read[tree]})
    rows.sort(key=lambda r: any(r["tree"].endswith(f"{s}") for s in target_suffixes[1:]))  # main rows first
    return {"milliseconds": ms, "trees": rows}
