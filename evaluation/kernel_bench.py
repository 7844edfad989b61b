"""Target forward time with the default CPU kernels against oneDNN-packed linear layers, side by side.

    python -m evaluation.kernel_bench --base TARGET_DIR --dtypes fp32,bf16 --tokens 1,8,16,60 [--compile]

For each dtype it loads the target twice (one copy packed with hass.kernels.pack_linears), fills a KV cache with
a ``--context``-token prompt, then times a forward of each token count over that cache (what a vanilla step,
a tree verification and a prefill are), alternating the copies repeat by repeat, and prints the medians,
their ratio and the largest logit difference from the default kernels.

``--compile`` adds a third copy whose decoder layers run through ``torch.compile`` (inductor, dynamic shapes,
one graph shared by the layers, a graph break at the KV-cache write; weights not frozen, since inductor cannot
lower the prepacked products as graph inputs), with the compile time of its first calls: the route issue 19
names beside prepacking, measured rather than assumed.

``--affine`` adds a copy on the affine-code products (hass.affine: the exact fp32 weights of a GGUF-derived target
decoded from their 4- / 8-bit codes on the fly; oneDNN for layers without that form), fp32 only;
``--affine-isa avx2,avx512`` gives it one column per instruction set (the same packed copy, switched with
``hass.affine.isa`` between forwards), where the CPU has both.
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import time

import torch
from transformers import AutoModelForCausalLM

from hass import hf
from hass.kernels import pack_affine_linears, pack_linears, resolve_cpu_kernels

from .run import DTYPES, machine


@torch.inference_mode()
def _prepare(model, context: int):
    cache = hf.new_cache(model.config, context + 256)
    ids = torch.randint(0, model.config.vocab_size, (1, context), generator=torch.Generator().manual_seed(0))
    hf.target_forward(model, ids, torch.arange(context)[None], None, cache, context - 1)
    return cache


def _compiled_copy(model):
    """A copy of ``model`` whose decoder layers call one compiled forward (eager everywhere else)."""
    import torch._dynamo

    from hass.kv_cache import KVCache

    torch._dynamo.config.allow_unspec_int_on_nn_module = True  # layer_idx: one graph for every layer
    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 32)
    if not getattr(KVCache.update, "_hass_not_compiled", False):  # the cache write stays eager (a graph break)
        KVCache.update = torch.compiler.disable(KVCache.update)
        KVCache.update._hass_not_compiled = True
    compiled = copy.deepcopy(model)
    for layer in compiled.model.layers if hasattr(compiled, "model") else compiled.get_decoder().layers:
        layer.forward = torch.compile(layer.forward, dynamic=True)
    return compiled


@torch.inference_mode()
def _forward(model, cache, context: int, n: int):
    x = torch.randint(0, model.config.vocab_size, (1, n), generator=torch.Generator().manual_seed(n))
    keep = torch.ones(n, context + n, dtype=torch.bool).tril(context)
    mask = hf.additive_mask(keep, model.get_input_embeddings().weight.dtype)[None, None]
    cache.crop(context)
    start = time.perf_counter()
    _, logits = hf.target_forward(model, x, torch.arange(context, context + n)[None], mask, cache)
    return time.perf_counter() - start, logits


def _use_isa(label: str) -> None:
    """Before a forward of an ``affine@ISA`` column: the product on that instruction set."""
    if label.startswith("affine@"):
        from hass import affine

        affine.isa(label.split("@")[1])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m evaluation.kernel_bench", description=__doc__.splitlines()[0])
    p.add_argument("--base", required=True)
    p.add_argument("--dtypes", default="fp32,bf16")
    p.add_argument("--tokens", default="1,8,16,60")
    p.add_argument("--context", type=int, default=300)
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--compile", action="store_true", help="add torch.compile'd decoder layers as a column")
    p.add_argument("--affine", action="store_true", help="add the affine-code products (fp32) as a column")
    p.add_argument("--affine-isa", default="",
                   help="with --affine: comma-separated instruction sets (avx2, avx512), one column each "
                        "(default: the one hass.affine picks here)")
    args = p.parse_args(argv)
    counts = [int(x) for x in args.tokens.split(",")]
    unknown = [d for d in args.dtypes.split(",") if d not in DTYPES]
    if unknown:
        p.error(f"unknown dtype(s) {unknown}; choose from {', '.join(DTYPES)}")
    if args.affine and args.dtypes != "fp32":
        p.error("--affine multiplies fp32 weights: pass --dtypes fp32")
    if args.affine:
        try:
            resolve_cpu_kernels("affine", "cpu", torch.float32, flag="--affine")
        except ValueError as e:
            p.error(str(e))
    isas = [x for x in args.affine_isa.split(",") if x]
    if isas and not args.affine:
        p.error("--affine-isa needs --affine")
    if args.affine:
        from hass import affine

        default_isa = affine.isa()
        isas = isas or [default_isa]
        for isa in isas:
            try:
                affine.isa(isa)
            except RuntimeError as e:
                p.error(f"--affine-isa {isa}: {e}")
        affine.isa(default_isa)
    affine_labels = [f"affine@{isa}" for isa in isas] if args.affine else []
    labels = ["plain", "packed"] + (["compiled"] if args.compile else []) + affine_labels
    print(f"machine {json.dumps(machine('cpu'))}; context {args.context}, {args.repeats} repeats, medians")
    head = "| dtype | tokens | default (ms) | oneDNN packed (ms) | speedup | max logit difference |"
    if args.compile:
        head += " torch.compile (ms) | speedup | max logit difference |"
    for label in affine_labels:
        head += f" affine codes, {label.split('@')[1]} (ms) | speedup | max logit difference |"
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for name in args.dtypes.split(","):
        plain = AutoModelForCausalLM.from_pretrained(args.base, dtype=DTYPES[name]).eval()
        models = {"plain": plain, "packed": copy.deepcopy(plain)}
        pack_linears(models["packed"])
        if args.compile:
            models["compiled"] = _compiled_copy(plain)
        if args.affine:
            packed = AutoModelForCausalLM.from_pretrained(args.base, dtype=DTYPES[name]).eval()
            n_affine, n_onednn = pack_affine_linears(packed)
            print(f"(affine codes: {n_affine} layers, oneDNN: {n_onednn})", flush=True)
            models.update({label: packed for label in affine_labels})  # one copy, one KV cache per column
        caches = {}
        for label in labels:
            _use_isa(label)
            caches[label] = _prepare(models[label], args.context)
        for n in counts:
            times = {label: [] for label in labels}
            logits = {}
            if args.compile:  # its first call at this token count compiles (or loads the on-disk cache)
                seconds, _ = _forward(models["compiled"], caches["compiled"], args.context, n)
                print(f"(torch.compile, {name}, {n} tokens: first call {seconds:.1f} s)", flush=True)
            for _ in range(args.repeats):
                for label in labels:
                    _use_isa(label)
                    seconds, logits[label] = _forward(models[label], caches[label], args.context, n)
                    times[label].append(seconds)
            ms = {label: statistics.median(times[label]) * 1000 for label in labels}
            row = f"| {name} | {n} | {ms['plain']:.1f} |"
            for label in labels[1:]:
                diff = float((logits["plain"] - logits[label]).abs().max())
                row += f" {ms[label]:.1f} | {ms['plain'] / ms[label]:.2f}x | {diff:.1e} |"
            print(row, flush=True)
        del plain, models, caches


if __name__ == "__main__":
    main()
