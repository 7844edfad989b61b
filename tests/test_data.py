"""ShareGPT reading, the assistant-only loss mask per template, and the prepared-data file (no download).

The tokenizers are trained inside the tests on a few sentences: a byte-level BPE with a ChatML template
like SmolLM2's, and a SentencePiece-style (Metaspace) BPE with <s> </s> like LLaMA's for the FastChat
templates, so merges across turn boundaries are real.
"""
from __future__ import annotations

import json

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from train.data import (LLAMA2_SYSTEM, Dialogue, PREPARED_FORMAT, ReadStats, clean_messages, encode_prompt,
                        read_dialogues, read_prepared, render, split_train_eval, tokenize_dialogue,
                        tokenize_dialogues, write_prepared)

CHATML = ("{% for m in messages %}{% if loop.first and m['role'] != 'system' %}"
          "{{ '<|im_start|>system\nYou are a tiny test model.<|im_end|>\n' }}{% endif %}"
          "{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")

DIALOGUE = [
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "The capital of France is Paris.\nIt is large."},
    {"role": "user", "content": "And of Italy?"},
    {"role": "assistant", "content": " Rome, of course!"},
]
CORPUS = [m["content"] for m in DIALOGUE] * 20 + [
    "system user assistant USER ASSISTANT [INST] [/INST] <<SYS>> <</SYS>> You are a tiny test model.",
    "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
    "detailed, and polite answers to the user's questions.", LLAMA2_SYSTEM, "Hi hello x y z 0123456789:!?.,'",
]


@pytest.fixture(scope="module")
def chatml_tokenizer() -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    fast.chat_template = CHATML
    return fast


@pytest.fixture(scope="module")
def llama_tokenizer() -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<unk>", "<s>", "</s>"], show_progress=False))
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


def masked_runs(tokenizer, input_ids: list[int], loss_mask: list[int]) -> list[str]:
    """The decoded text of each contiguous run of masked tokens."""
    runs, run = [], []
    for token, m in zip(input_ids + [None], loss_mask + [0]):
        if m:
            run.append(token)
        elif run:
            runs.append(tokenizer.decode(run))
            run = []
    return runs


def write_json(path, value) -> str:
    path.write_text(json.dumps(value, indent=2))
    return str(path)


def sharegpt(i: int, *turns: tuple[str, str]) -> dict:
    return {"id": f"r{i}", "conversations": [{"from": f, "value": v} for f, v in turns]}


# ------------------------------------------------------------------------------------------------ reading

def test_truncated_json_keeps_complete_records(tmp_path):
    records = [sharegpt(i, ("human", f"question {i}"), ("gpt", f"answer {i}")) for i in range(5)]
    text = json.dumps(records, indent=2)
    cut = text.index('"r3"') + 40  # part-way into the fourth record
    path = tmp_path / "cut.json"
    path.write_text(text[:cut])
    dialogues, stats = read_dialogues(path)
    assert [d.id for d in dialogues] == ["r0", "r1", "r2"]
    assert (stats.n_records, stats.n_invalid, stats.n_skipped) == (3, 1, 1)
    assert stats.tail_chars == cut - text.rindex("{", 0, text.index('"r3"'))
    assert dialogues[1].messages == [{"role": "user", "content": "question 1"},
                                     {"role": "assistant", "content": "answer 1"}]


def test_unusable_records_are_counted(tmp_path):
    records = [
        sharegpt(0, ("human", "q"), ("gpt", "a")),
        "not a record",
        {"id": "no-turns"},
        sharegpt(3, ("gpt", "only an answer")),
        sharegpt(4),
        sharegpt(5, ("human", "q"), ("robot", "a")),
        sharegpt(6, ("human", "q"), ("gpt", "a")),
    ]
    dialogues, stats = read_dialogues(write_json(tmp_path / "d.json", records))
    assert [d.id for d in dialogues] == ["r0", "r6"]
    assert (stats.n_records, stats.n_unusable, stats.n_invalid, stats.n_kept) == (7, 5, 0, 2)


def test_jsonl_with_both_record_formats(tmp_path):
    lines = [json.dumps(sharegpt(0, ("user", "q0"), ("chatgpt", "a0"))),
             json.dumps({"messages": [{"role": "system", "content": "Be brief."},
                                      {"role": "user", "content": "q1"},
                                      {"role": "assistant", "content": "a1"}]}),
             '{"id": "broken", "conversations": [',
             json.dumps(sharegpt(3, ("human", "q3"), ("bard", "a3")))]
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(lines) + "\n")
    dialogues, stats = read_dialogues(path)
    assert [d.id for d in dialogues] == ["r0", "1", "r3"]  # no id: the record's position
    assert dialogues[1].messages[0] == {"role": "system", "content": "Be brief."}
    assert [m["role"] for m in dialogues[2].messages] == ["user", "assistant"]
    assert (stats.n_records, stats.n_invalid, stats.n_skipped) == (3, 1, 1)


def test_cleaning_drops_leading_answers_and_cuts_malformed_turns():
    stats = ReadStats()
    turns = [("gpt", "the end of a split conversation"), ("human", "q1"), ("gpt", "a1"),
             ("human", "q2"), ("gpt", "a2"), ("gpt", "a2, continued"), ("human", "q3"), ("gpt", "a3")]
    assert clean_messages(turns, stats) == [
        {"role": "user", "content": "q1"}, {"role": "assistant", "content": "a1"},
        {"role": "user", "content": "q2"}, {"role": "assistant", "content": "a2"}]
    assert (stats.n_leading_dropped, stats.n_cut) == (1, 1)
    # a trailing question without answer is dropped; an empty answer cuts the dialogue before it
    assert clean_messages([("system", "S"), ("human", "q"), ("gpt", "a"), ("human", "q2")], stats) == [
        {"role": "system", "content": "S"}, {"role": "user", "content": "q"},
        {"role": "assistant", "content": "a"}]
    assert clean_messages([("human", "q"), ("gpt", "  ")], stats) == []


def test_no_usable_record_names_the_file(tmp_path):
    path = write_json(tmp_path / "useless.json", [sharegpt(0, ("gpt", "a"))])
    with pytest.raises(ValueError, match="useless.json: no usable dialogue"):
        read_dialogues(path)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(ValueError, match="empty.jsonl"):
        read_dialogues(empty)


# ----------------------------------------------------------------------------------------------- the mask

def test_chat_template_mask_is_exactly_the_answers(chatml_tokenizer):
    input_ids, loss_mask = tokenize_dialogue(DIALOGUE, chatml_tokenizer, "chat")
    assert len(input_ids) == len(loss_mask)
    assert masked_runs(chatml_tokenizer, input_ids, loss_mask) == [
        DIALOGUE[1]["content"] + "<|im_end|>", DIALOGUE[3]["content"] + "<|im_end|>"]
    text = chatml_tokenizer.decode(input_ids)
    assert text == render(DIALOGUE, "chat", chatml_tokenizer)
    # the prompt of the first answer is exactly what generation would be given
    prompt = encode_prompt(DIALOGUE[:1], "chat", chatml_tokenizer)
    assert input_ids[:len(prompt)] == prompt and loss_mask[len(prompt) - 1] == 0 and loss_mask[len(prompt)] == 1


@pytest.mark.parametrize("template, end_of_turn, system", [
    ("vicuna", "</s>", "A chat between a curious user and an artificial intelligence assistant."),
    ("llama-2", " </s>", "[INST] <<SYS>>\n" + LLAMA2_SYSTEM + "\n<</SYS>>\n\n"),
])
def test_fastchat_template_mask_is_exactly_the_answers(llama_tokenizer, template, end_of_turn, system):
    text = render(DIALOGUE, template, llama_tokenizer)
    assert text.startswith(system)
    input_ids, loss_mask = tokenize_dialogue(DIALOGUE, llama_tokenizer, template)
    assert input_ids[0] == llama_tokenizer.bos_token_id  # FastChat prompts get the tokenizer's BOS
    runs = masked_runs(llama_tokenizer, input_ids, loss_mask)
    assert [r.strip() for r in runs] == [DIALOGUE[1]["content"].strip() + end_of_turn,
                                         DIALOGUE[3]["content"].strip() + end_of_turn]
    assert "ASSISTANT" not in "".join(runs) and "INST" not in "".join(runs) and "<s>" not in "".join(runs)
    prompt = encode_prompt(DIALOGUE[:1], template, llama_tokenizer)
    assert input_ids[:len(prompt)] == prompt and not any(loss_mask[:len(prompt)])


def test_dialogue_system_message_replaces_the_template_default(llama_tokenizer, chatml_tokenizer):
    messages = [{"role": "system", "content": "Answer in French."}] + DIALOGUE[:2]
    assert "Answer in French." in render(messages, "llama-2", llama_tokenizer)
    assert LLAMA2_SYSTEM not in render(messages, "llama-2", llama_tokenizer)
    assert render(messages, "chat", chatml_tokenizer).startswith("<|im_start|>system\nAnswer in French.")
    input_ids, loss_mask = tokenize_dialogue(messages, chatml_tokenizer, "chat")
    assert masked_runs(chatml_tokenizer, input_ids, loss_mask) == [DIALOGUE[1]["content"] + "<|im_end|>"]


def test_truncation_keeps_the_mask_aligned(chatml_tokenizer):
    full_ids, full_mask = tokenize_dialogue(DIALOGUE, chatml_tokenizer, "chat")
    first_answer = full_mask.index(1)
    for max_length in (len(full_ids) - 3, first_answer + 2):
        input_ids, loss_mask = tokenize_dialogue(DIALOGUE, chatml_tokenizer, "chat", max_length=max_length)
        assert input_ids == full_ids[:max_length] and loss_mask == full_mask[:max_length]
    samples, n_empty = tokenize_dialogues([Dialogue("x", DIALOGUE)], chatml_tokenizer, "chat", max_length=first_answer)
    assert (samples, n_empty) == ([], 1)  # cut before any answer: nothing to learn


def test_unknown_template_and_missing_chat_template(chatml_tokenizer, llama_tokenizer):
    with pytest.raises(ValueError, match="unknown template"):
        render(DIALOGUE, "alpaca", chatml_tokenizer)
    with pytest.raises(ValueError, match="no chat template"):
        render(DIALOGUE, "chat", llama_tokenizer)


# --------------------------------------------------------------------------------------- prepared file

def test_prepared_round_trip_and_errors(tmp_path, chatml_tokenizer):
    samples = [{"id": f"s{i}", "input_ids": [1, 2, 3 + i], "loss_mask": [0, 1, 1]} for i in range(4)]
    header = {"tokenizer": "tiny", "template": "chat", "max_length": 16, "n_skipped": 2, "source": "x.json"}
    path = tmp_path / "sub" / "prepared.jsonl"
    write_prepared(path, header, samples)
    got_header, got = read_prepared(path)
    assert got == samples
    assert got_header == {"format": PREPARED_FORMAT, **header, "n_records": 4}
    assert [p.name for p in path.parent.iterdir()] == ["prepared.jsonl"]  # no temporary left behind

    lines = path.read_text().splitlines()
    (tmp_path / "short.jsonl").write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(ValueError, match="promises 4 records"):
        read_prepared(tmp_path / "short.jsonl")
    (tmp_path / "raw.json").write_text(json.dumps([sharegpt(0, ("human", "q"), ("gpt", "a"))]))
    with pytest.raises(ValueError, match="not a hass-prepared-v1 file"):
        read_prepared(tmp_path / "raw.json")
    (tmp_path / "bad.jsonl").write_text(lines[0] + "\n" + json.dumps({"id": "a", "input_ids": [1],
                                                                      "loss_mask": []}) + "\n")
    with pytest.raises(ValueError, match="bad.jsonl:2"):
        read_prepared(tmp_path / "bad.jsonl")


def test_split_train_eval_is_seeded_and_disjoint():
    samples = [{"id": str(i)} for i in range(10)]
    train, held_out = split_train_eval(samples, 0.2, seed=0)
    assert len(train) == 8 and len(held_out) == 2
    assert sorted(s["id"] for s in train + held_out) == sorted(s["id"] for s in samples)
    assert split_train_eval(samples, 0.2, seed=0) == (train, held_out)
    assert split_train_eval(samples[:3], 0.01, seed=0)[1] != []  # a fraction > 0 holds out at least one
    with pytest.raises(ValueError, match="eval_fraction"):
        split_train_eval(samples, 1.0, seed=0)


@pytest.mark.real_model
def test_real_smollm2_tokenizer_masks_exactly_the_answers():
    from transformers import AutoTokenizer

    from hass.zoo import ensure_smollm2

    tokenizer = AutoTokenizer.from_pretrained(ensure_smollm2())
    messages = DIALOGUE + [{"role": "user", "content": "Code?"},
                           {"role": "assistant", "content": "```python\nprint('hi')\n```\n\n"}]
    input_ids, loss_mask = tokenize_dialogue(messages, tokenizer, "chat")
    assert masked_runs(tokenizer, input_ids, loss_mask) == [
        m["content"] + "<|im_end|>" for m in messages if m["role"] == "assistant"]
    prompt = encode_prompt(messages[:1], "chat", tokenizer)
    assert input_ids[:len(prompt)] == prompt


def test_held_out_questions_round_trip(tmp_path):
    """Held-out dialogues become MT-bench style questions that evaluation.run reads: their user turns, in the
    held-out file's order, greetings skipped, a wrong source refused with the missing id named."""
    from evaluation.benchmarks import load_questions
    from train.held_out_questions import held_out_questions, main

    dialogues = [
        {"id": "a", "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "Hello!"}]},
        {"id": "b", "conversations": [{"from": "human", "value": "Explain speculative decoding in one line."},
                                      {"from": "gpt", "value": "Draft, then verify."},
                                      {"from": "human", "value": "And in two lines?"},
                                      {"from": "gpt", "value": "Draft.\nVerify."},
                                      {"from": "human", "value": "A third turn is dropped."},
                                      {"from": "gpt", "value": "Yes."}]},
        {"id": "c", "conversations": [{"from": "human", "value": "Write a haiku about a CPU core."},
                                      {"from": "gpt", "value": "Two cores, hot."}]},
        {"id": "d", "conversations": [{"from": "human", "value": "Never held out, so never asked."},
                                      {"from": "gpt", "value": "Right."}]},
    ]
    source = tmp_path / "dialogues.jsonl"
    source.write_text("".join(json.dumps(d) + "\n" for d in dialogues))
    held = tmp_path / "held_out.jsonl"
    sample = {"input_ids": [1, 2], "loss_mask": [0, 1]}
    write_prepared(held, {"source": str(source)}, [dict(sample, id=i) for i in ("c", "a", "b")])

    records = held_out_questions(held)
    assert [r["question_id"] for r in records] == ["c", "b"]  # file order; "a" opens with a greeting
    assert records[1]["turns"] == ["Explain speculative decoding in one line.", "And in two lines?"]
    assert [r["question_id"] for r in held_out_questions(held, limit=1)] == ["c"]

    out = tmp_path / "questions.jsonl"
    main(["--prepared", str(held), "--out", str(out)])
    questions, path = load_questions("mt_bench", False, str(out))
    assert path == out and [q.question_id for q in questions] == ["c", "b"]
    assert questions[1].turns == ("Explain speculative decoding in one line.", "And in two lines?")
    assert all(q.category == "held_out" for q in questions)

    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps(dialogues[3]) + "\n")
    with pytest.raises(ValueError, match="3 held-out ids.*first: 'c'"):
        held_out_questions(held, other)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        held_out_questions(held, tmp_path / "nowhere.jsonl")
