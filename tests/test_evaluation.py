"""evaluation/: quick runs end to end on a tiny saved target + draft, the report's arithmetic on hand-made
answer files, resuming, and the bad-input errors (all raised before any model loads)."""
import gzip
import json
import math
import os
import shutil
from pathlib import Path
from statistics import mean

import pytest
import torch
from conftest import perfect_pair
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

import hass
from evaluation import benchmarks, headline, matrix, merge, report, run
from hass.draft_vocab import save_token_counts

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"  # used where present, never required


def _written_set(name: str) -> list[dict]:
    """Stand-in records of one question file, in its real format and size."""
    if name == "mt_bench/question.jsonl":
        return [{"question_id": 81 + i, "category": "writing",  # MT-bench's first questions are long, too
                 "turns": [" ".join(f"w{10 + (i + j) % 100}" for j in range(40)), "w13 w14 w15 w16 w17"]}
                for i in range(80)]
    if name == "humaneval/question.jsonl":
        return [{"question_id": i, "category": "code",
                 "turns": [f"Complete the code I provided.\n\ndef f{i}():\n"]} for i in range(80)]
    if name == "humaneval/HumanEval.jsonl.gz":
        return [{"task_id": f"HumanEval/{i}", "prompt": f"def f{i}():\n", "canonical_solution": "    pass\n",
                 "test": "", "entry_point": f"f{i}"} for i in range(164)]
    if name == "gsm8k/question.jsonl":
        return [{"question_id": i, "category": "math", "turns": [f"w{20 + i % 50} w21"]} for i in range(80)]
    assert name == "gsm8k/test.jsonl"
    return [{"question": f"What is {i} + 1?", "answer": f"#### {i + 1}"} for i in range(1319)]


@pytest.fixture(autouse=True, scope="module")
def question_files(tmp_path_factory):
    """$HASS_DATA holding every question set ../shared/data lacks, written here in the real formats, so no
    test depends on ../shared (a clone has none)."""
    root = tmp_path_factory.mktemp("hass_data")
    for name in ("mt_bench/question.jsonl", "humaneval/question.jsonl", "humaneval/HumanEval.jsonl.gz",
                 "gsm8k/question.jsonl", "gsm8k/test.jsonl"):
        if (DATA / name).is_file():
            continue
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        text = "".join(json.dumps(r) + "\n" for r in _written_set(name)).encode()
        path.write_bytes(gzip.compress(text) if name.endswith(".gz") else text)
    old = os.environ.get("HASS_DATA")
    os.environ["HASS_DATA"] = str(root)
    yield root
    if old is None:
        os.environ.pop("HASS_DATA", None)
    else:
        os.environ["HASS_DATA"] = old
SPECIALS = ["<unk>", "<s>", "</s>", "<pad>", "<|user|>", "<|assistant|>", "<|end|>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} <|end|> {% endfor %}"
    "{% if add_generation_prompt %}<|assistant|> {% endif %}"
)


def tiny_tokenizer(vocab_size: int = 128) -> PreTrainedTokenizerFast:
    words = SPECIALS + [f"w{i}" for i in range(vocab_size - len(SPECIALS))]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens(SPECIALS)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>")
    fast.chat_template = CHAT_TEMPLATE
    return fast


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory) -> tuple[str, str]:
    """A tiny llama target (with tokenizer, chat template, end-of-turn eos) and a draft that predicts it well."""
    root = tmp_path_factory.mktemp("models")
    target, draft = perfect_pair("llama")
    target.generation_config.eos_token_id = [2, 6]  # </s> and <|end|>
    target.save_pretrained(root / "target")
    tiny_tokenizer().save_pretrained(root / "target")
    draft.save_pretrained(root / "draft")
    return str(root / "target"), str(root / "draft")


def quick_args(models_dir, out, *extra) -> list[str]:
    base, draft = models_dir
    return ["--base", base, "--draft", draft, "--bench", "mt_bench", "--quick", "--dtype", "fp32",
            "--total-tokens", "16", "--depth", "4", "--top-k", "4", "--out", str(out), *extra]


# ---------------------------------------------------------------- end to end
def test_quick_run_and_report_end_to_end(models_dir, tmp_path, capsys):
    out = tmp_path / "answers.jsonl"
    run.main(quick_args(models_dir, out, "--methods", "hass,vanilla,hf,pld"))
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    header, answers = lines[0], lines[1:]
    assert header["record"] == "header" and header["config"]["max_new_tokens"] == 32
    assert header["config"]["questions"] == 3 and header["config"]["warmup"] == 1
    assert header["versions"]["torch"] and header["machine"]["device"] == "cpu"
    assert header["eos_token_ids"] == [2, 6]
    assert len(answers) == 3 * 4 and {a["method"] for a in answers} == {"hass", "vanilla", "hf", "pld"}
    for a in answers:
        assert len(a["turns"]) == 2  # MT-bench: two turns
        for t in a["turns"]:
            assert 1 <= t["new_tokens"] == len(t["token_ids"]) <= 32
            assert t["target_forwards"] == 1 + len(t["accept_lengths"])
            prefill_tokens = t["new_tokens"] - sum(t["accept_lengths"])  # > 1 only if pld's first guess hit
            assert prefill_tokens == 1 or (a["method"] == "pld" and prefill_tokens > 1)
            assert t["wall_time"] > 0
    by = {(a["method"], a["question_id"]): a for a in answers}
    for q in (81, 82, 83):  # greedy: the draft changes speed, never the answer
        assert [t["token_ids"] for t in by["hass", q]["turns"]] == [t["token_ids"] for t in by["vanilla", q]["turns"]]
        assert all(x == 1 for t in by["vanilla", q]["turns"] for x in t["accept_lengths"])
    assert max(x for q in (81, 82, 83) for t in by["hass", q]["turns"] for x in t["accept_lengths"]) > 1

    capsys.readouterr()
    report.main([str(out), "--out-dir", str(tmp_path / "report")])
    printed = capsys.readouterr().out
    assert "| mt_bench | hass |" in printed and "mt_bench: hass vs vanilla: 0 of 3 answers differ" in printed
    for name in ("summary.md", "summary.csv", "accept_lengths.png", "speedup.png", "report_config.json"):
        assert (tmp_path / "report" / name).stat().st_size > 0
    resolved = json.loads((tmp_path / "report" / "report_config.json").read_text())
    assert resolved["answer_files"][0]["header"]["config"]["bench"] == "mt_bench"


@pytest.mark.parametrize("fast", [True, False])
def test_draft_dtype_auto_is_recorded_as_what_ran(models_dir, tmp_path, monkeypatch, fast):
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: fast)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    cfg = run.parse_args(quick_args(models_dir, tmp_path / "a.jsonl", "--draft-dtype", "auto",
                                    "--methods", "hass,hass[draft_dtype=auto],hass[draft_dtype=fp16]"))
    resolved = "bf16" if fast else "fp32"
    assert cfg.draft_dtype == resolved  # the answer file's header, hence resume, sees bf16 or fp32, never auto
    assert cfg.variant("hass[draft_dtype=auto]").draft_dtype == resolved
    assert cfg.variant("hass[draft_dtype=fp16]").draft_dtype == "fp16"
    assert run.machine("cpu")["bf16_matmul_fast"] is fast
    with pytest.raises(SystemExit):
        run.parse_args(quick_args(models_dir, tmp_path / "b.jsonl", "--draft-dtype", "fp8"))


def test_resume_skips_answered_questions(models_dir, tmp_path):
    out = tmp_path / "answers.jsonl"
    cfg = run.parse_args(quick_args(models_dir, out, "--methods", "vanilla", "--questions", "2"))
    assert run.evaluate(cfg) == 2
    lines = out.read_text().splitlines()
    first = json.loads(lines[1])
    first["turns"][0]["text"] = "SENTINEL"  # a re-answered question would lose this
    out.write_text("\n".join([lines[0], json.dumps(first), *lines[2:]]) + "\n")
    cfg = run.parse_args(quick_args(models_dir, out, "--methods", "vanilla", "--questions", "3"))
    assert run.evaluate(cfg) == 1
    records = [json.loads(x) for x in out.read_text().splitlines()[1:]]
    assert [r["record"] for r in records] == ["answer", "answer", "resume", "answer"]  # the resume is on record
    assert records[2]["machine"] == run.machine("cpu") and "hass_commit" in records[2]["versions"]
    answers = [r for r in records if r["record"] == "answer"]
    assert [r["question_id"] for r in answers] == [81, 82, 83] and answers[0]["turns"][0]["text"] == "SENTINEL"
    f = report.read_answer_file(out)
    assert list(f.answers["vanilla"]) == [81, 82, 83] and len(f.machines) == 2
    label = report.machine_label(run.machine("cpu"))
    assert f"- {out}: {label}; resumed on {label}" in report.report([out], tmp_path / "report").splitlines()
    assert run.evaluate(cfg) == 0
    assert len(report.read_answer_file(out).machines) == 2  # nothing left to answer: nothing appended
    with pytest.raises(ValueError, match="temperature"):
        run.evaluate(run.parse_args(quick_args(models_dir, out, "--methods", "vanilla", "--temperature", "1")))



def test_a_set_answered_in_parts_merges_into_the_whole_run(models_dir, tmp_path, capsys):
    """Sampling (T = 1) seeds by the question's index in the set, so parts answer exactly as one run does."""
    common = ("--methods", "hass,vanilla", "--temperature", "1")
    whole, a, b, joined = (tmp_path / f"{n}.jsonl" for n in ("whole", "a", "b", "joined"))
    assert run.evaluate(run.parse_args(quick_args(models_dir, whole, *common, "--questions", "3"))) == 3
    assert run.evaluate(run.parse_args(quick_args(models_dir, a, *common, "--questions", "1"))) == 1
    assert run.evaluate(run.parse_args(quick_args(models_dir, b, *common, "--first-question", "1"))) == 2
    merge.main([str(a), str(b), "--out", str(joined)])
    assert "2 parts, 6 answers, 3 questions answered by every method" in capsys.readouterr().out
    full, parts = report.read_answer_file(whole), report.read_answer_file(joined)
    assert parts.question_ids() == [81, 82, 83]
    for m in ("hass", "vanilla"):
        for q in (81, 82, 83):
            assert [t["token_ids"] for t in parts.answers[m][q]["turns"]] == \
                   [t["token_ids"] for t in full.answers[m][q]["turns"]]
    assert len(parts.machines) == 2 and parts.resumes[0]["merged_from"] == str(b)
    assert run.evaluate(run.parse_args(quick_args(models_dir, joined, *common, "--questions", "3"))) == 0  # resumable
    with pytest.raises(ValueError, match="answered in both"):
        merge.merge([whole, b], tmp_path / "x.jsonl")
    other = write_answers(tmp_path / "other.jsonl", "mt_bench", {}, temperature=0.0)
    with pytest.raises(ValueError, match="not one configuration"):
        merge.merge([a, other], tmp_path / "x.jsonl")
    with pytest.raises(SystemExit):
        merge.main([str(a), str(a), "--out", str(tmp_path / "x.jsonl")])
    assert not (tmp_path / "x.jsonl").exists()  # refused before writing
    with pytest.raises(SystemExit):  # an empty part is refused before any model loads
        run.parse_args(quick_args(models_dir, tmp_path / "y.jsonl", "--first-question", "3", "--questions", "3"))


# ---------------------------------------------------------------- report arithmetic
def turn(new, wall, accepts, ids=None):
    return {"new_tokens": new, "wall_time": wall, "target_forwards": 1 + len(accepts), "accept_lengths": accepts,
            "token_ids": ids if ids is not None else list(range(new)), "text": ""}


def write_answers(path, bench, answers, **config):
    header = {"record": "header", "format": report.FORMAT,
              "config": {"bench": bench, "base": "t", "dtype": "fp32", "device": "cpu", "temperature": 0.0,
                         "max_new_tokens": 512} | config}
    rows = [header] + [{"record": "answer", "method": m, "question_id": q, "category": "x", "turns": turns}
                       for (m, q), turns in answers.items()]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def hand_made_files(tmp_path) -> list[Path]:
    mt = write_answers(tmp_path / "mt.jsonl", "mt_bench", {
        ("vanilla", 1): [turn(10, 1.0, [1] * 9), turn(6, 1.0, [1] * 5)],  # 16 tokens / 2 s = 8 tok/s
        ("vanilla", 2): [turn(4, 1.0, [1] * 3, ids=[0, 1, 2, 3])],  # 4 tok/s
        ("hass", 1): [turn(10, 0.5, [3, 3, 3]), turn(6, 0.5, [2, 3])],  # 16 tok/s
        ("hass", 2): [turn(4, 0.25, [3], ids=[0, 1, 9, 3])],  # 16 tok/s; differs from vanilla at token 2
        ("hf", 1): [turn(10, 2.0, [1] * 9), turn(6, 2.0, [1] * 5)],  # 4 tok/s
        ("hf", 2): [turn(4, 1.0, [1] * 3, ids=[0, 1, 2, 3])],  # 4 tok/s
    })
    gsm = write_answers(tmp_path / "gsm.jsonl", "gsm8k", {
        ("vanilla", 0): [turn(5, 1.0, [1] * 4)],  # 5 tok/s
        ("hass", 0): [turn(5, 0.25, [4])],  # 20 tok/s
    })
    return [mt, gsm]


def test_report_arithmetic(tmp_path):
    files = [report.read_answer_file(p) for p in hand_made_files(tmp_path)]
    rows = [r for f in files for r in report.file_rows(f)]
    rows += report.mean_rows(rows)
    got = {(r.bench, r.method): r for r in rows}
    hass_mt = got["mt_bench", "hass"]
    # totals, not a mean of per-question rates (those would give mean(16, 16) / mean(8, 4) = 2.67x)
    assert hass_mt.tokens_per_s == pytest.approx(16.0)  # 20 tokens / 1.25 s
    assert got["mt_bench", "vanilla"].tokens_per_s == pytest.approx(20 / 3)  # 20 tokens / 3 s
    assert hass_mt.speedup_vs_vanilla == pytest.approx(2.4) and hass_mt.speedup_vs_hf == pytest.approx(4.0)
    assert hass_mt.speedup_spread == pytest.approx((2.2, 3.0, 3.8))  # per question 2x and 4x
    assert got["mt_bench", "hf"].speedup_vs_vanilla == pytest.approx(0.6)  # 3 s / 5 s
    assert hass_mt.tau_total == pytest.approx(20 / 9)  # 20 tokens / (4 + 3 + 2) forwards
    assert hass_mt.tau_q == pytest.approx((14 / 5 + 3) / 2)  # per question: mean([3,3,3,2,3]), mean([3])
    assert got["mt_bench", "vanilla"].tau_total == pytest.approx(1.0) and got["mt_bench", "vanilla"].tau_q == 1.0
    assert got["gsm8k", "hass"].speedup_vs_vanilla == pytest.approx(4.0)
    assert got["gsm8k", "hass"].tau_total == pytest.approx(2.5) and got["gsm8k", "hass"].tau_q == 4.0
    mean_hass = got["mean", "hass"]
    assert mean_hass.speedup_vs_vanilla == pytest.approx(3.2) and mean_hass.tokens_per_s == pytest.approx(18.0)
    assert mean_hass.tau_total == pytest.approx((20 / 9 + 2.5) / 2) and mean_hass.tau_q == pytest.approx(3.45)
    assert mean_hass.questions == 3 and got["mean", "hf"].speedup_vs_vanilla == pytest.approx(0.6)
    assert report.divergences(files[0], "hass") == (2, [(2, 0, 2)])
    assert report.first_divergence([1, 2], [1, 2, 3]) == 2 and report.first_divergence([1], [1]) is None


def test_depth_acceptance_is_conditional_on_the_depth_before():
    lengths = [1, 2, 3, 3, 5]  # accepted drafts 0, 1, 2, 2, 4
    rates = report.depth_acceptance(lengths)
    assert rates == pytest.approx([4 / 5, 3 / 4, 1 / 3, 1.0])
    running = 1.0
    for d, rate in enumerate(rates, start=1):  # the running product is P(accepted >= d)
        running *= rate
        assert running == pytest.approx(sum(a - 1 >= d for a in lengths) / len(lengths))
    assert sum(math.prod(rates[:d]) for d in range(1, 5)) == pytest.approx(mean(lengths) - 1)
    assert report.depth_acceptance([1, 1]) == [] and report.depth_acceptance([]) == []
    # asked deeper than any acceptance: the first depth reached but never passed is a measured 0, beyond it no data
    deeper = report.depth_acceptance(lengths, 6)
    assert deeper[:5] == pytest.approx(rates + [0.0]) and deeper[5] is None
    assert report.depth_acceptance([1, 1], 2) == [0.0, None]


def test_report_writes_tables_and_plots(tmp_path, capsys):
    report.main([*map(str, hand_made_files(tmp_path)), "--out-dir", str(tmp_path / "out")])
    printed = capsys.readouterr().out
    assert "mt_bench: hass vs vanilla: 1 of 2 answers differ" in printed
    assert "question 2, turn 1, first differing token 2" in printed
    assert "| mean | hass | 3 |" in printed
    csv_lines = (tmp_path / "out" / "summary.csv").read_text().splitlines()
    assert csv_lines[0].startswith("bench,method,questions") and len(csv_lines) == 1 + 5 + 3
    for png in ("speedup.png", "accept_lengths.png", "depth_acceptance.png"):
        assert (tmp_path / "out" / png).read_bytes()[:4] == b"\x89PNG"
    # hass on MT-bench: lengths [3, 3, 3, 2, 3, 3] -> accepted [2, 2, 2, 1, 2, 2]; vanilla has no row
    assert "| mt_bench | hass | 6 | 1.000 | 0.833 |" in printed and "| mt_bench | vanilla | 1" not in printed
    assert "| gsm8k | hass | 1 | 1.000 | 1.000 | 1.000 |" in printed


def test_plot_titles_name_what_was_pooled(tmp_path):
    files = [report.read_answer_file(p) for p in hand_made_files(tmp_path)]
    rows = [row for f in files for row in report.file_rows(f)]
    assert report.plot_scope(rows) == "2 benchmarks pooled"
    assert report.plot_scope(report.file_rows(files[0])) == files[0].bench


def test_matrix_puts_every_setting_in_one_table(tmp_path, capsys):
    ids = [0, 1, 2, 3]
    side = {("vanilla", 1): [turn(4, 1.0, [1] * 3, ids=ids)], ("vanilla", 2): [turn(4, 1.0, [1] * 3, ids=ids)],
            ("hass", 1): [turn(4, 0.5, [2, 2], ids=ids)], ("hass", 2): [turn(4, 0.5, [4], ids=ids)],
            ("hass[draft=x/EAGLE2/]", 1): [turn(4, 0.25, [4], ids=ids)],
            ("hass[draft=x/EAGLE2/]", 2): [turn(4, 1.0, [3], ids=[0, 1, 2, 9])]}  # differs at token 3
    tree = {"draft": "x/HASS", "total_tokens": 8, "depth": 4, "top_k": 2}
    folder = tmp_path / "results"
    (folder / "T0").mkdir(parents=True)
    write_answers(folder / "T0" / "he.jsonl", "humaneval", side, **tree)
    write_answers(folder / "T1.jsonl", "humaneval", {("vanilla", 1): [turn(4, 1.0, [1] * 3)],
                                                     ("hass", 1): [turn(4, 2.0, [2, 2])]}, temperature=1.0, **tree)
    write_answers(folder / "gsm.jsonl", "gsm8k", {("vanilla", 1): [turn(4, 1.0, [1] * 3)],
                                                  ("hass[tree=60/6/10]", 1): [turn(4, 1.0, [4])]}, **tree)
    (folder / "notes.jsonl").write_text('{"not": "an answer file"}\n')
    files = [report.read_answer_file(p) for p in matrix.answer_paths([folder])]
    assert len(files) == 3
    cells = matrix.collect(files)
    hass_t0 = matrix.Setting("HASS", "8 / 4 / 2", "all", 0.0)
    eagle_t0 = matrix.Setting("EAGLE2", "8 / 4 / 2", "all", 0.0)
    he = {r.method: r for r in report.file_rows(files[[f.bench for f in files].index("humaneval")])}
    assert cells[hass_t0, "humaneval"].tau == pytest.approx(he["hass"].tau_total) == pytest.approx(8 / 5)
    assert cells[eagle_t0, "humaneval"].speedup == pytest.approx(he["hass[draft=x/EAGLE2/]"].speedup_vs_vanilla)
    assert (cells[hass_t0, "humaneval"].differ, cells[eagle_t0, "humaneval"].differ) == (0, 1)
    assert cells[matrix.Setting("HASS", "60 / 6 / 10", "all", 0.0), "gsm8k"].tau == pytest.approx(4 / 2)
    lines = matrix.table(cells, questions=2).splitlines()
    assert lines[0].split(" | ")[4:6] == ["humaneval", "gsm8k"]  # benchmarks in the usual order
    rows = {tuple(c.strip() for c in line.split("|")[1:5]): line for line in lines[2:]}
    assert set(rows) == {(d, t, "all", T) for d in ("HASS", "EAGLE2") for t in ("8 / 4 / 2", "60 / 6 / 10")
                         for T in ("0", "1")}  # every draft x tree x temperature seen, run or not
    assert "| 1.600 / 2.00x | not run | 0 of 2 |" in rows["HASS", "8 / 4 / 2", "all", "0"]
    assert "| 2.000 / 1.00x (1 q) | 0 of 1 |" in rows["HASS", "60 / 6 / 10", "all", "0"]
    assert "| 1.333 / 0.50x (1 q) | not run | (sampling) |" in rows["HASS", "8 / 4 / 2", "all", "1"]
    assert rows["EAGLE2", "60 / 6 / 10", "all", "1"].count("not run") == 2
    with open(folder / "gsm.jsonl", "a") as f:  # a resumed run names its machine
        f.write(json.dumps({"record": "resume", "machine": {"cpu": "Other CPU", "threads": 1}}) + "\n")
    matrix.main([str(folder), "--questions", "2", "--out", str(tmp_path / "m.md"), "--plot", str(tmp_path / "m.png")])
    assert (tmp_path / "m.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and not list(tmp_path.glob("*.tmp*"))
    written = (tmp_path / "m.md").read_text()
    assert capsys.readouterr().out.startswith(written[:200])
    assert f"- {folder / 'gsm.jsonl'}: unknown machine, capability not recorded; " \
           f"resumed on Other CPU, capability not recorded, 1 thread" in written.splitlines()


def test_headline_table_of_a_results_folder(tmp_path, capsys):
    """The headline: the drafts on the demo's tree against the baselines, tau / speedup by totals with the
    per-question spread, the paired ratio from compare/, other temperatures and trees left out."""
    ids = [0, 1, 2, 3]
    methods = {
        ("vanilla", 1): [turn(4, 1.0, [1] * 3, ids=ids)], ("vanilla", 2): [turn(4, 1.0, [1] * 3, ids=ids)],
        ("hass", 1): [turn(4, 0.5, [2, 2], ids=ids)], ("hass", 2): [turn(4, 0.25, [4], ids=ids)],  # 2x and 4x
        ("hass[draft=x/EAGLE2]", 1): [turn(4, 1.0, [4], ids=ids)], ("hass[draft=x/EAGLE2]", 2): [turn(4, 1.0, [4])],
        ("hass[tree=60/6/10]", 1): [turn(4, 2.0, [4])], ("hass[tree=60/6/10]", 2): [turn(4, 2.0, [4])],
        ("hf", 1): [turn(4, 2.0, [1] * 3)], ("hf", 2): [turn(4, 2.0, [1] * 3)],
        ("pld", 1): [turn(4, 1.0, [2, 2])], ("pld", 2): [turn(4, 1.0, [2, 2])],
    }
    tree = {"draft": "x/HASS", "total_tokens": 8, "depth": 4, "top_k": 2}
    folder = tmp_path / "final"
    (folder / "T0").mkdir(parents=True)
    (folder / "T1").mkdir()
    (folder / "compare").mkdir()
    write_answers(folder / "T0" / "humaneval.jsonl", "humaneval", methods, **tree)
    write_answers(folder / "T1" / "humaneval.jsonl", "humaneval", {("vanilla", 1): [turn(4, 1.0, [1] * 3)],
                                                                   ("hass", 1): [turn(4, 9.0, [4])]},
                  temperature=1.0, **tree)
    (folder / "compare" / "T0_humaneval_t8_4_2.json").write_text(json.dumps(
        {"a": "HASS=a.jsonl:hass", "b": "EAGLE2=a.jsonl:hass[draft=x/EAGLE2]", "ratio": 0.8,
         "ratio_ci95": [0.7, 0.9]}))
    with pytest.raises(SystemExit):  # two trees and no demo_tree.txt: which one?
        headline.main([str(folder)])
    assert "pick one with --tree" in capsys.readouterr().err
    (folder / "demo_tree.txt").write_text("8/4/2\n")
    out, png = tmp_path / "h.md", tmp_path / "h.png"
    headline.main([str(folder), "--label", "HASS=HASS draft", "--questions", "2", "--out", str(out),
                   "--plot", str(png)])
    lines = out.read_text().splitlines()
    assert lines[0].startswith("| | humaneval: tau / speedup")
    body = lines[2:8]
    assert body == ["| HASS draft | 1.60 / **2.67x** (2.20 - 3.80) |",  # 8 tokens / 5 forwards; 8 / 0.75 s vs 8 / 2 s
                    "| EAGLE2 | 2.00 / **1.00x** (1.00 - 1.00) |",
                    "| vanilla decoding | 1.00 / **1.00x** |",
                    "| transformers generate | 1.00 / **0.50x** (0.50 - 0.50) |",
                    "| prompt lookup | 1.33 / **1.00x** (1.00 - 1.00) |",
                    "| paired tau ratio HASS / EAGLE2 (95% interval) | 0.800 (0.700 - 0.900) |"]
    assert "drafts on the tree 8/4/2" in lines[9] and png.read_bytes()[:4] == b"\x89PNG"
    capsys.readouterr()
    headline.main([str(folder), "--tree", "60/6/10"])
    printed = capsys.readouterr().out
    assert "| HASS | 2.00 / **0.50x** (0.50 - 0.50) |" in printed  # no label: the draft folder's name
    assert "EAGLE2 |" not in printed and "paired" not in printed  # no EAGLE-2 answers, no compare file on this tree
    for bad in (["--tree", "5/4/1"], ["--temperature", "0.5"], ["--label", "HASS"]):
        with pytest.raises(SystemExit):
            headline.main([str(folder), *bad])
    err = capsys.readouterr().err
    assert "no draft ran with the tree 5/4/1" in err and "at temperature 0.5" in err and "DRAFT_FOLDER_NAME=LABEL" in err


def test_matrix_refuses_one_setting_twice_and_empty_input(tmp_path):
    a = write_answers(tmp_path / "a.jsonl", "gsm8k", {("vanilla", 1): [turn(4, 1.0, [1] * 3)],
                                                      ("hass", 1): [turn(4, 1.0, [4])]}, draft="d", total_tokens=8,
                      depth=4, top_k=2)
    shutil.copy(a, tmp_path / "b.jsonl")
    files = [report.read_answer_file(p) for p in matrix.answer_paths([tmp_path])]
    with pytest.raises(ValueError, match="in both"):
        matrix.collect(files)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no hass-answers/1 answer files"):
        matrix.answer_paths([tmp_path / "empty"])
    with pytest.raises(SystemExit):
        matrix.main([str(tmp_path / "missing.jsonl")])


# ---------------------------------------------------------------- bad input
def test_report_refuses_mixed_configurations(tmp_path, capsys):
    a = write_answers(tmp_path / "a.jsonl", "mt_bench", {("vanilla", 1): [turn(3, 1.0, [1, 1])]})
    b = write_answers(tmp_path / "b.jsonl", "gsm8k", {("vanilla", 1): [turn(3, 1.0, [1, 1])]}, temperature=1.0)
    with pytest.raises(SystemExit):
        report.main([str(a), str(b), "--out-dir", str(tmp_path / "out")])
    assert "temperature differs" in capsys.readouterr().err
    c = write_answers(tmp_path / "c.jsonl", "mt_bench", {("vanilla", 1): [turn(3, 1.0, [1, 1])]})
    with pytest.raises(ValueError, match="mt_bench/vanilla appears in both"):
        report.report([a, c], tmp_path / "out")
    for key, value in (("max_new_tokens", 32), ("dtype", "bf16"), ("base", "other")):
        d = write_answers(tmp_path / "d.jsonl", "gsm8k", {("vanilla", 1): [turn(3, 1.0, [1, 1])]}, **{key: value})
        with pytest.raises(ValueError, match=f"{key} differs"):
            report.report([a, d], tmp_path / "out")


@pytest.mark.parametrize("extra, message", [
    (["--bench", "mmlu"], "unknown benchmark 'mmlu'"),
    (["--methods", "hass,medusa"], "unknown method"),
    (["--question-file", "/no/such/question.jsonl"], "question file '/no/such/question.jsonl' does not exist"),
    (["--dtype", "int4"], "unknown dtype"),
    (["--total-tokens", "99", "--depth", "2", "--top-k", "4"], "TreeConfig.total_tokens=99"),
    (["--max-new-tokens", "250"], "is over the target's maximum length 256"),
    (["--draft-vocab", "64"], "--draft-vocab needs token_counts.safetensors in the draft folder"),
    (["--draft-vocab", "2"], "draft vocabulary size 2 is below the tree's top_k 4"),
])
def test_bad_input_fails_before_loading(models_dir, tmp_path, monkeypatch, capsys, extra, message):
    def no_loading(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(hass.HassModel, "from_pretrained", no_loading)
    with pytest.raises(SystemExit):
        run.main(quick_args(models_dir, tmp_path / "a.jsonl", *extra))
    assert message in capsys.readouterr().err


def test_quick_run_with_a_draft_vocabulary(models_dir, tmp_path):
    base, draft = models_dir
    shutil.copytree(draft, tmp_path / "draft")
    counts = torch.zeros(128, dtype=torch.long)
    counts[7:71] = 1  # 64 ids
    save_token_counts(tmp_path / "draft", counts, source="test")
    out = tmp_path / "answers.jsonl"
    run.main(quick_args((base, str(tmp_path / "draft")), out, "--methods", "hass,vanilla", "--draft-vocab", "64"))
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert lines[0]["config"]["draft_vocab_size"] == 64
    by = {(a["method"], a["question_id"]): [t["token_ids"] for t in a["turns"]] for a in lines[1:]}
    assert all(by["hass", q] == by["vanilla", q] for q in (81, 82, 83))


def test_split_methods_keeps_variant_settings_together():
    assert run.split_methods("vanilla, hass[draft=a/b,vocab=16],hass,") == ("vanilla", "hass[draft=a/b,vocab=16]", "hass")


def test_variants_run_side_by_side_in_one_process(models_dir, tmp_path, capsys):
    base, draft = models_dir
    shutil.copytree(draft, tmp_path / "draft")
    save_token_counts(tmp_path / "draft", torch.arange(128), source="test")
    methods = f"vanilla,hass,hass[tree=7/6/1],hass[draft={tmp_path / 'draft'},vocab=64,draft_dtype=bf16]"
    out = tmp_path / "answers.jsonl"
    run.main(quick_args(models_dir, out, "--methods", methods))
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    names = run.split_methods(methods)
    assert tuple(lines[0]["config"]["methods"]) == names and len(lines) == 1 + 3 * 4
    by = {(a["method"], a["question_id"]): a["turns"] for a in lines[1:]}
    for q in (81, 82, 83):  # greedy: every variant gives vanilla's answer
        for m in names[1:]:
            assert [t["token_ids"] for t in by[m, q]] == [t["token_ids"] for t in by["vanilla", q]]
    chain = [x for q in (81, 82, 83) for t in by["hass[tree=7/6/1]", q] for x in t["accept_lengths"]]
    assert max(chain) <= 7 and max(chain) > 5  # the perfect draft fills the depth-6 chain, not the 4-deep tree
    default = [x for q in (81, 82, 83) for t in by["hass", q] for x in t["accept_lengths"]]
    assert max(default) <= 5
    capsys.readouterr()
    report.main([str(out), "--out-dir", str(tmp_path / "report")])
    printed = capsys.readouterr().out
    assert "| mt_bench | hass[tree=7/6/1] |" in printed and "hass[tree=7/6/1] vs vanilla: 0 of 3 answers differ" in printed


@pytest.mark.parametrize("method, message", [
    ("hass[depth=3]", "is not one of draft=..., tree=..., vocab=..., draft_dtype=..."),
    ("hass[tree=8-4-2]", "tree is TOTAL/DEPTH/TOP_K"),
    ("hass[tree=99/2/4]", "TreeConfig.total_tokens=99"),
    ("hass[vocab=x]", "vocab is a positive number of tokens or 'all'"),
    ("hass[vocab=2]", "draft vocabulary size 2 is below its tree's top_k 4"),
    ("hass[vocab=64]", "a draft vocabulary needs token_counts.safetensors"),
    ("hass[draft=/no/such/draft]", "draft folder '/no/such/draft' does not exist"),
    ("hass[draft_dtype=int8]", "unknown draft dtype 'int8'"),
    ("hass[vocab=8,vocab=9]", "sets vocab twice"),
])
def test_bad_variant_fails_before_loading(models_dir, tmp_path, monkeypatch, capsys, method, message):
    monkeypatch.setattr(hass.HassModel, "from_pretrained", lambda *a, **k: pytest.fail("a model was loaded"))
    with pytest.raises(SystemExit):
        run.main(quick_args(models_dir, tmp_path / "a.jsonl", "--methods", f"vanilla,{method}"))
    assert message in capsys.readouterr().err


def test_hass_needs_a_draft_and_a_target(tmp_path, models_dir):
    with pytest.raises(FileNotFoundError, match="method hass needs --draft"):
        run.EvalConfig(base=models_dir[0], draft=None, bench="gsm8k", methods=("hass",), out="x")
    with pytest.raises(FileNotFoundError, match="target model folder"):
        run.EvalConfig(base=str(tmp_path), draft=None, bench="gsm8k", methods=("vanilla",), out="x")


# ---------------------------------------------------------------- questions and prompts
@pytest.mark.parametrize("bench, full, count, first_id", [
    ("mt_bench", False, 80, 81), ("humaneval", False, 80, 0), ("gsm8k", False, 80, 0),
    ("humaneval", True, 164, "HumanEval/0"), ("gsm8k", True, 1319, 0),
])
def test_question_sets(bench, full, count, first_id):
    questions, path = benchmarks.load_questions(bench, full)
    assert len(questions) == count and questions[0].question_id == first_id and path.is_file()
    assert all(len(q.turns) == (2 if bench == "mt_bench" else 1) for q in questions)
    if bench == "humaneval":
        assert all(q.turns[0].startswith("Complete the code I provided.") for q in questions)


def test_missing_question_set_names_how_to_get_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="EAGLE's 80-question GSM8K set.*--question-file"):
        benchmarks.locate("gsm8k", False, dirs=[tmp_path], online=False)


def _question_folder(root, *sets):
    """A data folder holding the named question files (tiny, in the real layouts)."""
    records = {"mt_bench/question.jsonl": {"question_id": 81, "category": "writing", "turns": ["a", "b"]},
               "humaneval/HumanEval.jsonl.gz": {"task_id": "HumanEval/0", "prompt": "def f():\n"},
               "gsm8k/question.jsonl": {"question_id": 0, "category": "math", "turns": ["1 + 1?"]}}
    for name in sets:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        line = (json.dumps(records[name]) + "\n").encode()
        path.write_bytes(gzip.compress(line) if name.endswith(".gz") else line)
    return root


def test_plan_checks_every_set_first_and_falls_back_to_a_full_set(tmp_path):
    folder = _question_folder(tmp_path, "mt_bench/question.jsonl", "humaneval/HumanEval.jsonl.gz")
    kw = dict(dirs=[folder], online=False)
    chosen, lines = benchmarks.plan(["mt_bench", "humaneval", "gsm8k"], **kw)
    assert chosen == ["mt_bench"]  # the caller stops: two sets are missing
    assert "EAGLE's 80-question HumanEval set" in lines[1] and "EAGLE's 80-question GSM8K set" in lines[2]
    chosen, lines = benchmarks.plan(["mt_bench", "humaneval", "gsm8k"], fallback=True, **kw)
    assert chosen == ["mt_bench", "humaneval:full"]
    assert "full set (164 questions" in lines[1] and lines[2].startswith("gsm8k: skipped, no question file")
    assert benchmarks.plan(["humaneval:full"], **kw)[0] == ["humaneval:full"]
    assert benchmarks.plan(["humaneval"], full=True, **kw)[0] == ["humaneval:full"]
    for bad, message in [("mt_bench:half", "write mt_bench or mt_bench:full"), ("mmlu", "unknown benchmark")]:
        with pytest.raises(ValueError, match=message):
            benchmarks.plan([bad], **kw)


def test_benchmarks_cli_prints_the_runnable_sets_and_fails_on_a_missing_one(tmp_path, monkeypatch, capsys):
    folder = _question_folder(tmp_path, "mt_bench/question.jsonl", "humaneval/HumanEval.jsonl.gz")
    monkeypatch.setattr(benchmarks, "data_dirs", lambda: [folder])
    monkeypatch.setattr(benchmarks, "_from_pip_download", lambda source: None)  # no network in tests
    monkeypatch.setattr(benchmarks, "_from_hub", lambda repo, name: None)
    assert benchmarks.main(["mt_bench,gsm8k"]) == 1
    assert capsys.readouterr().out.strip() == "mt_bench"
    assert benchmarks.main(["mt_bench,humaneval,gsm8k", "--fallback"]) == 0
    out, err = capsys.readouterr()
    assert out.strip() == "mt_bench,humaneval:full" and "gsm8k: skipped" in err
    assert benchmarks.main(["gsm8k", "--fallback"]) == 1  # nothing at all can run
    with pytest.raises(SystemExit):
        benchmarks.main(["gsm8k:some"])


def test_chat_prompt_holds_own_previous_answer():
    tok = tiny_tokenizer()
    messages = [{"role": "user", "content": "w1 w2"}, {"role": "assistant", "content": "w3"},
                {"role": "user", "content": "w4"}]
    ids = benchmarks.build_prompt(tok, messages)
    assert tok.convert_ids_to_tokens(ids) == ["<|user|>", "w1", "w2", "<|end|>", "<|assistant|>", "w3", "<|end|>",
                                              "<|user|>", "w4", "<|end|>", "<|assistant|>"]


def test_compare_pairs_questions_and_bounds_the_ratio(tmp_path, capsys):
    from evaluation import compare
    # A: 2 tokens per forward on every question; B: 1.5 on q1, 1 on q2, 2 on q3; q4 only in A
    a = write_answers(tmp_path / "a.jsonl", "mt_bench", {("hass", q): [turn(4, 1.0, [2, 1])]
                                                         for q in (1, 2, 3, 4)})
    b = write_answers(tmp_path / "b.jsonl", "mt_bench", {("hass", 1): [turn(3, 1.0, [2])],
                                                         ("hass", 2): [turn(2, 1.0, [1])],
                                                         ("hass", 3): [turn(4, 1.0, [3])]})
    result = compare.compare(compare.per_question(a, "hass"), compare.per_question(b, "hass"))
    # A: 4 tokens / 3 forwards on each of q1-q3; B: 3/2, 2/2, 4/2 -> 9 / 6
    assert result["questions"] == 3
    assert result["tau_a"] == pytest.approx(12 / 9) and result["tau_b"] == pytest.approx(9 / 6)
    assert result["ratio"] == pytest.approx((12 / 9) / (9 / 6))
    low, high = result["ratio_ci95"]
    assert low <= result["ratio"] <= high
    assert (result["a_higher"], result["b_higher"], result["ties"]) == (1, 2, 0)
    compare.main([f"A={a}", f"B={b}:hass", "--out", str(tmp_path / "c.json")])
    assert "A / B = 0.889" in capsys.readouterr().out
    assert json.loads((tmp_path / "c.json").read_text())["questions"] == 3
    for bad, message in (([f"A={a}", "B"], "NAME=ANSWER_FILE"), ([f"A={a}", f"B={b}:vanilla"], "no answers of method"),
                         ([f"A={a}", "B=/no/such.jsonl"], "does not exist")):
        with pytest.raises(SystemExit):
            compare.main(bad)
        assert message in capsys.readouterr().err


def test_packed_kernels_give_the_same_answers_and_hf_keeps_its_own(models_dir, tmp_path, monkeypatch):
    from hass import kernels

    out = tmp_path / "answers.jsonl"
    seen = []
    real = kernels.PackedLinear.forward
    monkeypatch.setattr(kernels.PackedLinear, "forward",
                        lambda self, x: seen.append(kernels._ENABLED[-1]) or real(self, x))
    packed_here = []  # the evaluation packs each draft it loads, as HassModel.from_pretrained does
    monkeypatch.setattr(run, "pack_draft", lambda m, k, real=run.pack_draft: packed_here.append(m) or real(m, k))
    run.main(quick_args(models_dir, out, "--methods", "hass,vanilla,hf", "--cpu-kernels", "onednn"))
    assert [type(m).__name__ for m in packed_here] == ["DraftModel"]
    assert any(isinstance(m, kernels.PackedLinear) for m in packed_here[0].modules())
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert lines[0]["config"]["cpu_kernels"] == "onednn"
    by = {(a["method"], a["question_id"]): [t["token_ids"] for t in a["turns"]] for a in lines[1:]}
    assert all(by["hass", q] == by["vanilla", q] == by["hf", q] for q in (81, 82, 83))
    assert True in seen and False in seen  # packed for hass / vanilla, plain inside hf's generate
    with pytest.raises(SystemExit):
        run.main(quick_args(models_dir, tmp_path / "b.jsonl", "--cpu-kernels", "onednn", "--dtype", "fp16"))
