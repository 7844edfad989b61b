"""Typed, self-validating settings for generation: the draft tree and the sampling rule."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TreeConfig:
    """Shape of the EAGLE-2 dynamic draft tree (docs/METHOD.md section 5).

    total_tokens: nodes verified per target forward, root (the last accepted token) included.
    depth: drafted levels below the root, so at most depth + 1 tokens are accepted per forward.
    top_k: children proposed per expanded node, and nodes expanded per level.
    min_prob: confidence bound (0 = off, the fixed EAGLE-2 tree): nodes whose draft probability along their path
        (the product of q over their ancestors and themselves) is below it are not sent to the target, and the
        expansion stops once no frontier node reaches it. Output stays lossless whatever the bound: it only
        changes which drafts are verified.
    The HASS paper's setting is 60 / 6 / 10.
    """

    total_tokens: int = 60
    depth: int = 6
    top_k: int = 10
    min_prob: float = 0.0

    def __post_init__(self):
        for name in ("total_tokens", "depth", "top_k"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"TreeConfig.{name} must be an int, got {value!r}")
        if not isinstance(self.min_prob, (int, float)) or isinstance(self.min_prob, bool) or not 0 <= self.min_prob < 1:
            raise ValueError(f"TreeConfig.min_prob must be a number in [0, 1), got {self.min_prob!r}")
        if self.depth < 1:
            raise ValueError(f"TreeConfig.depth must be >= 1, got {self.depth}")
        if self.top_k < 1:
            raise ValueError(f"TreeConfig.top_k must be >= 1, got {self.top_k}")
        if self.total_tokens < 2:
            raise ValueError(f"TreeConfig.total_tokens must be >= 2 (root + one draft), got {self.total_tokens}")
        if self.total_tokens > self.max_total_tokens:
            raise ValueError(
                f"TreeConfig.total_tokens={self.total_tokens} is more than depth={self.depth} and "
                f"top_k={self.top_k} can produce: at most 1 + top_k + (depth - 1) * top_k**2 = "
                f"{self.max_total_tokens}"
            )

    @classmethod
    def parse(cls, text: str) -> "TreeConfig":
        """A tree written TOTAL/DEPTH/TOP_K, e.g. ``"8/4/2"``, optionally with a confidence bound: ``"8/4/2@0.05"``."""
        shape, _, bound = text.strip().partition("@")
        try:
            total, depth, top_k = (int(x) for x in shape.split("/"))
            min_prob = float(bound) if bound else 0.0
        except ValueError:
            raise ValueError(f"a tree is TOTAL/DEPTH/TOP_K[@MIN_PROB], e.g. 8/4/2 or 8/4/2@0.05; "
                             f"got {text.strip()!r}") from None
        return cls(total, depth, top_k, min_prob)

    @property
    def max_total_tokens(self) -> int:
        """Root + every candidate the expansion scores: top_k at level 1, top_k**2 at each deeper level."""
        return 1 + self.top_k + (self.depth - 1) * self.top_k**2

    def check_vocab(self, vocab_size: int) -> None:
        if self.top_k > vocab_size:
            raise ValueError(f"TreeConfig.top_k={self.top_k} is above the vocabulary size {vocab_size}")


@dataclass(frozen=True)
class SamplingConfig:
    """How the target's next-token distribution is processed: temperature, then top-k, then top-p.

    temperature == 0 means greedy decoding (top_k / top_p are then irrelevant). top_k == 0 disables it.
    """

    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0

    def __post_init__(self):
        if not (self.temperature >= 0.0):  # also catches NaN
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not (0.0 < self.top_p <= 1.0):
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if not isinstance(self.top_k, int) or self.top_k < 0:
            raise ValueError(f"top_k must be an int >= 0 (0 disables it), got {self.top_k!r}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0
