"""Questions to answer, read from the same files training reads (`medsft generate`).

A record is a prompt when it ends on the user side; when it ends with an answer, that answer is
kept as the reference and the rest is the prompt. Alpaca records may leave `output` empty or out.
A `.txt` file is one question per line; a JSON record with only a `question` or `prompt` string is
one question. Records that are not prompts become Rejects (file, line, reason), as in training."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from medsft.data.readers import data_files, detect_format, file_items, parse_record
from medsft.data.records import ASSISTANT_SIDE, Message, Provenance, Reject
from medsft.errors import BadRecordError, UserError

_PLACEHOLDER = "\u2063"  # an answer stand-in while parsing; never shown


@dataclass(frozen=True)
class Prompt:
    history: tuple[Message, ...]  # earlier exchanges, each user turn followed by its answer
    question: str  # the last user turn
    system: str | None
    reference: str | None  # the record's own answer, when it had one
    provenance: Provenance | None = None  # set by read_prompts

    def messages(self) -> list[dict]:
        """OpenAI-style messages of the prompt (system first when there is one)."""
        head = [{"role": "system", "content": self.system}] if self.system is not None else []
        return head + [{"role": m.role, "content": m.content} for m in self.history] + \
            [{"role": "user", "content": self.question}]


def read_prompts(path: str | Path, on_bad_record: str = "fail") -> tuple[list[Prompt], list[Reject]]:
    """Prompts in file order, and the records that were not (empty unless on_bad_record is skip)."""
    if on_bad_record not in ("fail", "skip"):
        raise UserError(f"--on-bad-record: expected fail or skip, got {on_bad_record!r}")
    prompts: list[Prompt] = []
    rejects: list[Reject] = []
    files = [str(path)] if Path(path).suffix.lower() == ".txt" and Path(path).is_file() else data_files(path)
    for file in files:
        for line, raw, prompt, reason in _file_prompts(file):
            provenance = Provenance(file, line)
            if reason is None:
                prompts.append(replace(prompt, provenance=provenance))
            elif on_bad_record == "fail":
                raise BadRecordError(f"{provenance}: {reason} (--on-bad-record skip writes such records to "
                                     "the rejects file and goes on)")
            else:
                rejects.append(Reject("prompts", provenance, reason, raw))
    return prompts, rejects


def _file_prompts(file: str):
    if file.lower().endswith(".txt"):
        try:
            text = Path(file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise UserError(f"{file}: cannot read as UTF-8 text: {error}") from None
        for number, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                yield number, line, Prompt((), line.strip(), None, None), None
        return
    for item in file_items(file):
        if item.problem is not None:
            yield item.line, item.raw, None, item.problem
        elif not isinstance(item.value, dict):
            yield item.line, item.raw, None, f"expected a JSON object, got {type(item.value).__name__}"
        else:
            prompt, reason = prompt_of(item.value)
            yield item.line, item.raw, prompt, reason


def prompt_of(obj: dict) -> tuple[Prompt | None, str | None]:
    """(prompt, None), or (None, why this record is not a prompt)."""
    for key in ("question", "prompt"):
        if isinstance(obj.get(key), str) and detect_format(obj) is None and obj[key].strip():
            return Prompt((), obj[key], None, None), None
    record = dict(obj)
    fmt = detect_format(record)
    if fmt is None and record.get("instruction") is not None:  # alpaca without an output
        fmt = "alpaca"
    if fmt == "alpaca":
        reference = record.get("output") if isinstance(record.get("output"), str) and record["output"].strip() else None
        record["output"] = _PLACEHOLDER
    elif fmt in ("sharegpt", "messages"):
        key, role_key, content_key = ("conversations", "from", "value") if fmt == "sharegpt" else \
            ("messages", "role", "content")
        turns = record[key]
        last = turns[-1] if turns and isinstance(turns[-1], dict) else {}
        if last.get(role_key) in ("gpt", "assistant"):
            reference = last.get(content_key) if isinstance(last.get(content_key), str) else None
            turns = turns[:-1]
        else:
            reference = None
        record[key] = list(turns) + [{role_key: "gpt" if fmt == "sharegpt" else "assistant", content_key: _PLACEHOLDER}]
    else:
        return None, "cannot tell the format: expected a question/prompt string, alpaca, sharegpt or messages"
    conversation, reason = parse_record(record, fmt)
    if reason is not None:
        return None, reason
    *earlier, asked, _ = conversation.messages
    if asked.role != "user" or any(m.role not in ("user", *ASSISTANT_SIDE) for m in earlier):
        return None, "the last turn before the answer is not a user question"
    return Prompt(tuple(earlier), asked.content, conversation.system, reference), None
