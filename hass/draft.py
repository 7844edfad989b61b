"""The draft model (EAGLE architecture, docs/METHOD.md section 1).

z_t = fc([E(x_{t+1}) ; f_t]) (2h -> h), then ONE decoder layer of the target's own family without its input
norm, no final norm: g_t estimates the target feature f_{t+1}. E and lm_head belong to the target and are
not stored here; callers pass token embeddings in and apply lm_head to the output.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoConfig, PretrainedConfig

from . import hf
from .errors import CheckpointError, DraftMismatchError
from .files import normal_permissions

# Keys that official EAGLE/HASS releases may carry and that we do not use: the target's embedding (we share
# the target's own) and an input norm that the first (only) draft layer skips.
_IGNORED_KEYS = ("embed_tokens.weight", "layers.0.input_layernorm.weight")
# Config fields holding one entry per decoder layer, which tools copy from the target unchanged.
_PER_LAYER_KEYS = ("layer_types",)


class DraftModel(nn.Module):
    def __init__(self, config: PretrainedConfig):
        super().__init__()
        if getattr(config, "num_hidden_layers", 1) != 1:
            raise ValueError(f"a draft has one decoder layer, config says num_hidden_layers={config.num_hidden_layers}")
        if getattr(config, "_attn_implementation", None) not in ("eager", "sdpa"):
            config._attn_implementation = "sdpa"
        self.config = config
        h = config.hidden_size
        self.fc = nn.Linear(2 * h, h, bias=bool(getattr(config, "bias", False)))
        layer = hf.decoder_layer_class(config)(config, layer_idx=0)
        layer.input_layernorm = nn.Identity()  # the draft layer has no input norm
        self.layers = nn.ModuleList([layer])
        self.rotary_emb = hf.rotary_embedding_class(config)(config=config)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_target_config(cls, target_config: PretrainedConfig, bias: bool = True) -> "DraftModel":
        """A randomly initialised draft shaped like one layer of the target (same heads, RoPE, MLP)."""
        d = target_config.to_dict()
        d.update(num_hidden_layers=1, bias=bias)
        if d.get("layer_types"):  # per-layer attention kinds (Qwen2...): the draft layer takes the first
            d["layer_types"] = d["layer_types"][:1]
        d.pop("quantization_config", None)
        config = AutoConfig.for_model(d.pop("model_type"), **d)
        model = cls(config)
        model.apply(_init_weights(config))
        return model

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike, dtype: torch.dtype | None = None,
                        device: str | torch.device | None = None) -> "DraftModel":
        """Load our format or an official EAGLE/HASS release (config.json + model.safetensors or pytorch_model.bin)."""
        folder = Path(folder)
        config_path = folder / "config.json"
        if not folder.is_dir():
            raise CheckpointError(f"draft checkpoint folder {str(folder)!r} does not exist")
        if not config_path.is_file():
            raise CheckpointError(f"draft checkpoint {str(folder)!r} has no config.json")
        try:
            d = json.loads(config_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise CheckpointError(f"draft config {str(config_path)!r} is not valid JSON: {e}") from e
        n_layers = d.get("num_hidden_layers", 1)
        for key in _PER_LAYER_KEYS:  # copied from a multi-layer target's config: the draft layer takes the first
            if isinstance(d.get(key), list) and isinstance(n_layers, int) and len(d[key]) > n_layers >= 1:
                d[key] = d[key][:n_layers]
        try:
            config = AutoConfig.for_model(d.pop("model_type", "llama"), **d)
            model = cls(config)
        except Exception as e:  # transformers / huggingface_hub validation raise several unrelated types
            raise CheckpointError(f"draft config {str(config_path)!r} is inconsistent: {e}") from e
        state = _read_state_dict(folder)
        for key in _IGNORED_KEYS:
            state.pop(key, None)
        expected = model.state_dict()
        missing = sorted(set(expected) - set(state))
        unexpected = sorted(set(state) - set(expected))
        if missing or unexpected:
            raise CheckpointError(f"draft checkpoint {str(folder)!r} does not match its config: "
                                  f"missing {missing[:8]}, unexpected {unexpected[:8]}")
        for key, value in state.items():
            if value.shape != expected[key].shape:
                raise CheckpointError(f"draft checkpoint {str(folder)!r}: {key} has shape {tuple(value.shape)}, "
                                      f"config implies {tuple(expected[key].shape)}")
        model.load_state_dict(state)
        return model.to(device=device, dtype=dtype)

    def save_pretrained(self, folder: str | os.PathLike) -> None:
        """Write config.json + model.safetensors (no embedding, no lm_head) atomically into ``folder``."""
        folder = Path(folder)
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
        try:
            d = self.config.to_dict()
            d.pop("_attn_implementation_autoset", None)
            (tmp / "config.json").write_text(json.dumps(d, indent=2, sort_keys=True) + "\n")
            state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
            save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
            normal_permissions(tmp)
            if folder.exists():
                for f in tmp.iterdir():  # replace file by file: each rename is atomic
                    os.replace(f, folder / f.name)
                shutil.rmtree(tmp)
            else:
                os.replace(tmp, folder)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def check_matches(self, target_config: PretrainedConfig) -> None:
        """Raise DraftMismatchError naming every shape the draft and the target disagree on."""
        fields = {
            "hidden_size": lambda c: c.hidden_size,
            "vocab_size": lambda c: c.vocab_size,
            "num_attention_heads": lambda c: c.num_attention_heads,
            "num_key_value_heads": lambda c: getattr(c, "num_key_value_heads", None) or c.num_attention_heads,
            "head_dim": hf.head_dim,
        }
        diffs = [f"{name}: draft {get(self.config)} vs target {get(target_config)}"
                 for name, get in fields.items() if get(self.config) != get(target_config)]
        if diffs:
            raise DraftMismatchError("the draft does not match the target: " + "; ".join(diffs))

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        features: torch.Tensor,  # (B, T, h) target features f_t (or the draft's own estimates)
        token_embeds: torch.Tensor,  # (B, T, h) E(x_{t+1}), the embedding of the NEXT token
        position_ids: torch.Tensor,  # (B, T)
        attention_mask: torch.Tensor | None = None,  # (B, 1, T, S) additive float; None = causal
        cache=None,  # hass.kv_cache.KVCache with one layer, or None
    ) -> torch.Tensor:  # (B, T, h) g_t, the estimate of f_{t+1}
        z = self.fc(torch.cat([token_embeds, features], dim=-1))  # (B, T, h)
        if attention_mask is None:
            past = cache.length if cache is not None else 0
            t = z.shape[1]
            keep = torch.ones(t, past + t, dtype=torch.bool, device=z.device).tril(past)
            attention_mask = hf.additive_mask(keep, z.dtype)[None, None]
        cos_sin = self.rotary_emb(z, position_ids)
        return self.layers[0](z, attention_mask=attention_mask, position_ids=position_ids,
                              past_key_values=cache, use_cache=cache is not None, position_embeddings=cos_sin)


def _read_state_dict(folder: Path) -> dict[str, torch.Tensor]:
    st, bin_ = folder / "model.safetensors", folder / "pytorch_model.bin"
    try:
        if st.is_file():
            return load_file(str(st))
        if bin_.is_file():
            return torch.load(bin_, map_location="cpu", weights_only=True)
    except Exception as e:  # safetensors / pickle raise many types on a truncated or corrupt file
        raise CheckpointError(f"draft weights in {str(folder)!r} are unreadable (corrupt or truncated?): {e}") from e
    raise CheckpointError(f"draft checkpoint {str(folder)!r} has neither model.safetensors nor pytorch_model.bin")


def _init_weights(config: PretrainedConfig):
    std = getattr(config, "initializer_range", 0.02)

    def init(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)

    return init
