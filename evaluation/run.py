"""Answer a benchmark with several decoding methods, side by side, timing each (docs/METHOD.md section 7).

    python -m evaluation.run --base BASE --draft DRAFT --bench mt_bench --methods hass,vanilla,hf \
        --temperature 0 --dtype bf16 --out answers/mt_bench_T0.jsonl

Methods:
  hass     HassModel with the draft: EAGLE-2 dynamic tree + lossless verification.
  hass[key=value,...]  hass with some settings of this run replaced, to compare variants side by side in
           one process: draft=FOLDER, tree=TOTAL/DEPTH/TOP_K, vocab=N|all, draft_dtype=bf16|fp16|fp32|auto.
           e.g. --methods 'vanilla,hass,hass[draft=checkpoints/X-EAGLE2],hass[vocab=16384]'
  vanilla  the same HassModel loop with no draft (one token per target forward): the speedup baseline.
  hf       transformers' own ``target.generate``, an outside baseline.
  pld      transformers' prompt-lookup decoding (``prompt_lookup_num_tokens=10``), a draft-free speculator.
All methods share one target in one process. After ``--warmup`` generations per method they answer the
questions interleaved (question by question, the method order rotating), so their ratios are measured under
the same machine load. Batch size 1; per (question, turn) seed for sampling, so a resumed run is reproducible.

Output: ONE JSONL file per run holding every method. Line 1 is the header
  {"record": "header", "format", "config", "question_file", "question_file_sha256", "eos_token_ids",
   "versions": {torch, transformers, hass, hass_commit}, "machine": {cpu, threads, device, ...}}
then one line per (question, method), written after all methods answered the question:
  {"record": "answer", "method", "question_id", "category",
   "turns": [{"prompt_tokens", "text", "token_ids", "new_tokens", "wall_time", "target_forwards",
              "accept_lengths", "tree_sizes", "tree_depths"}]}
wall_time covers the generate call (prefill included, tokenization excluded); target_forwards counts the
prefill; accept_lengths has one entry per target forward after the prefill (tokens it added, bonus included);
hass methods also give, per forward, the tokens it verified (tree_sizes, the root included) and the deepest node's
depth (tree_depths): a confidence-bounded tree varies in both (evaluation.record_acceptance keeps their means).
For hf / pld they are read off a forward hook that records the target's cache length at every call.
Re-running with the same --out skips the questions already answered; a header from another configuration
(anything but --questions / --first-question / --warmup) is an error. A resumed run first appends
  {"record": "resume", "versions", "machine", "created"}
so the machines behind every part of a file stay on record (the header names only the first).

One set in parts: ``--first-question M --questions N`` answers questions M+1 .. N of the set (0-based indices
M .. N-1; seeds depend on the index in the set, so a part's answers equal the whole run's). Run the parts on
several machines or processes, each with its own --out, and join them with ``python -m evaluation.merge``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch
import transformers
from tqdm import tqdm
from transformers import AutoConfig, AutoTokenizer, GenerationConfig

import hass
from hass import DraftModel, HassModel, TreeConfig
from hass.draft_vocab import COUNTS_FILE, draft_vocab_from, trained_vocab_size
from hass.kernels import CPU_KERNELS, pack_draft, plain_kernels, resolve_cpu_kernels
from hass.precision import DTYPE_NAMES, bf16_is_fast, cpu_name, resolve_dtype_name

from .benchmarks import (
    BENCHMARKS, REPO_ROOT, TEMPLATES, Question, build_prompt, check_benchmark, file_sha256, load_questions,
)
from .report import FORMAT, read_answer_file

METHODS = ("hass", "vanilla", "hf", "pld")
DTYPES = DTYPE_NAMES  # bf16 | fp16 | fp32 -> torch dtype
PLD_NUM_TOKENS = 10
RESUME_IGNORES = ("questions", "first_question", "warmup", "out")  # they decide how much is done, not what an answer is
QUICK = {"questions": 3, "max_new_tokens": 32, "warmup": 1}


VARIANT_KEYS = ("draft", "tree", "vocab", "draft_dtype")


@dataclass(frozen=True)
class HassVariant:
    """What one hass-like method runs: its draft folder, tree, draft vocabulary size and draft dtype."""

    draft: str
    tree: TreeConfig
    vocab: int | None
    draft_dtype: str


def split_methods(text: str) -> tuple[str, ...]:
    """'a,hass[x=1,y=2],b' -> ('a', 'hass[x=1,y=2]', 'b'): commas inside brackets do not split."""
    parts, depth, current = [], 0, ""
    for ch in text:
        depth += {"[": 1, "]": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    parts.append(current)
    return tuple(p.strip() for p in parts if p.strip())


def _overrides(method: str) -> dict[str, str] | None:
    """The key=value settings of 'hass[...]' (None for a plain method name)."""
    if not (method.startswith("hass[") and method.endswith("]")):
        return None
    items = {}
    for item in method[len("hass["):-1].split(","):
        key, sep, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or key not in VARIANT_KEYS or not value:
            raise ValueError(f"method {method!r}: {item.strip()!r} is not one of "
                             f"{', '.join(k + '=...' for k in VARIANT_KEYS)}")
        if key in items:
            raise ValueError(f"method {method!r} sets {key} twice")
        items[key] = value
    return items


@dataclass(frozen=True)
class EvalConfig:
    base: str
    draft: str | None
    bench: str
    methods: tuple[str, ...]
    out: str
    temperature: float = 0.0
    max_new_tokens: int = 512
    total_tokens: int = 60  # draft tree: nodes per target forward (root included)
    depth: int = 6
    top_k: int = 10
    dtype: str = "bf16"
    draft_dtype: str | None = None  # None = dtype; the draft's precision never changes the output
    draft_vocab_size: int | None = None  # draft only the N most frequent tokens (hass.draft_vocab); None = all
    cpu_kernels: str = "default"  # "onednn" / "affine": the target's linear layers packed (hass.kernels); hf: plain
    # (the CLI's "auto" is resolved before the config is made, so an answer file records what ran)
    device: str = "cpu"
    seed: int = 0
    questions: int | None = None  # the first N questions; None = all
    first_question: int = 0  # skip the questions before this 0-based index (one part of a set; see evaluation.merge)
    full: bool = False  # HumanEval 164 / GSM8K 1,319 instead of the 80-question EAGLE sets
    warmup: int = 2
    template: str = "chat"
    question_file: str | None = None

    def __post_init__(self):
        check_benchmark(self.bench)
        unknown = [m for m in self.methods if m not in METHODS and _overrides(m) is None]
        if unknown or not self.methods:
            raise ValueError(f"unknown method(s) {unknown or '(none given)'}; choose from {', '.join(METHODS)} "
                             f"or hass[key=value,...]")
        if len(set(self.methods)) != len(self.methods):
            raise ValueError(f"a method is listed twice in {','.join(self.methods)}")
        if self.dtype not in DTYPES:
            raise ValueError(f"unknown dtype {self.dtype!r}; choose one of {', '.join(DTYPES)}")
        if self.draft_dtype is not None and self.draft_dtype not in DTYPES:
            raise ValueError(f"unknown draft dtype {self.draft_dtype!r}; choose one of {', '.join(DTYPES)}")
        if self.cpu_kernels == "auto":
            raise ValueError("cpu_kernels 'auto' is resolved before the config is made (resolve_cpu_kernels), so an "
                             "answer file records what ran; give default or onednn")
        resolve_cpu_kernels(self.cpu_kernels, self.device, DTYPES[self.dtype], flag="--cpu-kernels")
        if self.template not in TEMPLATES:
            raise ValueError(f"unknown template {self.template!r}; choose one of {', '.join(TEMPLATES)}")
        if not self.temperature >= 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.warmup < 0 or (self.questions is not None and self.questions < 1):
            raise ValueError("warmup must be >= 0 and questions >= 1")
        if self.first_question < 0 or (self.questions is not None and self.first_question >= self.questions):
            raise ValueError(f"first question {self.first_question} must be >= 0 and below --questions "
                             f"({self.questions}): the part would be empty")
        if not (Path(self.base) / "config.json").is_file():
            raise FileNotFoundError(f"target model folder {self.base!r} does not exist or has no config.json")
        if "hass" in self.methods and not (self.draft and Path(self.draft).is_dir()):
            raise FileNotFoundError(f"method hass needs --draft, a draft model folder; got {self.draft!r}")
        for m in self.methods:
            if m.startswith("hass["):
                v = self.variant(m)  # also checks the tree
                if not Path(v.draft).is_dir():
                    raise FileNotFoundError(f"method {m}: draft folder {v.draft!r} does not exist")
                if v.draft_dtype not in DTYPES:
                    raise ValueError(f"method {m}: unknown draft dtype {v.draft_dtype!r}; choose one of {', '.join(DTYPES)}")
                if v.vocab is not None and v.vocab < v.tree.top_k:
                    raise ValueError(f"method {m}: draft vocabulary size {v.vocab} is below its tree's top_k {v.tree.top_k}")
                if v.vocab is not None and not (Path(v.draft) / COUNTS_FILE).is_file():
                    raise FileNotFoundError(f"method {m}: a draft vocabulary needs {COUNTS_FILE} in {v.draft!r}; "
                                            f"write it with `python -m train.token_counts`")
        if self.draft_vocab_size is not None:
            if self.draft_vocab_size < self.top_k:
                raise ValueError(f"draft vocabulary size {self.draft_vocab_size} is below the tree's top_k {self.top_k}")
            if "hass" in self.methods and not (Path(self.draft) / COUNTS_FILE).is_file():
                raise FileNotFoundError(f"--draft-vocab needs {COUNTS_FILE} in the draft folder {self.draft!r}; "
                                        f"write it with `python -m train.token_counts`")
        if self.question_file is not None and not Path(self.question_file).is_file():
            raise FileNotFoundError(f"question file {self.question_file!r} does not exist")
        _ = self.tree  # building the TreeConfig checks total_tokens / depth / top_k

    @property
    def tree(self) -> TreeConfig:
        return TreeConfig(total_tokens=self.total_tokens, depth=self.depth, top_k=self.top_k)

    def variant(self, method: str) -> HassVariant:
        """The settings of a hass-like method: this run's, with the method's [key=value] replacements."""
        items = _overrides(method) or {}
        tree = self.tree
        if "tree" in items:
            if items["tree"].count("/") != 2:
                raise ValueError(f"method {method!r}: tree is TOTAL/DEPTH/TOP_K, e.g. 8/4/2")
            tree = TreeConfig.parse(items["tree"])
        draft = items.get("draft", self.draft)
        if draft is None:
            raise FileNotFoundError(f"method {method!r} names no draft= and the run has no --draft")
        # default: --draft-vocab, else the N the draft was trained over (its config.json), else all tokens
        vocab = self.draft_vocab_size if self.draft_vocab_size is not None else trained_vocab_size(draft)
        if "vocab" in items:
            if items["vocab"] == "all":
                vocab = None
            elif items["vocab"].isdigit() and int(items["vocab"]) > 0:
                vocab = int(items["vocab"])
            else:
                raise ValueError(f"method {method!r}: vocab is a positive number of tokens or 'all'")
        draft_dtype = items.get("draft_dtype", self.draft_dtype or self.dtype)
        if draft_dtype == "auto":
            draft_dtype = resolve_dtype_name(draft_dtype, self.device)
        return HassVariant(draft=draft, tree=tree, vocab=vocab, draft_dtype=draft_dtype)


# A runner answers one prompt: (prompt (1, T), seed) -> (new token ids, target forwards, accept lengths, extra
# per-turn fields: the tree sizes and depths of a hass method, none for hf / pld).
Runner = Callable[[torch.Tensor, int], tuple[list[int], int, list[int], dict]]


def hass_runner(model: HassModel, cfg: EvalConfig, eos: list[int], tree: TreeConfig | None = None) -> Runner:
    def run(prompt: torch.Tensor, seed: int):
        generator = torch.Generator(device=model.device).manual_seed(seed)
        out = model.generate(prompt, max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                             tree=tree or cfg.tree, eos_token_id=eos, generator=generator)
        return (out.sequences[0, prompt.shape[1]:].tolist(), out.target_forwards, list(out.accept_lengths),
                {"tree_sizes": out.tree_sizes, "tree_depths": out.tree_depths})

    return run


@dataclass
class ForwardLog:
    """Target cache length at each forward of ``generate``: how many tokens each forward added."""

    cache_lengths: list[int] = field(default_factory=list)

    def hook(self, module, args, kwargs):
        cache = kwargs.get("past_key_values")
        self.cache_lengths.append(cache.get_seq_length() if cache is not None else 0)

    def tokens_per_forward(self, prompt_len: int, final_len: int) -> list[int]:
        # With C_i = cache length at forward i, forward i added C_{i+1} - C_i tokens (the sequence always
        # runs one token ahead of the cache); the prefill starts from prompt_len - 1, the last ends at final - 1.
        marks = [prompt_len - 1] + self.cache_lengths[1:] + [final_len - 1]
        return [b - a for a, b in zip(marks, marks[1:])]


def hf_runner(target, cfg: EvalConfig, eos: list[int], pad: int, lookup: int | None) -> Runner:
    # Every sampling knob explicit, so the model's own generation_config (top_k=50, repetition penalty...)
    # cannot slip in: the target distribution must be the one hass samples from.
    knobs = {"do_sample": False}
    if cfg.temperature > 0:
        knobs = {"do_sample": True, "temperature": cfg.temperature, "top_k": 0, "top_p": 1.0}
    gen_cfg = GenerationConfig(max_new_tokens=cfg.max_new_tokens, repetition_penalty=1.0, eos_token_id=eos,
                               pad_token_id=pad, prompt_lookup_num_tokens=lookup, **knobs)

    def run(prompt: torch.Tensor, seed: int):
        torch.manual_seed(seed)  # transformers samples from the global generator
        log = ForwardLog()
        handle = target.register_forward_pre_hook(log.hook, with_kwargs=True)
        try:
            with plain_kernels():  # transformers' generate with its own kernels, packed or not
                out = target.generate(prompt, attention_mask=torch.ones_like(prompt), generation_config=gen_cfg)
        finally:
            handle.remove()
        ids = _cut_at_eos(out[0, prompt.shape[1]:].tolist(), eos)
        added = log.tokens_per_forward(prompt.shape[1], prompt.shape[1] + len(ids))
        return ids, len(added), added[1:], {}

    return run


def _cut_at_eos(ids: list[int], eos: list[int]) -> list[int]:
    for i, tok in enumerate(ids):
        if tok in eos:
            return ids[: i + 1]
    return ids


def eos_ids(tokenizer, target) -> list[int]:
    """Stop tokens: the tokenizer's eos plus the generation config's (end-of-turn tokens live there)."""
    ids = set()
    for value in (tokenizer.eos_token_id, getattr(target.generation_config, "eos_token_id", None)):
        ids.update([value] if isinstance(value, int) else list(value or []))
    if not ids:
        raise ValueError("neither the tokenizer nor the generation config names an eos token: nothing would stop")
    return sorted(ids)


def answer(run: Runner, tokenizer, question: Question, cfg: EvalConfig, seed: int) -> list[dict]:
    """All turns of one question; turn k's prompt holds the method's OWN answers to the earlier turns."""
    messages, turns = [], []
    for t, text in enumerate(question.turns):
        messages.append({"role": "user", "content": text})
        prompt_ids = build_prompt(tokenizer, messages, cfg.template)
        prompt = torch.tensor([prompt_ids], device=cfg.device)
        _sync(cfg.device)
        start = time.perf_counter()
        ids, forwards, accepts, extra = run(prompt, seed * 16 + t)
        _sync(cfg.device)
        wall = time.perf_counter() - start
        reply = tokenizer.decode(ids, skip_special_tokens=True).strip()
        messages.append({"role": "assistant", "content": reply})
        turns.append({"prompt_tokens": len(prompt_ids), "text": reply, "token_ids": ids, "new_tokens": len(ids),
                      "wall_time": wall, "target_forwards": forwards, "accept_lengths": accepts, **extra})
    return turns


def _sync(device: str) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def versions() -> dict:
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True,
                                timeout=10).stdout.strip() or None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        commit = f"{commit}-dirty" if commit and dirty else commit
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {"torch": torch.__version__, "transformers": transformers.__version__, "hass": hass.__version__,
            "hass_commit": commit, "python": platform.python_version()}


def machine(device: str) -> dict:
    info = {"cpu": cpu_name(), "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(), "device": device,
            "platform": platform.platform(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "bf16_matmul_fast": bf16_is_fast(device)}  # the same "AMD EPYC" name covers CPUs with and without AVX512-BF16
    if str(device).startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def header_differences(a: dict, b: dict) -> list[tuple[str, object, object]]:
    """(key, value in a, value in b) wherever two answer-file headers differ in what an answer is: their
    configurations (all but RESUME_IGNORES) and their question files."""
    def what(header: dict) -> dict:
        config = json.loads(json.dumps(header["config"]))  # tuples -> lists, as a file holds them
        config.setdefault("cpu_kernels", "default")  # files written before the setting existed
        return {k: v for k, v in config.items() if k not in RESUME_IGNORES} | {
            "question_file_sha256": header.get("question_file_sha256")}
    wa, wb = what(a), what(b)
    return [(k, wa.get(k), wb.get(k)) for k in sorted(wa.keys() | wb.keys()) if wa.get(k) != wb.get(k)]


def check_resume(out: Path, header: dict) -> set:
    """(question_id, method) pairs already in ``out``; refuses a file written under another configuration."""
    if not out.is_file() or out.stat().st_size == 0:
        return set()
    old = read_answer_file(out)
    if not old.answers:  # a header alone (a run that stopped before its first answer) is rewritten
        return set()
    diff = [f"{k}: {theirs!r} in the file, {mine!r} now" for k, theirs, mine in header_differences(old.header, header)]
    if diff:
        raise ValueError(f"{out} was written with another configuration ({'; '.join(diff)}); "
                         f"use another --out or delete the file")
    return {(q, m) for m, answers in old.answers.items() for q in answers}


@dataclass
class Plan:
    """What a run will do, settled (and every input checked) before any model loads."""

    questions: list[tuple[int, Question]]  # (index in the set, question) still to answer
    header: dict
    resume: bool  # out already holds this configuration's header


def plan(cfg: EvalConfig) -> Plan:
    questions, question_file = load_questions(cfg.bench, cfg.full, cfg.question_file)
    questions = questions[: cfg.questions]
    if cfg.first_question >= len(questions):
        raise ValueError(f"first question {cfg.first_question} is past the end of {cfg.bench} "
                         f"({len(questions)} questions)")
    header = {"record": "header", "format": FORMAT, "config": asdict(cfg),
              "question_file": str(question_file.resolve()), "question_file_sha256": file_sha256(question_file)}
    done = check_resume(Path(cfg.out), header)
    todo = [(i, q) for i, q in enumerate(questions)
            if i >= cfg.first_question and any((q.question_id, m) not in done for m in cfg.methods)]
    try:  # the template must work with this tokenizer: check it now
        tokenizer = AutoTokenizer.from_pretrained(cfg.base)
    except (OSError, ValueError) as e:
        raise ValueError(f"target folder {cfg.base!r} has no usable tokenizer, which the benchmarks need: {e}") from e
    # Every first turn must leave room for max_new_tokens (later turns depend on the answers: checked as they come).
    limit = getattr(AutoConfig.from_pretrained(cfg.base), "max_position_embeddings", None)
    for _, q in todo:
        length = len(build_prompt(tokenizer, [{"role": "user", "content": q.turns[0]}], cfg.template))
        if limit is not None and length + cfg.max_new_tokens > limit:
            raise ValueError(f"question {q.question_id}: its prompt ({length} tokens) + max_new_tokens "
                             f"({cfg.max_new_tokens}) is over the target's maximum length {limit}")
    return Plan(todo, header, resume=bool(done))


def generate_answers(cfg: EvalConfig, plan: Plan) -> int:
    """Answer the planned questions, appending to ``cfg.out``; returns how many were answered."""
    out, todo = Path(cfg.out), plan.questions
    if not todo:
        print(f"{out}: every question is already answered")
        return 0
    torch.manual_seed(cfg.seed)
    plain = HassModel.from_pretrained(cfg.base, None, dtype=DTYPES[cfg.dtype], device=cfg.device,
                                      cpu_kernels=cfg.cpu_kernels)
    tokenizer, target = plain.tokenizer, plain.target
    eos = eos_ids(tokenizer, target)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos[0]
    makers = {
        "vanilla": lambda: hass_runner(plain, cfg, eos),
        "hf": lambda: hf_runner(target, cfg, eos, pad, None),
        "pld": lambda: hf_runner(target, cfg, eos, pad, PLD_NUM_TOKENS),
    }
    drafts: dict[tuple[str, str], DraftModel] = {}  # variants sharing a draft folder and dtype share its weights
    for m in cfg.methods:
        if m == "hass" or m.startswith("hass["):  # plain hass is the variant with no replacements
            v = cfg.variant(m)
            if (v.draft, v.draft_dtype) not in drafts:
                drafts[v.draft, v.draft_dtype] = DraftModel.from_pretrained(v.draft, dtype=DTYPES[v.draft_dtype],
                                                                            device=cfg.device)
                pack_draft(drafts[v.draft, v.draft_dtype], cfg.cpu_kernels)  # as HassModel.from_pretrained does
            vocab = draft_vocab_from(v.draft, v.vocab, target.config.vocab_size) if v.vocab is not None else None
            variant = HassModel(target, drafts[v.draft, v.draft_dtype], tokenizer, vocab)
            makers[m] = lambda variant=variant, tree=v.tree: hass_runner(variant, cfg, eos, tree)
    runners = {m: makers[m]() for m in cfg.methods}

    stamp = {"versions": versions(), "machine": machine(cfg.device), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    if not plan.resume:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(plan.header | {"eos_token_ids": eos} | stamp) + "\n", encoding="utf-8")
    else:
        with open(out, "a", encoding="utf-8") as f:
            f.write(json.dumps({"record": "resume"} | stamp) + "\n")
    warm_prompt = torch.tensor([build_prompt(tokenizer, [{"role": "user", "content": todo[0][1].turns[0]}],
                                             cfg.template)], device=cfg.device)
    for m in cfg.methods:
        for w in range(cfg.warmup):
            runners[m](warm_prompt, w)

    with open(out, "a", encoding="utf-8") as f:
        for i, q in tqdm(todo, desc=f"{cfg.bench} {','.join(cfg.methods)}", unit="question"):
            order = cfg.methods[i % len(cfg.methods):] + cfg.methods[: i % len(cfg.methods)]
            turns = {m: answer(runners[m], tokenizer, q, cfg, cfg.seed * 1_000_003 + i) for m in order}
            for m in cfg.methods:
                record = {"record": "answer", "method": m, "question_id": q.question_id, "category": q.category,
                          "turns": turns[m]}
                f.write(json.dumps(record) + "\n")
            f.flush()
    return len(todo)


def evaluate(cfg: EvalConfig) -> int:
    return generate_answers(cfg, plan(cfg))


def parse_args(argv: list[str] | None = None) -> EvalConfig:
    p = argparse.ArgumentParser(prog="python -m evaluation.run", description=__doc__.split("\n")[0])
    p.add_argument("--base", required=True, help="target model folder (transformers format, with tokenizer)")
    p.add_argument("--draft", help="draft model folder (needed by method hass)")
    p.add_argument("--bench", required=True, help=" | ".join(BENCHMARKS))
    p.add_argument("--methods", default="hass,vanilla",
                   help=f"comma-separated subset of {','.join(METHODS)}, and hass[key=value,...] variants")
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--max-new-tokens", type=int, default=None, help="per turn (default 512; 32 with --quick)")
    p.add_argument("--total-tokens", type=int, default=60)
    p.add_argument("--depth", type=int, default=6)
    p.add_argument("--top-k", type=int, default=10, help="draft tree top-k (not a sampling setting)")
    p.add_argument("--dtype", default="bf16", help=" | ".join(DTYPES))
    p.add_argument("--draft-dtype", default=None,
                   help="the draft's precision (default: --dtype): bf16 | fp16 | fp32 | auto (bf16 where the device "
                        "has bf16 matrix units, e.g. AMX; else fp32). The output does not depend on it")
    p.add_argument("--draft-vocab", type=int, default=None,
                   help="draft only the N tokens most frequent in the draft's training answers (default: the N the "
                        "draft was trained over, else all)")
    p.add_argument("--cpu-kernels", default="auto", choices=CPU_KERNELS,
                   help="onednn: pack the target's linear layers for oneDNN (faster fp32 tree forwards on a CPU; "
                        "hass.kernels); vanilla and hass use them, hf keeps transformers' own. auto (default): "
                        "onednn for an fp32 target on the CPU, else default")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--questions", type=int, default=None, help="only the first N questions (default all)")
    p.add_argument("--first-question", type=int, default=0,
                   help="skip the questions before this 0-based index: answer one part of a set, to be joined "
                        "with the other parts by `python -m evaluation.merge` (default 0)")
    p.add_argument("--full", action="store_true", help="HumanEval 164 / GSM8K 1,319 instead of the 80-sets")
    p.add_argument("--quick", action="store_true", help="smoke test: 3 questions, 32 new tokens, 1 warm-up")
    p.add_argument("--warmup", type=int, default=None, help="warm-up generations per method (default 2)")
    p.add_argument("--template", default="chat", help=" | ".join(TEMPLATES))
    p.add_argument("--question-file", default=None)
    p.add_argument("--out", required=True, help="answers JSONL (appended to when resuming)")
    args = p.parse_args(argv)
    defaults = QUICK if args.quick else {"questions": None, "max_new_tokens": 512, "warmup": 2}
    resolved = {k: getattr(args, k) if getattr(args, k) is not None else v for k, v in defaults.items()}
    try:
        if args.draft_dtype is not None:  # the answer file records what ran: auto becomes bf16 or fp32 here
            args.draft_dtype = resolve_dtype_name(args.draft_dtype, args.device)
        if args.dtype in DTYPES:  # likewise auto kernels become default or onednn
            args.cpu_kernels = resolve_cpu_kernels(args.cpu_kernels, args.device, DTYPES[args.dtype])
        return EvalConfig(
            base=args.base, draft=args.draft, bench=args.bench, out=args.out,
            methods=split_methods(args.methods),
            temperature=args.temperature, total_tokens=args.total_tokens, depth=args.depth, top_k=args.top_k,
            dtype=args.dtype, draft_dtype=args.draft_dtype, draft_vocab_size=args.draft_vocab,
            cpu_kernels=args.cpu_kernels, device=args.device, seed=args.seed, full=args.full,
            first_question=args.first_question, template=args.template,
            question_file=args.question_file, **resolved,
        )
    except (ValueError, FileNotFoundError) as e:
        p.error(str(e))


def main(argv: list[str] | None = None) -> None:
    cfg = parse_args(argv)
    try:
        settled = plan(cfg)
    except (ValueError, OSError) as e:  # bad input: say so plainly, before any model loads
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    generate_answers(cfg, settled)


if __name__ == "__main__":
    main(sys.argv[1:])
