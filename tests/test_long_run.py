"""Long runs in segments (train.long_run): the restart schedule, the choice of segment, a restart on a 'fresh
machine' from committed weights, and the refusals (tiny random target, CPU, seconds)."""
import json
import shutil

import pytest
import torch

from hass import DraftModel
from train.data import write_prepared
from train.long_run import (LongRunError, choose_segment, global_log, segment_overrides, status, tokens_seen,
                            train_long,
                            write_milestone)
from train.trainer import _warmup_then_linear

from test_trainer import config, pattern_samples, tiny  # noqa: F401  (tiny is a fixture)


def test_a_restarted_segment_continues_the_linear_schedule_after_its_warmup(tmp_path):
    cfg = config_like(tmp_path, max_steps=1000, lr=1e-3, warmup_fraction=0.02)
    original = _warmup_then_linear(20, 1000)
    for start in (20, 300, 999 - 60, 990):
        o = segment_overrides(cfg, start, warmup_steps=50)
        assert o["max_steps"] == 1000 - start and o["start_batch"] == start
        warm = round(o["warmup_fraction"] * o["max_steps"])
        segment = _warmup_then_linear(max(1, warm), o["max_steps"])
        for k in range(o["max_steps"]):
            lr = o["lr"] * segment(k)
            if k >= warm:  # after its own warm-up, exactly the original tail
                assert lr == pytest.approx(1e-3 * original(start + k), rel=1e-9, abs=1e-15), (start, k)
            else:  # rising toward it
                assert lr <= 1e-3 * original(start + warm) + 1e-12
    assert segment_overrides(cfg, 0) == {}
    with pytest.raises(LongRunError, match="max_steps > 0"):
        segment_overrides(config_like(tmp_path, max_steps=0), 5)
    with pytest.raises(LongRunError, match="within the run's 1000 steps"):
        segment_overrides(cfg, 1000)


def config_like(tmp_path, **kw):
    from train.config import TrainConfig

    return TrainConfig(target="t", data="d", output_dir=str(tmp_path), **kw)


def test_the_furthest_state_wins_and_a_milestone_beyond_it_starts_a_segment():
    assert choose_segment({}, None) == (0, True)
    assert choose_segment({0: 300}, None) == (0, False)
    assert choose_segment({0: 300}, 200) == (0, False)  # local state beyond the milestone: keep its optimiser
    assert choose_segment({0: 300}, 300) == (0, False)
    assert choose_segment({0: 100}, 300) == (300, True)  # stale local state: the milestone is further
    assert choose_segment({}, 300) == (300, True)  # a fresh machine
    assert choose_segment({0: 100, 300: 300}, 300) == (300, False)  # its segment started, no checkpoint yet
    assert choose_segment({0: 100, 300: 450}, 300) == (300, False)


def test_a_fresh_machine_continues_from_the_committed_weights(tiny, tmp_path):  # noqa: F811
    runs, milestones = tmp_path / "runs", tmp_path / "milestones"
    cfg = config(tiny, tmp_path / "unused", max_steps=8, save_every=2, eval_fraction=0.0, warmup_fraction=0.1)
    at4 = train_long(cfg, "r", stop_at=4, runs=runs, milestones=milestones)
    assert at4.name == "step-00000004"
    write_milestone(runs / "r", milestones / "r")
    info = json.loads((milestones / "r" / "milestone.json").read_text())
    assert info["global_step"] == 4 and info["total_steps"] == 8 and info["tokens_seen"] > 0
    assert not (milestones / "r" / "optimizer.pt").exists()
    assert torch.equal(DraftModel.from_pretrained(milestones / "r").state_dict()["fc.weight"],
                       DraftModel.from_pretrained(at4).state_dict()["fc.weight"])

    shutil.rmtree(runs)  # a fresh machine: only the committed milestone is left
    final = train_long(cfg, "r", runs=runs, milestones=milestones)
    assert final.parent.name == "seg-00000004"
    saved = json.loads((final / "train_config.json").read_text())
    assert saved["start_batch"] == 4 and saved["max_steps"] == 4 and saved["init_from"] == str(milestones / "r")
    events = (runs / "r" / "events.log").read_text()
    assert "starting from the committed weights" in events and "warm-up" in events
    assert [r["step"] for r in global_log(runs / "r")] == [5, 6, 7, 8]
    assert tokens_seen(runs / "r") > info["tokens_seen"]  # the milestone's tokens, then the segment's
    assert json.loads((runs / "r" / "prior.json").read_text())["tokens_seen"] == info["tokens_seen"]
    assert "r: checkpoint at step 8 of 8" in status(runs, milestones)[0]

    # the same machine again: it resumes its own segment (nothing left to do)
    again = train_long(cfg, "r", runs=runs, milestones=milestones)
    assert again == final and "resuming from its newest local checkpoint" in (runs / "r" / "events.log").read_text()


def test_a_long_run_refuses_changed_settings_or_data_with_the_differences_named(tiny, tmp_path):  # noqa: F811
    runs, milestones = tmp_path / "runs", tmp_path / "milestones"
    cfg = config(tiny, tmp_path / "unused", max_steps=4, eval_fraction=0.0)
    train_long(cfg, "r", stop_at=2, runs=runs, milestones=milestones)
    with pytest.raises(LongRunError, match=r"hod_weight: 1.0 there, 0.0 now"):
        train_long(config(tiny, tmp_path / "u", max_steps=4, eval_fraction=0.0, hod_weight=0.0), "r",
                   runs=runs, milestones=milestones)
    other = tmp_path / "other.jsonl"
    write_prepared(other, {"tokenizer": "none", "max_length": 64}, pattern_samples(120, seed=5))
    with pytest.raises(LongRunError, match="data_sha256 differs"):
        train_long(config(tiny, tmp_path / "u", max_steps=4, eval_fraction=0.0, data=str(other)), "r",
                   runs=runs, milestones=milestones)
    write_milestone(runs / "r", milestones / "r")
    shutil.rmtree(runs)
    with pytest.raises(LongRunError, match=r"milestone .* lr: 0.003 there, 0.001 now"):
        train_long(config(tiny, tmp_path / "u", max_steps=4, eval_fraction=0.0, lr=1e-3), "r",
                   runs=runs, milestones=milestones)
    with pytest.raises(LongRunError, match="no milestone.json"):
        train_long(cfg, "b", start_from=str(tmp_path / "nowhere"), runs=runs, milestones=milestones)


def test_the_rise_over_the_last_fifth_and_the_curves_of_a_milestone(tmp_path, capsys):
    from train.long_run import main, rise_over_tail

    evals = [{"step": s, "split": "eval", "acc_s1": a} for s, a in
             [(1000, 0.30), (2000, 0.40), (3000, 0.45), (4000, 0.47), (5000, 0.48)]]
    # the last 20% of 5,000 steps starts at 4,000: the eval there is the reference
    assert rise_over_tail(evals) == pytest.approx({"from_step": 4000, "to_step": 5000, "from": 0.47, "to": 0.48,
                                                   "rise": 0.01})
    assert rise_over_tail(evals[:1]) is None
    assert rise_over_tail(evals, fraction=0.5)["from_step"] == 2000  # the latest eval at or before step 2,500
    milestone = tmp_path / "eagle2"
    milestone.mkdir()
    train_rows = [{"step": s, "split": "train", "acc_s1": 0.1} for s in (50, 100)]
    (milestone / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in train_rows + evals))
    main(["curves", "--runs", str(milestone), "--out", str(tmp_path / "c.png"), "--json", str(tmp_path / "c.json")])
    printed = capsys.readouterr().out
    assert "eagle2: held-out top-1 0.480 at step 5000; over the last 20% (steps 4000-5000) it rose +0.010" in printed
    report = json.loads((tmp_path / "c.json").read_text())
    assert [e["step"] for e in report["eagle2"]["evals"]] == [1000, 2000, 3000, 4000, 5000]
    assert (tmp_path / "c.png").stat().st_size > 0
    with pytest.raises(SystemExit, match="neither a long run's folder"):
        main(["curves", "--runs", str(tmp_path / "c.json"), "--out", str(tmp_path / "d.png")])
