"""Regenerate the README's recipe reference from the schema: `make docs`."""

from pathlib import Path

from medsft.recipe import field_reference

START, END = "<!-- recipe-reference:start -->", "<!-- recipe-reference:end -->"

readme = Path(__file__).resolve().parent.parent / "README.md"
text = readme.read_text(encoding="utf-8")
head, rest = text.split(START)
_, tail = rest.split(END)
readme.write_text(f"{head}{START}\n{field_reference()}\n{END}{tail}", encoding="utf-8")
print(f"updated {readme}")
