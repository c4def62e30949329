"""`medsft train`: recipe -> run directory. Reads top to bottom as the run happens."""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
import math
import os
import time
from pathlib import Path

from medsft.data.prepare import PreparedData, prepare_data, write_rejects
from medsft.data.templates import get_template
from medsft.errors import UserError
from medsft.train.model import choose_dtype, load_model, load_tokenizer


@dataclass
class TrainResult:
    run_dir: Path
    model: object  # the trained model (a PeftModel for LoRA), still in memory


def train(recipe, log=print) -> TrainResult:
    """Run every stage of the recipe and write the run directory."""
    started = time.time()
    run_dir = Path(recipe.output_dir)
    if recipe.train.report_to == "tensorboard" and not (
        importlib.util.find_spec("tensorboard") or importlib.util.find_spec("tensorboardX")
    ):
        raise UserError("train.report_to: tensorboard is not installed (pip install tensorboard)")

    tokenizer, template, prepared = prepare(recipe)
    from medsft.monitor.watch import build_suite

    roles = {s.name: s.role for s in recipe.data.sources}
    held_out = {name: [prepared.conversations[i] for i in rows]
                for name, rows in prepared.val_pools.items() if roles[name] == "domain"}
    suite = build_suite(recipe.monitor, held_out)  # probe files are checked before the model loads

    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "recipe.yaml").write_text(recipe.to_yaml(), encoding="utf-8")
    metrics_path = run_dir / "metrics.jsonl"
    metrics_path.unlink(missing_ok=True)
    if prepared.rejects:
        write_rejects(prepared.rejects, run_dir / "rejects.jsonl")
    _write_json(run_dir / "data_manifest.json", prepared.manifest)
    _report_data(prepared, log)

    import transformers

    transformers.set_seed(recipe.train.seed)
    model = load_model(recipe, tokenizer)
    monitor = _monitor(recipe, suite, tokenizer, template, prepared, run_dir, log)
    encoded = prepared.encoded.add_column("source_id", prepared.source_index)
    encoded = encoded.add_column("record_index", list(range(len(encoded))))
    val_sets = {
        name: encoded.select(rows) for name, rows in prepared.val_pools.items() if rows
    }
    if recipe.monitor.probes:
        log("probing the base model (answers cached in monitor/base.json)")
        monitor.compute_base(model)
    step = 0
    for stage, plan in zip(recipe.resolved_stages, prepared.plans):
        log(f"stage {stage.name}: {len(plan.order)} records, "
            + ", ".join(f"{k} {v:.1%}" for k, v in plan.realized_share_samples.items()))
        trainer = _stage_trainer(recipe, stage, model, tokenizer, encoded.select(plan.order), val_sets,
                                 prepared.source_names, run_dir, step, monitor, log,
                                 [c.provenance for c in prepared.conversations])
        trainer.train()
        already = monitor.history and (monitor.history[-1]["stage"], monitor.history[-1]["stage_step"]) == (
            stage.name, trainer.state.global_step)
        if (val_sets or recipe.monitor.probes) and not already:  # every stage ends with an evaluation
            trainer.evaluate()
        _save_stage_end(trainer, run_dir / "checkpoints" / stage.name)
        prepared.manifest["stages"][recipe.resolved_stages.index(stage)]["steps"] = trainer.state.global_step
        step += trainer.state.global_step
        if trainer.control.should_training_stop and trainer.state.global_step < trainer.state.max_steps:
            log(f"stopped in stage {stage.name}; later stages are skipped")
            break

    final = run_dir / ("adapter" if recipe.finetune.method == "lora" else "model")
    model.save_pretrained(final)
    tokenizer.save_pretrained(final)
    _finish_monitor(recipe, monitor, run_dir, final, started, log)
    _write_json(run_dir / "data_manifest.json", prepared.manifest)
    from medsft.report.html import write_report

    report = write_report(run_dir)
    log(f"run directory: {run_dir}  (weights in {final.name}/, metrics in metrics.jsonl, report {report.name})")
    return TrainResult(run_dir, model)


def _monitor(recipe, suite, tokenizer, template, prepared, run_dir: Path, log):
    from medsft.monitor.watch import Monitor

    sizes = {name: len(rows) for name, rows in prepared.train_pools.items()}
    return Monitor(recipe.monitor, suite, tokenizer, template, run_dir, recipe.model.system_prompt, sizes, log)


def _finish_monitor(recipe, monitor, run_dir: Path, final: Path, started: float, log) -> None:
    """Verdicts and the selected checkpoint, written to the run directory; the choice becomes `final`."""
    import shutil

    from medsft.monitor.select import select_checkpoint

    monitor.update_verdicts()
    _write_json(run_dir / "monitor" / "overhead.json",
                {"monitor_seconds": round(monitor.seconds, 3), "run_seconds": round(time.time() - started, 3),
                 "phases": {k: round(v, 3) for k, v in monitor.phase_seconds.items()}})
    for source, verdict in sorted(monitor.verdicts.items()):
        log(f"{source}: {verdict['reason']}")
    _write_json(run_dir / "monitor" / "verdicts.json", monitor.verdicts)
    if not recipe.monitor.select.enabled:
        return
    checkpoints = {
        (p.parent.name, int(p.name.split("-")[1])): str(p)
        for p in (run_dir / "checkpoints").glob("*/checkpoint-*") if p.name.split("-")[1].isdigit()
    }
    domain_sources = [s.name for s in recipe.data.sources if s.role == "domain"]
    choice = select_checkpoint(monitor.history, checkpoints, domain_sources,
                               recipe.monitor.select.min_general_retention, recipe.monitor.select.min_length_ratio)
    if choice is None:
        return
    last = monitor.history[-1]
    if (choice["stage"], choice["step"]) != (last["stage"], last["step"]):
        for item in Path(choice["checkpoint"]).iterdir():
            if item.suffix in (".safetensors", ".json") and not item.name.startswith(("trainer_state", "training_args")):
                shutil.copy2(item, final / item.name)
    _write_json(run_dir / "selection.json", choice)
    log(f"selected step {choice['step']} ({choice['stage']}) as {final.name}/: {choice['reason']}")


def prepare(recipe):
    """Tokenizer, template and prepared data. Everything a user can get wrong is caught here, before weights load."""
    tokenizer = load_tokenizer(recipe.model)
    template = get_template(recipe.model.template, tokenizer)
    return tokenizer, template, prepare_data(recipe, tokenizer, template)


def write_mix(recipe, out: str | Path, stage_name: str | None = None, log=print) -> Path:
    """`medsft data mix`: the records each stage trains on, in training order, and the manifest."""
    _, _, prepared = prepare(recipe)
    names = [s.name for s in recipe.resolved_stages]
    if stage_name is not None and stage_name not in names:
        raise UserError(f"--stage: no stage {stage_name!r} (stages: {', '.join(names)})")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    with open(out, "w", encoding="utf-8") as handle:
        for name, plan in zip(names, prepared.plans):
            if stage_name is not None and name != stage_name:
                continue
            for position, index in enumerate(plan.order):
                record = prepared.conversations[index].to_json()
                record["stage"], record["position"] = name, position
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
                written += 1
    manifest_path = out.with_name(out.stem + ".manifest.json")
    _write_json(manifest_path, prepared.manifest)
    if prepared.rejects:
        write_rejects(prepared.rejects, out.with_name(out.stem + ".rejects.jsonl"))
    _report_data(prepared, log)
    log(f"wrote {written} records to {out}; manifest {manifest_path}")
    return out


def _stage_trainer(recipe, stage, model, tokenizer, train_set, val_sets, source_names, run_dir, step_offset,
                   monitor=None, log=print, provenance=None):
    import torch
    from transformers import TrainingArguments

    from medsft.train.trainer import Collator, MedsftTrainer, MetricsWriter

    cfg = recipe.train
    _, mixed = choose_dtype(recipe.model.dtype, recipe.finetune.method)
    per_step = cfg.batch_size * cfg.grad_accum
    steps = math.ceil(len(train_set) / per_step)
    if stage.max_steps:
        steps = min(steps, stage.max_steps)
    every = recipe.monitor.eval_every
    # Selection chooses among evaluated checkpoints, so evaluations also save unless save_steps says otherwise.
    save_steps = cfg.save_steps or (every if recipe.monitor.select.enabled else None)
    args = TrainingArguments(
        output_dir=str(run_dir / "checkpoints" / stage.name),
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        num_train_epochs=1,  # the stage's epochs are already laid out in train_set, in order
        max_steps=stage.max_steps or -1,
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
        eval_strategy="steps" if every else "no",
        eval_steps=every,
        save_strategy="steps" if save_steps else "no",
        save_steps=save_steps or 500,
        save_total_limit=cfg.save_total_limit,
        bf16=mixed == "bf16",
        fp16=mixed == "fp16",
        gradient_checkpointing=False,  # enabled on the model itself before PEFT wraps it
        remove_unused_columns=False,
        include_num_input_tokens_seen="non_padding",
        report_to=[] if cfg.report_to == "none" else [cfg.report_to],
        dataloader_num_workers=0,
        use_cpu=not torch.cuda.is_available(),
    )
    if cfg.report_to == "tensorboard":  # transformers 5 takes the folder from the environment only
        os.environ["TENSORBOARD_LOGGING_DIR"] = str(run_dir / "tensorboard" / stage.name)
    multiple_of = 8 if torch.cuda.is_available() else 1
    return MedsftTrainer(
        model=model,
        args=args,
        train_dataset=train_set,
        # The Trainer wants an eval set to schedule evaluation; our evaluate() walks every source's set.
        eval_dataset=next(iter(val_sets.values()), train_set),
        data_collator=Collator(tokenizer.pad_token_id, multiple_of),
        processing_class=tokenizer,
        source_names=source_names,
        val_sets=val_sets,
        monitor=monitor,
        stage=stage.name,
        step_offset=step_offset,
        console=log,
        provenance=provenance or [],
        on_nonfinite=cfg.on_nonfinite,
        max_nonfinite_skips=cfg.max_nonfinite_skips,
        loss_spike_factor=cfg.loss_spike_factor,
        callbacks=[MetricsWriter(run_dir / "metrics.jsonl", stage.name, step_offset)],
    )


def _save_stage_end(trainer, stage_dir: Path) -> None:
    """The weights at the end of a stage, kept next to the step checkpoints."""
    target = stage_dir / f"checkpoint-{trainer.state.global_step}"
    if not target.exists():
        trainer.save_model(str(target))


def _report_data(prepared: PreparedData, log) -> None:
    totals = prepared.manifest["totals"]
    log(f"data: {totals['read']} records read, {totals['used']} used, {totals['rejected']} rejected"
        + (" (encoding cache hit)" if prepared.cache_hit else ""))
    for warning in prepared.warnings:
        log(f"warning: {warning}")


def _write_json(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
