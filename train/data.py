"""ShareGPT dialogues -> token ids with the assistant-only loss mask, and the prepared-data file format.

The draft learns to predict the target's *responses*, so only assistant tokens carry loss: the content of
each assistant turn plus the end-of-turn token the template appends after it (the draft must learn to
stop), never the role header or the user's words (docs/METHOD.md, section 4).

How the mask is found: the dialogue is rendered to text once, tokenized once with character offsets, and
each assistant turn's character span is measured by rendering prefixes of the dialogue (up to the
generation prompt, then up to the end of the turn). A token is masked when its characters overlap a span.
Working in characters rather than diffing token counts of separately tokenized prefixes keeps the mask
exact where a merge crosses a turn boundary, and it works for any template, unlike
`return_assistant_tokens_mask`, which needs `{% generation %}` markers that few chat templates (not
SmolLM2's, not LLaMA's) carry.

Templates: "chat" is the tokenizer's own chat template; "vicuna" and "llama-2" are FastChat's conversation
templates (`fschat`), the prompts of the Vicuna and LLaMA2-chat runs of the EAGLE/HASS papers.
"""
from __future__ import annotations

import gzip
import json
import random
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import PreTrainedTokenizerBase

from hass.files import atomic_path

PREPARED_FORMAT = "hass-prepared-v1"
TEMPLATES = ("chat", "vicuna", "llama-2")

ROLES = {"human": "user", "user": "user",
         "gpt": "assistant", "assistant": "assistant", "chatgpt": "assistant", "bard": "assistant",
         "bing": "assistant", "model": "assistant",
         "system": "system"}

# FastChat's template behind each of our names; LLaMA-2-chat was prompted with Meta's default system
# message in the papers' LLaMA2-chat experiments (FastChat's "llama-2" template itself has none).
_FASTCHAT_NAMES = {"vicuna": "vicuna_v1.1", "llama-2": "llama-2"}
LLAMA2_SYSTEM = (
    "You are a helpful, respectful and honest assistant. Always answer as helpfully as possible, while "
    "being safe.  Your answers should not include any harmful, unethical, racist, sexist, toxic, dangerous, "
    "or illegal content. Please ensure that your responses are socially unbiased and positive in nature."
    "\n\nIf a question does not make any sense, or is not factually coherent, explain why instead of "
    "answering something not correct. If you don't know the answer to a question, please don't share "
    "false information.")

Message = dict[str, str]  # {"role": "system" | "user" | "assistant", "content": str}


@dataclass(frozen=True)
class Dialogue:
    """An optional system message, then user/assistant turns alternating, non-empty, ending with assistant."""

    id: str
    messages: list[Message]


@dataclass
class ReadStats:
    """What reading a file kept and why the rest was skipped."""

    n_records: int = 0  # complete JSON records found
    n_unusable: int = 0  # records without a single user -> assistant exchange
    n_invalid: int = 0  # JSONL lines, or the tail of a JSON array, that are not valid JSON
    tail_chars: int = 0  # characters ignored after the last complete record of a JSON array
    n_leading_dropped: int = 0  # records whose leading non-user turns were dropped
    n_cut: int = 0  # records shortened at a malformed turn (empty, unknown role, roles not alternating)

    @property
    def n_kept(self) -> int:
        return self.n_records - self.n_unusable

    @property
    def n_skipped(self) -> int:
        return self.n_unusable + self.n_invalid


# ----------------------------------------------------------------------------------------------- reading

def _iter_json_values(path: Path, stats: ReadStats) -> Iterator[Any]:
    """The values of a top-level JSON array, or of a JSONL file, up to the first invalid point.

    A JSON array is parsed one element at a time with `raw_decode`, so a file cut part-way (ShareGPT's
    PyPI copy is) still yields every complete record; the incomplete tail counts as one invalid record.
    A name ending in .gz is read through gzip.
    """
    if path.suffix == ".gz":  # a committed, compressed file (e.g. train.regenerate's output)
        with gzip.open(path, "rt", encoding="utf-8", errors="replace") as f:
            text = f.read()
    else:
        text = path.read_text(encoding="utf-8", errors="replace")
    start = len(text) - len(text.lstrip())
    if text.startswith("[", start):
        decoder, separators = json.JSONDecoder(), re.compile(r"[\s,]*")
        pos = start + 1
        while True:
            pos = separators.match(text, pos).end()
            if pos == len(text) or text[pos] == "]":
                return
            try:
                value, pos = decoder.raw_decode(text, pos)
            except json.JSONDecodeError:
                stats.n_invalid += 1
                stats.tail_chars = len(text) - pos
                return
            yield value
    for line in text.splitlines():
        if line.strip():
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                stats.n_invalid += 1


def _turns(record: Any) -> list[tuple[Any, Any]] | None:
    """(role, content) pairs of a ShareGPT `conversations` or an OpenAI-style `messages` record."""
    if not isinstance(record, dict):
        return None
    for key, role, content in (("conversations", "from", "value"), ("messages", "role", "content")):
        turns = record.get(key)
        if isinstance(turns, list):
            return [(t.get(role), t.get(content)) if isinstance(t, dict) else (None, None) for t in turns]
    return None


def clean_messages(turns: list[tuple[Any, Any]], stats: ReadStats) -> list[Message]:
    """Normalized messages: a leading system message is kept, leading non-user turns are dropped (long
    ShareGPT conversations were split, so a third of them open with `gpt`), the conversation is cut at the
    first malformed turn, and a trailing user turn (no answer to learn) is dropped."""
    normalized = [(ROLES.get(role.lower()) if isinstance(role, str) else None, content)
                  for role, content in turns]
    messages: list[Message] = []
    if normalized and normalized[0][0] == "system":
        role, content = normalized.pop(0)
        if isinstance(content, str) and content.strip():
            messages.append({"role": role, "content": content})
    first_user = next((i for i, (role, _) in enumerate(normalized) if role == "user"), len(normalized))
    stats.n_leading_dropped += 0 < first_user < len(normalized)
    expected = "user"
    for role, content in normalized[first_user:]:
        if role != expected or not isinstance(content, str) or not content.strip():
            stats.n_cut += 1
            break
        messages.append({"role": role, "content": content})
        expected = "assistant" if role == "user" else "user"
    if messages and messages[-1]["role"] == "user":
        messages.pop()
    return messages if any(m["role"] == "assistant" for m in messages) else []


def read_dialogues(path: str | Path) -> tuple[list[Dialogue], ReadStats]:
    """Every usable dialogue of a ShareGPT-style JSON array or JSONL file, tolerating a truncated file."""
    path = Path(path)
    stats = ReadStats()
    dialogues = []
    for index, record in enumerate(_iter_json_values(path, stats)):
        stats.n_records += 1
        turns = _turns(record)
        messages = clean_messages(turns, stats) if turns is not None else []
        if not messages:
            stats.n_unusable += 1
            continue
        dialogues.append(Dialogue(id=str(record.get("id", index)), messages=messages))
    if not dialogues:
        raise ValueError(f"{path}: no usable dialogue (expected a JSON list or JSONL of records with "
                         f"'conversations' [{{from, value}}] or 'messages' [{{role, content}}] holding at "
                         f"least one user turn followed by an assistant turn); read {stats}")
    return dialogues, stats


# ------------------------------------------------------------------------------ templates and the mask

def render(messages: list[Message], template: str, tokenizer: PreTrainedTokenizerBase,
           add_generation_prompt: bool = False) -> str:
    """The prompt text of `messages` under `template`; with `add_generation_prompt` it ends where the
    assistant's next answer starts."""
    if template == "chat":
        if tokenizer.chat_template is None:
            raise ValueError(f"tokenizer {tokenizer.name_or_path!r} has no chat template; "
                             f"use one of {TEMPLATES[1:]}")
        return tokenizer.apply_chat_template(messages, tokenize=False,
                                             add_generation_prompt=add_generation_prompt)
    if template not in _FASTCHAT_NAMES:
        raise ValueError(f"unknown template {template!r}; expected one of {TEMPLATES}")
    try:  # only the FastChat templates need fschat
        from fastchat.conversation import get_conv_template
    except ModuleNotFoundError:
        raise ModuleNotFoundError(f"template {template!r} needs FastChat: pip install --no-deps fschat==0.2.36 "
                                  f"(its conversation module needs none of its dependencies)") from None

    conv = get_conv_template(_FASTCHAT_NAMES[template])
    if messages and messages[0]["role"] == "system":
        conv.set_system_message(messages[0]["content"])
        messages = messages[1:]
    elif template == "llama-2":
        conv.set_system_message(LLAMA2_SYSTEM)
    for m in messages:
        conv.append_message(conv.roles[m["role"] == "assistant"], m["content"])
    if add_generation_prompt:
        conv.append_message(conv.roles[1], None)
    return conv.get_prompt()


def _add_special_tokens(template: str) -> bool:
    # A chat template writes its own BOS (HF tokenizes its output without special tokens); FastChat
    # prompts rely on the tokenizer to prepend it, as FastChat itself does.
    return template != "chat"


def encode_prompt(messages: list[Message], template: str, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Token ids of a generation prompt, exactly as the training data renders the context of an answer."""
    text = render(messages, template, tokenizer, add_generation_prompt=True)
    return tokenizer(text, add_special_tokens=_add_special_tokens(template))["input_ids"]


def _answer_span(text: str, start: int, end: int, content: str, eos: str | None) -> tuple[int, int]:
    """Characters of one answer inside `text[start:end]` (the assistant segment of the rendering): from its
    content up to and including the end-of-turn marker, i.e. the first `eos` after the content, or
    everything the template appends but trailing whitespace when the tokenizer's eos is not there."""
    segment = text[start:end]
    at = segment.find(content)
    if at < 0:  # a template that trims the content
        content = content.strip()
        at = segment.find(content)
    if at < 0:  # a template that rewrites the content: the whole segment is the answer
        at, content = 0, ""
    tail = at + len(content)
    stop = segment.find(eos, tail) if eos else -1
    stop = stop + len(eos) if stop >= 0 else len(segment.rstrip())
    return start + at, start + stop


def tokenize_dialogue(messages: list[Message], tokenizer: PreTrainedTokenizerBase, template: str,
                      max_length: int = 2048) -> tuple[list[int], list[int]]:
    """(input_ids, loss_mask), both of length <= max_length; loss_mask[t] = 1 iff input_ids[t] belongs to
    an assistant answer (content + end-of-turn). The mask is aligned with the ids, not shifted: a trainer
    predicting token t+1 at position t weights that prediction by loss_mask[t+1]."""
    if not tokenizer.is_fast:
        raise ValueError(f"tokenizer {tokenizer.name_or_path!r} is not a fast tokenizer; the loss mask "
                         f"needs its character offsets")
    text = render(messages, template, tokenizer)
    enc = tokenizer(text, add_special_tokens=_add_special_tokens(template), return_offsets_mapping=True,
                    truncation=True, max_length=max_length)
    input_ids, offsets = enc["input_ids"], enc["offset_mapping"]
    if not input_ids:
        return [], []
    limit = max(b for _, b in offsets)  # answers starting past the truncation point need no span
    spans = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        prompt = render(messages[:i], template, tokenizer, add_generation_prompt=True)
        if len(prompt) >= limit:
            break
        turn = render(messages[:i + 1], template, tokenizer)
        if not (text.startswith(turn) and turn.startswith(prompt)):
            raise ValueError(f"template {template!r} does not render a dialogue's prefixes as prefixes of "
                             f"its full rendering, so assistant turns cannot be located in it")
        spans.append(_answer_span(text, len(prompt), len(turn), m["content"], tokenizer.eos_token))
    return input_ids, _overlap_mask(offsets, spans)


def _overlap_mask(offsets: list[tuple[int, int]], spans: list[tuple[int, int]]) -> list[int]:
    """1 for each token whose characters [a, b) overlap one of the sorted, disjoint `spans`."""
    mask, k = [], 0
    for a, b in offsets:
        while k < len(spans) and spans[k][1] <= a:
            k += 1
        mask.append(int(k < len(spans) and a < spans[k][1] and b > spans[k][0]))
    return mask


def tokenize_dialogues(dialogues: Iterable[Dialogue], tokenizer: PreTrainedTokenizerBase, template: str,
                       max_length: int = 2048) -> tuple[list[dict], int]:
    """Prepared samples `{id, input_ids, loss_mask}`, and how many were dropped for an all-zero mask."""
    samples, n_empty = [], 0
    for d in dialogues:
        input_ids, loss_mask = tokenize_dialogue(d.messages, tokenizer, template, max_length)
        if any(loss_mask):
            samples.append({"id": d.id, "input_ids": input_ids, "loss_mask": loss_mask})
        else:
            n_empty += 1
    return samples, n_empty


# ------------------------------------------------------------------------------ the prepared-data file

def write_prepared(path: str | Path, header: dict, samples: list[dict]) -> None:
    """JSONL: a header line (`format` and `n_records` are filled in here), then one sample per line.
    Written to a temporary sibling and renamed, so a reader never sees a half-written file."""
    path = Path(path)
    header = {"format": PREPARED_FORMAT, **header, "n_records": len(samples)}
    with atomic_path(path) as tmp, tmp.open("w", encoding="utf-8") as f:
        f.write(json.dumps(header) + "\n")
        for s in samples:
            f.write(json.dumps({"id": s["id"], "input_ids": s["input_ids"], "loss_mask": s["loss_mask"]}) + "\n")


def read_prepared(path: str | Path) -> tuple[dict, list[dict]]:
    """(header, samples) of a file written by `write_prepared`, checked line by line."""
    path = Path(path)
    with path.open(encoding="utf-8") as f:
        lines = f.read().splitlines()
    try:
        header = json.loads(lines[0]) if lines else None
    except json.JSONDecodeError:
        header = None
    if not isinstance(header, dict) or header.get("format") != PREPARED_FORMAT:
        raise ValueError(f"{path}: not a {PREPARED_FORMAT} file (first line must be its header); "
                         f"run `python -m train.prepare_data` to make one")
    samples = []
    for lineno, line in enumerate(lines[1:], start=2):
        try:
            s = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{lineno}: invalid JSON ({e})") from None
        if not (isinstance(s, dict) and isinstance(s.get("input_ids"), list)
                and isinstance(s.get("loss_mask"), list) and len(s["input_ids"]) == len(s["loss_mask"])):
            raise ValueError(f"{path}:{lineno}: expected {{id, input_ids, loss_mask}} of equal lengths")
        samples.append(s)
    if len(samples) != header.get("n_records"):
        raise ValueError(f"{path}: header promises {header.get('n_records')} records, file holds "
                         f"{len(samples)} (truncated copy?)")
    return header, samples


def split_train_eval(samples: list[dict], eval_fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """A seeded random split; with a fraction > 0 and two or more samples, each side gets at least one."""
    if not 0.0 <= eval_fraction < 1.0:
        raise ValueError(f"eval_fraction must be in [0, 1), got {eval_fraction}")
    order = list(range(len(samples)))
    random.Random(seed).shuffle(order)
    n_eval = round(len(samples) * eval_fraction)
    if eval_fraction > 0 and len(samples) >= 2:
        n_eval = min(max(n_eval, 1), len(samples) - 1)
    return [samples[i] for i in order[n_eval:]], [samples[i] for i in order[:n_eval]]
