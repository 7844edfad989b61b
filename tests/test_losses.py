"""Each loss term against a hand computation on tiny tensors (docs/METHOD.md section 2)."""
import math

import pytest
import torch

from hass.losses import (EPS, LossWeights, feature_noise, loss_positions, masked_mean, regression_loss, shift_left,
                         soft_cross_entropy, step_loss, top1_accuracy, top_k_loss)


def test_masked_mean_divides_by_mask_sum_plus_eps():
    values = torch.tensor([1.0, 2.0, 3.0])
    assert masked_mean(values, torch.tensor([1.0, 0.0, 1.0])).item() == pytest.approx(4.0 / (2 + EPS), rel=1e-7)
    assert masked_mean(values, torch.zeros(3)).item() == 0.0  # all masked: 0, not NaN


def test_loss_positions_drop_padding_and_last_real_position():
    loss_mask = torch.tensor([[0, 1, 1, 1], [1, 1, 1, 0]])
    valid = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])
    expected = torch.tensor([[0, 1, 1, 0], [1, 1, 0, 0]], dtype=torch.float)
    assert torch.equal(loss_positions(loss_mask, valid), expected)


def test_shift_left():
    x = torch.arange(6.0).reshape(1, 3, 2)
    assert torch.equal(shift_left(x), torch.tensor([[[2.0, 3.0], [4.0, 5.0], [0.0, 0.0]]]))


def test_regression_is_smooth_l1_beta_1_mean_over_hidden():
    g = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    f = torch.tensor([[0.5, 3.0], [9.0, 9.0]])
    # row 0: 0.5 * 0.5^2 = 0.125 and |3| - 0.5 = 2.5 -> mean 1.3125; row 1 is masked out
    got = regression_loss(g, f, torch.tensor([1.0, 0.0]))
    assert got.item() == pytest.approx(1.3125 / (1 + EPS), rel=1e-6)


def test_soft_cross_entropy_by_hand():
    p = torch.tensor([[0.5, 0.5, 0.0]])
    logq = torch.log(torch.tensor([[0.25, 0.25, 0.5]]))
    assert soft_cross_entropy(p, logq, torch.ones(1)).item() == pytest.approx(math.log(4) / (1 + EPS), rel=1e-6)


def test_top_k_uses_target_top_k_without_renormalisation():
    p = torch.tensor([[0.1, 0.6, 0.3, 0.0]])
    q = torch.tensor([[0.4, 0.1, 0.2, 0.3]])  # the draft's own top-2 (0, 3) must not matter
    expected = -(0.6 * math.log(0.1) + 0.3 * math.log(0.2))
    got = top_k_loss(p, q.log(), torch.ones(1), k=2)
    assert got.item() == pytest.approx(expected / (1 + EPS), rel=1e-6)
    # K = vocabulary size gives back the soft cross-entropy
    assert top_k_loss(p, q.log(), torch.ones(1), k=4).item() == pytest.approx(
        soft_cross_entropy(p, q.log(), torch.ones(1)).item(), rel=1e-6)


def test_top1_accuracy_counts_argmax_agreement_on_masked_positions():
    p = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3]])
    logq = torch.tensor([[0.0, -1.0], [0.0, -1.0], [-5.0, 0.0]])
    assert top1_accuracy(p, logq, torch.tensor([1.0, 1.0, 0.0])).item() == pytest.approx(0.5, rel=1e-4)


def test_step_loss_combines_terms_with_weights():
    torch.manual_seed(0)
    g, f = torch.randn(5, 4), torch.randn(5, 4)
    p = torch.softmax(torch.randn(5, 7), -1)
    logits = torch.randn(5, 7)
    mask = torch.tensor([1.0, 1.0, 0.0, 1.0, 0.0])
    logq = torch.log_softmax(logits, -1)
    reg, cls, topk = regression_loss(g, f, mask), soft_cross_entropy(p, logq, mask), top_k_loss(p, logq, mask, 3)
    hass = step_loss(g, f, p, logits, mask, LossWeights(hod=1.0, top_k=3))
    assert hass["loss"].item() == pytest.approx((reg + 0.1 * cls + topk).item(), rel=1e-6)
    eagle = step_loss(g, f, p, logits, mask, LossWeights(hod=0.0, top_k=3))
    assert eagle["loss"].item() == pytest.approx((reg + 0.1 * cls).item(), rel=1e-6)
    assert eagle["topk"].item() == pytest.approx(topk.item(), rel=1e-6)  # still reported


def test_masked_form_equals_selected_rows():
    torch.manual_seed(1)
    g, f = torch.randn(2, 6, 4), torch.randn(2, 6, 4)
    p, logits = torch.softmax(torch.randn(2, 6, 9), -1), torch.randn(2, 6, 9)
    mask = (torch.rand(2, 6) > 0.5).float()
    full = step_loss(g, f, p, logits, mask, LossWeights())
    sel = mask.bool()
    rows = step_loss(g[sel], f[sel], p[sel], logits[sel], torch.ones(int(mask.sum())), LossWeights())
    for key in full:
        assert full[key].item() == pytest.approx(rows[key].item(), rel=1e-6)


def test_feature_noise_amplitude_scales_with_length():
    f = torch.zeros(2, 3000, 8)
    noised = feature_noise(f, torch.tensor([512, 1024]), torch.Generator().manual_seed(0))
    # (U - 0.5) * 0.2 * 512 / L: within +-0.1 for L = 512, +-0.05 for L = 1024, centred on 0
    assert noised[0].abs().max() <= 0.1 and noised[0].abs().max() > 0.099
    assert noised[1].abs().max() <= 0.05 and noised[1].abs().max() > 0.0495
    assert abs(noised[0].mean().item()) < 1e-3
    again = feature_noise(f, torch.tensor([512, 1024]), torch.Generator().manual_seed(0))
    assert torch.equal(noised, again)


def test_loss_weights_validate():
    with pytest.raises(ValueError):
        LossWeights(top_k=0)
    with pytest.raises(ValueError):
        LossWeights(hod=-1.0)
