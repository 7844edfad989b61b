"""hass.kernels: oneDNN-packed linear layers compute the same products; speculative greedy stays plain greedy."""
import pytest
import torch
from torch import nn

from conftest import tiny_draft, tiny_target
from hass import HassModel, TreeConfig
from hass.kernels import PackedLinear, pack_linears


def greedy(target, prompt, n):
    return target.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=n, do_sample=False,
                           eos_token_id=None, pad_token_id=0)


@pytest.mark.parametrize("rows", [1, 2, 9])
def test_a_packed_linear_computes_the_same_product(rows):
    torch.manual_seed(0)
    linear = nn.Linear(64, 96)
    packed = PackedLinear(linear, min_rows=2)
    x = torch.randn(1, rows, 64)
    with torch.inference_mode():
        torch.testing.assert_close(packed(x), linear(x), rtol=1e-5, atol=1e-5)
        if rows == 1:  # fewer rows than min_rows: the plain product, bit for bit
            assert torch.equal(packed(x), linear(x))
    assert packed.weight is linear.weight  # shared, so a tied lm_head stays tied


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_speculative_greedy_with_packed_kernels_equals_plain_greedy(family):
    target = tiny_target(family, seed=2)
    draft = tiny_draft(target)
    prompt = torch.randint(0, 128, (1, 9), generator=torch.Generator().manual_seed(4))
    expected = greedy(target, prompt, 24)
    assert pack_linears(target) == 2 * 7 + 1  # q k v o gate up down per layer, and lm_head
    out = HassModel(target, draft).generate(prompt, max_new_tokens=24, eos_token_id=[], tree=TreeConfig(12, 4, 3))
    assert torch.equal(out.sequences, expected)


def test_packing_is_refused_where_it_does_not_apply():
    with pytest.raises(ValueError, match="in fp32"):
        pack_linears(tiny_target("llama").half())


def test_bf16_packing_is_refused_where_onednn_has_no_bf16(monkeypatch, tmp_path):
    import hass.generation
    import hass.kernels

    monkeypatch.setattr(hass.kernels, "onednn_bf16_supported", lambda: False)
    with pytest.raises(ValueError, match="not this one"):
        pack_linears(tiny_target("llama").to(torch.bfloat16))
    tiny_target("llama").save_pretrained(tmp_path / "t")
    loads = []
    monkeypatch.setattr(hass.generation.AutoModelForCausalLM, "from_pretrained", lambda *a, **k: loads.append(a))
    with pytest.raises(ValueError, match="oneDNN has bf16"):
        HassModel.from_pretrained(tmp_path / "t", None, dtype=torch.bfloat16, cpu_kernels="onednn")
    assert loads == []  # refused before any weights load
    from evaluation.run import EvalConfig  # the evaluation's config asks the same check, with its flag's name

    with pytest.raises(ValueError, match="--cpu-kernels onednn in bf16 needs a CPU where oneDNN has bf16"):
        EvalConfig(base=str(tmp_path / "t"), draft=None, bench="gsm8k", methods=("vanilla",), out="x",
                   dtype="bf16", cpu_kernels="onednn")


def test_both_packed_kernels_compute_the_plain_product(monkeypatch):
    """The reordered-weight oneDNN product, and MkldnnLinear where this PyTorch lacks it."""
    import hass.kernels

    torch.manual_seed(1)
    linear = nn.Linear(64, 96)
    x = torch.randn(2, 5, 64)
    for available in (True, False):
        monkeypatch.setattr(hass.kernels, "_pointwise_available", lambda a=available: a)
        packed = PackedLinear(linear)
        assert packed.pointwise is available
        assert packed.min_rows == (1 if available else 2)  # MkldnnLinear loses at one row
        with torch.inference_mode():
            torch.testing.assert_close(packed(x), linear(x), rtol=1e-5, atol=1e-5)


def test_from_pretrained_refuses_onednn_where_it_does_not_apply_before_loading(tmp_path):
    tiny_target("llama").save_pretrained(tmp_path / "t")
    with pytest.raises(ValueError, match="cpu_kernels must be one of"):
        HassModel.from_pretrained(tmp_path / "t", None, cpu_kernels="fast")
    with pytest.raises(ValueError, match="fp32 / bf16 weights on the CPU"):
        HassModel.from_pretrained(tmp_path / "t", None, dtype=torch.float16, cpu_kernels="onednn")
    from evaluation.run import EvalConfig

    with pytest.raises(ValueError, match="--cpu-kernels onednn packs fp32 / bf16 weights on the CPU"):
        EvalConfig(base=str(tmp_path / "t"), draft=None, bench="gsm8k", methods=("vanilla",), out="x",
                   dtype="fp16", cpu_kernels="onednn")
    with pytest.raises(ValueError, match="resolved before the config is made"):
        EvalConfig(base=str(tmp_path / "t"), draft=None, bench="gsm8k", methods=("vanilla",), out="x",
                   cpu_kernels="auto")


def test_a_packed_model_can_be_deep_copied_and_stays_tied():
    import copy

    target = tiny_target("llama", seed=3)
    target.config.tie_word_embeddings = True
    target.lm_head.weight = target.model.embed_tokens.weight
    pack_linears(target)
    clone = copy.deepcopy(target)
    assert clone.lm_head.weight is clone.model.embed_tokens.weight  # the tie survives the copy
    assert clone.lm_head.weight is not target.lm_head.weight
    x = torch.randint(0, 128, (1, 7))
    with torch.inference_mode():
        assert torch.equal(clone(x).logits, target(x).logits)


def test_a_packed_draft_and_its_trimmed_projection_keep_greedy_exact():
    """cpu_kernels="onednn" packs the draft too (min_rows 1) and its draft-vocabulary copy of lm_head."""
    target = tiny_target("llama", seed=5)
    draft = tiny_draft(target)
    prompt = torch.randint(0, 128, (1, 9), generator=torch.Generator().manual_seed(6))
    expected = greedy(target, prompt, 24)
    pack_linears(target)
    assert pack_linears(draft, min_rows=1) > 0
    vocab = torch.arange(0, 128, 2)
    model = HassModel(target, draft, None, vocab)
    out = model.generate(prompt, max_new_tokens=24, eos_token_id=[], tree=TreeConfig(12, 4, 3))
    assert torch.equal(out.sequences, expected)
    _, head = model._draft_projections(target.get_input_embeddings(), target.get_output_embeddings(), torch.float32)
    assert isinstance(head, PackedLinear) and head.out_features == 64


def test_auto_kernels_pack_an_fp32_cpu_target_only(tmp_path):
    from hass.kernels import resolve_cpu_kernels

    from hass import affine

    assert resolve_cpu_kernels("auto", "cpu", torch.float32) == ("affine" if affine.available() else "onednn")
    assert resolve_cpu_kernels("auto", "cpu", torch.bfloat16) == "default"
    assert resolve_cpu_kernels("auto", "cuda", torch.float32) == "default"
    assert resolve_cpu_kernels("auto", "cpu", torch.float32, device_map="auto") == "default"
    assert resolve_cpu_kernels("default", "cpu", torch.float32) == "default"
    tiny_target("llama").save_pretrained(tmp_path / "t")
    packed = HassModel.from_pretrained(tmp_path / "t", None, dtype=torch.float32)
    # a random target has no layer in affine form (tests/test_affine.py): all of them on oneDNN either way
    assert packed.cpu_kernels == "onednn" and isinstance(packed.target.lm_head, PackedLinear)
    plain = HassModel.from_pretrained(tmp_path / "t", None, dtype=torch.float32, cpu_kernels="default")
    assert plain.cpu_kernels == "default" and type(plain.target.lm_head) is nn.Linear
    assert HassModel(plain.target).cpu_kernels == "default"
