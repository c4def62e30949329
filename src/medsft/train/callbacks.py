"""Trainer callbacks: when to evaluate, sealing checkpoints, the gradient guard, metrics.jsonl."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from transformers import TrainerCallback

from medsft.train import checkpoint


class EvaluateEvery(TrainerCallback):
    """Evaluation every `every` steps and at the last step of the stage (the Trainer's own schedule
    would need an eval dataset; medsft's evaluation walks every source's validation set itself)."""

    def __init__(self, every: int | None):
        self.every = every

    def on_step_end(self, args, state, control, **kwargs):
        if self.every and (state.global_step % self.every == 0 or state.global_step >= state.max_steps):
            control.should_evaluate = True


class SealCheckpoints(TrainerCallback):
    """After the Trainer has written checkpoint-N: medsft's state, then the manifest (last, so that
    a checkpoint is whole or partial, never in between), then pruning."""

    def __init__(self, trainer):
        self.trainer = trainer

    def on_save(self, args, state, control, **kwargs):
        trainer = self.trainer
        trainer.accelerator.wait_for_everyone()  # every rank's shards are written before sealing
        if not args.should_save:
            return
        stage_dir = Path(args.output_dir)
        folder = stage_dir / f"checkpoint-{state.global_step}"
        state_json = json.dumps(trainer.resume_state(), ensure_ascii=False)
        (folder / checkpoint.STATE).write_text(state_json, encoding="utf-8")
        checkpoint.seal(folder)
        if trainer.settings.save_total_limit:
            checkpoint.prune(stage_dir, trainer.settings.save_total_limit, trainer.run.protected_checkpoints())


class NonFiniteGradientGuard(TrainerCallback):
    """Before each optimizer step: a NaN/inf gradient stops the run, or zeroes the step (skip)."""

    def __init__(self, trainer):
        self.trainer = trainer

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        model = self.trainer.model
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        # One device sync for the whole check, not one per tensor.
        if grads and not bool(torch.stack([torch.isfinite(g).all() for g in grads]).all()):
            self.trainer.nonfinite("non-finite gradient")
            model.zero_grad()  # skip: the optimizer sees a zero gradient for this step


class MetricsWriter(TrainerCallback):
    """Appends every log event to metrics.jsonl, tagged with the stage and the run-wide step.

    eval_prefixes: metric-name prefixes that make a log event an evaluation."""

    RENAME = {"loss": "train_loss"}

    def __init__(self, path: Path, stage: str, step_offset: int, eval_prefixes: tuple[str, ...] = ("eval_",)):
        self.path = path
        self.stage = stage
        self.step_offset = step_offset
        self.eval_prefixes = eval_prefixes

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        if "verdict" in logs:
            event = "verdict"
        elif "mix_reason" in logs:  # adaptive mixing changed the stage's weights
            event = "mix"
        elif any(k.startswith(self.eval_prefixes) for k in logs):
            event = "eval"
        elif "train_samples_per_second" in logs:  # the Trainer's summary at the end of train()
            event = "stage_end"
        else:
            event = "train"
        record = {"event": event, "stage": self.stage, "step": self.step_offset + state.global_step,
                  "stage_step": state.global_step, "time": round(time.time(), 3)}
        for key, value in logs.items():
            record[self.RENAME.get(key, key)] = value
        with open(self.path, "a", encoding="utf-8") as out:
            out.write(json.dumps(record) + "\n")
