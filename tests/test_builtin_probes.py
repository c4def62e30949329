"""The built-in general probe set: shape, balance, and keys that agree with their references."""

import pytest

from medsft.monitor.builtin_probes import GENERAL_PROBES, general_probes
from medsft.monitor.score import contains_fact, normalize

CATEGORIES = {"instruction", "explanation", "list", "reasoning", "knowledge", "writing"}
FIELDS = {"id", "language", "category", "question", "key", "reference"}


def test_probe_set_is_large_and_balanced():
    assert len(GENERAL_PROBES) >= 70
    ids = [p["id"] for p in GENERAL_PROBES]
    assert len(ids) == len(set(ids))
    by_language = {lang: [p for p in GENERAL_PROBES if p["language"] == lang] for lang in ("en", "zh")}
    assert all(len(probes) >= 30 for probes in by_language.values())
    assert {p["language"] for p in GENERAL_PROBES} == {"en", "zh"}
    keyed = [p for p in GENERAL_PROBES if p["key"] is not None]
    assert len(keyed) >= 30
    assert {p["language"] for p in keyed} == {"en", "zh"}


@pytest.mark.parametrize("probe", GENERAL_PROBES, ids=lambda p: p["id"])
def test_probe_is_well_formed(probe):
    assert set(probe) == FIELDS
    assert probe["id"].startswith(probe["language"] + "-")
    assert probe["category"] in CATEGORIES
    assert probe["question"].strip() and probe["reference"].strip()


@pytest.mark.parametrize("probe", [p for p in GENERAL_PROBES if p["key"] is not None], ids=lambda p: p["id"])
def test_key_is_in_its_reference_and_not_in_its_question(probe):
    key = probe["key"]
    assert isinstance(key, str) and normalize(key)
    # the reference answer is a correct answer, so the scorer must accept it
    assert contains_fact(probe["reference"], key)
    assert normalize(key) in normalize(probe["reference"])
    # an answer that only repeats the question must not score
    assert not contains_fact(probe["question"], key)


def test_general_probes_filters_by_language_and_returns_copies():
    everything = general_probes()
    assert everything == GENERAL_PROBES
    for lang in ("en", "zh"):
        selected = general_probes(lang)
        assert selected and all(p["language"] == lang for p in selected)
        assert len(selected) == sum(p["language"] == lang for p in GENERAL_PROBES)
    everything[0]["question"] = "changed"
    assert GENERAL_PROBES[0]["question"] != "changed"


@pytest.mark.parametrize("language", ["fr", "EN", ""])
def test_general_probes_rejects_unknown_language(language):
    with pytest.raises(ValueError, match="language"):
        general_probes(language)
