"""The settings of a training run: ``TrainConfig`` and the ``--config FILE --stage N --key value`` parser.

A config file is JSON whose top-level keys are TrainConfig fields; an optional "stages" object maps a stage
name to the keys that differ in that stage (the two-stage recipe). Command-line ``--key value`` pairs
override both. Every value is type-checked and range-checked before any work starts.
"""
from __future__ import annotations

import json
import types
import typing
from dataclasses import dataclass
from pathlib import Path

import torch

from hass.losses import LossWeights
from hass.precision import fast_draft_dtype

DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32, "float16": torch.float16}


def fast_dtype_name() -> str:
    """What ``"auto"`` means for a training dtype here: bfloat16 where bf16 matrix products are fast (a CUDA GPU
    with bf16, a CPU with AVX512-BF16 or AMX), else float32. On an AVX2-only CPU bf16 is emulated: a SmolLM2
    forward ran 6x slower in bf16 than in fp32, a draft training step 30x."""
    return str(fast_draft_dtype("cuda" if torch.cuda.is_available() else "cpu")).removeprefix("torch.")


@dataclass(frozen=True)
class TrainConfig:
    """Every setting of a training run. Filled from a JSON file, overridden by ``--key value``; validates itself."""

    target: str = ""  # target folder, or a hass.zoo name
    data: str = ""  # prepared data file (python -m train.prepare_data)
    output_dir: str = ""
    features: str | None = None  # offline feature folder; None computes f on the fly
    init_from: str | None = None  # draft checkpoint to start from (stage 2 starts from stage 1's final)
    resume: str | None = None  # checkpoint folder to continue, or "auto" (latest in output_dir, if any)
    deepspeed: str | None = None  # DeepSpeed JSON config (ZeRO-2); needs the deepspeed launcher
    target_dtype: str = "bfloat16"  # "auto": bfloat16 where bf16 matrix products are fast here, else float32
    dtype: str = "bfloat16"  # autocast dtype of the training compute (fp32 master weights); float32 = off; "auto"
    draft_bias: bool = True  # bias of the draft's fc layer
    hca_steps: int = 3  # n; 1 is plain EAGLE training
    hod_weight: float = 1.0  # w; 0 is the EAGLE loss
    hod_k: int = 10
    cls_weight: float = 0.1
    noise: float = 0.2  # scale of the uniform feature noise (x 512 / L); 0 turns it off
    epochs: int = 1
    max_steps: int = 0  # optimiser steps; 0 = epochs over the training split
    start_batch: int = 0  # index of the first micro-batch: a later stage can skip the batches earlier ones saw
    stop_at: int = 0  # save a checkpoint and stop at this optimiser step, the schedule unchanged (0: run to the end)
    batch_size: int = 2  # per process
    grad_accum: int = 1
    max_length: int = 2048
    lr: float = 3e-5
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 0.01  # torch's AdamW default
    warmup_fraction: float = 0.01
    grad_clip: float = 0.5  # clipping threshold; 0 turns clipping off
    clip_mode: str = "value"  # "value": each gradient element to [-grad_clip, grad_clip] (the EAGLE / HASS code);
    #                           "norm": the global gradient norm to grad_clip
    init_layer: str = "random"  # "random", or "target": the draft's decoder layer starts as the target's last one
    draft_vocab_size: int = 0  # N > 0: train and draft over the N most frequent answer tokens of the train split
    seed: int = 0
    eval_fraction: float = 0.02
    eval_data: str | None = None  # a prepared file to evaluate on instead (its dialogue ids are left out of training)
    eval_every: int = 0  # optimiser steps between evaluations; 0 = only at the end
    eval_max_batches: int = 50
    save_every: int = 0  # optimiser steps between checkpoints; 0 = only at the end
    keep_checkpoints: int = 2  # step checkpoints kept besides "final"; 0 keeps all
    threads: int = 0  # torch threads per process; 0 = all cores / processes
    plot: bool = True

    def __post_init__(self):
        for name, hint in typing.get_type_hints(TrainConfig).items():
            _check_type(name, getattr(self, name), hint)
        for name in ("target", "data", "output_dir"):
            if not getattr(self, name):
                raise ValueError(f"TrainConfig.{name} is required")
        for name in ("target_dtype", "dtype"):
            if getattr(self, name) == "auto":  # resolved here, so the saved config says what ran
                object.__setattr__(self, name, fast_dtype_name())
            if getattr(self, name) not in DTYPES:
                raise ValueError(f"TrainConfig.{name} must be one of {sorted(DTYPES)} or auto, "
                                 f"got {getattr(self, name)!r}")
        positive = ("hca_steps", "hod_k", "epochs", "batch_size", "grad_accum", "eval_max_batches")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"TrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("max_steps", "start_batch", "stop_at", "eval_every", "save_every", "keep_checkpoints", "threads",
                     "hod_weight", "draft_vocab_size",
                     "cls_weight", "noise", "weight_decay", "grad_clip"):
            if getattr(self, name) < 0:
                raise ValueError(f"TrainConfig.{name} must be >= 0, got {getattr(self, name)}")
        if self.max_length < 2:
            raise ValueError(f"TrainConfig.max_length must be >= 2, got {self.max_length}")
        if not self.lr > 0:
            raise ValueError(f"TrainConfig.lr must be > 0, got {self.lr}")
        if not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"TrainConfig.betas must be in [0, 1), got {self.betas}")
        if self.clip_mode not in ("value", "norm"):
            raise ValueError(f"TrainConfig.clip_mode must be 'value' or 'norm', got {self.clip_mode!r}")
        if self.init_layer not in ("random", "target"):
            raise ValueError(f"TrainConfig.init_layer must be 'random' or 'target', got {self.init_layer!r}")
        if self.draft_vocab_size and self.draft_vocab_size < self.hod_k:
            raise ValueError(f"TrainConfig.draft_vocab_size={self.draft_vocab_size} is below hod_k={self.hod_k}: "
                             f"HOD needs the target's top-{self.hod_k} among the draft's tokens")
        for name in ("warmup_fraction", "eval_fraction"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"TrainConfig.{name} must be in [0, 1), got {getattr(self, name)}")

    @property
    def loss_weights(self) -> LossWeights:
        return LossWeights(cls=self.cls_weight, hod=self.hod_weight, top_k=self.hod_k)


def _check_type(name: str, value, hint) -> None:
    if isinstance(hint, types.UnionType):
        if value is None and type(None) in typing.get_args(hint):
            return
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    if typing.get_origin(hint) is tuple:
        if not (isinstance(value, tuple) and len(value) == len(typing.get_args(hint))
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)):
            raise TypeError(f"TrainConfig.{name} must be {hint}, got {value!r}")
        return
    ok = isinstance(value, hint) and not (hint is not bool and isinstance(value, bool))
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        ok = True
    if not ok:
        raise TypeError(f"TrainConfig.{name} must be {hint.__name__}, got {value!r}")


def _parse_value(name: str, text: str, hint):
    """A command-line string -> the field's type: 'none' for optional fields, 'a,b' for tuples, true/false."""
    if isinstance(hint, types.UnionType):
        if text.lower() in ("none", "null", ""):
            return None
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    try:
        if typing.get_origin(hint) is tuple:
            return tuple(float(x) for x in text.split(","))
        if hint is bool:
            if text.lower() not in ("true", "false", "1", "0"):
                raise ValueError(text)
            return text.lower() in ("true", "1")
        return hint(text)
    except ValueError:
        raise ValueError(f"--{name}: cannot read {text!r} as {hint}") from None


def load_config(argv: list[str]) -> TrainConfig:
    """``--config FILE [--stage N] [--key value | --key=value ...]``; the launcher's --local_rank is ignored.

    The file's top-level keys are TrainConfig fields; an optional "stages" object maps a stage name to the
    keys that differ in that stage (the two-stage recipe), selected by --stage.
    """
    pairs, i = {}, 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("--"):
            raise ValueError(f"unexpected argument {arg!r}; use --key value")
        key, eq, value = arg[2:].partition("=")
        if not eq:
            if i + 1 >= len(argv):
                raise ValueError(f"{arg} needs a value")
            value, i = argv[i + 1], i + 1
        pairs[key.replace("-", "_")] = value
        i += 1
    pairs.pop("local_rank", None)
    values: dict = {}
    config_file, stage = pairs.pop("config", None), pairs.pop("stage", None)
    if config_file is not None:
        path = Path(config_file)
        if not path.is_file():
            raise ValueError(f"config file {config_file!r} does not exist")
        try:
            values = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"config file {config_file!r} is not valid JSON: {e}") from None
        if not isinstance(values, dict):
            raise ValueError(f"config file {config_file!r} must hold a JSON object of settings")
        stages = values.pop("stages", {})
        if stage is not None:
            if stage not in stages:
                raise ValueError(f"{config_file} has no stage {stage!r}; stages: {sorted(stages)}")
            values.update(stages[stage])
        elif stages:
            raise ValueError(f"{config_file} describes stages {sorted(stages)}: choose one with --stage")
        values.pop("_comment", None)
    elif stage is not None:
        raise ValueError("--stage needs --config")
    hints = typing.get_type_hints(TrainConfig)
    unknown = sorted((set(values) | set(pairs)) - set(hints))
    if unknown:
        raise ValueError(f"unknown setting(s) {unknown}; known: {sorted(hints)}")
    if isinstance(values.get("betas"), list):
        values["betas"] = tuple(values["betas"])
    values.update({k: _parse_value(k, v, hints[k]) for k, v in pairs.items()})
    return TrainConfig(**values)
