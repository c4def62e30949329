"""Scoring answers against keys: exact answer match, key-fact presence."""

from __future__ import annotations

import re
import unicodedata

_ANSWER = {
    "en": re.compile(r"The answer is (.+?)\.(?:\s|$)"),
    "zh": re.compile(r"答案是(.+?)。"),
}


def normalize(text: str) -> str:
    """Case, width and punctuation folded, spaces collapsed: for fact matching, not for exact match."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = "".join(" " if unicodedata.category(c).startswith("P") else c for c in text)
    return " ".join(text.split())


def extract_answer(text: str, language: str = "en") -> str | None:
    """The KEY of 'The answer is KEY.' (or '答案是KEY。'), or None when the answer has no such sentence."""
    match = _ANSWER[language].search(text)
    return match.group(1).strip() if match else None


def exact_match(text: str, key: str, language: str = "en") -> bool:
    answer = extract_answer(text, language)
    return answer is not None and answer == key


def contains_fact(text: str, key: str) -> bool:
    """The key fact appears in the answer (after normalization)."""
    needle = normalize(key)
    return bool(needle) and needle in normalize(text)
