"""Train a draft: EAGLE-2 (w = 0, n = 1) or HASS (HOD weight w, n HCA steps), one process or under DeepSpeed.

    python -m train.trainer --config configs/train_smollm2_hass.json --stage 1 [--key value ...]
    deepspeed --num_accelerators 2 --module train.trainer --config ... --deepspeed configs/ds_config.json  # CPU, gloo
    deepspeed --num_gpus 8 --module train.trainer --config ... --deepspeed configs/ds_config.json

The target is frozen; its features f come from disk (``--features``, see train/features.py) or are computed
here. Per batch: HCA's n aligning steps (hass.alignment), each scored by the losses of hass.losses, summed,
one optimiser step. Every checkpoint is a DraftModel folder (what HassModel loads) plus the optimiser,
schedule and RNG state to resume from, and the resolved config (train_config.json).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import resource
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm
from transformers import AutoConfig, AutoModelForCausalLM

from hass.alignment import hca_losses
from hass.draft import DraftModel
from hass.draft_vocab import count_tokens, save_token_counts, top_tokens
from hass.files import atomic_write_text, save_figure
from hass.losses import feature_noise, loss_positions
from train.config import DTYPES, TrainConfig, load_config
from train.data import read_prepared, split_train_eval
from train.features import FeatureStore, compute_features, data_fingerprint, target_fingerprint

TERMS = ("loss", "reg", "cls", "topk", "acc")


# ------------------------------------------------------------------------------------------------ data
@dataclass
class Batch:
    indices: list[int]  # positions of the samples in the data file (feature keys)
    input_ids: torch.Tensor  # (B, T), right padded
    valid: torch.Tensor  # (B, T) bool
    loss_mask: torch.Tensor  # (B, T)
    lengths: torch.Tensor  # (B,)

    def to(self, device) -> "Batch":
        return Batch(self.indices, *(t.to(device) for t in (self.input_ids, self.valid, self.loss_mask, self.lengths)))


def collate(samples: list[dict], max_length: int) -> Batch:
    lengths = [min(len(s["input_ids"]), max_length) for s in samples]
    t = max(lengths)
    ids, valid, mask = (torch.zeros(len(samples), t, dtype=dt) for dt in (torch.long, torch.bool, torch.long))
    for b, (s, n) in enumerate(zip(samples, lengths)):
        ids[b, :n] = torch.tensor(s["input_ids"][:n])
        valid[b, :n] = True
        mask[b, :n] = torch.tensor(s["loss_mask"][:n])
    return Batch([s["index"] for s in samples], ids, valid, mask, torch.tensor(lengths))


def load_samples(cfg: TrainConfig) -> tuple[list[dict], list[dict], list[dict]]:
    """(all samples, train split, eval split); each sample gets its file position as "index"."""
    _, samples = read_prepared(cfg.data)
    samples = [dict(s, index=i) for i, s in enumerate(samples)]
    # a loss position is an assistant token with a next token inside max_length (hass.losses.loss_positions)
    usable = [s for s in samples if any(s["loss_mask"][:min(len(s["input_ids"]), cfg.max_length) - 1])]
    if not usable:
        raise ValueError(f"{cfg.data}: no usable record among {len(samples)}: none has an assistant token "
                         f"followed by another token within max_length={cfg.max_length}")
    if cfg.eval_data:  # held out elsewhere (e.g. the target's own answers, for any training data)
        if not Path(cfg.eval_data).is_file():
            raise ValueError(f"eval_data {cfg.eval_data!r} does not exist")
        _, held_out = read_prepared(cfg.eval_data)
        held_ids = {s["id"] for s in held_out}
        train_set = [s for s in usable if s["id"] not in held_ids]
        if not train_set:
            raise ValueError(f"{cfg.data}: every record's id is in eval_data {cfg.eval_data}; nothing to train on")
        eval_set = [dict(s, index=-1 - i) for i, s in enumerate(held_out)]  # not in the feature store
        return samples, train_set, eval_set
    train_set, eval_set = split_train_eval(usable, cfg.eval_fraction, cfg.seed)
    return samples, train_set, eval_set


def micro_batch(train_set: list[dict], m: int, cfg: TrainConfig, rank: int, world: int) -> list[dict]:
    """The m-th micro-batch of this process: a pure function of (seed, m), so resuming needs no data state.

    Each epoch is a fresh seeded permutation cut into batches; process r takes batches r, r + world, ...
    """
    per_epoch = batches_per_epoch(len(train_set), cfg.batch_size, world)
    epoch, k = divmod(m, per_epoch)
    order = torch.randperm(len(train_set), generator=torch.Generator().manual_seed(cfg.seed + epoch)).tolist()
    start = (k * world + rank) * cfg.batch_size
    return [train_set[i] for i in order[start:start + cfg.batch_size]]


def batches_per_epoch(n: int, batch_size: int, world: int) -> int:
    return max(1, math.ceil(n / batch_size) // world)


# ------------------------------------------------------------------------------------------- training
class Run:
    """The live objects of one training run: target, draft (or DeepSpeed engine), optimiser, schedule."""

    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg
        self.rank, self.world, self.device = _setup_distributed(cfg)
        self.out = _prepare_output_dir(cfg.output_dir)
        self.samples, self.train_set, self.eval_set = load_samples(cfg)
        target_path = _resolve_target(cfg.target)
        target_config = AutoConfig.from_pretrained(target_path)
        # what a resumed checkpoint must have been trained on (checked in load)
        self.identity = {"data_sha256": data_fingerprint(self.samples),
                         "target": target_fingerprint(target_config, str(target_path))}
        self.draft = _build_draft(cfg, target_config)
        self.store = None
        if cfg.features:
            self.store = FeatureStore(cfg.features, self.identity["target"], self.samples,
                                      self.identity["data_sha256"])
        self.target = AutoModelForCausalLM.from_pretrained(target_path, dtype=DTYPES[cfg.target_dtype])
        self.target.to(self.device).eval().requires_grad_(False)
        if cfg.init_layer == "target" and not cfg.init_from:
            copy_target_layer(self.target, self.draft)
        self.vocab = self.vocab_head = None
        # the target's top-1 over its whole vocabulary at each training sample's loss positions, filled the first
        # time a sample is seen (a draft vocabulary then needs only its N rows of the target's lm_head), saved
        # with every checkpoint and, for later runs on the same features, beside them
        self.top1: dict[int, torch.Tensor] = {}
        if cfg.draft_vocab_size:
            self.counts = count_tokens(self.train_set, target_config.vocab_size)
            self.vocab = top_tokens(self.counts, cfg.draft_vocab_size).to(self.device)
            weight = self.target.get_output_embeddings().weight
            self.vocab_head = weight[self.vocab].detach().clone()  # (N, h): the target's rows, frozen
            self.draft.config.draft_vocab_size = cfg.draft_vocab_size
            self._load_shared_top1()
        self.draft.to(self.device)

        per_epoch = batches_per_epoch(len(self.train_set), cfg.batch_size, self.world)
        self.total_steps = cfg.max_steps or max(1, cfg.epochs * per_epoch // cfg.grad_accum)
        warmup = max(1, round(cfg.warmup_fraction * self.total_steps))
        self.optimizer = torch.optim.AdamW(self.draft.parameters(), lr=cfg.lr, betas=cfg.betas,
                                           weight_decay=cfg.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, _warmup_then_linear(warmup, self.total_steps))
        self.engine = None
        if cfg.deepspeed:
            import deepspeed

            if cfg.clip_mode == "value" and cfg.grad_clip:  # ZeRO partitions the gradients after backward: clip
                for p in self.draft.parameters():             # each micro-batch's own as it is computed
                    p.register_hook(lambda g, c=cfg.grad_clip: g.clamp(-c, c))
            self.engine, self.optimizer, _, self.scheduler = deepspeed.initialize(
                model=self.draft, optimizer=self.optimizer, lr_scheduler=self.scheduler,
                config=deepspeed_config(cfg.deepspeed, cfg))
        self.step = 0
        self.log_path = self.out / "log.jsonl"

    # ------------------------------------------------------------------ the target's top-1, shared by runs
    def _shared_top1(self) -> tuple[Path, dict] | None:
        """Where runs on the same features, data and draft vocabulary share their top-1 store (one process)."""
        if self.store is None or self.vocab is None or self.world != 1:
            return None
        identity = dict(self.identity, vocab_sha256=hashlib.sha256(self.vocab.cpu().numpy().tobytes()).hexdigest())
        return Path(self.cfg.features) / f"target_top1_N{self.vocab.numel()}.pt", identity

    def _load_shared_top1(self) -> None:
        shared = self._shared_top1()
        if shared is None or not shared[0].is_file():
            return
        saved = torch.load(shared[0], weights_only=True)
        if saved.get("identity") == shared[1]:  # else another data file or vocabulary wrote it: start empty
            self.top1 = saved["top1"]
            self._top1_shared_size = len(self.top1)

    def _save_shared_top1(self) -> None:
        shared = self._shared_top1()
        if shared is None or len(self.top1) <= getattr(self, "_top1_shared_size", 0):
            return
        tmp = shared[0].with_name(f".{shared[0].name}.tmp")
        torch.save({"identity": shared[1], "top1": self.top1}, tmp)
        os.replace(tmp, shared[0])
        self._top1_shared_size = len(self.top1)

    # ------------------------------------------------------------------ the loss of one batch
    def terms(self, draft, batch: Batch, generator: torch.Generator | None) -> list[dict[str, torch.Tensor]]:
        """HCA loss terms of a batch; noise on the input features only when a generator is given."""
        batch = batch.to(self.device)
        if self.store is None or min(batch.indices) < 0:  # online, or eval_data samples the store does not hold
            f = compute_features(self.target, batch.input_ids, batch.valid)  # (B, T, h)
        else:
            f = torch.zeros(*batch.input_ids.shape, self.store.hidden_size, dtype=DTYPES[self.cfg.target_dtype])
            for b, (i, n) in enumerate(zip(batch.indices, batch.lengths.tolist())):
                f[b, :n] = self.store.get(i, n)
            f = f.to(self.device)
        next_ids = torch.cat([batch.input_ids[:, 1:], torch.zeros_like(batch.input_ids[:, :1])], dim=1)
        with torch.no_grad():
            token_embeds = self.target.get_input_embeddings()(next_ids).float()  # (B, T, h) E(x_{t+1})
        inputs = f.float()
        if generator is not None and self.cfg.noise > 0:
            inputs = feature_noise(inputs, batch.lengths, generator, self.cfg.noise)
        positions = torch.arange(f.shape[1], device=self.device).expand(f.shape[0], -1)
        head = self.target.get_output_embeddings()
        draft_head = None
        if self.vocab is not None:
            draft_head = lambda x: F.linear(x.to(self.vocab_head.dtype), self.vocab_head)  # noqa: E731
        known, counts = None, None
        if self.vocab is not None and self.store is not None and min(batch.indices) >= 0:
            counts = loss_positions(batch.loss_mask, batch.valid).sum(1).long().tolist()
            parts = [self.top1.get(i) for i in batch.indices]
            if all(p is not None and len(p) == c for p, c in zip(parts, counts)):
                known = torch.cat(parts).to(self.device)
        with self.autocast():
            terms = hca_losses(draft, lambda x: head(x.to(head.weight.dtype)), inputs, f, token_embeds, positions,
                               batch.valid, batch.loss_mask, self.cfg.hca_steps, self.cfg.loss_weights,
                               vocab=self.vocab, draft_head=draft_head, target_top1=known)
        if counts is not None and known is None:
            for i, part in zip(batch.indices, terms[0]["target_top1"].split(counts)):
                self.top1[i] = part.to(device="cpu", dtype=torch.int32)
        return terms

    def autocast(self):
        dtype = DTYPES[self.cfg.dtype]
        return torch.autocast(self.device.type, dtype=dtype, enabled=dtype != torch.float32)

    # ------------------------------------------------------------------ one optimiser step
    def train_step(self) -> dict:
        cfg, sums, tokens = self.cfg, {}, 0
        lr = self.optimizer.param_groups[0]["lr"]
        for a in range(cfg.grad_accum):
            m = cfg.start_batch + self.step * cfg.grad_accum + a
            batch = collate(micro_batch(self.train_set, m, cfg, self.rank, self.world), cfg.max_length)
            generator = torch.Generator(self.device).manual_seed(cfg.seed + 1_000_003 * (m * self.world + self.rank))
            terms = self.terms(self.engine if self.engine is not None else self.draft, batch, generator)
            loss = sum(t["loss"] for t in terms)
            if self.engine is not None:
                self.engine.backward(loss)
                self.engine.step()
            else:
                (loss / cfg.grad_accum).backward()
            _accumulate(sums, terms, loss)
            tokens += int(batch.valid.sum())
        if self.engine is not None:
            grad_norm = self.engine.get_global_grad_norm()
        else:
            clip = cfg.grad_clip if cfg.clip_mode == "norm" and cfg.grad_clip else float("inf")
            grad_norm = torch.nn.utils.clip_grad_norm_(self.draft.parameters(), clip)  # the norm before clipping
            if cfg.clip_mode == "value" and cfg.grad_clip:
                torch.nn.utils.clip_grad_value_(self.draft.parameters(), cfg.grad_clip)
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        record = {k: v / cfg.grad_accum for k, v in sums.items()}
        record.update(lr=lr, grad_norm=float(grad_norm) if grad_norm is not None else None, tokens=tokens)
        return record

    @torch.no_grad()
    def evaluate(self) -> dict:
        self.draft.eval()
        sums, n = {}, 0
        for start in range(0, len(self.eval_set), self.cfg.batch_size):
            if n == self.cfg.eval_max_batches:
                break
            batch = collate(self.eval_set[start:start + self.cfg.batch_size], self.cfg.max_length)
            terms = self.terms(self.draft, batch, None)  # the bare module: only process 0 evaluates
            _accumulate(sums, terms, sum(t["loss"] for t in terms))
            n += 1
        self.draft.train()
        return {k: v / max(n, 1) for k, v in sums.items()}

    # ------------------------------------------------------------------ checkpoints
    def save(self, name: str) -> Path:
        """Write checkpoint ``name`` atomically: filled under a temporary name, renamed when complete."""
        dest, tmp = self.out / name, self.out / f".{name}.tmp"
        if self.rank == 0:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
        _barrier(self.world)
        if self.engine is not None:  # ZeRO shards the optimiser state: every process writes its part
            self.engine.save_checkpoint(str(tmp), tag="deepspeed")
        torch.save({"torch": torch.get_rng_state()}, tmp / f"rng_state_{self.rank}.pt")
        if self.top1:  # ~4 bytes a training token: the next run skips the full-vocabulary projection at once
            torch.save(self.top1, tmp / f"target_top1_{self.rank}.pt")
            self._save_shared_top1()  # and runs that start afresh on the same features (a warm start, a control)
        _barrier(self.world)
        if self.rank == 0:
            self.draft.save_pretrained(tmp)
            if self.vocab is not None:  # the draft's vocabulary is the N most frequent ids of these counts
                save_token_counts(tmp, self.counts, f"train split of {self.cfg.data}")
            if self.engine is None:
                torch.save({"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()},
                           tmp / "optimizer.pt")
            (tmp / "trainer_state.json").write_text(json.dumps({"step": self.step, "world": self.world,
                                                                **self.identity}) + "\n")
            (tmp / "train_config.json").write_text(json.dumps(dataclasses.asdict(self.cfg), indent=2) + "\n")
            if dest.exists():
                old = self.out / f".{name}.old"
                os.replace(dest, old)
                os.replace(tmp, dest)
                shutil.rmtree(old)
            else:
                os.replace(tmp, dest)
            self._prune()
        _barrier(self.world)
        return dest

    def _prune(self) -> None:
        if self.cfg.keep_checkpoints:
            for old in sorted(self.out.glob("step-*"))[:-self.cfg.keep_checkpoints]:
                shutil.rmtree(old)

    def load(self, folder: Path) -> None:
        state = json.loads((folder / "trainer_state.json").read_text())
        differences = resume_differences(folder, self.cfg, state, self.identity)
        if differences:
            raise ValueError(f"cannot resume from {folder}: it was trained with other settings or inputs "
                             f"({'; '.join(differences)}); resume with the same ones, or start a new stage "
                             f"from its weights with init_from")
        if state["world"] != self.world:
            raise ValueError(f"{folder} was written by {state['world']} processes, this run has {self.world}: "
                             f"the data order would change; resume with the same number of processes")
        if self.engine is not None:
            self.engine.load_checkpoint(str(folder), tag="deepspeed")
        else:
            self.draft.load_state_dict(DraftModel.from_pretrained(folder).state_dict())
            opt = torch.load(folder / "optimizer.pt", weights_only=True)
            self.optimizer.load_state_dict(opt["optimizer"])
            self.scheduler.load_state_dict(opt["scheduler"])
        torch.set_rng_state(torch.load(folder / f"rng_state_{self.rank}.pt", weights_only=True)["torch"])
        top1 = folder / f"target_top1_{self.rank}.pt"
        if top1.is_file():  # same data, target and draft vocabulary: resume_differences checked them above
            self.top1.update(torch.load(top1, weights_only=True))
        self.step = state["step"]
        if self.rank == 0 and self.log_path.exists():  # drop log lines of steps this run will redo
            lines = [ln for ln in self.log_path.read_text().splitlines() if json.loads(ln)["step"] <= self.step]
            atomic_write_text(self.log_path, "".join(ln + "\n" for ln in lines))

    def log(self, record: dict) -> None:
        if self.rank == 0:
            with self.log_path.open("a") as f:
                f.write(json.dumps(record) + "\n")


def _accumulate(sums: dict, terms: list[dict], loss: torch.Tensor) -> None:
    sums["loss"] = sums.get("loss", 0.0) + float(loss.detach())
    for s, t in enumerate(terms, start=1):
        for key in TERMS:
            sums[f"{key}_s{s}"] = sums.get(f"{key}_s{s}", 0.0) + float(t[key].detach())
    if "outside" in terms[0]:  # draft vocabulary: share of positions whose target top-1 it cannot propose
        sums["outside"] = sums.get("outside", 0.0) + float(terms[0]["outside"])


# Settings a resumed run may change: how often it logs, saves and evaluates, and how it runs, not what it trains.
# The compute dtypes are among them: a run that moves between machines (bf16 fast on one CPU, emulated on the
# next) keeps its fp32 master weights and optimiser state whatever the autocast precision.
RESUME_MAY_CHANGE = ("resume", "output_dir", "eval_every", "save_every", "keep_checkpoints", "threads", "plot",
                     "eval_max_batches", "dtype", "target_dtype", "stop_at")


def resume_differences(folder: Path, cfg: TrainConfig, state: dict, identity: dict) -> list[str]:
    """What differs between the run that wrote checkpoint ``folder`` and this one: its settings
    (train_config.json, all but RESUME_MAY_CHANGE), its data (sha256 of the token ids) and its target."""
    out = []
    saved_path = folder / "train_config.json"
    if saved_path.is_file():
        saved = json.loads(saved_path.read_text())
        mine = json.loads(json.dumps(dataclasses.asdict(cfg)))  # tuples as lists, like the saved file
        for key in sorted(set(saved) | set(mine)):
            if key not in RESUME_MAY_CHANGE and saved.get(key) != mine.get(key):
                out.append(f"{key}: {saved.get(key)!r} there, {mine.get(key)!r} now")
    if "data_sha256" in state and state["data_sha256"] != identity["data_sha256"]:
        out.append("the data file's token ids differ")
    if "target" in state and state["target"] != identity["target"]:
        out.append(f"target: {state['target']} there, {identity['target']} now")
    return out


def copy_target_layer(target, draft: DraftModel) -> None:
    """Start the draft's decoder layer as the target's last decoder layer (its input norm excepted: the draft
    layer has none); the fc layer keeps its initialisation."""
    layers = getattr(target.get_decoder(), "layers", None)
    if not layers:
        raise ValueError(f"init_layer 'target': {type(target).__name__} has no decoder .layers to copy from")
    source = {k: v for k, v in layers[-1].state_dict().items() if not k.startswith("input_layernorm.")}
    mine = draft.layers[0].state_dict()
    bad = sorted(set(source) ^ {k for k in mine if not k.startswith("input_layernorm.")})
    if bad or any(source[k].shape != mine[k].shape for k in source):
        raise ValueError(f"init_layer 'target': the target's last layer does not match the draft layer ({bad[:6]})")
    with torch.no_grad():
        for k, v in source.items():
            mine[k].copy_(v.to(mine[k].dtype))


def _warmup_then_linear(warmup: int, total: int):
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))

    return factor


def train(cfg: TrainConfig) -> Path:
    """Run (or resume) training; return the final checkpoint folder, or the step checkpoint of ``cfg.stop_at``."""
    run = Run(cfg)
    resume = _find_resume(cfg, run.out)
    if resume is not None:
        run.load(resume)
    if cfg.stop_at and run.step >= cfg.stop_at:
        raise ValueError(f"stop_at={cfg.stop_at}: this run is already at step {run.step}")
    if run.rank == 0:
        print(f"training: {len(run.train_set)} train / {len(run.eval_set)} eval samples, {run.total_steps} steps "
              f"x {cfg.grad_accum} x {cfg.batch_size} x {run.world} processes, features "
              f"{'from ' + cfg.features if cfg.features else 'online'}, n={cfg.hca_steps}, w={cfg.hod_weight}"
              + (f", resumed at step {run.step}" if resume else ""), file=sys.stderr)
    bar = tqdm(total=run.total_steps, initial=run.step, disable=run.rank != 0, unit="step")
    while run.step < run.total_steps:
        start = time.perf_counter()
        terms = run.train_step()
        elapsed = time.perf_counter() - start
        record = {"step": run.step, "split": "train", **terms, "seconds": elapsed,
                  "tokens_per_s": terms["tokens"] / elapsed, "max_rss_mb": _max_rss_mb()}
        run.log(record)
        bar.update()
        bar.set_postfix(loss=f"{record['loss']:.3f}", acc=f"{record[f'acc_s{cfg.hca_steps}']:.2f}")
        last = run.step == run.total_steps
        if run.eval_set and ((cfg.eval_every and run.step % cfg.eval_every == 0) or last):
            if run.rank == 0:
                run.log({"step": run.step, "split": "eval", **run.evaluate()})
            _barrier(run.world)
        if cfg.stop_at and run.step == cfg.stop_at and not last:
            bar.close()
            return run.save(f"step-{run.step:08d}")
        if cfg.save_every and run.step % cfg.save_every == 0 and not last:
            run.save(f"step-{run.step:08d}")
    bar.close()
    final = run.save("final")
    if run.rank == 0 and cfg.plot:
        plot_curves(run.log_path, run.out / "training_curve.png")
    return final


def plot_curves(log_path: Path, png_path: Path) -> None:
    """Loss and draft top-1 accuracy per aligning step, train and eval, against the optimiser step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [json.loads(line) for line in log_path.read_text().splitlines()]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    for split, style, alpha in (("train", "-", 0.6), ("eval", "o--", 1.0)):
        rows = [r for r in records if r["split"] == split]
        if not rows:
            continue
        steps = [r["step"] for r in rows]
        ax_loss.plot(steps, [r["loss"] for r in rows], style, color="C0", alpha=alpha, label=split)
        for key in sorted(k for k in rows[0] if k.startswith("acc_s")):
            s = int(key[5:])
            ax_acc.plot(steps, [r[key] for r in rows], style, color=f"C{s - 1}", alpha=alpha, label=f"{split}, aligning step {s}")
    ax_loss.set(xlabel="step", ylabel="loss (sum over aligning steps)", yscale="log")
    ax_acc.set(xlabel="step", ylabel="draft top-1 accuracy", ylim=(0, 1))
    for ax in (ax_loss, ax_acc):
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, png_path, dpi=100)


# ------------------------------------------------------------------------------------------ set-up
def _setup_distributed(cfg: TrainConfig) -> tuple[int, int, torch.device]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not cfg.deepspeed:
        raise ValueError(f"{world} processes were launched but no --deepspeed config was given")
    rank, local_rank = 0, 0
    if cfg.deepspeed:
        import deepspeed

        deepspeed.init_distributed()
        rank, local_rank = torch.distributed.get_rank(), int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if cfg.threads or (world > 1 and device.type == "cpu"):
        torch.set_num_threads(cfg.threads or max(1, (os.cpu_count() or 1) // world))
    torch.manual_seed(cfg.seed + rank)
    return rank, world, device


def _barrier(world: int) -> None:
    if world > 1:
        torch.distributed.barrier()


def _prepare_output_dir(path: str) -> Path:
    out = Path(path)
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out):
            pass
    except OSError as e:
        raise ValueError(f"output_dir {path!r} is not a writable folder: {e}") from e
    return out


def _resolve_target(name_or_path: str) -> Path:
    if Path(name_or_path).expanduser().is_dir():
        return Path(name_or_path).expanduser()
    from hass.zoo import ensure_target

    return ensure_target(name_or_path)


def _build_draft(cfg: TrainConfig, target_config) -> DraftModel:
    torch.manual_seed(cfg.seed)  # the same initial draft on every process
    if cfg.init_from:
        draft = DraftModel.from_pretrained(cfg.init_from, dtype=torch.float32)
    else:
        draft = DraftModel.from_target_config(target_config, bias=cfg.draft_bias)
    draft.check_matches(target_config)
    return draft.float().train()


def _find_resume(cfg: TrainConfig, out: Path) -> Path | None:
    if cfg.resume is None:
        return None
    if cfg.resume != "auto":
        folder = Path(cfg.resume)
        if not (folder / "trainer_state.json").is_file():
            raise ValueError(f"resume: {folder} is not a training checkpoint (no trainer_state.json)")
        return folder
    found = [f for f in out.iterdir() if (f / "trainer_state.json").is_file() and not f.name.startswith(".")]
    return max(found, key=lambda f: json.loads((f / "trainer_state.json").read_text())["step"], default=None)


def deepspeed_config(path: str, cfg: TrainConfig) -> dict:
    """The DeepSpeed config with its "auto" values filled from TrainConfig, which owns these settings."""
    ds = json.loads(Path(path).read_text())
    owned = {"train_micro_batch_size_per_gpu": cfg.batch_size, "gradient_accumulation_steps": cfg.grad_accum,
             "gradient_clipping": cfg.grad_clip if cfg.clip_mode == "norm" else 0.0}
    for key, value in owned.items():
        if ds.get(key, "auto") == "auto":
            ds[key] = value
        elif ds[key] != value:
            raise ValueError(f"{path}: {key}={ds[key]} disagrees with the training config ({value}); "
                             f"set it to \"auto\"")
    if ds.get("train_batch_size") == "auto":
        del ds["train_batch_size"]
    for key in ("bf16", "fp16"):
        if ds.get(key, {}).get("enabled"):
            raise ValueError(f"{path}: {key} mode casts the weights to half precision; remove it and use "
                             f"--dtype (autocast with fp32 master weights)")
    for key in ("optimizer", "scheduler"):
        if key in ds:
            raise ValueError(f"{path}: remove {key!r}: the trainer builds AdamW and its schedule from its config")
    ds.setdefault("zero_allow_untested_optimizer", True)
    return ds


def _max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv: list[str] | None = None) -> None:
    try:
        cfg = load_config(sys.argv[1:] if argv is None else argv)
    except (ValueError, TypeError) as e:
        sys.exit(f"train.trainer: error: {e}")
    print(f"final checkpoint: {train(cfg)}", file=sys.stderr)


if __name__ == "__main__":
    main()
