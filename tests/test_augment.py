"""Augmentation never changes a fact: answers copied or reordered, numbers untouched, provenance
kept, duplicates removed and counted, deterministic by seed, validation split before augmenting."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest
import yaml

from conftest import write_jsonl
from medsft.cli import main
from medsft.data.augment import RULE_AUGMENTERS, AugmentSettings, augment
from medsft.data.rewrite import fact_check
from medsft.data.readers import read_source
from medsft.data.records import Conversation, Message, Provenance

QA = [
    ("What is the main symptom of Varnex fever?", "Varnex fever causes a blue rash."),
    ("Which drug treats Varnex fever?", "Varnex fever is treated with quelpram."),
    ("What is the dose of quelpram?", "Quelpram: 25 mg twice daily."),
    ("Who should not take quelpram?", "Avoid quelpram in people with asthma."),
    ("What is the main symptom of Doltra palsy?", "Doltra palsy causes night sweats."),
    ("Which drug treats Doltra palsy?", "Doltra palsy is treated with sormex."),
    ("What is the dose of sormex?", "Sormex: 40 mg once daily."),
    ("布洛芬可以空腹吃吗？", "布洛芬对胃有刺激，最好饭后服用，每次200毫克。"),
    ("高血压吃什么药", "常用氨氯地平，每日5毫克，需遵医嘱。"),
]
PASSAGE = ("Tell me about Varnex fever.", "Varnex fever is a rare disease. Its main symptom is a blue rash. "
           "Varnex fever is treated with quelpram. The adult dose of quelpram is 25 mg twice daily.")


def conversations() -> list[Conversation]:
    pairs = QA + [PASSAGE]
    return [Conversation((Message("user", q), Message("assistant", a)), source="medical",
                         provenance=Provenance("med.jsonl", i + 1)) for i, (q, a) in enumerate(pairs)]


def numbers(text: str) -> list[str]:
    return sorted(re.findall(r"\d+(?:\.\d+)?", text))


def sentences(text: str) -> set[str]:
    return {s.strip() for s in re.findall(r"[^.!?。！？]+[.!?。！？]+", text)}


ALL = AugmentSettings(RULE_AUGMENTERS, per_record=4, seed=0)


def test_no_augmented_record_changes_a_fact():
    originals = conversations()
    made, report = augment(originals, ALL)
    by_place = {c.provenance: c for c in originals}
    all_answer_sentences = set().union(*(sentences(c.messages[1].content) for c in originals))
    pairs = {(c.messages[0].content, c.messages[1].content) for c in originals}
    assert {c.augmenter for c in made} == set(RULE_AUGMENTERS)
    for record in made:
        origin = by_place[record.provenance]  # every record names the record it came from
        answer = record.messages[-1].content
        if record.augmenter in ("rephrase", "synonyms"):
            assert answer == origin.messages[-1].content  # the answer is copied, verbatim
            assert numbers(record.messages[0].content) == numbers(origin.messages[0].content)
            assert record.messages[0].content != origin.messages[0].content
        elif record.augmenter == "restate":  # the same question; the answer's numbers and words kept
            assert record.messages[0] == origin.messages[0]
            assert numbers(answer) == numbers(origin.messages[1].content)
            assert fact_check(origin.messages[1].content, answer,
                              allowed={w.lower() for w in record.messages[0].content.split()}) is None, answer
        elif record.augmenter == "multiturn":  # exchanges that exist, questions asked as follow-ups
            questions, answers = record.messages[0::2], record.messages[1::2]
            assert len(answers) >= 2
            for number, (q, a) in enumerate(zip(questions, answers)):
                match = [p for p in pairs if p[1] == a.content and (p[0] == q.content if number == 0
                                                                   else q.content.lower().endswith(p[0].lower()))]
                assert match, (q.content, a.content)
        else:  # reordered sentences of answers that exist, nothing else
            assert sentences(answer) <= all_answer_sentences, answer
    assert report.records_out == len(originals) + len(made)
    assert all(report.per_augmenter[a]["kept"] <= report.per_augmenter[a]["made"] for a in report.per_augmenter)


def test_rephrasing_keeps_the_medical_terms_in_english_and_chinese():
    made, _ = augment(conversations(), AugmentSettings(("rephrase",), per_record=8, seed=1))
    english = [c.messages[0].content for c in made if c.messages[1].content == "Quelpram: 25 mg twice daily."]
    chinese = [c.messages[0].content for c in made if c.messages[1].content.startswith("布洛芬")]
    assert len(english) >= 4 and all("dose of quelpram" in q for q in english)
    assert len(chinese) >= 4 and all("布洛芬可以空腹吃吗" in q for q in chinese)
    assert len(set(english)) == len(english)


def test_statements_join_facts_about_one_subject_and_shuffle_keeps_back_references():
    made, _ = augment(conversations(), ALL)
    statements = [c for c in made if c.augmenter == "statements"]
    varnex = [c for c in statements if "Varnex fever" in c.messages[0].content]
    assert varnex, [c.messages[0].content for c in statements]
    for record in varnex:  # the disease's facts and its drug's together, nothing about the other disease
        assert "Varnex fever causes a blue rash." in record.messages[1].content
        assert "Quelpram: 25 mg twice daily." in record.messages[1].content
        assert "sormex" not in record.messages[1].content.lower()
    for record in (c for c in made if c.augmenter == "shuffle"):
        text = record.messages[1].content
        assert "Varnex fever is a rare disease. Its main symptom is a blue rash." in text  # "Its" stays put


def test_duplicates_are_removed_and_counted():
    originals = conversations()
    twice = originals + [Conversation(c.messages, source=c.source, provenance=Provenance("copy.jsonl", 1))
                         for c in originals[:3]]
    made, report = augment(twice, AugmentSettings(("rephrase",), per_record=4, seed=0))
    keys = [c.content_key for c in made]
    assert len(keys) == len(set(keys))
    assert not set(keys) & {c.content_key for c in originals}
    assert report.exact_duplicates >= 3 * 4  # the copies' rewrites are the originals' rewrites


def test_augmentation_is_deterministic_by_seed():
    first, _ = augment(conversations(), ALL)
    again, _ = augment(conversations(), ALL)
    other, _ = augment(conversations(), AugmentSettings(ALL.augmenters, ALL.per_record, seed=7))
    assert [c.messages for c in first] == [c.messages for c in again]
    assert [c.messages for c in first] != [c.messages for c in other]


def test_user_rules_extend_rephrasing(tmp_path):
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump({"en": [[r"^What is the dose of (.+)$", ["How many mg of {1} per dose"]]]}),
                     encoding="utf-8")
    made, _ = augment(conversations(), AugmentSettings(("rephrase",), per_record=20, seed=0, rules_file=str(rules)))
    assert "How many mg of quelpram per dose" in [c.messages[0].content for c in made]


def test_augment_command_writes_counts_and_never_touches_its_input(tmp_path, capsys):
    source = write_jsonl(tmp_path / "medical.jsonl", [{"instruction": q, "output": a} for q, a in QA + [PASSAGE]])
    before = hashlib.sha256(source.read_bytes()).hexdigest()
    out = tmp_path / "augmented.jsonl"
    assert main(["augment", str(source), "--out", str(out), "--per-record", "3"]) == 0
    printed = capsys.readouterr().out
    assert "rephrase" in printed and "distinct_2" in printed and "duplicates removed" in printed
    assert hashlib.sha256(source.read_bytes()).hexdigest() == before
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["augmenter"] for r in rows[:len(QA) + 1]] == [None] * (len(QA) + 1)  # the originals first
    assert all(r["file"] == str(source) and r["line"] >= 1 for r in rows)
    report = json.loads((tmp_path / "augmented.report.json").read_text())
    assert report["records_out"] == len(rows)
    assert read_source("a", out).read == len(rows)  # the output is itself training data
    assert main(["augment", str(source), "--out", str(source)]) == 2  # never over an input
    capsys.readouterr()
    assert main(["augment", str(source), "--out", str(out), "--augmenters", "magic"]) == 2
    assert "medsft: error: --augmenters: unknown 'magic'" in capsys.readouterr().err  # the flag, as typed
    assert main(["augment", str(source), "--out", str(out), "--augmenters", "rewrite"]) == 2
    assert "--rewrite-url / --rewrite-model-path: the rewrite augmenter needs a model: an OpenAI-compatible endpoint " \
           "(--rewrite-url and --rewrite-model)" in capsys.readouterr().err
    assert main(["augment", str(source), "--out", str(out), "--per-record", "0"]) == 2
    assert "--per-record: must be at least 1" in capsys.readouterr().err


def test_validation_records_are_split_off_before_augmentation(tmp_path, tiny_model_dir, tiny_tokenizer):
    from medsft.data.prepare import prepare_data
    from medsft.data.templates import get_template
    from medsft.recipe import parse_recipe

    medical = write_jsonl(tmp_path / "medical.jsonl",
                          [{"instruction": f"What is the dose of drug{i}x?", "output": f"Drug{i}x: {i} mg daily."}
                           for i in range(60)])
    tree = {"model": {"name_or_path": str(tiny_model_dir), "template": "qwen"},
            "data": {"sources": [{"name": "medical", "path": str(medical),
                                  "augment": {"augmenters": ["rephrase"], "per_record": 2}}],
                     "val_fraction": 0.2, "max_length": 256},
            "output_dir": str(tmp_path / "run")}
    recipe = parse_recipe(tree, "test")
    prepared = prepare_data(recipe, tiny_tokenizer, get_template("qwen", tiny_tokenizer))
    conversations = prepared.conversations
    validation = [conversations[i] for i in prepared.val_pools["medical"]]
    augmented = [conversations[i] for i in prepared.train_pools["medical"] if conversations[i].augmenter]
    assert validation and augmented
    assert not {c.provenance for c in validation} & {c.provenance for c in augmented}
    assert all(conversations[i].augmenter is None for i in prepared.val_pools["medical"])
    source = prepared.manifest["sources"]["medical"]
    assert source["read"] == 60 and source["read"] == source["used"] + source["rejected"]
    assert source["augmented_used"] == len(augmented) == source["augmentation"]["per_augmenter"]["rephrase"]["kept"]


def test_restatement_names_the_subject_and_copies_the_value():
    made, _ = augment(conversations(), AugmentSettings(("restate",), per_record=4))
    answers = {c.messages[1].content for c in made}
    assert "The dose of quelpram is 25 mg twice daily." in answers
    assert "The dose of sormex is 40 mg once daily." in answers
    # answers that already name their subject ("Varnex fever causes ...") are full sentences: left alone
    assert {c.messages[0].content for c in made} == {"What is the dose of quelpram?", "What is the dose of sormex?"}
    chinese = [Conversation((Message("user", "阿莫西林的剂量是多少？"), Message("assistant", "阿莫西林：每次500毫克。")),
                            source="m", provenance=Provenance("zh.jsonl", 1))]
    made, _ = augment(chinese, AugmentSettings(("restate",)))
    assert [c.messages[1].content for c in made] == ["阿莫西林的剂量是每次500毫克。"]


def test_synonyms_swap_words_in_questions_never_in_numbers_or_names(tmp_path):
    records = [Conversation((Message("user", q), Message("assistant", a)), source="m", provenance=Provenance("f", i))
               for i, (q, a) in enumerate([
                   ("What is the main symptom of Tiredness syndrome?", "Tiredness syndrome causes a blue rash."),
                   ("What dose of drug is used for 10 mg tablets of aspirin?", "One tablet."),
                   ("高血压患者的药物剂量是多少？", "遵医嘱。")])]
    made, _ = augment(records, AugmentSettings(("synonyms",), per_record=8))
    questions = [c.messages[0].content for c in made]
    assert questions and all(c.messages[1] == records[c.provenance.line].messages[1] for c in made)
    assert all("Tiredness syndrome" in q for q in questions if "syndrome" in q)  # a name is never touched
    assert any("sign" in q for q in questions) and any("medication" in q or "medicine" in q for q in questions)
    assert all("10 mg" in q for q in questions if "aspirin" in q)
    assert any("病人" in q or "用量" in q or "药品" in q for q in questions)
    extra = tmp_path / "synonyms.yaml"
    extra.write_text(yaml.safe_dump({"en": [["blue rash", "azure rash"], ["What is", "Tell me"]]}), encoding="utf-8")
    made, _ = augment(records[:1], AugmentSettings(("synonyms",), per_record=8, synonyms_file=str(extra)))
    assert any(q.messages[0].content.startswith("Tell me") for q in made)
    bad = tmp_path / "bad.yaml"
    bad.write_text("en: [lonely]\n", encoding="utf-8")
    from medsft.data.augment import check_settings
    from medsft.errors import UserError

    with pytest.raises(UserError, match="bad.yaml: expected"):
        check_settings(AugmentSettings(("synonyms",), synonyms_file=str(bad)))


def test_the_fact_check_rejects_changed_numbers_units_names_and_negations():
    original = "Avoid quelpram in people with asthma; the dose is 25 mg twice daily."
    assert fact_check(original, "People with asthma should avoid quelpram; give 25 mg twice daily.") is None
    assert "number" in fact_check(original, "Avoid quelpram in people with asthma; the dose is 50 mg twice daily.")
    assert "number" in fact_check(original, "Avoid quelpram in people with asthma; the dose is 25 g twice daily.")
    assert "number" in fact_check(original, "Avoid quelpram in people with asthma; the dose is 25 mg.")
    assert "name dropped" in fact_check(original, "Avoid it in people with asthma; the dose is 25 mg twice daily.",
                                        required={"quelpram"})
    assert "name added" in fact_check(original, "Avoid quelpram and Ibuprofen in asthma; 25 mg twice daily.")
    assert "negation" in fact_check("Do not take quelpram when pregnant.", "Take quelpram when pregnant.")
    assert fact_check("Do not take quelpram when pregnant.", "Quelpram must not be taken in pregnancy.") is None
    assert "negation" in fact_check("孕妇不能用阿莫西林。", "孕妇可以用阿莫西林。")
    assert fact_check("x", "x") == "unchanged"


def test_model_rewrites_are_kept_only_when_they_pass_the_fact_check(tmp_path, capsys):
    def rewriter(prompts):  # a scripted "model": one faithful rewrite, one that changes a dose, one that drops a name
        replies = []
        for _, user in prompts:
            if "Terse answer: Quelpram: 25 mg twice daily." in user:
                replies.append("The dose of quelpram is 25 mg twice daily.")
            elif "dose of quelpram" in user:
                replies += ["How much quelpram does an adult take?"]
            elif "main symptom of Varnex fever" in user:
                replies.append("What is the main symptom of this disease?")
            elif "Terse answer" not in user and "quelpram" in user and "Who" in user:
                replies.append("Quelpram should not be taken by people with asthma.")  # an answer, not a question
            else:
                replies.append("Take 50 mg of it.")
        return replies

    settings = AugmentSettings(("rewrite",), per_record=1, rewrite_with=rewriter, rewrite=object())
    made, report = augment(conversations()[:4], settings)
    assert [(c.messages[0].content, c.messages[1].content) for c in made] == [
        ("How much quelpram does an adult take?", "Quelpram: 25 mg twice daily."),
        ("What is the dose of quelpram?", "The dose of quelpram is 25 mg twice daily.")]
    reasons = {r["original"]: r["reason"] for r in report.rewrite_rejects}
    assert reasons["What is the main symptom of Varnex fever?"].startswith("name dropped")
    assert reasons["Which drug treats Varnex fever?"].startswith("number")
    assert reasons["Who should not take quelpram?"].startswith("not a question")
    assert report.per_augmenter["rewrite"] == {"made": 2, "rejected": 3, "kept": 2}


def test_augmentation_is_cached_by_content(tmp_path, tiny_tokenizer):
    from medsft.data.augment import augment_cached

    records = conversations()
    first, report, hit = augment_cached(records, ALL, records, tmp_path)
    again, report_again, hit_again = augment_cached(records, ALL, records, tmp_path)
    assert (hit, hit_again) == (False, True)
    assert [(c.messages, c.augmenter, c.provenance) for c in again] == [(c.messages, c.augmenter, c.provenance)
                                                                         for c in first]
    assert report_again.to_json() == report.to_json()
    changed = records[:-1] + [Conversation(records[-1].messages[:1] + (Message("assistant", "Other."),),
                                           source="medical", provenance=records[-1].provenance)]
    assert augment_cached(changed, ALL, changed, tmp_path)[2] is False  # a changed record: a new key
    assert augment_cached(records, AugmentSettings(ALL.augmenters, 2), records, tmp_path)[2] is False
