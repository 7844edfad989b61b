"""HCA (docs/METHOD.md section 3): the one-forward masked step equals the slow per-position loop."""
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


def _hca_inputs(seed=0):
    torch.manual_seed(seed)
    draft = DraftModel.from_target_config(CONFIGS["llama"]).float()
    lm_head = nn.Linear(64, 128, bias=False).requires_grad_(False)
    with torch.no_grad():
        lm_head.weight.mul_(4.0)  # peaked target distributions: top-1 varies across positions
    b, length = 2, 7
    valid = torch.tensor([[1] * 7, [1] * 5 + [0] * 2], dtype=torch.bool)
    loss_mask = torch.tensor([[0, 0, 1, 1, 1, 1, 1], [0, 1, 1, 1, 1, 0, 0]])
    targets = torch.randn(b, length, 64)
    inputs = targets + 0.1 * torch.randn(b, length, 64)
    embeds = torch.randn(b, length, 64)
    pos = torch.arange(length).expand(b, length)
    return draft, lm_head, (inputs, targets, embeds, pos, valid, loss_mask)


def _run(draft, fn):
    draft.zero_grad()
    terms = fn()
    sum(t["loss"] for t in terms).backward()
    return terms, {n: p.grad.clone() for n, p in draft.named_parameters()}


@pytest.mark.parametrize("steps", [1, 3])
def test_a_full_draft_vocabulary_changes_nothing(steps):
    draft, lm_head, args = _hca_inputs()
    weights = LossWeights(hod=1.0, top_k=10)
    everything = torch.arange(128)
    today, today_grads = _run(draft, lambda: hca_losses(draft, lm_head, *args, steps, weights))
    full, full_grads = _run(draft, lambda: hca_losses(draft, lm_head, *args, steps, weights, vocab=everything,
                                                      draft_head=lambda x: x @ lm_head.weight[everything].T))
    for a, b in zip(today, full):
        for key in ("loss", "reg", "cls", "topk", "acc"):
            assert torch.equal(a[key], b[key]), key
        assert b["outside"] == 0
    for name in today_grads:
        assert torch.equal(today_grads[name], full_grads[name]), name


def slow_vocab_terms(g, targets, lm_head, valid, loss_mask, vocab, k):
    """A draft vocabulary's terms written out position by position: the target's softmax over the N ids only,
    the draft's log-softmax over the same N rows, HOD over the target's top-k among them, and top-1 against
    the target's top-1 over the full vocabulary."""
    mask = loss_positions(loss_mask, valid)
    W = lm_head.weight
    cls, hod, reg, hits, outside, n = 0.0, 0.0, 0.0, 0.0, 0.0, 0
    for b in range(g.shape[0]):
        for t in range(g.shape[1]):
            if not mask[b, t]:
                continue
            f_next = targets[b, t + 1]
            z = W @ f_next  # (V,) target logits
            p = {int(v): torch.exp(z[v]) for v in vocab}
            total = sum(p.values())
            p = {v: x / total for v, x in p.items()}
            zq = {int(v): W[v] @ g[b, t] for v in vocab}
            norm = torch.logsumexp(torch.stack(list(zq.values())), 0)
            logq = {v: x - norm for v, x in zq.items()}
            cls = cls - sum(p[v] * logq[v] for v in p)
            top = sorted(p, key=lambda v: -p[v])[:k]
            hod = hod - sum(p[v] * logq[v] for v in top)
            reg = reg + torch.nn.functional.smooth_l1_loss(g[b, t], f_next, beta=1.0)
            hits += float(max(logq, key=lambda v: logq[v]) == int(z.argmax()))
            outside += float(int(z.argmax()) not in p)
            n += 1
    d = n + 1e-5
    return {"reg": reg / d, "cls": cls / d, "topk": hod / d, "acc": torch.tensor(hits / d),
            "outside": torch.tensor(outside / d), "loss": reg / d + 0.1 * cls / d + hod / d}


def test_a_trimmed_draft_vocabulary_equals_the_plain_reference():
    draft, lm_head, args = _hca_inputs(seed=2)
    inputs, targets, embeds, pos, valid, loss_mask = args
    vocab = torch.tensor(sorted(torch.randperm(128, generator=torch.Generator().manual_seed(0))[:40].tolist()))
    weights = LossWeights(hod=1.0, top_k=5)
    head = lambda x: x @ lm_head.weight[vocab].T  # noqa: E731
    fast, fast_grads = _run(draft, lambda: hca_losses(draft, lm_head, *args, 1, weights, vocab=vocab, draft_head=head))

    def slow():
        g = draft(inputs, embeds, pos)  # step 1 is a plain causal forward over the noised features
        return [slow_vocab_terms(g, targets, lm_head, valid, loss_mask, vocab, 5)]

    ref, ref_grads = _run(draft, slow)
    assert 0 < float(ref[0]["outside"]) < 1  # some positions' target top-1 lies outside the 40 tokens
    for key in ("loss", "reg", "cls", "topk", "acc", "outside"):
        torch.testing.assert_close(fast[0][key], ref[0][key].to(fast[0][key].dtype), rtol=1e-5, atol=1e-6)
    for name in fast_grads:
        torch.testing.assert_close(fast_grads[name], ref_grads[name], rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("steps", [1, 3])
def test_a_known_target_top1_skips_the_full_projection_with_the_same_terms(steps):
    draft, lm_head, args = _hca_inputs(seed=3)
    vocab = torch.tensor(sorted(torch.randperm(128, generator=torch.Generator().manual_seed(1))[:40].tolist()))
    weights = LossWeights(hod=1.0, top_k=5)
    head = lambda x: x @ lm_head.weight[vocab].T  # noqa: E731
    full_rows = []

    def counting_head(x):  # the target's full lm_head, counting the rows it projects
        full_rows.append(x.shape[0])
        return lm_head(x)

    first, first_grads = _run(draft, lambda: hca_losses(draft, counting_head, *args, steps, weights, vocab=vocab,
                                                        draft_head=head))
    top1 = first[0]["target_top1"]
    assert full_rows and top1.shape == (sum(full_rows),)
    full_rows.clear()
    again, again_grads = _run(draft, lambda: hca_losses(draft, counting_head, *args, steps, weights, vocab=vocab,
                                                        draft_head=head, target_top1=top1.int()))
    assert full_rows == []  # the full projection did not run
    assert torch.equal(again[0]["target_top1"], top1)
    for a, b in zip(first, again):
        for key in ("loss", "reg", "cls", "topk", "acc", "outside"):
            torch.testing.assert_close(a[key], b[key], rtol=1e-6, atol=1e-7)
    for name in first_grads:
        torch.testing.assert_close(first_grads[name], again_grads[name], rtol=1e-5, atol=1e-7, msg=name)
    with pytest.raises(ValueError, match="one id per loss position"):
        hca_losses(draft, lm_head, *args, steps, weights, vocab=vocab, draft_head=head, target_top1=top1[:-1])
    with pytest.raises(ValueError, match="needs a draft vocabulary"):
        hca_losses(draft, lm_head, *args, steps, weights, target_top1=top1)
