"""Probe files a practitioner already has: open questions, key-fact questions, multiple choice.

Files: .jsonl, .json (an array; JSON Lines under a .json name also works), .csv with a header
row, and .parquet (needs pyarrow). Column and field names are matched case-insensitively.

Kinds, and the layouts each accepts:
- generation: {"question" | "prompt" | "instruction", "key"?, "reference"?, "category"?}  -> Probe
- knowledge:  {"question", "facts": [...], "reference"?}                      -> KnowledgeProbe
  (in CSV, "facts" is a JSON array or facts separated by newlines or semicolons)
- choice:     MedQA  {"question", "options": {"A": ..}, "answer_idx": "B"}    -> ChoiceProbe
              list   {"question", "options": ["..", ".."], "answer": "B"}   (letters A, B, .. in order)
              C-Eval question, A, B, C, D[, E..], answer                    (an empty cell: no such option)
              CMExam Question, Options ("A 选项一\\nB 选项二"), Answer
  "answer" may be the letter or, as in MedQA's "answer", the text of the correct option.

Probe files are small and curated, so the first bad record stops loading with a one-line
UserError "<file>:<line>: <reason>" (line of the JSONL line, JSON element or CSV row).
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from medsft.data.readers import file_items, json_loads, type_name  # the same file:line splitting as training data
from medsft.errors import UserError
from medsft.eval.matching import normalize
from medsft.eval.probes import ChoiceProbe, KnowledgeProbe, Probe
from medsft.eval.textmetrics import has_cjk

KINDS = ("generation", "knowledge", "choice")
FILE_TYPES = (".jsonl", ".json", ".csv", ".parquet")
QUESTION_FIELDS = ("question", "prompt", "instruction")
ANSWER_CUES = {"en": "Answer:", "zh": "答案："}
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


@dataclass
class ProbeFile:
    name: str  # the file's stem
    kind: str  # one of KINDS
    items: list[Probe | KnowledgeProbe | ChoiceProbe]
    path: str


# ---------------------------------------------------------------------------------------------
# Public API


def load_probe_file(path: str | Path, kind: str = "auto") -> ProbeFile:
    """The probes of one file. `kind` "auto" is detected from the first record (see `detect_kind`)."""
    if kind != "auto" and kind not in KINDS:
        raise UserError(f"unknown probe kind {kind!r} (expected auto, {', '.join(KINDS)})")
    file = str(path)
    _check_file(file)
    probes = []
    for item in file_items(file):
        try:
            record = _record(item)
            if kind == "auto":
                kind = detect_kind(record)
            probes.append(_PARSERS[kind](record))
        except _BadRecord as problem:
            raise UserError(f"{file}:{item.line}: {problem}") from None
    if not probes:
        raise UserError(f"{file}: no probes in the file")
    return ProbeFile(name=Path(file).stem, kind=kind, items=probes, path=file)


def detect_kind(record: dict) -> str:
    """choice when the record has options (an "options" field or A and B columns), knowledge
    when it has "facts", else generation."""
    keys = {str(key).strip().lower() for key in record}
    if "options" in keys or {"a", "b"} <= keys:
        return "choice"
    if "facts" in keys:
        return "knowledge"
    return "generation"


def choice_prompt(probe: ChoiceProbe, language: str = "auto") -> str:
    """The question, one lettered option per line, and an answer cue ("答案：" for Chinese)."""
    if language == "auto":
        language = "zh" if has_cjk(probe.question) else "en"
    if language not in ANSWER_CUES:
        raise ValueError(f"unknown language {language!r} (expected auto, {', '.join(ANSWER_CUES)})")
    lines = [probe.question] + [f"{letter}. {text}" for letter, text in probe.options]
    return "\n".join(lines + [ANSWER_CUES[language]])


# ---------------------------------------------------------------------------------------------
# From a file to records


class _BadRecord(Exception):
    """Why a record is not a probe; the message becomes the reason after "<file>:<line>: "."""


def _check_file(file: str) -> None:
    path = Path(file)
    if not path.exists():
        raise UserError(f"{file}: no such file")
    if not path.is_file():
        raise UserError(f"{file}: not a file (a probe set is one file)")
    if path.suffix.lower() not in FILE_TYPES:
        raise UserError(f"{file}: unsupported file type {path.suffix!r} (expected {', '.join(FILE_TYPES)})")


def _record(item) -> dict:
    """The record with lowercased field names; a null field counts as absent (Parquet fills them)."""
    if item.problem is not None:
        raise _BadRecord(item.problem)
    if not isinstance(item.value, dict):
        raise _BadRecord(f"expected a JSON object, got {type_name(item.value)}")
    return {str(key).strip().lower(): value for key, value in item.value.items() if value is not None}


# ---------------------------------------------------------------------------------------------
# Records -> probes


def _generation_probe(record: dict) -> Probe:
    return Probe(
        question=_question(record),
        key=_optional_text(record, "key"),
        reference=_optional_text(record, "reference"),
        family=_optional_text(record, "category") or "",
    )


def _knowledge_probe(record: dict) -> KnowledgeProbe:
    return KnowledgeProbe(
        question=_question(record),
        facts=_facts(record),
        reference=_optional_text(record, "reference"),
    )


def _choice_probe(record: dict) -> ChoiceProbe:
    question = _question(record)
    options = _options(record)
    if len(options) < 2:
        raise _BadRecord(f"a choice question needs at least 2 options, got {len(options)}")
    return ChoiceProbe(question=question, options=options, answer=_answer_letter(record, options))


_PARSERS = {"generation": _generation_probe, "knowledge": _knowledge_probe, "choice": _choice_probe}


def _question(record: dict) -> str:
    for field in QUESTION_FIELDS:
        if field in record:
            question = _optional_text(record, field)
            if question is None:
                raise _BadRecord(f"field {field!r} is empty")
            extra_input = _optional_text(record, "input") if field == "instruction" else None
            # Alpaca convention, as the data readers use it: a non-empty input follows on a new line.
            return f"{question}\n{extra_input}" if extra_input else question
    raise _BadRecord("missing the question: expected a 'question', 'prompt' or 'instruction' field")


def _facts(record: dict) -> tuple[str, ...]:
    if "facts" not in record:
        raise _BadRecord("missing field 'facts' (the key facts an answer should state)")
    value = record["facts"]
    if isinstance(value, str):
        value = _facts_from_text(value)
    if not isinstance(value, list):
        raise _BadRecord(f"field 'facts' must be a list of strings, got {type_name(value)}")
    if not value:
        raise _BadRecord("field 'facts' is empty")
    facts = []
    for number, fact in enumerate(value, start=1):
        text = _as_text(fact, f"fact {number}")
        if text is None:
            raise _BadRecord(f"fact {number} is empty")
        facts.append(text)
    return tuple(facts)


def _facts_from_text(text: str) -> list:
    """Facts written in one cell: a JSON array, or facts separated by newlines or semicolons."""
    if text.lstrip().startswith("["):
        try:
            return json_loads(text)
        except json.JSONDecodeError as error:
            raise _BadRecord(f"field 'facts': malformed JSON array: {error.msg} (column {error.colno})") from None
    return [fact for fact in re.split(r"[\n;；]", text) if fact.strip()]


# ---------------------------------------------------------------------------------------------
# Multiple-choice options and answers


# "A 选项", "A. text", "A、选项", "(A) text", "A：选项", "A选项" (a letter right before CJK text).
_LETTERED_LINE = re.compile(r"[(（]?([A-ZＡ-Ｚ])(?:\s*[.．、:：)）]\s*|\s+|(?=[^\x00-\x7f]))(.*)")


def _options(record: dict) -> tuple[tuple[str, str], ...]:
    if "options" not in record:
        options = _options_from_columns(record)
        if not options:
            raise _BadRecord("missing options: expected an 'options' field or columns A, B, C, ...")
        return options
    value = record["options"]
    if isinstance(value, str) and value.lstrip().startswith(("{", "[")):
        value = _json_cell(value, "options")  # a MedQA record flattened into a CSV cell
    if isinstance(value, dict):
        return _options_from_dict(value)
    if isinstance(value, list):
        return _options_from_list(value)
    if isinstance(value, str):
        return _options_from_block(value)
    raise _BadRecord(f"field 'options' must be an object, a list or lettered lines, got {type_name(value)}")


def _options_from_dict(value: dict) -> tuple[tuple[str, str], ...]:
    """{"A": text, ...} in letter order; an empty text means there is no such option."""
    options = {}
    for key, text in value.items():
        letter = _letter(str(key))
        if letter is None:
            raise _BadRecord(f"option key {_shown(key)} is not a letter A-Z")
        if letter in options:
            raise _BadRecord(f"option {letter} is given twice")
        text = _as_text(text, f"option {letter}")
        if text is not None:
            options[letter] = text
    return tuple(sorted(options.items()))


def _options_from_list(value: list) -> tuple[tuple[str, str], ...]:
    """[text, ...] lettered A, B, C, ... in order; position gives the letter, so none may be empty."""
    if len(value) > len(LETTERS):
        raise _BadRecord(f"too many options: {len(value)} (at most {len(LETTERS)})")
    options = []
    for letter, text in zip(LETTERS, value):
        text = _as_text(text, f"option {letter}")
        if text is None:
            raise _BadRecord(f"option {letter} is empty")
        options.append((letter, text))
    return tuple(options)


def _options_from_block(value: str) -> tuple[tuple[str, str], ...]:
    """CMExam's Options cell: one "LETTER text" per line, in the order given."""
    options = []
    for line in value.splitlines():
        if not line.strip():
            continue
        match = _LETTERED_LINE.fullmatch(line.strip())
        if match is None:
            raise _BadRecord(f"field 'options': line {_shown(line.strip())} does not start with an option letter")
        letter, text = unicodedata.normalize("NFKC", match.group(1)), match.group(2).strip()
        if not text:
            raise _BadRecord(f"option {letter} is empty")
        if letter in dict(options):
            raise _BadRecord(f"option {letter} is given twice")
        options.append((letter, text))
    return tuple(options)


def _options_from_columns(record: dict) -> tuple[tuple[str, str], ...]:
    """C-Eval's columns A, B, C, D[, E..]; an empty cell means the question has no such option."""
    options = []
    for key in sorted(key for key in record if len(key) == 1 and key.upper() in LETTERS):
        letter = key.upper()
        text = _as_text(record[key], f"option {letter}")
        if text is not None:
            options.append((letter, text))
    return tuple(options)


def _answer_letter(record: dict, options: tuple[tuple[str, str], ...]) -> str:
    """The correct option's letter from "answer_idx" (MedQA) or "answer" (a letter or the option's text)."""
    field = "answer_idx" if _optional_text(record, "answer_idx") is not None else "answer"
    if field not in record:
        raise _BadRecord("missing field 'answer' (the letter of the correct option)")
    answer = _as_text(record[field], f"field {field!r}")
    if answer is None:
        raise _BadRecord(f"field {field!r} is empty")
    letters = [letter for letter, _ in options]
    letter = _letter(answer)
    if letter in letters:
        return letter
    if field == "answer":
        by_text = [letter for letter, text in options if normalize(text) == normalize(answer)]
        if len(by_text) == 1:
            return by_text[0]
    if len(answer) > 1 and all(_letter(c) in letters for c in answer):
        raise _BadRecord(f"answer {_shown(answer)} names several options; only single-answer questions are supported")
    raise _BadRecord(f"answer {_shown(answer)} is not among the options {', '.join(letters)}")


def _letter(text: str) -> str | None:
    """"B", "b", "Ｂ", "(B)", "B." -> "B"; anything else -> None."""
    text = unicodedata.normalize("NFKC", text).strip().strip("().、").strip().upper()
    return text if len(text) == 1 and text in LETTERS else None


# ---------------------------------------------------------------------------------------------
# Field values


def _optional_text(record: dict, field: str) -> str | None:
    return _as_text(record.get(field), f"field {field!r}")


def _as_text(value: object, what: str) -> str | None:
    """A string (or number) stripped of outer whitespace; None when absent or blank."""
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise _BadRecord(f"{what} must be a string, got {type_name(value)}")
    return value.strip() or None


def _json_cell(text: str, field: str) -> object:
    try:
        return json_loads(text)
    except json.JSONDecodeError as error:
        raise _BadRecord(f"field {field!r}: malformed JSON: {error.msg} (column {error.colno})") from None


def _shown(value: object, limit: int = 60) -> str:
    """A value quoted for a one-line reason: repr escapes newlines; long values are cut."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
