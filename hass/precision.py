"""Which precision is fast for the draft on a given device.

The draft only proposes tokens, so its precision never changes the output (the target verifies every token in
its own dtype). It does change the speed, and which dtype is faster depends on the hardware: bf16 matrix products
run on AMX tiles or AVX512-BF16 on recent Intel and AMD server CPUs (several times faster than fp32 there), but
on a CPU without them (AVX2 only: most laptops, older servers) PyTorch emulates bf16, and whether that beats
fp32 depends on the shapes (measured on one AVX2 CPU: faster for the 8/4/2 tree's drafting, slower for 60/6/10).
``"auto"`` is a heuristic (bf16 only with bf16 units); ``evaluation.cycle_cost --draft-dtype bf16,fp32`` measures.
"""
from __future__ import annotations

import platform
from pathlib import Path

import torch

DTYPE_NAMES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def bf16_is_fast(device: str | torch.device = "cpu") -> bool:
    """True where bf16 matrix products beat fp32: a CUDA GPU with bf16 support, or a CPU with AMX tiles or
    AVX512-BF16 instructions."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    cpu = torch.cpu
    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(getattr(cpu, name, lambda: False)() for name in checks)


def cpu_name() -> str:
    """The processor's model name (/proc/cpuinfo where there is one, else ``platform.processor()``). The same
    name can cover CPUs with and without bf16 units: record :func:`bf16_is_fast` and the torch CPU capability
    beside it."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


def fast_draft_dtype(device: str | torch.device = "cpu") -> torch.dtype:
    """bf16 where :func:`bf16_is_fast`, else fp32."""
    return DTYPE_NAMES[resolve_dtype_name("auto", device)]


def resolve_dtype_name(name: str, device: str | torch.device = "cpu") -> str:
    """A dtype name (bf16 | fp16 | fp32), with ``auto`` replaced by the fast draft dtype of ``device``."""
    if name == "auto":
        return "bf16" if bf16_is_fast(device) else "fp32"
    if name not in DTYPE_NAMES:
        raise ValueError(f"unknown dtype {name!r}; choose one of {', '.join(DTYPE_NAMES)} or auto")
    return name
