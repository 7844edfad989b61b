"""One table over many answer files: a row per (draft, tree, temperature), a column per benchmark.

    python -m evaluation.matrix outputs/results/final_q80 \\
        --questions 80 --out outputs/results/final_q80/matrix.md --plot outputs/results/final_q80/matrix.png

Arguments are answer files or folders searched for ``*.jsonl`` answer files. Each cell is
``tau_total / speedup vs vanilla`` of one method in one file, computed exactly as ``evaluation.report`` does
(over the questions every method of that file answered; the speedup is against the ``vanilla`` of the same
file). A hass-like method is named by its draft folder's name, tree and draft vocabulary, with the file's
settings under its ``hass[key=value]`` replacements. Below the table, each file is listed with the machine
(CPU or GPU, CPU capability, threads) of every run that wrote to it. A cell over fewer questions than ``--questions`` shows its
count; a cell with no answers says ``not run``. Rows cover every draft x (tree, vocabulary) x temperature seen,
so a missing combination shows up as a row of ``not run``. At temperature 0 the last column counts the answers
that differ from vanilla's (the lossless check); at other temperatures it says ``sampling``.
"""
from __future__ import annotations

import argparse
import itertools
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from evaluation.benchmarks import BENCHMARKS
from evaluation.report import FORMAT, AnswerFile, divergences, file_rows, machine_lines, read_answer_file
from evaluation.run import _overrides
from hass.files import atomic_write_text, save_figure

BASELINES = ("vanilla",)


@dataclass(frozen=True)
class Setting:
    """What a row of the matrix holds fixed: the draft (or a method without one), tree, vocabulary, temperature."""

    draft: str
    tree: str
    vocab: str
    temperature: float


@dataclass
class Cell:
    tau: float
    speedup: float | None
    questions: int
    differ: int | None  # answers differing from vanilla (temperature 0 only)
    compared: int
    path: Path


def setting_of(f: AnswerFile, method: str) -> Setting:
    """The draft, tree and vocabulary a method of this file ran with."""
    config = f.header["config"]
    temperature = float(config["temperature"])
    if method != "hass" and not method.startswith("hass["):
        return Setting(method, "-", "-", temperature)
    items = _overrides(method) or {}
    tree = items.get("tree", f"{config['total_tokens']}/{config['depth']}/{config['top_k']}")
    vocab = items.get("vocab", config.get("draft_vocab_size") or "all")
    draft = os.path.basename(os.path.normpath(items.get("draft", config["draft"])))
    return Setting(draft, tree.replace("/", " / "), str(vocab), temperature)


def answer_paths(paths: list[str | Path]) -> list[Path]:
    """The answer files named, and those found (recursively, sorted) in the folders named."""
    found = []
    for p in map(Path, paths):
        if p.is_dir():
            found += [q for q in sorted(p.rglob("*.jsonl")) if _is_answer_file(q)]
        elif p.is_file():
            found.append(p)
        else:
            raise FileNotFoundError(f"{str(p)!r} is neither an answer file nor a folder")
    if not found:
        raise FileNotFoundError(f"no {FORMAT} answer files in {', '.join(map(str, paths))}")
    return found


def _is_answer_file(path: Path) -> bool:
    with open(path, encoding="utf-8") as f:
        return f'"format": "{FORMAT}"' in f.readline()


def collect(files: list[AnswerFile]) -> dict[tuple[Setting, str], Cell]:
    """(setting, benchmark) -> cell. The same setting and benchmark in two files is refused: pick one."""
    cells: dict[tuple[Setting, str], Cell] = {}
    for f in files:
        if f.header["config"].get("device") != files[0].header["config"].get("device") or \
                f.header["config"]["base"] != files[0].header["config"]["base"]:
            raise ValueError(f"{f.path} was run on another target or device than {files[0].path}; "
                             f"one matrix compares one target on one machine")
        for row in file_rows(f):
            if row.method in BASELINES:
                continue
            key = (setting_of(f, row.method), row.bench)
            if key in cells:
                raise ValueError(f"{row.bench} with {key[0]} is in both {cells[key].path} and {f.path}; "
                                 f"name the files to use instead of their folder")
            differ, compared = None, row.questions
            if key[0].temperature == 0 and "vanilla" in f.answers:
                compared, found = divergences(f, row.method)
                differ = len(found)
            cells[key] = Cell(row.tau_total, row.speedup_vs_vanilla, row.questions, differ, compared, f.path)
    return cells


def benchmarks_of(cells: dict[tuple[Setting, str], Cell]) -> list[str]:
    """The benchmarks with a cell: the usual ones in their usual order, then any others sorted."""
    seen = {b for _, b in cells}
    return [b for b in BENCHMARKS if b in seen] + sorted(seen - set(BENCHMARKS))


def table(cells: dict[tuple[Setting, str], Cell], questions: int | None = None) -> str:
    """The markdown table: a row per draft x (tree, vocab) x temperature seen, a column per benchmark."""
    settings = [s for s, _ in cells]
    benches = benchmarks_of(cells)
    drafts = list(dict.fromkeys(s.draft for s in settings))
    trees = list(dict.fromkeys((s.tree, s.vocab) for s in settings if s.tree != "-"))
    temperatures = sorted({s.temperature for s in settings})
    rows = []
    for (tree, vocab), temperature, draft in itertools.product(trees, temperatures, drafts):
        if not any(s.draft == draft and s.tree != "-" for s in settings):
            continue
        rows.append(Setting(draft, tree, vocab, temperature))
    rows += [s for s in dict.fromkeys(settings) if s.tree == "-"]  # methods without a draft (hf, pld)

    lines = ["| draft | tree (total / depth / top-k) | draft vocabulary | T | "
             + " | ".join(benches) + " | answers differing from vanilla |",
             "|" + "---|" * (len(benches) + 5)]
    for s in rows:
        row_cells = [cells.get((s, b)) for b in benches]
        text = []
        for c in row_cells:
            if c is None:
                text.append("not run")
                continue
            speed = f"{c.speedup:.2f}x" if c.speedup is not None else "-"
            count = f" ({c.questions} q)" if questions is not None and c.questions != questions else ""
            text.append(f"{c.tau:.3f} / {speed}{count}")
        done = [c for c in row_cells if c is not None]
        if s.temperature != 0:
            lossless = "(sampling)"
        elif not done or any(c.differ is None for c in done):
            lossless = "-"
        else:
            lossless = f"{sum(c.differ for c in done)} of {sum(c.compared for c in done)}"
        lines.append(f"| {s.draft} | {s.tree} | {s.vocab} | {s.temperature:g} | " + " | ".join(text)
                     + f" | {lossless} |")
    return "\n".join(lines)


def plot(cells: dict[tuple[Setting, str], Cell], path: Path) -> Path:
    """tau_total of every cell as grouped bars: a group per (tree, vocabulary, temperature, benchmark), a bar per
    draft, each bar labelled with its speedup. Written to a temporary name, then renamed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    drafts = list(dict.fromkeys(s.draft for s, _ in cells if s.tree != "-"))
    benches = benchmarks_of(cells)
    groups = [(tree, vocab, t, b) for (tree, vocab), t in itertools.product(
        dict.fromkeys((s.tree, s.vocab) for s, _ in cells if s.tree != "-"),
        sorted({s.temperature for s, _ in cells})) for b in benches]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(groups) + 2), 4.5))
    width = 0.8 / max(len(drafts), 1)
    for i, draft in enumerate(drafts):
        xs, taus, speeds = [], [], []
        for g, (tree, vocab, t, b) in enumerate(groups):
            c = cells.get((Setting(draft, tree, vocab, t), b))
            if c is not None:
                xs.append(g + i * width)
                taus.append(c.tau)
                speeds.append(f"{c.speedup:.2f}x" if c.speedup is not None else "")
        bars = ax.bar(xs, taus, width, label=draft)
        ax.bar_label(bars, speeds, fontsize=6, rotation=90, padding=2)
    for g, (tree, vocab, t, b) in enumerate(groups):
        if not any((Setting(d, tree, vocab, t), b) in cells for d in drafts):
            ax.text(g + 0.4 - width / 2, 0.05, "not run", ha="center", fontsize=7, rotation=90, color="gray")
    names = [f"{tree.replace(' ', '')}{'' if vocab == 'all' else f' V{vocab}'}\nT={t:g}\n{b}"
             for tree, vocab, t, b in groups]
    ax.set_xticks([g + 0.4 - width / 2 for g in range(len(groups))], names, fontsize=7)
    ax.axhline(1.0, color="gray", linewidth=0.8)
    ax.set_xlim(-0.2 - width / 2, len(groups) - 0.2 + width / 2)
    ax.set(ylabel="tau_total (tokens per target forward)",
           title="tau per cell (bar labels: speedup vs vanilla in the same file)")
    ax.set_ylim(0, max([c.tau for c in cells.values()] + [1.0]) * 1.25)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path, dpi=120)


def sources(files: list[AnswerFile]) -> str:
    """The files behind the table, each with the machine of every run that wrote to it."""
    return "\n".join(["From (each file's machine; a resumed file names every run's):", *machine_lines(files)])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m evaluation.matrix", description=__doc__.split("\n")[0])
    parser.add_argument("paths", nargs="+", help="answer files, or folders searched for them")
    parser.add_argument("--questions", type=int, default=None,
                        help="the intended questions per benchmark; cells over fewer show their count")
    parser.add_argument("--out", default=None, help="also write the table here (markdown)")
    parser.add_argument("--plot", default=None, help="also draw every cell's tau (and speedup) here (PNG)")
    args = parser.parse_args(argv)
    try:
        files = [read_answer_file(p) for p in answer_paths(args.paths)]
        cells = collect(files)
        text = table(cells, args.questions)
    except (ValueError, FileNotFoundError) as e:
        parser.error(str(e))
    legend = ("Each cell: tau_total (tokens per target forward) / speedup vs vanilla decoding in the same file."
              + (f" Cells over fewer than {args.questions} questions show their count." if args.questions else ""))
    text = f"{text}\n\n{legend}\n\n{sources(files)}\n"
    if args.out:
        atomic_write_text(args.out, text)
    if args.plot:
        plot(cells, args.plot)
    print(text)


if __name__ == "__main__":
    main(sys.argv[1:])
