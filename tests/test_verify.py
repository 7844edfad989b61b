"""Verification as pure functions: greedy on hand-made trees, sampling statistics, logits processing."""
import numpy as np
import pytest
import torch
from scipy.stats import chisquare
from transformers.generation.logits_process import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

from hass.config import SamplingConfig
from hass.tree import build_tree
from hass.verify import process_logits, verify_greedy, verify_sampling


def one_hot_logits(preds, vocab=8):
    logits = torch.full((len(preds), vocab), -5.0)
    logits[torch.arange(len(preds)), torch.tensor(preds)] = 5.0
    return logits


def test_greedy_takes_longest_accepted_prefix():
    # root 0 -> nodes 1 (tok 3), 2 (tok 4); 1 -> 3 (tok 5); 2 -> 4 (tok 6) -> 5 (tok 7)
    tree = build_tree(torch.tensor([9, 3, 4, 5, 6, 7]), torch.tensor([-1, 0, 0, 1, 2, 4]))
    # target argmax per node: root->4, node1->5, node2->6, node3->1, node4->7, node5->2
    for on_device in (False, True):
        nodes, path, bonus = verify_greedy(tree, one_hot_logits([4, 5, 6, 1, 7, 2], vocab=10), on_device)
        assert nodes.tolist() == path == [0, 2, 4, 5] and bonus == 2
        # target disagrees with every level-1 draft: only the bonus token
        nodes, path, bonus = verify_greedy(tree, one_hot_logits([8, 5, 6, 1, 7, 2], vocab=10), on_device)
        assert nodes.tolist() == path == [0] and bonus == 8


def test_process_logits_matches_transformers_warpers():
    torch.manual_seed(0)
    logits = torch.randn(5, 50) * 3
    for t, k, p in [(1.0, 0, 1.0), (0.7, 5, 1.0), (1.0, 0, 0.8), (1.3, 7, 0.6), (0.5, 1, 0.9)]:
        x = TemperatureLogitsWarper(t)(None, logits.clone())
        if k:
            x = TopKLogitsWarper(k)(None, x)
        if p < 1:
            x = TopPLogitsWarper(p)(None, x)
        torch.testing.assert_close(process_logits(logits, SamplingConfig(t, p, k)), x.softmax(-1))


def test_top_k_then_top_p_on_the_kept_entries_equals_the_full_sort_with_ties_falling_back():
    torch.manual_seed(1)
    logits = torch.randn(4, 300) * 2
    logits[3, :6] = 5.0  # a tie across the k-th value: more than k tokens kept
    for t, k, p in [(1.0, 50, 0.9), (0.8, 10, 0.5), (1.2, 1, 0.9), (1.0, 5, 0.999)]:
        x = TemperatureLogitsWarper(t)(None, logits.clone())
        x = TopPLogitsWarper(p)(None, TopKLogitsWarper(k)(None, x))
        for sync_free in (None, True, False):  # the host-read tie check (CPU) and the per-row device selection
            got = process_logits(logits, SamplingConfig(t, p, k), sync_free=sync_free)
            torch.testing.assert_close(got, x.softmax(-1))
            for row in range(4):  # one row at a time, as the rejection walk asks
                torch.testing.assert_close(process_logits(logits[row], SamplingConfig(t, p, k), sync_free=sync_free),
                                           x[row].softmax(-1))


@pytest.mark.parametrize("sampling", [SamplingConfig(1.0), SamplingConfig(0.7, 1.0, 4), SamplingConfig(1.0, 0.8)])
def test_sampling_emits_the_target_distribution(sampling):
    """First emitted token ~ p(root); given it is drafted child c, the next one ~ p(c). Chi-square, 20k draws."""
    torch.manual_seed(1)
    vocab = 6
    # root's children tokens 0, 1, 2; node 1 (token 0) has children tokens 3, 4; node 2 (token 1) is a leaf
    tree = build_tree(torch.tensor([5, 0, 1, 2, 3, 4]), torch.tensor([-1, 0, 0, 0, 1, 1]))
    logits = torch.randn(6, vocab) * 1.5
    logits[0, :2] += 3.0  # keep the drafted tokens 0 and 1 in the root's top-k / top-p support
    probs = process_logits(logits, sampling).double().numpy()
    gen = torch.Generator().manual_seed(2)
    n = 20000
    first = np.zeros(vocab)
    second_after = {0: np.zeros(vocab), 1: np.zeros(vocab)}
    for _ in range(n):
        nodes, path, bonus = verify_sampling(tree, logits, sampling, gen)
        assert nodes.tolist() == path
        emitted = tree.tokens[nodes[1:]].tolist() + [bonus]
        first[emitted[0]] += 1
        if len(emitted) > 1 and emitted[0] in second_after:
            second_after[emitted[0]][emitted[1]] += 1
    _check(first, probs[0])
    _check(second_after[0], probs[1])  # after accepting node 1 (token 0): p at node 1
    _check(second_after[1], probs[2])  # after accepting node 2 (token 1): p at node 2 (a leaf)


def _check(counts, p, alpha=1e-3):
    support = p > 0
    assert counts[~support].sum() == 0, "sampled a token the processed distribution excludes"
    assert counts.sum() > 1000, "too few samples for the test to have power"
    expected = p[support] / p[support].sum() * counts.sum()
    assert chisquare(counts[support], expected).pvalue > alpha
