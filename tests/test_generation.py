"""Speculative greedy == plain greedy (transformers generate), token for token."""
import math

import pytest
import torch

from conftest import perfect_pair, tiny_draft, tiny_target
from hass import HassModel, TreeConfig

TREES = [TreeConfig(), TreeConfig(2, 1, 1), TreeConfig(7, 6, 1), TreeConfig(2, 3, 4), TreeConfig(12, 3, 3),
         TreeConfig(40, 8, 5), TreeConfig(1 + 4 + 16, 2, 4), TreeConfig(30, 6, 4, min_prob=0.02)]


def hf_greedy(target, prompt, max_new_tokens, eos=None):
    return target.generate(prompt, max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=eos,
                           pad_token_id=0, attention_mask=torch.ones_like(prompt))


@pytest.mark.parametrize("seed", range(4))
def test_speculative_greedy_equals_transformers(family, seed):
    target = tiny_target(family, seed=seed)
    model = HassModel(target, tiny_draft(target, seed=seed + 100))
    model.fewer_reads = seed % 2 == 1  # both ways to find a leaf's bonus token (the GPU's and the CPU's)
    gen = torch.Generator().manual_seed(seed)
    for prompt_len in (1, 3, 17):
        prompt = torch.randint(0, 128, (1, prompt_len), generator=gen)
        ref = hf_greedy(target, prompt, 30)
        for tree in TREES:
            out = model.generate(prompt, max_new_tokens=30, tree=tree, eos_token_id=[])
            assert torch.equal(out.sequences, ref), (prompt_len, tree)
            assert out.new_tokens == 30 and 1 + sum(out.accept_lengths) == 30
            assert all(1 <= a <= tree.depth + 1 for a in out.accept_lengths)


def test_perfect_draft_accepts_full_depth(family):
    target, draft = perfect_pair(family)
    model = HassModel(target, draft)
    prompt = torch.tensor([[3, 1, 4, 1, 5]])
    ref = hf_greedy(target, prompt, 60)
    for tree in (TreeConfig(), TreeConfig(7, 6, 1), TreeConfig(10, 9, 1)):
        out = model.generate(prompt, max_new_tokens=60, tree=tree, eos_token_id=[])
        assert torch.equal(out.sequences, ref)
        # every cycle but the last (cut by max_new_tokens) accepts depth drafts + the bonus token
        assert out.accept_lengths[:-1] == [tree.depth + 1] * (len(out.accept_lengths) - 1)
        assert out.accept_lengths[-1] == (60 - 1) - (tree.depth + 1) * (len(out.accept_lengths) - 1)
        # every forward verified the whole tree, its deepest node at the tree's depth (the perfect draft's
        # chain is the best path, so it is always kept)
        assert out.tree_sizes == [tree.total_tokens] * len(out.accept_lengths)
        assert out.tree_depths == [tree.depth] * len(out.accept_lengths)
    plain = HassModel(target, None).generate(prompt, max_new_tokens=10, eos_token_id=[])
    assert plain.tree_sizes == [1] * 9 and plain.tree_depths == [0] * 9  # one token, no tree


def test_eos_midway_and_several_eos_ids(family):
    target, draft = perfect_pair(family)  # long accepted paths: eos lands inside an accepted chunk
    model = HassModel(target, draft)
    prompt = torch.tensor([[7, 8, 9]])
    free = hf_greedy(target, prompt, 40)[0, 3:].tolist()
    eos = free[10]
    first = free.index(eos)
    ref = hf_greedy(target, prompt, 40, eos=eos)
    assert ref.shape[1] == 3 + first + 1  # transformers stops right after the eos
    out = model.generate(prompt, max_new_tokens=40, eos_token_id=eos)
    assert torch.equal(out.sequences, ref)
    other = next(t for t in range(128) if t not in free)
    out = model.generate(prompt, max_new_tokens=40, eos_token_id=[other, eos])
    assert torch.equal(out.sequences, ref)
    # eos as the very first token
    out = model.generate(prompt, max_new_tokens=40, eos_token_id=free[0])
    assert out.new_tokens == 1 and out.accept_lengths == []
    # stream(include_eos=False): the same tokens without the final eos, for printing text
    text = sum(model.stream(prompt, max_new_tokens=40, eos_token_id=eos, include_eos=False), [])
    assert text == ref[0, 3:-1].tolist() and eos not in text


def test_default_eos_comes_from_generation_config():
    target, draft = perfect_pair("llama")
    prompt = torch.tensor([[7, 8, 9]])
    free = hf_greedy(target, prompt, 20)[0, 3:].tolist()
    target.generation_config.eos_token_id = free[5]
    out = HassModel(target, draft).generate(prompt, max_new_tokens=20)
    assert out.sequences[0, 3:].tolist() == free[: free.index(free[5]) + 1]


@pytest.mark.parametrize("max_new_tokens", [1, 2, 3, 6, 7, 8, 13])
def test_max_new_tokens_is_exact(max_new_tokens):
    target, draft = perfect_pair("llama")
    prompt = torch.tensor([[1, 2]])
    ref = hf_greedy(target, prompt, max_new_tokens)
    out = HassModel(target, draft).generate(prompt, max_new_tokens=max_new_tokens, eos_token_id=[])
    assert torch.equal(out.sequences, ref) and out.new_tokens == max_new_tokens


def test_prompt_may_fill_the_context_up_to_max_length():
    target = tiny_target("llama", max_position_embeddings=64)
    model = HassModel(target, tiny_draft(target))
    prompt = torch.randint(0, 128, (1, 54))
    out = model.generate(prompt, max_new_tokens=10, eos_token_id=[])
    assert torch.equal(out.sequences, hf_greedy(target, prompt, 10))


def test_vanilla_and_stream():
    target = tiny_target("qwen2", seed=3)
    prompt = torch.randint(0, 128, (1, 9))
    ref = hf_greedy(target, prompt, 25)
    vanilla = HassModel(target, None).generate(prompt, max_new_tokens=25, eos_token_id=[])
    assert torch.equal(vanilla.sequences, ref) and vanilla.accept_lengths == [1] * 24
    model = HassModel(target, tiny_draft(target))
    chunks = list(model.stream(prompt[0], max_new_tokens=25, eos_token_id=[]))
    assert len(chunks[0]) == 1 and sum(chunks, []) == ref[0, 9:].tolist()


def test_half_precision_runs_and_agrees_on_most_tokens():
    # Reduced precision may flip near-ties between the tree forward and sequential decoding, so this only
    # checks the dtype path; the exact equivalence tests above run in fp32.
    for dtype in (torch.bfloat16, torch.float16):
        target = tiny_target("llama", dtype=dtype)
        model = HassModel(target, tiny_draft(target))
        prompt = torch.randint(0, 128, (1, 5))
        out = model.generate(prompt, max_new_tokens=20, eos_token_id=[])
        assert out.new_tokens == 20 and out.sequences.shape == (1, 25)
        ref = HassModel(target, None).generate(prompt, max_new_tokens=20, eos_token_id=[])
        assert out.sequences[0, 5:10].tolist() == ref.sequences[0, 5:10].tolist()


def test_bf16_draft_with_fp32_target_is_exact(family):
    """The draft's precision changes only the proposals: fp32 target + bf16 draft == fp32 greedy decoding."""
    target = tiny_target(family, seed=3)
    prompt = torch.randint(0, 128, (1, 7), generator=torch.Generator().manual_seed(3))
    ref = hf_greedy(target, prompt, 30)
    model = HassModel(target, tiny_draft(target, seed=103).to(torch.bfloat16))
    for tree in (TreeConfig(), TreeConfig(7, 6, 1), TreeConfig(12, 3, 3)):
        out = model.generate(prompt, max_new_tokens=30, tree=tree, eos_token_id=[])
        assert torch.equal(out.sequences, ref), tree
    target, draft = perfect_pair(family)
    model = HassModel(target, draft.to(torch.bfloat16))
    ref = hf_greedy(target, prompt, 40)
    out = model.generate(prompt, max_new_tokens=40, eos_token_id=[])
    assert torch.equal(out.sequences, ref)
    assert sum(out.accept_lengths) / len(out.accept_lengths) > 3  # the bf16 copy still drafts well
    sampled = model.generate(prompt, max_new_tokens=40, temperature=1.0, eos_token_id=[],
                             generator=torch.Generator().manual_seed(0))
    assert sampled.new_tokens == 40


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_greedy_equals_transformers():
    target = tiny_target("llama").cuda()
    model = HassModel(target, tiny_draft(target).cuda())
    prompt = torch.randint(0, 128, (1, 11)).cuda()
    out = model.generate(prompt, max_new_tokens=40, eos_token_id=[])
    assert torch.equal(out.sequences, hf_greedy(target, prompt, 40))


def test_the_target_head_runs_only_where_verification_reads_it(monkeypatch):
    """Per cycle, lm_head projects the tree's internal nodes plus at most the bonus row, never the other leaves;
    the output is still the plain greedy one."""
    from hass import generation
    from hass.verify import internal_nodes

    target = tiny_target("llama", seed=3)
    model = HassModel(target, tiny_draft(target).to(torch.bfloat16))  # drafts with its own head copy
    prompt = torch.randint(0, 128, (1, 7))
    expected = hf_greedy(target, prompt, 30)
    rows, cycles = [], []
    target.get_output_embeddings().register_forward_hook(lambda m, i, o: rows.append(i[0].shape[-2]))
    real = generation.verify_greedy

    def spy(tree, logits, *rest, **options):
        cycles.append((tree.size, len(internal_nodes(tree)), len(rows)))
        return real(tree, logits, *rest, **options)

    monkeypatch.setattr(generation, "verify_greedy", spy)
    out = model.generate(prompt, max_new_tokens=30, eos_token_id=[], tree=TreeConfig(16, 4, 4))
    assert torch.equal(out.sequences, expected)
    assert rows[0] == 1  # the prefill projects the prompt's last position only
    ends = [c[2] for c in cycles[1:]] + [len(rows)]
    for (size, internal, start), end in zip(cycles, ends):
        projected = sum(rows[start:end])  # inside verify: the internal nodes, then at most one bonus row
        assert internal <= projected <= internal + 1 < size


@pytest.mark.parametrize("on_device,most", [(True, 2), (False, 3)])
def test_a_greedy_cycle_reads_the_host_at_most_twice(monkeypatch, on_device, most):
    """Every way a tensor's value reaches Python is counted (on a GPU each one is a sync): a greedy cycle reads
    the tree once and the verdict once; the CPU's way adds a third read when the bonus row is a leaf's."""
    from hass import generation

    target = tiny_target("llama", seed=2)
    model = HassModel(target, tiny_draft(target, seed=5))
    model.fewer_reads = on_device
    prompt = torch.randint(0, 128, (1, 9), generator=torch.Generator().manual_seed(2))
    expected = hf_greedy(target, prompt, 40)
    reads, starts = [], []
    for name in ("tolist", "item", "numpy", "__int__", "__float__", "__bool__", "__index__"):
        real = getattr(torch.Tensor, name)
        monkeypatch.setattr(torch.Tensor, name,
                            lambda self, *a, _real=real, _name=name, **k: reads.append(_name) or _real(self, *a, **k))
    real_expand = generation.expand_tree
    monkeypatch.setattr(generation, "expand_tree", lambda *a, **k: starts.append(len(reads)) or real_expand(*a, **k))
    out = model.generate(prompt, max_new_tokens=40, eos_token_id=[], tree=TreeConfig(12, 4, 3))
    monkeypatch.undo()
    assert torch.equal(out.sequences, expected)
    per_cycle = [b - a for a, b in zip(starts, starts[1:])]
    assert len(per_cycle) >= 5 and max(per_cycle) <= most, (per_cycle, reads)
    if on_device:
        assert max(per_cycle) == 2


def test_draft_projections_are_prepared_once_per_model(monkeypatch):
    from hass import generation

    target = tiny_target("llama", seed=3)
    model = HassModel(target, tiny_draft(target).to(torch.bfloat16))  # a cast draft needs its own head copy
    calls = []
    real = generation.draft_projections
    monkeypatch.setattr(generation, "draft_projections", lambda *a: calls.append(1) or real(*a))
    prompt = torch.randint(0, 128, (1, 5))
    first = model.generate(prompt, max_new_tokens=8)
    second = model.generate(prompt, max_new_tokens=8)
    assert len(calls) == 1 and torch.equal(first.sequences, second.sequences)
    model.draft_vocab = torch.arange(64)  # another draft vocabulary: prepared again
    model.generate(prompt, max_new_tokens=8)
    assert len(calls) == 2


def test_trees_stay_inside_the_context_near_a_dynamic_rope_limit():
    """Dynamic RoPE rescales by the largest position of a forward, so a tree node past max_position_embeddings
    would change the numerics: near the end trees get shallower, no position passes the limit, and the output
    is still the target's own greedy decoding."""
    target = tiny_target("llama", seed=5, max_position_embeddings=48,
                         rope_parameters={"rope_type": "dynamic", "factor": 4.0, "rope_theta": 10000.0})
    assert target.config.rope_parameters["rope_type"] == "dynamic"
    seen = []
    target.get_decoder().register_forward_pre_hook(lambda m, a, kw: seen.append(int(kw["position_ids"].max())),
                                                   with_kwargs=True)
    prompt = torch.randint(0, 128, (1, 30))
    expected = hf_greedy(target, prompt, 18)  # fills the context: 30 + 18 = 48
    seen.clear()
    out = HassModel(target, tiny_draft(target)).generate(prompt, max_new_tokens=18, eos_token_id=[],
                                                         tree=TreeConfig(20, 6, 4))
    assert torch.equal(out.sequences, expected)
    assert max(seen) <= 47 and max(seen) >= 44  # trees reached the end, none went past it


def test_a_target_with_offloaded_layers_gives_the_same_output(tmp_path):
    """device_map goes to transformers (accelerate): layer 1 offloaded to disk, the rest on the CPU."""
    target = tiny_target("llama", seed=3)
    target.save_pretrained(tmp_path / "target")
    tiny_draft(target).save_pretrained(tmp_path / "draft")
    prompt = torch.randint(0, 128, (1, 6))
    expected = hf_greedy(target, prompt, 12)
    device_map = {"model.embed_tokens": "cpu", "model.layers.0": "cpu", "model.layers.1": "disk",
                  "model.norm": "cpu", "model.rotary_emb": "cpu", "lm_head": "cpu"}
    model = HassModel.from_pretrained(tmp_path / "target", tmp_path / "draft", dtype=torch.float32,
                                      device_map=device_map, offload_folder=str(tmp_path / "offload"))
    layer1 = model.target.get_decoder().layers[1]
    assert next(layer1.parameters()).device.type == "meta"  # offloaded: its weights are loaded per forward
    out = model.generate(prompt, max_new_tokens=12, eos_token_id=[], tree=TreeConfig(8, 3, 2))
    assert torch.equal(out.sequences, expected)


def test_a_confidence_bound_sends_fewer_nodes_and_drafts_fewer_levels(monkeypatch):
    """min_prob leaves out exactly the nodes of the fixed tree scoring below it, stops drafting at the first level
    none reaches it, and the output stays the plain greedy one."""
    from hass import generation

    target = tiny_target("llama", seed=4)
    model = HassModel(target, tiny_draft(target, seed=6))
    prompt = torch.randint(0, 128, (1, 6), generator=torch.Generator().manual_seed(4))
    expected = hf_greedy(target, prompt, 30)
    fixed, bounded = TreeConfig(20, 5, 3), TreeConfig(20, 5, 3, min_prob=0.05)
    selected, steps = [], []
    real_select, real_draft = generation.select_tree, model.draft.forward
    monkeypatch.setattr(generation, "select_tree", lambda *a: selected.append(a) or real_select(*a))
    monkeypatch.setattr(model.draft, "forward", lambda *a, **k: steps.append(a[0].shape[1]) or real_draft(*a, **k))
    out = model.generate(prompt, max_new_tokens=30, eos_token_id=[], tree=bounded)
    assert torch.equal(out.sequences, expected)
    assert len(selected) == len(out.accept_lengths)
    pruned_any = False
    for root, tokens, scores, parents, total, bound in selected:
        assert bound == pytest.approx(math.log(0.05))
        tree = real_select(root, tokens, scores, parents, total, bound)
        full = real_select(root, tokens, scores, parents, total)  # the same candidates without the bound
        keep = [0] + [i for i in range(1, full.size) if float(_node_score(full, tokens, scores, parents, i)) >= bound]
        assert tree.tokens.tolist() == full.tokens[keep].tolist()
        pruned_any |= tree.size < full.size
    assert pruned_any
    # fewer draft forwards per cycle than the fixed tree's depth - 1 in some cycle (one forward per cycle is the
    # draft's step on the accepted tokens; the expansion forwards feed top_k nodes each)
    expansions = sum(1 for n in steps if n == fixed.top_k)
    assert expansions < (fixed.depth - 1) * len(out.accept_lengths)
    with pytest.raises(ValueError, match="min_prob"):
        TreeConfig(8, 4, 2, min_prob=1.0)
    assert TreeConfig.parse("8/4/2@0.05") == TreeConfig(8, 4, 2, min_prob=0.05)


def _node_score(full, tokens, scores, parents, node):
    """The candidate score of a node of ``full``, found by walking its path through the candidate arrays."""
    path = []
    while node > 0:
        path.append(int(full.tokens[node]))
        node = int(full.parents[node])
    path.reverse()
    cand, parent = None, -1
    for tok in path:  # the candidate with this token under the current parent (unique per parent)
        cand = next(c for c in range(tokens.numel()) if int(parents[c]) == parent and int(tokens[c]) == tok)
        parent = cand
    return scores[cand]
