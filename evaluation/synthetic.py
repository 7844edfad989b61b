"""A target and a draft built to agree, for measuring the decode cycle at full acceptance with no download.

``make_perfect(target, draft)`` edits both in place: every target layer's attention output is zeroed and every
MLP after the first, so the target's next token depends only on the current one, h(x_t) = E(x_t) +
MLP_1(norm(E(x_t))); the draft copies that first MLP with ``fc = [I, 0]`` and a zero attention output, so its
output is exactly h(x_{t+1}), and lm_head of it is a positive multiple of the target's logits (the final RMSNorm
only rescales). The argmax and the top-k ranking then agree, and every drafted chain of greedy tokens is
accepted in full. The zeroed weights still take part in every product, so a forward costs what it would with
trained weights. Used by the tests (tests/conftest.py) and by evaluation.gpu_speed.
"""
from __future__ import annotations

import torch


@torch.no_grad()
def make_perfect(target, draft, embedding_scale: float = 200.0) -> None:
    layers = target.get_decoder().layers
    # large embeddings make the draft's own distributions sharp, so deep chains outscore wide siblings
    target.get_input_embeddings().weight.mul_(embedding_scale)
    for layer in layers:
        layer.self_attn.o_proj.weight.zero_()
    for layer in layers[1:]:
        layer.mlp.down_proj.weight.zero_()
    h = target.config.hidden_size
    draft.fc.weight.zero_()
    draft.fc.weight[:, :h] = torch.eye(h)
    if draft.fc.bias is not None:
        draft.fc.bias.zero_()
    d_layer = draft.layers[0]
    d_layer.mlp.load_state_dict(layers[0].mlp.state_dict())
    d_layer.post_attention_layernorm.load_state_dict(layers[0].post_attention_layernorm.state_dict())
    d_layer.self_attn.o_proj.weight.zero_()
