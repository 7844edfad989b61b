"""Held-out draft accuracy of several multi-stage runs on one plot, stages laid end to end.

    python -m train.compare_runs --run HASS=runs/smollm2_cpu_hass --run EAGLE2=runs/smollm2_cpu_eagle2 \
        --out checkpoints/accuracy_by_stage.png

A run folder holds one sub-folder per stage (stage1, stage2, ...), each with the trainer's log.jsonl. The x axis
is the optimiser step counted from the start of stage 1; one line per run and aligning step (held-out top-1
accuracy against the target's argmax), a dotted line where a stage starts. Also prints the last evaluation of
each stage.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from hass.files import save_figure


def read_evals(run: Path) -> list[tuple[str, list[dict]]]:
    """[(stage folder name, its eval records in order)] for stage1, stage2, ... (numeric order)."""
    stages = sorted((p for p in run.iterdir() if re.fullmatch(r"stage\d+", p.name) and (p / "log.jsonl").is_file()),
                    key=lambda p: int(p.name[5:]))
    if not stages:
        raise ValueError(f"{run}: no stage<N>/log.jsonl inside")
    out = []
    for stage in stages:
        records = [json.loads(line) for line in (stage / "log.jsonl").read_text().splitlines() if line.strip()]
        out.append((stage.name, records))
    return out


COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple")


def accuracy_axes():
    """(figure, axes) for held-out accuracy curves, off screen."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(8, 4.5))


def plot_accuracy_series(ax, label: str, series: dict[int, list[tuple[int, float]]], color: str) -> None:
    """One run's held-out top-1 per aligning step {s: [(step, accuracy)]}: one colour per run, step 1 solid,
    later aligning steps fainter and dashed."""
    for s, points in sorted(series.items()):
        ax.plot(*zip(*points), marker="o", color=color, alpha=1.0 if s == 1 else 0.6,
                linestyle=("-", "--", "-.", ":")[min(s, 4) - 1], label=f"{label}, aligning step {s}")


def save_accuracy_plot(fig, ax, out: Path, xlabel: str, ylabel: str) -> None:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, out, dpi=110, format="png")


def plot(runs: dict[str, Path], out: Path) -> list[str]:
    fig, ax = accuracy_axes()
    lines, boundaries = [], set()
    for (label, run), color in zip(runs.items(), COLORS):
        offset, series = 0, {}
        for stage, records in read_evals(run):
            boundaries.add(offset)
            evals = [r for r in records if r.get("split") == "eval"]
            for r in evals:
                for key, value in r.items():
                    if key.startswith("acc_s"):
                        series.setdefault(int(key[5:]), []).append((offset + r["step"], value))
            if evals:
                last = evals[-1]
                accs = " / ".join(f"{last[k]:.3f}" for k in sorted(last) if k.startswith("acc_s"))
                lines.append(f"{label} {stage}: step {offset + last['step']}, held-out top-1 {accs}")
            steps = [r["step"] for r in records if r.get("split") == "train"]
            offset += max(steps, default=0)
        plot_accuracy_series(ax, label, series, color)
    for x in sorted(boundaries)[1:]:
        ax.axvline(x, color="grey", linestyle=":", linewidth=1)
    save_accuracy_plot(fig, ax, out, "optimiser step (stages end to end; dotted: a stage starts)",
                       "held-out draft top-1 accuracy")
    return lines


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m train.compare_runs", description=__doc__.splitlines()[0])
    p.add_argument("--run", action="append", required=True, help="LABEL=RUN_FOLDER (repeat for each run)")
    p.add_argument("--out", required=True, help="PNG to write")
    args = p.parse_args(argv)
    runs = {}
    for item in args.run:
        label, eq, folder = item.partition("=")
        if not eq or not label or not Path(folder).is_dir():
            p.error(f"--run wants LABEL=EXISTING_FOLDER, got {item!r}")
        runs[label] = Path(folder)
    try:
        lines = plot(runs, Path(args.out))
    except ValueError as e:
        p.error(str(e))
    print("\n".join(lines))
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
