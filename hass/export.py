"""Export a draft folder to the layout a serving engine loads.

    python -m hass.export DRAFT_DIR OUT_DIR --to vllm      # vLLM: speculative_config {"method": "eagle", "model": OUT_DIR}
    python -m hass.export DRAFT_DIR OUT_DIR --to sglang    # SGLang: --speculative-algorithm EAGLE --speculative-draft-model-path OUT_DIR
    python -m hass.export DRAFT_DIR OUT_DIR --to eagle     # the official EAGLE / HASS release layout

What each engine needs (all three serve the LLaMA architecture; other families are refused):

- **vLLM** builds the draft's ``fc`` without a bias and drops an ``fc.bias`` weight without a word, and it reads
  a config's ``"bias": true`` as *attention* bias. A draft trained with an fc bias ``b`` is therefore exported
  with the bias folded exactly into the layer: the decoder layer has no input norm, so ``z = W x + b`` feeds the
  q/k/v projections and the residual directly, and ``W_q z = W_q (W x) + W_q b`` (likewise k and v), while the
  residual's ``b`` becomes an o_proj bias. The config gets ``"bias": false, "attention_bias": true``. The folded
  draft computes the same function up to float rounding (tests/test_export.py).
- **SGLang** (``LlamaForCausalLMEagle``) keeps ``fc.bias`` (a draft without one gets zeros) and takes no attention
  bias: ``"bias": false``, that architecture name. A draft trained over N tokens (hass.draft_vocab) also gets
  ``hot_token_ids.pt``, the N ids, for ``--speculative-token-map``.
- **eagle**: ``pytorch_model.bin`` with ``fc.*`` and ``layers.0.*``, a LLaMA config whose ``bias`` flag is the
  fc bias: what the EAGLE and HASS code load.

The folder is filled under a temporary name and renamed when complete; an existing ``OUT_DIR`` is refused.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import save_file

from .draft import DraftModel
from .draft_vocab import load_token_counts, top_tokens, trained_vocab_size
from .errors import CheckpointError
from .files import normal_permissions

ENGINES = ("vllm", "sglang", "eagle")
SERVED_FAMILIES = ("llama",)


def fold_fc_bias(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Weights without ``fc.bias`` that compute the same draft: b folded into q/k/v biases (W b, added to any
    bias already there) and an o_proj bias b. Computed in float64, stored in the weights' dtype."""
    state = dict(state)
    b = state.pop("fc.bias", None)
    if b is None:
        return state
    b64 = b.double()
    prefix = "layers.0.self_attn."
    for proj in ("q_proj", "k_proj", "v_proj"):
        w = state[f"{prefix}{proj}.weight"]
        extra = w.double() @ b64
        old = state.get(f"{prefix}{proj}.bias")
        state[f"{prefix}{proj}.bias"] = (extra + (old.double() if old is not None else 0)).to(w.dtype)
    old = state.get(f"{prefix}o_proj.bias")
    state[f"{prefix}o_proj.bias"] = (b64 + (old.double() if old is not None else 0)).to(b.dtype)
    return state


def _check(draft_dir: Path, out_dir: Path, engine: str) -> tuple[DraftModel, dict]:
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    if out_dir.exists():
        raise FileExistsError(f"{out_dir} already exists; export into a new folder")
    draft = DraftModel.from_pretrained(draft_dir)  # CheckpointError on missing / corrupt weights
    config = draft.config.to_dict()
    family = config.get("model_type")
    if family not in SERVED_FAMILIES:
        raise ValueError(f"{engine} serves EAGLE drafts of the LLaMA architecture; this draft is a {family!r} "
                         f"draft, which it cannot load exactly")
    if engine in ("sglang", "eagle") and config.get("attention_bias"):
        raise ValueError(f"this draft has attention biases, which {engine}'s EAGLE layer does not have")
    return draft, config


def export(draft_dir: str | os.PathLike, out_dir: str | os.PathLike, engine: str) -> Path:
    """Write ``out_dir`` for ``engine`` (see the module docstring); returns it. Everything is checked first."""
    draft_dir, out_dir = Path(draft_dir), Path(out_dir)
    draft, config = _check(draft_dir, out_dir, engine)
    state = {k: v.detach().contiguous() for k, v in draft.state_dict().items()}
    has_bias = "fc.bias" in state
    for key in ("_attn_implementation_autoset", "draft_vocab_size", "dtype", "torch_dtype"):
        config.pop(key, None)
    config.update(num_hidden_layers=1, torch_dtype=str(next(iter(state.values())).dtype).removeprefix("torch."))
    vocab = trained_vocab_size(draft_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        if engine == "vllm":
            state = fold_fc_bias(state)
            config.update(bias=False, attention_bias=has_bias or bool(config.get("attention_bias")),
                          architectures=["LlamaForCausalLM"])
            save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        elif engine == "sglang":
            if not has_bias:
                state["fc.bias"] = torch.zeros(state["fc.weight"].shape[0], dtype=state["fc.weight"].dtype)
            config.update(bias=False, attention_bias=False, architectures=["LlamaForCausalLMEagle"])
            save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
            if vocab is not None:
                torch.save(top_tokens(load_token_counts(draft_dir), vocab), tmp / "hot_token_ids.pt")
        else:
            config.update(bias=has_bias, architectures=["LlamaForCausalLM"])
            torch.save(state, tmp / "pytorch_model.bin")
        (tmp / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        normal_permissions(tmp)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m hass.export", description=__doc__.splitlines()[0])
    p.add_argument("draft", help="a draft folder (this project's format, or an official EAGLE / HASS one)")
    p.add_argument("out", help="the folder to write (must not exist)")
    p.add_argument("--to", required=True, choices=ENGINES)
    args = p.parse_args(argv)
    try:
        out = export(args.draft, args.out, args.to)
    except (ValueError, FileExistsError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    vocab = trained_vocab_size(args.draft)
    note = ""
    if vocab is not None and args.to != "sglang":
        note = f" (this draft was trained over {vocab} tokens; {args.to} drafts over the full vocabulary)"
    print(f"{args.to} draft written to {out}{note}")


if __name__ == "__main__":
    main()
