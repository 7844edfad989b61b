"""train.compare_runs: stages laid end to end, the last held-out accuracy of each stage printed, bad input refused."""

import json

import pytest

from train import compare_runs


def write_stage(folder, records):
    folder.mkdir(parents=True)
    (folder / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def test_stages_end_to_end_and_last_eval_printed(tmp_path, capsys):
    run = tmp_path / "hass"
    write_stage(run / "stage1", [{"split": "train", "step": 5, "loss": 1.0},
                                 {"split": "eval", "step": 5, "acc_s1": 0.1, "acc_s2": 0.05},
                                 {"split": "train", "step": 10, "loss": 0.9},
                                 {"split": "eval", "step": 10, "acc_s1": 0.2, "acc_s2": 0.15}])
    write_stage(run / "stage2", [{"split": "train", "step": 4, "loss": 0.8},
                                 {"split": "eval", "step": 4, "acc_s1": 0.25, "acc_s2": 0.2}])
    (run / "stage10").mkdir()  # no log: skipped, and numeric order would put it last anyway
    out = tmp_path / "plots" / "acc.png"
    compare_runs.main(["--run", f"HASS={run}", "--out", str(out)])
    printed = capsys.readouterr().out.splitlines()
    assert printed == ["HASS stage1: step 10, held-out top-1 0.200 / 0.150",
                       "HASS stage2: step 14, held-out top-1 0.250 / 0.200"]  # stage 2 starts at stage 1's last step
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in out.parent.iterdir()) == ["acc.png"]  # no temporary left


def test_bad_runs_are_refused_before_plotting(tmp_path):
    (tmp_path / "empty").mkdir()
    for bad in (["--run", "no-equals-sign"], ["--run", f"X={tmp_path / 'missing'}"], ["--run", f"X={tmp_path / 'empty'}"]):
        with pytest.raises(SystemExit):
            compare_runs.main([*bad, "--out", str(tmp_path / "x.png")])
    assert not (tmp_path / "x.png").exists()
