"""The headline of a results folder: tau and speedup per benchmark for each draft on one tree, against vanilla
decoding, transformers' generate and prompt lookup, as one markdown table and one plot.

    python -m evaluation.headline outputs/results/final_q80 --temperature 0 \\
        --label SmolLM2-135M-Instruct-HASS=HASS --label SmolLM2-135M-Instruct-EAGLE2=EAGLE-2 \\
        --out outputs/results/final_q80/headline_T0.md --plot outputs/results/final_q80/headline_T0.png

The folder is one written by ``scripts/results_final.sh`` (any folder of ``evaluation.run`` answer files
works). Only the files at ``--temperature`` count. The tree is ``--tree``, else the folder's ``demo_tree.txt``
(the demo's automatic tree), else the one tree the files' drafts ran with. Each cell is ``tau / speedup`` with
the per-question speedup spread (10% - 90%) below it, computed as ``evaluation.report`` does: tau = new tokens
/ target forwards, speedup = ratio of total tokens per second against the ``vanilla`` of the same file (the
same questions, one process). Where the folder holds ``compare/T{T}_{bench}_t{tree}.json``
(``evaluation.compare``), a last row gives the paired tau ratio of the first two drafts with its 95% interval.
The plot draws each row's speedup per benchmark with the spread as whiskers and tau as the bar's label.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from evaluation.benchmarks import BENCHMARKS
from evaluation.matrix import answer_paths, setting_of
from evaluation.report import AnswerFile, file_rows, machine_lines, read_answer_file
from hass.files import atomic_write_text, save_figure

BASELINE_NAMES = {"vanilla": "vanilla decoding", "hf": "transformers generate", "pld": "prompt lookup"}


@dataclass
class Entry:
    tau: float
    speedup: float | None
    spread: tuple[float, float, float] | None
    questions: int


def _tree_key(tree: str) -> str:
    return tree.replace(" ", "")


def collect(files: list[AnswerFile], tree: str | None) -> tuple[str, dict[str, dict[str, Entry]]]:
    """(tree, {row name: {benchmark: entry}}): the drafts on ``tree`` (draft folder names), then the baselines."""
    drafted: dict[tuple[str, str], dict[str, Entry]] = {}
    baselines: dict[str, dict[str, Entry]] = {}
    for f in files:
        for row in file_rows(f):
            entry = Entry(row.tau_total, 1.0 if row.method == "vanilla" else row.speedup_vs_vanilla,
                          None if row.method == "vanilla" else row.speedup_spread, row.questions)
            s = setting_of(f, row.method)
            table = baselines.setdefault(s.draft, {}) if s.tree == "-" else \
                drafted.setdefault((s.draft, _tree_key(s.tree)), {})
            if row.bench in table:
                raise ValueError(f"{row.bench} with {row.method} is in two files (one is {f.path}); "
                                 f"name the files to use instead of their folder")
            table[row.bench] = entry
    trees = list(dict.fromkeys(t for _, t in drafted))
    if tree is None:
        if len(trees) != 1:
            raise ValueError(f"the drafts ran with {len(trees)} trees ({', '.join(trees) or 'none'}); pick one "
                             f"with --tree")
        tree = trees[0]
    tree = _tree_key(tree)
    if tree not in trees:
        raise ValueError(f"no draft ran with the tree {tree}; the files have {', '.join(trees) or 'no drafts'}")
    rows = {draft: cells for (draft, t), cells in drafted.items() if t == tree}
    for name in BASELINE_NAMES:
        if name in baselines:
            rows[name] = baselines.pop(name)
    rows.update(baselines)  # any other method without a draft
    return tree, rows


def benchmarks_of(rows: dict[str, dict[str, Entry]]) -> list[str]:
    seen = {b for cells in rows.values() for b in cells}
    return [b for b in BENCHMARKS if b in seen] + sorted(seen - set(BENCHMARKS))


def paired_ratios(folder: Path, temperature: float, tree: str, benches: list[str]) -> dict[str, dict]:
    """{benchmark: evaluation.compare's result} of the compare/ files of this temperature and tree."""
    out = {}
    for b in benches:
        path = folder / "compare" / f"T{temperature:g}_{b}_t{tree.replace('/', '_')}.json"
        if path.is_file():
            out[b] = json.loads(path.read_text())
    return out


def row_label(name: str, labels: dict[str, str]) -> str:
    """A row's name in the table and the plot: its --label, else the baseline's name, else the draft folder's."""
    return labels.get(name, BASELINE_NAMES.get(name, name))


def table(rows: dict[str, dict[str, Entry]], labels: dict[str, str], ratios: dict[str, dict],
          questions: int | None = None) -> str:
    benches = benchmarks_of(rows)
    lines = ["| | " + " | ".join(f"{b}: tau / speedup (per question 10% - 90%)" for b in benches) + " |",
             "|---|" + "---|" * len(benches)]
    for name, cells in rows.items():
        text = []
        for b in benches:
            e = cells.get(b)
            if e is None:
                text.append("not run")
                continue
            speed = f"{e.speedup:.2f}x" if e.speedup is not None else "-"
            spread = f" ({e.spread[0]:.2f} - {e.spread[2]:.2f})" if e.spread else ""
            count = f" [{e.questions} q]" if questions is not None and e.questions != questions else ""
            text.append(f"{e.tau:.2f} / **{speed}**{spread}{count}")
        lines.append(f"| {row_label(name, labels)} | " + " | ".join(text) + " |")
    if ratios:
        first = next(iter(ratios.values()))
        a, b = (first[side].partition("=")[0] for side in ("a", "b"))  # "HASS=answers.jsonl:method"
        text = []
        for bench in benches:
            r = ratios.get(bench)
            text.append("-" if r is None else
                        f"{r['ratio']:.3f} ({r['ratio_ci95'][0]:.3f} - {r['ratio_ci95'][1]:.3f})")
        lines.append(f"| paired tau ratio {a} / {b} (95% interval) | "
                     + " | ".join(text) + " |")
    return "\n".join(lines)


def plot(rows: dict[str, dict[str, Entry]], labels: dict[str, str], path: str | Path, title: str) -> Path:
    """Speedup per benchmark (grouped bars, one per row but vanilla), per-question 10-90% whiskers, tau labels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    benches = benchmarks_of(rows)
    shown = [n for n in rows if n != "vanilla"]
    fig, ax = plt.subplots(figsize=(max(6.0, 2.2 * len(benches) + 1.5), 4.5))
    width = 0.8 / max(len(shown), 1)
    for i, name in enumerate(shown):
        xs, ys, low, high, taus = [], [], [], [], []
        for g, b in enumerate(benches):
            e = rows[name].get(b)
            if e is None or e.speedup is None:
                continue
            xs.append(g + i * width)
            ys.append(e.speedup)
            low.append(max(e.speedup - e.spread[0], 0.0) if e.spread else 0.0)
            high.append(max(e.spread[2] - e.speedup, 0.0) if e.spread else 0.0)
            taus.append(f"tau {e.tau:.2f}")
        bars = ax.bar(xs, ys, width, yerr=[low, high], capsize=3,
                      label=row_label(name, labels))
        ax.bar_label(bars, taus, fontsize=7, label_type="center", rotation=90)
    ax.axhline(1.0, color="black", linewidth=0.8, linestyle="--", label="vanilla decoding (1x)")
    ax.set_xticks([g + 0.4 - width / 2 for g in range(len(benches))], benches)
    ax.set(ylabel="speedup vs vanilla decoding (ratio of total times)", title=title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path, dpi=120)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m evaluation.headline", description=__doc__.splitlines()[0])
    p.add_argument("folder", help="a results folder (scripts/results_final.sh's OUT)")
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--tree", default=None, help="TOTAL/DEPTH/TOP_K (default: the folder's demo_tree.txt)")
    p.add_argument("--label", action="append", default=[], help="DRAFT_FOLDER_NAME=LABEL (repeatable)")
    p.add_argument("--questions", type=int, default=None, help="the intended questions; cells over fewer say so")
    p.add_argument("--out", default=None, help="also write the table here (markdown)")
    p.add_argument("--plot", default=None, help="also draw the speedups here (PNG)")
    args = p.parse_args(argv)
    folder = Path(args.folder)
    labels = {}
    for item in args.label:
        name, eq, label = item.partition("=")
        if not eq or not name or not label:
            p.error(f"--label wants DRAFT_FOLDER_NAME=LABEL, got {item!r}")
        labels[name] = label
    tree = args.tree
    if tree is None and (folder / "demo_tree.txt").is_file():
        tree = (folder / "demo_tree.txt").read_text().strip()
    try:
        files = [f for f in map(read_answer_file, answer_paths([folder]))
                 if float(f.header["config"]["temperature"]) == args.temperature]
        if not files:
            raise ValueError(f"no answer file in {folder} at temperature {args.temperature:g}")
        tree, rows = collect(files, tree)
    except (ValueError, FileNotFoundError) as e:
        p.error(str(e))
    ratios = paired_ratios(folder, args.temperature, tree, benchmarks_of(rows))
    text = table(rows, labels, ratios, args.questions)
    legend = (f"T = {args.temperature:g}, drafts on the tree {tree} (total / depth / top-k). tau: new tokens per "
              f"target forward; speedup: total tokens per second against vanilla decoding in the same file "
              f"(same questions, one process), in brackets the 10% and 90% points of the per-question speedups.")
    text = f"{text}\n\n{legend}\n\nFrom (each file's machine):\n" + "\n".join(machine_lines(files)) + "\n"
    if args.out:
        atomic_write_text(args.out, text)
    if args.plot:
        plot(rows, labels, args.plot, f"T = {args.temperature:g}, tree {tree}: speedup (whiskers: per-question "
                                      f"10-90%)")
    print(text)


if __name__ == "__main__":
    main(sys.argv[1:])
