"""The built-in general probe set: shape, balance, and keys that agree with their references."""

import json

import pytest

from medsft.eval.builtin import builtin_file, general_probes
from medsft.eval.matching import contains_fact, normalize
from medsft.eval.probes import Probe

CATEGORIES = {"instruction", "explanation", "list", "reasoning", "knowledge", "writing"}
FIELDS = {"id", "language", "category", "question", "key", "reference"}
# The package data as written, line by line (the loader below reads it through the probe-file reader).
RAW = [json.loads(line) for lang in ("en", "zh") for line in builtin_file(lang).read_text(encoding="utf-8").splitlines()]


def test_probe_set_is_large_and_balanced():
    assert len(RAW) >= 70
    ids = [p["id"] for p in RAW]
    assert len(ids) == len(set(ids))
    by_language = {lang: [p for p in RAW if p["language"] == lang] for lang in ("en", "zh")}
    assert all(len(probes) >= 30 for probes in by_language.values())
    keyed = [p for p in RAW if p["key"] is not None]
    assert len(keyed) >= 30
    assert {p["language"] for p in keyed} == {"en", "zh"}


@pytest.mark.parametrize("probe", RAW, ids=lambda p: p["id"])
def test_probe_is_well_formed(probe):
    assert set(probe) == FIELDS
    assert probe["id"].startswith(probe["language"] + "-")
    assert probe["category"] in CATEGORIES
    assert probe["question"].strip() and probe["reference"].strip()


@pytest.mark.parametrize("language", ["en", "zh"])
def test_each_file_holds_only_its_language(language):
    assert {p["language"] for p in RAW if builtin_file(language).read_text(encoding="utf-8").count(p["id"])} \
        == {language}


@pytest.mark.parametrize("probe", [p for p in RAW if p["key"] is not None], ids=lambda p: p["id"])
def test_key_is_in_its_reference_and_not_in_its_question(probe):
    key = probe["key"]
    assert isinstance(key, str) and normalize(key)
    # the reference answer is a correct answer, so the scorer must accept it
    assert contains_fact(probe["reference"], key)
    assert normalize(key) in normalize(probe["reference"])
    # an answer that only repeats the question must not score
    assert not contains_fact(probe["question"], key)


def test_general_probes_are_read_as_probes_in_file_order():
    everything = general_probes()
    assert everything == [Probe(p["question"], p["key"], p["reference"], p["category"]) for p in RAW]
    for lang in ("en", "zh"):
        selected = general_probes(lang)
        assert selected == [Probe(p["question"], p["key"], p["reference"], p["category"])
                            for p in RAW if p["language"] == lang]


@pytest.mark.parametrize("language", ["fr", "EN", ""])
def test_general_probes_rejects_unknown_language(language):
    with pytest.raises(ValueError, match="language"):
        general_probes(language)
