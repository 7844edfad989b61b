"""evaluation.cycle_cost: the cost model of one speculative cycle, on a tiny random model."""
import json

import pytest
import torch

from conftest import tiny_draft, tiny_target
from evaluation.cycle_cost import main, measure, parse_trees
from hass import HassModel, TreeConfig
from hass.draft_vocab import save_token_counts


def test_measure_times_every_piece_and_derives_break_even():
    target = tiny_target("llama")
    model = HassModel(target, tiny_draft(target).to(torch.bfloat16))  # fp32 target, bf16 draft
    trees = [TreeConfig(10, 3, 3), TreeConfig(5, 4, 1)]
    result = measure(model, trees, context=20, repeats=2)
    ms = result["milliseconds"]
    assert set(ms) == {"vanilla step", "draft consume (2 tokens)", "target forward T=10", "target forward T=5",
                       "drafting 10/3/3", "drafting 5/4/1"}
    assert all(v > 0 for v in ms.values())
    for row, tree in zip(result["trees"], trees):
        name = f"{tree.total_tokens}/{tree.depth}/{tree.top_k}"
        cycle = ms[f"target forward T={tree.total_tokens}"] + ms[f"drafting {name}"] + ms["draft consume (2 tokens)"]
        assert row["tree"] == name and row["cycle_ms"] == pytest.approx(cycle)
        assert row["break_even_tau"] == pytest.approx(cycle / ms["vanilla step"])
        assert row["tau_for_2x"] == pytest.approx(2 * row["break_even_tau"])
    # no timing comparison here (e.g. "a cycle costs more than a plain step"): on a loaded machine a single
    # repeat can invert it; the costs themselves are measured by the script, side by side


def saved_models(tmp_path):
    """A tiny target and draft in tmp_path/target and tmp_path/draft."""
    target = tiny_target("llama")
    target.save_pretrained(tmp_path / "target")
    tiny_draft(target).save_pretrained(tmp_path / "draft")


def test_cli_writes_json_and_rejects_bad_trees(tmp_path, capsys):
    saved_models(tmp_path)
    out = tmp_path / "cost.json"
    main(["--base", str(tmp_path / "target"), "--draft", str(tmp_path / "draft"), "--trees", "6/3/2",
          "--context", "8", "--repeats", "1", "--draft-dtype", "bf16", "--out", str(out)])
    saved = json.loads(out.read_text())
    assert saved["trees"][0]["tree"] == "6/3/2" and saved["settings"]["draft_dtype"] == "bf16"
    assert "break-even tau" in capsys.readouterr().out
    with pytest.raises(ValueError, match="TOTAL/DEPTH/TOP_K"):
        parse_trees("60-6-10")
    with pytest.raises(ValueError, match="at most"):
        parse_trees("60/6/10,200/2/3")  # more nodes than depth 2 and top-k 3 can produce
    for bad in (["--trees", "1/2"], ["--dtype", "fp8"], ["--context", "1"]):
        with pytest.raises(SystemExit):
            main(["--base", str(tmp_path / "target"), "--draft", str(tmp_path / "draft"), *bad])


def test_draft_vocab_sizes_are_timed_side_by_side(tmp_path, capsys):
    saved_models(tmp_path)
    args = ["--base", str(tmp_path / "target"), "--draft", str(tmp_path / "draft"), "--trees", "6/3/2,5/4/1",
            "--context", "8", "--repeats", "1", "--out", str(tmp_path / "cost.json")]
    with pytest.raises(SystemExit):  # no token counts beside the draft yet
        main([*args, "--draft-vocab", "32"])
    assert "python -m train.token_counts" in capsys.readouterr().err
    save_token_counts(tmp_path / "draft", torch.arange(128), source="test")
    for bad in ("0", "x", "1"):  # out of range, not a number, below the top_k of 6/3/2
        with pytest.raises(SystemExit):
            main([*args, "--draft-vocab", bad])
    main([*args, "--draft-vocab", "32,64"])
    saved = json.loads((tmp_path / "cost.json").read_text())
    assert [r["tree"] for r in saved["trees"]] == ["6/3/2", "6/3/2 V=32", "6/3/2 V=64",
                                                   "5/4/1", "5/4/1 V=32", "5/4/1 V=64"]
    ms = saved["milliseconds"]
    for row in saved["trees"]:
        name = row["tree"].split(" ")[0]
        drafting = ms[f"drafting {row['tree']}"]
        assert row["cycle_ms"] == pytest.approx(ms[f"target forward T={name.split('/')[0]}"] + drafting
                                                + ms["draft consume (2 tokens)"])


def test_packed_kernels_are_timed_side_by_side_and_verify_reads_internal_rows(tmp_path):
    saved_models(tmp_path)
    out = tmp_path / "cost.json"
    main(["--base", str(tmp_path / "target"), "--draft", str(tmp_path / "draft"), "--trees", "10/3/3",
          "--context", "8", "--repeats", "1", "--cpu-kernels", "default,onednn", "--out", str(out)])
    saved = json.loads(out.read_text())
    assert [r["tree"] for r in saved["trees"]] == ["10/3/3", "10/3/3 [kernels=onednn]"]
    assert {"vanilla step", "vanilla step [kernels=onednn]", "target forward T=10 [kernels=onednn]",
            "drafting 10/3/3 [kernels=onednn]"} <= set(saved["milliseconds"])  # the packed draft drafts apart
    packed_row = saved["trees"][1]
    assert packed_row["drafting_ms"] == saved["milliseconds"]["drafting 10/3/3 [kernels=onednn]"]
    assert all(2 <= r["logit_rows"] < 10 for r in saved["trees"])  # internal nodes + the bonus row, not all 10
    with pytest.raises(SystemExit):
        main(["--base", str(tmp_path / "target"), "--draft", str(tmp_path / "draft"), "--cpu-kernels", "fast"])


def test_gpu_speed_smoke_run_on_the_cpu(tmp_path, capsys):
    """evaluation.gpu_speed (run on a GPU by scripts/device_check.sh), on a 2-layer shape: every table is
    there, the perfect draft is accepted to full depth and the output is plain decoding's."""
    from evaluation import gpu_speed

    out = tmp_path / "speed.md"
    gpu_speed.main(["--device", "cpu", "--dtype", "fp32", "--layers", "2", "--vocab", "512", "--tokens", "1,8",
                    "--trees", "8/4/2", "--context", "16", "--new-tokens", "20", "--repeats", "1", "--out", str(out)])
    saved = json.loads((tmp_path / "speed.md.json").read_text())
    assert set(saved["forward_ms"]) == {"1", "8"}
    tree = saved["trees"]["8/4/2"]
    assert tree["identical"] and tree["tau"] > 3  # depth 4: up to 5 tokens per forward
    assert "| 8/4/2 |" in out.read_text()
