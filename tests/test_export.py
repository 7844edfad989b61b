"""hass.export: each engine's folder; the vLLM bias fold computes the same draft; bad input writes nothing."""
import json

import pytest
import torch

from conftest import tiny_draft, tiny_target
from hass import CheckpointError, DraftModel
from hass.draft_vocab import save_token_counts, top_tokens
from hass.export import export, fold_fc_bias, main


def outputs(draft, seed=0):
    g = torch.Generator().manual_seed(seed)
    f, e = torch.randn(2, 7, 64, generator=g), torch.randn(2, 7, 64, generator=g)
    with torch.no_grad():
        return draft(f, e, torch.arange(7).expand(2, 7))


def trained_draft(tmp_path, family="llama"):
    draft = tiny_draft(tiny_target(family)).float()
    with torch.no_grad():
        draft.fc.bias.normal_(std=0.5)  # a real bias, so the fold has something to do
    draft.save_pretrained(tmp_path / "draft")
    return draft


def test_the_vllm_fold_computes_the_same_draft(tmp_path):
    draft = trained_draft(tmp_path)
    out = export(tmp_path / "draft", tmp_path / "vllm", "vllm")
    config = json.loads((out / "config.json").read_text())
    assert config["bias"] is False and config["attention_bias"] is True
    folded = DraftModel.from_pretrained(out)  # transformers' LLaMA layer with q/k/v/o biases, fc without one
    assert folded.fc.bias is None and folded.layers[0].self_attn.o_proj.bias is not None
    torch.testing.assert_close(outputs(folded), outputs(draft), rtol=1e-5, atol=1e-5)
    # the fold itself: no fc.bias, the same keys otherwise plus the four biases
    state = fold_fc_bias(draft.state_dict())
    assert "fc.bias" not in state and {f"layers.0.self_attn.{p}.bias" for p in ("q_proj", "k_proj", "v_proj", "o_proj")} <= set(state)


def test_sglang_and_eagle_layouts(tmp_path):
    draft = trained_draft(tmp_path)
    counts = torch.arange(128, dtype=torch.long)
    save_token_counts(tmp_path / "draft", counts, "test")
    cfg = json.loads((tmp_path / "draft" / "config.json").read_text())
    cfg["draft_vocab_size"] = 32
    (tmp_path / "draft" / "config.json").write_text(json.dumps(cfg))
    sg = export(tmp_path / "draft", tmp_path / "sglang", "sglang")
    config = json.loads((sg / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLMEagle"] and config["bias"] is False
    assert "draft_vocab_size" not in config
    assert torch.equal(torch.load(sg / "hot_token_ids.pt"), top_tokens(counts, 32))
    from safetensors.torch import load_file

    weights = load_file(str(sg / "model.safetensors"))  # SGLang's fc always has a bias: kept as it is
    assert weights.keys() == draft.state_dict().keys()
    assert all(torch.equal(weights[k], v) for k, v in draft.state_dict().items())
    eagle = export(tmp_path / "draft", tmp_path / "eagle", "eagle")
    assert sorted(p.name for p in eagle.iterdir()) == ["config.json", "pytorch_model.bin"]
    assert json.loads((eagle / "config.json").read_text())["bias"] is True
    torch.testing.assert_close(outputs(DraftModel.from_pretrained(eagle)), outputs(draft))


def test_bad_input_is_refused_before_anything_is_written(tmp_path, capsys):
    trained_draft(tmp_path / "q", family="qwen2")
    with pytest.raises(ValueError, match="LLaMA architecture.*'qwen2'"):
        export(tmp_path / "q" / "draft", tmp_path / "out", "vllm")
    trained_draft(tmp_path)
    (tmp_path / "taken").mkdir()
    with pytest.raises(FileExistsError, match="already exists"):
        export(tmp_path / "draft", tmp_path / "taken", "vllm")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text((tmp_path / "draft" / "config.json").read_text())
    with pytest.raises(CheckpointError, match="neither model.safetensors"):
        export(tmp_path / "broken", tmp_path / "out", "sglang")
    with pytest.raises(SystemExit):
        main([str(tmp_path / "broken"), str(tmp_path / "out"), "--to", "eagle"])
    assert "error:" in capsys.readouterr().err
    leftovers = sorted(p.name for p in tmp_path.iterdir())
    assert leftovers == ["broken", "draft", "q", "taken"]  # no "out", no temporary folder
