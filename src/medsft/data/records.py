"""The one record shape every reader produces: a conversation with its provenance."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass, field

# Roles after normalization. `observation` (a tool's output) sits on the user side of the chat,
# `function_call` (the model calling a tool) on the assistant side and is supervised like an answer.
USER_SIDE = ("user", "observation")
ASSISTANT_SIDE = ("assistant", "function_call")
ROLES = USER_SIDE + ASSISTANT_SIDE


@dataclass(frozen=True)
class Message:
    role: str  # one of ROLES
    content: str


# A function_call turn's content is the call as JSON: one {"name", "arguments"} object, or a list of them
# for several calls in one turn (as LLaMA-Factory writes them). Text the assistant wrote before its calls
# (an OpenAI message with both content and tool_calls, or its reasoning) comes first and the calls' JSON is
# then the last line; the newline before it is the one the templates write between text and calls.


def function_call_content(text: str, calls: list[dict]) -> str:
    """The function_call turn of `calls` ({"name", "arguments"} each), after `text` when it has any."""
    body = json.dumps(calls[0] if len(calls) == 1 else calls, ensure_ascii=False)  # one line: no raw newline
    if not text.strip():
        return body
    return f"{text}{body}" if text.endswith("\n") else f"{text}\n{body}"


def split_calls(content: str) -> tuple[str, list[tuple[str, object]]] | None:
    """(text before the calls, [(name, arguments), ...]) of a function_call turn, or None when it holds no
    call JSON. The arguments may be written as JSON text ("arguments" or Llama's "parameters")."""
    calls = _calls(content)
    if calls is not None:
        return "", calls
    text, newline, last = content.rpartition("\n")
    calls = _calls(last) if newline else None
    return None if calls is None else (text, calls)


def _calls(text: str) -> list[tuple[str, object]] | None:
    try:
        parsed = json.loads(text)
    except (ValueError, RecursionError):
        return None
    items = parsed if isinstance(parsed, list) else [parsed]
    if not items or not all(isinstance(item, dict) and "name" in item for item in items):
        return None
    return [(item["name"], _arguments(item.get("arguments", item.get("parameters", {})))) for item in items]


def _arguments(arguments: object) -> object:
    if isinstance(arguments, str):
        try:
            return json.loads(arguments)
        except (ValueError, RecursionError):
            return arguments
    return arguments


@dataclass(frozen=True)
class Provenance:
    file: str
    line: int  # 1-based line where the record starts (row number for Parquet)

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True)
class Conversation:
    """A chat: optional system prompt and tools, then user/assistant turns that alternate."""

    messages: tuple[Message, ...]
    system: str | None = None
    tools: str | None = None  # tool schema text, as ShareGPT's `tools` field carries it
    source: str = ""
    provenance: Provenance | None = None
    trimmed: bool = False  # the file's record ended on an unanswered user turn, which was dropped
    augmenter: str | None = None  # made by this augmenter from the record at `provenance`
    split_key: str | None = None  # the content key of the record as read, when its answer was regenerated

    def to_json(self) -> dict:
        """The normalized form written by `data mix` (OpenAI-messages layout plus source and provenance)."""
        messages = []
        if self.system is not None:
            messages.append({"role": "system", "content": self.system})
        messages += [{"role": m.role, "content": m.content} for m in self.messages]
        out: dict = {"messages": messages}
        if self.tools is not None:
            out["tools"] = self.tools
        out["source"] = self.source
        if self.provenance is not None:
            out["file"], out["line"] = self.provenance.file, self.provenance.line
        return out

    @property
    def content_key(self) -> str:
        """Stable hash of what the model sees (not where it came from): duplicates share it."""
        payload = json.dumps(
            [self.system, self.tools, [(m.role, m.content) for m in self.messages]],
            ensure_ascii=False,
        )
        return hashlib.sha1(payload.encode("utf-8")).hexdigest()

    def answers(self) -> list[str]:
        return [m.content for m in self.messages if m.role in ASSISTANT_SIDE]

    def prompts(self) -> list[str]:
        return [m.content for m in self.messages if m.role in USER_SIDE]


@dataclass(frozen=True)
class Reject:
    """A record that could not be used, with the reason and the raw text so nothing is lost."""

    source: str
    provenance: Provenance
    reason: str
    raw: str = ""

    def __str__(self) -> str:
        return f"{self.provenance}: {self.reason}"

    def to_json(self) -> dict:
        return {
            "source": self.source,
            "file": self.provenance.file,
            "line": self.provenance.line,
            "reason": self.reason,
            "raw": self.raw,
        }


def check_turns(messages: list[Message], first_number: int = 1) -> str | None:
    """Why these turns cannot be a chat to train on, or None when they can.

    A trainable chat starts on the user side, alternates sides, ends with an answer, and has no
    empty message. `first_number` is the number the file gives the first turn (2 after a system message).
    """
    if not messages:
        return "no messages"
    for i, m in enumerate(messages, start=first_number):
        if m.role not in ROLES:
            return f"message {i}: unknown role {m.role!r}"
        if not m.content.strip():
            return f"message {i} ({m.role}): empty content"
    for i, m in enumerate(messages):
        expected = USER_SIDE if i % 2 == 0 else ASSISTANT_SIDE
        if m.role not in expected:
            side = "a user" if i % 2 == 0 else "an assistant"
            return (f"message {i + first_number}: role {m.role!r} where {side} turn must come "
                    "(turns must alternate, user first)")
    if messages[-1].role not in ASSISTANT_SIDE:
        return "the last message is not an answer: nothing to supervise"
    return None


@dataclass
class SourceRecords:
    """What reading one source gave: the usable conversations and the rejects, in file order."""

    name: str
    conversations: list[Conversation] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    files: list[str] = field(default_factory=list)

    @property
    def read(self) -> int:
        return len(self.conversations) + len(self.rejects)


PLACEHOLDER = re.compile(r"\{\{\s*[A-Za-z_][A-Za-z0-9_]*\s*\}\}")


def has_placeholder(conversation: Conversation) -> bool:
    """A `{{name}}`-style template slot left in the text (identity data ships them to be filled in)."""
    texts = [m.content for m in conversation.messages] + [conversation.system or ""]
    return any(PLACEHOLDER.search(t) for t in texts)


def replace_text(conversation: Conversation, replacements: dict[str, str]) -> Conversation:
    """The conversation with each key replaced by its value in every message and the system prompt."""
    def apply(text: str) -> str:
        for old, new in replacements.items():
            text = text.replace(old, new)
        return text

    return dataclasses.replace(
        conversation,
        messages=tuple(Message(m.role, apply(m.content)) for m in conversation.messages),
        system=apply(conversation.system) if conversation.system is not None else None,
    )
