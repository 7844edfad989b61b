"""Continuous batching for plain (non-speculative) generation with an unmodified transformers causal LM.

Used by ``train.regenerate`` to have the target answer many dialogues fast on a CPU. A fixed number of
*slots* share one preallocated KV cache of shape (slots, kv_heads, capacity, head_dim) per layer. Every slot
holds one request at a time, with its own length; a decode step runs all slots at once (one token each, at
its own position), and a slot whose answer ends takes the next request at once, so the batch stays full
instead of waiting for its longest answer (what ``generate`` on a padded batch does).

A request is a conversation: :class:`Job` gives a prompt, receives the answer, and gives the next prompt (a
later turn, conditioned on the earlier answers) or ``None``. A slot keeps the tokens in its cache, and a new
prompt reuses the longest common prefix with them: a dialogue's second turn prefills only what follows the
first answer, and dialogues that share a system prompt share its prefill.

The forwards are the model's own: an additive 4D float mask (each slot sees its own positions only) plus
explicit position ids, and a transformers ``Cache`` whose layers write each row at its own positions. Greedy
answers are the model's own greedy answers (tests/test_regenerate.py compares them with ``generate``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Protocol

import torch
from torch import nn
from transformers.cache_utils import Cache, CacheLayerMixin


class Job(Protocol):
    def first_prompt(self) -> list[int] | None: ...

    def answered(self, answer: list[int], stopped: str) -> list[int] | None:
        """Take the answer (eos excluded) and why it stopped ('eos', 'length', 'capacity'); next prompt or None."""


@dataclass
class _Plan:
    """Where the forward about to run writes: rows (None = every slot), per-row start positions, key length."""
    rows: torch.Tensor | None = None
    starts: torch.Tensor | None = None  # (B,)
    key_length: int = 0
    pad_room: int = 0


class _SlotLayer(CacheLayerMixin):
    def __init__(self, plan: _Plan, slots: int, capacity: int):
        super().__init__()
        self.plan, self.slots, self.capacity = plan, slots, capacity

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        _, h, _, dk = key_states.shape
        # room past the capacity for the pad tokens of a prefill chunk, which write after their slot's length
        room = self.capacity + self.plan.pad_room
        self.keys = key_states.new_zeros((self.slots, h, room, dk))
        self.values = value_states.new_zeros((self.slots, h, room, value_states.shape[-1]))
        self.is_initialized = True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        plan = self.plan
        b, _, t, _ = key_states.shape
        rows = plan.rows if plan.rows is not None else torch.arange(b, device=key_states.device)
        pos = plan.starts[:, None] + torch.arange(t, device=key_states.device)  # (B, T)
        self.keys[rows[:, None], :, pos] = key_states.transpose(1, 2)
        self.values[rows[:, None], :, pos] = value_states.transpose(1, 2)
        n = plan.key_length
        if plan.rows is None:  # views: a decode step copies nothing
            return self.keys[:, :, :n], self.values[:, :, :n]
        return self.keys[plan.rows, :, :n], self.values[plan.rows, :, :n]

    def get_mask_sizes(self, query_length: int, *args) -> tuple[int, int]:
        return self.plan.key_length, 0

    def get_seq_length(self) -> int:
        return 0

    def get_max_length(self) -> int:
        return self.capacity


class SlotCache(Cache):
    """A transformers ``Cache`` of ``slots`` rows, each written at its own positions (see module docstring)."""

    def __init__(self, num_layers: int, slots: int, capacity: int):
        self.plan = _Plan()
        super().__init__(layers=[_SlotLayer(self.plan, slots, capacity) for _ in range(num_layers)])


@dataclass
class _Slot:
    tokens: list[int] = field(default_factory=list)  # what the cache holds for this slot, in order
    job: Job | None = None
    pending: list[int] = field(default_factory=list)  # prompt tokens still to prefill
    answer: list[int] = field(default_factory=list)
    next_token: int | None = None  # sampled, not yet in the cache


@dataclass
class Stats:
    answer_tokens: int = 0
    prefill_tokens: int = 0
    reused_tokens: int = 0  # prompt tokens found in a slot's cache instead of prefilled
    decode_steps: int = 0
    stopped: dict = field(default_factory=lambda: {"eos": 0, "length": 0, "capacity": 0})


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


class ContinuousBatcher:
    """Answer :class:`Job` s with ``model`` in ``slots`` rows at once (greedy, or sampled with ``temperature``).

    ``capacity`` bounds a slot's prompt + answer tokens; an answer that fills it stops with 'capacity'.
    ``prefill_chunk`` bounds the tokens of one prefill forward per row (long prompts take several).
    """

    def __init__(self, model: nn.Module, *, slots: int, capacity: int, max_new_tokens: int, eos: Iterable[int],
                 temperature: float = 0.0, generator: torch.Generator | None = None, prefill_chunk: int = 512):
        if slots < 1 or capacity < 2 or max_new_tokens < 1 or prefill_chunk < 1:
            raise ValueError(f"slots, max_new_tokens, prefill_chunk must be >= 1 and capacity >= 2; got "
                             f"{slots}, {max_new_tokens}, {prefill_chunk}, {capacity}")
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        self.model, self.slots, self.capacity = model, slots, capacity
        self.max_new_tokens, self.temperature, self.generator = max_new_tokens, temperature, generator
        self.prefill_chunk = prefill_chunk
        self.eos = set(eos)
        self.device = model.get_input_embeddings().weight.device
        self.dtype = model.get_input_embeddings().weight.dtype
        self.cache = SlotCache(model.config.num_hidden_layers, slots, capacity)
        self.cache.plan.pad_room = prefill_chunk
        self.state = [_Slot() for _ in range(slots)]
        self.stats = Stats()

    # ------------------------------------------------------------------ forwards
    def _forward(self, rows: list[int] | None, chunks: list[list[int]], starts: list[int]) -> torch.Tensor:
        """Run ``chunks[i]`` at positions ``starts[i]..`` of slot ``rows[i]`` (None: every slot, in order);
        returns the logits of each chunk's last token, (B, V) fp32."""
        t = max(len(c) for c in chunks)
        key_length = max(s + len(c) for s, c in zip(starts, chunks))
        ids = torch.tensor([c + [c[-1]] * (t - len(c)) for c in chunks], device=self.device)
        start = torch.tensor(starts, device=self.device)
        pos = start[:, None] + torch.arange(t, device=self.device)  # (B, T)
        lengths = torch.tensor([len(c) for c in chunks], device=self.device)
        keys = torch.arange(key_length, device=self.device)
        # a query sees its slot's keys up to its own position; pad queries (past the chunk) see key 0 only
        real = torch.arange(t, device=self.device)[None, :] < lengths[:, None]
        keep = (keys[None, None, :] <= pos[:, :, None]) & real[:, :, None]
        keep[:, :, 0] |= ~real
        mask = torch.zeros(keep.shape, dtype=self.dtype, device=self.device).masked_fill_(
            ~keep, torch.finfo(self.dtype).min)[:, None]
        plan = self.cache.plan
        plan.rows = None if rows is None else torch.tensor(rows, device=self.device)
        plan.starts, plan.key_length = start, key_length
        out = self.model.get_decoder()(input_ids=ids, attention_mask=mask, position_ids=pos,
                                       past_key_values=self.cache, use_cache=True)
        last = out.last_hidden_state[torch.arange(len(chunks)), lengths - 1]
        return self.model.get_output_embeddings()(last).float()

    def _choose(self, logits: torch.Tensor) -> list[int]:
        if self.temperature == 0:
            return logits.argmax(-1).tolist()
        probs = torch.softmax(logits / self.temperature, dim=-1)
        return torch.multinomial(probs, 1, generator=self.generator)[:, 0].tolist()

    # ------------------------------------------------------------------ slot bookkeeping
    def _assign(self, i: int, prompt: list[int]) -> None:
        slot = self.state[i]
        if not prompt:
            raise ValueError("a job gave an empty prompt")
        if len(prompt) >= self.capacity:
            raise ValueError(f"a prompt of {len(prompt)} tokens does not fit a slot of capacity {self.capacity}")
        keep = min(_common_prefix(slot.tokens, prompt), len(prompt) - 1)  # prefill >= 1 token for its logits
        slot.tokens = slot.tokens[:keep]
        slot.pending = prompt[keep:]
        slot.answer = []
        slot.next_token = None
        self.stats.reused_tokens += keep

    def _finish(self, i: int, stopped: str, queue: Iterator[Job]) -> None:
        slot = self.state[i]
        self.stats.stopped[stopped] += 1
        prompt = slot.job.answered(slot.answer, stopped)
        while prompt is None:  # the job is done: take the next one (a job may give no prompt at all)
            slot.job = next(queue, None)
            if slot.job is None:  # idle from now on: decode steps write its position 0
                slot.tokens, slot.pending, slot.next_token = [], [], None
                return
            prompt = slot.job.first_prompt()
        self._assign(i, prompt)

    def _take(self, i: int, token: int, queue: Iterator[Job]) -> None:
        """Slot ``i``'s model chose ``token`` after its context."""
        slot = self.state[i]
        if token in self.eos:
            return self._finish(i, "eos", queue)
        slot.answer.append(token)
        self.stats.answer_tokens += 1
        if len(slot.answer) >= self.max_new_tokens:
            return self._finish(i, "length", queue)
        if len(slot.tokens) + 1 >= self.capacity:
            return self._finish(i, "capacity", queue)
        slot.next_token = token

    # ------------------------------------------------------------------ the loop
    @torch.inference_mode()
    def run(self, jobs: Iterable[Job], progress: Callable[[int], None] | None = None) -> Stats:
        """Answer every job; ``progress(answer_tokens)`` is called after each step."""
        queue = iter(jobs)
        for i, slot in enumerate(self.state):
            slot.job, slot.next_token, slot.pending = None, None, []
            while slot.job is None:
                job = next(queue, None)
                if job is None:
                    break
                prompt = job.first_prompt()
                if prompt is not None:
                    slot.job = job
                    self._assign(i, prompt)
        while any(s.job is not None for s in self.state):
            prefill = [i for i, s in enumerate(self.state) if s.job is not None and s.pending]
            if prefill:
                chunks = [self.state[i].pending[:self.prefill_chunk] for i in prefill]
                starts = [len(self.state[i].tokens) for i in prefill]
                logits = self._forward(prefill, chunks, starts)
                self.stats.prefill_tokens += sum(map(len, chunks))
                done = []
                for i, chunk in zip(prefill, chunks):
                    slot = self.state[i]
                    slot.tokens += chunk
                    slot.pending = slot.pending[len(chunk):]
                    if not slot.pending:
                        done.append(i)
                for i, token in zip(prefill, self._choose(logits)):
                    if i in done:
                        self._take(i, token, queue)
                continue  # a finished slot may have a new prompt to prefill first
            live = [i for i, s in enumerate(self.state) if s.next_token is not None]
            if not live:
                continue
            # every slot runs (idle ones on a dummy token at their position 0): a decode step then reads the
            # cache as views, copying nothing
            chunks = [[s.next_token if s.next_token is not None else 0] for s in self.state]
            starts = [len(s.tokens) if s.next_token is not None else 0 for s in self.state]
            logits = self._forward(None, chunks, starts)
            self.stats.decode_steps += 1
            chosen = self._choose(logits)
            for i in live:
                slot = self.state[i]
                slot.tokens.append(slot.next_token)
                slot.next_token = None
                self._take(i, chosen[i], queue)
            if progress is not None:
                progress(self.stats.answer_tokens)
        return self.stats
