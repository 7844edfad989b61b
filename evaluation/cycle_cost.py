"""What one speculative cycle costs on this machine, and the acceptance length a tree needs to pay off.

    python -m evaluation.cycle_cost --base BASE --draft DRAFT --dtype fp32 --draft-dtype bf16 \
        --trees 60/6/10,10/3/3,5/4/1 [--draft-vocab 16384,8192] --out outputs/cycle_cost.json

A cycle of HassModel is: draft the tree (``expand_tree``: depth - 1 batched draft forwards plus the level-1
projection and the re-ranking), one target forward over the tree's total_tokens, and the draft consuming the
accepted tokens. Vanilla decoding is one target forward of one token per token. So a tree gives a speedup of

    speedup = tau * vanilla_step / cycle        (tau = tokens per cycle, bonus included)

and breaks even at tau = cycle / vanilla_step. This script times every piece on real weights over a
``--context``-token cache, round-robin (each repeat times every piece once, so load changes hit all alike),
and prints the median of each, the break-even tau of each tree and the tau it needs for 2x. It measures cost
only; the acceptance length comes from ``evaluation.run``. No answer depends on the draft's weights here.
``--draft-vocab`` adds, for each size N, every tree drafted with the N most frequent tokens only
(hass.draft_vocab), timed in the same round-robin. ``--draft-dtype bf16,fp32`` times the draft in each dtype,
also in the same round-robin (rows of the later ones end in ``[fp32]``): whether bf16 drafting pays depends on
the CPU (hass.precision).
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time

import torch
from transformers import AutoConfig, AutoModelForCausalLM

from hass import DraftModel, HassModel, TreeConfig, hf
from hass.draft_vocab import draft_vocab_from
from hass.files import atomic_write_text
from hass.generation import draft_projections, expand_tree
from hass.kernels import pack_linears
from hass.verify import internal_nodes
from hass.precision import bf16_is_fast, resolve_dtype_name

from .run import DTYPES


def parse_trees(text: str) -> list[TreeConfig]:
    return [TreeConfig.parse(item) for item in text.split(",")]


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
    target's pieces (vanilla step, tree forwards), combined with the main draft.
    """
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

    def draft_pieces(draft, suffix: str) -> dict:
        """The drafting and consume pieces of one draft, over its own cache holding the prompt."""
        ddtype = draft.fc.weight.dtype
        embed, head = draft_projections(target.get_input_embeddings(), target.get_output_embeddings(), ddtype)
        heads = {size: draft_projections(target.get_input_embeddings(), target.get_output_embeddings(), ddtype,
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
    for tgt, suffix in zip([target, *(other_targets or {}).values()], target_suffixes):
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
    for suffix in target_suffixes[1:]:  # the main draft's drafting with another target's kernels
        for tree in trees:
            name = f"{tree.total_tokens}/{tree.depth}/{tree.top_k}"
            verify, drafted = ms[f"target forward T={tree.total_tokens}{suffix}"], ms[f"drafting {name}"]
            cycle = verify + drafted + ms["draft consume (2 tokens)"]
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


def table(result: dict) -> str:
    ms = result["milliseconds"]
    steps = "; ".join(f"{k}: {v:.1f} ms" for k, v in ms.items() if k.startswith("vanilla step"))
    lines = [f"{steps} (1 token); draft consume: {ms['draft consume (2 tokens)']:.1f} ms",
             "", "| tree | verify ms (lm_head rows) | verify / vanilla step | drafting ms | cycle ms | break-even tau "
                 "| tau for 2x |",
             "|---|---|---|---|---|---|---|"]
    for r in result["trees"]:
        lines.append(f"| {r['tree']} | {r['verify_ms']:.1f} ({r['logit_rows']}) | {r['verify_over_vanilla']:.2f} | "
                     f"{r['drafting_ms']:.1f} | {r['cycle_ms']:.1f} | {r['break_even_tau']:.2f} | {r['tau_for_2x']:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m evaluation.cycle_cost", description=__doc__.split("\n")[0])
    p.add_argument("--base", required=True, help="target model folder")
    p.add_argument("--draft", required=True, help="draft model folder")
    p.add_argument("--dtype", default="fp32", help=" | ".join(DTYPES))
    p.add_argument("--draft-dtype", default=None,
                   help="default: --dtype; auto = bf16 where the device has bf16 matrix units, else fp32. Several, "
                        "comma-separated (e.g. bf16,fp32), time the draft in each, side by side; the first is the main")
    p.add_argument("--trees", default="60/6/10,20/4/4,10/3/3,8/4/2,5/4/1", help="TOTAL/DEPTH/TOP_K,...")
    p.add_argument("--draft-vocab", default="", help="also time drafting with these draft vocabulary sizes: N,N,...")
    p.add_argument("--context", type=int, default=300, help="cached tokens before the cycle (a typical prompt)")
    p.add_argument("--cpu-kernels", default="default",
                   help="default | onednn | default,onednn (the second also times a packed copy of the target, "
                        "side by side; hass.kernels)")
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--out", default=None, help="write the result (and the settings) as JSON here")
    args = p.parse_args(argv)
    if args.dtype not in DTYPES:
        p.error(f"unknown dtype {args.dtype!r}; choose one of {', '.join(DTYPES)}")
    try:
        draft_dtypes = [resolve_dtype_name(name.strip()) for name in (args.draft_dtype or args.dtype).split(",")]
    except ValueError as e:
        p.error(f"--draft-dtype: {e}")
    if len(set(draft_dtypes)) < len(draft_dtypes):
        p.error(f"--draft-dtype: {args.draft_dtype!r} names one dtype twice (auto is {resolve_dtype_name('auto')} here)")
    try:
        trees = parse_trees(args.trees)
    except ValueError as e:
        p.error(str(e))
    if args.context < 3 or args.repeats < 1:
        p.error("--context must be >= 3 and --repeats >= 1")
    vocabs = {}
    if args.draft_vocab:
        try:
            sizes = [int(x) for x in args.draft_vocab.split(",")]
            vocab_size = AutoConfig.from_pretrained(args.base).vocab_size
            vocabs = {size: draft_vocab_from(args.draft, size, vocab_size) for size in sizes}
        except (ValueError, OSError) as e:  # also CheckpointError: no, a broken or a mismatched counts file
            p.error(f"--draft-vocab: {e}")
        if min(sizes) < max(t.top_k for t in trees):
            p.error("--draft-vocab: a size is below a tree's top_k")
    kernels = [k.strip() for k in args.cpu_kernels.split(",")]
    if any(k not in ("default", "onednn") for k in kernels) or len(set(kernels)) < len(kernels):
        p.error(f"--cpu-kernels: expected default, onednn or both, got {args.cpu_kernels!r}")
    model = HassModel.from_pretrained(args.base, args.draft, dtype=DTYPES[args.dtype],
                                      draft_dtype=DTYPES[draft_dtypes[0]], cpu_kernels=kernels[0])
    others = {name: DraftModel.from_pretrained(args.draft, dtype=DTYPES[name]) for name in draft_dtypes[1:]}
    other_targets = {}
    for k in kernels[1:]:
        other = copy.deepcopy(model.target)  # the same weights, packed (or not) the other way
        if k == "onednn":
            pack_linears(other)
        else:
            other = AutoModelForCausalLM.from_pretrained(args.base, dtype=DTYPES[args.dtype]).eval()
        other_targets[f"kernels={k}"] = other
    result = measure(model, trees, args.context, args.repeats, vocabs=vocabs, other_drafts=others,
                     other_targets=other_targets)
    result["settings"] = {**vars(args), "draft_dtypes": draft_dtypes, "threads": torch.get_num_threads(),
                          "torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                          "bf16_matmul_fast": bf16_is_fast()}
    print(table(result))
    if args.out:
        out = atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
        print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
