"""`medsft train`: recipe -> run directory. Reads top to bottom as the run happens."""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
import math
import os
import shutil
import time
from pathlib import Path

from medsft.data.prepare import PreparedData, prepare_data, write_rejects
from medsft.data.templates import get_template
from medsft.errors import UserError
from medsft.train import checkpoint
from medsft.train.model import choose_dtype, load_model, load_tokenizer


@dataclass
class TrainResult:
    run_dir: Path
    model: object  # the trained model (a PeftModel for LoRA), still in memory


def train(recipe, log=print, resume: str | None = None, overwrite: bool = False) -> TrainResult:
    """Run every stage of the recipe and write the run directory.

    resume: None (a fresh run), "yes" (continue from the newest whole checkpoint; there must be one)
    or "auto" (continue if there is one, else start). overwrite: replace a previous run in output_dir."""
    run_dir = Path(recipe.output_dir)
    if recipe.train.report_to == "tensorboard" and not (
        importlib.util.find_spec("tensorboard") or importlib.util.find_spec("tensorboardX")
    ):
        raise UserError("train.report_to: tensorboard is not installed (pip install tensorboard)")
    point = _claim_run_dir(recipe, run_dir, resume, overwrite, log)
    started = time.time() - (point.state.get("run_seconds", 0.0) if point else 0.0)

    tokenizer, template, prepared = prepare(recipe)
    from medsft.monitor.watch import build_suite

    roles = {s.name: s.role for s in recipe.data.sources}
    held_out = {name: [prepared.conversations[i] for i in rows]
                for name, rows in prepared.val_pools.items() if roles[name] == "domain"}
    suite = build_suite(recipe.monitor, held_out)  # probe files are checked before the model loads

    run_dir.mkdir(parents=True, exist_ok=True)
    metrics_path = run_dir / "metrics.jsonl"
    if point is None:
        (run_dir / "recipe.yaml").write_text(recipe.to_yaml(), encoding="utf-8")
        metrics_path.unlink(missing_ok=True)
        if prepared.rejects:
            write_rejects(prepared.rejects, run_dir / "rejects.jsonl")
        checkpoint.write_json_atomic(run_dir / "data_manifest.json", prepared.manifest)
    else:  # events logged after the checkpoint was taken will be logged again
        _truncate(metrics_path, point.state["metrics_bytes"])
        _truncate(run_dir / "monitor" / "samples.jsonl", point.state["samples_bytes"])
    _report_data(prepared, log)

    import transformers

    transformers.set_seed(recipe.train.seed)
    model = load_model(recipe, tokenizer)
    _check_disk_space(recipe, model, prepared, run_dir)
    monitor = _monitor(recipe, suite, tokenizer, template, prepared, run_dir, log)
    if point is not None and point.state.get("monitor"):
        monitor.load_state(point.state["monitor"])
    encoded = prepared.encoded.add_column("source_id", prepared.source_index)
    encoded = encoded.add_column("record_index", list(range(len(encoded))))
    val_sets = {
        name: encoded.select(rows) for name, rows in prepared.val_pools.items() if rows
    }
    if recipe.monitor.probes:
        log("probing the base model (answers cached in monitor/base.json)")
        monitor.compute_base(model)
    step = 0
    trainer = None
    stages = recipe.resolved_stages
    for index, (stage, plan) in enumerate(zip(stages, prepared.plans)):
        if point is not None and index < len(point.completed):  # finished before the interruption
            steps = point.completed[index]["steps"]
            prepared.manifest["stages"][index]["steps"] = steps
            step += steps
            continue
        if point is not None and point.stopped_early:  # an early stop ended the run: later stages never ran
            break
        log(f"stage {stage.name}: {len(plan.order)} records, "
            + ", ".join(f"{k} {v:.1%}" for k, v in plan.realized_share_samples.items()))
        trainer = _stage_trainer(recipe, stage, model, tokenizer, encoded.select(plan.order), val_sets,
                                 prepared.source_names, run_dir, step, monitor, log,
                                 [c.provenance for c in prepared.conversations], started)
        resume_from = None
        if point is not None and index == len(point.completed):
            if point.checkpoint is not None:
                log(f"resuming stage {stage.name} from {point.checkpoint.relative_to(run_dir)}")
                trainer.load_resume_state(point.state)
                resume_from = str(point.checkpoint)
            elif point.completed:
                log(f"resuming stage {stage.name} from its start, with the weights of "
                    f"{point.completed_checkpoint.relative_to(run_dir)}")
                trainer._load_from_checkpoint(str(point.completed_checkpoint))
        trainer.train(resume_from_checkpoint=resume_from)
        already = monitor.history and (monitor.history[-1]["stage"], monitor.history[-1]["stage_step"]) == (
            stage.name, trainer.state.global_step)
        if (val_sets or recipe.monitor.probes) and not already:  # every stage ends with an evaluation
            trainer.evaluate()
        stage_dir = run_dir / "checkpoints" / stage.name
        _save_stage_end(trainer, stage_dir)
        prepared.manifest["stages"][index]["steps"] = trainer.state.global_step
        step += trainer.state.global_step
        stopped_early = trainer.control.should_training_stop and trainer.state.global_step < trainer.state.max_steps
        checkpoint.write_json_atomic(stage_dir / checkpoint.STAGE_COMPLETE, {
            "checkpoint": f"checkpoint-{trainer.state.global_step}", "steps": trainer.state.global_step,
            "stopped_early": bool(stopped_early), "state": trainer.resume_state()})
        if stopped_early:
            log(f"stopped in stage {stage.name}; later stages are skipped")
            break
    if trainer is None and point is not None:  # every stage had finished: only the last steps remain
        trainer = _stage_trainer(recipe, stages[-1], model, tokenizer, encoded.select(prepared.plans[-1].order),
                                 val_sets, prepared.source_names, run_dir, step, monitor, log, None, started)
        trainer._load_from_checkpoint(str(point.completed_checkpoint))

    final = run_dir / ("adapter" if recipe.finetune.method == "lora" else "model")
    model.save_pretrained(final)
    tokenizer.save_pretrained(final)
    _finish_monitor(recipe, monitor, run_dir, final, started, log)
    checkpoint.write_json_atomic(run_dir / "data_manifest.json", prepared.manifest)
    from medsft.report.html import write_report

    report = write_report(run_dir)
    log(f"run directory: {run_dir}  (weights in {final.name}/, metrics in metrics.jsonl, report {report.name})")
    return TrainResult(run_dir, model)


# Everything medsft writes into a run directory (what --overwrite removes; nothing else is touched).
RUN_OUTPUTS = ("recipe.yaml", "metrics.jsonl", "rejects.jsonl", "data_manifest.json", "selection.json",
               "report.html", "checkpoints", "adapter", "model", "monitor", "tensorboard")


@dataclass
class ResumePoint:
    completed: list[dict]  # complete.json of each finished stage, in order
    checkpoint: Path | None  # the newest whole checkpoint of the first unfinished stage, if any
    state: dict  # medsft's state at that point

    @property
    def stopped_early(self) -> bool:
        return bool(self.completed and self.completed[-1]["stopped_early"])

    @property
    def completed_checkpoint(self) -> Path:
        last = self.completed[-1]
        return Path(last["folder"]) / last["checkpoint"]


def _claim_run_dir(recipe, run_dir: Path, resume: str | None, overwrite: bool, log) -> ResumePoint | None:
    """Make sure output_dir is ours to write: empty, this run (resume), or replaced (overwrite).

    Returns where to resume from, or None for a fresh start. Runs before anything loads."""
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"output_dir: {run_dir} is a file, not a folder")
    entries = sorted(run_dir.iterdir()) if run_dir.is_dir() else []
    ours = (run_dir / "recipe.yaml").is_file()
    if resume:
        if ours:
            _check_same_recipe(recipe, run_dir)
            for folder in checkpoint.remove_partial(run_dir / "checkpoints"):
                log(f"removed an incomplete checkpoint left by an interrupted save: {folder}")
            point = _resume_point(recipe, run_dir)
            if point is not None:
                return point
        elif entries:
            raise UserError(f"output_dir: {run_dir} holds files that are not a medsft run; nothing to resume")
        if resume != "auto":
            raise UserError(f"--resume: no whole checkpoint in {run_dir / 'checkpoints'} to resume from "
                            "(--resume auto starts over when there is none)")
        overwrite = True  # auto, and nothing to resume: start over in place
    if entries and not overwrite:
        what = "a previous run" if ours else "files that are not a medsft run"
        raise UserError(f"output_dir: {run_dir} is not empty ({what}); use --resume to continue it, "
                        "--overwrite to replace it, or another output_dir")
    if entries:
        for name in RUN_OUTPUTS:
            target = run_dir / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    return None


def _check_same_recipe(recipe, run_dir: Path) -> None:
    import yaml

    try:
        before = yaml.safe_load((run_dir / "recipe.yaml").read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as error:
        raise UserError(f"--resume: cannot read {run_dir / 'recipe.yaml'}: {error}") from None
    now = yaml.safe_load(recipe.to_yaml())
    before.pop("output_dir", None)
    now.pop("output_dir", None)
    changed = _differences(before, now)
    if changed:
        raise UserError(f"--resume: the recipe differs from the run's recipe.yaml ({', '.join(changed[:3])}"
                        f"{' ...' if len(changed) > 3 else ''}); resume with the same recipe, or --overwrite")


def _differences(a, b, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for key in sorted(set(a) | set(b), key=str)
                for d in _differences(a.get(key), b.get(key), f"{prefix}{key}.")]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _differences(x, y, f"{prefix}{i}.")]
    return [] if a == b else [prefix.rstrip(".")]


def _resume_point(recipe, run_dir: Path) -> ResumePoint | None:
    """The finished stages and the newest whole checkpoint with medsft state after them."""
    completed = []
    for stage in recipe.resolved_stages:
        stage_dir = run_dir / "checkpoints" / stage.name
        marker = stage_dir / checkpoint.STAGE_COMPLETE
        try:
            done = json.loads(marker.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            break
        if not checkpoint.is_complete(stage_dir / done["checkpoint"]):
            break
        completed.append({**done, "folder": str(stage_dir)})
        if done["stopped_early"]:
            return ResumePoint(completed, None, done["state"])  # the run ended there
    if len(completed) < len(recipe.resolved_stages):
        stage_dir = run_dir / "checkpoints" / recipe.resolved_stages[len(completed)].name
        resumable = [p for p in checkpoint.complete_checkpoints(stage_dir) if (p / checkpoint.STATE).is_file()]
        if resumable and checkpoint.is_complete(resumable[-1], verify_hashes=True):
            state = json.loads((resumable[-1] / checkpoint.STATE).read_text(encoding="utf-8"))
            return ResumePoint(completed, resumable[-1], state)
    if completed:
        return ResumePoint(completed, None, completed[-1]["state"])
    return None


def _truncate(path: Path, size: int) -> None:
    if path.exists() and path.stat().st_size > size:
        with open(path, "r+b") as handle:
            handle.truncate(size)


def _stage_steps(recipe, stage, records: int) -> int:
    """Optimizer steps the stage takes over `records` (its epochs are laid out in them)."""
    steps = math.ceil(records / (recipe.train.batch_size * recipe.train.grad_accum))
    return min(steps, stage.max_steps) if stage.max_steps else steps


def _save_every(recipe) -> int | None:
    """Selection chooses among evaluated checkpoints, so evaluations also save unless save_steps says otherwise."""
    return recipe.train.save_steps or (recipe.monitor.eval_every if recipe.monitor.select.enabled else None)


def _check_disk_space(recipe, model, prepared, run_dir: Path) -> None:
    """Say before training, not hours into it, when the checkpoints will not fit on the disk."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if recipe.finetune.method == "lora":
        weights = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    else:
        weights = sum(p.numel() * p.element_size() for p in model.parameters())
    per_checkpoint = weights + 8 * trainable  # AdamW keeps two fp32 moments per trainable parameter
    every, limit = _save_every(recipe), recipe.train.save_total_limit
    count = 0
    for stage, plan in zip(recipe.resolved_stages, prepared.plans):
        saves = (_stage_steps(recipe, stage, len(plan.order)) // every if every else 0) + 1  # and the stage end
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


def _monitor(recipe, suite, tokenizer, template, prepared, run_dir: Path, log):
    from medsft.monitor.watch import Monitor

    sizes = {name: len(rows) for name, rows in prepared.train_pools.items()}
    return Monitor(recipe.monitor, suite, tokenizer, template, run_dir, recipe.model.system_prompt, sizes, log)


def _finish_monitor(recipe, monitor, run_dir: Path, final: Path, started: float, log) -> None:
    """Verdicts and the selected checkpoint, written to the run directory; the choice becomes `final`."""
    from medsft.monitor.select import select_checkpoint

    monitor.update_verdicts()
    checkpoint.write_json_atomic(run_dir / "monitor" / "overhead.json",
                {"monitor_seconds": round(monitor.seconds, 3), "run_seconds": round(time.time() - started, 3),
                 "phases": {k: round(v, 3) for k, v in monitor.phase_seconds.items()}})
    for source, verdict in sorted(monitor.verdicts.items()):
        log(f"{source}: {verdict['reason']}")
    checkpoint.write_json_atomic(run_dir / "monitor" / "verdicts.json", monitor.verdicts)
    if not recipe.monitor.select.enabled:
        return
    checkpoints = _checkpoint_map(run_dir)
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
    checkpoint.write_json_atomic(run_dir / "selection.json", choice)
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
    checkpoint.write_json_atomic(manifest_path, prepared.manifest)
    if prepared.rejects:
        write_rejects(prepared.rejects, out.with_name(out.stem + ".rejects.jsonl"))
    _report_data(prepared, log)
    log(f"wrote {written} records to {out}; manifest {manifest_path}")
    return out


def _stage_trainer(recipe, stage, model, tokenizer, train_set, val_sets, source_names, run_dir, step_offset,
                   monitor=None, log=print, provenance=None, run_started: float | None = None):
    import torch
    from transformers import TrainingArguments

    from medsft.train.trainer import Collator, MedsftTrainer, MetricsWriter

    cfg = recipe.train
    _, mixed = choose_dtype(recipe.model.dtype, recipe.finetune.method)
    steps = _stage_steps(recipe, stage, len(train_set))
    every = recipe.monitor.eval_every
    save_steps = _save_every(recipe)
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
        save_total_limit=None,  # medsft prunes itself: never the newest whole checkpoint, nor the best one
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
        run_dir=run_dir,
        run_started=run_started,
        keep_checkpoints=cfg.save_total_limit,
        protected_checkpoints=lambda: _best_so_far(recipe, monitor, run_dir),
        callbacks=[MetricsWriter(run_dir / "metrics.jsonl", stage.name, step_offset)],
    )


def _save_stage_end(trainer, stage_dir: Path) -> None:
    """The weights at the end of a stage, kept next to the step checkpoints (atomically, like them)."""
    target = stage_dir / f"checkpoint-{trainer.state.global_step}"
    if checkpoint.is_complete(target) or not trainer.args.should_save:
        return
    staging = checkpoint.staging_folder(target)
    trainer.save_model(str(staging / target.name))
    checkpoint.publish(staging, target)


def _checkpoint_map(run_dir: Path) -> dict[tuple[str, int], str]:
    """Every whole checkpoint of the run, by (stage, step within the stage)."""
    stages = run_dir / "checkpoints"
    return {(folder.parent.name, checkpoint.checkpoint_step(folder)): str(folder)
            for stage_dir in (sorted(stages.iterdir()) if stages.is_dir() else []) if stage_dir.is_dir()
            for folder in checkpoint.complete_checkpoints(stage_dir)}


def _best_so_far(recipe, monitor, run_dir: Path) -> set[Path]:
    """The checkpoint selection would choose now: pruning must keep it."""
    if monitor is None or not recipe.monitor.select.enabled or not monitor.history:
        return set()
    from medsft.monitor.select import select_checkpoint

    domain_sources = [s.name for s in recipe.data.sources if s.role == "domain"]
    choice = select_checkpoint(monitor.history, _checkpoint_map(run_dir), domain_sources,
                               recipe.monitor.select.min_general_retention, recipe.monitor.select.min_length_ratio)
    return {Path(choice["checkpoint"])} if choice else set()


def _report_data(prepared: PreparedData, log) -> None:
    totals = prepared.manifest["totals"]
    log(f"data: {totals['read']} records read, {totals['used']} used, {totals['rejected']} rejected"
        + (" (encoding cache hit)" if prepared.cache_hit else ""))
    for warning in prepared.warnings:
        log(f"warning: {warning}")
