"""Harmonized context alignment (HCA, REFERENCE.md section 3): train the draft in the context it meets at decoding.

At decoding time, the s-th draft step at position i sees true target features only up to position
i - (s - 1) and its own estimates for the s - 1 positions after that. HCA reproduces that context in
training:

    F^(0) = f (noised);  for s = 1..n:  g^(s) = draft over [F^(0); ...; F^(s-1)] with the step-s mask
                                         F^(s)_0 = f_0,  F^(s)_i = g^(s)_{i-1}   (detached)

Each step is ONE draft forward over the s feature sets concatenated along the sequence (length s*L);
queries of the newest set F^(s-1) at position i read key position j <= i from set
k(i, j) = max(0, (s - 1) - (i - j)): itself from the newest set, position i - 1 from the set before, ...,
and every key at distance >= s - 1 from the true features. Only the newest set's outputs are used.

Memory: the attention scores of step s are (B, heads, s*L, s*L), i.e. they grow as (s*L)^2 per head
(9x the plain forward at s = 3); SDPA's fused CPU/GPU kernels avoid materialising them, the additive mask
(B, 1, s*L, s*L) is still materialised.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from . import hf
from .losses import LossWeights, loss_positions, shift_left, step_loss


def hca_mask(valid: torch.Tensor, steps: int, dtype: torch.dtype) -> torch.Tensor:
    """Additive mask (B, 1, s*L, s*L) of the step-s forward over s concatenated feature sets.

    valid: (B, L) bool, False on padding. Row (a, i) is query position i of set a, column (k, j) key
    position j of set k. Rows of the newest set a = s-1 keep (k, j) iff j <= i, j is valid and
    k == max(0, s-1-(i-j)). Rows of older sets (whose outputs are discarded) are causal within their own
    set. Every row keeps its own diagonal so no row is fully masked (padded rows otherwise would be).
    """
    b, length = valid.shape
    device = valid.device
    pos = torch.arange(length, device=device)
    dist = pos[:, None] - pos[None, :]  # (L, L) i - j
    chosen_set = (steps - 1 - dist).clamp(min=0)  # (L, L) set read by the newest queries
    sets = torch.arange(steps, device=device)
    newest_ok = sets[None, None, :, None] == chosen_set[None, :, None, :]  # (1, L, s, L)
    own_ok = sets[:, None, None, None] == sets[None, None, :, None]  # (s, 1, s, 1)
    is_newest = (sets == steps - 1)[:, None, None, None]  # (s, 1, 1, 1)
    keep = torch.where(is_newest, newest_ok, own_ok) & (dist >= 0)[None, :, None, :]  # (s, L, s, L)
    keep = keep[None] & valid.bool()[:, None, None, None, :]  # (B, s, L, s, L)
    keep = keep.reshape(b, steps * length, steps * length) | torch.eye(steps * length, dtype=torch.bool, device=device)
    return hf.additive_mask(keep, dtype)[:, None]  # (B, 1, s*L, s*L)


def hca_step(
    draft: nn.Module,
    feature_sets: list[torch.Tensor],  # s tensors (B, L, h): F^(0) .. F^(s-1)
    token_embeds: torch.Tensor,  # (B, L, h) E(x_{t+1})
    position_ids: torch.Tensor,  # (B, L)
    valid: torch.Tensor,  # (B, L) bool
) -> torch.Tensor:  # (B, L, h) g^(s)
    """One draft forward of aligning step s = len(feature_sets); returns the newest set's outputs."""
    steps, length = len(feature_sets), token_embeds.shape[1]
    features = torch.cat(feature_sets, dim=1)  # (B, s*L, h)
    mask = hca_mask(valid, steps, _compute_dtype(features))
    g = draft(features, token_embeds.repeat(1, steps, 1), position_ids.repeat(1, steps), attention_mask=mask)
    return g[:, -length:]


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
) -> list[dict[str, torch.Tensor]]:
    """The loss terms of each aligning step s = 1..steps (see hass.losses.step_loss), against the same targets.

    The vocabulary projections are only taken at the N loss positions (assistant tokens), which is where
    most of the memory of a long sequence goes; masked means over them equal the (B, L) masked means.
    Sum the "loss" entries for the HCA objective (equal weights).
    """
    if steps < 1:
        raise ValueError(f"HCA needs at least one aligning step, got {steps}")
    valid = valid.bool()
    sel = loss_positions(loss_mask, valid).bool()  # (B, L)
    f_next = shift_left(target_features)[sel]  # (N, h)
    with torch.no_grad():
        target_probs = torch.softmax(lm_head(f_next).float(), dim=-1)  # (N, V)
    ones = torch.ones(f_next.shape[0], device=f_next.device)
    feature_sets = [input_features]
    terms = []
    for s in range(1, steps + 1):
        g = hca_step(draft, feature_sets, token_embeds, position_ids, valid)  # (B, L, h)
        g_sel = g[sel]  # (N, h)
        terms.append(step_loss(g_sel, f_next, target_probs, lm_head(g_sel), ones, weights))
        if s < steps:
            feature_sets.append(shift_right(g, input_features[:, :1]).detach().to(input_features.dtype))
    return terms


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype the attention runs in: the autocast dtype when autocast is on, else the input's."""
    device = x.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype
