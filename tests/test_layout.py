"""The package's shape: imports point one way (DESIGN.md's layout), and the HF Trainer is used
through public hooks except in the one module that says otherwise."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import medsft

PACKAGE = Path(medsft.__file__).parent

# Top to bottom: a unit may import units below it, never one above it nor one beside it.
LAYERS = [
    {"__main__"},
    {"cli"},
    {"lab"},
    {"serve"},
    {"pipeline"},
    {"report"},
    {"monitor"},
    {"eval"},
    {"train"},
    {"data"},
    {"models", "recipe", "tensors", "distributed"},
    {"errors"},
    {"__init__"},
]
RANK = {unit: level for level, units in enumerate(LAYERS) for unit in units}


def unit_of(path: Path) -> str:
    """The top-level module or folder a file belongs to (`pipeline`, `models`, ...)."""
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return parts[0]


def medsft_imports(path: Path) -> list[tuple[int, str]]:
    """(line, unit) of every medsft import in a file, at any depth (inside functions too)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "medsft":
                found.append((node.lineno, parts[1] if len(parts) > 1 else "__init__"))
    return found


def import_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        unit = unit_of(path)
        graph.setdefault(unit, set()).update(u for _, u in medsft_imports(path) if u != unit and u in RANK)
    return graph


def test_every_unit_has_a_layer():
    units = {unit_of(p) for p in PACKAGE.rglob("*.py")}
    assert units <= set(RANK), f"place these in LAYERS: {sorted(units - set(RANK))}"


def test_imports_point_down_the_layers():
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        unit = unit_of(path)
        for line, target in medsft_imports(path):
            if target != unit and target in RANK and RANK[target] <= RANK[unit]:
                upward.append(f"{path.relative_to(PACKAGE)}:{line}: {unit} imports {target}")
    assert upward == []


def test_no_import_cycle_between_units():
    graph = import_graph()

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        return any(n == goal or (n not in seen and reaches(n, goal, seen | {n})) for n in graph.get(start, ()))

    assert [u for u in graph if reaches(u, u, {u})] == []


def test_the_checker_sees_an_upward_import(tmp_path):
    """The walk finds imports inside functions, where an upward import would hide."""
    sample = PACKAGE / "data" / "inspection.py"
    hidden = tmp_path / "hidden.py"
    hidden.write_text(sample.read_text(encoding="utf-8") + "\n\ndef late():\n    from medsft.train import trainer\n")
    assert "train" not in [unit for _, unit in medsft_imports(sample)]
    assert "train" in [unit for _, unit in medsft_imports(hidden)]


def test_data_does_not_import_torch():
    heavy = [f"{p.relative_to(PACKAGE)}:{line}" for p in (PACKAGE / "data").rglob("*.py")
             for line, module in _third_party(p) if module in ("torch", "transformers", "peft")]
    assert heavy == []


def test_no_private_trainer_method_outside_hf_internals():
    """No call to, and no override of, a private method of transformers.Trainer (one whose name
    starts with an underscore), except in train/hf_internals.py."""
    from transformers import Trainer

    private = {name for name in dir(Trainer) if name.startswith("_") and not name.startswith("__")}
    uses = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "hf_internals.py":
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            for name in re.findall(r"(?:\.|\bdef )(_[a-z]\w*)\(", line):
                if name in private:
                    uses.append(f"{path.relative_to(PACKAGE)}:{number}: {name}")
    assert len(private) > 20  # the Trainer still has its private methods: the check is looking at them
    assert uses == []


def _third_party(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name.split(".")[0]) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module.split(".")[0]))
    return found


def test_the_readme_layout_names_every_unit_in_layer_order():
    readme = (PACKAGE.parents[1] / "README.md").read_text(encoding="utf-8")
    block = readme.split("### Layout", 1)[1].split("```", 2)[1]
    listed = [line.split()[0].rstrip("/").removesuffix(".py") for line in block.splitlines()
              if line and not line.startswith(" ")]
    units = [u for layer in LAYERS for u in sorted(layer) if not u.startswith("__")]
    assert set(units) <= set(listed)
    assert [u for u in listed if u in RANK] == sorted((u for u in listed if u in RANK), key=RANK.get)
