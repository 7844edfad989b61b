"""The EAGLE-2 dynamic draft tree as pure tensor functions (docs/METHOD.md section 5).

Candidates are numbered level by level (level 1 first), so a parent always has a smaller index than its
children. ``select_tree`` keeps the best-scoring candidates; ``Tree`` then carries everything verification
needs: node tokens, parents, depths, the ancestor-or-self mask and the root-to-leaf paths.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Tree:
    """N nodes, node 0 = root (the last accepted token, whose target KV does not exist yet)."""

    tokens: torch.Tensor  # (N,) token ids
    parents: torch.Tensor  # (N,) parent node index, -1 for the root; parents[n] < n
    depths: torch.Tensor  # (N,) root 0
    mask: torch.Tensor  # (N, N) bool, mask[i, j] = j is i or an ancestor of i
    paths: torch.Tensor  # (P, max_depth + 1) node indices root -> leaf, padded with -1
    host_parents: list[int]  # parents and tokens as build_tree read them to the host, once
    host_tokens: list[int]

    @property
    def size(self) -> int:
        return self.tokens.numel()

    @property
    def host_depth(self) -> int:
        """The deepest node's depth (0 for the root alone), from the host copy of the parents: no device read."""
        depth = [0] * len(self.host_parents)
        for n, parent in enumerate(self.host_parents[1:], start=1):
            depth[n] = depth[parent] + 1
        return max(depth)

    @property
    def internal(self) -> list[int]:
        """Nodes with at least one child, ascending (from the host copy: no device read)."""
        return sorted(set(self.host_parents[1:]))


def select_tree(
    root_token: int,
    cand_tokens: torch.Tensor,  # (M,)
    cand_scores: torch.Tensor,  # (M,) cumulative log-probabilities under the draft
    cand_parents: torch.Tensor,  # (M,) candidate index of the parent, -1 = the root; cand_parents[m] < m
    total_tokens: int,
    min_log_prob: float | None = None,
) -> Tree:
    """Keep the ``total_tokens - 1`` best candidates and arrange them as a tree below the root; with
    ``min_log_prob``, only those of them whose score reaches it (the confidence bound).

    A child's score never exceeds its parent's (log q <= 0), and a stable sort breaks ties by candidate index,
    i.e. parent first, so the kept set is closed under taking ancestors, with or without the bound.
    """
    m = cand_tokens.numel()
    n_keep = min(total_tokens - 1, m)
    order = torch.sort(cand_scores, descending=True, stable=True).indices[:n_keep]
    kept = torch.sort(order).values  # (n_keep,) candidate indices, parents before children
    # candidate index -> node index (root is node 0, kept[i] is node i + 1)
    node_of = torch.full((m + 1,), -1, dtype=torch.long, device=cand_tokens.device)
    node_of[kept] = torch.arange(1, n_keep + 1, device=cand_tokens.device)
    node_of[m] = 0  # parent -1 (the root) indexes the last slot
    parent_cand = cand_parents[kept]
    parents = node_of[torch.where(parent_cand < 0, m, parent_cand)]  # -1 where an ancestor was dropped:
    parents = torch.cat([parents.new_tensor([-1]), parents])  # build_tree refuses it, on its one host read
    tokens = torch.cat([cand_tokens.new_tensor([root_token]), cand_tokens[kept]])
    if min_log_prob is None:
        return build_tree(tokens, parents)
    ok = torch.cat([torch.ones(1, dtype=torch.bool, device=tokens.device), cand_scores[kept] >= min_log_prob])
    return build_tree(tokens, parents, ok)


def build_tree(tokens: torch.Tensor, parents: torch.Tensor, keep: torch.Tensor | None = None) -> Tree:
    """Derive depths, the ancestor mask and the leaf paths from a parent array (parents[n] < n).

    ``keep``: (N,) bool, the nodes to keep (a set closed under taking parents, the root in it); the others are
    dropped and the kept ones renumbered in order. Parents, tokens (and keep) come to the host in one read (a
    GPU sync); everything else is built there and sent back, and the host copies stay in the Tree for the loop
    (hass.generation reads the tree nowhere else).
    """
    n = tokens.numel()
    parts = [parents.to(tokens.dtype), tokens] + ([] if keep is None else [keep.to(tokens.dtype)])
    both = torch.cat(parts).tolist()
    par, host_tokens = both[:n], both[n:2 * n]
    if keep is not None:
        kept = [i for i in range(n) if both[2 * n + i]]
        if len(kept) < n:
            new_index = {old: new for new, old in enumerate(kept)}
            if kept[0] != 0 or any(par[i] >= 0 and par[i] not in new_index for i in kept):
                raise ValueError("keep must hold the root and every kept node's parent")
            par = [-1 if par[i] < 0 else new_index[par[i]] for i in kept]
            host_tokens = [host_tokens[i] for i in kept]
            n = len(kept)
            tokens = torch.tensor(host_tokens, dtype=tokens.dtype, device=tokens.device)
            parents = torch.tensor(par, dtype=parents.dtype, device=parents.device)
    depth = [0] * n
    anc = torch.zeros(n, n, dtype=torch.bool)
    anc[0, 0] = True
    for i in range(1, n):
        p = par[i]
        if not 0 <= p < i:
            raise ValueError(f"node {i} has parent {p}: parents must precede children")
        depth[i] = depth[p] + 1
        anc[i] = anc[p]
        anc[i, i] = True
    is_leaf = [True] * n
    for i in range(1, n):
        is_leaf[par[i]] = False
    max_depth = max(depth)
    paths = []
    for leaf in (i for i in range(n) if is_leaf[i]):
        path = [leaf]
        while par[path[-1]] >= 0:
            path.append(par[path[-1]])
        path.reverse()
        paths.append(path + [-1] * (max_depth + 1 - len(path)))
    device = tokens.device
    return Tree(
        tokens=tokens,
        parents=parents.to(device),
        depths=torch.tensor(depth, device=device),
        mask=anc.to(device),
        paths=torch.tensor(paths, device=device),
        host_parents=par,
        host_tokens=host_tokens,
    )


def children_lists(parents: torch.Tensor | list[int]) -> list[list[int]]:
    """children[n] = child node indices of n, in node order (the draft's ranking among siblings)."""
    par = parents if isinstance(parents, list) else parents.tolist()
    children: list[list[int]] = [[] for _ in par]
    for i, p in enumerate(par):
        if p >= 0:
            children[p].append(i)
    return children
