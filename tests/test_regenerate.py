"""train.regenerate: the target answers ShareGPT's user turns itself. Batched, left-padded greedy answers equal
the target's own one-by-one greedy answers; later turns see the target's earlier answers; a run resumes,
drops a cut last line, refuses other settings, and its output goes through train.prepare_data."""
import json

import pytest
import torch
from conftest import tiny_target
from test_evaluation import tiny_tokenizer

from train import prepare_data, regenerate
from train.data import encode_prompt, read_dialogues, read_prepared

DIALOGUES = [
    {"id": "a", "conversations": [{"from": "human", "value": "w1 w2 w3"}, {"from": "gpt", "value": "w9"},
                                  {"from": "human", "value": "w4"}, {"from": "gpt", "value": "w8"}]},
    {"id": "b", "conversations": [{"from": "system", "value": "w30"}, {"from": "human", "value": "w5 w6"},
                                  {"from": "gpt", "value": "w7"}]},
    {"id": "c", "conversations": [{"from": "human", "value": " ".join(f"w{i}" for i in range(10, 29))},
                                  {"from": "gpt", "value": "w7"}]},
]


def save_target(tmp_path, seed):
    target = tiny_target("llama", seed=seed)
    target.generation_config.eos_token_id = [2, 6]
    target.save_pretrained(tmp_path / "target")
    tokenizer = tiny_tokenizer()
    tokenizer.save_pretrained(tmp_path / "target")
    data = tmp_path / "sharegpt.json"
    data.write_text(json.dumps(DIALOGUES))
    return tmp_path, target, tokenizer, data


@pytest.fixture
def setup(tmp_path):
    return save_target(tmp_path, seed=6)  # a seed whose answers to all three first turns are not empty


def own_answer(target, tokenizer, messages, max_new_tokens):
    """The target's greedy answer, unbatched, cut at its end of turn."""
    ids = torch.tensor([encode_prompt(messages, "chat", tokenizer)])
    out = target.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens, do_sample=False,
                          eos_token_id=[2, 6], pad_token_id=3)[0, ids.shape[1]:].tolist()
    cut = next((i for i, t in enumerate(out) if t in (2, 6)), len(out))
    return tokenizer.decode(out[:cut], skip_special_tokens=True).strip()


def args(tmp_path, data, *extra):
    return ["--data", str(data), "--base", str(tmp_path / "target"), "--out", str(tmp_path / "regen.jsonl"),
            "--dtype", "fp32", "--max-new-tokens", "6", "--turns", "2", "--batch-size", "2", *extra]


def test_answers_are_the_targets_own_and_later_turns_see_them(setup):
    tmp_path, target, tokenizer, data = setup
    regenerate.main(args(tmp_path, data))
    records = {r["id"]: r["conversations"] for r in map(json.loads, (tmp_path / "regen.jsonl").read_text().splitlines())}
    assert set(records) == {"a", "b", "c"}
    a = records["a"]
    assert [t["from"] for t in a] == ["human", "gpt", "human", "gpt"]
    first = own_answer(target, tokenizer, [{"role": "user", "content": "w1 w2 w3"}], 6)
    assert a[1]["value"] == first and first != "w9"
    history = [{"role": "user", "content": "w1 w2 w3"}, {"role": "assistant", "content": first},
               {"role": "user", "content": "w4"}]
    assert a[3]["value"] == own_answer(target, tokenizer, history, 6)  # conditioned on its own first answer
    b = records["b"]
    assert [t["from"] for t in b] == ["system", "human", "gpt"]
    assert b[2]["value"] == own_answer(target, tokenizer, [{"role": "system", "content": "w30"},
                                                           {"role": "user", "content": "w5 w6"}], 6)
    settings = json.loads((tmp_path / "regen.jsonl.config.json").read_text())
    assert settings["turns"] == 2 and settings["temperature"] == 0.0

    # the output is ShareGPT-style: prepare_data turns it into training samples with the answers masked
    prepare_data.main(["--data", str(tmp_path / "regen.jsonl"), "--tokenizer", str(tmp_path / "target"),
                       "--out", str(tmp_path / "prepared.jsonl")])
    header, samples = read_prepared(tmp_path / "prepared.jsonl")
    assert len(samples) == 3 and all(sum(s["loss_mask"]) > 0 for s in samples)
    # the committed, gzipped copy reads the same
    import gzip

    with gzip.open(tmp_path / "regen.jsonl.gz", "wt", encoding="utf-8") as f:
        f.write((tmp_path / "regen.jsonl").read_text())
    assert read_dialogues(tmp_path / "regen.jsonl.gz")[0] == read_dialogues(tmp_path / "regen.jsonl")[0]
    # every answered turn records its length, why it stopped and whether it loops
    assert all(len(a["answers"]) == sum(t["from"] == "gpt" for t in a["conversations"])
               and {"tokens", "stopped", "loops"} <= set(a["answers"][0])
               for a in map(json.loads, (tmp_path / "regen.jsonl").read_text().splitlines()))


def test_resume_drops_a_cut_line_and_refuses_other_settings(setup, capsys):
    tmp_path, _, _, data = setup
    out = tmp_path / "regen.jsonl"
    regenerate.main(args(tmp_path, data, "--max-records", "2"))
    lines = out.read_text().splitlines()
    assert len(lines) == 2
    out.write_text(lines[0] + "\n" + lines[1][:10])  # a run killed while writing its second line
    regenerate.main(args(tmp_path, data))  # all three now: the cut one is answered again
    again = out.read_text().splitlines()
    assert again[0] == lines[0] and len(again) == 3 and len({json.loads(x)["id"] for x in again}) == 3
    assert lines[1] in again
    capsys.readouterr()
    regenerate.main(args(tmp_path, data))
    assert "0 to answer" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        regenerate.main(args(tmp_path, data, "--temperature", "1"))
    assert "written with other settings (temperature: 0.0 there, 1.0 now)" in capsys.readouterr().err


def test_long_prompts_end_a_dialogue_and_bad_input_is_refused(setup, capsys):
    tmp_path, _, _, data = setup
    regenerate.main(args(tmp_path, data, "--max-prompt-tokens", "16"))
    records = {r["id"]: r["conversations"] for r in map(json.loads, (tmp_path / "regen.jsonl").read_text().splitlines())}
    assert "c" not in records  # its first prompt is over 16 tokens: nothing to answer
    assert len(records["a"]) == 2  # its second prompt (with the first answer) is over the limit
    for bad in (["--turns", "0"], ["--batch-size", "0"], ["--temperature", "-1"], ["--max-records", "0"]):
        with pytest.raises(SystemExit):
            regenerate.main(args(tmp_path, data, *bad))
    with pytest.raises(SystemExit):
        regenerate.main(["--data", str(data), "--base", str(tmp_path / "nope"), "--out", str(tmp_path / "x.jsonl")])
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        regenerate.main(["--data", str(tmp_path / "missing.json"), "--base", str(tmp_path / "target"),
                         "--out", str(tmp_path / "y.jsonl")])
    assert "missing.json" in capsys.readouterr().err
    assert read_dialogues(tmp_path / "regen.jsonl")[0]  # what was written reads back as dialogues


def test_an_empty_answer_ends_its_dialogue(tmp_path, capsys):
    _, target, tokenizer, data = save_target(tmp_path, seed=4)
    long_question = [{"role": "user", "content": DIALOGUES[2]["conversations"][0]["value"]}]
    assert own_answer(target, tokenizer, long_question, 6) == ""  # this target ends its turn at once
    regenerate.main(args(tmp_path, data))
    ids = [json.loads(x)["id"] for x in (tmp_path / "regen.jsonl").read_text().splitlines()]
    assert "c" not in ids and "(1 had no answer)" in capsys.readouterr().out


def test_pack_gzips_counts_and_fingerprints(setup, capsys):
    import gzip
    import hashlib

    from train import pack_regen

    tmp_path, _, _, data = setup
    regenerate.main(args(tmp_path, data))
    out = tmp_path / "regen.jsonl"
    with open(out, "a") as f:
        f.write('{"id": "cut')  # a line still being written is left out
    pack_regen.main([str(out), str(tmp_path / "pack")])
    stats = json.loads((tmp_path / "pack" / "regen.stats.json").read_text())
    gz = tmp_path / "pack" / "regen.jsonl.gz"
    plain = gzip.decompress(gz.read_bytes())
    assert stats["sha256_gz"] == hashlib.sha256(gz.read_bytes()).hexdigest()
    assert stats["sha256_jsonl"] == hashlib.sha256(plain).hexdigest()
    records = [json.loads(x) for x in plain.decode().splitlines()]
    assert stats["dialogues"] == len(records) == 3
    assert stats["answers"] == sum(len(r["answers"]) for r in records) == sum(stats["stopped"].values())
    assert stats["answer_tokens"] == sum(a["tokens"] for r in records for a in r["answers"])
    assert stats["settings"]["turns"] == 2
    with pytest.raises(SystemExit):
        pack_regen.main([str(tmp_path / "missing.jsonl"), str(tmp_path / "pack")])
