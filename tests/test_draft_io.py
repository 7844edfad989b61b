"""Draft checkpoints: our format round trip, the official EAGLE/HASS layout, corrupt and mismatched files."""
import json

import pytest
import torch
from safetensors.torch import save_file

from conftest import tiny_config, tiny_draft, tiny_target
from hass import CheckpointError, DraftMismatchError, DraftModel, HassModel


def draft_output(draft, seed=0):
    g = torch.Generator().manual_seed(seed)
    f, e = torch.randn(1, 6, 64, generator=g), torch.randn(1, 6, 64, generator=g)
    with torch.no_grad():
        return draft(f, e, torch.arange(6)[None])


def test_round_trip_has_no_embedding_or_lm_head(tmp_path, family):
    draft = tiny_draft(tiny_target(family))
    draft.save_pretrained(tmp_path / "d")
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["config.json", "model.safetensors"]
    loaded = DraftModel.from_pretrained(tmp_path / "d")
    assert not any("embed" in k or "lm_head" in k for k in loaded.state_dict())
    torch.testing.assert_close(draft_output(loaded), draft_output(draft))
    draft.save_pretrained(tmp_path / "d")  # overwriting an existing folder works and leaves no temp folders
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]


@pytest.mark.parametrize("weights_file", ["pytorch_model.bin", "model.safetensors"])
def test_loads_the_official_eagle_layout(tmp_path, weights_file):
    """A LLaMA-style config with num_hidden_layers 1 and a bias flag; keys fc.*, layers.0.*, embed_tokens.weight."""
    target = tiny_target("llama")
    ours = tiny_draft(target)
    cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "bias": True, "hidden_size": 64,
           "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2, "num_hidden_layers": 1,
           "vocab_size": 128, "max_position_embeddings": 256, "rms_norm_eps": 1e-6, "hidden_act": "silu",
           "rope_theta": 10000.0, "torch_dtype": "float16"}
    state = {k: v.clone() for k, v in ours.state_dict().items()}
    state["embed_tokens.weight"] = target.get_input_embeddings().weight.detach().clone()
    state["layers.0.input_layernorm.weight"] = torch.ones(64)  # present in some releases, unused
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    if weights_file.endswith(".bin"):
        torch.save(state, tmp_path / weights_file)
    else:
        save_file(state, str(tmp_path / weights_file))
    loaded = DraftModel.from_pretrained(tmp_path)
    assert loaded.fc.bias is not None
    torch.testing.assert_close(draft_output(loaded), draft_output(ours))
    HassModel(target, loaded)  # shapes agree with the target


def test_missing_and_corrupt_checkpoints(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        DraftModel.from_pretrained(tmp_path / "nope")
    with pytest.raises(CheckpointError, match="no config.json"):
        DraftModel.from_pretrained(tmp_path)
    draft = tiny_draft(tiny_target("llama"))
    draft.save_pretrained(tmp_path / "d")
    weights = tmp_path / "d" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="unreadable"):
        DraftModel.from_pretrained(tmp_path / "d")
    weights.unlink()
    with pytest.raises(CheckpointError, match="neither model.safetensors nor pytorch_model.bin"):
        DraftModel.from_pretrained(tmp_path / "d")
    (tmp_path / "d" / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        DraftModel.from_pretrained(tmp_path / "d")
    with pytest.raises(CheckpointError, match="no config.json"):
        HassModel.from_pretrained(tmp_path / "nope", None)


def test_weights_that_do_not_fit_the_config(tmp_path):
    draft = tiny_draft(tiny_target("llama"))
    draft.save_pretrained(tmp_path / "d")
    cfg = json.loads((tmp_path / "d" / "config.json").read_text())
    cfg["intermediate_size"] = 96
    (tmp_path / "d" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="mlp"):
        DraftModel.from_pretrained(tmp_path / "d")


@pytest.mark.parametrize("change", [{"hidden_size": 32}, {"vocab_size": 100}, {"num_attention_heads": 8},
                                    {"num_key_value_heads": 4}])
def test_draft_that_does_not_match_the_target(change):
    target = tiny_target("llama")
    other = DraftModel.from_target_config(tiny_config("llama", **change))
    name = next(iter(change))
    with pytest.raises(DraftMismatchError, match=name):
        HassModel(target, other)


def test_hass_model_loads_the_draft_in_its_own_dtype(tmp_path):
    target = tiny_target("llama")
    target.save_pretrained(tmp_path / "target")
    tiny_draft(target).save_pretrained(tmp_path / "draft")
    model = HassModel.from_pretrained(tmp_path / "target", tmp_path / "draft", dtype=torch.float32,
                                      draft_dtype=torch.bfloat16)
    assert model.target.dtype == torch.float32 and model.draft.fc.weight.dtype == torch.bfloat16
    prompt = torch.tensor([[1, 2, 3]])
    ref = HassModel(model.target, None).generate(prompt, max_new_tokens=12, eos_token_id=[])
    assert torch.equal(model.generate(prompt, max_new_tokens=12, eos_token_id=[]).sequences, ref.sequences)
    with pytest.raises(TypeError, match="draft_dtype"):
        HassModel.from_pretrained(tmp_path / "target", tmp_path / "draft", draft_dtype="bf16")


def test_saved_folders_get_normal_permissions(tmp_path):
    import os
    import stat

    mask = os.umask(0o022)
    os.umask(mask)
    tiny_draft(tiny_target("llama")).save_pretrained(tmp_path / "d")
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o777 & ~mask  # not mkdtemp's 0o700
    for f in (tmp_path / "d").iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o666 & ~mask, f.name


def test_a_config_carrying_target_only_fields_loads(tmp_path, family):
    """Tools built on recent transformers copy the target's per-layer fields (here 2 layer_types) into a
    draft config with num_hidden_layers 1; such a folder loads, for every family."""
    draft = tiny_draft(tiny_target(family))
    draft.save_pretrained(tmp_path / "d")
    cfg = json.loads((tmp_path / "d" / "config.json").read_text())
    cfg["layer_types"] = ["full_attention"] * 2
    (tmp_path / "d" / "config.json").write_text(json.dumps(cfg))
    loaded = DraftModel.from_pretrained(tmp_path / "d")
    assert loaded.config.num_hidden_layers == 1
    torch.testing.assert_close(draft_output(loaded), draft_output(draft))
    cfg["num_attention_heads"] = 5  # 64 is not a multiple of 5 heads sharing 2 kv heads
    (tmp_path / "d" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="inconsistent|does not match|has shape"):
        DraftModel.from_pretrained(tmp_path / "d")
    cfg.update(num_attention_heads=4, num_hidden_layers=2)
    (tmp_path / "d" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="num_hidden_layers"):
        DraftModel.from_pretrained(tmp_path / "d")
