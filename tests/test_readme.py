"""The README stays true: its recipe reference is the schema's, its quick start the Makefile's."""

import json
from pathlib import Path

from medsft.recipe import field_reference

ROOT = Path(__file__).parent.parent
START, END = "<!-- recipe-reference:start -->", "<!-- recipe-reference:end -->"


def test_readme_recipe_reference_matches_the_schema():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    documented = text.split(START)[1].split(END)[0].strip()
    assert documented == field_reference().strip(), (
        "README recipe reference is stale: run `make docs`"
    )


def test_quick_start_commands_exist():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    for target in ("demo", "test"):
        assert f"make {target}" in text and f"\n{target}:" in makefile


def test_example_data_is_its_scripts_output_with_as_many_distinct_records_as_the_readme_says():
    import re
    import runpy
    from collections import Counter

    from medsft.data.readers import read_source

    path = ROOT / "examples/data/medical_qa_sharegpt.jsonl"
    written = runpy.run_path(str(ROOT / "scripts/make_medical_qa.py"))["records"]()
    assert path.read_text(encoding="utf-8").splitlines() == [json.dumps(r, ensure_ascii=False) for r in written]
    records = read_source("example", path)
    said = re.search(r"`examples/data/medical_qa_sharegpt.jsonl` (\d+) medical QA records",
                     (ROOT / "README.md").read_text(encoding="utf-8"))
    assert records.read == len(records.conversations) == int(said.group(1))
    keys = Counter(c.content_key for c in records.conversations)
    assert [n for n in keys.values() if n > 1] == []  # an exact duplicate would weigh double
    questions = Counter(c.prompts()[0] for c in records.conversations)
    assert [q for q, n in questions.items() if n > 1] == []  # nor is one question answered two ways
