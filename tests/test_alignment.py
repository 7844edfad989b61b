"""HCA (REFERENCE.md section 3): the one-forward masked step equals the slow per-position loop."""
import pytest
import torch
from torch import nn
from transformers import LlamaConfig, Qwen2Config

from hass.alignment import hca_losses, hca_mask, shift_right
from hass.draft import DraftModel
from hass.losses import LossWeights, loss_positions, shift_left, step_loss

CONFIGS = {
    "llama": LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512),
    "qwen2": Qwen2Config(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512),
}


def test_mask_matches_its_definition():
    valid = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], dtype=torch.bool)
    length = valid.shape[1]
    for steps in (1, 2, 3):
        keep = hca_mask(valid, steps, torch.float32) == 0  # (B, 1, L, sL): newest-set queries
        assert keep.shape == (2, 1, length, steps * length)
        for b in range(2):
            for i in range(length):
                for k in range(steps):
                    for j in range(length):
                        want = j <= i and bool(valid[b, j]) and k == max(0, steps - 1 - (i - j))
                        want = want or (k == steps - 1 and i == j)
                        assert bool(keep[b, 0, i, k * length + j]) == want


def slow_hca_losses(draft, lm_head, inputs, targets, embeds, pos, valid, loss_mask, steps, weights):
    """Appendix A.1 loop form: for every position i, the s-th autoregressive draft step's context built
    explicitly (key j from set max(0, (s-1)-(i-j))) and run as a plain causal forward; (B, L) masked losses."""
    b, length, _ = inputs.shape
    mask = loss_positions(loss_mask, valid)
    f_next = shift_left(targets)
    target_probs = torch.softmax(lm_head(f_next), -1)
    sets, terms = [inputs], []
    for s in range(1, steps + 1):
        rows = []
        for bi in range(b):
            out = []
            for i in range(length):
                if not valid[bi, i]:
                    out.append(torch.zeros_like(inputs[bi, 0]))
                    continue
                ctx = torch.stack([sets[max(0, s - 1 - (i - j))][bi, j] for j in range(i + 1)])  # (i+1, h)
                g = draft(ctx[None], embeds[bi, None, : i + 1], pos[bi, None, : i + 1])
                out.append(g[0, -1])
            rows.append(torch.stack(out))
        g = torch.stack(rows)  # (B, L, h)
        terms.append(step_loss(g, f_next, target_probs, lm_head(g), mask, weights))
        sets.append(shift_right(g, inputs[:, :1]).detach())
    return terms


@pytest.mark.parametrize("family", sorted(CONFIGS))
@pytest.mark.parametrize("steps", [1, 2, 3])
def test_masked_hca_equals_loop_losses_and_gradients(family, steps):
    torch.manual_seed(0)
    config = CONFIGS[family]
    draft = DraftModel.from_target_config(config).float()
    lm_head = nn.Linear(64, 128, bias=False).requires_grad_(False)
    b, length = 2, 7
    valid = torch.tensor([[1] * 7, [1] * 5 + [0] * 2], dtype=torch.bool)  # right padding
    loss_mask = torch.tensor([[0, 0, 1, 1, 1, 1, 1], [0, 1, 1, 1, 1, 0, 0]])
    targets = torch.randn(b, length, 64)
    inputs = targets + 0.1 * torch.randn(b, length, 64)
    embeds = torch.randn(b, length, 64)
    pos = torch.arange(length).expand(b, length)
    weights = LossWeights(hod=1.0, top_k=10)

    def run(fn):
        draft.zero_grad()
        terms = fn(draft, lm_head, inputs, targets, embeds, pos, valid, loss_mask, steps, weights)
        sum(t["loss"] for t in terms).backward()
        return terms, {n: p.grad.clone() for n, p in draft.named_parameters()}

    fast_terms, fast_grads = run(hca_losses)
    slow_terms, slow_grads = run(slow_hca_losses)
    assert len(fast_terms) == steps
    for fast, slow in zip(fast_terms, slow_terms):
        for key in ("loss", "reg", "cls", "topk", "acc"):
            torch.testing.assert_close(fast[key], slow[key], rtol=1e-5, atol=1e-6)
    for name in fast_grads:
        torch.testing.assert_close(fast_grads[name], slow_grads[name], rtol=1e-4, atol=1e-6, msg=name)
    if steps > 1:  # the steps see different contexts, so their losses differ
        assert not torch.allclose(fast_terms[0]["loss"], fast_terms[-1]["loss"])
