"""Remedies that cost no training: tune-scale (LoRA scale, WiSE-FT interpolation)."""

from __future__ import annotations

import json

import pytest
import torch

from medsft.cli import main
from test_train import _recipe_file


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, tiny_model_dir):
    tmp = tmp_path_factory.mktemp("lora")
    recipe = _recipe_file(tmp, tiny_model_dir, monitor={"eval_every": 4, "max_general_probes": 6, "domain_probes": 4,
                                                          "max_new_tokens": 16})
    assert main(["train", str(recipe)]) == 0
    return tmp / "run"


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_tune_scale_scores_each_scale_and_bakes_the_choice_into_the_adapter(lora_run, tiny_model_dir, capsys):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    adapter = lora_run / "adapter"
    original = json.loads((adapter / "adapter_config.json").read_text())["lora_alpha"]
    assert main(["tune-scale", str(lora_run), "--scales", "0,0.5"]) == 0
    printed = capsys.readouterr().out
    result = json.loads((lora_run / "tune_scale.json").read_text())
    rows = {r["scale"]: r for r in result["scales"]}
    assert set(rows) == {0.0, 0.5} and "chosen" in printed and (lora_run / "tune_scale.png").stat().st_size > 0
    assert rows[0.0]["general_retention"] in (None, 1.0) and rows[0.0]["length_ratio"] == 1.0  # scale 0 is the base
    chosen = result["chosen"]
    saved = json.loads((adapter / "medsft_scale.json").read_text())
    assert saved["scale"] == chosen and saved["lora_alpha"] == original
    assert json.loads((adapter / "adapter_config.json").read_text())["lora_alpha"] == pytest.approx(original * chosen)

    # Plain PEFT loading now gives the scaled adapter: base + chosen x (the trained change).
    ids = torch.randint(0, 200, (1, 12))
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    scaled = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), str(adapter))
    base_logits, scaled_logits = _logits(base, ids), _logits(scaled, ids)
    assert main(["tune-scale", str(lora_run), "--scales", "1", "--no-save"]) == 0  # restores the trained alpha
    assert json.loads((adapter / "adapter_config.json").read_text())["lora_alpha"] == original
    assert not (adapter / "medsft_scale.json").exists()
    full = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), str(adapter))
    assert not torch.allclose(_logits(full, ids), base_logits, atol=1e-5)  # the trained adapter does something
    from peft.tuners.lora import LoraLayer

    for layer in full.modules():  # the trained adapter at the chosen scale, through PEFT's own scaling
        if isinstance(layer, LoraLayer):
            layer.set_scale("default", chosen)
    assert torch.allclose(scaled_logits, _logits(full, ids), atol=1e-5)
    assert chosen == 0 or not torch.allclose(scaled_logits, base_logits, atol=1e-5)


def test_merge_does_not_scale_twice_after_tune_scale(tmp_path):
    from medsft.serve.merge import _adapter_scale

    # (what merging applies, what adapter_config.json already holds)
    (tmp_path / "medsft_scale.json").write_text(json.dumps({"scale": 0.5, "in_adapter_config": True}))
    assert _adapter_scale(tmp_path) == (1.0, 0.5)
    (tmp_path / "medsft_scale.json").write_text(json.dumps({"scale": 0.5}))
    assert _adapter_scale(tmp_path) == (0.5, 1.0)


def test_tune_scale_interpolates_full_fine_tuning(tmp_path, tiny_model_dir, capsys):
    from safetensors.torch import load_file

    recipe = _recipe_file(tmp_path, tiny_model_dir, finetune={"method": "full"},
                          monitor={"eval_every": 4, "max_general_probes": 6, "domain_probes": 4, "max_new_tokens": 16})
    assert main(["train", str(recipe)]) == 0
    run = tmp_path / "run"
    assert main(["tune-scale", str(run), "--scales", "0,1"]) == 0
    result = json.loads((run / "tune_scale.json").read_text())
    assert result["kind"].startswith("interpolation") and result["scales"][0]["length_ratio"] == 1.0
    written = load_file(str(run / "model_interpolated" / "model.safetensors"))
    expected = load_file(str((tiny_model_dir if result["chosen"] == 0 else run / "model") / "model.safetensors"))
    assert all(torch.allclose(written[k], expected[k]) for k in expected)
    assert main(["tune-scale", str(tmp_path / "nowhere")]) == 2


def _distill_recipe(tmp_path, tiny_model_dir, mode="replace"):
    from medsft.recipe import load_recipe

    path = _recipe_file(tmp_path, tiny_model_dir, monitor={"probes": False})
    recipe = load_recipe(path)
    tree = recipe.model_dump()
    for source in tree["data"]["sources"]:
        if source["name"] == "general":
            source["self_distill"] = {"mode": mode, "max_new_tokens": 12, "batch_size": 8}
    from medsft.recipe import parse_recipe

    return parse_recipe(tree, "test")


def test_self_distill_replaces_training_answers_keeps_validation_and_resumes(tmp_path, tiny_model_dir, monkeypatch):
    import medsft.eval.generate as generation
    from medsft.eval.generate import Generated
    from medsft.pipeline.prepare import prepare

    calls = []

    def fake_generate(model, chat, prompts, sampling, batch_size=32, label=None, on_batch=None):
        calls.append(len(prompts))  # the base model's greedy answer, as a stand-in: a function of the prompt
        answers = [Generated(f"base says {len(p)}", 3, stopped=len(p) % 5 != 0) for p in prompts]
        for start in range(0, len(prompts), batch_size):
            indices = list(range(start, min(start + batch_size, len(prompts))))
            on_batch(indices, [answers[i] for i in indices])
        return answers

    monkeypatch.setattr(generation, "generate_prompts", fake_generate)
    recipe = _distill_recipe(tmp_path, tiny_model_dir)
    _, _, prepared = prepare(recipe, log=lambda *_: None)
    report = prepared.manifest["sources"]["general"]["self_distill"]
    conversations = prepared.conversations
    train = [conversations[i] for i in prepared.train_pools["general"]]
    validation = [conversations[i] for i in prepared.val_pools["general"]]
    assert report["regenerated"] + report["kept_file_answer_unfinished"] == report["training_records"] == len(train)
    assert report["regenerated"] == sum(c.answers()[-1].startswith("base says") for c in train) > 0
    assert validation and not any(c.answers()[-1].startswith("base says") for c in validation)
    source = prepared.manifest["sources"]["general"]
    assert source["read"] == source["used"] + source["rejected"]  # replaced answers are still the read records

    # A killed run: half the cache and a cut line; the rerun asks only for what is missing.
    cache = next((tmp_path / "cache").rglob("distilled/*.jsonl"))
    lines = cache.read_text().splitlines()
    cache.write_text("\n".join(lines[: len(lines) // 2]) + '\n{"key": "cut', encoding="utf-8")
    calls.clear()
    _, _, again = prepare(recipe, log=lambda *_: None)
    assert calls == [len(lines) - len(lines) // 2]
    assert [c.messages for c in again.conversations] == [c.messages for c in conversations]
    calls.clear()
    prepare(recipe, log=lambda *_: None)
    assert calls == []  # everything from the cache

    joined = _distill_recipe(tmp_path / "join", tiny_model_dir, mode="join")
    _, _, prepared = prepare(joined, log=lambda *_: None)
    added = [c for c in prepared.conversations if c.augmenter == "self_distill"]
    assert len(added) == report["regenerated"] and prepared.manifest["sources"]["general"]["augmented_used"] == len(added)


def test_self_distill_with_the_real_generation_keeps_unfinished_answers(tmp_path, tiny_model_dir):
    from medsft.pipeline.prepare import prepare

    _, _, prepared = prepare(_distill_recipe(tmp_path, tiny_model_dir), log=lambda *_: None)
    report = prepared.manifest["sources"]["general"]["self_distill"]
    # The tiny random model seldom ends an answer within 12 tokens: those records keep the file's answer.
    assert report["regenerated"] + report["kept_file_answer_unfinished"] == report["training_records"] > 0


def test_sweep_trains_each_point_once_and_marks_the_pareto_front(tmp_path, tiny_model_dir, capsys):
    from medsft.pipeline.sweep import pareto_front

    stages = [{"name": "only", "epochs": 1, "weights": {"medical": 0.7, "general": 0.3}, "max_steps": 2}]
    recipe = _recipe_file(tmp_path, tiny_model_dir, stages=stages,
                          monitor={"eval_every": 2, "max_general_probes": 4, "domain_probes": 2, "max_new_tokens": 8})
    out = tmp_path / "sweep"
    argv = ["sweep", str(recipe), "--grid", "finetune.lora.rank=2,4", "--out", str(out)]
    assert main(argv) == 0
    result = json.loads((out / "sweep.json").read_text())
    assert [r["name"] for r in result["runs"]] == ["rank=2", "rank=4"]
    assert all((out / r["name"] / "adapter").is_dir() for r in result["runs"])
    assert json.loads((out / "rank=4" / "adapter" / "adapter_config.json").read_text())["r"] == 4
    assert any(r["pareto"] for r in result["runs"]) and (out / "sweep.png").stat().st_size > 0
    assert "| rank=2 |" in (out / "sweep.md").read_text()
    capsys.readouterr()
    assert main(argv) == 0  # a second sweep trains nothing again
    assert capsys.readouterr().out.count("finished before, kept") == 2
    # the same points with another recipe: refused, not passed off as this recipe's results
    assert main([*argv, "--set", "train.batch_size=2"]) == 2
    err = capsys.readouterr().err
    assert "holds a run of another recipe (train.batch_size)" in err and "finished before" not in err
    assert main(["sweep", str(recipe), "--grid", "rank"]) == 2
    assert main(["sweep", str(recipe), "--grid", "train.learning_rate=1e-3,fast", "--out", str(out)]) == 2
    assert "medsft: error: --grid train.learning_rate=fast: Input should be a valid number" in capsys.readouterr().err
    assert main(["sweep", str(recipe), "--grid", "stages.5.epochs=1,2", "--out", str(out)]) == 2
    assert "--grid stages.5.epochs=1: '5' is not an index of a list of 1" in capsys.readouterr().err
    assert main(["sweep", str(recipe), "--grid", "finetune.lora.rank=2,2", "--out", str(out)]) == 2
    assert "a value is listed twice" in capsys.readouterr().err
    assert main(["sweep", str(recipe), "--grid", "finetune.lora.rank=2", "finetune.lora.rank=4", "--out", str(out)]) == 2
    assert "is given twice" in capsys.readouterr().err
    rows = [{"name": "a", "domain_score": 0.5, "general_retention": 0.9}, {"name": "b", "domain_score": 0.4,
            "general_retention": 0.95}, {"name": "c", "domain_score": 0.3, "general_retention": 0.9}]
    assert pareto_front(rows) == {"a", "b"}


@pytest.mark.parametrize("text, name, expected", [
    ("{% for m in messages %}<|im_start|>{{ m.role }}{% endfor %}", "org/Qwen2.5-7B-Instruct", "qwen"),
    ("{% for m in messages %}<|im_start|>{{ m.role }}{% endfor %}", "HuggingFaceTB/SmolLM2", "chatml"),
    ("<|start_header_id|>{{ role }}<|end_header_id|>", "x", "llama3"),
    ("[INST] <<SYS>>{{ system }}<</SYS>>", "x", "llama2"),
    ("[INST] {{ content }} [/INST]", "x", "mistral"),
    ("<reserved_106>{{ content }}<reserved_107>", "x", "baichuan2"),
    (None, "baichuan-inc/Baichuan2-7B-Chat", "baichuan2"),
    (None, "some/base-model", None),
    ("{{ bos_token }}{% for m in messages %}{{ m.content }}{% endfor %}", "x", None),
])
def test_template_detection(text, name, expected):
    from medsft.data.templates import detect_template

    assert detect_template(text, name)[0] == expected


def test_init_writes_a_valid_recipe_on_the_defaults(tmp_path, tiny_model_dir, capsys):
    from transformers import AutoTokenizer

    from medsft.recipe import load_recipe
    from sample_data import sample_sources

    sources = {s["name"]: s["path"] for s in sample_sources(tmp_path / "data")}
    model = tmp_path / "model"
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.chat_template = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    tokenizer.save_pretrained(model)
    (model / "config.json").write_text((tiny_model_dir / "config.json").read_text())
    out = tmp_path / "recipe.yaml"
    assert main(["init", "--model", str(model), "--domain", sources["medical"], "--general", sources["general"],
                 "--out", str(out)]) == 0
    assert "template chatml" in capsys.readouterr().out
    recipe = load_recipe(out)
    assert recipe.model.template == "chatml"
    assert [s.role for s in recipe.data.sources] == ["domain", "general"] and recipe.data.sources[0].augment
    assert recipe.resolved_stages[0].weights == {"domain": 0.6, "general": 0.4}  # the lab's medsft-default
    assert recipe.resolved_stages[0].adaptive.general_share == [0.4, 0.5]
    assert recipe.resolved_stages[0].anchor == "domain"  # epochs: passes over the domain data
    assert recipe.resolved_stages[0].epochs == 4  # the lab's medsft-default
    assert recipe.data.sources[0].augment.augmenters == ["rephrase", "restate", "synonyms", "statements",
                                                         "multiturn", "shuffle"]
    assert "# " in out.read_text()  # commented for the user
    assert main(["init", "--model", str(model), "--domain", sources["medical"], "--general", sources["general"],
                 "--out", str(out)]) == 2  # never over an existing file without --force
    assert main(["init", "--model", str(tiny_model_dir), "--domain", "nowhere.jsonl", "--general",
                 sources["general"], "--out", str(tmp_path / "r2.yaml")]) == 2
