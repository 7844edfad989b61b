"""Training losses of the draft (docs/METHOD.md section 2), pure functions of tensors.

Positions: the draft output g_t at position t estimates the target feature f_{t+1}; its next-token
distribution q_{t+1} = softmax(W g_t) is scored against the target's p_{t+1} = softmax(W f_{t+1}).
Every term is a masked mean over positions, dividing by (mask.sum() + 1e-5) like the reference, so an
all-masked batch gives 0 rather than NaN.

    L = L_reg + 0.1 * L_cls + w * L_topK      (w = 0 is the EAGLE loss, w = 1 is HASS's HOD)
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

EPS = 1e-5


@dataclass(frozen=True)
class LossWeights:
    """Weights of the loss terms. ``hod`` is HASS's w (0 turns HOD off); ``top_k`` is its K."""

    cls: float = 0.1
    hod: float = 1.0
    top_k: int = 10

    def __post_init__(self):
        if self.cls < 0 or self.hod < 0:
            raise ValueError(f"loss weights must be >= 0, got cls={self.cls}, hod={self.hod}")
        if not isinstance(self.top_k, int) or self.top_k < 1:
            raise ValueError(f"HOD top_k must be an int >= 1, got {self.top_k!r}")


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """sum(values * mask) / (sum(mask) + 1e-5); values and mask share their shape (*)."""
    mask = mask.to(values.dtype)
    return (values * mask).sum() / (mask.sum() + EPS)


def loss_positions(loss_mask: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Positions that carry a loss: assistant tokens (m_t = 1) whose next position exists.

    loss_mask, valid: (B, T), valid = 1 on real tokens, 0 on right padding. The last real position of
    each sequence has no f_{t+1} and is dropped. Returns (B, T) float.
    """
    has_next = torch.zeros_like(valid, dtype=torch.bool)
    has_next[:, :-1] = valid[:, 1:].bool()
    return (loss_mask.bool() & valid.bool() & has_next).float()


def shift_left(x: torch.Tensor) -> torch.Tensor:
    """x_{t+1} at position t along dim 1, the last position zero-filled: (B, T, *) -> (B, T, *)."""
    out = torch.zeros_like(x)
    out[:, :-1] = x[:, 1:]
    return out


def regression_loss(g: torch.Tensor, f_next: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """L_reg: SmoothL1 (beta 1) between g_t and f_{t+1}, mean over the hidden dim, masked mean over t."""
    per_pos = F.smooth_l1_loss(g.float(), f_next.float(), reduction="none", beta=1.0).mean(-1)  # (*)
    return masked_mean(per_pos, mask)


def soft_cross_entropy(target_probs: torch.Tensor, draft_logp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """L_cls = -masked_mean_t sum_v p_{t+1}(v) log q_{t+1}(v); probs/logp (*, V)."""
    return masked_mean(-(target_probs * draft_logp).sum(-1), mask)


def top_k_loss(target_probs: torch.Tensor, draft_logp: torch.Tensor, mask: torch.Tensor, k: int,
               target_top: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """HOD: the soft CE restricted to the target's top-k tokens, with no renormalisation of p or q.

    The dynamic tree keeps only the draft's best-ranked candidates, so what matters is that the draft
    ranks the target's likely tokens right; the tail of the vocabulary is ignored. ``target_top`` is
    ``target_probs.topk(k)`` when the caller already has it (HCA scores every step against the same p).
    """
    top_p, top_idx = target_top if target_top is not None else target_probs.topk(min(k, target_probs.shape[-1]), dim=-1)
    return masked_mean(-(top_p * draft_logp.gather(-1, top_idx)).sum(-1), mask)


def top1_accuracy(target_probs: torch.Tensor, draft_logp: torch.Tensor, mask: torch.Tensor,
                  target_ids: torch.Tensor | None = None) -> torch.Tensor:
    """Share of loss positions where the draft's argmax equals the target's argmax (no gradient).

    ``target_ids`` is the target's argmax when the caller already has it (the first column of its top-k).
    """
    target_ids = target_probs.argmax(-1) if target_ids is None else target_ids
    hit = (draft_logp.argmax(-1) == target_ids).float()
    return masked_mean(hit, mask).detach()


def step_loss(
    g: torch.Tensor,  # (*, h) draft outputs g_t
    f_next: torch.Tensor,  # (*, h) target features f_{t+1}
    target_probs: torch.Tensor,  # (*, V) p_{t+1}
    draft_logits: torch.Tensor,  # (*, V) W g_t
    mask: torch.Tensor,  # (*) 1 where the position carries a loss
    weights: LossWeights,
    target_top: tuple[torch.Tensor, torch.Tensor] | None = None,  # target_probs.topk(weights.top_k), if known
) -> dict[str, torch.Tensor]:
    """All terms of one aligning step: {"loss", "reg", "cls", "topk", "acc"}; only "loss" needs a gradient."""
    draft_logp = F.log_softmax(draft_logits.float(), dim=-1)
    reg = regression_loss(g, f_next, mask)
    cls = soft_cross_entropy(target_probs, draft_logp, mask)
    topk = top_k_loss(target_probs, draft_logp, mask, weights.top_k, target_top)
    loss = reg + weights.cls * cls
    if weights.hod > 0:
        loss = loss + weights.hod * topk
    return {"loss": loss, "reg": reg.detach(), "cls": cls.detach(), "topk": topk.detach(),
            "acc": top1_accuracy(target_probs, draft_logp, mask,
                                 target_top[1][..., 0] if target_top is not None else None)}


def feature_noise(features: torch.Tensor, lengths: torch.Tensor, generator: torch.Generator | None = None,
                  scale: float = 0.2) -> torch.Tensor:
    """EAGLE's input augmentation: f + (U[0,1) - 0.5) * scale * 512 / L, L = each sample's length.

    features (B, T, h), lengths (B,). Applied to the features fed to the draft only, never to targets.
    """
    u = torch.rand(features.shape, generator=generator, device=features.device, dtype=torch.float32)
    amplitude = scale * 512.0 / lengths.to(device=features.device, dtype=torch.float32).clamp(min=1)  # (B,)
    return (features.float() + (u - 0.5) * amplitude[:, None, None]).to(features.dtype)
