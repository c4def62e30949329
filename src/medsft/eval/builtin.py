"""The built-in general probe sets: everyday chat prompts in English and Chinese.

They are package data (`eval/data/general-en.jsonl`, `general-zh.jsonl`), read by the same
reader as a user's generation probe files. Each line: id ("en-001"), language, category
(instruction, explanation, list, reasoning, knowledge, writing), question, key (the short
string a correct answer must contain, or null for open prompts) and reference (a complete
answer of realistic length). Keys never appear in their own question, and numeric keys stay
below 1000 so that digit grouping in an answer cannot break the match.
"""

from __future__ import annotations

from pathlib import Path

from medsft.eval.probe_files import load_probe_file
from medsft.eval.probes import Probe

LANGUAGES = ("en", "zh")
FOLDER = Path(__file__).with_name("data")


def builtin_file(language: str) -> Path:
    return FOLDER / f"general-{language}.jsonl"


def general_probes(language: str | None = None) -> list[Probe]:
    """The built-in general probes, English then Chinese, or only those in `language`."""
    if language is not None and language not in LANGUAGES:
        raise ValueError(f"unknown probe language {language!r}: expected one of {', '.join(LANGUAGES)}")
    chosen = LANGUAGES if language is None else (language,)
    return [probe for lang in chosen for probe in load_probe_file(builtin_file(lang), "generation").items]
