"""hass.precision: the draft dtype 'auto' picks bf16 only where bf16 matrix products are fast."""
import json

import pytest
import torch

from conftest import tiny_draft, tiny_target
from evaluation import cycle_cost
from hass import HassModel
from hass.precision import bf16_is_fast, fast_draft_dtype, resolve_dtype_name


def fake_cpu(monkeypatch, amx: bool, avx512_bf16: bool) -> None:
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)


@pytest.mark.parametrize("amx, avx512_bf16, expected", [(True, False, "bf16"), (False, True, "bf16"),
                                                        (True, True, "bf16"), (False, False, "fp32")])
def test_auto_follows_the_cpu_bf16_units(monkeypatch, amx, avx512_bf16, expected):
    fake_cpu(monkeypatch, amx, avx512_bf16)
    assert bf16_is_fast("cpu") == (expected == "bf16")
    assert resolve_dtype_name("auto") == expected
    assert fast_draft_dtype() == {"bf16": torch.bfloat16, "fp32": torch.float32}[expected]


def test_auto_on_this_machine_and_explicit_names():
    flags = torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported()
    assert resolve_dtype_name("auto") == ("bf16" if flags else "fp32")
    for name in ("bf16", "fp16", "fp32"):
        assert resolve_dtype_name(name) == name
    with pytest.raises(ValueError, match="fp8.*auto"):
        resolve_dtype_name("fp8")


@pytest.mark.parametrize("fast", [True, False])
def test_hass_model_loads_an_auto_draft_in_the_fast_dtype(tmp_path, monkeypatch, fast):
    fake_cpu(monkeypatch, amx=fast, avx512_bf16=False)
    target = tiny_target("llama")
    target.save_pretrained(tmp_path / "target")
    tiny_draft(target).save_pretrained(tmp_path / "draft")
    model = HassModel.from_pretrained(tmp_path / "target", tmp_path / "draft", dtype=torch.float32, draft_dtype="auto")
    assert model.draft.fc.weight.dtype == (torch.bfloat16 if fast else torch.float32)
    prompt = torch.tensor([[1, 2, 3]])
    ref = HassModel(model.target, None).generate(prompt, max_new_tokens=10, eos_token_id=[])
    assert torch.equal(model.generate(prompt, max_new_tokens=10, eos_token_id=[]).sequences, ref.sequences)


def test_cycle_cost_times_several_draft_dtypes_side_by_side(tmp_path, capsys, monkeypatch):
    target = tiny_target("llama")
    target.save_pretrained(tmp_path / "target")
    tiny_draft(target).save_pretrained(tmp_path / "draft")
    args = ["--base", str(tmp_path / "target"), "--draft", str(tmp_path / "draft"), "--trees", "6/3/2,5/4/1",
            "--context", "8", "--repeats", "1", "--out", str(tmp_path / "cost.json")]
    cycle_cost.main([*args, "--draft-dtype", "bf16,fp32"])
    saved = json.loads((tmp_path / "cost.json").read_text())
    assert [r["tree"] for r in saved["trees"]] == ["6/3/2", "5/4/1", "6/3/2 [fp32]", "5/4/1 [fp32]"]
    assert saved["settings"]["draft_dtypes"] == ["bf16", "fp32"]
    ms = saved["milliseconds"]
    for row in saved["trees"]:
        suffix = " [fp32]" if row["tree"].endswith("[fp32]") else ""
        total = row["tree"].split("/")[0]
        assert row["cycle_ms"] == pytest.approx(ms[f"target forward T={total}"] + ms[f"drafting {row['tree']}"]
                                                + ms[f"draft consume (2 tokens){suffix}"])
    fake_cpu(monkeypatch, amx=False, avx512_bf16=False)
    with pytest.raises(SystemExit):  # auto is fp32 on this (faked) CPU: fp32 twice
        cycle_cost.main([*args, "--draft-dtype", "auto,fp32"])
    assert "names one dtype twice (auto is fp32 here)" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cycle_cost.main([*args, "--draft-dtype", "bf16,fp8"])
