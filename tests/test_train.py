"""Training end to end on a tiny local Llama: run directory, metrics, stages, adapter reload, loss."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from medsft.cli import main
from sample_data import sample_sources
from medsft.recipe import load_recipe
from medsft.pipeline.run import train


def _recipe_file(tmp_path: Path, model_dir: Path, **overrides) -> Path:
    tree = {
        "model": {"name_or_path": str(model_dir), "template": "qwen"},
        "finetune": {"method": "lora", "lora": {"rank": 4, "alpha": 8, "dropout": 0.0}},
        "data": {
            "sources": sample_sources(tmp_path / "data"),
            "max_length": 1024,
            "val_fraction": 0.15,
        },
        "stages": [
            {"name": "warmup", "epochs": 1, "weights": {"general": 1.0}, "max_steps": 3},
            {"name": "mixed", "epochs": 1, "weights": {"medical": 0.7, "general": 0.3}, "max_steps": 4,
             "learning_rate": 5e-3},
        ],
        "monitor": {"eval_every": 2, "max_general_probes": 6, "domain_probes": 4, "max_new_tokens": 24},
        "train": {"learning_rate": 5e-3, "batch_size": 4, "logging_steps": 1, "save_steps": 2,
                  "seed": 7},
        "output_dir": str(tmp_path / "run"),
    }
    tree.update(overrides)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(tree, allow_unicode=True), encoding="utf-8")
    return path


def _events(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_cli_train_writes_the_run_directory(tmp_path, tiny_model_dir, capsys):
    recipe = _recipe_file(tmp_path, tiny_model_dir)
    assert main(["train", str(recipe)]) == 0
    run = tmp_path / "run"
    for name in ["recipe.yaml", "data_manifest.json", "metrics.jsonl", "adapter/adapter_model.safetensors"]:
        assert (run / name).exists(), name
    assert not list(run.rglob("*.bin")) or all(p.name == "training_args.bin" for p in run.rglob("*.bin"))
    assert load_recipe(run / "recipe.yaml", check_files=False).train.seed == 7  # resolved, re-loadable

    events = _events(run)
    train_events = [e for e in events if e["event"] == "train"]
    assert {e["stage"] for e in train_events} == {"warmup", "mixed"}
    assert all(k in train_events[0] for k in ["train_loss", "learning_rate", "grad_norm", "num_input_tokens_seen"])
    # The warm-up sees only general data; the mixed stage logs loss for both sources.
    assert all("train_loss/medical" not in e for e in train_events if e["stage"] == "warmup")
    assert any("train_loss/medical" in e and "train_loss/general" in e for e in train_events if e["stage"] == "mixed")
    evals = [e for e in events if e["event"] == "eval"]
    assert evals and all("eval_loss/medical" in e and "eval_loss/general" in e for e in evals)
    # Steps run on across stages: warm-up steps 1..3, then the mixed stage's 1..4 are 4..7.
    steps = [(e["stage"], e["step"]) for e in train_events]
    assert ("warmup", 3) in steps and ("mixed", 7) in steps
    assert [s for _, s in steps] == sorted(s for _, s in steps)

    manifest = json.loads((run / "data_manifest.json").read_text())
    for source in manifest["sources"].values():
        assert source["read"] == source["used"] + source["rejected"]
    assert [s["steps"] for s in manifest["stages"]] == [3, 4]
    assert (run / "checkpoints" / "mixed" / "checkpoint-2").is_dir()
    assert "run directory" in capsys.readouterr().out


def test_the_manifest_and_report_give_what_a_capped_stage_trained_not_its_plan(tmp_path, tiny_model_dir):
    """max_steps 3 x batch 2 x grad_accum 2 trains the plan's first 12 records: the manifest's `trained`
    counts exactly those (samples and tokens per source), the uncapped stage all of its plan."""
    from medsft.pipeline.prepare import prepare

    stages = [{"name": "capped", "epochs": 2, "weights": {"medical": 0.7, "general": 0.3}, "max_steps": 3},
              {"name": "whole", "epochs": 1, "weights": {"general": 1.0}}]
    recipe = load_recipe(_recipe_file(tmp_path, tiny_model_dir, stages=stages),
                         ["train.batch_size=2", "train.grad_accum=2", "monitor.eval_every=100",
                          "monitor.select.enabled=false"])
    train(recipe, log=lambda *_: None)
    run = Path(recipe.output_dir)
    manifest = json.loads((run / "data_manifest.json").read_text())
    _, _, prepared = prepare(recipe, lambda *_: None)
    lengths = prepared.encoded["length"]
    for stage, plan, records in zip(manifest["stages"], prepared.plans, [12, None]):
        first = plan.order[:records]
        samples = {name: sum(1 for i in first if prepared.source_names[prepared.source_index[i]] == name)
                   for name in plan.samples}
        tokens = {name: sum(lengths[i] for i in first if prepared.source_names[prepared.source_index[i]] == name)
                  for name in plan.samples}
        trained = stage["trained"]
        assert trained["records"] == len(first) and trained["steps"] == stage["steps"]
        assert trained["samples"] == samples and trained["tokens"] == tokens
        assert trained["realized_share_samples"] == {k: round(v / len(first), 4) for k, v in samples.items()}
        assert trained["realized_share_tokens"] == {k: round(v / sum(tokens.values()), 4) for k, v in tokens.items()}
    capped, whole = manifest["stages"]
    assert capped["records"] > 12 and capped["samples"] != capped["trained"]["samples"]  # the plan stays beside it
    assert whole["trained"]["records"] == whole["records"] and whole["trained"]["samples"] == whole["samples"]
    # complete.json keeps it for a resumed run
    assert json.loads((run / "checkpoints" / "capped" / "complete.json").read_text())["trained"] == capped["trained"]

    page = (run / "report.html").read_text(encoding="utf-8")
    shares = ", ".join(f"{k} {v:.1%}" for k, v in capped["trained"]["realized_share_samples"].items())
    planned = ", ".join(f"{k} {v:.1%}" for k, v in capped["realized_share_samples"].items())
    assert f"12 of {capped['records']} planned" in page
    assert f"trained: {shares}" in page and f"(planned: {planned})" in page


def test_adapter_reload_reproduces_trained_logits(tmp_path, tiny_model_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    # Selection off: adapter/ then holds the final weights, the ones still in memory.
    recipe = load_recipe(_recipe_file(tmp_path, tiny_model_dir), ["monitor.select.enabled=false"])
    result = train(recipe, log=lambda *_: None)
    trained = result.model.eval()
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    reloaded = PeftModel.from_pretrained(base, result.run_dir / "adapter").eval()
    ids = torch.tensor([[5, 40, 300, 17, 99, 250, 8]])
    with torch.no_grad():
        a, b = trained(input_ids=ids).logits, reloaded(input_ids=ids).logits
        plain = AutoModelForCausalLM.from_pretrained(tiny_model_dir)(input_ids=ids).logits
    assert torch.allclose(a, b, atol=1e-5)
    assert not torch.allclose(a, plain, atol=1e-3)  # training changed the model


def test_second_stage_starts_from_the_first_stages_weights(tmp_path, tiny_model_dir):
    """With a vanishing learning rate in stage two, the final adapter is stage one's adapter."""
    from safetensors.torch import load_file

    stages = [
        {"name": "first", "epochs": 1, "weights": {"medical": 1.0}, "max_steps": 3},
        {"name": "second", "epochs": 1, "weights": {"general": 1.0}, "max_steps": 1, "learning_rate": 1e-12},
    ]
    recipe = load_recipe(_recipe_file(tmp_path, tiny_model_dir, stages=stages), ["monitor.select.enabled=false"])
    train(recipe, log=lambda *_: None)
    run = Path(recipe.output_dir)
    after_first = load_file(run / "checkpoints" / "first" / "checkpoint-3" / "adapter_model.safetensors")
    final = load_file(run / "adapter" / "adapter_model.safetensors")
    lora_b = [k for k in final if "lora_B" in k]
    assert lora_b and any(after_first[k].abs().max() > 1e-4 for k in lora_b)  # stage one learned something
    for key in final:
        assert torch.allclose(final[key], after_first[key], atol=1e-7), key


def test_full_finetune_saves_a_loadable_model(tmp_path, tiny_model_dir):
    from transformers import AutoModelForCausalLM

    stages = [{"name": "only", "epochs": 1, "weights": {"medical": 0.7, "general": 0.3}, "max_steps": 2}]
    recipe = load_recipe(_recipe_file(tmp_path, tiny_model_dir, stages=stages), ["finetune.method=full"])
    result = train(recipe, log=lambda *_: None)
    folder = result.run_dir / "model"
    assert (folder / "model.safetensors").exists() and not (folder / "pytorch_model.bin").exists()
    loaded = AutoModelForCausalLM.from_pretrained(folder)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    name = "model.layers.0.mlp.up_proj.weight"
    assert not torch.equal(loaded.state_dict()[name], base.state_dict()[name])
    assert torch.equal(loaded.state_dict()[name], result.model.state_dict()[name].cpu())


def test_same_recipe_and_seed_give_the_same_numbers(tmp_path, tiny_model_dir):
    def losses(out: Path) -> list:
        recipe = load_recipe(_recipe_file(tmp_path, tiny_model_dir), [f"output_dir={out}"])
        train(recipe, log=lambda *_: None)
        return [(e["step"], e.get("train_loss"), e.get("eval_loss")) for e in _events(out) if e["event"] != "stage_end"]

    first = losses(tmp_path / "a")
    second = losses(tmp_path / "b")  # also served from the encoding cache
    assert first == second
    assert json.loads((tmp_path / "b" / "data_manifest.json").read_text())["encoding_cache_hit"] is True


def test_loss_is_the_mean_over_supervised_tokens_under_gradient_accumulation(tmp_path, tiny_model_dir):
    """Two micro-batches with different token counts give the gradient of the whole batch's token mean."""
    from medsft.pipeline.prepare import prepare
    from medsft.pipeline.run import Run
    from medsft.pipeline.stages import stage_trainer
    from medsft.train.loss import token_losses
    from medsft.train.trainer import StageRun

    recipe = load_recipe(_recipe_file(tmp_path, tiny_model_dir), ["train.batch_size=2", "train.grad_accum=2"])
    run = Run(recipe)
    run.prepare_data()
    run.load_model()
    model, tokenizer, prepared = run.model, run.tokenizer, run.prepared
    rows = run.encoded.select(prepared.plans[1].order[:4])
    trainer = stage_trainer(recipe, recipe.resolved_stages[1], model, tokenizer, rows,
                            StageRun(tmp_path / "run", "mixed", prepared.source_names))
    collate = trainer.data_collator
    halves = [collate([rows[0], rows[1]]), collate([rows[2], rows[3]])]
    counts = [int((h["labels"][:, 1:] != -100).sum()) for h in halves]
    assert counts[0] != counts[1]
    total = torch.tensor(sum(counts))

    model.zero_grad()
    for half in halves:
        trainer.training_step(model, half, num_items_in_batch=total)
    accumulated = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}

    model.zero_grad()
    losses, mask, _ = token_losses(model, collate([rows[i] for i in range(4)]))
    (losses.sum() / mask.sum()).backward()
    for name, param in model.named_parameters():
        if param.requires_grad:
            assert torch.allclose(accumulated[name], param.grad, atol=1e-6, rtol=1e-4), name


@pytest.mark.parametrize(
    "overrides",
    [
        ["finetune.lora.rslora=true", "finetune.lora.rank=16", "finetune.lora.alpha=32"],
        ["finetune.lora.dora=true", "finetune.lora.target_modules=[q_proj, v_proj]"],
        ["train.gradient_checkpointing=true", "train.grad_accum=2", "train.scheduler=linear"],
    ],
    ids=["rslora", "dora-explicit-targets", "grad-checkpointing"],
)
def test_lora_options_reach_the_saved_adapter(tmp_path, tiny_model_dir, overrides):
    stages = [{"name": "only", "epochs": 1, "weights": {"medical": 0.7, "general": 0.3}, "max_steps": 2}]
    recipe = load_recipe(_recipe_file(tmp_path, tiny_model_dir, stages=stages), overrides)
    result = train(recipe, log=lambda *_: None)
    config = json.loads((result.run_dir / "adapter" / "adapter_config.json").read_text())
    lora = recipe.finetune.lora
    assert config["r"] == lora.rank and config["lora_alpha"] == lora.alpha
    assert config["use_rslora"] == lora.rslora and config["use_dora"] == lora.dora
    if isinstance(lora.target_modules, list):
        assert sorted(config["target_modules"]) == sorted(lora.target_modules)
    events = [e for e in _events(result.run_dir) if e["event"] == "train"]
    assert events[-1]["stage_step"] == 2 and all(e["train_loss"] == e["train_loss"] for e in events)  # finite


def _poisoned(tmp_path, tiny_model_dir, *overrides):
    """A model whose embedding of one medical-only token is NaN: batches holding it have a NaN loss."""
    import json as _json

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sample_data import GENERAL, MEDICAL

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    general_ids = {t for r in GENERAL for m in r["conversations"] for t in tokenizer(m["value"])["input_ids"]}
    counts: dict[int, int] = {}
    for record in MEDICAL:
        for t in set(tokenizer(record["output"])["input_ids"]) - general_ids:
            counts[t] = counts.get(t, 0) + 1
    token = max(counts, key=counts.get)  # in several medical answers, in no general one
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    with torch.no_grad():
        model.get_input_embeddings().weight[token] = float("nan")
    folder = tmp_path / "poisoned"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    stages = [{"name": "boom", "epochs": 1, "weights": {"medical": 0.7, "general": 0.3}, "max_steps": 12}]
    return load_recipe(_recipe_file(tmp_path, folder, stages=stages),
                       ["monitor.probes=false", "train.save_steps=1", "train.batch_size=2", *overrides])


def test_nonfinite_loss_stops_with_one_line_naming_step_stage_and_records(tmp_path, tiny_model_dir, capsys):
    recipe = _poisoned(tmp_path, tiny_model_dir)
    path = tmp_path / "poisoned.yaml"
    path.write_text(recipe.to_yaml(), encoding="utf-8")
    assert main(["train", str(path)]) == 3
    err = capsys.readouterr().err.strip().splitlines()[-1]  # progress bars come before it, on their own lines
    assert err.startswith("medsft: error: step ") and "non-finite loss" in err and "(stage boom)" in err
    assert "batch: " in err and "records: " in err and "medical.jsonl:" in err
    step = int(err.split("step ")[1].split(" ")[0])
    kept = sorted(int(p.name.split("-")[1]) for p in (tmp_path / "run" / "checkpoints" / "boom").glob("checkpoint-*"))
    assert kept == list(range(1, step))  # every good step's checkpoint is kept, none after


def test_nonfinite_steps_can_be_skipped_a_bounded_number_of_times(tmp_path, tiny_model_dir):
    from medsft.errors import TrainingStopped

    lines: list[str] = []
    many = _poisoned(tmp_path / "many", tiny_model_dir, "train.on_nonfinite=skip", "train.max_nonfinite_skips=50")
    result = train(many, log=lines.append)  # every poisoned batch skipped, the rest trained
    skipped = [line for line in lines if "skipped (" in line]
    assert skipped and "/50)" in skipped[0]
    adapter = result.run_dir / "adapter" / "adapter_model.safetensors"
    from safetensors.torch import load_file

    assert all(torch.isfinite(t).all() for t in load_file(adapter).values())
    # The bound: with no skips allowed, the first non-finite batch stops the run.
    with pytest.raises(TrainingStopped, match="non-finite loss"):
        train(_poisoned(tmp_path, tiny_model_dir, "train.on_nonfinite=skip", "train.max_nonfinite_skips=0"),
              log=lines.append)


def test_a_nonfinite_gradient_with_a_finite_loss_is_caught_before_the_optimizer_step():
    from types import SimpleNamespace

    from medsft.train.callbacks import NonFiniteGradientGuard

    model = torch.nn.Linear(3, 2)
    calls: list[str] = []
    guard = NonFiniteGradientGuard(SimpleNamespace(model=model, nonfinite=calls.append))
    model(torch.ones(1, 3)).sum().backward()
    guard.on_pre_optimizer_step(None, None, None)
    assert calls == []  # finite gradients pass untouched
    assert model.weight.grad is not None and torch.isfinite(model.weight.grad).all()
    model.bias.grad[0] = float("inf")
    guard.on_pre_optimizer_step(None, None, None)
    assert calls == ["non-finite gradient"]
    # skip: the step sees no gradient at all (stop raises inside nonfinite before this point)
    assert all(p.grad is None or not p.grad.any() for p in model.parameters())


def test_a_loss_spike_is_a_warning_naming_the_step():
    from types import SimpleNamespace

    from medsft.train.trainer import MedsftTrainer

    lines: list[str] = []
    trainer = SimpleNamespace(settings=SimpleNamespace(loss_spike_factor=3.0), recent_losses=[], step=15,
                              run=SimpleNamespace(console=lines.append, stage="mixed"))
    for loss in [2.0, 1.9, 2.1, 1.8, 2.0]:
        MedsftTrainer._warn_on_spike(trainer, loss)
    assert lines == []
    MedsftTrainer._warn_on_spike(trainer, 9.0)
    assert len(lines) == 1 and "step 15 (stage mixed)" in lines[0] and "4.5x its recent median" in lines[0]


def test_kl_to_base_is_zero_before_training_and_matches_a_frozen_copy():
    """The anchored-replay term: KL(base || tuned) on the supervised tokens; for LoRA the base is the
    model with its adapter off, for full fine-tuning a frozen copy: both give the same number."""
    import copy

    from transformers import LlamaConfig, LlamaForCausalLM

    from medsft.models import add_lora
    from medsft.train.loss import kl_to_base_sum, token_losses

    def kl(*args, **kwargs) -> float:
        return float(kl_to_base_sum(*args, **kwargs).detach())

    torch.manual_seed(0)
    base = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=4))
    reference = copy.deepcopy(base).eval()
    inputs = {"input_ids": torch.randint(0, 64, (2, 9)), "attention_mask": torch.ones(2, 9, dtype=torch.long),
              "labels": torch.randint(0, 64, (2, 9)), "source_ids": torch.tensor([0, 1])}
    lora = add_lora(copy.deepcopy(base), rank=4, alpha=8, dropout=0.0)
    _, mask, _, logits = token_losses(lora, inputs, keep_logits=True)
    assert kl(lora, inputs, logits, mask) == pytest.approx(0.0, abs=1e-6)  # B = 0 at start
    with torch.no_grad():
        for name, parameter in lora.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.5)
    _, mask, _, logits = token_losses(lora, inputs, keep_logits=True)
    general_only = mask & (inputs["source_ids"] == 1)[:, None]
    via_adapter = kl(lora, inputs, logits, general_only)
    via_copy = kl(lora, inputs, logits, general_only, reference=reference)
    assert via_adapter > 1e-3 and via_copy == pytest.approx(via_adapter, rel=1e-5)
    assert kl(lora, inputs, logits, mask) > via_adapter  # more rows, more KL


@pytest.mark.parametrize("method", ["lora", "full"])
def test_kl_to_base_trains_and_is_logged(tmp_path, tiny_model_dir, method):
    recipe = _recipe_file(tmp_path, tiny_model_dir, finetune={"method": method, "lora": {"rank": 4, "alpha": 8}},
                          train={"learning_rate": 5e-3, "batch_size": 4, "logging_steps": 1, "seed": 7,
                                 "kl_to_base": 0.5, "kl_on": "all"},
                          monitor={"probes": False})
    assert main(["train", str(recipe)]) == 0
    logged = [e["train_kl_to_base"] for e in _events(tmp_path / "run") if "train_kl_to_base" in e]
    assert logged and logged[0] == pytest.approx(0.0, abs=1e-6) and max(logged) > 0  # drift grows from zero


def test_finetune_layers_train_only_the_layers_named(tmp_path, tiny_model_dir, capsys):
    from safetensors.torch import load_file

    recipe = _recipe_file(tmp_path, tiny_model_dir, finetune={"method": "full", "layers": "1-"},
                          monitor={"probes": False})
    assert main(["train", str(recipe)]) == 0
    before = load_file(str(tiny_model_dir / "model.safetensors"))
    after = load_file(str(tmp_path / "run" / "model" / "model.safetensors"))
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    assert moved and all(".layers.1." in k or "lm_head" in k or k.startswith("model.norm") for k in moved), moved
    assert not any(".layers.0." in k or "embed_tokens" in k for k in moved)

    lora_recipe = _recipe_file(tmp_path / "lora", tiny_model_dir, finetune={"method": "lora", "layers": [1]},
                               monitor={"probes": False})
    assert main(["train", str(lora_recipe)]) == 0
    adapter = load_file(str(tmp_path / "lora" / "run" / "adapter" / "adapter_model.safetensors"))
    assert adapter and all(".layers.1." in k for k in adapter)
    capsys.readouterr()
    bad = _recipe_file(tmp_path / "bad", tiny_model_dir, finetune={"method": "lora", "layers": "5-9"})
    assert main(["train", str(bad)]) == 2
    assert "finetune.layers" in capsys.readouterr().err


def test_a_stage_max_steps_caps_and_never_extends(tmp_path, tiny_model_dir):
    import json

    from medsft.pipeline.run import train
    from medsft.recipe import load_recipe

    recipe = load_recipe(_recipe_file(tmp_path, tiny_model_dir),
                         ["monitor.probes=false", "monitor.select.enabled=false", "stages=[{name: s, weights: {medical: 1.0}, "
                          "epochs: 1, max_steps: 1000}]", "train.batch_size=8"])
    run = train(recipe, log=lambda *_: None).run_dir
    manifest = json.loads((run / "data_manifest.json").read_text())
    stage = manifest["stages"][0]
    events = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = max(e["step"] for e in events if e["event"] == "train")
    assert steps == stage["steps"] == -(-stage["records"] // 8) < 1000  # one pass over the stage, not 1000 steps
    assert stage["trained"]["records"] == stage["records"]
