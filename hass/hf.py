"""Every touch-point with transformers' internals lives here, so a version bump is a one-file change.

We never copy a target's modeling file: the target runs unmodified, with the tree given as an additive
float 4D attention mask plus explicit position ids, and the draft borrows the target family's own decoder
layer and rotary-embedding classes.
"""
from __future__ import annotations

import importlib

import torch
from torch import nn
from transformers import PretrainedConfig
from transformers.models.auto.configuration_auto import model_type_to_module_name
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

from .kv_cache import KVCache


def _family_class(config: PretrainedConfig, suffix: str) -> type:
    """The class ``<Family><suffix>`` from the modeling module of ``config.model_type``."""
    model_type = config.model_type
    if model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise ValueError(f"model_type {model_type!r} is not a causal LM family known to transformers")
    causal_lm = MODEL_FOR_CAUSAL_LM_MAPPING_NAMES[model_type]
    prefix = causal_lm.removesuffix("ForCausalLM")
    module = importlib.import_module(f"transformers.models.{model_type_to_module_name(model_type)}.modeling_{model_type_to_module_name(model_type)}")
    cls = getattr(module, prefix + suffix, None)
    if cls is None:
        raise ValueError(f"transformers has no {prefix}{suffix} for model_type {model_type!r}; this family is not supported")
    return cls


def decoder_layer_class(config: PretrainedConfig) -> type[nn.Module]:
    return _family_class(config, "DecoderLayer")


def rotary_embedding_class(config: PretrainedConfig) -> type[nn.Module]:
    return _family_class(config, "RotaryEmbedding")


def head_dim(config: PretrainedConfig) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def additive_mask(keep: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Boolean keep-mask -> additive float mask (0 keep / dtype-min drop), the form eager and SDPA accept."""
    return torch.zeros(keep.shape, dtype=dtype, device=keep.device).masked_fill_(~keep, torch.finfo(dtype).min)


def new_cache(config: PretrainedConfig, capacity: int) -> KVCache:
    return KVCache(config.num_hidden_layers, capacity)


def target_forward(
    target: nn.Module,
    input_ids: torch.Tensor,  # (1, T)
    position_ids: torch.Tensor,  # (1, T)
    attention_mask: torch.Tensor | None,  # (1, 1, T, S) additive float, S = cache length + T; None = causal
    cache: KVCache,
    logits_from: int | None = 0,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Run the unmodified target; return (features (1, T, h) after the final norm, logits (1, T - logits_from, V)).

    Features are the decoder's last hidden state, which is what lm_head consumes (docs/METHOD.md section 0).
    ``logits_from`` skips the lm_head on positions whose logits are not needed (the prompt in the prefill);
    None skips it entirely (the caller projects the rows it needs, hass.verify.NodeLogits).
    """
    out = target.get_decoder()(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids,
        past_key_values=cache,
        use_cache=True,
    )
    features = out.last_hidden_state
    if logits_from is None:
        return features, None
    logits = target.get_output_embeddings()(features[:, logits_from:])
    return features, logits.float()
