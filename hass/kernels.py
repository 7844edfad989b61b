"""Faster CPU matrix products for a target's linear layers, with the same weights.

On a CPU, ``F.linear`` re-lays out the weight for every call; oneDNN can keep a copy packed in its own layout
once. Measured with SmolLM2-135M in fp32 (``python -m evaluation.kernel_bench``): on a 2-core AVX512-BF16 EPYC
the packed products (then ``torch.utils.mkldnn.MkldnnLinear``) made an 8- to 60-token forward 1.2-1.7x faster;
on a 2-core AVX2 EPYC ``MkldnnLinear`` was slower than the plain product (147 vs 135 ms for 8 tokens) and the
dense-tensor product with a pre-reordered weight (``torch.ops.mkldnn._linear_pointwise``, what inductor's
freezing emits; used now, MkldnnLinear the fallback) is 1.3-1.5x faster (87-97 vs 128 ms), and 1.1x for one
token (61.5 vs 69.1 ms). So :class:`PackedLinear` uses the packed copy from ``min_rows`` rows on: 1 with the
reordered-weight product, 2 with MkldnnLinear (whose activation conversion made a one-row product slower), the
plain weight below. Both compute the same product in the same precision; only the summation order differs, as
between any two kernels, so greedy output stays the target's own (tests/test_kernels.py); vanilla decoding
through HassModel uses the same kernels. bf16 packing needs oneDNN's bf16 on the CPU (AVX512-BW/VL/DQ or
AVX-NE-CONVERT), which AVX2-only CPUs lack.

For a target converted from a 4- or 8-bit GGUF, :func:`pack_affine_linears` goes further (hass.affine: the products
run on the weights' codes, the same fp32 values decoded on the fly); ``cpu_kernels="auto"`` picks that where the
C++ product builds, with oneDNN for the layers that have no such form.
"""
from __future__ import annotations

import copy
from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.mkldnn import MkldnnLinear


_ENABLED = [True]


def kernels_enabled() -> bool:
    """False inside :func:`plain_kernels`."""
    return _ENABLED[-1]


@contextmanager
def plain_kernels() -> Iterator[None]:
    """Inside this block every PackedLinear (and hass.affine.AffineLinear) computes with the plain product: e.g. to
    time transformers' own ``generate`` on a model whose layers are packed, with the kernels it would have had."""
    _ENABLED.append(False)
    try:
        yield
    finally:
        _ENABLED.pop()


def _pointwise_available() -> bool:
    """Whether this PyTorch has oneDNN's dense-tensor linear with a pre-reordered weight (what inductor's
    freezing pass emits on CPU); older builds fall back to ``MkldnnLinear``."""
    ops = getattr(torch.ops, "mkldnn", None)
    try:
        return bool(ops is not None and ops._linear_pointwise and ops._reorder_linear_weight)
    except (AttributeError, RuntimeError):
        return False


# the row count the packed layout is tuned for: oneDNN picks its blocking from it. 8 (a small tree) measured best
# over 8- to 60-row forwards on a 2-core AVX2 EPYC (SmolLM2, fp32: 93 / 204 ms against 121 / 240 packed for 1 row)
PACK_ROWS = 8


class PackedLinear(nn.Module):
    """An inference-only ``nn.Linear`` with a oneDNN-packed copy of its weight for inputs of >= min_rows rows.

    The packed copy is reordered once for oneDNN (``torch.ops.mkldnn._reorder_linear_weight``, tuned for
    ``PACK_ROWS`` rows) and multiplied with dense inputs and outputs (``_linear_pointwise``): no conversion of
    the activations to oneDNN's tensor type, which is what made ``MkldnnLinear`` (the fallback on a PyTorch
    without these ops) slower than the plain product for small trees on AVX2.
    """

    def __init__(self, linear: nn.Linear, min_rows: int | None = None):
        """``min_rows`` None: 1 with the reordered-weight product (a one-token SmolLM2 step 61.5 instead of 69.1 ms
        on 2 AVX2 cores), 2 with MkldnnLinear (its activation conversion cost more than it saved at one row)."""
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight = linear.weight  # shared, not copied: ties (lm_head = embedding) and state dicts stay intact
        self.bias = linear.bias
        self.pointwise = _pointwise_available()
        with torch.no_grad():
            if self.pointwise:
                try:
                    self.packed = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach(), PACK_ROWS)
                except RuntimeError:  # e.g. bf16 on a CPU without AVX512-BW / AVX-NE-CONVERT (an AVX2-only one)
                    self.pointwise = False
            if not self.pointwise:
                self.packed = MkldnnLinear(linear, linear.weight.dtype)
        self.min_rows = min_rows if min_rows is not None else (1 if self.pointwise else 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (not _ENABLED[-1] or x.dim() < 2 or x.numel() // x.shape[-1] < self.min_rows or x.requires_grad
                or x.dtype != self.weight.dtype):
            return F.linear(x, self.weight, self.bias)
        shape = x.shape
        flat = x.reshape(-1, shape[-1])
        if self.pointwise:
            y = torch.ops.mkldnn._linear_pointwise(flat, self.packed, self.bias, "none", [], "")
        else:
            y = self.packed(flat)
        return y.reshape(*shape[:-1], self.out_features)

    def __deepcopy__(self, memo: dict) -> "PackedLinear":
        """A copy packed again from the copied weight (oneDNN's packed tensor itself cannot be copied)."""
        linear = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None,
                           device=self.weight.device, dtype=self.weight.dtype)
        linear.weight = copy.deepcopy(self.weight, memo)
        if self.bias is not None:
            linear.bias = copy.deepcopy(self.bias, memo)
        clone = PackedLinear(linear, self.min_rows)
        clone.training = self.training
        memo[id(self)] = clone
        return clone

    @property
    def kernel(self) -> str:
        """Which packed product this layer runs: ``pointwise@PACK_ROWS`` or ``MkldnnLinear``."""
        return f"pointwise@{PACK_ROWS}" if self.pointwise else "MkldnnLinear"

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, min_rows={self.min_rows}, "
                f"{self.kernel}")


def onednn_bf16_supported() -> bool:
    """Whether oneDNN computes bf16 products on this CPU (AVX512-BW/VL/DQ or AVX-NE-CONVERT; not AVX2-only ones)."""
    check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return bool(check()) if check is not None else False


def can_pack_weight(weight: torch.Tensor) -> bool:
    """oneDNN packing applies to CPU weights in fp32, or in bf16 where oneDNN has bf16 on this CPU, on a PyTorch
    built with it."""
    dtype_ok = weight.dtype == torch.float32 or (weight.dtype == torch.bfloat16 and onednn_bf16_supported())
    return weight.device.type == "cpu" and dtype_ok and torch.backends.mkldnn.is_available()


def can_pack(model: nn.Module) -> bool:
    """:func:`can_pack_weight` for a model's parameters (their first one's dtype and device)."""
    return can_pack_weight(next(model.parameters()))


def pack_linears(model: nn.Module, min_rows: int | None = None) -> int:
    """Replace every ``nn.Linear`` of ``model`` (lm_head included) by a :class:`PackedLinear`; returns how many.

    Inference only (the packed copy has no gradient). Raises ValueError where packing does not apply."""
    if not can_pack(model):
        raise ValueError("oneDNN packing needs a CPU model in fp32 (or bf16 on a CPU where oneDNN has bf16: "
                         f"{'yes' if onednn_bf16_supported() else 'not this one'}) and a PyTorch built with mkldnn")
    count = 0
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if type(child) is nn.Linear:
                setattr(module, name, PackedLinear(child, min_rows))
                count += 1
    return count


def pack_affine_linears(model: nn.Module, fallback: bool = True) -> tuple[int, int]:
    """Replace every ``nn.Linear`` whose fp32 weight has an exact 4- or 8-bit affine form (a GGUF-derived target's,
    hass.affine) by an :class:`~hass.affine.AffineLinear`, and, with ``fallback``, pack the others for oneDNN where
    that applies. Returns (affine layers, oneDNN layers). Raises RuntimeError where the affine product cannot
    run on this machine (hass.affine.build_error)."""
    from . import affine

    affine.load()
    onednn = can_pack(model)
    counts = [0, 0]
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if type(child) is not nn.Linear:
                continue
            packed = affine.AffineLinear.from_linear(child)
            if packed is not None:
                setattr(module, name, packed)
                counts[0] += 1
            elif fallback and onednn and can_pack_weight(child.weight):
                setattr(module, name, PackedLinear(child))
                counts[1] += 1
    return counts[0], counts[1]


def apply_cpu_kernels(model: nn.Module, kernels: str) -> None:
    """Put a resolved kernel choice (:func:`resolve_cpu_kernels`) on a model's linear layers: ``"onednn"`` packs
    them all (raising where packing does not apply), ``"affine"`` packs those with an exact affine form and the
    rest for oneDNN, ``"default"`` leaves them. For a draft (trained fp32 or bf16 weights), call it only where
    :func:`can_pack` holds; under ``"affine"`` its layers end up on oneDNN."""
    if kernels == "onednn":
        pack_linears(model)
    elif kernels == "affine":
        pack_affine_linears(model)
    elif kernels != "default":
        raise ValueError(f"unresolved cpu_kernels {kernels!r}")


def pack_draft(draft: nn.Module | None, kernels: str) -> None:
    """A draft follows its target's resolved kernels: on oneDNN in its own dtype where oneDNN has it, under
    ``"onednn"`` and ``"affine"`` alike (trained weights have no affine form); plain under ``"default"``."""
    if kernels != "default" and draft is not None and can_pack(draft):
        pack_linears(draft)


def kernel_names(model: nn.Module) -> list[str]:
    """The products a model's packed layers run, e.g. ``["affine4", "pointwise@8/1"]`` (empty: all plain)."""
    from .affine import AffineLinear

    names = set()
    for m in model.modules():
        if isinstance(m, PackedLinear):
            names.add(f"{m.kernel}/{m.min_rows}")
        elif isinstance(m, AffineLinear):
            names.add(m.kernel)
    return sorted(names)


def kernels_of(model: nn.Module) -> str:
    """Which ``cpu_kernels`` setting a model's layers show: affine, onednn or default."""
    names = kernel_names(model)
    if any(n.startswith("affine") for n in names):
        return "affine"
    return "onednn" if names else "default"


CPU_KERNELS = ("auto", "default", "onednn", "affine")


def resolve_cpu_kernels(name: str, device: str | torch.device, dtype: torch.dtype, device_map=None,
                        flag: str = "cpu_kernels") -> str:
    """Check a ``cpu_kernels`` setting against where the target runs and return what will run.

    ``"auto"`` -> ``"affine"`` for an fp32 target on the CPU where the affine product builds (hass.affine: exact
    fp32 products on the packed codes of a GGUF-derived target, oneDNN for the layers without that form; on the
    2-core AVX2 EPYC SmolLM2's 210 decoder products took 15 instead of 46 ms a token), else ``"onednn"`` for an
    fp32 target on the CPU (with one warning naming why the affine product could not build), else ``"default"``.
    bf16 stays on the default kernels under "auto" (packed bf16 was slower on the AVX512-BF16 CPU measured), and
    so does a target placed by a ``device_map`` (offloaded layers keep their own modules). An explicit
    ``"onednn"`` is refused, before any weights load, off the CPU, in a dtype other than fp32 / bf16, or in bf16
    where oneDNN has no bf16 on this CPU; an explicit ``"affine"`` off the CPU, in a dtype other than fp32, or where
    its product cannot build here (the reason named). ``flag`` names the setting in the error (``"--cpu-kernels"``
    for the command lines)."""
    from . import affine

    if name not in CPU_KERNELS:
        raise ValueError(f"{flag} must be one of {', '.join(CPU_KERNELS)}, got {name!r}")
    on_cpu = torch.device(device).type == "cpu"
    if name == "auto":
        fast = on_cpu and device_map is None and dtype == torch.float32 and torch.backends.mkldnn.is_available()
        if not fast:
            return "default"
        return "affine" if affine.available() else "onednn"
    if name == "affine":
        if not on_cpu or dtype != torch.float32 or device_map is not None:
            raise ValueError(f"{flag} affine multiplies fp32 weights on the CPU (no device_map), not {dtype} on "
                             f"{device}")
        try:
            affine.load()
        except RuntimeError as exc:
            raise ValueError(f"{flag} affine: {exc}; use {flag} onednn") from exc
    if name == "onednn":
        if not on_cpu or dtype not in (torch.float32, torch.bfloat16):
            raise ValueError(f"{flag} onednn packs fp32 / bf16 weights on the CPU, not {dtype} on {device}")
        if dtype == torch.bfloat16 and not onednn_bf16_supported():
            raise ValueError(f"{flag} onednn in bf16 needs a CPU where oneDNN has bf16 (AVX512-BW/VL/DQ or "
                             f"AVX-NE-CONVERT); this one has not: use fp32 or {flag} default")
    return name
