"""train.model_card: a shipped draft's card is written from its files and the results folder (no model loads)."""
import json

import pytest
import torch

from hass import TreeConfig
from hass.auto_tree import save_acceptance
from hass.draft_vocab import save_token_counts
from test_evaluation import turn, write_answers
from train.model_card import card, main


def shipped(folder, evals):
    folder.mkdir(parents=True)
    config = {"target": "SmolLM2-135M-Instruct", "data": "data/long/sharegpt.jsonl", "eval_data": "held.jsonl",
              "hca_steps": 3, "hod_weight": 1.0, "hod_k": 10, "lr": 5e-4, "batch_size": 2, "draft_vocab_size": 2,
              "init_from": "checkpoints/milestones/eagle2_at_12528"}
    (folder / "milestone.json").write_text(json.dumps(
        {"name": "hass_warm", "global_step": 13920, "total_steps": 13920, "tokens_seen": 23_000_000,
         "config": config, "data_sha256": "ab" * 32, "target": {"name": "SmolLM2-135M-Instruct"}}))
    (folder / "log.jsonl").write_text("".join(json.dumps(dict(r, split="eval")) + "\n" for r in evals))
    (folder / "train_config.json").write_text(json.dumps(
        {"init_from": "checkpoints/milestones/eagle2_at_12528", "start_batch": 12528, "max_steps": 1392,
         "lr": 4.06e-5, "warmup_fraction": 0.0359, "dtype": "bfloat16", "hca_steps": 3, "hod_weight": 1.0}))
    save_token_counts(folder, torch.tensor([5, 3, 1, 1]), "test")
    save_acceptance(folder, TreeConfig(8, 4, 2), [0.6, 0.5, 0.4, 0.3], {"answers": "a.jsonl", "forwards": 9,
                                                                      "mean_tokens": 8.0, "mean_depth": 4.0})


def test_the_card_holds_the_recipe_curve_vocabulary_acceptance_and_this_drafts_results(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    evals = [{"step": 12000, "acc_s1": 0.60}, {"step": 13000, "acc_s1": 0.62, "acc_s2": 0.5},
             {"step": 13920, "acc_s1": 0.63, "acc_s2": 0.55}]
    shipped(tmp_path / "HASS", evals)
    (tmp_path / "res").mkdir()
    write_answers(tmp_path / "res" / "mt.jsonl", "mt_bench", {
        ("vanilla", 1): [turn(10, 1.0, [1] * 9)], ("vanilla", 2): [turn(4, 1.0, [1] * 3)],
        ("hass", 1): [turn(10, 0.5, [3, 3, 3])], ("hass", 2): [turn(4, 0.25, [2, 1], ids=[0, 1, 9, 3])],
        ("hass[draft=EAGLE2]", 1): [turn(10, 0.8, [2] * 5)], ("hass[draft=EAGLE2]", 2): [turn(4, 1.0, [1] * 3)],
    }, draft="HASS", methods=["vanilla", "hass", "hass[draft=EAGLE2]"], total_tokens=8, depth=4, top_k=2)
    (tmp_path / "res" / "compare").mkdir()
    (tmp_path / "res" / "compare" / "T0_mt_bench.json").write_text(json.dumps(
        {"a": "HASS=x", "b": "EAGLE2=y", "questions": 2, "tau_a": 2.8, "tau_b": 1.75, "ratio": 1.6,
         "ratio_ci95": [1.2, 2.0]}))
    text = card(tmp_path / "HASS", "HASS warm start", tmp_path / "res", tmp_path / "EAGLE2", ["bash x.sh"])
    assert "**23,000,000 training tokens**" in text and "hca_steps = 3, hod_weight = 1.0, hod_k = 10" in text
    assert "Started from: `checkpoints/milestones/eagle2_at_12528`" in text
    assert ("Last segment: steps 12,528 - 13,920 from the weights of `checkpoints/milestones/eagle2_at_12528` (a "
            "fresh optimiser), lr 4.06e-05 after a 50-step warm-up, decaying linearly to 0, dtype bfloat16, "
            "hca_steps = 3, hod_weight = 1.0") in text
    assert "| 13,920 | 0.630 | 0.550 |" in text
    assert "rose +0.030 (0.600 -> 0.630)" in text  # no eval before 80% of the steps: from the first one
    assert "the 2 most frequent answer tokens" in text and "80.0% of them" in text  # (5 + 3) / 10
    assert "| 8/4/2 | 0.600 | 0.500 | 0.400 | 0.300 | 8.0 |" in text
    # this draft's cell only (not the EAGLE-2 variant's): 14 tokens in 7 forwards, 0.75 s against vanilla's 2 s,
    # per question 2x and 4x
    assert "| 0 | 8 / 4 / 2 | 2.00 / 2.67x (2.20 / 3.00 / 3.80), 1/2 differ |" in text
    assert "| T0_mt_bench | 2 | HASS 2.800 / EAGLE2 1.750 | 1.600 (1.200 - 2.000) |" in text
    assert text.endswith("    bash x.sh\n")


def test_a_card_needs_a_shipped_milestone(tmp_path):
    with pytest.raises(SystemExit, match="no milestone.json"):
        main(["--draft", str(tmp_path), "--title", "x"])
