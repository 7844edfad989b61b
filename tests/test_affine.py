"""hass.affine: a GGUF-derived fp32 weight packed as codes + an exact affine map per block of 32 is multiplied
exactly like the dense weight; speculative greedy on those kernels stays plain greedy."""
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import tiny_draft, tiny_target
from hass import HassModel, TreeConfig, affine
from hass.affine import AffineLinear, affine_linear, decode, pack_affine
from hass.kernels import kernel_names, pack_affine_linears, resolve_cpu_kernels

pytestmark = pytest.mark.skipif(affine.build_error() is not None, reason=f"hass.affine: {affine.build_error()}")


def q4_1(n, k, seed=0):
    """What a Q4_1 GGUF block dequantizes to: fp16 scale d and minimum m, 4-bit codes, d * q + m in fp32."""
    g = torch.Generator().manual_seed(seed)
    d = (torch.rand(n, k // 32, 1, generator=g) * 0.02 + 1e-3).half().float()
    m = (-torch.rand(n, k // 32, 1, generator=g) * 0.1).half().float()
    q = torch.randint(0, 16, (n, k // 32, 32), generator=g).float()
    q[..., 0], q[..., 1] = 0, 15  # the quantizer maps a block's minimum to 0 and its maximum to 15
    return (d * q + m).reshape(n, k)


def q8_0(n, k, seed=0):
    """What a Q8_0 block dequantizes to: fp16 scale d = max |w| / 127, codes -127..127, d * q."""
    g = torch.Generator().manual_seed(seed)
    d = (torch.rand(n, k // 32, 1, generator=g) * 0.01 + 1e-4).half().float()
    q = torch.randint(-127, 128, (n, k // 32, 32), generator=g).float()
    q[..., 0] = 127 * torch.where(torch.rand(n, k // 32, generator=g) < 0.5, 1, -1)  # the largest |w|
    return (d * q).reshape(n, k)


@pytest.fixture(params=["avx2", "avx512"])
def isa(request):
    """Each instruction set the product has, in turn (its lane count sets the summation order); on a CPU without
    AVX-512, asking for it must fail with the reason instead."""
    before = affine.isa()
    try:
        affine.isa(request.param)
    except RuntimeError as exc:  # only AVX-512 can be missing, and then for that reason
        assert request.param == "avx512" and "lacks AVX-512" in str(exc)
    yield affine.isa()
    affine.isa(before)


def test_the_instruction_set_is_reported_and_a_bad_name_refused():
    assert affine.isa() in ("avx2", "avx512")
    with pytest.raises(RuntimeError, match="'avx2', 'avx512'"):
        affine.isa("sse2")


def test_packing_finds_the_exact_form_of_q4_1_and_q8_0_weights_and_nothing_else():
    w4, w8 = q4_1(40, 96), q8_0(24, 64)
    codes, scale, offset = pack_affine(w4, 4)
    assert codes.shape == (40, 48) and scale.shape == offset.shape == (40, 3)
    assert torch.equal(decode(codes, scale, offset), w4)  # every weight back, bit for bit
    assert pack_affine(w8, 4) is None  # 255 levels do not fit 4 bits
    assert torch.equal(decode(*pack_affine(w8, 8)), w8)
    assert pack_affine(torch.randn(40, 96), 4) is None and pack_affine(torch.randn(40, 96), 8) is None
    assert pack_affine(w4[:, :80], 4) is None  # K not a multiple of 32
    assert pack_affine(w4.double(), 4) is None
    constant = torch.full((4, 64), 0.25)
    assert torch.equal(decode(*pack_affine(constant, 4)), constant)
    with pytest.raises(ValueError, match="bits must be 4 or 8"):
        pack_affine(w4, 2)


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("n,k", [(1, 32), (5, 96), (7, 64), (34, 64)])
def test_the_product_equals_the_dense_one_and_a_row_never_depends_on_the_others(bits, n, k, isa):
    w = q4_1(n, k, seed=n) if bits == 4 else q8_0(n, k, seed=n)
    packed = pack_affine(w, bits)
    bias = torch.randn(n)
    x = torch.randn(13, k)
    assert torch.equal(decode(*packed), w)
    for b in (None, bias):
        y = affine_linear(x, *packed, b)
        torch.testing.assert_close(y, F.linear(x, w, b), rtol=1e-5, atol=1e-5)
        for rows in (slice(0, 1), slice(3, 4), slice(2, 9), slice(7, 11), slice(0, 13), slice(1, 6), slice(4, 6)):
            # tiles of 4 x 3 (AVX2) and 6 x 4 (AVX-512) with remainders of 1 to 5 rows
            assert torch.equal(affine_linear(x[rows], *packed, b), y[rows])
    assert affine_linear(x.reshape(1, 13, k), *packed, None).shape == (1, 13, n)
    assert affine_linear(x[:0], *packed, None).shape == (0, n)


def test_the_product_refuses_inputs_that_do_not_fit():
    packed = pack_affine(q4_1(8, 64), 4)
    with pytest.raises(RuntimeError, match="input: fp32"):
        affine_linear(torch.randn(2, 32), *packed)
    with pytest.raises(RuntimeError, match="input: fp32"):
        affine_linear(torch.randn(2, 64, dtype=torch.float64), *packed)
    with pytest.raises(RuntimeError, match="do not fit"):
        affine_linear(torch.randn(2, 64), packed[0][:, :16].contiguous(), packed[1], packed[2])


def test_an_affine_linear_keeps_its_weight_and_falls_back_to_the_plain_product():
    from hass.kernels import plain_kernels

    linear = nn.Linear(64, 40)
    with torch.no_grad():
        linear.weight.copy_(q4_1(40, 64, seed=3))
    layer = AffineLinear.from_linear(linear)
    assert layer is not None and layer.bits == 4 and layer.weight is linear.weight
    x = torch.randn(3, 64)
    with torch.inference_mode():
        torch.testing.assert_close(layer(x), linear(x), rtol=1e-5, atol=1e-5)
        with plain_kernels():
            assert torch.equal(layer(x), linear(x))
    assert AffineLinear.from_linear(nn.Linear(64, 40)) is None  # trained weights: no such form
    rows = layer.rows(torch.tensor([3, 0, 39]))
    with torch.inference_mode():
        assert torch.equal(rows(x), layer(x)[:, [3, 0, 39]])  # a trimmed projection: the same outputs, bit for bit


def gguf_like(target):
    """Give a tiny target the weights a GGUF would have: Q4_1 decoder layers, a Q8_0 lm_head."""
    with torch.no_grad():
        for i, module in enumerate(m for m in target.modules() if isinstance(m, nn.Linear)):
            n, k = module.weight.shape
            module.weight.copy_(q4_1(n, k, seed=i) * 4 if module is not target.lm_head else q8_0(n, k, seed=i) * 64)
    return target


def test_speculative_greedy_on_affine_kernels_equals_plain_greedy(family, isa):
    target = gguf_like(tiny_target(family, seed=2))
    draft = tiny_draft(target)
    prompt = torch.randint(0, 128, (1, 9), generator=torch.Generator().manual_seed(4))
    expected = target.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=24, do_sample=False,
                               eos_token_id=None, pad_token_id=0)
    assert pack_affine_linears(target) == (2 * 7 + 1, 0)  # q k v o gate up down per layer, and lm_head
    assert kernel_names(target) == ["affine4", "affine8"]
    model = HassModel(target, draft, None, torch.arange(0, 128, 2))  # a draft vocabulary: lm_head's rows
    assert model.cpu_kernels == "affine"
    for tree in (TreeConfig(12, 4, 3), TreeConfig(5, 4, 1)):
        out = model.generate(prompt, max_new_tokens=24, eos_token_id=[], tree=tree)
        assert torch.equal(out.sequences, expected)
    plain = HassModel(target, None).generate(prompt, max_new_tokens=24, eos_token_id=[])
    assert torch.equal(plain.sequences, expected)
    _, head = model._draft_projections(target.get_input_embeddings(), target.get_output_embeddings(), torch.float32)
    assert isinstance(head, AffineLinear) and head.out_features == 64


def test_from_pretrained_picks_the_affine_kernels_where_they_build(tmp_path):
    gguf_like(tiny_target("llama", seed=5)).save_pretrained(tmp_path / "t")
    assert resolve_cpu_kernels("auto", "cpu", torch.float32) == "affine"
    model = HassModel.from_pretrained(tmp_path / "t", None, dtype=torch.float32)
    assert model.cpu_kernels == "affine" and isinstance(model.target.lm_head, AffineLinear)
    tiny_target("llama").save_pretrained(tmp_path / "random")  # no layer has the form: all on oneDNN
    plain = HassModel.from_pretrained(tmp_path / "random", None, dtype=torch.float32, cpu_kernels="affine")
    assert plain.cpu_kernels == "onednn"
    with pytest.raises(ValueError, match="affine multiplies fp32 weights on the CPU"):
        resolve_cpu_kernels("affine", "cpu", torch.bfloat16)
    with pytest.raises(ValueError, match="affine multiplies fp32 weights on the CPU"):
        resolve_cpu_kernels("affine", "cuda", torch.float32)


def test_where_the_product_cannot_build_auto_warns_once_and_uses_onednn(monkeypatch):
    monkeypatch.setattr(affine, "_STATE", {})
    monkeypatch.setattr(affine, "build_error", lambda: "no C++ compiler (c++ / g++) on PATH")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert resolve_cpu_kernels("auto", "cpu", torch.float32) == "onednn"
        assert resolve_cpu_kernels("auto", "cpu", torch.float32) == "onednn"
    assert len(caught) == 1  # warned once
    assert "no C++ compiler (c++ / g++) on PATH; the oneDNN kernels run instead" in str(caught[0].message)
    with pytest.raises(ValueError, match="--cpu-kernels affine: hass.affine: no C\\+\\+ compiler"):
        resolve_cpu_kernels("affine", "cpu", torch.float32, flag="--cpu-kernels")
