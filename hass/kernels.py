"""Faster CPU matrix products for a target's linear layers, with the same weights.

On a CPU, ``F.linear`` re-lays out the weight for every call; oneDNN can keep a copy packed in its own layout
once (``torch.utils.mkldnn``). Measured on a 2-core AVX512-BF16 EPYC with SmolLM2-135M in fp32 (``python -m
evaluation.kernel_bench``), the packed products make an 8- to 60-token forward 1.2-1.7x faster, while a
1-token forward is not faster (oneDNN's reorder of the activation costs more than it saves at one row). So
:class:`PackedLinear` keeps both: the plain weight for inputs of fewer than ``min_rows`` rows (the one-token
steps of plain decoding and the draft's consume) and the packed copy for the rest (tree forwards, prefills).
Both compute the same product in the same precision; only the summation order differs, as between any two
kernels, so greedy output stays the target's own (tests/test_kernels.py).
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.mkldnn import MkldnnLinear


_ENABLED = [True]


@contextmanager
def plain_kernels() -> Iterator[None]:
    """Inside this block every PackedLinear computes with the plain product: e.g. to time transformers' own
    ``generate`` on a model whose layers are packed, with the kernels it would have had."""
    _ENABLED.append(False)
    try:
        yield
    finally:
        _ENABLED.pop()


class PackedLinear(nn.Module):
    """An inference-only ``nn.Linear`` with a oneDNN-packed copy of its weight for inputs of >= min_rows rows."""

    def __init__(self, linear: nn.Linear, min_rows: int = 2):
        super().__init__()
        self.in_features, self.out_features, self.min_rows = linear.in_features, linear.out_features, min_rows
        self.weight = linear.weight  # shared, not copied: ties (lm_head = embedding) and state dicts stay intact
        self.bias = linear.bias
        with torch.no_grad():
            self.packed = MkldnnLinear(linear, linear.weight.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (not _ENABLED[-1] or x.dim() < 2 or x.numel() // x.shape[-1] < self.min_rows or x.requires_grad
                or x.dtype != self.weight.dtype):
            return F.linear(x, self.weight, self.bias)
        shape = x.shape
        return self.packed(x.reshape(-1, shape[-1])).reshape(*shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, min_rows={self.min_rows}"


def can_pack(model: nn.Module) -> bool:
    """oneDNN packing applies to CPU models in fp32 or bf16 on a PyTorch built with it."""
    p = next(model.parameters())
    return p.device.type == "cpu" and p.dtype in (torch.float32, torch.bfloat16) and torch.backends.mkldnn.is_available()


def pack_linears(model: nn.Module, min_rows: int = 2) -> int:
    """Replace every ``nn.Linear`` of ``model`` (lm_head included) by a :class:`PackedLinear`; returns how many.

    Inference only (the packed copy has no gradient). Raises ValueError where packing does not apply."""
    if not can_pack(model):
        raise ValueError("oneDNN packing needs a CPU model in fp32 or bf16 and a PyTorch built with mkldnn")
    count = 0
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if type(child) is nn.Linear:
                setattr(module, name, PackedLinear(child, min_rows))
                count += 1
    return count
