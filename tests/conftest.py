"""Shared fixtures: a tiny Llama and tokenizer built locally, loaded through from_pretrained."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    from sample_data import sample_texts
    from medsft.lab.tiny import build_tiny_model

    folder = tmp_path_factory.mktemp("tiny-model")
    build_tiny_model(folder, sample_texts(), vocab_size=512)
    return folder


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Each test gets its own encoding cache, so cache hits are never inherited."""
    monkeypatch.setenv("MEDSFT_CACHE", str(tmp_path / "cache"))


def write_jsonl(path: Path, records: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for r in records:
            f.write((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n")
    return path
