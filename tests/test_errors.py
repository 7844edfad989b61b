"""Each bad generation input raises its documented error before any work."""
import pytest
import torch

from conftest import tiny_draft, tiny_target
from hass import HassModel, TreeConfig


@pytest.fixture(scope="module")
def model():
    target = tiny_target("llama", max_position_embeddings=64)
    return HassModel(target, tiny_draft(target))


PROMPT = torch.tensor([[1, 2, 3]])


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(input_ids=torch.zeros(1, 0, dtype=torch.long)), ValueError, "prompt is empty"),
    (dict(input_ids=torch.tensor([[1, 128]])), ValueError, "outside the vocabulary"),
    (dict(input_ids=torch.tensor([[-1, 2]])), ValueError, "outside the vocabulary"),
    (dict(input_ids=torch.ones(2, 3, dtype=torch.long)), ValueError, "batch size must be 1"),
    (dict(input_ids=torch.ones(1, 3)), TypeError, "integer token ids"),
    (dict(input_ids=[1, 2, 3]), TypeError, "torch.Tensor"),
    (dict(max_new_tokens=0), ValueError, "max_new_tokens"),
    (dict(max_new_tokens=62), ValueError, "maximum length 64"),
    (dict(temperature=-0.5), ValueError, "temperature"),
    (dict(top_p=0.0), ValueError, "top_p"),
    (dict(top_p=1.5), ValueError, "top_p"),
    (dict(top_k=-1), ValueError, "top_k"),
    (dict(tree=TreeConfig(60, 6, 200)), ValueError, "above the vocabulary"),
    (dict(eos_token_id=500), ValueError, "eos_token_id"),
])
def test_bad_generation_input(model, kwargs, error, match):
    kwargs = {"input_ids": PROMPT, "max_new_tokens": 8, **kwargs}
    with pytest.raises(error, match=match):
        model.generate(**kwargs)


@pytest.mark.parametrize("args,match", [
    ((60, 0, 10), "depth must be >= 1"),
    ((1, 6, 10), "total_tokens must be >= 2"),
    ((60, 6, 0), "top_k must be >= 1"),
    ((12, 2, 3), r"at most 1 \+ top_k"),  # 1 + 3 + 9 = 13 is the most depth 2, top_k 3 can produce
    ((14, 2, 3), r"at most 1 \+ top_k"),
])
def test_bad_tree_settings(args, match):
    if args == (12, 2, 3):
        TreeConfig(*args)  # within the limit: fine
        args = (14, 2, 3)
    with pytest.raises(ValueError, match=match):
        TreeConfig(*args)


def test_errors_come_before_any_work(model):
    calls = []
    handle = model.target.register_forward_hook(lambda *a: calls.append(1))
    try:
        with pytest.raises(ValueError):
            list(model.stream(PROMPT, max_new_tokens=0))
    finally:
        handle.remove()
    assert calls == []
