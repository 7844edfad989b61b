"""Harmonized context alignment (HCA, docs/METHOD.md section 3): train the draft in the context it meets at decoding.

At decoding time, the s-th draft step at position i sees true target features only up to position
i - (s - 1) and its own estimates for the s - 1 positions after that. HCA reproduces that context in
training:

    F^(0) = f (noised);  for s = 1..n:  g^(s) = draft over F^(s-1), attending to the keys of F^(0..s-1)
                                         F^(s)_0 = f_0,  F^(s)_i = g^(s)_{i-1}   (detached)

Step s is ONE draft forward whose queries are the newest set F^(s-1) (length L) and whose keys/values are
those of all s sets concatenated along the sequence (length s*L). Query i reads key position j <= i from
set k(i, j) = max(0, (s - 1) - (i - j)): itself from the newest set, position i - 1 from the set before,
..., and every key at distance >= s - 1 from the true features.

A key/value of set k depends only on that set's own input (the draft layer has no input norm), so the
keys/values computed when set k was the newest one are reused by every later step: the steps share one
growing transformers ``DynamicCache`` (concatenation keeps the autograd graph, so gradients flow into every
use, exactly as if each step recomputed them). Step s therefore costs one L-token forward with an
(L, s*L) mask, not an s*L-token forward with an (s*L)^2 one: n = 3 runs the draft layer on 3L tokens
instead of 6L and the attention over 6 instead of 14 L x L blocks.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from transformers import DynamicCache

from . import hf
from .losses import LossWeights, loss_positions, masked_mean, shift_left, step_loss


def hca_mask(valid: torch.Tensor, steps: int, dtype: torch.dtype) -> torch.Tensor:
    """Additive mask (B, 1, L, s*L) of the step-s forward: newest-set queries over the keys of s sets.

    valid: (B, L) bool, False on padding. Row i is query position i of the newest set (s - 1), column
    (k, j) key position j of set k; it is kept iff j <= i, j is valid and k == max(0, s-1-(i-j)). Every row
    also keeps its own diagonal (set s - 1, j = i) so padded rows are not fully masked.
    """
    b, length = valid.shape
    device = valid.device
    pos = torch.arange(length, device=device)
    dist = pos[:, None] - pos[None, :]  # (L, L) i - j
    chosen_set = (steps - 1 - dist).clamp(min=0)  # (L, L)
    sets = torch.arange(steps, device=device)
    keep = (sets[None, :, None] == chosen_set[:, None, :]) & (dist >= 0)[:, None, :]  # (L, s, L)
    keep = keep[None] & valid.bool()[:, None, None, :]  # (B, L, s, L)
    keep = keep.reshape(b, length, steps * length)
    keep[:, pos, (steps - 1) * length + pos] = True
    return hf.additive_mask(keep, dtype)[:, None]  # (B, 1, L, s*L)


def hca_step(
    draft: nn.Module,
    features: torch.Tensor,  # (B, L, h) the newest feature set F^(s-1)
    token_embeds: torch.Tensor,  # (B, L, h) E(x_{t+1})
    position_ids: torch.Tensor,  # (B, L)
    valid: torch.Tensor,  # (B, L) bool
    cache: DynamicCache,  # keys/values of F^(0) .. F^(s-2); this step appends F^(s-1)'s
) -> torch.Tensor:  # (B, L, h) g^(s)
    """One draft forward of aligning step s = (sets in the cache) + 1."""
    steps = cache.get_seq_length() // token_embeds.shape[1] + 1
    mask = hca_mask(valid, steps, _compute_dtype(features))
    return draft(features, token_embeds, position_ids, attention_mask=mask, cache=cache)


def shift_right(g: torch.Tensor, first: torch.Tensor) -> torch.Tensor:
    """F_0 = first, F_i = g_{i-1}: (B, L, h), (B, 1, h) -> (B, L, h)."""
    return torch.cat([first, g[:, :-1]], dim=1)


def hca_losses(
    draft: nn.Module,
    lm_head: Callable[[torch.Tensor], torch.Tensor],  # the target's W: (*, h) -> (*, V), frozen
    input_features: torch.Tensor,  # (B, L, h) F^(0): target features with noise
    target_features: torch.Tensor,  # (B, L, h) clean target features f_t
    token_embeds: torch.Tensor,  # (B, L, h) E(x_{t+1})
    position_ids: torch.Tensor,  # (B, L)
    valid: torch.Tensor,  # (B, L) 1 on real tokens, 0 on padding
    loss_mask: torch.Tensor,  # (B, L) 1 on assistant tokens
    steps: int,
    weights: LossWeights,
    vocab: torch.Tensor | None = None,  # (N,) ascending token ids the draft is trained over; None = all V
    draft_head: Callable[[torch.Tensor], torch.Tensor] | None = None,  # (*, h) -> (*, N): lm_head's rows ``vocab``
    target_top1: torch.Tensor | None = None,  # (P,) the target's argmax over all V at the loss positions, if known
) -> list[dict[str, torch.Tensor]]:
    """The loss terms of each aligning step s = 1..steps (see hass.losses.step_loss), against the same targets.

    The vocabulary projections are only taken at the loss positions (assistant tokens), which is where
    most of the memory of a long sequence goes; masked means over them equal the (B, L) masked means.
    Sum the "loss" entries for the HCA objective (equal weights).

    With a draft vocabulary (``vocab`` and ``draft_head``, hass.draft_vocab) the draft is scored over those N
    tokens only: its logits are ``draft_head(g)`` (the target's lm_head restricted to the N rows), and L_cls and
    HOD use the target's distribution restricted to the N tokens and renormalised (the softmax of the target's
    logits at those ids). Positions whose target top-1 lies outside the N stay in the loss (the draft still
    learns the target's order among the tokens it can propose); "acc" compares with the target's top-1 over
    the full vocabulary, so such positions count as misses, and "outside" is their share.

    That full-vocabulary top-1 is the only use of the target's other V - N rows. It comes back as
    ``terms[0]["target_top1"]`` (P,), in the order of the loss positions (row by row); a caller that passes it
    in again (``target_top1``, the trainer keeps it per sample from the first epoch on) skips the full
    projection: the target's logits are then ``draft_head(f_next)``, N rows instead of V (a third of the
    target-side work for SmolLM2's 49,152 / 16,384).
    """
    if steps < 1:
        raise ValueError(f"HCA needs at least one aligning step, got {steps}")
    valid = valid.bool()
    sel = loss_positions(loss_mask, valid).bool()  # (B, L)
    f_next = shift_left(target_features)[sel]  # (N, h)
    if (vocab is None) != (draft_head is None):
        raise ValueError("a draft vocabulary needs both vocab (its token ids) and draft_head (their lm_head rows)")
    if target_top1 is not None and (vocab is None or target_top1.shape != f_next.shape[:1]):
        raise ValueError(f"target_top1 needs a draft vocabulary and one id per loss position ({f_next.shape[0]}), "
                         f"got {'no vocabulary' if vocab is None else tuple(target_top1.shape)}")
    with torch.no_grad():
        full_top1 = None
        if target_top1 is not None:
            full_top1 = target_top1.to(device=f_next.device, dtype=torch.long)
            target_logits = draft_head(f_next).float()  # (P, N): the same rows as lm_head(f_next)[:, vocab]
        else:
            target_logits = lm_head(f_next).float()  # (P, V) at the P loss positions
            if vocab is not None:
                full_top1 = target_logits.argmax(-1)
                target_logits = target_logits[:, vocab]  # renormalised over the N tokens by the softmax below
        target_probs = torch.softmax(target_logits, dim=-1)  # (P, V) or (P, N)
        target_top = target_probs.topk(min(weights.top_k, target_probs.shape[-1]), dim=-1)  # shared by all steps
        inside = torch.isin(full_top1, vocab) if vocab is not None else None  # (P,) top-1 is a draft token
    ones = torch.ones(f_next.shape[0], device=f_next.device)
    head = lm_head if draft_head is None else draft_head
    cache = DynamicCache()
    features, terms = input_features, []
    for s in range(1, steps + 1):
        g = hca_step(draft, features, token_embeds, position_ids, valid, cache)  # (B, L, h)
        g_sel = g[sel]  # (P, h)
        logits = head(g_sel)
        t = step_loss(g_sel, f_next, target_probs, logits, ones, weights, target_top)
        if vocab is not None:  # top-1 against the target's over all V: an outside top-1 is a miss
            draft_top1 = vocab[logits.detach().argmax(-1)]
            t["acc"] = masked_mean((draft_top1 == full_top1).float(), ones).detach()
            t["outside"] = masked_mean((~inside).float(), ones).detach()
        if s == 1 and full_top1 is not None:
            t["target_top1"] = full_top1
        terms.append(t)
        if s < steps:
            features = shift_right(g, input_features[:, :1]).detach().to(input_features.dtype)
    return terms


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype the attention runs in: the autocast dtype when autocast is on, else the input's."""
    device = x.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype
