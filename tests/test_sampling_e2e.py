"""Sampling through the whole loop is lossless: the joint law of the first two generated tokens equals the
target's exact processed distribution (chi-square), and the test has the power to see a 10% temperature change."""
import numpy as np
import pytest
import torch
from scipy.stats import chisquare

from conftest import tiny_draft, tiny_target
from hass import HassModel, TreeConfig
from hass.config import SamplingConfig
from hass.verify import process_logits

VOCAB = 5
# A 10% temperature change moves this joint law by a chi-square noncentrality of ~0.011-0.016 per sample (seed and scale chosen for that),
# so detecting it takes thousands of samples (the test asserts that it does).
N_SAMPLES = 6000


def exact_joint(target, prompt, sampling):
    with torch.no_grad():
        p1 = process_logits(target(prompt).logits[0, -1], sampling).double()
        seqs = torch.cat([prompt.repeat(VOCAB, 1), torch.arange(VOCAB)[:, None]], dim=1)
        p2 = process_logits(target(seqs).logits[:, -1], sampling).double()  # (V, V): p(x2 | x1)
    return (p1[:, None] * p2).flatten().numpy()


def pvalue(counts, p):
    support = p > 0
    if counts[~support].sum() > 0:
        return 0.0
    return chisquare(counts[support], p[support] / p[support].sum() * counts.sum()).pvalue


@pytest.mark.slow
@pytest.mark.parametrize("temperature,top_k,top_p", [(1.0, 0, 1.0), (0.7, 3, 1.0), (1.0, 0, 0.9)])
def test_joint_of_first_two_tokens(temperature, top_k, top_p):
    target = tiny_target("llama", seed=1, vocab_size=VOCAB)
    with torch.no_grad():  # moderate logits: neither flat nor near-deterministic
        target.get_output_embeddings().weight.mul_(3.0)
    model = HassModel(target, tiny_draft(target, seed=12))
    prompt = torch.tensor([[1, 3, 2]])
    sampling = SamplingConfig(temperature, top_p, top_k)
    gen = torch.Generator().manual_seed(0)
    counts = np.zeros(VOCAB * VOCAB)
    for _ in range(N_SAMPLES):
        out = model.generate(prompt, max_new_tokens=2, temperature=temperature, top_k=top_k, top_p=top_p,
                             tree=TreeConfig(total_tokens=6, depth=3, top_k=2), eos_token_id=[], generator=gen)
        x1, x2 = out.sequences[0, 3:].tolist()
        counts[x1 * VOCAB + x2] += 1
    p_same = pvalue(counts, exact_joint(target, prompt, sampling))
    # power: the same samples must reject the target at a 10% different temperature
    p_shifted = pvalue(counts, exact_joint(target, prompt, SamplingConfig(temperature * 1.1, top_p, top_k)))
    assert p_same > 1e-3 and p_shifted < 1e-3, (p_same, p_shifted)
