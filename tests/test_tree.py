"""Tree construction as pure functions, on hand-made score tables."""
import torch

from hass import TreeConfig
from hass.tree import build_tree, children_lists, select_tree


def test_select_keeps_best_and_orders_parents_first():
    # candidates 0..2: level 1 (parent root); 3..5: children of candidate 0; 6..8: children of candidate 1
    tokens = torch.tensor([10, 11, 12, 20, 21, 22, 30, 31, 32])
    scores = torch.tensor([-0.1, -0.5, -3.0, -0.2, -0.9, -4.0, -0.6, -2.0, -5.0])
    parents = torch.tensor([-1, -1, -1, 0, 0, 0, 1, 1, 1])
    tree = select_tree(99, tokens, scores, parents, total_tokens=6)
    # best 5: c0 (-0.1), c3 (-0.2), c1 (-0.5), c6 (-0.6), c4 (-0.9); kept in candidate order 0,1,3,4,6
    assert tree.tokens.tolist() == [99, 10, 11, 20, 21, 30]
    assert tree.parents.tolist() == [-1, 0, 0, 1, 1, 2]
    assert tree.depths.tolist() == [0, 1, 1, 2, 2, 2]
    expected_mask = torch.tensor([
        [1, 0, 0, 0, 0, 0],
        [1, 1, 0, 0, 0, 0],
        [1, 0, 1, 0, 0, 0],
        [1, 1, 0, 1, 0, 0],
        [1, 1, 0, 0, 1, 0],
        [1, 0, 1, 0, 0, 1],
    ], dtype=torch.bool)
    assert torch.equal(tree.mask, expected_mask)
    assert sorted(tree.paths.tolist()) == [[0, 1, 3], [0, 1, 4], [0, 2, 5]]


def test_ties_keep_the_parent():
    # a child scored equal to its parent (log q = 0) must not be kept without the parent
    tokens = torch.tensor([1, 2, 3])
    scores = torch.tensor([-1.0, -2.0, -1.0])
    parents = torch.tensor([-1, -1, 0])
    tree = select_tree(0, tokens, scores, parents, total_tokens=3)
    assert tree.tokens.tolist() == [0, 1, 3]
    assert tree.parents.tolist() == [-1, 0, 1]


def test_paths_are_padded_and_cover_every_leaf():
    tree = build_tree(torch.arange(6), torch.tensor([-1, 0, 1, 2, 0, 4]))
    assert tree.paths.tolist() == [[0, 1, 2, 3], [0, 4, 5, -1]]
    assert children_lists(tree.parents) == [[1, 4], [2], [3], [], [5], []]


def test_chain_and_single_node():
    chain = build_tree(torch.tensor([5, 6, 7]), torch.tensor([-1, 0, 1]))
    assert chain.paths.tolist() == [[0, 1, 2]]
    assert torch.equal(chain.mask, torch.ones(3, 3, dtype=torch.bool).tril())
    root = build_tree(torch.tensor([5]), torch.tensor([-1]))
    assert root.paths.tolist() == [[0]] and root.depths.tolist() == [0]


def test_tree_config_limits():
    assert TreeConfig().max_total_tokens == 1 + 10 + 5 * 100
    assert TreeConfig(total_tokens=7, depth=6, top_k=1).max_total_tokens == 7
