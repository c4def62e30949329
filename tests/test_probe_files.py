"""Probe files in the layouts practitioners have (MedQA, C-Eval, CMExam, ...) and text metrics."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from medsft.errors import UserError
from medsft.eval.probe_files import ProbeFile, choice_prompt, detect_kind, load_probe_file
from medsft.eval.probes import ChoiceProbe, KnowledgeProbe, Probe, score_knowledge
from medsft.eval.textmetrics import distinct_n, fact_recall, rouge_l, tokens


def write_text(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def write_jsonl(path: Path, records: list) -> Path:
    return write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def load_error(path: Path, kind: str = "auto") -> str:
    with pytest.raises(UserError) as caught:
        load_probe_file(path, kind)
    return str(caught.value)


def assert_error_at(message: str, path: Path, line: int, reason_part: str) -> None:
    assert "\n" not in message
    assert message.startswith(f"{path}:{line}: "), message
    assert reason_part in message, message


# ---------------------------------------------------------------------------------------------
# Text metrics


def test_tokens_split_cjk_by_character_and_other_text_by_word():
    assert tokens("Take Aspirin, 100mg!") == ["take", "aspirin", "100mg"]
    assert tokens("服用 Aspirin（100mg）。") == ["服", "用", "aspirin", "100mg"]
    assert tokens("ＡＢＣ１２") == ["abc12"]  # full-width folded
    assert tokens("... ,。") == []


def test_rouge_l_identical_and_disjoint():
    assert rouge_l("the patient has a fever", "The patient has a fever.") == 1.0
    assert rouge_l("fever", "cough") == 0.0
    assert rouge_l("发烧", "咳嗽") == 0.0


def test_rouge_l_empty_is_zero():
    assert rouge_l("", "fever") == 0.0
    assert rouge_l("fever", "") == 0.0
    assert rouge_l("!!!", "???") == 0.0


def test_rouge_l_english_partial_by_hand():
    # LCS "the cat on the mat" = 5 of 6 tokens each side: P = R = F = 5/6.
    assert rouge_l("the cat sat on the mat", "the cat is on the mat") == pytest.approx(5 / 6)
    # LCS 3; P = 3/3, R = 3/5; F = 2 * 1 * 0.6 / 1.6 = 0.75.
    assert rouge_l("aspirin reduces fever", "aspirin reduces pain and fever") == pytest.approx(0.75)
    # Order matters (a subsequence, not a bag): LCS of "b a" and "a b" is 1 -> P = R = F = 1/2.
    assert rouge_l("fever aspirin", "aspirin fever") == pytest.approx(0.5)


def test_rouge_l_chinese_partial_by_hand():
    # Character tokens: candidate 6, reference 8 (。 dropped), LCS 6: P = 1, R = 3/4, F = 6/7.
    assert rouge_l("阿司匹林退烧", "阿司匹林可以退烧。") == pytest.approx(6 / 7)
    assert rouge_l("阿司匹林可以退烧。", "阿司匹林退烧") == pytest.approx(6 / 7)  # F1 is symmetric


def test_distinct_n_exact_fractions():
    # bigrams: (a b) (b a) (a b) | (a b) (b c): 3 unique of 5.
    assert distinct_n(["a b a b", "a b c"], n=2) == pytest.approx(3 / 5)
    assert distinct_n(["yes yes yes yes"], n=2) == pytest.approx(1 / 3)
    assert distinct_n(["fever and cough", "rash with itch"], n=2) == 1.0
    assert distinct_n(["头痛头痛"], n=2) == pytest.approx(2 / 3)
    assert distinct_n(["a b a"], n=1) == pytest.approx(2 / 3)


def test_distinct_n_without_ngrams_is_zero_and_ngrams_do_not_cross_texts():
    assert distinct_n([], n=2) == 0.0
    assert distinct_n(["fever", "cough"], n=2) == 0.0  # joined they would make one bigram


def test_fact_recall():
    text = "Take aspirin 100 mg daily; avoid NSAIDs."
    assert fact_recall(text, ["Aspirin", "100 mg", "warfarin"]) == pytest.approx(2 / 3)
    assert fact_recall("每日服用阿司匹林。", ["阿司匹林", "每日"]) == 1.0


def test_score_knowledge():
    probe = KnowledgeProbe("How is aspirin dosed?", ("aspirin", "100 mg"), "aspirin 100 mg daily")
    # answer tokens: take aspirin 100 mg; reference: aspirin 100 mg daily; LCS 3 -> F = 0.75.
    assert score_knowledge("Take Aspirin, 100 mg.", probe) == {
        "fact_recall": 1.0,
        "all_facts": True,
        "rouge_l": pytest.approx(0.75),
    }
    without_reference = KnowledgeProbe("How is aspirin dosed?", ("aspirin", "100 mg", "daily"))
    assert score_knowledge("Aspirin, daily.", without_reference) == {
        "fact_recall": pytest.approx(2 / 3),
        "all_facts": False,
        "rouge_l": None,
    }


# ---------------------------------------------------------------------------------------------
# File layouts


def test_medqa_jsonl_with_options_dict_and_answer_idx(tmp_path):
    path = write_jsonl(tmp_path / "medqa.jsonl", [
        {
            "question": "Which drug is first line for type 2 diabetes?",
            "answer": "Metformin",
            "options": {"A": "Insulin", "B": "Metformin", "C": "Glipizide", "D": "Acarbose"},
            "meta_info": "step1",
            "answer_idx": "B",
        },
        # No answer_idx: "answer" holds the option text, as MedQA's answer field does.
        {"question": "Vitamin deficient in scurvy?", "options": {"B": "Vitamin D", "A": "Vitamin C"},
         "answer": "vitamin c"},
    ])
    assert load_probe_file(path) == ProbeFile(
        name="medqa",
        kind="choice",
        items=[
            ChoiceProbe(
                "Which drug is first line for type 2 diabetes?",
                (("A", "Insulin"), ("B", "Metformin"), ("C", "Glipizide"), ("D", "Acarbose")),
                "B",
            ),
            ChoiceProbe("Vitamin deficient in scurvy?", (("A", "Vitamin C"), ("B", "Vitamin D")), "A"),
        ],
        path=str(path),
    )


def test_json_list_with_options_list_gets_letters_in_order(tmp_path):
    path = write_text(tmp_path / "signs.json", json.dumps([
        {"question": "Main sign of measles?", "options": ["Fever", "Rash", "Cough"], "answer": "b"},
        {"question": "Koplik spots appear in?", "options": ["Mumps", "Measles"], "answer": "(B)"},
    ], indent=2))
    probe_file = load_probe_file(path)
    assert probe_file.kind == "choice"
    assert probe_file.items == [
        ChoiceProbe("Main sign of measles?", (("A", "Fever"), ("B", "Rash"), ("C", "Cough")), "B"),
        ChoiceProbe("Koplik spots appear in?", (("A", "Mumps"), ("B", "Measles")), "B"),
    ]


def test_ceval_csv_with_letter_columns(tmp_path):
    path = write_text(tmp_path / "basic_medicine_val.csv", (
        "id,question,A,B,C,D,answer,explanation\n"
        '0,"下列哪项是革兰阴性菌？",金黄色葡萄球菌,大肠埃希菌,肺炎链球菌,破伤风梭菌,B,'
        '"1. 大肠埃希菌,\n革兰阴性"\n'
        "1,Which organ makes insulin?,Liver,Pancreas,Kidney,Spleen,B,\n"
    ))
    probe_file = load_probe_file(path)
    assert probe_file.name == "basic_medicine_val"
    assert probe_file.kind == "choice"
    assert probe_file.items == [
        ChoiceProbe(
            "下列哪项是革兰阴性菌？",
            (("A", "金黄色葡萄球菌"), ("B", "大肠埃希菌"), ("C", "肺炎链球菌"), ("D", "破伤风梭菌")),
            "B",
        ),
        ChoiceProbe(
            "Which organ makes insulin?",
            (("A", "Liver"), ("B", "Pancreas"), ("C", "Kidney"), ("D", "Spleen")),
            "B",
        ),
    ]


def test_csv_letter_columns_with_an_empty_cell_have_no_such_option(tmp_path):
    path = write_text(tmp_path / "five.csv", "question,A,B,C,D,E,answer\n" "Q1?,x,y,z,w,v,E\n" "Q2?,x,y,z,,,C\n")
    items = load_probe_file(path).items
    assert [letter for letter, _ in items[0].options] == ["A", "B", "C", "D", "E"]
    assert items[1] == ChoiceProbe("Q2?", (("A", "x"), ("B", "y"), ("C", "z")), "C")


def test_cmexam_csv_with_options_text_block(tmp_path):
    path = write_text(tmp_path / "cmexam.csv", (
        "Question,Options,Answer,Explanation\n"
        '"治疗发热首选的药物是？","A 阿司匹林\nB 布洛芬\nC 对乙酰氨基酚\nD 吗啡\nE 青霉素",C,解释\n'
        '"缺乏维生素C可导致？","A. 坏血病\nB、佝偻病\n(C) 夜盲症",A,\n'
    ))
    probe_file = load_probe_file(path)
    assert probe_file.kind == "choice"
    assert probe_file.items == [
        ChoiceProbe(
            "治疗发热首选的药物是？",
            (("A", "阿司匹林"), ("B", "布洛芬"), ("C", "对乙酰氨基酚"), ("D", "吗啡"), ("E", "青霉素")),
            "C",
        ),
        ChoiceProbe("缺乏维生素C可导致？", (("A", "坏血病"), ("B", "佝偻病"), ("C", "夜盲症")), "A"),
    ]


def test_knowledge_jsonl(tmp_path):
    path = write_jsonl(tmp_path / "facts.jsonl", [
        {"question": "What causes scurvy?", "facts": ["vitamin C", "collagen"],
         "reference": "Lack of vitamin C."},
        {"question": "糖尿病的诊断标准？", "facts": ["空腹血糖", "7.0"]},
    ])
    assert load_probe_file(path) == ProbeFile(
        name="facts",
        kind="knowledge",
        items=[
            KnowledgeProbe("What causes scurvy?", ("vitamin C", "collagen"), "Lack of vitamin C."),
            KnowledgeProbe("糖尿病的诊断标准？", ("空腹血糖", "7.0"), None),
        ],
        path=str(path),
    )


def test_knowledge_csv_facts_cell_as_json_or_separated(tmp_path):
    path = write_text(tmp_path / "facts.csv", (
        "question,facts\n"
        'Q1?,"[""vitamin C"", ""collagen""]"\n'
        'Q2?,"fever; rash\nKoplik spots"\n'
    ))
    assert load_probe_file(path).items == [
        KnowledgeProbe("Q1?", ("vitamin C", "collagen")),
        KnowledgeProbe("Q2?", ("fever", "rash", "Koplik spots")),
    ]


def test_generation_jsonl_with_prompt_and_key(tmp_path):
    path = write_jsonl(tmp_path / "general.jsonl", [
        {"prompt": "What is the capital of France?", "key": "Paris"},
        {"question": "Write a haiku about rain.", "reference": "Soft rain on the roof"},
        {"instruction": "Translate to English:", "input": "你好", "key": "hello"},
    ])
    assert load_probe_file(path) == ProbeFile(
        name="general",
        kind="generation",
        items=[
            Probe("What is the capital of France?", key="Paris"),
            Probe("Write a haiku about rain.", reference="Soft rain on the roof"),
            Probe("Translate to English:\n你好", key="hello"),
        ],
        path=str(path),
    )


def test_parquet_choice_file(tmp_path):
    pyarrow = pytest.importorskip("pyarrow")
    import pyarrow.parquet

    table = pyarrow.table({"question": ["Q?"], "A": ["x"], "B": ["y"], "answer": ["A"]})
    pyarrow.parquet.write_table(table, tmp_path / "mc.parquet")
    assert load_probe_file(tmp_path / "mc.parquet").items == [ChoiceProbe("Q?", (("A", "x"), ("B", "y")), "A")]


# ---------------------------------------------------------------------------------------------
# Kind detection


def test_detect_kind_from_record_keys():
    assert detect_kind({"question": "q", "options": {"A": "x"}}) == "choice"
    assert detect_kind({"Question": "q", "Options": "A x\nB y"}) == "choice"
    assert detect_kind({"question": "q", "A": "x", "B": "y", "answer": "A"}) == "choice"
    assert detect_kind({"question": "q", "facts": ["x"]}) == "knowledge"
    assert detect_kind({"prompt": "q", "key": "x"}) == "generation"


def test_explicit_kind_is_applied_to_every_record(tmp_path):
    path = write_jsonl(tmp_path / "open.jsonl", [{"question": "Q?", "facts": ["x"]}])
    assert load_probe_file(path, kind="generation").items == [Probe("Q?")]
    assert_error_at(load_error(path, kind="choice"), path, 1, "missing options")


def test_record_of_another_kind_after_detection_fails_at_its_line(tmp_path):
    path = write_jsonl(tmp_path / "mixed.jsonl", [
        {"question": "Q?", "options": ["x", "y"], "answer": "A"},
        {"question": "What causes scurvy?", "facts": ["vitamin C"]},
    ])
    assert_error_at(load_error(path), path, 2, "missing options")


# ---------------------------------------------------------------------------------------------
# Errors: one line, "<path>:<line>: <reason>", the first bad record stops loading


def test_malformed_json_line_reports_its_physical_line(tmp_path):
    path = write_text(tmp_path / "bad.jsonl", '{"prompt": "Q1?"}\n\n{"prompt": "Q2?"\n{"prompt": "Q3?"}\n')
    assert_error_at(load_error(path), path, 3, "malformed JSON")


def test_missing_question(tmp_path):
    path = write_jsonl(tmp_path / "noq.jsonl", [{"prompt": "Q1?"}, {"key": "Paris"}])
    assert_error_at(load_error(path), path, 2, "missing the question")


def test_empty_question(tmp_path):
    path = write_jsonl(tmp_path / "blank.jsonl", [{"question": "  ", "facts": ["x"]}])
    assert_error_at(load_error(path), path, 1, "field 'question' is empty")


def test_answer_letter_not_among_options(tmp_path):
    path = write_jsonl(tmp_path / "mc.jsonl", [
        {"question": "Q1?", "options": {"A": "x", "B": "y"}, "answer_idx": "A"},
        {"question": "Q2?", "options": {"A": "x", "B": "y", "C": "z", "D": "w"}, "answer_idx": "E"},
    ])
    message = load_error(path)
    assert_error_at(message, path, 2, "answer 'E' is not among the options A, B, C, D")


def test_answer_text_matching_no_option(tmp_path):
    path = write_jsonl(tmp_path / "mc.jsonl", [{"question": "Q?", "options": ["x", "y"], "answer": "z"}])
    assert_error_at(load_error(path), path, 1, "answer 'z' is not among the options A, B")


def test_several_answer_letters_are_refused(tmp_path):
    path = write_text(tmp_path / "multi.csv", "Question,Options,Answer\nQ?,\"A x\nB y\nC z\",AC\n")
    assert_error_at(load_error(path), path, 2, "names several options")


def test_missing_answer(tmp_path):
    path = write_jsonl(tmp_path / "mc.jsonl", [{"question": "Q?", "options": ["x", "y"]}])
    assert_error_at(load_error(path), path, 1, "missing field 'answer'")


def test_fewer_than_two_options(tmp_path):
    path = write_jsonl(tmp_path / "one.jsonl", [{"question": "Q?", "options": {"A": "x"}, "answer": "A"}])
    assert_error_at(load_error(path), path, 1, "at least 2 options, got 1")


def test_options_block_line_without_letter(tmp_path):
    path = write_text(tmp_path / "cm.csv", 'Question,Options,Answer\nQ?,"A 阿司匹林\n布洛芬",A\n')
    assert_error_at(load_error(path), path, 2, "does not start with an option letter")


def test_empty_facts(tmp_path):
    path = write_jsonl(tmp_path / "k.jsonl", [{"question": "Q1?", "facts": ["x"]}, {"question": "Q2?", "facts": []}])
    assert_error_at(load_error(path), path, 2, "field 'facts' is empty")


def test_csv_error_line_is_the_physical_line_of_the_row(tmp_path):
    # The first row spans lines 2-3 (a quoted newline); the bad row starts on line 4.
    path = write_text(tmp_path / "ceval.csv", (
        "question,A,B,C,D,answer\n"
        '"Q1, on\ntwo lines?",x,y,z,w,A\n'
        "Q2?,x,y,z,w,F\n"
    ))
    assert_error_at(load_error(path), path, 4, "answer 'F' is not among the options")


def test_json_array_error_line_is_where_the_element_starts(tmp_path):
    path = write_text(tmp_path / "list.json", (
        "[\n"
        '  {"question": "Q1?", "options": ["x", "y"], "answer": "A"},\n'
        "  {\n"
        '    "question": "Q2?",\n'
        '    "options": ["x"],\n'
        '    "answer": "A"\n'
        "  }\n"
        "]\n"
    ))
    assert_error_at(load_error(path), path, 3, "at least 2 options")


def test_record_that_is_not_an_object(tmp_path):
    path = write_text(tmp_path / "list.jsonl", '["Q?", "x"]\n')
    assert_error_at(load_error(path), path, 1, "expected a JSON object, got list")


def test_error_reason_quoting_file_text_stays_on_one_line(tmp_path):
    path = write_jsonl(tmp_path / "mc.jsonl", [{"question": "Q?", "options": ["x", "y"], "answer": "no\nsuch"}])
    assert_error_at(load_error(path), path, 1, "is not among the options")


def test_missing_file_unknown_kind_empty_file_and_file_type(tmp_path):
    missing = tmp_path / "nope.jsonl"
    assert load_error(missing) == f"{missing}: no such file"
    path = write_jsonl(tmp_path / "ok.jsonl", [{"prompt": "Q?"}])
    assert "unknown probe kind 'mcq'" in load_error(path, kind="mcq")
    empty = write_text(tmp_path / "empty.jsonl", "\n")
    assert load_error(empty) == f"{empty}: no probes in the file"
    text = write_text(tmp_path / "probes.txt", "Q?\n")
    assert load_error(text).startswith(f"{text}: unsupported file type '.txt'")


# ---------------------------------------------------------------------------------------------
# Prompts


def test_choice_prompt_english():
    probe = ChoiceProbe("Which organ makes insulin?", (("A", "Liver"), ("B", "Pancreas"), ("C", "Kidney")), "B")
    assert choice_prompt(probe) == "Which organ makes insulin?\nA. Liver\nB. Pancreas\nC. Kidney\nAnswer:"


def test_choice_prompt_chinese_cue_and_language_override():
    probe = ChoiceProbe("治疗发热首选？", (("A", "阿司匹林"), ("B", "吗啡")), "A")
    assert choice_prompt(probe) == "治疗发热首选？\nA. 阿司匹林\nB. 吗啡\n答案："
    assert choice_prompt(probe, language="en").endswith("\nAnswer:")
    with pytest.raises(ValueError):
        choice_prompt(probe, language="fr")


def test_loading_choice_and_knowledge_files_does_not_import_torch(tmp_path):
    path = write_jsonl(tmp_path / "mc.jsonl", [{"question": "Q?", "options": ["x", "y"], "answer": "A"}])
    code = (
        "import sys\n"
        "from medsft.eval.probe_files import load_probe_file\n"
        "from medsft.eval.probes import score_knowledge, KnowledgeProbe\n"
        f"load_probe_file({str(path)!r})\n"
        "score_knowledge('x', KnowledgeProbe('q', ('x',), 'x'))\n"
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, 'imported torch'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
