"""One preallocated KV cache for target and draft: append by position, crop, compact-by-indices.

The buffers are allocated once per generation. A forward appends its keys/values after the current length
and attends over the returned views ``[:length]``; nothing grows by concatenation. After verification the
accepted tree nodes are moved to the slots right after the old context (``compact``); rejected nodes are
left behind as garbage that later writes overwrite, exactly like gpt-fast's static cache.
"""
from __future__ import annotations

import torch
from transformers.cache_utils import Cache, CacheLayerMixin


class PreallocatedLayer(CacheLayerMixin):
    """Keys/values of one attention layer in buffers of shape (B, kv_heads, capacity, head_dim)."""

    def __init__(self, capacity: int):
        super().__init__()
        self.capacity = capacity
        self.length = 0

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        b, h, _, dk = key_states.shape
        self.keys = key_states.new_empty((b, h, self.capacity, dk))
        self.values = value_states.new_empty((b, h, self.capacity, value_states.shape[-1]))
        self.is_initialized = True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        start, end = self.length, self.length + key_states.shape[-2]
        if end > self.capacity:
            raise RuntimeError(f"KV cache overflow: {end} positions needed, capacity {self.capacity}")
        self.keys[:, :, start:end] = key_states
        self.values[:, :, start:end] = value_states
        self.length = end
        return self.keys[:, :, :end], self.values[:, :, :end]

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.length + query_length, 0

    def get_seq_length(self) -> int:
        return self.length

    def get_max_length(self) -> int:
        return self.capacity

    def reset(self) -> None:
        self.length = 0


class KVCache(Cache):
    """A transformers ``Cache`` whose layers are preallocated buffers (see module docstring)."""

    def __init__(self, num_layers: int, capacity: int):
        super().__init__(layers=[PreallocatedLayer(capacity) for _ in range(num_layers)])
        self.capacity = capacity

    @property
    def length(self) -> int:
        return self.layers[0].length

    def crop(self, length: int) -> None:
        """Forget everything after ``length`` (the slots are reused by the next write)."""
        if not 0 <= length <= self.length:
            raise ValueError(f"cannot crop a cache of length {self.length} to {length}")
        for layer in self.layers:
            layer.length = length

    def compact(self, start: int, keep: torch.Tensor) -> None:
        """Keep the entries at ``start + keep`` (keep: ascending relative indices) in slots start.. and crop.

        Used after verification: ``start`` is the context length before the tree forward and ``keep`` the
        accepted path's node indices (root first), so the cache ends up holding exactly the accepted tokens.
        """
        n = keep.numel()
        src = keep + start  # (n,)
        for layer in self.layers:
            if not layer.is_initialized:
                continue
            # index_select copies, so overlapping source and destination slots are safe
            layer.keys[:, :, start : start + n] = layer.keys.index_select(2, src)
            layer.values[:, :, start : start + n] = layer.values.index_select(2, src)
            layer.length = start + n
