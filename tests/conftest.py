"""Tiny random targets and drafts, built in the tests (no download)."""
from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM, Qwen2Config, Qwen2ForCausalLM

from evaluation.synthetic import make_perfect
from hass import DraftModel

# Tiny models gain nothing from intra-op threads, and on a loaded 2-core machine spinning OpenMP workers make
# them many times slower.
torch.set_num_threads(1)

FAMILIES = {
    "llama": (LlamaConfig, LlamaForCausalLM),
    "qwen2": (Qwen2Config, Qwen2ForCausalLM),
    "mistral": (MistralConfig, MistralForCausalLM),
}


def tiny_config(family: str = "llama", vocab_size: int = 128, **overrides):
    config_cls, _ = FAMILIES[family]
    kwargs = dict(
        vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=False,
    )
    if family == "mistral":
        kwargs["sliding_window"] = None
    kwargs.update(overrides)
    return config_cls(**kwargs)


def tiny_target(family: str = "llama", seed: int = 0, dtype=torch.float32, **overrides):
    torch.manual_seed(seed)
    _, model_cls = FAMILIES[family]
    model = model_cls(tiny_config(family, **overrides)).to(dtype).eval()
    # Sharper next-token distributions than the default init, so greedy paths are not all near-ties.
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(8.0)
    return model


def tiny_draft(target, seed: int = 1) -> DraftModel:
    torch.manual_seed(seed)
    return DraftModel.from_target_config(target.config).to(target.dtype).eval()


def perfect_pair(family: str = "llama", seed: int = 0):
    """A target whose next token depends only on the current token, and a draft that computes it exactly, so
    every drafted chain of greedy tokens is accepted in full (evaluation.synthetic.make_perfect)."""
    target = tiny_target(family, seed=seed)
    draft = tiny_draft(target)
    make_perfect(target, draft)
    return target, draft


@pytest.fixture(params=sorted(FAMILIES))
def family(request):
    return request.param
