"""train.continuous: continuous batching answers exactly what the model's own one-by-one greedy decoding does,
whatever the slot count, refills, chunked prefills and cache reuse of a later turn."""
import pytest
import torch
from conftest import tiny_target

from train.continuous import ContinuousBatcher
from train.regenerate import loops

EOS = 5


def own_greedy(model, prompt, max_new_tokens):
    """Greedy tokens from transformers' generate, one prompt at a time, cut before the eos; and why it stopped."""
    ids = torch.tensor([prompt])
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens, do_sample=False,
                         eos_token_id=EOS, pad_token_id=0)[0, len(prompt):].tolist()
    if EOS in out:
        return out[:out.index(EOS)], "eos"
    return out, "length"


class Turns:
    """A job of several prompts; each later prompt is the earlier prompt + its answer + more tokens."""

    def __init__(self, prompts, answers):
        self.prompts, self.answers = list(prompts), answers
        self.context = None

    def first_prompt(self):
        self.context = self.prompts.pop(0)
        return self.context

    def answered(self, answer, stopped):
        self.answers.append((self.context, answer, stopped))
        if not self.prompts:
            return None
        self.context = self.context + answer + [EOS] + self.prompts.pop(0)
        return self.context


def prompts(n, seed):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(6, 128, (int(torch.randint(1, 30, (1,), generator=g)),), generator=g).tolist()
            for _ in range(n)]


@pytest.mark.parametrize("family", ["llama", "qwen2"])
@pytest.mark.parametrize("slots,chunk", [(1, 512), (3, 512), (4, 5)])
def test_answers_equal_one_by_one_greedy(family, slots, chunk):
    model = tiny_target(family, seed=3)
    asked = prompts(9, seed=slots)
    answers = []
    batcher = ContinuousBatcher(model, slots=slots, capacity=120, max_new_tokens=12, eos=[EOS], prefill_chunk=chunk)
    stats = batcher.run([Turns([p], answers) for p in asked])
    assert len(answers) == len(asked)
    for prompt, answer, stopped in answers:
        assert (answer, stopped) == own_greedy(model, prompt, 12)
    assert stats.answer_tokens == sum(len(a) for _, a, _ in answers)
    assert set(stats.stopped) == {"eos", "length", "capacity"} and sum(stats.stopped.values()) == len(asked)


def test_later_turns_reuse_the_slot_cache_and_still_equal_greedy():
    model = tiny_target("llama", seed=3)
    answers = []
    jobs = [Turns([p, [7, 8, 9], [10, 11]], answers) for p in prompts(5, seed=7)]
    stats = ContinuousBatcher(model, slots=2, capacity=200, max_new_tokens=8, eos=[EOS]).run(jobs)
    assert len(answers) == 15
    for prompt, answer, stopped in answers:
        assert (answer, stopped) == own_greedy(model, prompt, 8)
    # turns 2 and 3 prefilled only what follows the cached context (prompt + answer, but not the eos)
    assert stats.reused_tokens >= sum(len(p) for p, _, _ in answers[5:]) - 10 * 4 - 10


def test_an_answer_stops_at_the_slot_capacity():
    model = tiny_target("llama", seed=3)
    answers = []
    asked = [list(range(10, 30)), list(range(40, 45))]
    ContinuousBatcher(model, slots=2, capacity=26, max_new_tokens=50, eos=[]).run(
        [Turns([p], answers) for p in asked])
    got = {tuple(p): (a, s) for p, a, s in answers}
    for p in asked:
        expected, _ = own_greedy(model, p, 50)
        assert got[tuple(p)] == (expected[:26 - len(p)], "capacity")  # prompt + answer fill the 26


def test_bad_settings_and_prompts_are_refused():
    model = tiny_target("llama")
    with pytest.raises(ValueError, match="slots"):
        ContinuousBatcher(model, slots=0, capacity=10, max_new_tokens=1, eos=[EOS])
    with pytest.raises(ValueError, match="temperature"):
        ContinuousBatcher(model, slots=1, capacity=10, max_new_tokens=1, eos=[EOS], temperature=-1)
    with pytest.raises(ValueError, match="does not fit"):
        ContinuousBatcher(model, slots=1, capacity=10, max_new_tokens=1, eos=[EOS]).run([Turns([list(range(6, 20))], [])])
    with pytest.raises(ValueError, match="empty prompt"):
        ContinuousBatcher(model, slots=1, capacity=10, max_new_tokens=1, eos=[EOS]).run([Turns([[]], [])])


def test_sampling_is_reproducible_with_a_generator():
    model = tiny_target("llama", seed=3)

    def sample(seed):
        answers = []
        ContinuousBatcher(model, slots=2, capacity=80, max_new_tokens=10, eos=[EOS], temperature=1.0,
                          generator=torch.Generator().manual_seed(seed)).run([Turns([p], answers) for p in prompts(4, 1)])
        return answers

    assert sample(0) == sample(0) and sample(0) != sample(1)


def test_loop_detection():
    assert loops([1, 2, 3] * 40)
    assert loops([9] * 20 + [4, 7] * 50)
    assert not loops(list(range(200)))
    assert not loops([1, 2] * 20)  # too short to tell
