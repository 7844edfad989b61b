"""A smaller vocabulary to draft with: the draft proposes only the tokens seen most often in training answers.

With a small hidden size and a large vocabulary, the vocabulary projection is most of the draft's cost: for
SmolLM2-135M it is a 49,152 x 576 matrix (28M weights, 56 MB in bf16) that every tree level reads once,
while the draft's decoder layer has 3.5M. Restricting the draft's projection to the N most frequent tokens
cuts that read V/N-fold. Output is unchanged: the draft only proposes, and the target verifies with its
full vocabulary; a token outside the set can still be produced, as the bonus token, only never drafted.

The counts live beside the draft, in ``token_counts.safetensors`` (one int64 count per vocabulary id), written
by ``python -m train.token_counts``; the size N is chosen when loading:
``HassModel.from_pretrained(base, draft, draft_vocab_size=N)``.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable

import torch
from safetensors.torch import load_file, save_file

from .errors import CheckpointError
from .files import atomic_path

COUNTS_FILE = "token_counts.safetensors"


def count_tokens(samples: Iterable[dict], vocab_size: int) -> torch.Tensor:
    """(vocab_size,) int64: how often each id is a loss-masked (assistant) token of prepared samples."""
    counts = torch.zeros(vocab_size, dtype=torch.long)
    for s in samples:
        ids = torch.tensor(s["input_ids"], dtype=torch.long)
        mask = torch.tensor(s["loss_mask"], dtype=torch.bool)
        ids = ids[mask]
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= vocab_size):
            bad = int(ids[(ids < 0) | (ids >= vocab_size)][0])
            raise ValueError(f"sample {s.get('id', '?')!r} holds token id {bad} outside the vocabulary [0, {vocab_size})")
        counts += torch.bincount(ids, minlength=vocab_size)
    return counts


def save_token_counts(folder: str | os.PathLike, counts: torch.Tensor, source: str) -> Path:
    """Write ``counts`` to ``folder/token_counts.safetensors`` atomically (temporary name, then rename)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"draft folder {str(folder)!r} does not exist")
    if counts.dim() != 1 or counts.dtype != torch.long or bool((counts < 0).any()):
        raise ValueError("token counts must be a 1-D int64 tensor of non-negative counts")
    path = folder / COUNTS_FILE
    with atomic_path(path) as tmp:
        save_file({"counts": counts.contiguous()}, str(tmp),
                  metadata={"source": source, "total": str(int(counts.sum()))})
    return path


def load_token_counts(folder: str | os.PathLike) -> torch.Tensor:
    path = Path(folder) / COUNTS_FILE
    if not path.is_file():
        raise CheckpointError(f"draft folder {str(folder)!r} has no {COUNTS_FILE}, which a draft vocabulary needs; "
                              f"write it with `python -m train.token_counts --data PREPARED.jsonl --draft {folder}`")
    try:
        counts = load_file(str(path))["counts"]
    except Exception as e:  # safetensors raises many types on a truncated file
        raise CheckpointError(f"{str(path)!r} is unreadable (corrupt or truncated?): {e}") from e
    if counts.dim() != 1 or counts.dtype != torch.long:
        raise CheckpointError(f"{str(path)!r} must hold a 1-D int64 'counts' tensor")
    return counts


def top_tokens(counts: torch.Tensor, size: int) -> torch.Tensor:
    """The ``size`` most frequent ids (ties: the lower id first), in increasing id order."""
    vocab = counts.numel()
    if not isinstance(size, int) or isinstance(size, bool) or not 1 <= size <= vocab:
        raise ValueError(f"draft vocabulary size must be an int in [1, {vocab}], got {size!r}")
    order = torch.argsort(-counts, stable=True)  # stable: equal counts keep increasing id order
    return order[:size].sort().values


def draft_vocab_from(folder: str | os.PathLike, size: int, vocab_size: int) -> torch.Tensor:
    """The ``size`` most frequent ids of the counts beside a draft, checked against the target's vocabulary."""
    counts = load_token_counts(folder)
    if counts.numel() != vocab_size:
        raise CheckpointError(f"{folder}: {COUNTS_FILE} counts {counts.numel()} token ids, "
                              f"the target's vocabulary has {vocab_size}")
    return top_tokens(counts, size)


def trained_vocab_size(folder: str | os.PathLike) -> int | None:
    """The N a draft was trained over (``draft_vocab_size`` in its config.json, written by train.trainer), or
    None for a draft trained over the full vocabulary. Its ids are the N most frequent of the counts beside it."""
    try:
        n = json.loads((Path(folder) / "config.json").read_text()).get("draft_vocab_size")
    except (OSError, ValueError):
        return None  # DraftModel.from_pretrained reports a missing or broken config
    if n in (None, 0):
        return None
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise CheckpointError(f"{folder}: config.json has draft_vocab_size={n!r}; expected a positive int")
    return n


def check_draft_vocab(ids: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Validate a draft vocabulary (distinct token ids in [0, vocab_size)) and return it as int64."""
    if not isinstance(ids, torch.Tensor) or ids.dim() != 1 or ids.numel() == 0 or ids.dtype.is_floating_point:
        raise ValueError("draft_vocab must be a non-empty 1-D tensor of token ids")
    ids = ids.long()
    if int(ids.min()) < 0 or int(ids.max()) >= vocab_size:
        raise ValueError(f"draft_vocab holds ids outside the target's vocabulary [0, {vocab_size})")
    if torch.unique(ids).numel() != ids.numel():
        raise ValueError("draft_vocab holds a token id twice")
    return ids
