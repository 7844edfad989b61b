"""evaluation.sampling_cycle: the cost of a cycle at T = 0 and T = 1, on a tiny random model."""
import json

import torch

from conftest import tiny_draft, tiny_target
from evaluation import sampling_cycle
from hass import HassModel, TreeConfig


def test_measure_counts_forwards_and_tokens():
    target = tiny_target("llama")
    model = HassModel(target, tiny_draft(target))
    prompts = [torch.tensor([[1, 2, 3]]), torch.tensor([[4, 5, 6, 7]])]
    got = sampling_cycle.measure(model, prompts, TreeConfig(6, 3, 2), new_tokens=12, repeats=1)
    assert set(got) == set(sampling_cycle.SETTINGS)
    for row in got.values():
        assert row["ms_per_forward"] > 0 and 1 <= row["tau"] <= 4  # depth 3: at most 3 drafts + the bonus
    plain = sampling_cycle.measure(HassModel(target, None), prompts, None, new_tokens=12, repeats=1)
    assert all(row["tau"] == 1 for row in plain.values())  # plain decoding: one token per forward


def test_cli_writes_the_table_and_the_record(tmp_path, capsys):
    from test_evaluation import tiny_tokenizer

    target = tiny_target("llama")
    target.save_pretrained(tmp_path / "target")
    tiny_tokenizer().save_pretrained(tmp_path / "target")
    tiny_draft(target).save_pretrained(tmp_path / "draft")
    out = tmp_path / "cycle.json"
    sampling_cycle.main(["--base", str(tmp_path / "target"), "--draft", str(tmp_path / "draft"), "--tree", "6/3/2",
                         "--draft-dtype", "fp32", "--new-tokens", "8", "--repeats", "1", "--out", str(out)])
    text = capsys.readouterr().out
    assert "| T=1 |" in text and "| T=0 | " in text
    record = json.loads(out.read_text())
    assert record["settings"]["tree"] == "6/3/2" and set(record["speculative"]) == set(sampling_cycle.SETTINGS)
