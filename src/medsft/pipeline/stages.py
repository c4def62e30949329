"""One stage of a run: its step count, its TrainingArguments, its trainer, its end-of-stage weights."""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path

import torch
from transformers import TrainingArguments

from medsft import distributed
from medsft.errors import UserError
from medsft.eval import names
from medsft.models import choose_dtype
from medsft.train import checkpoint
from medsft.train.callbacks import EvaluateEvery, MetricsWriter
from medsft.train.collate import Collator, PackedCollator
from medsft.train.engines import deepspeed_config, fsdp_settings
from medsft.train.trainer import MedsftTrainer, StageRun

# Log events with any of these keys are evaluations in metrics.jsonl.
EVAL_PREFIXES = ("eval_",) + tuple(f"{group}/" for group in names.GROUPS)


def _records_per_step(recipe) -> int:
    """Records one optimizer step takes: batch_size x grad_accum on each process."""
    return recipe.train.batch_size * recipe.train.grad_accum * distributed.world_size()


def stage_steps(recipe, stage, records: int) -> int:
    """Optimizer steps the stage takes over `records` (its epochs are laid out in them): all of them,
    or fewer under its max_steps, which caps and never extends."""
    steps = math.ceil(records / _records_per_step(recipe))
    return min(steps, stage.max_steps) if stage.max_steps else steps


def _step_cap(recipe, stage, records: int) -> int:
    """The Trainer's max_steps: the stage's max_steps where it cuts the stage short, else -1 (one pass
    over the stage's records; the Trainer would loop over them again to reach a larger cap)."""
    return stage.max_steps if stage.max_steps and stage.max_steps < math.ceil(records / _records_per_step(recipe)) else -1


def records_trained(recipe, stage, records: int) -> int:
    """How many of the stage's `records` (in order) it trains on: all, or as many as its max_steps take
    (a stage's batches are its records in order, batch_size x grad_accum x processes a step)."""
    return min(records, stage.max_steps * _records_per_step(recipe)) if stage.max_steps else records


def save_every(recipe) -> int | None:
    """Selection chooses among evaluated checkpoints, so evaluations also save unless save_steps says otherwise."""
    return recipe.train.save_steps or (recipe.monitor.eval_every if recipe.monitor.select.enabled else None)


def training_arguments(recipe, stage, steps: int, run_dir: Path, model=None, cap: int = -1) -> TrainingArguments:
    """The HF arguments of one stage, from the recipe's train section and the stage's overrides.
    model: the model to train (FSDP wraps its decoder layers)."""
    cfg = recipe.train
    _, mixed = choose_dtype(recipe.model.dtype, recipe.finetune.method, bool(cfg.deepspeed or cfg.fsdp))
    saves = save_every(recipe)
    engine: dict = {}
    if cfg.deepspeed is not None:
        engine["deepspeed"] = deepspeed_config(cfg.deepspeed, cfg, mixed, distributed.world_size())
    if cfg.fsdp is not None:
        engine["fsdp"], engine["fsdp_config"] = fsdp_settings(cfg.fsdp, model)
    return TrainingArguments(
        output_dir=str(run_dir / "checkpoints" / stage.name),
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        num_train_epochs=1,  # the stage's epochs are already laid out in train_set, in order
        max_steps=cap,
        learning_rate=stage.learning_rate or cfg.learning_rate,
        lr_scheduler_type=cfg.scheduler,
        warmup_steps=cfg.warmup_ratio if cfg.warmup_ratio < 1 else int(cfg.warmup_ratio),
        weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.max_grad_norm,
        seed=cfg.seed,
        data_seed=cfg.seed,
        train_sampling_strategy="sequential",
        logging_steps=min(cfg.logging_steps, max(steps, 1)),
        logging_first_step=True,
        eval_strategy="no",  # EvaluateEvery schedules medsft's own evaluation
        save_strategy="steps" if saves else "no",
        save_steps=saves or 500,
        save_total_limit=None,  # medsft prunes itself: never the newest whole checkpoint, nor the best one
        bf16=mixed == "bf16",
        fp16=mixed == "fp16",
        gradient_checkpointing=False,  # enabled on the model itself before PEFT wraps it
        remove_unused_columns=False,
        include_num_input_tokens_seen="non_padding",
        report_to=[] if cfg.report_to == "none" else [cfg.report_to],
        dataloader_num_workers=0,
        use_cpu=not torch.cuda.is_available(),
        ddp_find_unused_parameters=False,  # every trainable weight takes part in each forward
        optim=cfg.optim,
        neftune_noise_alpha=cfg.neftune_alpha,
        **engine,
    )


def stage_trainer(recipe, stage, model, tokenizer, train_set, run: StageRun, monitor=None) -> MedsftTrainer:
    args = training_arguments(recipe, stage, stage_steps(recipe, stage, len(train_set)), run.run_dir, model,
                              _step_cap(recipe, stage, len(train_set)))
    if recipe.train.report_to == "tensorboard":  # transformers 5 takes the folder from the environment only
        os.environ["TENSORBOARD_LOGGING_DIR"] = str(run.run_dir / "tensorboard" / stage.name)
    multiple_of = 8 if torch.cuda.is_available() else 1
    trainer = MedsftTrainer(
        model=model,
        args=args,
        train_dataset=train_set,
        data_collator=PackedCollator() if run.padding_free else Collator(tokenizer.pad_token_id, multiple_of),
        processing_class=tokenizer,
        run=run,
        settings=recipe.train,
        monitor=monitor,
        callbacks=[EvaluateEvery(recipe.monitor.eval_every),
                   MetricsWriter(run.run_dir / "metrics.jsonl", stage.name, run.step_offset, EVAL_PREFIXES)],
    )
    # The engine asked for is the engine that trains, or the run says so before the first step.
    if recipe.train.deepspeed is not None and not trainer.is_deepspeed_enabled:
        raise UserError("train.deepspeed: the Trainer did not enable DeepSpeed (launch with --nproc, torchrun or "
                        "accelerate launch)")
    if recipe.train.fsdp is not None and not trainer.is_fsdp_enabled:
        raise UserError("train.fsdp: the Trainer did not enable FSDP (launch with --nproc, torchrun or "
                        "accelerate launch)")
    return trainer


def save_stage_end(trainer, stage_dir: Path) -> None:
    """The weights at the end of a stage, kept next to the step checkpoints (sealed like them)."""
    target = stage_dir / f"checkpoint-{trainer.state.global_step}"
    if distributed.broadcast(checkpoint.is_complete(target)):  # every process decides alike (sharded saves gather)
        return
    trainer.save_model(str(target))  # every process: the Trainer writes from the main one
    if trainer.args.should_save:
        checkpoint.seal(target)
    distributed.barrier()


def check_disk_space(recipe, model, plans, run_dir: Path) -> None:
    """Say before training, not hours into it, when the checkpoints will not fit on the disk."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if recipe.finetune.method == "lora":
        weights = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    else:
        weights = sum(p.numel() * p.element_size() for p in model.parameters())
    per_checkpoint = weights + 8 * trainable  # AdamW keeps two fp32 moments per trainable parameter
    every, limit = save_every(recipe), recipe.train.save_total_limit
    count = 0
    for stage, plan in zip(recipe.resolved_stages, plans):
        saves = (stage_steps(recipe, stage, len(plan.order)) // every if every else 0) + 1  # and the stage end
        count += min(saves, limit + 1) if limit else saves  # the limit, plus the best one kept beside it
    need = per_checkpoint * count + weights  # and the final weights
    free = shutil.disk_usage(run_dir).free
    if need > free:
        raise UserError(f"output_dir: {run_dir} has {_size(free)} free but this run will write about {_size(need)} "
                        f"({count} checkpoints of {_size(per_checkpoint)} and the final weights); free some space, "
                        "set train.save_total_limit or raise train.save_steps")


def _size(count: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if count < 1024:
            return f"{count:.1f} {unit}" if unit != "B" else f"{int(count)} B"
        count /= 1024
    return f"{count:.1f} TB"
