"""The built-in sample has the length gap the demo is about: terse medical, long general."""

import json
import re
import statistics

from sample_data import GENERAL, MEDICAL, sample_texts, write_sample

CJK = re.compile(r"[\u4e00-\u9fff]")


def _read(tmp_path):
    paths = write_sample(tmp_path)
    lines = paths["medical"].read_text(encoding="utf-8").splitlines()
    medical = [json.loads(line) for line in lines]
    general = json.loads(paths["general"].read_text(encoding="utf-8"))
    return paths, medical, general


def _general_answers(general):
    return [turn["value"] for conv in general for turn in conv["conversations"] if turn["from"] == "gpt"]


def test_write_sample_round_trips(tmp_path):
    paths, medical, general = _read(tmp_path)
    assert paths == {"medical": tmp_path / "medical.jsonl", "general": tmp_path / "general.json"}
    assert medical == MEDICAL and len(medical) >= 40
    assert general == GENERAL and len(general) >= 30
    # Human-readable files: Chinese is written as characters, not \u escapes.
    assert "高血压" in paths["medical"].read_text(encoding="utf-8")
    assert "\\u" not in paths["general"].read_text(encoding="utf-8")


def test_record_layouts(tmp_path):
    _, medical, general = _read(tmp_path)
    assert all(set(r) == {"instruction", "input", "output"} and r["instruction"] and r["output"] for r in medical)
    for conv in general:
        turns = conv["conversations"]
        assert [t["from"] for t in turns] == ["human", "gpt"] * (len(turns) // 2) and len(turns) % 2 == 0
    assert sum(len(c["conversations"]) == 4 for c in general) >= 3  # a few two-exchange chats


def test_general_answers_are_much_longer(tmp_path):
    _, medical, general = _read(tmp_path)
    medical_median = statistics.median(len(r["output"]) for r in medical)
    general_median = statistics.median(len(a) for a in _general_answers(general))
    assert general_median >= 2.5 * medical_median
    # The gap holds within each language too, so it is not an artefact of the zh/en mix.
    for is_zh in (True, False):
        med = statistics.median(len(r["output"]) for r in medical if bool(CJK.search(r["output"])) == is_zh)
        gen = statistics.median(len(a) for a in _general_answers(general) if bool(CJK.search(a)) == is_zh)
        assert gen >= 2.5 * med


def test_both_languages_in_each_source(tmp_path):
    _, medical, general = _read(tmp_path)
    for records in ([json.dumps(r, ensure_ascii=False) for r in medical],
                    [json.dumps(c, ensure_ascii=False) for c in general]):  # fmt: skip
        chinese = sum(bool(CJK.search(r)) for r in records)
        english = sum(r.isascii() for r in records)
        assert chinese + english == len(records)
        assert 0.35 <= chinese / len(records) <= 0.65


def test_sample_texts_cover_everything():
    texts = sample_texts()
    assert all(texts) and MEDICAL[0]["output"] in texts and GENERAL[-1]["conversations"][-1]["value"] in texts
    assert len(texts) == sum(2 + bool(r["input"]) for r in MEDICAL) + sum(len(c["conversations"]) for c in GENERAL)
