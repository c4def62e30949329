"""The forgetting monitor: drift, probe metrics while training, verdicts, checkpoint selection."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from medsft.monitor.selection import select_checkpoint
from medsft.eval.generate import Chat
from medsft.monitor.verdicts import memorization_verdicts, newly_memorizing


def _history(points):
    """points: (step, eval_loss, train_loss) for source 'medical'."""
    return [{"step": s, "stage": "mixed", "stage_step": s, "eval_loss": {"medical": e},
             "train_loss": {"medical": t}, "metrics": {}} for s, e, t in points]


def _verdicts(history, train_size=5000, before=None, **settings):
    """(verdicts, newly raised lines) for `history`, as the monitor computes them."""
    now = memorization_verdicts(history, {"medical": train_size}, **settings)
    return now, newly_memorizing(before or {}, now)


def test_memorization_is_flagged_when_validation_rises_while_train_falls():
    history = _history([(10, 2.0, 2.1), (20, 1.5, 1.6), (30, 1.6, 1.2), (40, 1.7, 0.9), (50, 1.9, 0.6)])
    verdicts, raised = _verdicts(history)
    assert raised == [f"memorization: medical: {verdicts['medical']['reason']}"]
    assert verdicts["medical"] == {
        "verdict": "memorizing", "since_step": 20,
        "reason": "memorizing since step 20: validation loss rose for 3 evaluations (1.500 -> 1.900) while "
                  "train loss kept falling (1.600 -> 0.600)"}
    assert _verdicts(history, before=verdicts)[1] == []  # raised once, not at every evaluation


def test_learning_and_patience():
    learning, _ = _verdicts(_history([(10, 2.0, 2.1), (20, 1.5, 1.6), (30, 1.4, 1.2)]))
    assert learning["medical"] == {"verdict": "learning", "since_step": None,
                                   "reason": "learning: validation loss 2.000 -> 1.400"}
    # Two rises are not enough with patience 3; they are with patience 2.
    history = _history([(10, 2.0, 2.0), (20, 1.5, 1.5), (30, 1.6, 1.2), (40, 1.7, 1.0)])
    assert _verdicts(history)[0]["medical"]["verdict"] == "learning"
    assert "(best 1.500 at step 20)" in _verdicts(history)[0]["medical"]["reason"]
    assert _verdicts(history, patience=2)[0]["medical"]["verdict"] == "memorizing"
    # Rising validation loss with a rising train loss is not memorization.
    rising_both = _history([(10, 1.0, 1.0), (20, 1.1, 1.1), (30, 1.2, 1.2), (40, 1.3, 1.3)])
    assert _verdicts(rising_both, patience=2)[0]["medical"]["verdict"] == "learning"


def test_near_zero_train_loss_on_a_small_set_is_memorization():
    verdicts, _ = _verdicts(_history([(10, 1.0, 0.5), (20, 0.9, 0.01)]), train_size=300)
    assert verdicts["medical"]["verdict"] == "memorizing"
    assert "small set (300 records)" in verdicts["medical"]["reason"]
    # The same loss on a large set is not.
    assert _verdicts(_history([(10, 1.0, 0.5), (20, 0.9, 0.01)]), train_size=5000)[0]["medical"]["verdict"] == "learning"
    # Flagged since the first evaluation of the near-zero run, not the latest one.
    since = _verdicts(_history([(10, 1.0, 0.5), (20, 0.9, 0.02), (30, 0.9, 0.01), (40, 0.9, 0.01)]), train_size=300)
    assert since[0]["medical"]["since_step"] == 20


def test_a_source_without_validation_records_meets_the_near_zero_rule():
    history = [{"step": s, "stage": "a", "stage_step": s, "eval_loss": {"general": 2.0},
                "train_loss": {"medical": t, "general": 2.0}, "metrics": {}} for s, t in ((3, 0.9), (6, 0.03), (9, 0.02))]
    verdicts = memorization_verdicts(history, {"medical": 46, "general": 300})
    assert verdicts["medical"] == {"verdict": "memorizing", "since_step": 6,
                                   "reason": "memorizing: train loss 0.020 is near zero on a small set (46 records)"}
    calm = memorization_verdicts(history, {"medical": 5000, "general": 300})["medical"]
    assert calm["verdict"] == "learning" and "no validation records (split: train)" in calm["reason"]


def _candidate_history(rows):
    return [{"step": s, "stage": "s", "stage_step": s, "eval_loss": {"medical": 1.0}, "train_loss": {},
             "metrics": {"domain/medical/rouge_l": d, "general/retention": r, "general/length_ratio": n}}
            for s, d, r, n in rows]


def test_selection_takes_the_best_domain_score_that_keeps_general_ability():
    history = _candidate_history([(10, 0.2, 1.0, 1.0), (20, 0.4, 0.95, 0.9), (30, 0.6, 0.7, 0.5)])
    checkpoints = {("s", s): f"ckpt-{s}" for s in (10, 20, 30)}
    choice = select_checkpoint(history, checkpoints, ["medical"], 0.9, 0.8)
    assert choice["step"] == 20 and "2 of 3 checkpoints" in choice["reason"]
    # Nothing qualifies: the best trade-off, said so.
    strict = select_checkpoint(history, checkpoints, ["medical"], 1.01, 1.01)
    assert strict["step"] in (10, 20) and "no checkpoint keeps" in strict["reason"]
    # Evaluations without a checkpoint cannot be chosen.
    assert select_checkpoint(history, {("s", 30): "c"}, ["medical"], 0.9, 0.8)["step"] == 30
    assert select_checkpoint(history, {}, ["medical"], 0.9, 0.8) is None


def test_kl_to_base_is_zero_for_a_fresh_adapter_and_grows_with_training(tiny_model_dir):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from medsft.eval.drift import kl_to_base

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                           LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
    pairs = [([5, 6, 7, 8], [9, 10, 11]), ([12, 13], [14, 15, 16, 17])]
    assert kl_to_base(model, pairs, pad_id=0) == pytest.approx(0.0, abs=1e-6)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.add_(0.05 * torch.randn_like(param))
    assert kl_to_base(model, pairs, pad_id=0) > 1e-4
    full = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert kl_to_base(full, pairs, pad_id=0) is None  # no adapter: no base without a second copy


def _run(tmp_path, tiny_model_dir, *overrides):
    from sample_data import write_sample
    from medsft.recipe import load_recipe
    from medsft.pipeline.run import train

    import yaml

    files = write_sample(tmp_path / "data")
    probes = tmp_path / "choice.jsonl"
    probes.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in [
        {"question": "Which drug lowers a fever?", "options": {"A": "Paracetamol", "B": "Sand"}, "answer": "A"},
        {"question": "发烧时应该怎么办？", "options": {"A": "多喝水并休息", "B": "跑马拉松"}, "answer": "A"},
    ]) + "\n", encoding="utf-8")
    knowledge = tmp_path / "facts.jsonl"
    knowledge.write_text(json.dumps({"question": "What is hypertension?", "facts": ["blood pressure"]}) + "\n")
    tree = {
        "model": {"name_or_path": str(tiny_model_dir), "template": "qwen"},
        "finetune": {"method": "lora", "lora": {"rank": 4, "alpha": 8, "dropout": 0.0}},
        "data": {"sources": [{"name": "medical", "path": str(files["medical"]), "role": "domain"},
                             {"name": "general", "path": str(files["general"]), "role": "general"}],
                 "val_fraction": 0.15},
        "stages": [{"name": "mixed", "epochs": 1, "weights": {"medical": 0.7, "general": 0.3}, "max_steps": 6}],
        "train": {"learning_rate": 5e-3, "batch_size": 4, "logging_steps": 1, "seed": 3},
        "monitor": {"eval_every": 2, "max_general_probes": 8, "domain_probes": 4, "max_new_tokens": 16,
                    "probe_files": [str(probes), str(knowledge)]},
        "output_dir": str(tmp_path / "run"),
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(tree, allow_unicode=True), encoding="utf-8")
    return train(load_recipe(path, list(overrides)), log=lambda *_: None)


def test_probe_metrics_land_in_metrics_jsonl_with_stable_names(tmp_path, tiny_model_dir):
    result = _run(tmp_path, tiny_model_dir)
    run = result.run_dir
    events = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    evals = [e for e in events if e["event"] == "eval"]
    assert [e["stage_step"] for e in evals] == [2, 4, 6]  # every 2 steps; the stage's end (6) only once
    for name in ["eval_loss", "eval_loss/medical", "general/length_ratio", "general/kl_to_base", "general/eos_rate",
                 "general/distinct_2", "general/accuracy", "domain/medical/rouge_l", "choice/choice/accuracy",
                 "knowledge/facts/accuracy"]:
        assert all(name in e for e in evals), name
    assert all(0 <= e["choice/choice/accuracy"] <= 1 and e["general/kl_to_base"] >= 0 for e in evals)
    base = json.loads((run / "monitor" / "base.json").read_text())
    assert len(base["answers"]["general"]) == 8 and "general/median_tokens" in base["scores"]
    assert (run / "monitor" / "samples.jsonl").exists()
    verdicts = json.loads((run / "monitor" / "verdicts.json").read_text())
    assert set(verdicts) == {"medical", "general"}

    selection = json.loads((run / "selection.json").read_text())
    chosen = Path(selection["checkpoint"]) / "adapter_model.safetensors"
    assert selection["reason"] and chosen.exists() and len(selection["candidates"]) == 3
    assert chosen.read_bytes() == (run / "adapter" / "adapter_model.safetensors").read_bytes()


def test_early_stop_on_memorization(tmp_path, tiny_model_dir):
    # A threshold no loss is under... inverted: every train loss counts as "near zero" on a small set.
    result = _run(tmp_path, tiny_model_dir, "monitor.near_zero_loss=100", "monitor.early_stop=true",
                  "monitor.probes=false")
    events = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    verdicts = [e for e in events if e["event"] == "verdict"]
    assert sorted(v["verdict"].split(":")[1].strip() for v in verdicts) == ["general", "medical"]
    assert max(e["stage_step"] for e in events if e["event"] == "train") < 6


def test_the_qwen_example_recipe_runs_on_a_tiny_model(tmp_path, tiny_model_dir, capsys):
    """The example a user copies: metrics, verdicts, a selected checkpoint and a report."""
    from medsft.cli import main
    from sample_data import write_sample

    files = write_sample(tmp_path / "data")
    example = Path(__file__).parent.parent / "examples" / "recipes" / "qwen2.5-7b-lora-mix.yaml"
    overrides = [f"model.name_or_path={tiny_model_dir}", f"data.sources.0.path={files['medical']}",
                 f"data.sources.1.path={files['general']}", "data.val_fraction=0.1", "finetune.lora.rank=4",
                 "train.grad_accum=1", "stages.0.max_steps=2", "stages.1.max_steps=4", "monitor.eval_every=2",
                 "monitor.max_general_probes=6", "monitor.max_new_tokens=12", f"output_dir={tmp_path / 'run'}"]
    assert main(["train", str(example), *[arg for o in overrides for arg in ("--set", o)]]) == 0
    run = tmp_path / "run"
    events = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert {e["stage"] for e in events if e["event"] == "eval"} == {"general-warmup", "mixed"}
    assert json.loads((run / "monitor" / "verdicts.json").read_text())
    assert json.loads((run / "selection.json").read_text())["reason"]
    assert (run / "report.html").exists() and (run / "adapter" / "adapter_model.safetensors").exists()
    out = capsys.readouterr().out
    assert "selected step" in out and "report.html" in out


@pytest.mark.parametrize("adapter", [False, True])
def test_shrinking_greedy_decoding_matches_generate(tiny_model_dir, tiny_tokenizer, monkeypatch, adapter):
    """Dropping finished answers from the batch changes the cost, never the tokens."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    import medsft.eval.generate as generation

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    if adapter:
        model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", lora_dropout=0.1))
        with torch.no_grad():
            for name, param in model.named_parameters():
                if "lora_B" in name:
                    param.add_(0.05 * torch.randn_like(param))
    prompts = ["Fever", "What helps a headache after a long day at work?", "高血压患者应该注意什么？", "List three fruits."]
    assert generation._native(model)
    # Stop on tokens taken from different points of the free answers, so answers end at different
    # steps and the batch shrinks while others go on.
    free = []
    for prompt in prompts:
        ids = torch.tensor([tiny_tokenizer(prompt, add_special_tokens=False)["input_ids"]])
        free.append(generation._greedy_hf(model, ids, torch.ones_like(ids), [tiny_tokenizer.eos_token_id], 0, 24)[0])
    stops = sorted({free[0][3], free[1][9]})
    chat = _RawChat(tiny_tokenizer, None)
    chat.stop_ids = stops
    shrinking = generation.generate(model, chat, prompts, 24, 3, label=None)
    monkeypatch.setattr(generation, "_native", lambda m: False)
    reference = generation.generate(model, chat, prompts, 24, 3, label=None)
    assert shrinking == reference
    assert len({g.tokens for g in reference}) > 1 and any(g.stopped for g in reference)


class _RawChat(Chat):
    """Prompts sent as they are, without a chat template."""

    def prompt(self, question: str) -> str:
        return question


def test_a_probe_budget_the_base_already_fills_is_said_before_training(tmp_path, monkeypatch):
    """Capped base answers hide shortening (seen on SmolLM2): the monitor says so when it meets them."""
    import medsft.monitor.monitor as module
    from medsft.eval import names

    median = names.metric(names.GENERAL, names.MEDIAN_TOKENS)
    scores = {median: 48.0}
    monkeypatch.setattr(module, "flat_scores", lambda results: dict(scores))
    monkeypatch.setattr(module.Monitor, "_ask", lambda self, model, label: {})
    lines = []
    monitor = module.Monitor(SimpleNamespace(max_new_tokens=48), [], chat=None, run_dir=tmp_path, log=lines.append)
    monitor.compute_base(model=None)
    assert any("reaches monitor.max_new_tokens (48)" in line for line in lines)
    lines.clear()
    scores[median] = 20.0  # room to answer: nothing to say
    (tmp_path / "monitor" / "base.json").unlink()
    monitor.compute_base(model=None)
    assert not lines


def test_selection_reason_names_only_what_was_measured():
    from medsft.eval import names
    from medsft.monitor.selection import select_checkpoint

    history = [{"step": s, "stage": "a", "stage_step": s, "eval_loss": {"medical": 2.0 - s / 10},
                "metrics": {names.RETENTION: None, names.LENGTH_RATIO: 0.9}} for s in (1, 2)]
    chosen = select_checkpoint(history, {("a", 1): "c1", ("a", 2): "c2"}, ["medical"], 0.9, 0.5)
    assert chosen["checkpoint"] == "c2"
    assert "that keep length ratio >= 0.5;" in chosen["reason"] and "retention >=" not in chosen["reason"]
    assert "general retention was not measured" in chosen["reason"]
    for entry in history:
        entry["metrics"][names.RETENTION] = 0.95
    reason = select_checkpoint(history, {("a", 1): "c1", ("a", 2): "c2"}, ["medical"], 0.9, 0.5)["reason"]
    assert reason.endswith("checkpoints that keep general retention >= 0.9 and length ratio >= 0.5")
