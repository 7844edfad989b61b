"""A restricted draft vocabulary (hass.draft_vocab): the output stays exactly the target's greedy output, the
draft proposes only tokens of the set, the id mapping is right (a perfect draft keeps full acceptance), and
the counts file, its command and the bad inputs behave."""
import json

import pytest
import torch
from conftest import perfect_pair, tiny_draft, tiny_target
from test_generation import hf_greedy

import hass.generation
from hass import HassModel, TreeConfig
from hass.draft_vocab import COUNTS_FILE, count_tokens, load_token_counts, save_token_counts, top_tokens
from hass.errors import CheckpointError
from train import token_counts
from train.data import write_prepared


@pytest.fixture
def drafted(monkeypatch):
    """Every tree the draft builds, recorded."""
    trees = []
    real = hass.generation.expand_tree

    def spy(*args, **kwargs):
        tree = real(*args, **kwargs)
        trees.append(tree)
        return tree

    monkeypatch.setattr(hass.generation, "expand_tree", spy)
    return trees


def test_restricted_vocab_is_exact_and_drafts_only_its_tokens(family, drafted):
    target = tiny_target(family, seed=5)
    gen = torch.Generator().manual_seed(5)
    vocab = torch.randperm(128, generator=gen)[:40]
    model = HassModel(target, tiny_draft(target, seed=105), draft_vocab=vocab)
    allowed = set(vocab.tolist())
    for prompt_len in (1, 9):
        prompt = torch.randint(0, 128, (1, prompt_len), generator=gen)
        ref = hf_greedy(target, prompt, 30)
        for tree in (TreeConfig(), TreeConfig(7, 6, 1), TreeConfig(12, 3, 3)):
            drafted.clear()
            out = model.generate(prompt, max_new_tokens=30, tree=tree, eos_token_id=[])
            assert torch.equal(out.sequences, ref), (prompt_len, tree)
            assert drafted and all(set(t.tokens[1:].tolist()) <= allowed for t in drafted)
    sampled = model.generate(prompt, max_new_tokens=30, temperature=1.0, eos_token_id=[],
                             generator=torch.Generator().manual_seed(0))
    assert sampled.new_tokens == 30


def test_perfect_draft_keeps_full_acceptance_iff_its_tokens_are_in_the_vocab(family):
    target, draft = perfect_pair(family)
    prompt = torch.tensor([[3, 1, 4, 1, 5]])
    ref = hf_greedy(target, prompt, 40)
    produced = sorted(set(ref[0, 5:].tolist()))
    chain = TreeConfig(7, 6, 1)
    # The vocabulary holds every token the target produces (and a few others): the perfect draft still
    # proposes the exact continuation, so every full cycle accepts depth + 1 tokens. A wrong index -> id
    # mapping would propose other tokens and accept none.
    keep = torch.tensor(sorted(set(produced) | {0, 1, 2}))
    out = HassModel(target, draft, draft_vocab=keep).generate(prompt, max_new_tokens=40, tree=chain, eos_token_id=[])
    assert torch.equal(out.sequences, ref)
    assert out.accept_lengths[:-1] == [chain.depth + 1] * (len(out.accept_lengths) - 1)
    # Without those tokens nothing the draft can propose is right: one token per forward, same output.
    others = torch.tensor([t for t in range(128) if t not in produced])
    out = HassModel(target, draft, draft_vocab=others).generate(prompt, max_new_tokens=40, tree=chain, eos_token_id=[])
    assert torch.equal(out.sequences, ref)
    assert set(out.accept_lengths) == {1}


def test_full_vocab_drafts_the_same_trees(drafted):
    target = tiny_target("llama", seed=6)
    draft = tiny_draft(target, seed=106)
    prompt = torch.randint(0, 128, (1, 6), generator=torch.Generator().manual_seed(6))
    plain = HassModel(target, draft).generate(prompt, max_new_tokens=25, eos_token_id=[])
    plain_trees = [t.tokens.tolist() for t in drafted]
    drafted.clear()
    full = HassModel(target, draft, draft_vocab=torch.arange(128)).generate(prompt, max_new_tokens=25, eos_token_id=[])
    assert torch.equal(full.sequences, plain.sequences) and full.accept_lengths == plain.accept_lengths
    assert [t.tokens.tolist() for t in drafted] == plain_trees


def test_count_tokens_counts_answer_tokens_only():
    samples = [{"id": "a", "input_ids": [1, 2, 2, 3], "loss_mask": [0, 1, 1, 0]},
               {"id": "b", "input_ids": [3, 3, 4], "loss_mask": [1, 0, 1]}]
    assert count_tokens(samples, 6).tolist() == [0, 0, 2, 1, 1, 0]
    with pytest.raises(ValueError, match="token id 9 outside the vocabulary"):
        count_tokens([{"id": "c", "input_ids": [9], "loss_mask": [1]}], 6)


def test_top_tokens_breaks_ties_by_id_and_checks_size():
    counts = torch.tensor([5, 0, 7, 5, 5, 1])
    assert top_tokens(counts, 1).tolist() == [2]
    assert top_tokens(counts, 3).tolist() == [0, 2, 3]  # 2 (7), then the lowest ids among the 5s
    assert top_tokens(counts, 6).tolist() == list(range(6))
    for bad in (0, 7, 2.0, True):
        with pytest.raises(ValueError, match="draft vocabulary size"):
            top_tokens(counts, bad)


def test_counts_file_round_trip_and_from_pretrained(tmp_path):
    target, draft = perfect_pair("llama")
    target.save_pretrained(tmp_path / "target")
    draft.save_pretrained(tmp_path / "draft")
    with pytest.raises(CheckpointError, match="python -m train.token_counts"):
        HassModel.from_pretrained(tmp_path / "target", tmp_path / "draft", dtype=torch.float32, draft_vocab_size=8)
    counts = torch.zeros(128, dtype=torch.long)
    counts[[5, 9, 11]] = torch.tensor([3, 2, 1])
    save_token_counts(tmp_path / "draft", counts, source="test")
    assert [p.name for p in (tmp_path / "draft").iterdir() if p.name.startswith(".")] == []  # no temp file left
    assert torch.equal(load_token_counts(tmp_path / "draft"), counts)
    model = HassModel.from_pretrained(tmp_path / "target", tmp_path / "draft", dtype=torch.float32, draft_vocab_size=3)
    assert model.draft_vocab.tolist() == [5, 9, 11]
    prompt = torch.tensor([[1, 2, 3]])
    out = model.generate(prompt, max_new_tokens=20, tree=TreeConfig(4, 3, 1), eos_token_id=[])
    assert torch.equal(out.sequences, hf_greedy(target, prompt, 20))
    with pytest.raises(ValueError, match="above the draft vocabulary size 3"):
        model.generate(prompt, max_new_tokens=5, tree=TreeConfig(10, 2, 4))
    with pytest.raises(ValueError, match="no draft_model_path"):
        HassModel.from_pretrained(tmp_path / "target", None, draft_vocab_size=3)
    save_token_counts(tmp_path / "draft", torch.ones(100, dtype=torch.long), source="wrong tokenizer")
    with pytest.raises(CheckpointError, match="counts 100 token ids, the target's vocabulary has 128"):
        HassModel.from_pretrained(tmp_path / "target", tmp_path / "draft", dtype=torch.float32, draft_vocab_size=3)
    (tmp_path / "draft" / COUNTS_FILE).write_bytes(b"truncated")
    with pytest.raises(CheckpointError, match="unreadable"):
        load_token_counts(tmp_path / "draft")


def test_bad_draft_vocab_is_refused():
    target = tiny_target("llama")
    draft = tiny_draft(target)
    for bad, match in ((torch.tensor([1, 1, 2]), "twice"), (torch.tensor([5, 128]), "outside"),
                       (torch.tensor([]), "non-empty"), (torch.tensor([0.5]), "token ids")):
        with pytest.raises(ValueError, match=match):
            HassModel(target, draft, draft_vocab=bad)
    with pytest.raises(ValueError, match="there is no draft"):
        HassModel(target, None, draft_vocab=torch.tensor([1, 2]))


def test_token_counts_command(tmp_path, capsys):
    target, draft = perfect_pair("llama")
    draft.save_pretrained(tmp_path / "draft")
    data = tmp_path / "data.jsonl"
    write_prepared(data, {"tokenizer": "t"}, [{"id": "a", "input_ids": [4, 7, 7, 9], "loss_mask": [0, 1, 1, 1]}])
    token_counts.main(["--data", str(data), "--draft", str(tmp_path / "draft")])
    counts = load_token_counts(tmp_path / "draft")
    assert counts.shape == (128,) and counts[7] == 2 and counts[9] == 1 and int(counts.sum()) == 3
    assert "3 answer tokens of 1 samples, 2 distinct ids of 128" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        token_counts.main(["--data", str(tmp_path / "missing.jsonl"), "--draft", str(tmp_path / "draft")])
    assert exc.value.code == 2 and "does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit):
        token_counts.main(["--data", str(data), "--draft", str(tmp_path / "empty")])
    assert "config.json" in capsys.readouterr().err
    assert json.loads((tmp_path / "draft" / "config.json").read_text())["vocab_size"] == 128
