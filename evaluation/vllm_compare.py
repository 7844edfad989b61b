"""The project half of scripts/check_vllm.sh: prompts for vLLM, then this project's run of the same chain, and the
side-by-side table.

    python -m evaluation.vllm_compare prompts --target DIR --questions 5 --out prompts.json
    python -m evaluation.vllm_compare compare --target DIR --draft DRAFT --prompts prompts.json \
        --plain plain.json --spec spec.json --k 3

``prompts`` writes the first turns of MT-bench's first questions under the target's chat template, as token ids.
``compare`` checks that vLLM's speculative answers equal its plain ones, runs this project's vanilla decoding and
HASS with the same draft as a chain of k tokens (tree k+1 / k / 1, which is what vLLM's EAGLE proposes) on the
same prompts, and prints vLLM's accepted drafts per position next to this project's, and tokens/s of all four.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from hass import HassModel, TreeConfig

from .benchmarks import load_questions


def _prompts(args) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(args.target)
    questions, _ = load_questions("mt_bench", False)
    ids = [tok.apply_chat_template([{"role": "user", "content": q.turns[0]}], add_generation_prompt=True,
                                   tokenize=True, return_dict=True)["input_ids"] for q in questions[:args.questions]]
    json.dump(ids, open(args.out, "w"))
    print(f"{len(ids)} prompts -> {args.out}")


def _per_position(accept_lengths: list[int], k: int) -> list[int]:
    """How many cycles accepted the drafted token at each chain position (accept length = accepted + 1)."""
    return [sum(a - 1 >= i for a in accept_lengths) for i in range(1, k + 1)]


def _vllm_per_position(counters: dict, k: int) -> list[int] | None:
    for name, value in counters.items():
        if "per_pos" in name and isinstance(value, list):
            return [int(v) for v in value[:k]]
    return None


def _compare(args) -> None:
    prompts = json.load(open(args.prompts))
    plain, spec = json.load(open(args.plain)), json.load(open(args.spec))
    same = [a == b for a, b in zip(plain["answers"], spec["answers"])]
    model = HassModel.from_pretrained(args.target, args.draft, dtype=torch.float32, draft_dtype=torch.float32,
                                      draft_vocab_size="all")
    vanilla = HassModel(model.target, None, model.tokenizer)
    chain = TreeConfig(total_tokens=args.k + 1, depth=args.k, top_k=1)
    eos = model._eos_ids(None)
    ours = {"vanilla": [], "hass": []}
    lengths, matches_vllm = [], []
    for m, runner in (("vanilla", vanilla), ("hass", model)):
        runner.generate(torch.tensor([prompts[0]]), max_new_tokens=8, tree=chain)  # warm-up
    for i, ids in enumerate(prompts):
        for m, runner in (("vanilla", vanilla), ("hass", model)):
            start = time.perf_counter()
            out = runner.generate(torch.tensor([ids]), max_new_tokens=args.max_new_tokens, tree=chain,
                                  eos_token_id=sorted(eos))
            ours[m].append((out.new_tokens, time.perf_counter() - start))
            if m == "hass":
                lengths += out.accept_lengths
                new = out.sequences[0, len(ids):].tolist()
                matches_vllm.append(new[:len(plain["answers"][i])] == plain["answers"][i][:len(new)])
    ours_pos = _per_position(lengths, args.k)
    vllm_pos = _vllm_per_position(spec.get("counters", {}), args.k)
    drafts = spec.get("counters", {}).get("vllm:spec_decode_num_drafts")
    print(f"vLLM speculative == vLLM plain: {sum(same)} of {len(same)} answers")
    print(f"this project's HASS answers agree with vLLM's plain ones (common prefix): {sum(matches_vllm)} of "
          f"{len(matches_vllm)}")
    print(f"\naccepted drafts per chain position (k = {args.k}):")
    print(f"| | {' | '.join(f'position {i}' for i in range(1, args.k + 1))} | cycles |")
    print("|---|" + "---|" * (args.k + 1))
    print(f"| vLLM | {' | '.join(map(str, vllm_pos)) if vllm_pos else 'n/a'} | {drafts if drafts is not None else 'n/a'} |")
    print(f"| this project | {' | '.join(map(str, ours_pos))} | {len(lengths)} |")
    rate = lambda pairs: sum(n for n, _ in pairs) / sum(s for _, s in pairs)  # noqa: E731
    rates = {"vLLM plain": sum(map(len, plain["answers"])) / sum(plain["seconds"]),
             "vLLM + draft": sum(map(len, spec["answers"])) / sum(spec["seconds"]),
             "this project, vanilla": rate(ours["vanilla"]), "this project, HASS chain": rate(ours["hass"])}
    print("\n| engine | tokens/s |\n|---|---|")
    for name, r in rates.items():
        print(f"| {name} | {r:.1f} |")
    if not all(same):
        sys.exit("vLLM's speculative output differs from its plain output")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m evaluation.vllm_compare", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("prompts")
    a.add_argument("--target", required=True)
    a.add_argument("--questions", type=int, default=5)
    a.add_argument("--out", required=True)
    b = sub.add_parser("compare")
    for name in ("--target", "--draft", "--prompts", "--plain", "--spec"):
        b.add_argument(name, required=True)
    b.add_argument("--k", type=int, default=3)
    b.add_argument("--max-new-tokens", type=int, default=128)
    args = p.parse_args(argv)
    _prompts(args) if args.cmd == "prompts" else _compare(args)


if __name__ == "__main__":
    main()
