"""Long training runs in segments, across sessions and machines (docs/TRAINING_PLAN.md).

    python -m train.long_run train --name eagle2 --config configs/long_smollm2_eagle2.json [--stop-at STEP] [--key value ...]
    python -m train.long_run train --name hass_warm --config configs/long_smollm2_hass_warm.json --start-from MILESTONE
    python -m train.long_run milestone --name eagle2 [--out checkpoints/milestones/eagle2]
    python -m train.long_run status
    python -m train.long_run curves --runs eagle2,hass_warm,eagle2_cont --out held_out.png [--json held_out.json]

A long run NAME lives in ``runs/long/NAME/``, as one or more segments. Segment ``seg-00000000`` starts at global
step 0 and resumes from its newest checkpoint (optimiser state included, the result of an uninterrupted run). When
the local state is gone (a fresh machine) or lags behind the committed milestone (``checkpoints/milestones/NAME``:
the draft's weights and ``milestone.json``, no optimiser state), a new segment ``seg-<S>`` starts from the
milestone's weights at its global step S: on the batches not yet seen (``start_batch``), for the remaining steps,
with a short warm-up (the optimiser's moments start afresh) and the learning rate that continues the linear
schedule's tail. A branch (``--start-from``) starts the same way from another run's milestone: the HASS warm start
continues the EAGLE-2 draft at a global step with another loss.

The global log (every segment's records, the step made global) gives the curve across restarts; ``curves``
plots the held-out top-1 of several runs (run folders or committed milestones) against the global step and
reports how much each rose over the last 20% of its steps, the stopping rule of docs/TRAINING_PLAN.md.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
from pathlib import Path

from hass.files import atomic_write_text
from train.config import TrainConfig, load_config
from train.data import read_prepared
from train.features import data_fingerprint, target_fingerprint

RUNS = Path("runs/long")
MILESTONES = Path("checkpoints/milestones")
MILESTONE = "milestone.json"
PRIOR, PRIOR_LOG = "prior.json", "prior_log.jsonl"  # a restarted run's history before its first local segment
RESTART_WARMUP_STEPS = 50
# what a milestone copies from a checkpoint: the weights and what describes them, never the optimiser state
_WEIGHT_FILES = ("config.json", "model.safetensors", "token_counts.safetensors", "train_config.json")


class LongRunError(ValueError):
    """A long run cannot continue as asked (changed settings, data or target; a missing milestone)."""


def segment_name(start: int) -> str:
    return f"seg-{start:08d}"


def segment_overrides(cfg: TrainConfig, start: int, warmup_steps: int = RESTART_WARMUP_STEPS) -> dict:
    """The settings of a segment that starts from weights at global step ``start`` of a run configured by ``cfg``
    (``cfg.max_steps`` steps, warm-up then linear decay): the remaining steps on the batches not yet seen, a warm-up
    of ``warmup_steps`` (fresh optimiser moments), then exactly the original schedule's linear tail."""
    total = cfg.max_steps
    if total <= 0:
        raise LongRunError("a long run needs max_steps > 0 (its schedule is fixed in steps)")
    if not 0 <= start < total:
        raise LongRunError(f"a segment must start within the run's {total} steps, got {start}")
    if start == 0:
        return {}
    left = total - start
    warm = min(warmup_steps, max(1, left // 2))
    warmup = max(1, round(cfg.warmup_fraction * total))
    # the original: lr * (total - s) / (total - warmup) for s >= warmup; the segment's tail after its own warm-up
    # w is lr' * (left - k) / (left - w): equal at every k when lr' = lr * (left - w) / (total - warmup)
    lr = cfg.lr * (left - warm) / max(1, total - warmup) if start >= warmup else cfg.lr
    return {"start_batch": cfg.start_batch + start * cfg.grad_accum, "max_steps": left, "lr": lr,
            "warmup_fraction": warm / left}


def choose_segment(local: dict[int, int], milestone: int | None) -> tuple[int, bool]:
    """Which segment to run: (its global start step, whether it is new). ``local`` maps each local segment's start
    to the global step its newest checkpoint reached (its start when it has none); ``milestone`` is the committed
    milestone's global step. The furthest local state wins; a milestone beyond it starts a new segment there."""
    best = max(local, key=lambda s: (local[s], s), default=None)
    if milestone is not None and (best is None or milestone > local[best]):
        return milestone, milestone not in local
    if best is None:
        return 0, True
    return best, False


def _checkpoint_step(folder: Path) -> int:
    return json.loads((folder / "trainer_state.json").read_text())["step"]


def local_segments(run_dir: Path) -> dict[int, int]:
    """start -> global step reached, for every segment folder of a run."""
    out = {}
    for seg in sorted(run_dir.glob("seg-*")):
        start = int(seg.name[4:])
        steps = [_checkpoint_step(c) for c in seg.iterdir() if (c / "trainer_state.json").is_file()
                 and not c.name.startswith(".")]
        out[start] = start + max(steps, default=0)
    return out


def read_milestone(folder: Path) -> dict | None:
    path = folder / MILESTONE
    return json.loads(path.read_text()) if path.is_file() else None


def identity(cfg: TrainConfig) -> dict:
    """What a run's weights were trained on: the data's token ids and the target (train.trainer's identity)."""
    from transformers import AutoConfig

    from train.trainer import _resolve_target

    target = _resolve_target(cfg.target)
    _, samples = read_prepared(cfg.data)
    return {"data_sha256": data_fingerprint(samples), "target": target_fingerprint(AutoConfig.from_pretrained(target),
                                                                                   str(target))}


def base_differences(saved: dict, cfg: TrainConfig) -> list[str]:
    """Differences in what is trained between a saved base config and this one (how it logs, saves, evaluates and
    runs aside: train.trainer.RESUME_MAY_CHANGE)."""
    from train.trainer import RESUME_MAY_CHANGE

    mine = json.loads(json.dumps(dataclasses.asdict(cfg)))
    return [f"{k}: {saved.get(k)!r} there, {mine.get(k)!r} now" for k in sorted(set(saved) | set(mine))
            if k not in RESUME_MAY_CHANGE and saved.get(k) != mine.get(k)]


def train_long(cfg: TrainConfig, name: str, stop_at: int = 0, start_from: str | None = None,
               runs: Path = RUNS, milestones: Path = MILESTONES) -> Path:
    """Run (or continue) the long run ``name`` with base config ``cfg``; return the checkpoint it ended at.

    ``stop_at`` is a global step to stop at (a checkpoint is saved there, the schedule unchanged). ``start_from``
    is another run's milestone folder to branch from when this run has no state of its own."""
    from train.trainer import train

    run_dir = runs / name
    run_dir.mkdir(parents=True, exist_ok=True)
    base_path = run_dir / "base_config.json"
    me = identity(cfg)
    if base_path.is_file():
        saved = json.loads(base_path.read_text())
        diff = base_differences(saved["config"], cfg) + [f"{k} differs" for k in me if saved.get(k) != me[k]]
        if diff:
            raise LongRunError(f"cannot continue the long run {run_dir}: {'; '.join(diff)}; continue with the "
                               f"same settings, data and target, or give the run another --name")
    own = read_milestone(milestones / name)
    source = milestones / name
    if own is None and start_from is not None:
        source, own = Path(start_from), read_milestone(Path(start_from))
        if own is None:
            raise LongRunError(f"--start-from {start_from}: no {MILESTONE} there (python -m train.long_run milestone)")
    if own is not None:
        diff = [f"{k} differs" for k in me if own.get(k) != me[k]]
        if source == milestones / name:
            diff = base_differences(own["config"], cfg) + diff
        if diff:
            raise LongRunError(f"milestone {source} was trained on other inputs or settings: {'; '.join(diff)}")
    local = local_segments(run_dir)
    if stop_at and max(local.values(), default=0) >= stop_at:
        folder, step = newest_checkpoint(run_dir)
        print(f"long run {name}: already at step {step} (>= --stop-at {stop_at}); nothing to do", file=sys.stderr)
        return folder
    start, new = choose_segment(local, own["global_step"] if own else None)
    seg = run_dir / segment_name(start)
    overrides = {"output_dir": str(seg), "resume": "auto", **segment_overrides(cfg, start)}
    if start:
        overrides["init_from"] = str(source)
    if stop_at:
        if stop_at <= start:
            raise LongRunError(f"--stop-at {stop_at}: the run continues from global step {start}")
        overrides["stop_at"] = stop_at - start
    if not base_path.is_file():
        atomic_write_text(base_path, json.dumps({"config": dataclasses.asdict(cfg), **me}, indent=1) + "\n")
    if new and start:  # keep the history the weights carry: the curve and the token count before the segment
        if (source / "log.jsonl").is_file():
            shutil.copy2(source / "log.jsonl", run_dir / PRIOR_LOG)
        atomic_write_text(run_dir / PRIOR, json.dumps({"from": str(source), "global_step": start,
                                                       "tokens_seen": own.get("tokens_seen", 0)}) + "\n")
        _event(run_dir, f"{segment_name(start)}: no local state at or beyond global step {start}; starting from the "
                        f"committed weights {source} (no optimiser state) with a "
                        f"{round(overrides['warmup_fraction'] * overrides['max_steps'])}-step warm-up, "
                        f"lr {overrides['lr']:.3g}, on batches {overrides['start_batch']}+")
    elif new:
        _event(run_dir, f"{segment_name(0)}: a new run")
    else:
        _event(run_dir, f"{segment_name(start)}: resuming from its newest local checkpoint")
    return train(dataclasses.replace(cfg, **overrides))


def _event(run_dir: Path, text: str) -> None:
    import time

    line = f"{time.strftime('%Y-%m-%d %H:%M:%S')} {text}"
    print(f"long run: {line}", file=sys.stderr)
    with (run_dir / "events.log").open("a") as f:
        f.write(line + "\n")


def global_log(run_dir: Path) -> list[dict]:
    """Every segment's log records with the global step; a later segment replaces the records from its start on.
    A run restarted from a milestone begins with the milestone's (thinned) log."""
    prior = run_dir / PRIOR_LOG
    records: list[dict] = [json.loads(line) for line in prior.read_text().splitlines()] if prior.is_file() else []
    for seg in sorted(run_dir.glob("seg-*")):
        start, path = int(seg.name[4:]), seg / "log.jsonl"
        if not path.is_file():
            continue
        records = [r for r in records if r["step"] <= start]
        records += [dict(json.loads(line), step=start + json.loads(line)["step"], segment=seg.name)
                    for line in path.read_text().splitlines()]
    return records


def tokens_seen(run_dir: Path, up_to: int | None = None) -> int:
    """Training tokens behind the run's weights at global step ``up_to`` (default: all logged), restarts included."""
    prior = json.loads((run_dir / PRIOR).read_text()) if (run_dir / PRIOR).is_file() else {"global_step": 0,
                                                                                            "tokens_seen": 0}
    rows = [r for r in global_log(run_dir) if r["split"] == "train" and "segment" in r
            and r["step"] > prior["global_step"] and (up_to is None or r["step"] <= up_to)]
    return prior["tokens_seen"] + sum(r.get("tokens", 0) for r in rows)


def newest_checkpoint(run_dir: Path) -> tuple[Path, int]:
    """The checkpoint folder furthest along (global step) among the run's segments."""
    found = []
    for seg in run_dir.glob("seg-*"):
        for c in seg.iterdir():
            if (c / "trainer_state.json").is_file() and not c.name.startswith("."):
                found.append((int(seg.name[4:]) + _checkpoint_step(c), c))
    if not found:
        raise LongRunError(f"{run_dir} has no checkpoint yet")
    step, folder = max(found, key=lambda x: x[0])
    return folder, step


def write_milestone(run_dir: Path, out: Path, step: int | None = None) -> Path:
    """Copy the run's newest weights (no optimiser state), its base config, identity and a thinned global log into
    ``out``, atomically (filled under a temporary name, then renamed). ``step``: refuse unless the newest
    checkpoint is at this global step."""
    folder, newest = newest_checkpoint(run_dir)
    if step is not None and newest != step:
        raise LongRunError(f"{run_dir}: the newest checkpoint is at step {newest}, not {step}")
    step = newest
    base = json.loads((run_dir / "base_config.json").read_text())
    log = global_log(run_dir)
    tmp = out.parent / f".{out.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for f in _WEIGHT_FILES:
        if (folder / f).is_file():
            shutil.copy2(folder / f, tmp / f)
    kept = [{k: v for k, v in r.items() if k != "segment"} for r in log if r["split"] == "eval" or r["step"] % 50 == 0]
    (tmp / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in kept if r["step"] <= step))
    info = {"name": run_dir.name, "global_step": step, "total_steps": base["config"]["max_steps"],
            "tokens_seen": tokens_seen(run_dir, step),
            "from_checkpoint": str(folder), **base}
    (tmp / MILESTONE).write_text(json.dumps(info, indent=1) + "\n")
    if out.exists():
        old = out.parent / f".{out.name}.old"
        shutil.rmtree(old, ignore_errors=True)
        out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old)
    else:
        tmp.rename(out)
    return out


def held_out_curve(source: Path) -> list[dict]:
    """The eval records (global steps) of a long run's folder, or of a milestone folder's thinned log."""
    if (source / "base_config.json").is_file():
        records = global_log(source)
    elif (source / "log.jsonl").is_file():
        records = [json.loads(line) for line in (source / "log.jsonl").read_text().splitlines() if line.strip()]
    else:
        raise LongRunError(f"{source} is neither a long run's folder (base_config.json) nor a milestone (log.jsonl)")
    return [r for r in records if r["split"] == "eval"]


def rise_over_tail(evals: list[dict], fraction: float = 0.2, key: str = "acc_s1") -> dict | None:
    """How much ``key`` rose over the last ``fraction`` of the logged steps: the last eval against the latest
    eval at or before (1 - fraction) x the last step. None with fewer than two evals."""
    rows = [r for r in evals if key in r]
    if len(rows) < 2:
        return None
    end = rows[-1]
    cut = (1.0 - fraction) * end["step"]
    before = [r for r in rows[:-1] if r["step"] <= cut] or rows[:1]
    start = before[-1]
    return {"from_step": start["step"], "to_step": end["step"], "from": start[key], "to": end[key],
            "rise": end[key] - start[key]}


def plot_held_out(curves: dict[str, list[dict]], out: Path) -> None:
    """Held-out top-1 per aligning step against the global step, one colour per run."""
    from train.compare_runs import COLORS, accuracy_axes, plot_accuracy_series, save_accuracy_plot

    fig, ax = accuracy_axes()
    for (label, evals), color in zip(curves.items(), COLORS):
        series = {int(key[5:]): [(r["step"], r[key]) for r in evals if key in r]
                  for key in {k for r in evals for k in r if k.startswith("acc_s")}}
        plot_accuracy_series(ax, label, series, color)
    save_accuracy_plot(fig, ax, out, "optimiser step (batch 2)", "held-out draft top-1 (vs the target's argmax)")


def status(runs: Path = RUNS, milestones: Path = MILESTONES) -> list[str]:
    lines = []
    for run_dir in sorted(p for p in runs.glob("*") if (p / "base_config.json").is_file()):
        total = json.loads((run_dir / "base_config.json").read_text())["config"]["max_steps"]
        log = global_log(run_dir)
        reached = max(local_segments(run_dir).values(), default=0)
        evals = [r for r in log if r["split"] == "eval"]
        tokens = tokens_seen(run_dir)
        key = max((k for k in (evals[-1] if evals else {}) if k.startswith("acc_s")), default=None)
        last = f", held-out top-1 {evals[-1][key]:.3f} at step {evals[-1]['step']}" if key else ""
        m = read_milestone(milestones / run_dir.name)
        ms = f", milestone at step {m['global_step']}" if m else ", no milestone"
        lines.append(f"{run_dir.name}: checkpoint at step {reached} of {total}, {tokens / 1e6:.2f}M tokens logged"
                     f"{last}{ms}")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="run or continue a long run")
    t.add_argument("--name", required=True)
    t.add_argument("--stop-at", type=int, default=0, help="global step to stop at (a checkpoint is saved)")
    t.add_argument("--start-from", help="another run's milestone folder to branch from")
    m = sub.add_parser("milestone", help="commit-ready copy of a run's newest weights")
    m.add_argument("--name", required=True)
    m.add_argument("--out", help=f"folder to write (default {MILESTONES}/NAME)")
    m.add_argument("--step", type=int, help="refuse unless the newest checkpoint is at this global step")
    sub.add_parser("status", help="where each long run stands")
    c = sub.add_parser("curves", help="plot the held-out top-1 of runs or milestones; the rise over the last 20%%")
    c.add_argument("--runs", required=True, help=f"comma-separated run names (under {RUNS}) or folders")
    c.add_argument("--labels", help="comma-separated names for the runs (default: their folder names)")
    c.add_argument("--out", required=True, help="PNG to write")
    c.add_argument("--json", help="also write the curves and rises here")
    args, rest = parser.parse_known_args(argv)
    try:
        if args.command == "train":
            folder = train_long(load_config(rest), args.name, args.stop_at, args.start_from)
            print(f"checkpoint: {folder}", file=sys.stderr)
        elif rest:
            parser.error(f"unrecognized arguments: {' '.join(rest)}")
        elif args.command == "curves":
            curves = {}
            names = args.runs.split(",")
            labels = args.labels.split(",") if args.labels else [None] * len(names)
            if len(labels) != len(names):
                raise LongRunError(f"{len(names)} runs but {len(labels)} labels")
            for name, label in zip(names, labels):
                folder = Path(name) if Path(name).is_dir() else RUNS / name
                curves[label or folder.name] = held_out_curve(folder)
                if not curves[label or folder.name]:
                    raise LongRunError(f"{folder} has no held-out evaluation yet")
            plot_held_out(curves, Path(args.out))
            report = {}
            for label, evals in curves.items():
                report[label] = {"rise_over_last_20_percent": rise_over_tail(evals),
                                 "evals": [{k: v for k, v in r.items() if k == "step" or k.startswith("acc_s")}
                                           for r in evals]}
                r = report[label]["rise_over_last_20_percent"]
                last = evals[-1]
                tail = (f"; over the last 20% (steps {r['from_step']}-{r['to_step']}) it rose {r['rise']:+.3f} "
                        f"({r['from']:.3f} -> {r['to']:.3f})") if r else ""
                print(f"{label}: held-out top-1 {last.get('acc_s1', float('nan')):.3f} at step {last['step']}{tail}")
            if args.json:
                atomic_write_text(Path(args.json), json.dumps(report, indent=1) + "\n")
            print(args.out)
        elif args.command == "milestone":
            print(write_milestone(RUNS / args.name, Path(args.out) if args.out else MILESTONES / args.name, args.step))
        else:
            print("\n".join(status()) or f"no long runs under {RUNS}")
    except (LongRunError, ValueError, TypeError) as e:
        sys.exit(f"train.long_run: error: {e}")


if __name__ == "__main__":
    main()
