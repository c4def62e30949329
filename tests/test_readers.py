"""Readers: every format in every file type normalizes to the same Conversations, with the line
each record starts on; every kind of damage becomes one clear reject (or one-line error)."""

from __future__ import annotations

import csv
import io
import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from medsft.data.readers import CANNOT_TELL_FORMAT, detect_format, parse_record, read_source
from medsft.data.records import Conversation, Message, Provenance
from medsft.errors import BadRecordError, UserError


def user(text: str) -> Message:
    return Message("user", text)


def assistant(text: str) -> Message:
    return Message("assistant", text)


# --- one sample set per format, Chinese and English, and what each must normalize to ----------

ALPACA = [
    {
        "instruction": "小孩发烧怎么办？",
        "input": "体温38.5度，两岁",
        "output": "可以先物理降温……\n如持续高烧请及时就医。",
        "system": "你是一名儿科医生。",
        "history": [["你好", "你好，请问有什么可以帮您？"]],
    },
    # empty input: the user turn is the instruction alone; content is kept exactly (spaces, newline)
    {"instruction": "What is hypertension?", "input": "", "output": " High blood pressure.\n"},
]
ALPACA_EXPECTED = [
    Conversation(
        messages=(
            user("你好"),
            assistant("你好，请问有什么可以帮您？"),
            user("小孩发烧怎么办？\n体温38.5度，两岁"),
            assistant("可以先物理降温……\n如持续高烧请及时就医。"),
        ),
        system="你是一名儿科医生。",
    ),
    Conversation(messages=(user("What is hypertension?"), assistant(" High blood pressure.\n"))),
]

DRUG_TOOLS = [{"name": "drug_lookup", "description": "查询药品说明书"}]
SHAREGPT = [
    {
        "conversations": [
            {"from": "system", "value": "你是医疗助手。"},
            {"from": "human", "value": "阿司匹林每天吃多少？"},
            {"from": "function_call", "value": '{"name": "drug_lookup", "arguments": {"drug": "阿司匹林"}}'},
            {"from": "observation", "value": '{"dose": "100mg"}'},
            {"from": "gpt", "value": "每日100毫克。"},
        ],
        "tools": DRUG_TOOLS,
    },
    {
        "system_prompt": "You are a careful doctor.",
        "conversations": [
            {"from": "user", "value": "Is aspirin safe?"},
            {"from": "assistant", "value": "Usually, in low doses."},
            {"from": "human", "value": "And for kids?"},
            {"from": "gpt", "value": "Not for children under 16."},
        ],
    },
]
SHAREGPT_EXPECTED = [
    Conversation(
        messages=(
            user("阿司匹林每天吃多少？"),
            Message("function_call", '{"name": "drug_lookup", "arguments": {"drug": "阿司匹林"}}'),
            Message("observation", '{"dose": "100mg"}'),
            assistant("每日100毫克。"),
        ),
        system="你是医疗助手。",
        tools='[{"name": "drug_lookup", "description": "查询药品说明书"}]',  # JSON text, Chinese kept
    ),
    Conversation(
        messages=(
            user("Is aspirin safe?"),
            assistant("Usually, in low doses."),
            user("And for kids?"),
            assistant("Not for children under 16."),
        ),
        system="You are a careful doctor.",
    ),
]

MESSAGES = [
    {
        "messages": [
            {"role": "system", "content": "You are a pharmacist."},
            {"role": "user", "content": [{"type": "text", "text": "Dose of "}, {"type": "text", "text": "ibuprofen?"}]},
            {"role": "function_call", "content": '{"name": "lookup"}'},
            {"role": "tool", "content": "200-400mg"},
            {"role": "assistant", "content": "200–400 mg every 6 hours."},
        ],
        "tools": '[{"name": "lookup"}]',
    },
    {
        "messages": [
            {"role": "user", "content": "头痛怎么办？"},
            {"role": "assistant", "content": "多休息，必要时就医。"},
        ]
    },
]
MESSAGES_EXPECTED = [
    Conversation(
        messages=(
            user("Dose of ibuprofen?"),
            Message("function_call", '{"name": "lookup"}'),
            Message("observation", "200-400mg"),
            assistant("200–400 mg every 6 hours."),
        ),
        system="You are a pharmacist.",
        tools='[{"name": "lookup"}]',
    ),
    Conversation(messages=(user("头痛怎么办？"), assistant("多休息，必要时就医。"))),
]

SAMPLES = {
    "alpaca": (ALPACA, ALPACA_EXPECTED),
    "sharegpt": (SHAREGPT, SHAREGPT_EXPECTED),
    "messages": (MESSAGES, MESSAGES_EXPECTED),
}


# --- writers: each writes records in one file type and returns the line each record starts on -


def write_jsonl(path, records) -> list[int]:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return list(range(1, len(records) + 1))


def write_json_array(path, records) -> list[int]:
    elements = ",\n".join(json.dumps(r, ensure_ascii=False) for r in records)
    path.write_text(f"[\n{elements}\n]\n", encoding="utf-8")
    return list(range(2, len(records) + 2))


def write_csv(path, records) -> list[int]:
    """Lists and objects go into cells as JSON text; strings as they are."""
    columns = list(dict.fromkeys(key for r in records for key in r))
    out = io.StringIO(newline="")
    writer = csv.writer(out)
    writer.writerow(columns)
    starts = []
    for r in records:
        starts.append(out.getvalue().count("\n") + 1)
        cells = [r.get(c, "") for c in columns]
        writer.writerow([c if isinstance(c, str) else json.dumps(c, ensure_ascii=False) for c in cells])
    path.write_text(out.getvalue(), encoding="utf-8", newline="")
    return starts


def write_parquet(path, records) -> list[int]:
    # A Parquet column has one type: content parts (a list) cannot share it with plain strings.
    def plain(message):
        if isinstance(message.get("content"), list):
            return {**message, "content": "".join(part["text"] for part in message["content"])}
        return message

    rows = [{**r, "messages": [plain(m) for m in r["messages"]]} if "messages" in r else r for r in records]
    # from_pylist takes its columns from the first row: give every row every column (absent = null)
    columns = list(dict.fromkeys(key for r in rows for key in r))
    pq.write_table(pa.Table.from_pylist([{c: r.get(c) for c in columns} for r in rows]), path)
    return list(range(1, len(records) + 1))


FILE_TYPES = {
    "data.jsonl": write_jsonl,
    "data.json": write_json_array,
    "jsonl_named.json": write_jsonl,  # MedicalGPT ships JSON Lines under a .json name
    "data.csv": write_csv,
    "data.parquet": write_parquet,
}


@pytest.mark.parametrize("filename", FILE_TYPES)
@pytest.mark.parametrize("fmt", SAMPLES)
@pytest.mark.parametrize("declared", ["auto", "explicit"])
def test_every_format_in_every_file_type_normalizes_exactly(tmp_path, filename, fmt, declared):
    records, expected = SAMPLES[fmt]
    path = tmp_path / filename
    lines = FILE_TYPES[filename](path, records)

    got = read_source("med", path, format="auto" if declared == "auto" else fmt)

    assert got.rejects == []
    assert got.files == [str(path)]
    assert [c.messages for c in got.conversations] == [e.messages for e in expected]
    assert [(c.system, c.tools) for c in got.conversations] == [(e.system, e.tools) for e in expected]
    assert [c.source for c in got.conversations] == ["med", "med"]
    assert [c.provenance for c in got.conversations] == [Provenance(str(path), line) for line in lines]


def test_csv_lines_account_for_a_quoted_answer_spanning_lines(tmp_path):
    # the first alpaca answer holds a newline: the second row starts one physical line later
    assert write_csv(tmp_path / "x.csv", ALPACA) == [2, 4]
    assert [c.provenance.line for c in read_source("s", tmp_path / "x.csv").conversations] == [2, 4]


def test_json_array_element_reports_the_line_it_starts_on(tmp_path):
    path = tmp_path / "pretty.json"
    path.write_text(json.dumps(ALPACA, ensure_ascii=False, indent=2), encoding="utf-8")
    second_start = path.read_text(encoding="utf-8").split("\n").index("  {", 2) + 1

    got = read_source("s", path)

    assert [c.provenance.line for c in got.conversations] == [2, second_start]
    assert [c.messages for c in got.conversations] == [e.messages for e in ALPACA_EXPECTED]


def test_json_array_element_starting_on_line_5(tmp_path):
    path = tmp_path / "a.json"
    path.write_text('[\n\n  {"instruction": "q1", "output": "a1"},\n\n  {"instruction": "q2",\n   "output": "a2"}\n]')
    assert [c.provenance.line for c in read_source("s", path).conversations] == [3, 5]


def test_csv_row_after_multiline_row_reports_its_physical_line(tmp_path):
    path = tmp_path / "a.csv"
    path.write_bytes(
        'instruction,output\r\n"多行\r\n问题","第一行\r\n第二行\r\n第三行"\r\nq2,a2\r\n'.encode("utf-8")
    )
    got = read_source("s", path)
    assert [c.provenance.line for c in got.conversations] == [2, 6]
    assert got.conversations[0].messages == (user("多行\r\n问题"), assistant("第一行\r\n第二行\r\n第三行"))


def test_single_object_json_file_spread_over_lines_is_one_record(tmp_path):
    path = tmp_path / "one.json"
    path.write_text("\n" + json.dumps(SHAREGPT[1], indent=2), encoding="utf-8")
    got = read_source("s", path)
    assert got.read == 1
    assert got.conversations[0].messages == SHAREGPT_EXPECTED[1].messages
    assert got.conversations[0].provenance.line == 2


def test_jsonl_blank_lines_and_crlf_are_not_records(tmp_path):
    path = tmp_path / "a.jsonl"
    good = json.dumps(ALPACA[1])
    path.write_bytes(f"\r\n{good}\r\n   \r\n\r\n{good}\r\n\r\n".encode())
    got = read_source("s", path, on_bad_record="fail")
    assert got.read == 2
    assert [c.provenance.line for c in got.conversations] == [2, 5]
    assert got.conversations[0].messages == ALPACA_EXPECTED[1].messages  # no stray "\r" kept


@pytest.mark.parametrize(
    "filename, text",
    [
        ("a.jsonl", '{"instruction": "问", "output": "答"}\n'),
        ("a.json", '[{"instruction": "问", "output": "答"}]'),
        ("b.json", '{"instruction": "问", "output": "答"}\n'),
        ("a.csv", "instruction,output\n问,答\n"),
    ],
)
def test_utf8_bom_is_accepted(tmp_path, filename, text):
    path = tmp_path / filename
    path.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    got = read_source("s", path, on_bad_record="fail")
    assert got.rejects == []
    assert got.conversations[0].messages == (user("问"), assistant("答"))
    assert got.conversations[0].provenance.line == (2 if filename == "a.csv" else 1)  # CSV: after the header


def test_directory_is_read_recursively_auto_per_file_hidden_skipped(tmp_path):
    root = tmp_path / "general"
    (root / "b_sharegpt").mkdir(parents=True)
    (root / "c" / "d").mkdir(parents=True)
    (root / ".cache").mkdir()
    write_jsonl(root / "a_medical.jsonl", ALPACA)
    write_json_array(root / "b_sharegpt" / "chats.json", SHAREGPT)
    write_csv(root / "c" / "d" / "messages.csv", MESSAGES)
    write_jsonl(root / "e_UPPER.JSONL", ALPACA[1:])
    # garbage that would fail the read if any of it were read
    (root / ".cache" / "x.jsonl").write_text("not json\n")
    (root / ".hidden.jsonl").write_text("not json\n")
    (root / "notes.txt").write_text("not json\n")

    got = read_source("general", str(root) + "/", on_bad_record="fail")

    rels = ["a_medical.jsonl", "b_sharegpt/chats.json", "c/d/messages.csv", "e_UPPER.JSONL"]
    assert got.files == [os.path.join(str(root) + "/", rel) for rel in rels]
    expected = ALPACA_EXPECTED + SHAREGPT_EXPECTED + MESSAGES_EXPECTED + ALPACA_EXPECTED[1:]
    assert [c.messages for c in got.conversations] == [e.messages for e in expected]
    assert [c.provenance.file for c in got.conversations] == [got.files[i] for i in (0, 0, 1, 1, 2, 2, 3)]
    assert got.read == 7 and got.rejects == []


def test_records_that_do_not_fit_the_detected_format_are_rejected(tmp_path):
    path = tmp_path / "mixed.jsonl"
    write_jsonl(path, [ALPACA[1], SHAREGPT[1], ALPACA[1]])
    got = read_source("s", path, on_bad_record="skip")
    assert len(got.conversations) == 2 and got.read == 3
    assert [(r.provenance.line, r.reason) for r in got.rejects] == [(2, "missing field 'instruction' (alpaca)")]


def test_explicit_format_is_applied_to_every_record(tmp_path):
    path = tmp_path / "a.jsonl"
    write_jsonl(path, [SHAREGPT[1], ALPACA[1]])
    got = read_source("s", path, format="sharegpt", on_bad_record="skip")
    assert [c.messages for c in got.conversations] == [SHAREGPT_EXPECTED[1].messages]
    assert [r.reason for r in got.rejects] == ["missing field 'conversations' (sharegpt)"]


def test_a_file_where_no_record_detects_rejects_every_record(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text('{"question": "q", "answer": "a"}\n{"prompt": "p"}\n[1]\n')
    got = read_source("s", path, on_bad_record="skip")
    assert got.conversations == [] and got.read == 3
    assert [r.reason for r in got.rejects] == [CANNOT_TELL_FORMAT, CANNOT_TELL_FORMAT, "expected a JSON object, got list"]


def test_detect_format():
    assert detect_format(ALPACA[0]) == "alpaca"
    assert detect_format(SHAREGPT[0]) == "sharegpt"
    assert detect_format(MESSAGES[0]) == "messages"
    assert detect_format({"conversations": "not a list"}) is None
    assert detect_format({"instruction": None, "output": None, "conversations": []}) == "sharegpt"  # Parquet nulls
    assert detect_format({"text": "x"}) is None


def test_parse_record_alpaca_input_history_system():
    conversation, reason = parse_record(ALPACA[0], "alpaca")
    assert reason is None
    assert conversation == ALPACA_EXPECTED[0]
    conversation, _ = parse_record({"instruction": "Summarize", "input": "text", "output": "ok"}, "alpaca")
    assert conversation.messages == (user("Summarize\ntext"), assistant("ok"))


@pytest.mark.parametrize(
    "record, fmt, reason",
    [
        (
            {"system": "A", "conversations": [{"from": "system", "value": "B"}, {"from": "human", "value": "q"},
                                              {"from": "gpt", "value": "a"}]},
            "sharegpt",
            "two different system prompts: the 'system' field and message 1",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]},
                          {"role": "assistant", "content": "a"}]},
            "messages",
            "message 1 (user): content part 1 is 'image_url', not text",
        ),
        (
            {"instruction": "q", "output": "a", "tools": 3},
            "alpaca",
            "field 'tools' must be a string, list or object, got int",
        ),
        ({"conversations": [{"value": "q"}]}, "sharegpt", "message 1: missing 'from'"),
        ({"conversations": ["q"]}, "sharegpt", "message 1: expected an object with 'from' and 'value', got str"),
        ({"messages": "hi"}, "messages", "field 'messages' must be a list, got str"),
        ({"messages": []}, "messages", "no messages"),
    ],
)
def test_parse_record_reasons(record, fmt, reason):
    assert parse_record(record, fmt) == (None, reason)


# --- OpenAI tool calls: the turn ShareGPT writes as function_call ------------------------------

WEATHER_TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
WEATHER_CALL = {"type": "function", "id": "call_1",
                "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}


def call_turn(content, *functions: dict) -> dict:
    """An OpenAI assistant message calling `functions` ({"name", "arguments"} each)."""
    calls = [{"type": "function", "id": f"call_{i}", "function": f} for i, f in enumerate(functions, start=1)]
    return {"role": "assistant", "content": content, "tool_calls": calls}


def tool_chat(assistant_turn: dict, result: str = '{"temp_c": 18}') -> str:
    """A JSONL line: a question, `assistant_turn`, the tool's result, the final answer."""
    return json.dumps({"messages": [
        {"role": "user", "content": "Weather in Paris?"},
        assistant_turn,
        {"role": "tool", "content": result, "tool_call_id": "call_1"},
        {"role": "assistant", "content": "18 °C in Paris."},
    ], "tools": WEATHER_TOOLS}, ensure_ascii=False)


# The same chat as ShareGPT writes it (LLaMA-Factory's function_call / observation turns).
SHAREGPT_WEATHER = {"conversations": [
    {"from": "human", "value": "Weather in Paris?"},
    {"from": "function_call", "value": '{"name": "get_weather", "arguments": {"city": "Paris"}}'},
    {"from": "observation", "value": '{"temp_c": 18}'},
    {"from": "gpt", "value": "18 °C in Paris."},
], "tools": WEATHER_TOOLS}


@pytest.mark.parametrize("content", ["", None], ids=["empty-content", "null-content"])
@pytest.mark.parametrize("arguments", ['{"city": "Paris"}', {"city": "Paris"}], ids=["json-text", "object"])
def test_an_openai_tool_call_is_the_sharegpt_function_call_turn(content, arguments):
    record = json.loads(tool_chat(call_turn(content, {"name": "get_weather", "arguments": arguments})))
    got, reason = parse_record(record, "messages")
    twin, _ = parse_record(SHAREGPT_WEATHER, "sharegpt")
    assert reason is None
    assert got == twin
    assert got.messages[1] == Message("function_call", '{"name": "get_weather", "arguments": {"city": "Paris"}}')


def test_text_and_several_tool_calls_in_one_turn_are_all_kept_text_first():
    turn = call_turn("Let me check both.", {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                     {"name": "get_weather", "arguments": {"city": "巴黎"}})
    got, reason = parse_record(json.loads(tool_chat(turn, "18; 18")), "messages")
    assert reason is None
    assert got.messages[1] == Message(
        "function_call",
        'Let me check both.\n[{"name": "get_weather", "arguments": {"city": "Paris"}}, '
        '{"name": "get_weather", "arguments": {"city": "巴黎"}}]',
    )
    # With no text, several calls are the JSON list LLaMA-Factory's ShareGPT data writes.
    calls_only, _ = parse_record(json.loads(tool_chat({**turn, "content": None}, "18; 18")), "messages")
    assert json.loads(calls_only.messages[1].content) == [
        {"name": "get_weather", "arguments": {"city": "Paris"}}, {"name": "get_weather", "arguments": {"city": "巴黎"}}]


def test_reasoning_before_a_tool_call_is_kept_before_it():
    turn = {**call_turn(None, WEATHER_CALL["function"]), "reasoning_content": "The user wants the weather."}
    got, reason = parse_record(json.loads(tool_chat(turn)), "messages")
    assert reason is None
    assert got.messages[1].content == ("<think>\nThe user wants the weather.\n</think>\n\n"
                                       '{"name": "get_weather", "arguments": {"city": "Paris"}}')


@pytest.mark.parametrize("filename", FILE_TYPES)
def test_openai_tool_calls_read_from_every_file_type(tmp_path, filename):
    """Parquet fills a message's missing keys (tool_calls, type, id, tool_call_id) with nulls: still read."""
    path = tmp_path / filename
    records = [json.loads(tool_chat(call_turn(None, WEATHER_CALL["function"]))), MESSAGES[1]]
    FILE_TYPES[filename](path, [{**r, "tools": json.dumps(WEATHER_TOOLS)} if "tools" in r else r for r in records])
    got = read_source("med", path, on_bad_record="fail")
    twin, _ = parse_record(SHAREGPT_WEATHER, "sharegpt")
    assert [c.messages for c in got.conversations] == [twin.messages, MESSAGES_EXPECTED[1].messages]
    assert json.loads(got.conversations[0].tools) == WEATHER_TOOLS


# --- the bad-record matrix ---------------------------------------------------------------------

GOOD_ALPACA = '{"instruction": "头痛怎么办？", "output": "多休息。"}'
GOOD_SHAREGPT = '{"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]}'
GOOD_MESSAGES = '{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}'
MUST_ALTERNATE = "where a {} turn must come"


def sharegpt(*turns: tuple[str, str]) -> str:
    return json.dumps({"conversations": [{"from": r, "value": v} for r, v in turns]}, ensure_ascii=False)


def between_good(good: str, bad: str | bytes) -> bytes:
    """A JSONL file: good, bad, good; the bad record is on line 2."""
    bad_bytes = bad.encode() if isinstance(bad, str) else bad
    return b"\n".join([good.encode(), bad_bytes, good.encode(), b""])


TRUNCATED = "[\n" + GOOD_ALPACA + ",\n" + GOOD_ALPACA[:20]
UNCLOSED = "[\n" + GOOD_ALPACA + "\n"
CSV_HEADER = "instruction,input,output\n"

# (id, file name, file bytes, records in the file, line of the bad one, reason, raw text of the bad one)
# A reason ending in "..." is a prefix (check_turns owns the rest of the wording).
BAD_RECORDS = [
    ("malformed-json", "a.jsonl", between_good(GOOD_ALPACA, '{"instruction": "a", "output": '), 3, 2,
     "malformed JSON: Expecting value (column 32)", '{"instruction": "a", "output": '),
    ("unknown-role", "a.jsonl", between_good(GOOD_SHAREGPT, sharegpt(("human", "Hi"), ("bot", "Hello"))), 3, 2,
     "message 2: unknown role 'bot'", sharegpt(("human", "Hi"), ("bot", "Hello"))),
    ("assistant-first", "a.jsonl", between_good(GOOD_SHAREGPT, sharegpt(("gpt", "Hello"), ("human", "Hi"))), 3, 2,
     "message 1: role 'assistant' where a user turn must come...", sharegpt(("gpt", "Hello"), ("human", "Hi"))),
    ("assistant-first-after-system", "a.jsonl",
     between_good(GOOD_SHAREGPT, sharegpt(("system", "S"), ("gpt", "Hello"))), 3, 2,
     "message 2: role 'assistant' where a user turn must come...", sharegpt(("system", "S"), ("gpt", "Hello"))),
    ("two-users", "a.jsonl", between_good(GOOD_SHAREGPT, sharegpt(("human", "a"), ("human", "b"), ("gpt", "c"))), 3, 2,
     "message 2: role 'user' where a...", sharegpt(("human", "a"), ("human", "b"), ("gpt", "c"))),
    ("only-a-question", "a.jsonl", between_good(GOOD_SHAREGPT, sharegpt(("human", "a"))),
     3, 2, "the last message is not an answer: nothing to supervise", sharegpt(("human", "a"))),
    ("system-not-first", "a.jsonl", between_good(GOOD_SHAREGPT, sharegpt(("human", "a"), ("system", "s"), ("gpt", "c"))),
     3, 2, "message 2: a system message is only allowed first",
     sharegpt(("human", "a"), ("system", "s"), ("gpt", "c"))),
    ("empty-content", "a.jsonl", between_good(GOOD_ALPACA, '{"instruction": "q", "output": "  "}'), 3, 2,
     "message 2 (assistant): empty content", '{"instruction": "q", "output": "  "}'),
    ("non-utf8-jsonl", "a.jsonl", between_good(GOOD_ALPACA, b'{"instruction": "a\xff", "output": "b"}'), 3, 2,
     "not valid UTF-8 (byte 0xff at column 19)", '{"instruction": "a\\xff", "output": "b"}'),
    ("non-object-list", "a.jsonl", between_good(GOOD_ALPACA, "[1, 2]"), 3, 2, "expected a JSON object, got list", "[1, 2]"),
    ("non-object-string", "a.jsonl", between_good(GOOD_ALPACA, '"text"'), 3, 2, "expected a JSON object, got str", '"text"'),
    ("output-not-string", "a.jsonl", between_good(GOOD_ALPACA, '{"instruction": "a", "output": 5}'), 3, 2,
     "field 'output' must be a string, got int", '{"instruction": "a", "output": 5}'),
    ("input-not-string", "a.jsonl", between_good(GOOD_ALPACA, '{"instruction": "a", "input": [], "output": "b"}'), 3, 2,
     "field 'input' must be a string, got list", '{"instruction": "a", "input": [], "output": "b"}'),
    ("history-not-pairs", "a.jsonl", between_good(GOOD_ALPACA, '{"instruction": "a", "output": "b", "history": [["x"]]}'),
     3, 2, "field 'history' must be a list of [user, assistant] pairs; item 1 is not a pair of strings",
     '{"instruction": "a", "output": "b", "history": [["x"]]}'),
    ("value-not-string", "a.jsonl", between_good(GOOD_SHAREGPT, '{"conversations": [{"from": "human", "value": 1}]}'),
     3, 2, "message 1 (user): 'value' must be a string, got int", '{"conversations": [{"from": "human", "value": 1}]}'),
    ("conversations-not-list", "a.jsonl", between_good(GOOD_SHAREGPT, '{"conversations": "hi"}'), 3, 2,
     "field 'conversations' must be a list, got str", '{"conversations": "hi"}'),
    ("missing-output", "a.jsonl", between_good(GOOD_ALPACA, '{"instruction": "a"}'), 3, 2,
     "missing field 'output' (alpaca)", '{"instruction": "a"}'),
    ("content-null", "a.jsonl",
     between_good(GOOD_MESSAGES, '{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": null}]}'),
     3, 2, "message 2 (assistant): 'content' must be a string or a list of text parts, got null",
     '{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": null}]}'),
    ("json-is-jsonl-malformed", "a.json", between_good(GOOD_ALPACA, "{oops"), 3, 2,
     "malformed JSON: Expecting property name enclosed in double quotes (column 2)", "{oops"),
    ("json-array-truncated", "a.json", TRUNCATED.encode(), 2, 3,
     "malformed JSON at line 3 column 17: Unterminated string starting at; the rest of the file could not be read",
     GOOD_ALPACA[:20]),
    ("json-array-unclosed", "a.json", UNCLOSED.encode(), 2, 3,
     "malformed JSON at line 3 column 1: the file ends before the array is closed; the rest of the file could not be read",
     ""),
    ("json-array-missing-comma", "a.json", ("[\n" + GOOD_ALPACA + "\n" + GOOD_ALPACA + "]").encode(), 2, 3,
     "malformed JSON at line 3 column 1: expecting ',' or ']'; the rest of the file could not be read",
     GOOD_ALPACA + "]"),
    ("json-array-non-utf8-element", "a.json",
     b"[\n" + GOOD_ALPACA.encode() + b',\n{"instruction": "a\xff", "output": "b"},\n' + GOOD_ALPACA.encode() + b"\n]", 3, 3,
     "not valid UTF-8 (byte 0xff at line 3 column 19)", '{"instruction": "a\\xff", "output": "b"}'),
    ("json-array-non-utf8-between", "a.json", b"[\n" + GOOD_ALPACA.encode() + b",\n\xfe" + GOOD_ALPACA.encode() + b"]", 2, 3,
     "not valid UTF-8 (byte 0xfe at line 3 column 1); the rest of the file could not be read",
     "\\xfe" + GOOD_ALPACA + "]"),
    ("json-array-non-object", "a.json", f"[{GOOD_ALPACA},\n 5,\n{GOOD_ALPACA}]".encode(), 3, 2,
     "expected a JSON object, got int", "5"),
    ("csv-non-utf8", "a.csv", CSV_HEADER.encode() + b"q,,a\nq,,a\xff\nq,,a\n", 3, 3,
     "not valid UTF-8 (byte 0xff in column 'output')", json.dumps({"instruction": "q", "input": "", "output": "a\\xff"})),
    ("csv-extra-cells", "a.csv", (CSV_HEADER + "q,,a\n\"x\ny\",,a,extra\nq,,a\n").encode(), 3, 3,
     "row has 4 cells, header has 3", '["x\\ny", "", "a", "extra"]'),
    ("csv-empty-answer", "a.csv", (CSV_HEADER + "q,,a\nq,i,\nq,,a\n").encode(), 3, 3,
     "message 2 (assistant): empty content", '{"instruction": "q", "input": "i", "output": ""}'),
    ("csv-bad-json-cell", "a.csv",
     ('conversations\n"[{""from"": ""human"", ""value"": ""q""}, {""from"": ""gpt"", ""value"": ""a""}]"\n"[{""from"""\n')
     .encode(), 2, 3, "column 'conversations': malformed JSON: Expecting ':' delimiter (line 1 column 9)",
     '{"conversations": "[{\\"from\\""}'),
    ("csv-unclosed-quote", "a.csv", (CSV_HEADER + 'q,,a\nq,,"never closed\nq,,a\n').encode(), 2, 3,
     "malformed CSV: unexpected end of data (at line 4); the rest of the file could not be read",
     'q,,"never closed\nq,,a\n'),
    ("csv-text-after-quote", "a.csv", (CSV_HEADER + 'q,,a\nq,,"quoted" tail\nq,,a\n').encode(), 2, 3,
     "malformed CSV: ',' expected after '\"' (at line 3); the rest of the file could not be read",
     'q,,"quoted" tail\nq,,a\n'),
    # OpenAI tool calls: each malformed call is one reason naming the message and the call
    *[(name, "a.jsonl", between_good(GOOD_MESSAGES, record), 3, 2, reason, record) for name, record, reason in [
        ("tool-calls-not-list", tool_chat({"role": "assistant", "content": None, "tool_calls": WEATHER_CALL}),
         "message 2 (assistant): 'tool_calls' must be a list, got dict"),
        ("tool-call-not-object", tool_chat({"role": "assistant", "content": None, "tool_calls": ["get_weather"]}),
         "message 2 (assistant): tool call 1: expected an object with a 'function' object, got str"),
        ("tool-call-without-function", tool_chat({"role": "assistant", "content": None,
                                                  "tool_calls": [{"name": "get_weather", "arguments": "{}"}]}),
         "message 2 (assistant): tool call 1: 'function' must be an object with a name, got null"),
        ("tool-call-without-name", tool_chat(call_turn(None, {"arguments": '{"city": "Paris"}'})),
         "message 2 (assistant): tool call 1: no function name"),
        ("tool-call-empty-name", tool_chat(call_turn(None, {"name": " ", "arguments": "{}"})),
         "message 2 (assistant): tool call 1: no function name"),
        ("tool-call-bad-arguments-json", tool_chat(call_turn(None, WEATHER_CALL["function"],
                                                             {"name": "get_weather", "arguments": '{"city": "Paris" "x"}'})),
         "message 2 (assistant): tool call 2 (get_weather): 'arguments' is not valid JSON: Expecting ',' delimiter "
         "(column 18)"),
        ("tool-call-arguments-not-object", tool_chat(call_turn(None, {"name": "get_weather", "arguments": "[1, 2]"})),
         "message 2 (assistant): tool call 1 (get_weather): 'arguments' must be a JSON object (or its JSON text), "
         "got list"),
        ("tool-call-arguments-number", tool_chat(call_turn(None, {"name": "get_weather", "arguments": 7})),
         "message 2 (assistant): tool call 1 (get_weather): 'arguments' must be a JSON object (or its JSON text), "
         "got int"),
        ("tool-call-not-a-function", tool_chat({"role": "assistant", "content": None,
                                                "tool_calls": [{**WEATHER_CALL, "type": "code_interpreter"}]}),
         "message 2 (assistant): tool call 1: type 'code_interpreter' is not 'function'"),
        ("tool-calls-on-a-user-message", json.dumps({"messages": [
            {"role": "user", "content": "q", "tool_calls": [WEATHER_CALL]}, {"role": "assistant", "content": "a"}]}),
         "message 1 (user): 'tool_calls' is only allowed on an assistant message"),
        ("empty-content-without-tool-calls", tool_chat({"role": "assistant", "content": "", "tool_calls": []}),
         "message 2 (assistant): empty content"),
        ("null-content-without-tool-calls", tool_chat({"role": "assistant", "content": None}),
         "message 2 (assistant): 'content' must be a string or a list of text parts, got null"),
        ("two-tool-messages-in-a-row", json.dumps({"messages": [
            {"role": "user", "content": "q"}, call_turn(None, WEATHER_CALL["function"], WEATHER_CALL["function"]),
            {"role": "tool", "content": "18"}, {"role": "tool", "content": "18"}, {"role": "assistant", "content": "a"}]}),
         "message 4 (tool): follows another tool message; give the results of one turn's calls as one tool message"),
    ]],
]


@pytest.mark.parametrize(
    "filename, content, n_records, line, reason, raw",
    [case[1:] for case in BAD_RECORDS],
    ids=[case[0] for case in BAD_RECORDS],
)
def test_bad_record(tmp_path, filename, content, n_records, line, reason, raw):
    path = tmp_path / filename
    path.write_bytes(content)

    with pytest.raises(BadRecordError) as raised:
        read_source("med", path, on_bad_record="fail")
    message = str(raised.value)
    assert "\n" not in message
    assert_reason(message, f"{path}:{line}: {reason}")

    got = read_source("med", path, on_bad_record="skip")
    assert len(got.rejects) == 1
    reject = got.rejects[0]
    assert (reject.source, reject.provenance, reject.raw) == ("med", Provenance(str(path), line), raw)
    assert_reason(reject.reason, reason)
    assert got.read == n_records
    assert len(got.conversations) == n_records - 1
    json.dumps(reject.to_json(), ensure_ascii=False).encode("utf-8")  # rejects.jsonl can hold it


def assert_reason(actual: str, expected: str) -> None:
    if expected.endswith("..."):
        assert actual.startswith(expected[:-3])
    else:
        assert actual == expected


def test_parquet_null_required_field_and_row_numbers(tmp_path):
    path = tmp_path / "a.parquet"
    rows = [
        {"instruction": "q1", "output": "a1"},
        {"instruction": "q2", "output": None},
        {"instruction": "q3", "output": "a3"},
    ]
    pq.write_table(pa.Table.from_pylist(rows), path)
    got = read_source("s", path, on_bad_record="skip")
    assert [c.provenance.line for c in got.conversations] == [1, 3]
    assert [(r.provenance.line, r.reason) for r in got.rejects] == [(2, "missing field 'output' (alpaca)")]
    assert json.loads(got.rejects[0].raw) == rows[1]
    with pytest.raises(BadRecordError, match=r"a\.parquet:2: missing field 'output' \(alpaca\)$"):
        read_source("s", path)


def test_unreadable_parquet_is_one_reject(tmp_path):
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"PAR1 this is not parquet")
    got = read_source("s", path, on_bad_record="skip")
    assert got.read == 1 and got.conversations == []
    assert got.rejects[0].reason.startswith("cannot read Parquet: ")
    with pytest.raises(BadRecordError) as raised:
        read_source("s", path)
    assert str(raised.value).startswith(f"{path}:1: cannot read Parquet: ") and "\n" not in str(raised.value)


def test_many_kinds_of_damage_in_one_file_all_counted_in_order(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_bytes(
        b"\n".join([
            GOOD_ALPACA.encode(),
            b"{broken",
            b'{"instruction": "\xc3", "output": "x"}',  # a truncated UTF-8 sequence
            b"",
            b"42",
            b'{"instruction": "", "output": "x"}',
            GOOD_ALPACA.encode(),
        ])
    )
    got = read_source("s", path, on_bad_record="skip")
    assert [(r.provenance.line, r.reason.split(" (")[0]) for r in got.rejects] == [
        (2, "malformed JSON: Expecting property name enclosed in double quotes"),
        (3, "not valid UTF-8"),
        (5, "expected a JSON object, got int"),
        (6, "message 1"),
    ]
    assert [c.provenance.line for c in got.conversations] == [1, 7]
    assert got.read == 6
    with pytest.raises(BadRecordError, match=f"^{path}:2: malformed JSON"):
        read_source("s", path)  # fail mode stops at the first bad record


@pytest.mark.parametrize(
    "setup, kwargs, message",
    [
        (lambda p: None, {}, "{path}: no such file or directory"),
        (lambda p: (p.mkdir(), (p / "x.txt").write_text("hi"), (p / ".h.jsonl").write_text("")), {},
         "{path}: no .json/.jsonl/.csv/.parquet files"),
        (lambda p: p.write_text("hi"), {}, "{path}: unsupported file type '' (expected .json, .jsonl, .csv or .parquet)"),
        (lambda p: p.write_text(""), {"format": "yaml"},
         "source 's': unknown format 'yaml' (expected auto, alpaca, sharegpt, messages)"),
        (lambda p: p.write_text(""), {"on_bad_record": "ignore"},
         "source 's': on_bad_record must be fail or skip, got 'ignore'"),
    ],
    ids=["missing", "no-data-files", "unsupported-type", "unknown-format", "unknown-on-bad-record"],
)
def test_user_errors(tmp_path, setup, kwargs, message):
    path = tmp_path / "data"
    setup(path)
    with pytest.raises(UserError) as raised:
        read_source("s", path, **kwargs)
    assert str(raised.value) == message.format(path=path)


def test_a_saved_dataset_folder_and_an_hf_dataset_are_sources(tmp_path, monkeypatch):
    """`save_to_disk` folders and `hf:NAME[:SPLIT]` (a local dataset folder here: no hub is reachable)
    read like files, each row with its row number as provenance."""
    import datasets

    from medsft.data.readers import read_source
    from medsft.errors import UserError

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    rows = [{"instruction": f"q{i}", "input": "", "output": f"a{i}"} for i in range(5)] + [{"instruction": "x", "input": "", "output": None}]
    saved = tmp_path / "saved"
    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows)}).save_to_disk(str(saved))
    records = read_source("med", saved, on_bad_record="skip")
    assert len(records.conversations) == 5 and len(records.rejects) == 1 and records.read == 6
    assert str(records.conversations[2].provenance) == f"{saved}[train]:3"

    folder = tmp_path / "hub-like"
    folder.mkdir()
    (folder / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows[:5]) + "\n", encoding="utf-8")
    (folder / "test.jsonl").write_text(json.dumps(rows[0]) + "\n", encoding="utf-8")
    from_hub = read_source("med", f"hf:{folder}")
    assert [c.messages[-1].content for c in from_hub.conversations] == [f"a{i}" for i in range(5)]
    assert len(read_source("med", f"hf:{folder}:test").conversations) == 1
    with pytest.raises(UserError, match="cannot load the dataset"):
        read_source("med", f"hf:{folder}:nosuchsplit")


def _write_source(kind: str, folder, rows: list[dict]):
    """rows as a source of this kind: its path."""
    if kind == "saved":
        import datasets

        datasets.Dataset.from_list(rows).save_to_disk(str(folder / "saved"))
        return folder / "saved"
    path = folder / f"data.{kind}"
    if kind == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    elif kind == "json":
        path.write_text(json.dumps(rows, indent=2), encoding="utf-8")
    elif kind == "csv":
        with open(path, "w", newline="", encoding="utf-8") as out:
            writer = csv.DictWriter(out, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    else:
        pq.write_table(pa.Table.from_pylist(rows), path)
    return path


@pytest.mark.parametrize("kind", ["jsonl", "json", "csv", "parquet", "saved"])
def test_original_texts_are_the_text_a_reject_keeps(tmp_path, kind):
    """A record found unusable after reading (too long) is read again for its reject: the same text,
    file and line that the reject of a record refused while reading holds."""
    from medsft.data.readers import original_texts

    rows = [{"instruction": f"q{i}", "input": "", "output": f"a{i}\nsecond line"} for i in range(6)]
    rows[3]["output"] = ""  # refused while reading
    path = _write_source(kind, tmp_path, rows)
    records = read_source("med", path, on_bad_record="skip")
    (reject,) = records.rejects
    wanted = [reject.provenance, records.conversations[3].provenance]  # rows[4]
    texts = original_texts(path, wanted)
    assert texts[reject.provenance] == reject.raw and set(texts) == set(wanted)
    assert '"a4' in texts[wanted[1]] and texts[wanted[1]] != reject.raw
    assert original_texts(path, []) == {}
