"""The decode cycle on an accelerator, with nothing to download: a random SmolLM2-shaped target and a draft built
to agree with it (evaluation.synthetic), so every tree is accepted to full depth.

    python -m evaluation.gpu_speed --device cuda --dtype bf16 --out outputs/device/gpu_speed.md
    python -m evaluation.gpu_speed --device cpu --layers 2 --vocab 1024 --new-tokens 16      # a smoke run

It prints (1) the target forward over T tokens against a one-token step, for each T of ``--tokens`` (on a GPU it
stays near 1 where a CPU grows with T); (2) each tree's cycle split into drafting, the tree forward with its
verification, and the draft's consume; (3) tokens/s of speculative decoding against plain decoding through the
same loop, with the accept length, and whether the outputs are identical. Timings synchronise the device.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from hass import DraftModel, HassModel, TreeConfig, hf
from hass.files import atomic_write_text

from .cycle_cost import parse_trees
from .run import DTYPES, machine
from .synthetic import make_perfect


def smollm2_shaped(layers: int, vocab: int) -> LlamaConfig:
    """SmolLM2-135M's shapes (hidden 576, 9 heads over 3 kv-heads, MLP 1536), with ``layers`` and ``vocab``."""
    return LlamaConfig(vocab_size=vocab, hidden_size=576, intermediate_size=1536, num_hidden_layers=layers,
                       num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=2048,
                       rms_norm_eps=1e-5, rope_theta=100000.0, tie_word_embeddings=True)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median_ms(fn, device, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


@torch.inference_mode()
def forward_costs(target, device, counts: list[int], context: int, repeats: int) -> dict[int, float]:
    cache = hf.new_cache(target.config, context + max(counts) + 1)
    vocab = target.config.vocab_size
    prompt = torch.randint(0, vocab, (1, context), device=device)
    hf.target_forward(target, prompt, torch.arange(context, device=device)[None], None, cache, context - 1)
    dtype = target.get_input_embeddings().weight.dtype
    out = {}
    for n in counts:
        tokens = torch.randint(0, vocab, (1, n), device=device)
        keep = torch.ones(n, context + n, dtype=torch.bool, device=device).tril(context)
        mask = hf.additive_mask(keep, dtype)[None, None]
        pos = torch.arange(context, context + n, device=device)[None]

        def run():
            hf.target_forward(target, tokens, pos, mask, cache)
            cache.crop(context)
        out[n] = _median_ms(run, device, repeats)
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m evaluation.gpu_speed", description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--dtype", default="bf16")
    p.add_argument("--layers", type=int, default=30)
    p.add_argument("--vocab", type=int, default=49152)
    p.add_argument("--tokens", default="1,8,16,32,60,128")
    p.add_argument("--trees", default="60/6/10,8/4/2,32/5/4")
    p.add_argument("--context", type=int, default=300)
    p.add_argument("--new-tokens", type=int, default=256)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--out", default=None, help="also write the tables (markdown) and a JSON beside it")
    args = p.parse_args(argv)
    if args.dtype not in DTYPES:
        p.error(f"unknown dtype {args.dtype!r}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        p.error("no CUDA device here; use --device cpu for a smoke run")
    device = torch.device(args.device)
    dtype = DTYPES[args.dtype]
    torch.manual_seed(0)
    target = LlamaForCausalLM(smollm2_shaped(args.layers, args.vocab)).to(device, dtype).eval()
    draft = DraftModel.from_target_config(target.config).to(device, dtype).eval()
    make_perfect(target, draft)
    trees = parse_trees(args.trees)
    lines = [f"machine {json.dumps(machine(args.device))}; {args.layers}-layer SmolLM2-shaped random target, "
             f"{args.dtype}, context {args.context}", ""]

    costs = forward_costs(target, device, [int(x) for x in args.tokens.split(",")], args.context, args.repeats)
    lines += ["| tokens in the forward | ms | / one-token step |", "|---|---|---|"]
    lines += [f"| {n} | {ms:.2f} | {ms / costs[1]:.2f} |" for n, ms in costs.items()]

    prompt = torch.randint(0, args.vocab, (1, args.context), device=device, generator=None)
    plain = HassModel(target, None)
    spec = HassModel(target, draft)
    results = {"forward_ms": costs, "trees": {}}

    def timed(model, tree):
        _sync(device)
        start = time.perf_counter()
        out = model.generate(prompt, max_new_tokens=args.new_tokens, eos_token_id=[], tree=tree)
        _sync(device)
        return out, time.perf_counter() - start

    timed(plain, None)  # warm-up
    base, base_s = timed(plain, None)
    lines += ["", f"plain decoding: {args.new_tokens / base_s:.1f} tokens/s", "",
              "| tree | tokens/s | speedup | accept length | identical to plain |", "|---|---|---|---|---|"]
    for tree in trees:
        timed(spec, tree)  # warm-up
        out, secs = timed(spec, tree)
        tau = out.new_tokens / out.target_forwards
        same = bool(torch.equal(out.sequences, base.sequences))
        name = f"{tree.total_tokens}/{tree.depth}/{tree.top_k}"
        results["trees"][name] = {"tokens_per_s": args.new_tokens / secs, "speedup": base_s / secs, "tau": tau,
                                  "identical": same}
        lines.append(f"| {name} | {args.new_tokens / secs:.1f} | {base_s / secs:.2f}x | {tau:.2f} | {same} |")
    text = "\n".join(lines)
    print(text)
    if args.out:
        atomic_write_text(args.out, text + "\n")
        atomic_write_text(str(args.out) + ".json", json.dumps({"args": vars(args), **results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
