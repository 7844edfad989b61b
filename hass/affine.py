"""Exact fp32 products for weights that came from a 4- or 8-bit GGUF: integer codes plus an affine map per block.

A target converted from a GGUF (hass.zoo: SmolLM2 from Q4_1, Qwen2.5-Coder from Q4_K_M) is an fp32 model whose
weights are not arbitrary: inside every block of 32 consecutive values of a row, each value is exactly
``fma(scale, code, offset)`` for a small integer code (0..15 for Q4_0 / Q4_1 / Q4_K layers, 0..255 for Q8_0 ones;
SmolLM2's decoder layers are the former, its tied embedding / lm_head the latter). :func:`pack_affine` finds that
structure, stores the codes (4 or 8 bits) with one fp32 scale and offset per block, and checks that decoding
gives back every weight bit for bit; a matrix where any block fails is left as it is. :class:`AffineLinear`
multiplies with the packed form (the C++ product in ``csrc/affine.cpp``, built once per machine with the
compiler PyTorch's extension builder finds, cached): it decodes the very same fp32 weights on the fly and sums in
fp32, so it is exact fp32 arithmetic like any other kernel (only the summation order is its own, and that order
does not depend on how many rows a call has), while reading 0.75 or 1.25 bytes a weight instead of 4. A one-token
step of a memory-bound CPU decode reads every weight once; this is where its time goes. The loops are built for
AVX2 + FMA (the default) and for AVX-512 (``HASS_AFFINE_ISA=avx512`` where the CPU has it: a one-token SmolLM2 step
10% faster, an 8-token tree verification 7% slower on a 2-core EPYC, outputs/results/kernel_bench_affine_avx512;
:func:`isa`).

This is not quantization: the model is the fp32 one, unchanged; a matrix without the structure (a trained draft,
a model that was never quantized) is simply not packed.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .kernels import kernels_enabled

BLOCK = 32
SOURCE = Path(__file__).with_name("csrc") / "affine.cpp"
_STATE: dict = {}


def _cache_dir() -> Path:
    root = Path(os.environ.get("HASS_CACHE") or "~/.cache/hass").expanduser()
    key = hashlib.sha256(SOURCE.read_bytes() + torch.__version__.encode()).hexdigest()[:12]
    return root / "extensions" / f"affine-{key}"


def cpu_supported() -> bool:
    """The product is written for AVX2 + FMA (every x86-64 CPU of the last decade; PyTorch reports AVX2 or AVX512)."""
    return torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512")


def build_error() -> str | None:
    """Why the product cannot run here (None where it can): a CPU without AVX2, no C++ compiler or ninja."""
    if not cpu_supported():
        return f"this CPU's capability is {torch.backends.cpu.get_cpu_capability()}, the product needs AVX2"
    if not SOURCE.is_file():
        return f"{SOURCE} is missing from this installation"
    if shutil.which(os.environ.get("CXX", "c++")) is None and shutil.which("g++") is None:
        return "no C++ compiler (c++ / g++) on PATH"
    try:
        import ninja  # noqa: F401  (torch's extension builder needs it)
    except ImportError:
        if shutil.which("ninja") is None:
            return "ninja is not installed (pip install ninja)"
    return None


def load() -> float:
    """Build (first time on a machine: about a minute on 2 cores) or load the C++ product; returns the seconds it
    took. Raises RuntimeError naming the reason where it cannot run (:func:`build_error`, or the compiler's)."""
    if "seconds" in _STATE:
        return 0.0
    reason = build_error()
    if reason:
        raise RuntimeError(f"hass.affine: {reason}")
    from torch.utils import cpp_extension

    folder = _cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    fresh = not any(folder.glob("*.so"))
    if fresh:
        print(f"hass.affine: compiling the packed-weight product once for this machine into {folder}", flush=True)
    start = time.perf_counter()
    try:
        cpp_extension.load(name="hass_affine_ext", sources=[str(SOURCE)], build_directory=str(folder),
                           extra_cflags=["-O3", "-mavx2", "-mfma", "-fopenmp"], extra_ldflags=["-fopenmp"],
                           is_python_module=False, verbose=False)
    except Exception as exc:  # a compiler failure: the caller falls back to other kernels
        raise RuntimeError(f"hass.affine: building {SOURCE.name} failed: {str(exc).strip()[-400:]}") from exc
    _STATE["seconds"] = time.perf_counter() - start
    if fresh:
        print(f"hass.affine: compiled in {_STATE['seconds']:.0f} s (cached)", flush=True)
    return _STATE["seconds"]


def available() -> bool:
    """Whether the product runs here (building it on first use); False with the reason warned once."""
    if "seconds" in _STATE:
        return True
    if "error" not in _STATE:
        try:
            load()
            return True
        except RuntimeError as exc:
            _STATE["error"] = str(exc)
            warnings.warn(f"{exc}; the oneDNN kernels run instead", stacklevel=2)
    return False


def pack_affine(weight: torch.Tensor, bits: int = 4) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """(codes, scale, offset) such that every weight is exactly fma(scale, code, offset) within its block of 32,
    with ``bits``-bit codes (4 or 8), or None where some block has no such form (or K is not a multiple of 32).

    The offset of a block is its smallest value (code 0); the scale is searched among the fp16 values next to
    (max - min) / (2**bits - 1) (Q4_1, Q4_K) and max |w| / 127 or / 8 (Q8_0, Q4_0), the steps a GGUF's fp16 block
    scales give, then fp32 ones next to the first, and the second; a block is accepted only when
    all 32 values reconstruct exactly (the fused multiply-add emulated in fp64, which is exact here, then rounded
    to fp32 once). The caller verifies the packed form again with the C++ decoder (:func:`decode`)."""
    if bits not in (4, 8):
        raise ValueError(f"bits must be 4 or 8, got {bits}")
    if weight.dim() != 2 or weight.dtype != torch.float32 or weight.shape[1] % BLOCK or not weight.numel():
        return None
    if weight.shape[0] > 8 and _pack_blocks(weight[:8], bits) is None:  # most unstructured matrices end here
        return None
    return _pack_blocks(weight, bits)


def _pack_blocks(weight: torch.Tensor, bits: int):
    levels = 2 ** bits - 1
    with torch.no_grad():
        n, k = weight.shape
        blocks = weight.detach().cpu().reshape(-1, BLOCK)
        low, high = blocks.amin(-1), blocks.amax(-1)
        if not torch.isfinite(low).all() or not torch.isfinite(high).all():
            return None
        step = (high - low) / levels  # Q4_1 / Q4_K: the block spans all the codes
        step = torch.where(high > low, step, torch.ones_like(step))  # a constant block: any scale, code 0
        symmetric = torch.maximum(high.abs(), low.abs()) / (2 ** (bits - 1) - 1 if bits == 8 else 8)  # Q8_0 / Q4_0
        symmetric = torch.where(symmetric > 0, symmetric, step)
        candidates = []
        for guess in (step, symmetric):  # a GGUF's block scales are fp16: its neighbours first, then fp32 ones
            half = guess.half().float()
            ulp = torch.finfo(torch.float16).eps * half
            candidates += [half, half - ulp, half + ulp]
        candidates += [step * (1 + j * 2.0 ** -23) for j in (0, -1, 1, -2, 2)] + [symmetric]
        candidates = [torch.where(torch.isfinite(c) & (c > 0), c, step) for c in candidates]

        def exact(cand, part, base):
            code = ((part - base) / cand[:, None]).round_().clamp_(0, levels)
            if bool((cand.half().float() == cand).all()):  # <= 11 significant bits: the fp32 product is exact,
                rebuilt = torch.addcmul(base, cand[:, None], code)  # so one rounding, as the fused multiply-add
            else:
                rebuilt = (cand.double()[:, None] * code.double() + base.double()).float()
            return (rebuilt == part).all(-1), code

        sample = slice(0, 256)  # the guess that fits most of the first blocks goes first (one format per matrix)
        hits = [int(exact(c[sample], blocks[sample], low[sample, None])[0].sum()) for c in candidates]
        candidates = [c for _, c in sorted(zip(hits, candidates), key=lambda pair: -pair[0])]
        scale, codes = step.clone(), torch.empty(blocks.shape, dtype=torch.uint8)
        todo = torch.arange(blocks.shape[0])
        for cand in candidates:
            cand = cand[todo]
            ok, code = exact(cand, blocks[todo], low[todo, None])
            hit = todo[ok]
            scale[hit], codes[hit] = cand[ok], code[ok].to(torch.uint8)
            todo = todo[~ok]
            if not todo.numel():
                break
        if todo.numel():
            return None
        code = codes.reshape(n, k)
        if bits == 4:
            code = code[:, 0::2] | (code[:, 1::2] << 4)  # byte j: code 2j in its low nibble, 2j + 1 in its high
        device = weight.device
        return (code.contiguous().to(device), scale.reshape(n, -1).contiguous().to(device),
                low.reshape(n, -1).contiguous().to(device))


def isa(want: str = "") -> str:
    """The instruction set the product runs on in this process: "avx2" (8 lanes, the default) or "avx512" (16 lanes,
    where ``HASS_AFFINE_ISA=avx512`` is set and the CPU has AVX-512 F / BW / DQ / VL). ``isa("avx2")`` /
    ``isa("avx512")`` switches, for tests and benchmarks only: the lane count sets the summation order, so outputs
    that must agree bit for bit (a tree forward and one-token forwards) must come from one setting."""
    load()
    return torch.ops.hass_affine.isa(want)


def decode(codes: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """The fp32 weight matrix a packed form stands for, decoded by the same C++ code as the product."""
    load()
    return torch.ops.hass_affine.decode(codes, scale, offset)


def affine_linear(x: torch.Tensor, codes: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor,
                  bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear(x, decode(codes, scale, offset), bias)`` without materializing the weight (fp32, CPU)."""
    load()
    return torch.ops.hass_affine.linear(x, codes, scale, offset, bias)


class AffineLinear(nn.Module):
    """An inference-only ``nn.Linear`` whose products run on the packed form of its (unchanged) fp32 weight.

    ``weight`` stays the original parameter (ties and state dicts intact); inputs that need a gradient, are not
    fp32, or arrive inside :func:`hass.kernels.plain_kernels` take the plain product."""

    def __init__(self, linear: nn.Linear, packed: tuple[torch.Tensor, torch.Tensor, torch.Tensor]):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight, self.bias = linear.weight, linear.bias
        self.codes, self.scale, self.offset = packed
        self.bits = 4 if self.codes.shape[1] * 2 == self.in_features else 8

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> "AffineLinear | None":
        """The packed layer, or None where the weight has no exact 4- or 8-bit affine form (checked bit for bit
        against the C++ decoder) or the product cannot run here."""
        if linear.weight.device.type != "cpu" or not available():
            return None
        for bits in (4, 8):
            packed = pack_affine(linear.weight, bits)
            if packed is not None and torch.equal(decode(*packed), linear.weight.detach()):
                return cls(linear, packed)
        return None

    def rows(self, index: torch.Tensor) -> "AffineLinear":
        """The layer restricted to the outputs ``index`` (a draft vocabulary's rows of lm_head): codes, scales and
        offsets of those rows, and the matching rows of the weight for the plain path."""
        linear = nn.Linear(self.in_features, int(index.numel()), bias=self.bias is not None, device="meta")
        linear.weight = nn.Parameter(self.weight.detach()[index], requires_grad=False)
        if self.bias is not None:
            linear.bias = nn.Parameter(self.bias.detach()[index], requires_grad=False)
        return AffineLinear(linear, (self.codes[index].contiguous(), self.scale[index].contiguous(),
                                     self.offset[index].contiguous()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not kernels_enabled() or x.requires_grad or x.dtype != torch.float32 or x.device.type != "cpu":
            return F.linear(x, self.weight, self.bias)
        return torch.ops.hass_affine.linear(x, self.codes, self.scale, self.offset, self.bias)

    @property
    def kernel(self) -> str:
        return f"affine{self.bits}"

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, {self.kernel}"
