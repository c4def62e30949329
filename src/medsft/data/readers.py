"""Read training data files into Conversation records, each with its provenance.

Record formats: alpaca, ShareGPT and OpenAI messages (see `parse_record`). File types: .jsonl,
.json (an array, one object, or JSON Lines under a .json name, as MedicalGPT ships them), .csv
and .parquet. Every record read becomes either a Conversation or a Reject that carries the
reason and the record's original text, so `SourceRecords.read` is the number of records in the
files and nothing is dropped silently.
"""

from __future__ import annotations

import bisect
import csv
import io
import itertools
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from medsft.data.records import (
    USER_SIDE,
    Conversation,
    Message,
    Provenance,
    Reject,
    SourceRecords,
    check_turns,
    function_call_content,
)
from medsft.errors import BadRecordError, UserError

FORMATS = ("alpaca", "sharegpt", "messages")
FILE_TYPES = (".json", ".jsonl", ".csv", ".parquet")
ON_BAD_RECORD = ("fail", "skip")

CANNOT_TELL_FORMAT = (
    "cannot tell the format: expected alpaca (instruction/output), "
    "sharegpt (conversations) or messages (messages) keys"
)
REST_OF_FILE = "the rest of the file could not be read"

# Role names as the formats spell them -> normalized roles; "system" is split off afterwards.
SHAREGPT_ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "system": "system",
    "observation": "observation",
    "tool": "observation",
    "function_call": "function_call",
}
MESSAGES_ROLES = {
    "system": "system",
    "user": "user",
    "assistant": "assistant",
    "tool": "observation",
    "function_call": "function_call",
}

# CSV cells under these columns hold JSON text (a list), not plain text.
CSV_JSON_COLUMNS = ("conversations", "messages", "history")


# ---------------------------------------------------------------------------------------------
# Public API


def read_source(
    name: str, path: str | Path, format: str = "auto", on_bad_record: str = "fail"
) -> SourceRecords:
    """Read a file, or a directory recursively, into the conversations and rejects of one source.

    `format` is "auto" (detected per file from its first recognizable record) or one of FORMATS,
    applied to every record. With `on_bad_record="fail"` the first bad record raises
    BadRecordError("<file>:<line>: <reason>"); with "skip" it becomes a Reject.
    """
    if format != "auto" and format not in FORMATS:
        raise UserError(f"source {name!r}: unknown format {format!r} (expected auto, {', '.join(FORMATS)})")
    if on_bad_record not in ON_BAD_RECORD:
        raise UserError(f"source {name!r}: on_bad_record must be fail or skip, got {on_bad_record!r}")
    records = SourceRecords(name=name)
    dataset = dataset_rows(str(path))
    if dataset is not None:  # hf:NAME or a save_to_disk folder: one row per record
        label, rows = dataset
        records.files.append(label)
        _read_items(label, _row_items(rows), format, on_bad_record, records)
        return records
    for file in data_files(path):
        records.files.append(file)
        _read_items(file, file_items(file), format, on_bad_record, records)
    return records


def original_texts(path: str | Path, provenances: list[Provenance]) -> dict[Provenance, str]:
    """The original text of the records at `provenances` in the source at `path`, as a reject keeps it.

    For records found unusable after reading (too long for max_length): only their files are read
    again, so the records that are kept never hold their text twice."""
    wanted = set(provenances)
    if not wanted:
        return {}
    dataset = dataset_rows(str(path))
    if dataset is not None:
        label, rows = dataset
        found = [(label, _row_items(rows))]
    else:
        found = [(file, file_items(file)) for file in sorted({p.file for p in wanted})]
    return {where: item.raw for file, items in found for item in items
            if (where := Provenance(file, item.line)) in wanted}


def _row_items(rows: list[dict]) -> list[_Item]:
    """A dataset's rows as records, numbered from 1; each one's text is the row as JSON."""
    return [_Item(n, json.dumps(row, ensure_ascii=False, default=str), row) for n, row in enumerate(rows, 1)]


def dataset_rows(path: str) -> tuple[str, list[dict]] | None:
    """(label, rows) for `hf:NAME[:SPLIT]` (datasets.load_dataset) or a folder saved by
    `save_to_disk`; None for plain files and folders."""
    saved = Path(path).is_dir() and any((Path(path) / f).is_file()
                                         for f in ("dataset_info.json", "dataset_dict.json", "state.json"))
    if not path.startswith("hf:") and not saved:
        return None
    import datasets  # a dependency, imported only here: reading plain files stays light

    try:
        if saved:
            loaded = datasets.load_from_disk(path)
            label = path
            if isinstance(loaded, datasets.DatasetDict):
                split = "train" if "train" in loaded else next(iter(loaded)) if len(loaded) == 1 else None
                if split is None:
                    raise UserError(f"{path}: a saved dataset with splits {', '.join(loaded)} and none named train")
                loaded, label = loaded[split], f"{path}[{split}]"
        else:
            name, _, split = path[3:].partition(":")
            loaded = datasets.load_dataset(name, split=split or "train")
            label = f"hf:{name}[{split or 'train'}]"
    except UserError:
        raise
    except Exception as error:  # the hub, a missing split, a bad folder: one line, not a traceback
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(f"{path}: cannot load the dataset: {first}") from None
    return label, loaded.to_list()


def data_files(path: str | Path) -> list[str]:
    """The data files under `path`: the file itself, or a directory's files sorted by relative path.

    Hidden files and directories (.git, .cache, editor backups) are skipped in a directory.
    """
    root = Path(path)
    if root.is_file():
        if root.suffix.lower() not in FILE_TYPES:
            raise UserError(f"{path}: unsupported file type {root.suffix!r} (expected .json, .jsonl, .csv or .parquet)")
        return [str(path)]
    if not root.is_dir():
        raise UserError(f"{path}: no such file or directory")
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for filename in filenames:
            if not filename.startswith(".") and Path(filename).suffix.lower() in FILE_TYPES:
                found.append(Path(dirpath, filename).relative_to(root))
    if not found:
        raise UserError(f"{path}: no .json/.jsonl/.csv/.parquet files")
    return [os.path.join(str(path), str(rel)) for rel in sorted(found, key=Path.as_posix)]


def detect_format(obj: dict) -> str | None:
    """The format one record is written in, or None. A null field counts as absent (Parquet
    fills columns a row lacks with nulls)."""
    if obj.get("instruction") is not None and obj.get("output") is not None:
        return "alpaca"
    if isinstance(obj.get("conversations"), list):
        return "sharegpt"
    if isinstance(obj.get("messages"), list):
        return "messages"
    return None


def parse_record(obj: dict, fmt: str) -> tuple[Conversation | None, str | None]:
    """(conversation, None) when `obj` is a trainable chat in format `fmt`, else (None, reason).

    The conversation has no source or provenance yet; the reader adds them.
    """
    if fmt not in FORMATS:
        raise UserError(f"unknown format {fmt!r} (expected {', '.join(FORMATS)})")
    try:
        return _PARSERS[fmt](obj), None
    except _NotTrainable as problem:
        return None, str(problem)


# ---------------------------------------------------------------------------------------------
# From a file to conversations and rejects


@dataclass(frozen=True)
class _Item:
    """One record as found in a file, before it is understood as a conversation."""

    line: int  # 1-based line where it starts (row number for Parquet)
    raw: str  # its original text, safe to write as UTF-8
    value: object = None  # the parsed JSON value, or a CSV/Parquet row as a dict
    problem: str | None = None  # why it could not even be parsed


def _read_items(file: str, items: list[_Item], fmt: str, on_bad_record: str, records: SourceRecords) -> None:
    file_format = _detect_file_format(items) if fmt == "auto" else fmt
    for item in items:
        provenance = Provenance(file, item.line)
        conversation, reason = _understand(item, file_format)
        if reason is None:
            records.conversations.append(replace(conversation, source=records.name, provenance=provenance))
        elif on_bad_record == "fail":
            raise BadRecordError(f"{provenance}: {reason}")
        else:
            records.rejects.append(Reject(records.name, provenance, reason, item.raw))


def file_items(file: str) -> list[_Item]:
    """The records of one file, each with its line, its parsed value or the reason it failed, and its raw text."""
    suffix = Path(file).suffix.lower()
    if suffix == ".parquet":
        return _parquet_items(file)
    text = _read_text(file)
    if suffix == ".jsonl":
        return list(_jsonl_items(text))
    if suffix == ".json":
        return _json_items(text)
    return list(_csv_items(text))


def _detect_file_format(items: list[_Item]) -> str | None:
    for item in items:
        if item.problem is None and isinstance(item.value, dict):
            fmt = detect_format(item.value)
            if fmt is not None:
                return fmt
    return None


def _understand(item: _Item, file_format: str | None) -> tuple[Conversation | None, str | None]:
    if item.problem is not None:
        return None, item.problem
    if not isinstance(item.value, dict):
        return None, f"expected a JSON object, got {type_name(item.value)}"
    if file_format is None:
        return None, CANNOT_TELL_FORMAT
    return parse_record(item.value, file_format)


# ---------------------------------------------------------------------------------------------
# Text files: bytes -> text with bad bytes kept in place


def _read_text(file: str) -> str:
    try:
        data = Path(file).read_bytes()
    except OSError as error:
        raise UserError(f"{file}: cannot read: {error.strerror}") from None
    # Bytes that are not UTF-8 become lone surrogates U+DC80..U+DCFF instead of failing the whole
    # decode, so a bad byte spoils only the record that holds it (and its raw text keeps it).
    return data.decode("utf-8", errors="surrogateescape").removeprefix("\ufeff")


_BAD_BYTE = re.compile("[\udc80-\udcff]")


def _bad_byte(text: str, start: int = 0, end: int | None = None) -> tuple[int, int] | None:
    """(position, byte value) of the first byte in text[start:end] that was not valid UTF-8."""
    match = _BAD_BYTE.search(text, start, len(text) if end is None else end)
    return None if match is None else (match.start(), ord(match.group()) - 0xDC00)


def _printable(text: str) -> str:
    """The text with each undecodable byte written as \\xNN, so it can be saved as UTF-8."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


class _Lines:
    """Line and column (1-based) of positions in a text; bisects, so big files stay linear."""

    def __init__(self, text: str):
        self.starts = [0] + [m.end() for m in re.finditer("\n", text)]

    def line_col(self, pos: int) -> tuple[int, int]:
        index = bisect.bisect_right(self.starts, pos) - 1
        return index + 1, pos - self.starts[index] + 1


# ---------------------------------------------------------------------------------------------
# JSON Lines and JSON


def _jsonl_items(text: str) -> Iterator[_Item]:
    # Split on "\n" only: str.splitlines would also split on U+2028 and friends, which JSON
    # strings may hold unescaped.
    for number, line in enumerate(text.split("\n"), start=1):
        line = line.removesuffix("\r")
        if line.strip():  # a blank line is not a record
            yield _jsonl_item(number, line)


def _jsonl_item(number: int, line: str) -> _Item:
    raw = _printable(line)
    bad = _bad_byte(line)
    if bad is not None:
        pos, byte = bad
        return _Item(number, raw, problem=f"not valid UTF-8 (byte 0x{byte:02x} at column {pos + 1})")
    try:
        return _Item(number, raw, json_loads(line))
    except json.JSONDecodeError as error:
        return _Item(number, raw, problem=f"malformed JSON: {error.msg} (column {error.colno})")


_JSON_SPACE = re.compile(r"[ \t\n\r]*")
TOO_DEEP = "nested too deeply"


def json_loads(text: str) -> object:
    """json.loads, with nesting too deep for the parser reported as malformed JSON (not a RecursionError)."""
    try:
        return json.loads(text)
    except RecursionError:
        raise json.JSONDecodeError(TOO_DEEP, text, 0) from None


def _raw_decode(decoder: json.JSONDecoder, text: str, pos: int) -> tuple[object, int]:
    try:
        return decoder.raw_decode(text, pos)
    except RecursionError:
        raise json.JSONDecodeError(TOO_DEEP, text, pos) from None


def _skip_space(text: str, pos: int) -> int:
    return _JSON_SPACE.match(text, pos).end()


def _json_items(text: str) -> list[_Item]:
    start = _skip_space(text, 0)
    if start == len(text):
        return []
    if text[start] == "[":
        return list(_json_array_items(text, start))
    if text[start] == "{":
        whole = _single_object_item(text, start)
        if whole is not None:
            return [whole]
    return list(_jsonl_items(text))  # MedicalGPT ships JSON Lines under a .json name


def _single_object_item(text: str, start: int) -> _Item | None:
    """The file as one record when it is exactly one JSON object (possibly over many lines)."""
    try:
        value = json_loads(text)
    except json.JSONDecodeError:
        return None
    if not isinstance(value, dict):
        return None
    return _element_item(text, _Lines(text), start, len(text.rstrip()), value)


def _json_array_items(text: str, open_bracket: int) -> Iterator[_Item]:
    """The elements of a top-level JSON array, one at a time so each keeps its own line.

    An element that does not parse ends the file: after it there is no telling where the next
    element starts, so the rest of the file becomes one reject.
    """
    decoder = json.JSONDecoder()
    lines = _Lines(text)
    pos = _skip_space(text, open_bracket + 1)
    if text.startswith("]", pos):
        yield from _after_array(text, lines, pos + 1)
        return
    while True:
        try:
            value, end = _raw_decode(decoder, text, pos)
        except json.JSONDecodeError as error:
            yield _rest_of_file(text, lines, pos, error.pos, error.msg)
            return
        yield _element_item(text, lines, pos, end, value)
        pos = _skip_space(text, end)
        if text.startswith(",", pos):
            pos = _skip_space(text, pos + 1)
        elif text.startswith("]", pos):
            yield from _after_array(text, lines, pos + 1)
            return
        else:
            expected = "expecting ',' or ']'" if pos < len(text) else "the file ends before the array is closed"
            yield _rest_of_file(text, lines, pos, pos, expected)
            return


def _after_array(text: str, lines: _Lines, pos: int) -> Iterator[_Item]:
    pos = _skip_space(text, pos)
    if pos < len(text):
        yield _rest_of_file(text, lines, pos, pos, "extra text after the closing ']'")


def _element_item(text: str, lines: _Lines, start: int, end: int, value: object) -> _Item:
    line, _ = lines.line_col(start)
    raw = _printable(text[start:end])
    bad = _bad_byte(text, start, end)
    if bad is None:
        return _Item(line, raw, value)
    pos, byte = bad
    bad_line, bad_column = lines.line_col(pos)
    return _Item(line, raw, problem=f"not valid UTF-8 (byte 0x{byte:02x} at line {bad_line} column {bad_column})")


def _rest_of_file(text: str, lines: _Lines, start: int, error_pos: int, message: str) -> _Item:
    line, column = lines.line_col(error_pos)
    bad = _bad_byte(text, error_pos, error_pos + 1)
    if bad is not None:
        reason = f"not valid UTF-8 (byte 0x{bad[1]:02x} at line {line} column {column}); {REST_OF_FILE}"
    else:
        reason = f"malformed JSON at line {line} column {column}: {message}; {REST_OF_FILE}"
    return _Item(lines.line_col(start)[0], _printable(text[start:]), problem=reason)


# ---------------------------------------------------------------------------------------------
# CSV


def _csv_items(text: str) -> Iterator[_Item]:
    # A conversations cell or a long answer can exceed csv's default 128 KiB field limit.
    csv.field_size_limit(max(csv.field_size_limit(), 2**31 - 1))
    # newline="": quoted cells keep their newlines. strict: a stray or unclosed quote is an error
    # here rather than silently merging the rows after it into one cell.
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    header = None
    next_line = 1
    try:
        for cells in reader:
            line, next_line = next_line, reader.line_num + 1
            if not any(cells):  # a blank line, or a row of empty cells as spreadsheets leave them
                continue
            if header is None:
                header = [name.strip() for name in cells]
            else:
                yield _csv_row_item(line, header, cells)
    except csv.Error as error:
        rest = "".join(itertools.islice(io.StringIO(text, newline=""), next_line - 1, None))
        reason = f"malformed CSV: {error} (at line {reader.line_num}); {REST_OF_FILE}"
        yield _Item(next_line, _printable(rest), problem=reason)


def _csv_row_item(line: int, header: list[str], cells: list[str]) -> _Item:
    if len(cells) > len(header):
        raw = json.dumps([_printable(cell) for cell in cells], ensure_ascii=False)
        return _Item(line, raw, problem=f"row has {len(cells)} cells, header has {len(header)}")
    cells = cells + [""] * (len(header) - len(cells))  # short rows: the missing cells are empty
    row = dict(zip(header, cells))
    raw = json.dumps({name: _printable(cell) for name, cell in row.items()}, ensure_ascii=False)
    for name, cell in row.items():
        bad = _bad_byte(cell)
        if bad is not None:
            return _Item(line, raw, problem=f"not valid UTF-8 (byte 0x{bad[1]:02x} in column {name!r})")
    value = {name: cell for name, cell in row.items() if name}
    for name in CSV_JSON_COLUMNS:
        cell = value.get(name)
        if cell is None:
            continue
        if not cell.strip():
            del value[name]  # an empty cell is a missing field
            continue
        try:
            value[name] = json_loads(cell)
        except json.JSONDecodeError as error:
            problem = f"column {name!r}: malformed JSON: {error.msg} (line {error.lineno} column {error.colno})"
            return _Item(line, raw, problem=problem)
    return _Item(line, raw, value)


# ---------------------------------------------------------------------------------------------
# Parquet


def _parquet_items(file: str) -> list[_Item]:
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise UserError(f"{file}: reading Parquet needs pyarrow (pip install pyarrow)") from None
    try:
        rows = pyarrow.parquet.read_table(file).to_pylist()
    except (pyarrow.ArrowException, OSError, ValueError) as error:
        message = " ".join(str(error).split())  # pyarrow messages may span lines; a reason is one
        return [_Item(1, "", problem=f"cannot read Parquet: {message}; {REST_OF_FILE}")]
    return _row_items(rows)


# ---------------------------------------------------------------------------------------------
# Records -> Conversation


class _NotTrainable(Exception):
    """Why a parsed record cannot become a Conversation; the message is the reject reason."""


def _parse_alpaca(obj: dict) -> Conversation:
    instruction = _required_str(obj, "instruction", "alpaca")
    output = _required_str(obj, "output", "alpaca")
    query = _optional_str(obj, "input")
    system = _optional_str(obj, "system")
    # LLaMA-Factory / MedicalGPT convention: a non-empty input follows the instruction on a new line.
    prompt = f"{instruction}\n{query}" if query else instruction
    messages = _history_turns(obj.get("history")) + [Message("user", prompt), Message("assistant", output)]
    return _checked(messages, system, _tools(obj))


def _parse_sharegpt(obj: dict) -> Conversation:
    items = _required_list(obj, "conversations", "sharegpt")
    system = _optional_str(obj, "system")
    if system is None:
        system = _optional_str(obj, "system_prompt")
    turns = []
    for number, item in enumerate(items, start=1):
        if not isinstance(item, dict):
            raise _NotTrainable(
                f"message {number}: expected an object with 'from' and 'value', got {type_name(item)}"
            )
        role = _role(number, item, "from", SHAREGPT_ROLES)
        value = item.get("value")
        if not isinstance(value, str):
            raise _NotTrainable(f"message {number} ({role}): 'value' must be a string, got {type_name(value)}")
        turns.append((role, value))
    return _from_turns(turns, system, _tools(obj))


def _parse_messages(obj: dict) -> Conversation:
    items = _required_list(obj, "messages", "messages")
    turns = []
    for number, item in enumerate(items, start=1):
        if not isinstance(item, dict):
            raise _NotTrainable(
                f"message {number}: expected an object with 'role' and 'content', got {type_name(item)}"
            )
        role = _role(number, item, "role", MESSAGES_ROLES)
        calls = _tool_calls(number, role, item.get("tool_calls"))
        # An assistant message that calls tools may have no text: OpenAI writes null (or "") there.
        content = "" if calls and item.get("content") is None else _message_content(number, role, item.get("content"))
        reasoning = item.get("reasoning_content", item.get("reasoning"))
        if role == "assistant" and isinstance(reasoning, str) and reasoning.strip():
            # Reasoning kept inline, as R1 / Qwen3 data writes it: the reasoning templates render it in place.
            content = f"<think>\n{reasoning.strip()}\n</think>\n\n{content}"
        if calls:  # the turn ShareGPT writes as `function_call`: supervised, rendered as the family writes calls
            role, content = "function_call", function_call_content(content, calls)
        if role == "observation" and turns and turns[-1][0] == "observation":
            raise _NotTrainable(f"message {number} (tool): follows another tool message; "
                                "give the results of one turn's calls as one tool message")
        turns.append((role, content))
    return _from_turns(turns, None, _tools(obj))


def _tool_calls(number: int, role: str, tool_calls: object) -> list[dict]:
    """OpenAI `tool_calls` as [{"name", "arguments"}, ...], the arguments as an object; [] for none."""
    if tool_calls is None or tool_calls == []:
        return []
    where = f"message {number} ({role})"
    if role != "assistant":
        raise _NotTrainable(f"{where}: 'tool_calls' is only allowed on an assistant message")
    if not isinstance(tool_calls, list):
        raise _NotTrainable(f"{where}: 'tool_calls' must be a list, got {type_name(tool_calls)}")
    return [_tool_call(f"{where}: tool call {index}", call) for index, call in enumerate(tool_calls, start=1)]


def _tool_call(where: str, call: object) -> dict:
    """One OpenAI tool call, {"type": "function", "function": {"name", "arguments"}}, checked."""
    if not isinstance(call, dict):
        raise _NotTrainable(f"{where}: expected an object with a 'function' object, got {type_name(call)}")
    function = call.get("function")
    if not isinstance(function, dict):
        raise _NotTrainable(f"{where}: 'function' must be an object with a name, got {type_name(function)}")
    if call.get("type") not in (None, "function"):  # None: absent (Parquet fills a missing key with null)
        raise _NotTrainable(f"{where}: type {call['type']!r} is not 'function'")
    name = function.get("name")
    if not isinstance(name, str) or not name.strip():
        raise _NotTrainable(f"{where}: no function name")
    arguments = function.get("arguments")
    if arguments is None:
        return {"name": name, "arguments": {}}
    if isinstance(arguments, str):
        try:
            arguments = json_loads(arguments)
        except json.JSONDecodeError as error:
            raise _NotTrainable(f"{where} ({name}): 'arguments' is not valid JSON: {error.msg} "
                                f"(column {error.colno})") from None
    if not isinstance(arguments, dict):
        raise _NotTrainable(f"{where} ({name}): 'arguments' must be a JSON object (or its JSON text), "
                            f"got {type_name(arguments)}")
    return {"name": name, "arguments": arguments}


_PARSERS = {"alpaca": _parse_alpaca, "sharegpt": _parse_sharegpt, "messages": _parse_messages}


def _message_content(number: int, role: str, content: object) -> str:
    """OpenAI content: a string, or a list of {"type": "text", "text": ...} parts (concatenated)."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise _NotTrainable(
            f"message {number} ({role}): 'content' must be a string or a list of text parts, "
            f"got {type_name(content)}"
        )
    texts = []
    for index, part in enumerate(content, start=1):
        if not (isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)):
            kind = part.get("type") if isinstance(part, dict) else type_name(part)
            raise _NotTrainable(f"message {number} ({role}): content part {index} is {kind!r}, not text")
        texts.append(part["text"])
    return "".join(texts)


def _role(number: int, item: dict, key: str, roles: dict[str, str]) -> str:
    name = item.get(key)
    if name is None:
        raise _NotTrainable(f"message {number}: missing {key!r}")
    role = roles.get(name) if isinstance(name, str) else None
    if role is None:
        raise _NotTrainable(f"message {number}: unknown role {name!r}")
    if role == "system" and number > 1:
        raise _NotTrainable(f"message {number}: a system message is only allowed first")
    return role


def _from_turns(turns: list[tuple[str, str]], system: str | None, tools: str | None) -> Conversation:
    """A Conversation from (role, content) turns whose first may be the system prompt."""
    if not turns or turns[0][0] != "system":
        return _checked([Message(role, content) for role, content in turns], system, tools)
    if system and turns[0][1] != system:
        raise _NotTrainable("two different system prompts: the 'system' field and message 1")
    messages = [Message(role, content) for role, content in turns[1:]]
    return _checked(messages, turns[0][1], tools, first_number=2)


def _checked(
    messages: list[Message], system: str | None, tools: str | None, first_number: int = 1
) -> Conversation:
    """A trainable conversation. A chat that ends on an unanswered user turn after at least one
    answered exchange keeps its answered part (marked `trimmed`, counted in the manifest)."""
    trimmed = len(messages) >= 3 and messages[-1].role in USER_SIDE and check_turns(messages[:-1], first_number) is None
    if trimmed:
        messages = messages[:-1]
    reason = check_turns(messages, first_number)
    if reason is not None:
        raise _NotTrainable(reason)
    return Conversation(messages=tuple(messages), system=system or None, tools=tools, trimmed=trimmed)


def _history_turns(history: object) -> list[Message]:
    """Alpaca `history`: earlier [user, assistant] pairs, placed before the final turn."""
    if history is None:
        return []
    if not isinstance(history, list):
        raise _NotTrainable(f"field 'history' must be a list of [user, assistant] pairs, got {type_name(history)}")
    turns = []
    for index, pair in enumerate(history, start=1):
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2 and all(isinstance(x, str) for x in pair)):
            raise _NotTrainable(
                f"field 'history' must be a list of [user, assistant] pairs; item {index} is not a pair of strings"
            )
        turns += [Message("user", pair[0]), Message("assistant", pair[1])]
    return turns


def _tools(obj: dict) -> str | None:
    """The tool schema as text; a list or object is serialized as JSON (non-ASCII kept)."""
    tools = obj.get("tools")
    if tools is None or (isinstance(tools, (str, list, dict)) and not tools):
        return None
    if isinstance(tools, str):
        return tools
    if isinstance(tools, (list, dict)):
        return json.dumps(tools, ensure_ascii=False)
    raise _NotTrainable(f"field 'tools' must be a string, list or object, got {type_name(tools)}")


def _required_str(obj: dict, key: str, fmt: str) -> str:
    if obj.get(key) is None:
        raise _NotTrainable(f"missing field {key!r} ({fmt})")
    return _optional_str(obj, key)


def _optional_str(obj: dict, key: str) -> str | None:
    value = obj.get(key)
    if value is not None and not isinstance(value, str):
        raise _NotTrainable(f"field {key!r} must be a string, got {type_name(value)}")
    return value


def _required_list(obj: dict, key: str, fmt: str) -> list:
    value = obj.get(key)
    if value is None:
        raise _NotTrainable(f"missing field {key!r} ({fmt})")
    if not isinstance(value, list):
        raise _NotTrainable(f"field {key!r} must be a list, got {type_name(value)}")
    return value


def type_name(value: object) -> str:
    return "null" if value is None else type(value).__name__
