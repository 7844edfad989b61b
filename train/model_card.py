"""The model card (README.md) of a shipped draft, written from the files that describe it, not by hand.

    python -m train.model_card --draft checkpoints/SmolLM2-135M-Instruct-HASS --title "HASS (warm start)" \\
        --results outputs/results/final_q80 --other checkpoints/SmolLM2-135M-Instruct-EAGLE2

Read from the draft folder: ``milestone.json`` (the long run's step, tokens seen, resolved training config, data
and target identity; train.long_run), ``log.jsonl`` (its held-out top-1 curve), ``token_counts.safetensors`` (the
draft vocabulary's coverage), ``acceptance.json`` (acceptance by depth, evaluation.record_acceptance) and
``held_out.png`` if present. From ``--results`` (an evaluation.run folder such as scripts/results_final.sh writes),
this draft's cells: tau_total, speedup against vanilla with its per-question spread, answers differing from vanilla,
and, with ``--other``, the paired tau ratio against the other draft (evaluation.compare). Without results the card
says they are not measured yet. Written atomically.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from hass.files import atomic_write_text

from .long_run import MILESTONE, rise_over_tail

# the settings a reader needs to reproduce the recipe, in the order the card lists them
RECIPE_KEYS = ("hca_steps", "hod_weight", "hod_k", "cls_weight", "lr", "batch_size", "grad_accum", "warmup_fraction",
               "grad_clip", "clip_mode", "noise", "max_length", "init_layer", "draft_vocab_size", "dtype", "seed")


def _evals(folder: Path) -> list[dict]:
    log = folder / "log.jsonl"
    if not log.is_file():
        return []
    return [r for r in (json.loads(x) for x in log.read_text().splitlines() if x.strip()) if r.get("split") == "eval"]


def vocabulary_lines(folder: Path, size: int | None) -> list[str]:
    """The draft vocabulary and how much of the training answers' tokens it covers."""
    if not size:
        return ["Draft vocabulary: the target's whole vocabulary."]
    from hass.draft_vocab import load_token_counts

    try:
        counts = load_token_counts(folder).double()
    except Exception:  # noqa: BLE001 - a card without the coverage line is still a card
        return [f"Draft vocabulary: the {size:,} most frequent answer tokens of the training data."]
    covered = float(counts.sort(descending=True).values[:size].sum() / counts.sum())
    return [f"Draft vocabulary: the {size:,} most frequent answer tokens of the training data "
            f"(`token_counts.safetensors`, {int(counts.sum()):,} tokens counted), {covered:.1%} of them; "
            f"`draft_vocab_size={size}` drafts over these (the target still verifies over all "
            f"{counts.numel():,})."]


def acceptance_lines(folder: Path) -> list[str]:
    path = folder / "acceptance.json"
    if not path.is_file():
        return ["No acceptance record yet (`python -m evaluation.record_acceptance`)."]
    trees = json.loads(path.read_text())["trees"]
    depth = max(len(t["rates"]) for t in trees.values())
    lines = ["| tree | " + " | ".join(f"d={d}" for d in range(1, depth + 1)) + " | mean tokens verified | from |",
             "|" + "---|" * (depth + 3)]
    for name, t in trees.items():
        rates = [f"{r:.3f}" for r in t["rates"]] + ["-"] * (depth - len(t["rates"]))
        tokens = f"{t['mean_tokens']:.1f}" if "mean_tokens" in t else "-"
        lines.append(f"| {name} | " + " | ".join(rates) + f" | {tokens} | {t.get('answers', '-')}, "
                     f"{t.get('forwards', '?')} forwards |")
    return ["P(accepted >= d | accepted >= d - 1) over the target forwards of the answers named "
            "(`acceptance.json`, what `tree=\"auto\"` chooses from):", "", *lines]


def result_lines(folder: Path, results: Path | None, other: Path | None) -> list[str]:
    """This draft's cells in the results folder: a row per (temperature, tree), a column per benchmark."""
    if results is None or not results.is_dir():
        return ["Not measured yet."]
    from evaluation.matrix import answer_paths, setting_of
    from evaluation.report import divergences, file_rows, read_answer_file, spread_text
    from evaluation.run import _overrides

    files = [read_answer_file(p) for p in answer_paths([results])]
    me = folder.resolve()
    rows: dict[tuple[float, str], dict[str, str]] = {}
    benches: list[str] = []
    for f in files:
        draft_of = {}
        for m in f.answers:
            if m == "hass" or m.startswith("hass["):
                draft = (_overrides(m) or {}).get("draft", f.header["config"].get("draft"))
                draft_of[m] = Path(draft).resolve() if draft else None
        for row in file_rows(f):
            if draft_of.get(row.method) != me:
                continue
            s = setting_of(f, row.method)
            differ = ""
            if s.temperature == 0 and "vanilla" in f.answers:
                n, found = divergences(f, row.method)
                differ = f", {len(found)}/{n} differ"
            spread = spread_text(row)
            speed = (f"{row.speedup_vs_vanilla:.2f}x ({spread})" if row.speedup_vs_vanilla is not None else "-")
            rows.setdefault((s.temperature, s.tree), {})[row.bench] = f"{row.tau_total:.2f} / {speed}{differ}"
            if row.bench not in benches:
                benches.append(row.bench)
    if not rows:
        return [f"No answers of this draft in {results}."]
    lines = ["| T | tree | " + " | ".join(benches) + " |", "|" + "---|" * (len(benches) + 2)]
    for (t, tree), cells in sorted(rows.items()):
        lines.append(f"| {t:g} | {tree} | " + " | ".join(cells.get(b, "not run") for b in benches) + " |")
    out = [f"From `{results}` (fp32 target; each cell: tau_total / speedup vs vanilla decoding in the same run, with "
           "the per-question 10% / median / 90% ratios, and at T = 0 the answers differing from vanilla's):", "",
           *lines]
    compare_dir = results / "compare"
    if other is not None and compare_dir.is_dir():
        pairs = []
        for path in sorted(compare_dir.glob("*.json")):
            c = json.loads(path.read_text())
            low, high = c["ratio_ci95"]
            a, b = (str(c.get(side, side)).partition("=")[0] for side in ("a", "b"))
            pairs.append(f"| {path.stem} | {c['questions']} | {a} {c['tau_a']:.3f} / {b} {c['tau_b']:.3f} | "
                         f"{c['ratio']:.3f} ({low:.3f} - {high:.3f}) |")
        if pairs:
            out += ["", f"Paired against `{other}` (evaluation.compare: tau ratio with its 95% bootstrap interval "
                        "over questions):", "",
                    "| cell | questions | tau_total | ratio (95% interval) |", "|---|---|---|---|", *pairs]
    return out


def segment_lines(folder: Path) -> list[str]:
    """The last segment of a run that started from other weights (``train_config.json`` beside the draft, the
    resolved config of the segment that wrote these weights): where it branched, its steps, learning rate and dtype,
    which the run's recipe line (its whole schedule) does not show."""
    path = folder / "train_config.json"
    if not path.is_file():
        return []
    seg = json.loads(path.read_text())
    if not seg.get("init_from"):
        return []
    first = int(seg.get("start_batch", 0))
    last = first + int(seg.get("max_steps", 0))
    warmup = round(float(seg.get("warmup_fraction", 0.0)) * int(seg.get("max_steps", 0)))
    return [f"- Last segment: steps {first:,} - {last:,} from the weights of `{seg['init_from']}` (a fresh "
            f"optimiser), lr {float(seg['lr']):.3g} after a {warmup}-step warm-up, decaying linearly to 0, "
            f"dtype {seg.get('dtype', '?')}, hca_steps = {seg.get('hca_steps', '?')}, "
            f"hod_weight = {seg.get('hod_weight', '?')}; the steps before it are that run's."]


def card(folder: Path, title: str, results: Path | None = None, other: Path | None = None,
         reproduce: list[str] | None = None) -> str:
    milestone = json.loads((folder / MILESTONE).read_text())
    config = milestone["config"]
    evals = _evals(folder)
    rise = rise_over_tail(evals)
    lines = [f"# {folder.name}: {title}", "",
             f"A draft for {milestone.get('target', {}).get('name', config['target'])} in the hass format "
             f"(`config.json` + `model.safetensors`: fc 2h -> h and one decoder layer of the target's family; the "
             f"embedding and lm_head are the target's). Load it with `HassModel.from_pretrained(ensure_smollm2(), "
             f"\"{folder.as_posix()}\", dtype=torch.float32)` (`hass.zoo.ensure_smollm2`; the fp32 target keeps "
             f"the output exactly the target's own greedy decoding).", "",
             "## Training", "",
             f"- Run `{milestone['name']}` of docs/TRAINING_PLAN.md, global step {milestone['global_step']:,} of "
             f"{milestone['total_steps']:,}, **{milestone['tokens_seen']:,} training tokens** seen "
             f"(batch {config['batch_size']}).",
             f"- Data: `{config['data']}` (sha256 {milestone.get('data_sha256', '?')[:16]}...), offline target "
             f"features; held-out top-1 on `{config.get('eval_data')}`.",
             "- Recipe: " + ", ".join(f"{k} = {config[k]}" for k in RECIPE_KEYS if k in config) + ".",
             ]
    if config.get("init_from") or milestone.get("start_from"):
        lines.append(f"- Started from: `{config.get('init_from') or milestone.get('start_from')}`.")
    lines += segment_lines(folder)
    lines += ["", *vocabulary_lines(folder, config.get("draft_vocab_size")), "", "## Held-out top-1", ""]
    if evals:
        keys = sorted({k for r in evals for k in r if k.startswith("acc_s")})
        lines += ["| step | " + " | ".join(f"aligning step {k[5:]}" for k in keys) + " |",
                  "|" + "---|" * (len(keys) + 1)]
        lines += [f"| {r['step']:,} | " + " | ".join(f"{r[k]:.3f}" if k in r else "-" for k in keys) + " |"
                  for r in evals]
        if rise:
            lines += ["", f"Over the last 20% of the steps ({rise['from_step']:,} -> {rise['to_step']:,}) it rose "
                          f"{rise['rise']:+.3f} ({rise['from']:.3f} -> {rise['to']:.3f})."]
    else:
        lines.append("No held-out evaluation in `log.jsonl`.")
    if (folder / "held_out.png").is_file():
        lines += ["", "![held-out top-1 against the step](held_out.png)"]
    lines += ["", "## Acceptance by depth", "", *acceptance_lines(folder), "",
              "## Results", "", *result_lines(folder, results, other)]
    if reproduce:
        lines += ["", "## Reproduce", "", *[f"    {c}" for c in reproduce]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m train.model_card", description=__doc__.splitlines()[0])
    p.add_argument("--draft", required=True, help="the shipped draft folder (with milestone.json)")
    p.add_argument("--title", required=True)
    p.add_argument("--results", help="an evaluation.run answer folder holding this draft's answers")
    p.add_argument("--other", help="the draft it is compared with (the paired ratios of RESULTS/compare)")
    p.add_argument("--reproduce", action="append", default=[], help="a command that reproduces it (repeatable)")
    args = p.parse_args(argv)
    folder = Path(args.draft)
    if not (folder / MILESTONE).is_file():
        sys.exit(f"train.model_card: error: {folder} has no {MILESTONE} (ship a long run's milestone folder)")
    text = card(folder, args.title, Path(args.results) if args.results else None,
                Path(args.other) if args.other else None, args.reproduce)
    print(atomic_write_text(folder / "README.md", text))


if __name__ == "__main__":
    main()
