"""hass.auto_tree: the expected accept length, the candidate trees, the choice (pure functions), the record
beside a draft, and the evaluation CLI that times the candidates."""
import json

import pytest
import torch

from conftest import tiny_draft, tiny_target
from hass import CheckpointError, TreeConfig
from hass.auto_tree import (candidates, choose_tree, expected_accept_length, load_acceptance, load_shapes,
                            save_acceptance, timing_tree)


def test_expected_accept_length_by_hand():
    assert expected_accept_length([0.5, 0.5], 2) == pytest.approx(1 + 0.5 + 0.25)
    assert expected_accept_length([0.5, 0.5], 1) == pytest.approx(1.5)
    assert expected_accept_length([1.0, 1.0, 1.0], 3) == 4.0
    with pytest.raises(ValueError):
        expected_accept_length([0.5], 2)


def test_candidates_include_shallower_trees_of_the_same_width():
    got = candidates({"8/4/2": [0.5, 0.4, 0.3, 0.2]})
    assert set(got) == {TreeConfig(3, 1, 2), TreeConfig(7, 2, 2), TreeConfig(8, 3, 2), TreeConfig(8, 4, 2)}
    assert got[TreeConfig(3, 1, 2)] == pytest.approx(1.5)
    assert got[TreeConfig(8, 4, 2)] == pytest.approx(1 + 0.5 + 0.2 + 0.06 + 0.012)


def test_choose_the_most_tokens_per_second_or_plain_decoding():
    a, b = TreeConfig(8, 4, 2), TreeConfig(60, 6, 10)
    taus = {a: 1.5, b: 2.0}
    choice = choose_tree(taus, {a: 60.0, b: 150.0}, step_ms=50.0)
    assert choice.tree == a and choice.speedup == pytest.approx(1.5 * 50 / 60)  # 1.25x beats 0.67x
    assert [r[0] for r in choice.table] == ["8/4/2", "60/6/10"]
    choice = choose_tree(taus, {a: 90.0, b: 150.0}, step_ms=50.0)
    assert choice.tree is None and choice.speedup == 1.0  # no tree beats one token per step
    with pytest.raises(ValueError, match="no cycle time"):
        choose_tree(taus, {a: 60.0}, step_ms=50.0)


def test_the_record_beside_a_draft(tmp_path):
    with pytest.raises(CheckpointError, match="record_acceptance"):
        load_acceptance(tmp_path)
    save_acceptance(tmp_path, TreeConfig(8, 4, 2), [0.5, 0.4, 0.3, 0.2], {"answers": "x.jsonl"})
    save_acceptance(tmp_path, TreeConfig(10, 3, 3), [0.6, 0.5, 0.4], {"answers": "y.jsonl"})
    assert load_acceptance(tmp_path) == {"8/4/2": [0.5, 0.4, 0.3, 0.2], "10/3/3": [0.6, 0.5, 0.4]}
    with pytest.raises(ValueError, match="depth 4 needs 4 rates"):
        save_acceptance(tmp_path, TreeConfig(8, 4, 2), [0.5], {})


def test_record_from_answers_then_choose_on_this_machine(tmp_path, monkeypatch, capsys):
    from evaluation import auto_tree, record_acceptance, run
    from test_evaluation import tiny_tokenizer

    target = tiny_target("llama")
    target.generation_config.eos_token_id = [2, 6]
    target.save_pretrained(tmp_path / "target")
    tiny_tokenizer().save_pretrained(tmp_path / "target")
    tiny_draft(target).save_pretrained(tmp_path / "draft")
    questions = tmp_path / "q.jsonl"
    questions.write_text("".join(json.dumps({"question_id": i, "category": "x", "turns": [f"w{i} w9 w10"]}) + "\n"
                                 for i in range(10, 13)))
    answers = tmp_path / "a.jsonl"
    run.main(["--base", str(tmp_path / "target"), "--draft", str(tmp_path / "draft"), "--bench", "gsm8k",
              "--question-file", str(questions), "--methods", "hass", "--dtype", "fp32", "--total-tokens", "6",
              "--depth", "3", "--top-k", "2", "--max-new-tokens", "12", "--warmup", "0", "--out", str(answers)])
    record_acceptance.main([str(answers), "--draft", str(tmp_path / "draft")])
    rates = load_acceptance(tmp_path / "draft")["6/3/2"]
    assert len(rates) == 3 and all(0 <= r <= 1 for r in rates)
    turns = [json.loads(line)["turns"][0] for line in answers.read_text().splitlines()[1:]]
    sizes = [s for t in turns for s in t["tree_sizes"]]  # every forward verified a tree of <= 6 tokens
    assert len(sizes) == sum(len(t["accept_lengths"]) for t in turns) and all(2 <= s <= 6 for s in sizes)
    tokens, depth = load_shapes(tmp_path / "draft")["6/3/2"]  # their means, recorded beside the rates
    assert tokens == pytest.approx(sum(sizes) / len(sizes)) and 1 <= depth <= 3
    monkeypatch.setenv("HASS_CACHE", str(tmp_path / "cache"))
    args = ["--base", str(tmp_path / "target"), "--draft", str(tmp_path / "draft"), "--dtype", "fp32",
            "--draft-dtype", "fp32", "--context", "8", "--repeats", "1"]
    capsys.readouterr()
    auto_tree.main(args)
    first = capsys.readouterr().out
    assert first.strip().splitlines()[-1].startswith("tree ") and "| 6/3/2 |" in first and "| 3/1/2 |" in first
    assert any((tmp_path / "cache" / "auto_tree").iterdir())
    auto_tree.main(args)  # the second call reads the cached timings
    assert capsys.readouterr().out == first


def _fake_measure(cycle_ms: float, step_ms: float, calls: list):
    """A stand-in for hass.cycle_timing.measure: every tree's cycle takes ``cycle_ms``, a plain step ``step_ms``."""
    def measure(model, trees, context, repeats, vocabs=None):
        calls.append([t for t in trees])
        suffix = f" V={next(iter(vocabs))}" if vocabs else ""
        rows = [{"tree": f"{t.total_tokens}/{t.depth}/{t.top_k}{suffix}", "cycle_ms": cycle_ms} for t in trees]
        return {"milliseconds": {"vanilla step": step_ms}, "trees": rows}
    return measure


def test_generate_with_the_automatic_tree_is_lossless_and_cached(tmp_path, monkeypatch):
    from hass import HassModel, cycle_timing
    from test_generation import hf_greedy

    from conftest import perfect_pair
    target, draft = perfect_pair("llama")
    draft.save_pretrained(tmp_path / "draft")
    save_acceptance(tmp_path / "draft", TreeConfig(6, 3, 2), [0.9, 0.8, 0.7], {})
    monkeypatch.setenv("HASS_CACHE", str(tmp_path / "cache"))
    calls = []
    monkeypatch.setattr(cycle_timing, "measure", _fake_measure(12.0, 10.0, calls))
    prompt = torch.tensor([[3, 1, 4, 1, 5]])
    ref = hf_greedy(target, prompt, 30)

    model = HassModel(target, draft)
    model.draft_path = str(tmp_path / "draft")
    out = model.generate(prompt, max_new_tokens=30, tree="auto", eos_token_id=[])
    assert torch.equal(out.sequences, ref)
    choice = model.auto_tree()  # the second choice reads the cached timings
    assert len(calls) == 1 and choice.tree == TreeConfig(6, 3, 2)  # tau 1 + .9 + .72 + .504 = 3.12 in 1.2 steps
    assert choice.speedup == pytest.approx(3.124 / 1.2)
    assert max(out.accept_lengths) == 4  # the perfect draft's full paths: the chosen tree was drafted
    assert sorted(map(str, calls[0])) == sorted(map(str, [TreeConfig(3, 1, 2), TreeConfig(6, 2, 2),
                                                          TreeConfig(6, 3, 2)]))

    # where every cycle costs 4 plain steps, no tree pays: plain decoding through the same loop
    slow = HassModel(target, draft)
    monkeypatch.setattr(cycle_timing, "measure", _fake_measure(40.0, 10.0, calls))
    choice = slow.auto_tree(tmp_path / "draft", refresh=True)
    assert choice.tree is None and len(calls) == 2
    out = slow.generate(prompt, max_new_tokens=30, tree="auto", eos_token_id=[])
    assert torch.equal(out.sequences, ref) and out.accept_lengths == [1] * 29


def test_a_bounded_tree_is_timed_at_full_size(tmp_path, monkeypatch):
    from hass import HassModel, cycle_timing

    target = tiny_target("llama")
    model = HassModel(target, tiny_draft(target))
    calls = []
    monkeypatch.setattr(cycle_timing, "measure", _fake_measure(12.0, 10.0, calls))
    choice = model.auto_tree({"6/3/2@0.1": [0.9, 0.8, 0.7]}, cache_dir=tmp_path)
    assert TreeConfig(6, 3, 2) in calls[0] and all(t.min_prob == 0 for t in calls[0])
    assert choice.tree == TreeConfig(6, 3, 2, min_prob=0.1)


def test_a_bounded_tree_with_a_recorded_shape_is_timed_at_that_shape(tmp_path, monkeypatch):
    from hass import HassModel, cycle_timing

    bounded = TreeConfig(60, 6, 10, min_prob=0.02)
    assert timing_tree(bounded, {"60/6/10@0.02": (14.6, 3.4)}) == TreeConfig(15, 3, 10)
    assert timing_tree(bounded, {"60/6/10@0.02": (1.2, 0.3)}) == TreeConfig(2, 1, 10)  # never below root + 1
    assert timing_tree(bounded, {}) == TreeConfig(60, 6, 10)  # no record of its shape: the most it can cost
    assert timing_tree(TreeConfig(8, 4, 2), {"8/4/2": (5.0, 2.0)}) == TreeConfig(8, 4, 2)  # a fixed tree is fixed
    assert timing_tree(TreeConfig(8, 4, 2, 0.1), {"8/4/2@0.1": (7.6, 4.0)}) == TreeConfig(8, 4, 2)

    target = tiny_target("llama")
    model = HassModel(target, tiny_draft(target))
    save_acceptance(tmp_path / "d", TreeConfig(6, 3, 2, 0.1), [0.9, 0.8, 0.7],
                    {"mean_tokens": 3.2, "mean_depth": 1.6})
    calls = []
    monkeypatch.setattr(cycle_timing, "measure", _fake_measure(12.0, 10.0, calls))
    model.auto_tree(tmp_path / "d", cache_dir=tmp_path / "cache")
    assert TreeConfig(3, 2, 2) in calls[0] and TreeConfig(6, 3, 2) not in calls[0]


def test_automatic_tree_bad_input(tmp_path):
    from hass import HassModel

    target = tiny_target("llama")
    model = HassModel(target, tiny_draft(target))
    prompt = torch.tensor([[1, 2, 3]])
    with pytest.raises(ValueError, match="TreeConfig or \"auto\""):
        model.generate(prompt, max_new_tokens=4, tree="fastest")
    with pytest.raises(CheckpointError, match="acceptance="):
        model.generate(prompt, max_new_tokens=4, tree="auto")  # not loaded from a folder: nowhere to read
    with pytest.raises(CheckpointError, match="record_acceptance"):
        model.auto_tree(tmp_path, cache_dir=tmp_path)  # a folder without a record says how to make one
    plain = HassModel(target, None)  # no draft: "auto" is plain decoding
    assert plain.generate(prompt, max_new_tokens=4, tree="auto").new_tokens == 4
    with pytest.raises(ValueError, match="no draft"):
        plain.auto_tree({"6/3/2": [0.5, 0.5, 0.5]})
