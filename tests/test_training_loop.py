"""Through the real training loop (MedsftTrainer driven by `train`): what each guard and option changes.

Every test runs a few steps of the tiny local Llama with probes off. Callbacks and model hooks are
added by patching MedsftTrainer.__init__ (as tests/test_resume.py's driver does, but in process).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from transformers import TrainerCallback
from transformers.models.llama.modeling_llama import LlamaDecoderLayer

# Every medsft import, in one block: re-point these when modules move.
from medsft.cli import main
from sample_data import sample_sources
from medsft.recipe import load_recipe
from medsft.pipeline.run import train
from medsft.train.callbacks import NonFiniteGradientGuard
from medsft.train.trainer import MedsftTrainer

STAGE = "only"


def _recipe_file(tmp_path: Path, model_dir: Path, name: str, *overrides: str, steps: int = 4,
                 weights: dict | None = None) -> Path:
    """One stage of `steps` optimizer steps on the sample data; no validation split, probes or selection."""
    tree = {
        "model": {"name_or_path": str(model_dir), "template": "qwen"},
        "finetune": {"method": "lora", "lora": {"rank": 4, "alpha": 8, "dropout": 0.0}},
        "data": {
            "sources": sample_sources(tmp_path / "data"),
            "val_fraction": 0.0,
        },
        "stages": [{"name": STAGE, "epochs": 1, "weights": weights or {"medical": 0.7, "general": 0.3},
                    "max_steps": steps}],
        "monitor": {"probes": False, "select": {"enabled": False}},
        "train": {"learning_rate": 1e-2, "batch_size": 2, "logging_steps": 1, "seed": 7,
                  "scheduler": "constant", "warmup_ratio": 0.0},
        "output_dir": str(tmp_path / name),
    }
    recipe = load_recipe(_write_yaml(tmp_path / f"{name}.tree.yaml", tree), list(overrides))
    return _write_yaml(tmp_path / f"{name}.yaml", yaml.safe_load(recipe.to_yaml()))


def _recipe(tmp_path: Path, model_dir: Path, name: str, *overrides: str, **kwargs):
    return load_recipe(_recipe_file(tmp_path, model_dir, name, *overrides, **kwargs))


def _write_yaml(path: Path, tree: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(tree, allow_unicode=True), encoding="utf-8")
    return path


def _train_events(run_dir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r["event"] == "train"]


def _adapter(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(run_dir / "adapter" / "adapter_model.safetensors")


def _trainable(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def _max_difference(a: dict, b: dict) -> float:
    assert a.keys() == b.keys() and a
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


def _add_callback(monkeypatch, make) -> list:
    """Every MedsftTrainer built from now on gets the callback `make(trainer)`; returns them, in order."""
    made: list = []
    init = MedsftTrainer.__init__

    def patched_init(self, *args, **kwargs):
        init(self, *args, **kwargs)
        made.append(make(self))
        self.add_callback(made[-1])

    monkeypatch.setattr(MedsftTrainer, "__init__", patched_init)
    return made


class _AtStep(TrainerCallback):
    """Applies `apply(model)` (which returns hook handles) for the one optimizer step `step` (1-based),
    removes the hooks after it, and keeps the trainable weights just before and just after that step."""

    def __init__(self, trainer, step: int, apply):
        self.trainer, self.step, self.apply = trainer, step, apply
        self.handles: list = []
        self.before: dict | None = None
        self.after: dict | None = None

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step + 1 == self.step:
            self.before = _trainable(self.trainer.model)
            self.handles = self.apply(self.trainer.model)

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            for handle in self.handles:
                handle.remove()
            self.handles = []
            self.after = _trainable(self.trainer.model)


def _inf_gradient(model) -> list:
    """One LoRA weight's gradient becomes inf in backward; the forward, and so the loss, stay finite."""
    param = next(p for n, p in model.named_parameters() if p.requires_grad and "lora_B" in n)
    return [param.register_hook(lambda grad: torch.full_like(grad, float("inf")))]


# ---- 1. a non-finite gradient with a finite loss ----

INF_STEP = 2


def test_an_inf_gradient_with_a_finite_loss_stops_the_run_naming_the_step(tmp_path, tiny_model_dir, monkeypatch, capsys):
    made = _add_callback(monkeypatch, lambda trainer: _AtStep(trainer, INF_STEP, _inf_gradient))
    path = _recipe_file(tmp_path, tiny_model_dir, "run", "train.on_nonfinite=stop")
    assert main(["train", str(path)]) == 3
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"medsft: error: step {INF_STEP} (stage {STAGE}): non-finite gradient"), err
    assert made[0].after is None  # stopped before the step's optimizer update finished
    losses = [e["train_loss"] for e in _train_events(tmp_path / "run")]
    assert len(losses) == INF_STEP - 1 and all(math.isfinite(x) for x in losses)


def test_an_inf_gradient_step_is_skipped_leaving_the_weights_as_they_were(tmp_path, tiny_model_dir, monkeypatch):
    made = _add_callback(monkeypatch, lambda trainer: _AtStep(trainer, INF_STEP, _inf_gradient))
    lines: list[str] = []
    result = train(_recipe(tmp_path, tiny_model_dir, "run", "train.on_nonfinite=skip", steps=4), log=lines.append)

    skipped = [line for line in lines if "skipped (" in line]
    assert skipped == [f"warning: step {INF_STEP} (stage {STAGE}): non-finite gradient; skipped (1/10)"]
    events = _train_events(result.run_dir)
    assert [e["stage_step"] for e in events] == [1, 2, 3, 4]
    bad = events[INF_STEP - 1]
    assert math.isfinite(bad["train_loss"]) and bad["grad_norm"] == float("inf")  # the loss was fine, the gradient not
    callback = made[0]
    # The skipped step did not move a single weight; the steps after it did.
    assert all(torch.equal(callback.before[n], callback.after[n]) for n in callback.before)
    assert _max_difference(callback.after, _trainable(result.model)) > 0
    assert all(torch.isfinite(t).all() for t in _adapter(result.run_dir).values())


def test_without_the_guard_the_inf_gradient_reaches_the_weights(tmp_path, tiny_model_dir, monkeypatch):
    """Proves the two tests above observe NonFiniteGradientGuard: switched off, nothing stops the
    inf gradient, and the optimizer writes NaN into the adapter."""
    monkeypatch.setattr(NonFiniteGradientGuard, "on_pre_optimizer_step", lambda self, *args, **kwargs: None)
    made = _add_callback(monkeypatch, lambda trainer: _AtStep(trainer, INF_STEP, _inf_gradient))
    lines: list[str] = []
    train(_recipe(tmp_path, tiny_model_dir, "run", "train.on_nonfinite=stop", steps=INF_STEP), log=lines.append)
    assert not any("non-finite gradient" in line for line in lines)
    assert not all(torch.isfinite(t).all() for t in made[0].after.values())


# ---- 2. loss spikes ----

SPIKE_STEP = 4


def _spiked_logits(model) -> list:
    """Every logit of one token raised by 100: each position's loss becomes about 100 (recent median ~6)."""
    def hook(module, inputs, output):
        bump = torch.zeros(output.shape[-1], dtype=output.dtype, device=output.device)
        bump[0] = 100.0
        return output + bump

    return [model.get_output_embeddings().register_forward_hook(hook)]


@pytest.mark.parametrize("factor, expected_warnings", [(3.0, 1), (0.0, 0)], ids=["factor-3", "factor-0-never"])
def test_a_logged_loss_far_above_its_recent_median_is_a_warning(tmp_path, tiny_model_dir, monkeypatch, factor,
                                                                 expected_warnings):
    _add_callback(monkeypatch, lambda trainer: _AtStep(trainer, SPIKE_STEP, _spiked_logits))
    lines: list[str] = []
    recipe = _recipe(tmp_path, tiny_model_dir, "run", f"train.loss_spike_factor={factor}", steps=SPIKE_STEP)
    result = train(recipe, log=lines.append)

    losses = [e["train_loss"] for e in _train_events(result.run_dir)]
    median = sorted(losses[:-1])[len(losses[:-1]) // 2]
    assert losses[-1] > 10 * median  # the spike reached the logged loss in both runs
    spikes = [line for line in lines if "its recent median" in line]
    assert len(spikes) == expected_warnings
    if expected_warnings:
        assert re.fullmatch(rf"warning: step {SPIKE_STEP} \(stage {STAGE}\): train loss [0-9.]+ is "
                            rf"{losses[-1] / median:.1f}x its recent median", spikes[0]), spikes[0]


# ---- 3. gradient accumulation ----

def _count_supervised_tokens_per_micro_batch(monkeypatch) -> list[int]:
    counts: list[int] = []
    compute_loss = MedsftTrainer.compute_loss

    def counting(self, model, inputs, *args, **kwargs):
        counts.append(int((inputs["labels"][:, 1:] != -100).sum()))
        return compute_loss(self, model, inputs, *args, **kwargs)

    monkeypatch.setattr(MedsftTrainer, "compute_loss", counting)
    return counts


def test_two_accumulated_half_batches_take_the_same_step_as_the_whole_batch(tmp_path, tiny_model_dir, monkeypatch):
    """The loss is the mean over the supervised tokens of the accumulated batch: 4x1 and 2x2 agree.
    The two halves hold different numbers of answer tokens, so a mean per micro-batch would not."""
    counts = _count_supervised_tokens_per_micro_batch(monkeypatch)
    runs = {}
    for name, batch, accum in [("whole", 4, 1), ("accumulated", 2, 2)]:
        recipe = _recipe(tmp_path, tiny_model_dir, name, f"train.batch_size={batch}", f"train.grad_accum={accum}",
                         "train.max_grad_norm=1e9", steps=1, weights={"medical": 1.0})
        runs[name] = train(recipe, log=lambda *_: None).run_dir
    whole, first, second = counts
    assert first + second == whole and first != second  # the same records, split unevenly

    assert _max_difference(_adapter(runs["whole"]), _adapter(runs["accumulated"])) < 1e-5
    assert max(float(t.abs().max()) for t in _adapter(runs["whole"]).values()) > 1e-3  # the step moved the weights
    (one,), (other,) = (_train_events(runs[name]) for name in ["whole", "accumulated"])
    assert other["train_loss"] == pytest.approx(one["train_loss"], rel=1e-6)
    # Adam's first step is nearly sign(gradient), blind to the gradient's scale; the logged norm is not.
    assert other["grad_norm"] == pytest.approx(one["grad_norm"], rel=1e-4)


# ---- 4. gradient checkpointing ----

class _CountAttentionCalls(TrainerCallback):
    """How many times the decoder layers' attention runs in each optimizer step, recomputation included.
    (transformers checkpoints a layer's `forward` inside its hooks, so the layer's own hooks fire once;
    the modules it calls fire again when backward replays it.)"""

    def __init__(self, trainer):
        self.trainer = trainer
        self.calls = 0
        self.per_step: list[int] = []

    def on_train_begin(self, args, state, control, **kwargs):
        for module in self.trainer.model.modules():
            if isinstance(module, LlamaDecoderLayer):
                module.self_attn.register_forward_pre_hook(self._count)

    def _count(self, module, args):
        self.calls += 1

    def on_step_begin(self, args, state, control, **kwargs):
        self.calls = 0

    def on_step_end(self, args, state, control, **kwargs):
        self.per_step.append(self.calls)


def test_gradient_checkpointing_recomputes_the_layers_and_trains_the_same_weights(tmp_path, tiny_model_dir, monkeypatch):
    made = _add_callback(monkeypatch, _CountAttentionCalls)
    runs = {}
    for flag in ["false", "true"]:
        recipe = _recipe(tmp_path, tiny_model_dir, f"checkpointing-{flag}", f"train.gradient_checkpointing={flag}",
                         steps=3)
        runs[flag] = train(recipe, log=lambda *_: None).run_dir
    plain, checkpointed = (callback.per_step for callback in made)
    layers = json.loads((tiny_model_dir / "config.json").read_text())["num_hidden_layers"]
    assert plain == [layers] * 3  # one attention forward per layer per step
    assert checkpointed == [2 * layers] * 3  # and each recomputed once in backward

    assert _max_difference(_adapter(runs["false"]), _adapter(runs["true"])) < 1e-5
    losses = [[e["train_loss"] for e in _train_events(runs[flag])] for flag in ["false", "true"]]
    assert losses[1] == pytest.approx(losses[0], abs=1e-6)


# ---- 5. the learning-rate schedule ----

def _schedule(name: str, step: int, warmup: int, total: int) -> float:
    """The multiplier of the peak rate at scheduler step `step` (0-based), written out independently."""
    if name == "constant":
        return 1.0
    if step < warmup:
        return step / warmup
    if name == "constant_with_warmup":
        return 1.0
    progress = (step - warmup) / (total - warmup)
    return 0.5 * (1 + math.cos(math.pi * progress)) if name == "cosine" else max(0.0, 1 - progress)


@pytest.mark.parametrize("scheduler", ["cosine", "linear", "constant", "constant_with_warmup"])
def test_logged_learning_rates_follow_the_recipes_schedule(tmp_path, tiny_model_dir, scheduler):
    peak, total = 1e-2, 8
    recipe = _recipe(tmp_path, tiny_model_dir, "run", f"train.scheduler={scheduler}", "train.warmup_ratio=0.25",
                     f"train.learning_rate={peak}", steps=total)
    events = _train_events(train(recipe, log=lambda *_: None).run_dir)
    warmup = 2  # ceil(0.25 x 8)
    assert [e["stage_step"] for e in events] == list(range(1, total + 1))
    # The rate logged at step n is the one step n's update used: the schedule before its n-th advance.
    expected = [peak * _schedule(scheduler, e["stage_step"] - 1, warmup, total) for e in events]
    assert [e["learning_rate"] for e in events] == pytest.approx(expected, abs=1e-9)
    if scheduler == "constant":
        assert len({e["learning_rate"] for e in events}) == 1


# ---- 6. golden values ----

# The first five logged train losses of a fixed tiny run: _recipe_file's recipe with the overrides below,
# on the tiny model (built byte-identically from a fixed seed), with padding-free batches (the default) and
# with padded ones. They move when anything on the training path moves: data order, chat template,
# tokenization, masking, loss normalization, model code, LoRA init, dropout RNG, optimizer or schedule.
# Regenerate them deliberately when model code (or torch, transformers, peft) changes: print `losses`,
# paste them with 6 significant digits, and give the reason in the commit. (The two differ after the first
# step: LoRA dropout draws its masks over the packed row, not over the padded batch.)
GOLDEN_LOSSES = {
    "padding-free": [6.24662, 6.21043, 6.27184, 6.24048, 6.18183],
    "padded": [6.24662, 6.20323, 6.26938, 6.23786, 6.18132],
}


@pytest.mark.parametrize("batches", ["padding-free", "padded"])
def test_a_fixed_tiny_run_logs_the_pinned_losses(tmp_path, tiny_model_dir, batches):
    recipe = _recipe(tmp_path, tiny_model_dir, "run", "finetune.lora.dropout=0.1", "train.learning_rate=0.02",
                     "train.scheduler=cosine", "train.warmup_ratio=0", f"train.padding_free={batches == 'padding-free'}",
                     steps=5)
    losses = [e["train_loss"] for e in _train_events(train(recipe, log=lambda *_: None).run_dir)]
    assert losses == pytest.approx(GOLDEN_LOSSES[batches], abs=1e-4)
