"""Verification of a draft tree against one target forward (docs/METHOD.md section 6).

Terms (as in vLLM's rejection sampler): *accepted* tokens are drafted tokens the target agrees with; the
*bonus* token is the one the target itself picks after the last accepted node (from the residual
distribution after rejections, or from its plain distribution at a leaf). Each cycle therefore adds
(accepted + 1) tokens, and the output is distributed exactly as the target's own decoding.
"""
from __future__ import annotations

from typing import NamedTuple

import torch

from .config import SamplingConfig
from .tree import Tree, children_lists


def process_logits(logits: torch.Tensor, sampling: SamplingConfig, sync_free: bool | None = None) -> torch.Tensor:
    """Target logits (..., V) -> the processed sampling distribution: temperature, then top-k, then top-p.

    The same order and boundary rules as transformers' logits warpers, so ``temperature/top_k/top_p`` mean
    what they mean in ``generate``. With both top-k and top-p, only the k kept logits are processed; a row
    whose k-th value is tied (more than k tokens kept) takes the full sort instead. On the CPU the tie check is
    read on the host (free there) and the full sort runs only when a tie occurs; elsewhere (``sync_free``,
    default: off the CPU) both are computed and selected per row on the device, so the cycle reads nothing.
    """
    x = logits.float() / sampling.temperature
    if 0 < sampling.top_k < x.shape[-1] and sampling.top_p < 1.0:
        fast, tie = _top_k_then_p(x, sampling.top_k, sampling.top_p)
        if sync_free if sync_free is not None else x.device.type != "cpu":
            return torch.where(tie.unsqueeze(-1), _full_top_k_top_p(x, sampling), fast)
        if not bool(tie.any()):
            return fast
        return torch.where(tie.unsqueeze(-1), _full_top_k_top_p(x, sampling), fast)
    return _full_top_k_top_p(x, sampling)


def _full_top_k_top_p(x: torch.Tensor, sampling: SamplingConfig) -> torch.Tensor:
    """Temperature-scaled logits -> probabilities, top-k by masking and top-p by a sort of the whole row."""
    if sampling.top_k > 0:
        kth = torch.topk(x, min(sampling.top_k, x.shape[-1]), dim=-1).values[..., -1:]
        x = x.masked_fill(x < kth, float("-inf"))
    if sampling.top_p < 1.0:
        sorted_x, order = torch.sort(x, dim=-1, descending=False)
        cum = sorted_x.softmax(-1).cumsum(-1)
        drop_sorted = cum <= 1.0 - sampling.top_p
        drop_sorted[..., -1] = False  # always keep the most likely token
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        x = x.masked_fill(drop, float("-inf"))
    return x.softmax(-1)


def _top_k_then_p(x: torch.Tensor, k: int, top_p: float) -> tuple[torch.Tensor, torch.Tensor]:
    """process_logits' top-k then top-p on the k kept entries only (no sort of the whole vocabulary: 1.5 ms a
    row for SmolLM2's 49,152 on a 2-core CPU), and per row whether a tie at the k-th value keeps more than k
    tokens (where the result is not the warpers' and the full path must be taken)."""
    values, ids = torch.topk(x, k, dim=-1)  # descending
    tie = (x >= values[..., -1:]).sum(-1) != k
    values, ids = values.flip(-1), ids.flip(-1)  # ascending, as the full path sorts
    drop = values.softmax(-1).cumsum(-1) <= 1.0 - top_p
    drop[..., -1] = False  # always keep the most likely token
    probs = values.masked_fill(drop, float("-inf")).softmax(-1)
    return torch.zeros_like(x).scatter(-1, ids, probs), tie


def sample(probs: torch.Tensor, generator: torch.Generator | None) -> int:
    return int(torch.multinomial(probs, 1, generator=generator))


class NodeLogits:
    """The target's logits at tree nodes, projected from its features only where verification reads them.

    Verification reads the logits of internal nodes (a drafted child is checked against its parent's), plus
    one more row: the bonus token's, at the last accepted node, which may be a leaf. ``prefetch`` projects a
    set of rows in one product (the internal nodes, before verifying); ``rows`` projects any still missing.
    Made from full logits (N, V), it only indexes them.
    """

    def __init__(self, features: torch.Tensor | None = None, lm_head=None, logits: torch.Tensor | None = None):
        self.features, self.lm_head, self.full = features, lm_head, logits  # features (N, h) or logits (N, V)
        self.cache: dict[int, torch.Tensor] = {}
        self.projected = 0  # rows put through lm_head, for tests and profiles

    @classmethod
    def of(cls, logits) -> "NodeLogits":
        return logits if isinstance(logits, NodeLogits) else cls(logits=logits)

    def rows_at(self, index: torch.Tensor) -> torch.Tensor:
        """(len(index), V) fp32 logits of the nodes in a device tensor, projected without reading it."""
        if self.full is not None:
            return self.full.index_select(0, index).float()
        self.projected += index.numel()
        return self.lm_head(self.features.index_select(0, index)).float()

    def prefetch(self, nodes: list[int]) -> None:
        self.rows(nodes)

    def rows(self, nodes: list[int]) -> torch.Tensor:
        """(len(nodes), V) fp32 logits of these nodes."""
        if self.full is not None:
            return self.full[torch.as_tensor(nodes, dtype=torch.long, device=self.full.device)].float()
        missing = [n for n in dict.fromkeys(nodes) if n not in self.cache]
        if missing:
            idx = torch.tensor(missing, dtype=torch.long, device=self.features.device)
            out = self.lm_head(self.features[idx]).float()
            self.projected += len(missing)
            for n, row in zip(missing, out):
                self.cache[n] = row
        if not nodes:
            return torch.empty(0, 0)
        return torch.stack([self.cache[n] for n in nodes])


def internal_nodes(tree: Tree) -> list[int]:
    """Nodes with at least one child, ascending: the ones whose logits verification always reads."""
    return tree.internal if tree.size > 1 else []


class Verdict(NamedTuple):
    """What a verification accepted: node indices root first (on the device, and as a host list) and the bonus
    token the target adds after them."""

    nodes: torch.Tensor
    path: list[int]
    bonus: int


def verify_greedy(tree: Tree, logits: torch.Tensor | NodeLogits, bonus_on_device: bool = False) -> Verdict:
    """Longest root-to-leaf prefix on which every drafted token equals the target's argmax at its parent.

    logits: (N, V) target logits at the tree nodes, or a NodeLogits that projects only the internal nodes and
    the last accepted one.

    One host read (a GPU sync) brings the accepted path and the bonus token back together. The bonus comes
    from the last accepted node's row: an internal node's is projected already; a leaf's is projected after
    that read (a second one) or, with ``bonus_on_device``, before it, on the device, whichever node it is (one
    lm_head row more per cycle, cheap on a GPU, where each read stalls the queue).
    """
    logits = NodeLogits.of(logits)
    internal = internal_nodes(tree)
    device = tree.tokens.device
    pred = torch.full((tree.size,), -1, dtype=torch.long, device=device)
    if internal:
        pred[torch.tensor(internal, device=device)] = logits.rows(internal).argmax(-1).to(device)
    paths = tree.paths  # (P, D + 1)
    drafted = paths[:, 1:]  # (P, D)
    match = (tree.tokens[drafted.clamp(min=0)] == pred[paths[:, :-1].clamp(min=0)]) & (drafted >= 0)
    n_acc = match.int().cumprod(dim=1).sum(dim=1)  # (P,) accepted drafts per path
    best = n_acc.argmax()[None]  # (1,); indexing with tensors, never a 0-d one (that reads it to the host)
    path, n = paths.index_select(0, best)[0], n_acc.index_select(0, best)  # (D + 1,), (1,)
    last = path.gather(0, n)  # (1,) the last accepted node
    bonus = pred[last]
    if bonus_on_device:
        leaf_choice = logits.rows_at(last).argmax(-1).to(device)
        bonus = torch.where(bonus >= 0, bonus, leaf_choice)
    host = torch.cat([n.long(), bonus.long(), path.long()]).tolist()
    n, bonus, host_path = host[0], host[1], host[2:3 + host[0]]
    if bonus < 0:
        bonus = int(logits.rows([host_path[-1]])[0].argmax())
    return Verdict(path[: n + 1], host_path, bonus)


def verify_sampling(
    tree: Tree, logits: torch.Tensor, sampling: SamplingConfig, generator: torch.Generator | None = None
) -> Verdict:
    """Multi-draft speculative sampling with deterministic (one-hot) drafts; ``logits`` as in verify_greedy.

    At the current node, try its children in the draft's order: accept child x with probability p(x) under
    the current residual p; on rejection set p(x) = 0 and renormalise. If every child is rejected the bonus
    token is drawn from the residual; at a leaf it is drawn from the processed target distribution there.
    Each emitted token is then distributed exactly as p (docs/METHOD.md section 6).
    """
    logits = NodeLogits.of(logits)
    children = children_lists(tree.host_parents)
    tokens = tree.host_tokens

    def probs_at(n: int) -> torch.Tensor:  # processed only on the rows visited (a top-p sort per row)
        return process_logits(logits.rows([n])[0], sampling)

    node, path = 0, [0]
    while True:
        p = probs_at(node)
        kids = children[node]
        if not kids:
            return Verdict(torch.tensor(path, device=tree.tokens.device), path, sample(p, generator))
        p = p.clone()
        for child in kids:
            x = tokens[child]
            mass = p.sum()
            u = torch.rand((), generator=generator, device=p.device)
            if u * mass < p[x]:  # accept with probability p(x) / mass, the renormalised residual
                node = child
                path.append(child)
                break
            p[x] = 0.0
        else:
            if p.sum() <= 0:  # every token with mass was drafted and (numerically) rejected
                p = probs_at(node)
            return Verdict(torch.tensor(path, device=tree.tokens.device), path, sample(p / p.sum(), generator))
