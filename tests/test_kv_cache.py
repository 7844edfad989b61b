"""Tree forward through the target == sequential forward, node by node; compaction keeps the accepted path."""
import torch

from conftest import tiny_target
from hass import hf
from hass.kv_cache import KVCache
from hass.tree import build_tree


def sequential_logits(target, ids):
    with torch.no_grad():
        return target(ids).logits[0].float()  # (T, V), plain causal forward, no cache


def test_tree_forward_equals_sequential_forward(family):
    target = tiny_target(family, seed=5)
    prompt = torch.randint(0, 128, (1, 6))
    # root (the token after the prompt) with a small two-level tree below it
    tokens = torch.tensor([11, 12, 13, 14, 15, 16, 17])
    tree = build_tree(tokens, torch.tensor([-1, 0, 0, 1, 1, 2, 5]))
    cache = hf.new_cache(target.config, 32)
    with torch.no_grad():
        n = prompt.shape[1]
        causal = hf.additive_mask(torch.ones(n, n, dtype=torch.bool).tril(), torch.float32)[None, None]
        hf.target_forward(target, prompt, torch.arange(n)[None], causal, cache)
        keep = torch.cat([torch.ones(tree.size, n, dtype=torch.bool), tree.mask], dim=1)
        features, logits = hf.target_forward(target, tokens[None], (n + tree.depths)[None],
                                             hf.additive_mask(keep, torch.float32)[None, None], cache)
    for node in range(tree.size):
        path = []  # root .. node
        i = node
        while i >= 0:
            path.append(i)
            i = int(tree.parents[i])
        path.reverse()
        seq = torch.cat([prompt, tokens[path][None]], dim=1)
        torch.testing.assert_close(logits[0, node], sequential_logits(target, seq)[-1], rtol=1e-4, atol=1e-4)


def test_compaction_keeps_exactly_the_accepted_path(family):
    target = tiny_target(family, seed=6)
    prompt = torch.randint(0, 128, (1, 5))
    tokens = torch.tensor([21, 22, 23, 24, 25])
    tree = build_tree(tokens, torch.tensor([-1, 0, 0, 2, 3]))
    accepted = torch.tensor([0, 2, 3])  # root -> node 2 -> node 3
    cache = hf.new_cache(target.config, 32)
    with torch.no_grad():
        n = 5
        causal = hf.additive_mask(torch.ones(n, n, dtype=torch.bool).tril(), torch.float32)[None, None]
        hf.target_forward(target, prompt, torch.arange(n)[None], causal, cache)
        keep = torch.cat([torch.ones(5, n, dtype=torch.bool), tree.mask], dim=1)
        hf.target_forward(target, tokens[None], (n + tree.depths)[None], hf.additive_mask(keep, torch.float32)[None, None], cache)
        cache.compact(n, accepted)
        assert cache.length == 8
        # the compacted cache must equal the cache of a plain forward over prompt + accepted tokens
        ref = hf.new_cache(target.config, 32)
        seq = torch.cat([prompt, tokens[accepted][None]], dim=1)
        causal = hf.additive_mask(torch.ones(8, 8, dtype=torch.bool).tril(), torch.float32)[None, None]
        hf.target_forward(target, seq, torch.arange(8)[None], causal, ref)
    for got, want in zip(cache.layers, ref.layers):
        torch.testing.assert_close(got.keys[:, :, :8], want.keys[:, :, :8], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(got.values[:, :, :8], want.values[:, :, :8], rtol=1e-5, atol=1e-5)


def test_cache_append_crop_compact_unit():
    cache = KVCache(num_layers=2, capacity=10)
    k = torch.arange(6.0).reshape(1, 1, 6, 1)
    for layer in range(2):
        keys, values = cache.update(k, -k, layer)
        assert keys.shape[2] == 6
    cache.compact(2, torch.tensor([0, 2, 3]))  # keep slots 2, 4, 5 at 2, 3, 4
    assert cache.length == 5
    assert cache.layers[0].keys[0, 0, :5, 0].tolist() == [0, 1, 2, 4, 5]
    cache.crop(3)
    keys, _ = cache.update(torch.full((1, 1, 2, 1), 9.0), torch.zeros(1, 1, 2, 1), 0)
    assert keys[0, 0, :, 0].tolist() == [0, 1, 2, 9, 9]
    try:
        cache.update(torch.zeros(1, 1, 8, 1), torch.zeros(1, 1, 8, 1), 1)
    except RuntimeError as e:
        assert "overflow" in str(e)
    else:
        raise AssertionError("writing past the capacity must fail")
