"""Speed and acceptance tables from answer files (docs/METHOD.md section 7).

    python -m evaluation.report answers/mt_bench.jsonl answers/gsm8k.jsonl --out-dir reports/T0

Definitions (per benchmark, over the questions every method of a file answered):
- tok/s = total new tokens / total wall time over the questions (all turns, prefill included).
- speedup vs vanilla = the method's tok/s / ``vanilla``'s from the SAME answer file (one run, one machine,
  methods interleaved question by question): the ratio of total times where both produced the same tokens
  (greedy), never a mean of per-answer rates (a slow long answer weighs what it costs). Likewise vs ``hf``.
  Its per-question spread: the 10th percentile / median / 90th percentile over questions of each question's
  own ratio (new tokens / wall time of the method over vanilla's).
- tau_total = total new tokens / total target forwards. Every turn's prefill counts as one forward that
  produces one token, so plain decoding gives exactly 1.0.
- tau_q (the HASS authors' figure) = per question, the mean of ``accept_lengths`` (accepted drafts + 1 bonus,
  one entry per target forward after the prefill); then the mean over questions. Questions whose answers
  all ended at the prefill have no entry and are left out.
- With several benchmarks, the ``mean`` rows average each column's per-benchmark values (questions: summed).
- acceptance by depth d (methods with a draft) = of the target forwards that accepted at least d - 1 drafted
  tokens, the fraction that accepted at least d: P(accepted >= d | accepted >= d - 1), from ``accept_lengths``
  (accepted = length - 1). Their running product is P(accepted >= d); the sum of those products is the mean accept length over
  these forwards minus 1.
  A forward cut by max_new_tokens or an end-of-sequence token counts as what it kept.
Lossless check: at temperature 0 every method's token ids must equal ``vanilla``'s; the report counts the
answers that differ and gives the first point of divergence of each (question id, turn, token index).
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from statistics import mean

from hass.files import atomic_path, atomic_write_text, save_figure

FORMAT = "hass-answers/1"
# Answer files whose configs differ in one of these cannot share a table: their numbers do not compare.
COMPARED_KEYS = ("base", "dtype", "device", "temperature", "max_new_tokens")


@dataclass
class AnswerFile:
    path: Path
    header: dict
    answers: dict[str, dict]  # method -> question_id -> answer record (a later record replaces an earlier one)
    resumes: list[dict] = field(default_factory=list)  # the "resume" records, one per resumed run, in order

    @property
    def machines(self) -> list[dict]:
        """The machine of every run that wrote to this file: the header's, then each resume's."""
        return [r.get("machine", {}) for r in [self.header, *self.resumes]]

    @property
    def bench(self) -> str:
        return self.header["config"]["bench"]

    def question_ids(self) -> list:
        """Questions answered by every method of the file, in file order."""
        methods = list(self.answers)
        if not methods:
            return []
        return [q for q in self.answers[methods[0]] if all(q in self.answers[m] for m in methods[1:])]


def read_answer_file(path: str | Path) -> AnswerFile:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"answer file {str(path)!r} does not exist")
    with open(path, encoding="utf-8") as f:
        records = [json.loads(line) for line in f if line.strip()]
    if not records or records[0].get("record") != "header" or records[0].get("format") != FORMAT:
        raise ValueError(f"{str(path)!r} is not a {FORMAT} answer file (its first line must be the header)")
    answers: dict[str, dict] = {}
    resumes = []
    for r in records[1:]:
        if r.get("record") == "resume":
            resumes.append(r)
        else:
            answers.setdefault(r["method"], {})[r["question_id"]] = r
    return AnswerFile(path, records[0], answers, resumes)


def machine_label(machine: dict) -> str:
    """'AMD EPYC, AVX2, 2 threads' from a header's or resume record's ``machine``."""
    parts = [machine.get("gpu") or machine.get("cpu") or "unknown machine",
             machine.get("cpu_capability") or "capability not recorded"]
    if "threads" in machine:
        parts.append(f"{machine['threads']} thread{'s' if machine['threads'] != 1 else ''}")
    return ", ".join(parts)


def check_same_setup(files: list[AnswerFile]) -> None:
    """Refuse to mix configurations or to count one (benchmark, method) twice."""
    for key in COMPARED_KEYS:
        values = {str(f.path): f.header["config"].get(key) for f in files}
        if len({json.dumps(v) for v in values.values()}) > 1:
            listing = ", ".join(f"{p}: {v!r}" for p, v in values.items())
            raise ValueError(f"answer files from different configurations cannot share a table "
                             f"({key} differs: {listing})")
    seen: dict[tuple[str, str], Path] = {}
    for f in files:
        for method in f.answers:
            if (f.bench, method) in seen:
                raise ValueError(f"{f.bench}/{method} appears in both {seen[(f.bench, method)]} and {f.path}")
            seen[(f.bench, method)] = f.path


@dataclass
class Row:
    bench: str
    method: str
    questions: int
    new_tokens: int
    wall_time_s: float
    tokens_per_s: float
    speedup_vs_vanilla: float | None
    speedup_vs_hf: float | None
    tau_total: float
    tau_q: float | None
    accept_lengths: list[int] = field(default_factory=list, repr=False)
    question_rates: dict = field(default_factory=dict, repr=False)  # question id -> new tokens / wall time
    speedup_spread: tuple[float, float, float] | None = None  # per-question speedup vs vanilla: p10, median, p90


def _question_totals(record: dict) -> tuple[int, float, int, list[int]]:
    turns = record["turns"]
    return (
        sum(t["new_tokens"] for t in turns),
        sum(t["wall_time"] for t in turns),
        sum(t["target_forwards"] for t in turns),
        [a for t in turns for a in t["accept_lengths"]],
    )


def method_row(f: AnswerFile, method: str, question_ids: list) -> Row:
    totals = [_question_totals(f.answers[method][q]) for q in question_ids]
    new_tokens = sum(t[0] for t in totals)
    forwards = sum(t[2] for t in totals)
    wall = sum(t[1] for t in totals)
    per_question_tau = [mean(t[3]) for t in totals if t[3]]
    return Row(
        bench=f.bench,
        method=method,
        questions=len(question_ids),
        new_tokens=new_tokens,
        wall_time_s=wall,
        tokens_per_s=new_tokens / wall if wall > 0 else 0.0,
        speedup_vs_vanilla=None,
        speedup_vs_hf=None,
        tau_total=new_tokens / forwards if forwards else 0.0,
        tau_q=float(mean(per_question_tau)) if per_question_tau else None,
        accept_lengths=[a for t in totals for a in t[3]],
        question_rates={q: t[0] / t[1] for q, t in zip(question_ids, totals) if t[1] > 0},
    )


def percentiles(values: list[float]) -> tuple[float, float, float]:
    """(10th percentile, median, 90th percentile), linear between the sorted values."""
    v = sorted(values)

    def at(p: float) -> float:
        i = p * (len(v) - 1)
        lo = int(i)
        return v[lo] + (v[min(lo + 1, len(v) - 1)] - v[lo]) * (i - lo)
    return at(0.1), at(0.5), at(0.9)


def file_rows(f: AnswerFile) -> list[Row]:
    question_ids = f.question_ids()
    rows = [method_row(f, m, question_ids) for m in f.answers]
    by_method = {r.method: r for r in rows}
    for r in rows:
        for baseline, attr in (("vanilla", "speedup_vs_vanilla"), ("hf", "speedup_vs_hf")):
            if baseline in by_method and by_method[baseline].tokens_per_s > 0:
                setattr(r, attr, r.tokens_per_s / by_method[baseline].tokens_per_s)
        base = by_method.get("vanilla")
        if base is not None:
            ratios = [r.question_rates[q] / base.question_rates[q] for q in r.question_rates
                      if base.question_rates.get(q)]
            r.speedup_spread = percentiles(ratios) if ratios else None
    return rows


def _mean_or_none(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return float(mean(values)) if values else None


def mean_rows(rows: list[Row]) -> list[Row]:
    """One row per method averaging its per-benchmark rows (the paper's 'mean over benchmarks')."""
    methods = list(dict.fromkeys(r.method for r in rows))
    out = []
    for m in methods:
        rs = [r for r in rows if r.method == m]
        out.append(Row(
            bench="mean",
            method=m,
            questions=sum(r.questions for r in rs),
            new_tokens=sum(r.new_tokens for r in rs),
            wall_time_s=sum(r.wall_time_s for r in rs),
            tokens_per_s=mean(r.tokens_per_s for r in rs),
            speedup_vs_vanilla=_mean_or_none([r.speedup_vs_vanilla for r in rs]),
            speedup_vs_hf=_mean_or_none([r.speedup_vs_hf for r in rs]),
            tau_total=mean(r.tau_total for r in rs),
            tau_q=_mean_or_none([r.tau_q for r in rs]),
            accept_lengths=[a for r in rs for a in r.accept_lengths],
        ))
    return out


def spread_text(r: Row) -> str | None:
    """The per-question speedup spread as '10% / median / 90%'."""
    return None if r.speedup_spread is None else " / ".join(f"{x:.2f}" for x in r.speedup_spread)


def depth_acceptance(accept_lengths: list[int], depth: int | None = None) -> list[float | None]:
    """P(accepted >= d | accepted >= d - 1) for d = 1 .. ``depth`` (default: the longest acceptance), where
    accepted = length - 1. A depth that some forward reached but none passed is 0.0; one that no forward
    reached is None (no data, not a zero rate)."""
    accepted = [a - 1 for a in accept_lengths]
    depth = max(accepted, default=0) if depth is None else depth
    at_least = [sum(k >= d for k in accepted) for d in range(depth + 1)]
    return [at_least[d] / at_least[d - 1] if at_least[d - 1] else None for d in range(1, depth + 1)]


def depth_table(rows: list[Row]) -> str:
    """Markdown: acceptance by depth per (benchmark, method) for the methods that draft."""
    drafting = [r for r in rows if r.method != "vanilla" and any(a > 1 for a in r.accept_lengths)]
    if not drafting:
        return "no drafted token was accepted"
    depth = max(max(r.accept_lengths) - 1 for r in drafting)
    rates = {(r.bench, r.method): depth_acceptance(r.accept_lengths, depth) for r in drafting}
    lines = ["| benchmark | method | forwards | " + " | ".join(f"d={d}" for d in range(1, depth + 1)) + " |",
             "|" + "---|" * (3 + depth)]
    for r in drafting:
        cells = rates[r.bench, r.method]
        lines.append(f"| {r.bench} | {r.method} | {len(r.accept_lengths)} | " + " | ".join(map(_cell, cells)) + " |")
    return "\n".join(lines)


def first_divergence(a: list[int], b: list[int]) -> int | None:
    """Index of the first token where two answers differ (a length difference counts), None if equal."""
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def divergences(f: AnswerFile, method: str, reference: str = "vanilla") -> tuple[int, list[tuple]]:
    """(answers compared, [(question_id, turn, token_index)] for each answer that differs)."""
    question_ids = f.question_ids()
    found = []
    for q in question_ids:
        turns_a, turns_b = f.answers[method][q]["turns"], f.answers[reference][q]["turns"]
        for turn, (ta, tb) in enumerate(zip(turns_a, turns_b)):
            index = first_divergence(ta["token_ids"], tb["token_ids"])
            if index is not None:
                found.append((q, turn, index))
                break  # later turns are conditioned on this one: only the first divergence is news
    return len(question_ids), found


def lossless_lines(files: list[AnswerFile]) -> list[str]:
    lines = []
    for f in files:
        if f.header["config"]["temperature"] != 0 or "vanilla" not in f.answers:
            continue
        for method in f.answers:
            if method == "vanilla":
                continue
            n, found = divergences(f, method)
            lines.append(f"{f.bench}: {method} vs vanilla: {len(found)} of {n} answers differ")
            lines += [f"  question {q}, turn {t + 1}, first differing token {i}" for q, t, i in found]
    return lines


COLUMNS = ("bench", "method", "questions", "new_tokens", "wall_time_s", "tokens_per_s",
           "speedup_vs_vanilla", "speedup_spread", "speedup_vs_hf", "tau_total", "tau_q")
HEADINGS = ("benchmark", "method", "questions", "new tokens", "wall s", "tok/s",
            "speedup vs vanilla", "per question (10% / median / 90%)", "speedup vs hf",
            "tau_total (tokens/forward)", "tau_q (per-question mean)")


def _value(r: Row, column: str):
    return spread_text(r) if column == "speedup_spread" else getattr(r, column)


def _cell(value) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def markdown_table(rows: list[Row]) -> str:
    lines = ["| " + " | ".join(HEADINGS) + " |", "|" + "---|" * len(HEADINGS)]
    lines += ["| " + " | ".join(_cell(_value(r, c)) for c in COLUMNS) + " |" for r in rows]
    return "\n".join(lines)


def write_csv(rows: list[Row], path: Path) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(COLUMNS)
        writer.writerows([[_value(r, c) if _value(r, c) is not None else "" for c in COLUMNS] for r in rows])


def plot_scope(rows: list[Row]) -> str:
    """What the pooled plots cover, for their titles: the one benchmark's name, or how many were pooled."""
    names = list(dict.fromkeys(r.bench for r in rows if r.bench != "mean"))
    return names[0] if len(names) == 1 else f"{len(names)} benchmarks pooled"


def plot(rows: list[Row], out_dir: Path) -> list[Path]:
    """accept_lengths.png (histogram per method over the benchmarks read), speedup.png (per benchmark) and
    depth_acceptance.png (per method with accepted drafts, over the benchmarks read)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    per_bench = [r for r in rows if r.bench != "mean"]
    scope = plot_scope(per_bench)
    lengths = {m: Counter() for m in dict.fromkeys(r.method for r in per_bench)}
    for r in per_bench:
        lengths[r.method].update(r.accept_lengths)
    fig, ax = plt.subplots(figsize=(7, 4))
    xs = range(1, max((max(c, default=1) for c in lengths.values()), default=1) + 1)
    width = 0.8 / max(len(lengths), 1)
    for i, (method, counts) in enumerate(lengths.items()):
        total = max(sum(counts.values()), 1)
        ax.bar([x + i * width for x in xs], [counts[x] / total for x in xs], width, label=method)
    ax.set(xlabel="tokens accepted per target forward (bonus included)", ylabel="fraction of forwards",
           title=f"Acceptance length, {scope}")
    ax.legend()
    fig.tight_layout()
    paths = [out_dir / "accept_lengths.png"]
    save_figure(fig, paths[0], dpi=120)

    benches = list(dict.fromkeys(r.bench for r in rows))
    methods = [m for m in dict.fromkeys(r.method for r in rows) if m != "vanilla"]
    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.8 / max(len(methods), 1)
    for i, m in enumerate(methods):
        speed = {r.bench: r.speedup_vs_vanilla for r in rows if r.method == m}
        ax.bar([b + i * width for b in range(len(benches))], [speed.get(b) or 0.0 for b in benches], width, label=m)
    ax.axhline(1.0, color="gray", linewidth=0.8)
    ax.set_xticks([b + 0.4 - width / 2 for b in range(len(benches))], benches)
    ax.set(ylabel="speedup vs vanilla (tokens/s ratio)", title="Speedup per benchmark")
    if methods:  # vanilla alone has nothing to compare
        ax.legend()
    fig.tight_layout()
    paths.append(out_dir / "speedup.png")
    save_figure(fig, paths[1], dpi=120)

    rates = {m: depth_acceptance(list(counts.elements())) for m, counts in lengths.items() if m != "vanilla"}
    rates = {m: r for m, r in rates.items() if r}
    if rates:
        fig, ax = plt.subplots(figsize=(7, 4))
        for m, r in rates.items():
            ax.plot(range(1, len(r) + 1), r, marker="o", label=m)
        ax.set_xticks(range(1, max(len(r) for r in rates.values()) + 1))
        ax.set(xlabel="tree depth d", ylabel="P(accepted >= d | accepted >= d - 1)", ylim=(0, 1),
               title=f"Acceptance by depth, {scope}")
        ax.legend()
        fig.tight_layout()
        paths.append(out_dir / "depth_acceptance.png")
        save_figure(fig, paths[-1], dpi=120)
    return paths


def machine_lines(files: list[AnswerFile]) -> list[str]:
    """A line per file: its path and the machine of every run that wrote to it (the header's, then each resume's)."""
    lines = []
    for f in files:
        labels = [machine_label(m) for m in f.machines]
        lines.append(f"- {f.path}: {labels[0]}" + "".join(f"; resumed on {label}" for label in labels[1:]))
    return lines


def report(paths: list[str | Path], out_dir: str | Path) -> str:
    """Read, check, tabulate and write everything; returns the markdown that was printed."""
    files = [read_answer_file(p) for p in paths]
    check_same_setup(files)
    rows = [r for f in files for r in file_rows(f)]
    if len({f.bench for f in files}) > 1:
        rows += mean_rows(rows)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config = files[0].header["config"]
    setting = ", ".join(f"{k}={config.get(k)}" for k in COMPARED_KEYS)
    lossless = lossless_lines(files)
    text = "\n".join([
        f"# Speed and acceptance ({setting})", "", markdown_table(rows), "",
        "tau_total = total new tokens / total target forwards (each turn's prefill counts as one forward).",
        "tau_q = mean over questions of the per-question mean accept length (accepted drafts + 1).",
        "tok/s = total new tokens / total wall time; speedup = the method's tok/s / the baseline's from the same "
        "answer file (the ratio of total times where the tokens are the same), with the spread of the per-question "
        "ratios (10th percentile / median / 90th percentile); mean rows average the benchmarks.",
        "", "## Acceptance by tree depth", "",
        "P(accepted >= d | accepted >= d - 1) over the target forwards after each prefill.", "",
        depth_table(rows), "",
        "## Lossless check (temperature 0)", "",
        *(lossless or ["not applicable (temperature > 0 or no vanilla answers)"]), "",
        "## Machines (timings compare within a file)", "", *machine_lines(files), "",
    ])
    atomic_write_text(out_dir / "summary.md", text)
    write_csv(rows, out_dir / "summary.csv")
    plot(rows, out_dir)
    resolved = {"answer_files": [{"path": str(f.path.resolve()), "header": f.header, "resumes": f.resumes} for f in files],
                "rows": [{c: getattr(r, c) for c in COLUMNS} | {"depth_acceptance": depth_acceptance(r.accept_lengths)}
                         for r in rows]}
    atomic_write_text(out_dir / "report_config.json", json.dumps(resolved, indent=2))
    print(text)
    return text


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m evaluation.report", description=__doc__.split("\n")[0])
    parser.add_argument("answers", nargs="+", help="answer files written by evaluation.run")
    parser.add_argument("--out-dir", required=True, help="where summary.md/.csv, the PNGs and report_config.json go")
    args = parser.parse_args(argv)
    try:
        report(args.answers, args.out_dir)
    except (ValueError, FileNotFoundError) as e:
        parser.error(str(e))


if __name__ == "__main__":
    main(sys.argv[1:])
