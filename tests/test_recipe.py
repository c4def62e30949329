"""Recipe errors are one line naming the field, exit code 2, before any model is loaded."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from medsft.cli import main
from medsft.errors import UserError
from medsft.recipe import apply_overrides, field_reference, load_recipe

from conftest import write_jsonl

EXAMPLES = sorted((Path(__file__).parent.parent / "examples" / "recipes").glob("*.yaml"))


def _recipe(tmp_path: Path, **changes) -> dict:
    data = write_jsonl(tmp_path / "med.jsonl", [{"instruction": "q", "output": "a"}])
    tree = {
        "model": {"name_or_path": str(tmp_path / "no-model-needed"), "template": "qwen"},
        "data": {"sources": [{"name": "medical", "path": str(data)}]},
        "stages": [{"name": "s1", "weights": {"medical": 1.0}}],
    }
    for dotted, value in changes.items():
        node = tree
        keys = dotted.split("__")
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = value
    return tree


def _write(tmp_path: Path, tree: dict) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(tree), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"train__learning_rat": 1e-5}, "train.learning_rat: unknown field"),
        ({"train__batch_size": "four"}, "train.batch_size: Input should be a valid integer"),
        ({"model__template": "qwen9"}, "model.template: Input should be"),
        ({"finetune__method": "qlora"}, "finetune.method: Input should be 'lora' or 'full'"),
        ({"stages": [{"name": "s1", "weights": {"surgery": 1.0}}]}, "stages.0.weights: 'surgery' names no source"),
        ({"stages": [{"name": "s1", "weights": {"medical": -1}}]}, "weight of 'medical' must be > 0"),
        ({"data__on_bad_record": "ignore"}, "data.on_bad_record: Input should be 'fail' or 'skip'"),
        ({"data__sources": [{"name": "medical", "path": "/nope/missing.jsonl"}]}, "data.sources.0.path: /nope/missing.jsonl: no such file"),
        ({"data__sources": [{"name": "a b", "path": "x"}]}, "must be letters, digits"),
        ({"train__learning_rate": 1e38}, "train.learning_rate: Input should be less than or equal to 1"),
    ],
)
def test_recipe_errors_name_the_field(tmp_path, capsys, changes, message):
    path = _write(tmp_path, _recipe(tmp_path, **changes))
    with pytest.raises(UserError, match=None) as error:
        load_recipe(path)
    assert message in str(error.value)
    assert "\n" not in str(error.value)
    assert main(["train", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and message in err and "Traceback" not in err


def test_missing_model_is_caught_before_loading(tmp_path, capsys):
    path = _write(tmp_path, _recipe(tmp_path))
    assert main(["train", str(path)]) == 2
    assert "model.name_or_path" in capsys.readouterr().err


def test_not_yaml_and_missing_file(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n", encoding="utf-8")
    assert main(["train", str(bad)]) == 2
    assert "not valid YAML" in capsys.readouterr().err
    assert main(["train", str(tmp_path / "none.yaml")]) == 2
    assert "recipe file not found" in capsys.readouterr().err


def test_set_overrides_nested_fields_and_list_items(tmp_path):
    path = _write(tmp_path, _recipe(tmp_path))
    recipe = load_recipe(path, ["train.learning_rate=1e-5", "finetune.lora.target_modules=[W_pack, o_proj]",
                                "stages.0.epochs=10", "model.trust_remote_code=true"])
    assert recipe.train.learning_rate == 1e-5
    assert recipe.finetune.lora.target_modules == ["W_pack", "o_proj"]
    assert recipe.resolved_stages[0].epochs == 10
    assert recipe.model.trust_remote_code is True
    with pytest.raises(UserError, match="expected key=value"):
        apply_overrides({}, ["no-equals-sign"])
    with pytest.raises(UserError, match="train.nope: unknown field"):
        load_recipe(path, ["train.nope=1"])


def test_defaults_are_safe_and_weights_normalize(tmp_path):
    recipe = load_recipe(_write(tmp_path, _recipe(tmp_path, stages=[{"name": "m", "weights": {"medical": 7}}])))
    assert recipe.model.trust_remote_code is False
    assert recipe.resolved_stages[0].weights == {"medical": 1.0}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_recipes_validate(path):
    recipe = load_recipe(path, check_files=False)
    assert recipe.data.sources and recipe.resolved_stages


def test_examples_cover_qwen_baichuan_and_full():
    recipes = {p.name: load_recipe(p, check_files=False) for p in EXAMPLES}
    assert any(r.model.template == "qwen" and r.finetune.method == "lora" and len(r.resolved_stages) == 2
               and r.resolved_stages[1].weights == {"medical": 0.7, "general": 0.3} for r in recipes.values())
    assert any(r.model.trust_remote_code and "W_pack" in r.finetune.lora.target_modules for r in recipes.values())
    assert any(r.finetune.method == "full" for r in recipes.values())


def test_field_reference_documents_every_field():
    reference = field_reference()
    for key in ["model.name_or_path", "finetune.lora.rank", "data.sources[].path", "stages[].weights",
                "train.grad_accum", "output_dir"]:
        assert f"`{key}`" in reference


def test_pickle_only_model_needs_an_explicit_opt_in(tmp_path, capsys):
    folder = tmp_path / "pickled-model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "pytorch_model.bin").write_bytes(b"not really weights")
    tree = _recipe(tmp_path, model__name_or_path=str(folder))
    assert main(["train", str(_write(tmp_path, tree))]) == 2
    assert "only pickle weights (pytorch_model.bin)" in capsys.readouterr().err


def test_the_reference_lists_every_record_format_the_reader_accepts():
    import typing

    from medsft.data.readers import FORMATS
    from medsft.recipe import SourceConfig

    field = SourceConfig.model_fields["format"]
    assert typing.get_args(field.annotation) == ("auto", *FORMATS)  # the schema allows what the reader reads
    row = next(line for line in field_reference().splitlines() if line.startswith("| `data.sources[].format` |"))
    assert all(f"`{value}`" in row for value in ("auto", *FORMATS)), row
