"""Target features f for draft training: computed on the fly by the trainer ("online"), or once to disk ("offline").

    python -m train.features --target path/to/target --data data/prepared.jsonl --out features/smollm2

f is the frozen target's last hidden state after the final norm (what lm_head consumes, docs/METHOD.md
section 0). Only f is stored: the trainer recomputes p = softmax(lm_head(f)) itself, which costs one
vocabulary projection per loss position and saves storing (T, V) probabilities (85x more than (T, h) for
SmolLM2). Offline pays off when the same data is seen for several epochs: the 30-layer target forward is
done once instead of every epoch.

Layout of a feature folder:
    index.json                   format, target fingerprint, data hash, shard plan (sample indices, lengths)
    shard-00000.safetensors      one (T_i, h) bf16 tensor per sample, keyed by the sample's index in the data
    ...
Resumable: every shard is written under a temporary name and renamed when complete; a restart skips the
shards that exist, so a kill loses at most the shard in progress and never leaves a partial one behind.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn
from tqdm import tqdm
from transformers import PretrainedConfig

from hass.files import atomic_path, atomic_write_text

FORMAT = "hass-features-v1"
INDEX = "index.json"
# Config keys that change with how a model was loaded or saved, not with what it computes.
_VOLATILE_KEYS = ("_name_or_path", "dtype", "torch_dtype", "transformers_version", "_attn_implementation",
                  "_attn_implementation_autoset", "architectures", "use_cache")


class FeatureStoreError(ValueError):
    """A feature folder is missing, incomplete, or was made from another target or another data file."""


def target_fingerprint(config: PretrainedConfig, name: str) -> dict:
    """Identify the target that produced features: its folder name + a hash of its architecture config."""
    d = {k: v for k, v in config.to_dict().items() if k not in _VOLATILE_KEYS}
    digest = hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()
    return {"name": Path(str(name).rstrip("/")).name, "config_sha256": digest}


def data_fingerprint(samples: list[dict]) -> str:
    """sha256 of every sample's token ids, in order: features belong to exactly this data."""
    digest = hashlib.sha256()
    for s in samples:
        digest.update(json.dumps(s["input_ids"]).encode())
    return digest.hexdigest()


@torch.no_grad()
def compute_features(
    target: nn.Module,
    input_ids: torch.Tensor,  # (B, T)
    valid: torch.Tensor,  # (B, T) 1 on tokens, 0 on right padding
) -> torch.Tensor:  # (B, T, h) in the target's dtype
    """The target's last hidden state after the final norm, f_t for every position."""
    return target.get_decoder()(input_ids=input_ids, attention_mask=valid.long()).last_hidden_state


def _plan(samples: list[dict], shard_size: int) -> list[dict]:
    shards = []
    for start in range(0, len(samples), shard_size):
        stop = min(start + shard_size, len(samples))
        shards.append({"file": f"shard-{len(shards):05d}.safetensors", "start": start, "stop": stop,
                       "lengths": [len(s["input_ids"]) for s in samples[start:stop]]})
    return shards


def write_features(
    target: nn.Module,
    samples: list[dict],
    folder: str | os.PathLike,
    fingerprint: dict,
    shard_size: int = 256,
    dtype: torch.dtype = torch.bfloat16,
    progress: bool = True,
) -> Path:
    """Write f of every sample (one target forward each, no padding) into shards; resume if interrupted."""
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    folder = Path(folder)
    hidden = target.config.hidden_size
    index = {"format": FORMAT, "target": fingerprint, "data_sha256": data_fingerprint(samples),
             "hidden_size": hidden, "dtype": str(dtype).removeprefix("torch."), "n_samples": len(samples),
             "shards": _plan(samples, shard_size)}
    index_path = folder / INDEX
    if index_path.exists():
        old = json.loads(index_path.read_text())
        if old != index:
            raise FeatureStoreError(f"{folder} already holds features of another target, data file or shard size "
                                    f"(target {old.get('target')}); use a new folder or delete this one")

    todo = [s for s in index["shards"] if not (folder / s["file"]).exists()]
    bytes_per_token = hidden * torch.empty((), dtype=dtype).element_size()
    total = sum(sum(s["lengths"]) for s in index["shards"]) * bytes_per_token
    left = sum(sum(s["lengths"]) for s in todo) * bytes_per_token
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    free = shutil.disk_usage(existing).free
    print(f"features: {len(samples)} samples in {len(index['shards'])} shards, {total / 2**30:.2f} GiB in all; "
          f"{len(todo)} shards ({left / 2**30:.2f} GiB) to write, {free / 2**30:.1f} GiB free", file=sys.stderr)
    if left > free:  # checked before anything is written, so a refused run leaves no index behind
        raise OSError(f"not enough disk in {folder}: {left / 2**30:.2f} GiB needed, {free / 2**30:.2f} GiB free")
    folder.mkdir(parents=True, exist_ok=True)
    if not index_path.exists():
        atomic_write_text(index_path, json.dumps(index) + "\n")

    device = next(target.parameters()).device
    bar = tqdm(total=sum(s["stop"] - s["start"] for s in todo), unit="sample", disable=not progress)
    for shard in todo:
        tensors = {}
        for i in range(shard["start"], shard["stop"]):
            ids = torch.tensor([samples[i]["input_ids"]], device=device)
            f = compute_features(target, ids, torch.ones_like(ids))[0]  # (T, h)
            tensors[str(i)] = f.to(dtype).cpu().contiguous()
            bar.update()
        with atomic_path(folder / shard["file"]) as tmp:
            save_file(tensors, str(tmp), metadata={"format": FORMAT})
    bar.close()
    return folder


class FeatureStore:
    """Read-only access to a finished feature folder, checked against the target and the data at opening."""

    def __init__(self, folder: str | os.PathLike, fingerprint: dict, samples: list[dict],
                 data_sha256: str | None = None):
        """``data_sha256``: data_fingerprint(samples), when the caller has it already."""
        self.folder = Path(folder)
        index_path = self.folder / INDEX
        if not index_path.is_file():
            raise FeatureStoreError(f"{self.folder} is not a feature folder (no {INDEX}); "
                                    f"make one with `python -m train.features`")
        index = json.loads(index_path.read_text())
        if index.get("format") != FORMAT:
            raise FeatureStoreError(f"{index_path}: format {index.get('format')!r}, expected {FORMAT!r}")
        if index["target"] != fingerprint:
            raise FeatureStoreError(f"features in {self.folder} come from another target: made from "
                                    f"{index['target']}, training target is {fingerprint}; recompute them "
                                    f"with this target")
        if index["n_samples"] != len(samples) or index["data_sha256"] != (data_sha256 or data_fingerprint(samples)):
            raise FeatureStoreError(f"features in {self.folder} were made from another data file "
                                    f"({index['n_samples']} samples) than the training data ({len(samples)} "
                                    f"samples); recompute them")
        missing = [s["file"] for s in index["shards"] if not (self.folder / s["file"]).is_file()]
        if missing:
            raise FeatureStoreError(f"features in {self.folder} are incomplete: {len(missing)} of "
                                    f"{len(index['shards'])} shards missing ({missing[0]}, ...); rerun "
                                    f"`python -m train.features` with the same arguments to finish them")
        self.hidden_size = index["hidden_size"]
        self._shard_of = {}
        for shard in index["shards"]:
            for i in range(shard["start"], shard["stop"]):
                self._shard_of[i] = shard["file"]
        self._open: dict[str, object] = {}

    def get(self, index: int, length: int | None = None) -> torch.Tensor:
        """f of sample ``index`` (its position in the data file), first ``length`` positions: (T, h)."""
        name = self._shard_of[index]
        if name not in self._open:
            self._open[name] = safe_open(str(self.folder / name), framework="pt")
        handle = self._open[name]
        if length is None:
            return handle.get_tensor(str(index))
        return handle.get_slice(str(index))[:length]


def main(argv: list[str] | None = None) -> None:
    from transformers import AutoModelForCausalLM

    from train.data import read_prepared

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", required=True, help="target model folder (or a hass.zoo name)")
    parser.add_argument("--data", required=True, help="prepared data file (python -m train.prepare_data)")
    parser.add_argument("--out", required=True, help="feature folder to write (resumes if it exists)")
    parser.add_argument("--shard-size", type=int, default=256, help="samples per shard")
    parser.add_argument("--target-dtype", default="auto", choices=("auto", "bfloat16", "float32"),
                        help="dtype of the target's forward (auto: bfloat16 where bf16 is fast here, else float32); "
                             "the features are stored in bfloat16 either way")
    args = parser.parse_args(argv)

    from hass.zoo import ensure_target

    target_path = ensure_target(args.target)
    _, samples = read_prepared(args.data)
    from train.config import fast_dtype_name

    dtype = fast_dtype_name() if args.target_dtype == "auto" else args.target_dtype
    target = AutoModelForCausalLM.from_pretrained(target_path, dtype=getattr(torch, dtype))
    target.eval().requires_grad_(False)
    start = time.perf_counter()
    write_features(target, samples, args.out, target_fingerprint(target.config, str(target_path)), args.shard_size)
    print(f"features written to {args.out} in {time.perf_counter() - start:.0f}s", file=sys.stderr)


if __name__ == "__main__":
    main()
