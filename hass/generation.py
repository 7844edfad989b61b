"""HassModel: one generation loop for speculative (target + draft) and plain (target only) decoding.

Each cycle: the draft expands a dynamic tree below the last accepted token (the root); the target scores the
whole tree in one forward (tree attention mask + explicit position ids); verification picks the accepted path
and a bonus token; both KV caches keep exactly the accepted context. Without a draft the tree is the root
alone, so the vanilla baseline runs through the same loop and cache.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from . import hf
from .config import SamplingConfig, TreeConfig
from .draft import DraftModel
from .draft_vocab import check_draft_vocab, draft_vocab_from, trained_vocab_size
from .errors import CheckpointError
from .affine import AffineLinear
from .kernels import (PackedLinear, apply_cpu_kernels, can_pack_weight, kernels_of, pack_draft,
                      resolve_cpu_kernels)
from .precision import fast_draft_dtype
from .tree import Tree, build_tree, select_tree
from .verify import NodeLogits, internal_nodes, process_logits, sample, verify_greedy, verify_sampling


@dataclass
class GenerationOutput:
    sequences: torch.Tensor  # (1, prompt_len + new_tokens)
    new_tokens: int
    accept_lengths: list[int] = field(default_factory=list)  # tokens per target forward after the prefill
    tree_sizes: list[int] = field(default_factory=list)  # tokens each of those forwards verified (root included)
    tree_depths: list[int] = field(default_factory=list)  # and its deepest node's depth (0: plain decoding)

    @property
    def target_forwards(self) -> int:
        """Target forward passes, the prefill included."""
        return 1 + len(self.accept_lengths)


class Chunk(list):
    """The token ids one target forward added (what ``stream`` yields), with the tree it verified:
    ``tree_size`` tokens (the root included; the prompt's length for the prefill) whose deepest node sat at
    ``tree_depth`` (0 for the prefill and for plain decoding). A confidence-bounded tree varies in both."""

    def __init__(self, ids, tree_size: int, tree_depth: int):
        super().__init__(ids)
        self.tree_size, self.tree_depth = tree_size, tree_depth


class HassModel(nn.Module):
    """A Hugging Face causal LM (the target) plus an optional HASS/EAGLE draft.

    ``generate`` returns what the target alone would produce: token for token under greedy decoding in fp32,
    in distribution under sampling. In bf16 / fp16 the tree forward rounds differently from a one-token
    forward, so near-ties can break the other way (see ``from_pretrained``).
    """

    def __init__(self, target: nn.Module, draft: DraftModel | None = None, tokenizer=None,
                 draft_vocab: torch.Tensor | None = None):
        """``draft_vocab``: optional token ids the draft may propose (see hass.draft_vocab); None = all."""
        super().__init__()
        if draft is not None:
            draft.check_matches(target.config)
        if draft_vocab is not None:
            if draft is None:
                raise ValueError("draft_vocab restricts a draft's proposals, but there is no draft")
            draft_vocab = check_draft_vocab(draft_vocab, target.config.vocab_size).to(
                target.get_input_embeddings().weight.device)
        self.target = target.eval()
        self.draft = draft.eval() if draft is not None else None
        self.tokenizer = tokenizer
        self.register_buffer("draft_vocab", draft_vocab, persistent=False)  # moves with .to(device)
        # Fewer host reads (GPU syncs) for a little more compute: a greedy cycle projects a leaf's bonus row on the
        # device before its one read of the verdict (verify_greedy), and a confidence-bounded tree is pruned
        # without stopping its expansion early (expand_tree). None: on any device but the CPU, where a read
        # costs nothing and an lm_head row or a draft step does.
        self.fewer_reads: bool | None = None
        self.draft_path: str | None = None  # the draft folder, when loaded from one (auto_tree reads its acceptance)
        self.cpu_kernels = kernels_of(target)  # affine, onednn or default: what its linear layers run

    @classmethod
    def from_pretrained(
        cls,
        base_model_path: str | os.PathLike,
        draft_model_path: str | os.PathLike | None = None,
        dtype: torch.dtype = torch.bfloat16,
        device: str | torch.device = "cpu",
        attn_implementation: str = "sdpa",
        draft_dtype: torch.dtype | str | None = None,
        draft_vocab_size: int | str | None = None,
        device_map: str | dict | None = None,
        revision: str | None = None,
        trust_remote_code: bool = False,
        cpu_kernels: str = "auto",
        **target_kwargs,
    ) -> "HassModel":
        """Load the target (any transformers causal LM folder), its tokenizer, and a draft (or None).

        ``device_map`` (with any other ``target_kwargs``, e.g. ``offload_folder``), ``revision`` and
        ``trust_remote_code`` go to transformers' ``from_pretrained``: with a device map, accelerate places the
        target's layers (over several devices, or offloaded to CPU or disk), the KV cache allocates each layer's
        buffers where its keys are, and the draft runs on ``device``.
        ``cpu_kernels="onednn"`` packs the target's linear layers (and the draft's) for oneDNN (hass.kernels): on
        a CPU, tree forwards and prefills get 1.2-1.7x faster in fp32 (1.3-1.5x on a 2-core AVX2 CPU; slower in
        bf16, which needs oneDNN's bf16 on the CPU), one-token steps ~1.1x there; inference only.
        ``cpu_kernels="affine"`` multiplies the layers whose fp32 weights came from a 4- or 8-bit GGUF (the zoo's
        targets) from their codes instead (hass.affine: the same fp32 weights, decoded on the fly, 3-5x fewer bytes
        read; one-token forwards of SmolLM2 2x faster on 2 AVX2 cores), the other layers on oneDNN. The
        default ``"auto"`` is "affine" for an fp32 target on the CPU without a device map where its C++ product
        builds (once per machine, about a minute), else "onednn" there, else ``"default"`` (transformers' own
        modules); ``model.cpu_kernels`` says which ran (affine, onednn or default).

        ``dtype`` is the target's precision. In fp32 greedy output equals the target's own greedy decoding token
        for token (tested). In bf16 / fp16 a tree forward and a one-token forward round differently, so at a
        near-tie of the top two logits the output can differ from plain decoding in that dtype (measured on
        SmolLM2: within the first 40 tokens on 3 of 3 MT-bench questions); it is still the target's decoding,
        verified token by token, not the draft's.
        ``draft_dtype`` (default: ``dtype``) is the draft's, including the vocabulary projection it drafts
        with. It never changes the output, only the proposals: e.g. an fp32 target with a bf16 draft is exact
        fp32 decoding whose drafting runs on the CPU's bf16 matrix units. ``draft_dtype="auto"`` picks bf16
        where the device has bf16 matrix units (AMX / AVX512-BF16, a GPU) and fp32 elsewhere: a heuristic, since
        emulated bf16 can still win on small trees (hass.precision; measure with evaluation.cycle_cost).
        ``draft_vocab_size`` lets the draft propose only the N tokens most frequent in its training answers
        (``token_counts.safetensors`` in the draft folder; hass.draft_vocab): cheaper drafting when the
        vocabulary projection dominates it, and the output is unchanged. Default: the N the draft was trained
        over (``draft_vocab_size`` in its config.json), else the full vocabulary; ``"all"`` is the full vocabulary.
        """
        base = Path(base_model_path)
        if not (base / "config.json").is_file():
            raise CheckpointError(f"target model folder {str(base)!r} does not exist or has no config.json")
        draft_dtype = dtype if draft_dtype is None else draft_dtype
        if draft_dtype == "auto":
            draft_dtype = fast_draft_dtype(device)
        if not (isinstance(draft_dtype, torch.dtype) and draft_dtype.is_floating_point):
            raise TypeError(f"draft_dtype must be a floating torch.dtype or \"auto\", got {draft_dtype!r}")
        draft_vocab = None
        if draft_vocab_size is None and draft_model_path:  # a draft trained over N tokens drafts over them
            draft_vocab_size = trained_vocab_size(draft_model_path)
        if draft_vocab_size == "all":
            draft_vocab_size = None
        if draft_vocab_size is not None:  # checked before any weights load
            if not draft_model_path:
                raise ValueError("draft_vocab_size restricts a draft's proposals, but no draft_model_path is given")
            draft_vocab = draft_vocab_from(draft_model_path, draft_vocab_size,
                                           AutoConfig.from_pretrained(base).vocab_size)
        draft = (DraftModel.from_pretrained(draft_model_path, dtype=draft_dtype, device=device)
                 if draft_model_path else None)
        cpu_kernels = resolve_cpu_kernels(cpu_kernels, device, dtype, device_map)  # checked before any weights load
        hub = {"revision": revision, "trust_remote_code": trust_remote_code}
        target = AutoModelForCausalLM.from_pretrained(base, dtype=dtype, attn_implementation=attn_implementation,
                                                      device_map=device_map, **hub, **target_kwargs)
        if device_map is None:
            target.to(device)
        apply_cpu_kernels(target, cpu_kernels)  # "onednn" raises where it does not apply (a GPU, fp16)
        pack_draft(draft, cpu_kernels)
        try:
            tokenizer = AutoTokenizer.from_pretrained(base, **hub)
        except (OSError, ValueError):
            tokenizer = None  # a bare model folder: callers pass token ids
        model = cls(target, draft, tokenizer, draft_vocab)
        model.draft_path = str(draft_model_path) if draft_model_path else None  # where auto_tree reads acceptance
        model.cpu_kernels = kernels_of(target)  # what runs: "affine" leaves layers without the form on oneDNN
        return model

    @property
    def device(self) -> torch.device:
        return self.target.get_input_embeddings().weight.device

    def auto_tree(self, acceptance=None, refresh: bool = False, **kwargs):
        """The tree with the most expected tokens/s for this model on this machine (hass.auto_tree.auto_tree:
        the draft's recorded acceptance by depth x this machine's cycle times, timed once and cached). Returns a
        ``hass.auto_tree.Choice``; its ``tree`` is None where no tree beats plain decoding. ``generate(tree=
        "auto")`` uses it, chosen once per model."""
        from .auto_tree import auto_tree

        choice = auto_tree(self, acceptance, refresh=refresh, **kwargs)
        self.__dict__["_auto_choice"] = choice  # a plain attribute, as _projections
        return choice

    # ------------------------------------------------------------------ public API
    @torch.inference_mode()
    def generate(self, input_ids: torch.Tensor, **kwargs) -> GenerationOutput:
        """Generate until an eos token, ``max_new_tokens``, or the end of the model's context.

        Arguments as in ``stream``. Returns the sequences, the number of new tokens, and for every target forward
        after the prefill the tokens it added (accept length), the tokens it verified and the tree's depth.
        """
        steps = self.stream(input_ids, **kwargs)  # validates everything before any work
        prompt = input_ids.reshape(1, -1).to(self.device, torch.long)
        out = GenerationOutput(sequences=prompt, new_tokens=0)
        chunks = [prompt]
        for i, ids in enumerate(steps):
            if i > 0:
                out.accept_lengths.append(len(ids))
                out.tree_sizes.append(ids.tree_size)
                out.tree_depths.append(ids.tree_depth)
            out.new_tokens += len(ids)
            chunks.append(torch.tensor([ids], device=self.device))
        out.sequences = torch.cat(chunks, dim=1)
        return out

    def stream(
        self,
        input_ids: torch.Tensor,
        max_new_tokens: int = 512,
        temperature: float = 0.0,
        top_p: float = 1.0,
        top_k: int = 0,
        tree: TreeConfig | None = None,
        eos_token_id: int | Sequence[int] | None = None,
        generator: torch.Generator | None = None,
        include_eos: bool = True,
    ) -> Iterator[list[int]]:
        """Return an iterator over the newly accepted token ids of every target forward (the prefill's first), each
        a list (a ``Chunk``, which also says the size and depth of the tree that forward verified).

        input_ids: (1, T) or (T,) prompt. temperature 0 = greedy; top_p / top_k process the target's
        distribution as in transformers. tree: the draft tree shape (TreeConfig(60, 6, 10) by default; ignored
        without a draft), or ``"auto"``: the fastest for this machine (``auto_tree()``, timed once per model and
        cached on disk; plain decoding where no tree beats it). eos_token_id: int or list; default from the
        generation config / tokenizer.
        generator: a torch.Generator for reproducible sampling. include_eos=False leaves the final eos token
        out of what is yielded (for printing text; a chunk may then be empty). Bad input raises here, before any work.
        """
        prompt = self._check_inputs(input_ids, max_new_tokens)
        sampling = SamplingConfig(temperature=float(temperature), top_p=float(top_p), top_k=int(top_k))
        if isinstance(tree, str):
            if tree != "auto":
                raise ValueError(f"tree must be a hass.TreeConfig or \"auto\", got {tree!r}")
            tree_cfg = None
            if self.draft is not None:
                choice = self.__dict__.get("_auto_choice") or self.auto_tree()
                tree_cfg = choice.tree  # None: plain decoding is the fastest here
        else:
            tree_cfg = tree if tree is not None else TreeConfig()
            if not isinstance(tree_cfg, TreeConfig):
                raise TypeError(f"tree must be a hass.TreeConfig or \"auto\", got {type(tree_cfg).__name__}")
        if tree_cfg is not None:
            tree_cfg.check_vocab(self.target.config.vocab_size)
        if (self.draft is not None and self.draft_vocab is not None and tree_cfg is not None
                and tree_cfg.top_k > self.draft_vocab.numel()):
            raise ValueError(f"TreeConfig.top_k={tree_cfg.top_k} is above the draft vocabulary size "
                             f"{self.draft_vocab.numel()}")
        eos = self._eos_ids(eos_token_id)
        steps = self._decode(prompt, max_new_tokens, sampling, tree_cfg, eos, generator)
        if include_eos:
            return steps
        return ([t for t in ids if t not in eos] for ids in steps)  # an eos can only end the last chunk

    # ------------------------------------------------------------------ the loop
    @torch.inference_mode()
    def _decode(self, prompt, max_new_tokens, sampling, tree_cfg, eos, generator) -> Iterator[list[int]]:
        """tree_cfg None: plain decoding through the same loop, the draft left idle."""
        target, draft = self.target, self.draft if tree_cfg is not None else None
        if tree_cfg is None:
            tree_cfg = TreeConfig(2, 1, 1)  # sizes the caches only: no tree is drafted without a draft
        embed, lm_head = target.get_input_embeddings(), target.get_output_embeddings()
        dtype, device = embed.weight.dtype, prompt.device
        if draft is not None:  # the draft may run in another precision than the target (see from_pretrained)
            ddtype = draft.fc.weight.dtype
            draft_embed, draft_head = self._draft_projections(embed, lm_head, ddtype)
        n_prompt = prompt.shape[1]
        t_cache = hf.new_cache(target.config, n_prompt + max_new_tokens + tree_cfg.total_tokens + 1)
        d_cache = hf.new_cache(draft.config, n_prompt + max_new_tokens + tree_cfg.top_k * tree_cfg.depth + 2) if draft else None

        def pick(logits: torch.Tensor) -> int:  # (V,) -> a token from the processed distribution
            if sampling.greedy:
                return int(logits.argmax())
            return sample(process_logits(logits, sampling), generator)

        # prefill: target features of the whole prompt, and the first new token from its last position. No
        # mask is passed: the model builds its own causal one (SDPA's is_causal path materialises no
        # prompt x prompt matrix, which would be 4 GB for a 32k prompt in fp32).
        positions = torch.arange(n_prompt, device=device)[None]
        features, logits = hf.target_forward(target, prompt, positions, None, t_cache, n_prompt - 1)
        root = pick(logits[0, -1])
        produced = 1
        yield Chunk([root], n_prompt, 0)
        if root in eos or produced >= max_new_tokens:
            return
        context = n_prompt  # tokens with target KV; the root is the next one
        if draft is not None:  # the draft consumes pairs (f_t, x_{t+1}) for t < context
            next_tokens = torch.cat([prompt[:, 1:], prompt.new_tensor([[root]])], dim=1)
            hidden = draft(features.to(ddtype), draft_embed(next_tokens), positions, None, d_cache)[:, -1]  # (1, h)

        limit = getattr(target.config, "max_position_embeddings", None)
        fewer_reads = self.fewer_reads if self.fewer_reads is not None else device.type != "cpu"
        while True:
            cycle_cfg = tree_cfg if limit is None else _fit_tree(tree_cfg, limit - 1 - context)
            if draft is not None and cycle_cfg is not None:
                tree = expand_tree(draft, draft_embed, draft_head, hidden, d_cache, root, cycle_cfg, self.draft_vocab,
                                   stop_early=not fewer_reads)
            else:
                tree = _root_only(root, device)
            keep = torch.cat([torch.ones(tree.size, context, dtype=torch.bool, device=device), tree.mask], dim=1)
            features, _ = hf.target_forward(
                target, tree.tokens[None], (context + tree.depths)[None], hf.additive_mask(keep, dtype)[None, None],
                t_cache, logits_from=None,
            )
            # lm_head only where verification reads it: the internal nodes in one product (verify_greedy asks for
            # them at once; sampling visits them one by one, so they are projected first), the bonus row if a leaf's
            logits = NodeLogits(features[0], lm_head)
            if sampling.greedy:
                nodes, path, bonus = verify_greedy(tree, logits, bonus_on_device=fewer_reads)
            else:
                logits.prefetch(internal_nodes(tree))
                nodes, path, bonus = verify_sampling(tree, logits, sampling, generator)
            t_cache.compact(context, nodes)
            new = [tree.host_tokens[i] for i in path[1:]] + [bonus]
            emitted = _truncate(new, eos, max_new_tokens - produced)
            produced += len(emitted)
            yield Chunk(emitted, tree.size, tree.host_depth)
            if len(emitted) < len(new) or emitted[-1] in eos or produced >= max_new_tokens:
                return
            if draft is not None:
                d_cache.crop(context)
                n = nodes.numel()
                next_tokens = torch.tensor([new], device=device)
                pos = torch.arange(context, context + n, device=device)[None]
                hidden = draft(features[:, nodes].to(ddtype), draft_embed(next_tokens), pos, None, d_cache)[:, -1]
            context += nodes.numel()
            root = bonus

    def _draft_projections(self, embed, lm_head, ddtype):
        """draft_projections, prepared once per model: the cast (and trimmed) lm_head copy is reused by every
        call as long as the weights, the draft dtype, the draft vocabulary and the device stay the same."""
        vocab = self.draft_vocab
        key = (ddtype, lm_head.weight.data_ptr(), lm_head.weight._version, lm_head.weight.device,
               None if vocab is None else (vocab.data_ptr(), vocab.numel(), vocab.device))
        cached = self.__dict__.get("_projections")
        if cached is None or cached[0] != key:
            cached = (key, draft_projections(embed, lm_head, ddtype, vocab))
            self.__dict__["_projections"] = cached  # a plain attribute: not a module, buffer or state
        return cached[1]

    # ------------------------------------------------------------------ checks
    def _check_inputs(self, input_ids, max_new_tokens) -> torch.Tensor:
        if not isinstance(input_ids, torch.Tensor):
            raise TypeError(f"input_ids must be a torch.Tensor of token ids, got {type(input_ids).__name__}")
        if input_ids.dim() == 2 and input_ids.shape[0] != 1:
            raise ValueError(f"batch size must be 1, got input_ids of shape {tuple(input_ids.shape)}")
        if input_ids.dim() not in (1, 2):
            raise ValueError(f"input_ids must have shape (1, T) or (T,), got {tuple(input_ids.shape)}")
        if input_ids.dtype.is_floating_point or input_ids.dtype == torch.bool:
            raise TypeError(f"input_ids must hold integer token ids, got dtype {input_ids.dtype}")
        prompt = input_ids.reshape(1, -1).to(self.device, torch.long)
        if prompt.shape[1] == 0:
            raise ValueError("the prompt is empty: input_ids has no tokens")
        vocab = self.target.config.vocab_size
        bad = (prompt < 0) | (prompt >= vocab)
        if bad.any():
            raise ValueError(f"input_ids holds token id {int(prompt[bad][0])} outside the vocabulary [0, {vocab})")
        if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be an int >= 1, got {max_new_tokens!r}")
        limit = getattr(self.target.config, "max_position_embeddings", None)
        if limit is not None and prompt.shape[1] + max_new_tokens > limit:
            raise ValueError(
                f"prompt ({prompt.shape[1]} tokens) + max_new_tokens ({max_new_tokens}) is over the model's "
                f"maximum length {limit}"
            )
        return prompt

    def _eos_ids(self, eos_token_id) -> frozenset[int]:
        if eos_token_id is None:
            gen_cfg = getattr(self.target, "generation_config", None)
            eos_token_id = getattr(gen_cfg, "eos_token_id", None)
            if eos_token_id is None and self.tokenizer is not None:
                eos_token_id = self.tokenizer.eos_token_id
        if eos_token_id is None:
            return frozenset()
        ids = [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id)
        if not all(isinstance(i, int) and 0 <= i < self.target.config.vocab_size for i in ids):
            raise ValueError(f"eos_token_id must be token ids in the vocabulary, got {eos_token_id!r}")
        return frozenset(ids)


def expand_tree(
    draft: DraftModel,
    embed: Callable[[torch.Tensor], torch.Tensor],  # token ids -> E(x) in the draft dtype
    lm_head: Callable[[torch.Tensor], torch.Tensor],  # (*, h) -> (*, V) logits
    hidden: torch.Tensor,  # (1, h) the draft's output at the root's pair: its estimate of the root's feature
    cache,  # the draft's KVCache holding exactly the accepted context (length C)
    root: int,
    cfg: TreeConfig,
    vocab: torch.Tensor | None = None,  # (V',) token id of each lm_head output when it covers a draft vocabulary
    stop_early: bool = True,
) -> Tree:
    """EAGLE-2 expansion: depth - 1 batched draft forwards over the best top_k frontier nodes, then re-rank.

    Every fed node attends to the accepted context plus its own ancestors; the draft cache is cropped back to
    C afterwards, so the tree's scratch entries never outlive the cycle. With ``vocab``, ``lm_head`` scores only
    those tokens and q is the draft's distribution renormalised over them.

    With ``cfg.min_prob`` (the confidence bound), nodes scoring below log(min_prob) are left out of the tree,
    and, with ``stop_early``, the expansion stops at the first level whose best frontier node is below it (its
    children can only score lower). That check reads one number per level to the host; on a GPU the loop
    turns it off (fewer_reads) and only leaves the nodes out.
    """
    k, context = cfg.top_k, cache.length
    device = hidden.device
    to_ids = (lambda i: i) if vocab is None else (lambda i: vocab[i])
    logp = torch.log_softmax(lm_head(hidden).float(), dim=-1)[0]  # (V,)
    scores, tokens = logp.topk(k)  # level 1: (k,)
    tokens = to_ids(tokens)
    cand_tokens, cand_scores = [tokens], [scores]
    cand_parents = [torch.full((k,), -1, dtype=torch.long, device=device)]
    frontier = torch.arange(k, device=device)  # candidate indices of the nodes to expand
    feats = hidden.expand(k, -1)  # (k, h) each frontier node's input feature = its parent's output
    ancestry = torch.zeros(k, 0, dtype=torch.bool, device=device)  # (k, fed) over the nodes fed so far
    eye = torch.eye(k, dtype=torch.bool, device=device)
    n_cand = k
    bound = math.log(cfg.min_prob) if cfg.min_prob > 0 else None
    for step in range(1, cfg.depth):
        if bound is not None and stop_early and float(scores[0]) < bound:  # topk: scores[0] is the best
            break
        ancestry = torch.cat([ancestry, eye], dim=1)  # (k, fed + k)
        keep = torch.cat([torch.ones(k, context, dtype=torch.bool, device=device), ancestry], dim=1)
        position = torch.full((1, k), context - 1 + step, device=device)
        out = draft(feats[None], embed(tokens)[None], position,
                    hf.additive_mask(keep, feats.dtype)[None, None], cache)[0]  # (k, h)
        logp = torch.log_softmax(lm_head(out).float(), dim=-1)  # (k, V)
        child_lp, child_tok = logp.topk(k, dim=-1)  # (k, k)
        child_tok = to_ids(child_tok)
        child_scores = (scores[:, None] + child_lp).flatten()  # (k*k,)
        cand_tokens.append(child_tok.flatten())
        cand_scores.append(child_scores)
        cand_parents.append(frontier.repeat_interleave(k))
        scores, best = child_scores.topk(k)
        slot = best // k  # which frontier node each new frontier node descends from
        frontier = n_cand + best
        n_cand += k * k
        tokens = child_tok.flatten()[best]
        feats = out[slot]
        ancestry = ancestry[slot]
    cache.crop(context)
    return select_tree(root, torch.cat(cand_tokens), torch.cat(cand_scores), torch.cat(cand_parents), cfg.total_tokens,
                       bound)


def draft_projections(embed: nn.Module, lm_head: nn.Module, dtype: torch.dtype, vocab: torch.Tensor | None = None):
    """The target's embedding and vocabulary projection as the draft uses them, in the draft's dtype.

    Same dtype and no ``vocab``: the target's own modules. Otherwise the embedding output is cast, and
    lm_head's weight (its ``vocab`` rows only, when given) is copied in ``dtype`` (56 MB for SmolLM2's full
    vocabulary in bf16), so drafting runs fully in ``dtype``; HassModel keeps that copy across calls. When the
    target's lm_head is packed for oneDNN (``cpu_kernels="onednn"``), so is the copy, where oneDNN has ``dtype``;
    when it runs on affine codes (``cpu_kernels="affine"``) and the draft is fp32, the copy takes the codes of its
    rows (no fp32 copy of the weight is multiplied).
    """
    same = lm_head.weight.dtype == dtype
    if same and vocab is None:
        return embed, lm_head
    if isinstance(lm_head, AffineLinear) and dtype == torch.float32:  # here: fp32 with a vocab
        rows = vocab.to(lm_head.codes.device)
        return embed, lm_head.rows(rows)
    weight = lm_head.weight if vocab is None else lm_head.weight[vocab]
    bias = getattr(lm_head, "bias", None)
    if bias is not None and vocab is not None:
        bias = bias[vocab]
    weight = weight.to(dtype)
    bias = bias.to(dtype) if bias is not None else None
    embed_fn = embed if same else (lambda ids: embed(ids).to(dtype))
    if isinstance(lm_head, (PackedLinear, AffineLinear)) and can_pack_weight(weight):  # packed as the target
        linear = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, device=weight.device, dtype=dtype)
        linear.weight = nn.Parameter(weight, requires_grad=False)
        if bias is not None:
            linear.bias = nn.Parameter(bias, requires_grad=False)
        return embed_fn, PackedLinear(linear)
    return embed_fn, (lambda x: nn.functional.linear(x, weight, bias))


def _fit_tree(cfg: TreeConfig, room: int) -> TreeConfig | None:
    """The tree to draft when the deepest node may sit at most ``room`` positions past the root.

    Near ``max_position_embeddings`` a full-depth tree would put nodes past it, where the target's own
    decoding never goes and position-dependent RoPE scaling (dynamic / long-RoPE, which reads the largest
    position of a forward) would change the numerics; so the tree gets shallower there, and with no room
    the cycle verifies the root alone (plain decoding)."""
    if room >= cfg.depth:
        return cfg
    if room < 1:
        return None
    shallow = TreeConfig(total_tokens=2, depth=room, top_k=cfg.top_k)
    return TreeConfig(total_tokens=min(cfg.total_tokens, shallow.max_total_tokens), depth=room, top_k=cfg.top_k)


def _root_only(root: int, device) -> Tree:
    return build_tree(torch.tensor([root], device=device), torch.tensor([-1], device=device))


def _truncate(new: list[int], eos: frozenset[int], room: int) -> list[int]:
    """Cut the accepted tokens after the first eos and to the room left under max_new_tokens."""
    out = []
    for tok in new[:room]:
        out.append(tok)
        if tok in eos:
            break
    return out
