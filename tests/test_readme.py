"""The README stays true: its recipe reference is the schema's, its quick start the Makefile's."""

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
