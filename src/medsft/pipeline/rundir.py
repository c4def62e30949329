"""The run directory: claiming it (fresh, resumed or replaced) and finding where to resume."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import yaml

from medsft.errors import UserError
from medsft.train import checkpoint

# Everything medsft writes into a run directory (what --overwrite removes; nothing else is touched).
RUN_OUTPUTS = ("recipe.yaml", "metrics.jsonl", "rejects.jsonl", "augment_rejects.jsonl", "data_manifest.json", "selection.json",
               "report.html", "checkpoints", "adapter", "model", "monitor", "tensorboard")
# Where --overwrite keeps the previous run until the new one starts training (put back if it fails before).
HELD = ".medsft-previous-run"


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


def claim_run_dir(recipe, run_dir: Path, resume: str | None, overwrite: bool, log) -> ResumePoint | None:
    """Make sure output_dir is ours to write: empty, this run (resume), or replaced (overwrite).

    Returns where to resume from, or None for a fresh start. Runs before anything loads. A replaced
    run is only moved aside (`HELD`): `keep_start` deletes it once the new run starts training,
    `undo_start` puts it back if the new run fails before that."""
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"output_dir: {run_dir} is a file, not a folder")
    entries = sorted(run_dir.iterdir()) if run_dir.is_dir() else []
    ours = (run_dir / "recipe.yaml").is_file()
    if resume:
        if ours:
            _check_same_recipe(recipe, run_dir)
            for folder in checkpoint.remove_partial(run_dir / "checkpoints"):
                log(f"removed an incomplete checkpoint left by an interrupted save: {folder}")
            point = resume_point(recipe, run_dir)
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
        _check_inputs_outside(recipe, run_dir)
        held = run_dir / HELD
        _remove(held)  # a replacement that was killed before it started training
        held.mkdir()
        for name in RUN_OUTPUTS:
            if (run_dir / name).exists() or (run_dir / name).is_symlink():
                os.replace(run_dir / name, held / name)
        log(f"--overwrite: the previous run in {run_dir} is set aside until this one starts training")
    return None


def undo_start(run_dir: Path) -> None:
    """What a fresh or replacing run wrote before training started, removed; the run it replaced put back."""
    for name in RUN_OUTPUTS:
        _remove(run_dir / name)
    held = run_dir / HELD
    if held.is_dir():
        for entry in held.iterdir():
            os.replace(entry, run_dir / entry.name)
        held.rmdir()


def keep_start(run_dir: Path) -> None:
    """The new run trains: the run it replaces goes."""
    _remove(run_dir / HELD)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _input_paths(recipe):
    """(field, path) of every local file or folder the recipe reads."""
    yield "model.name_or_path", recipe.model.name_or_path
    if recipe.finetune.lora.init_from:
        yield "finetune.lora.init_from", recipe.finetune.lora.init_from
    for i, source in enumerate(recipe.data.sources):
        yield f"data.sources.{i}.path", source.path
        rewrite = source.augment.rewrite if source.augment else None
        if rewrite is not None and rewrite.model_path:
            yield f"data.sources.{i}.augment.rewrite.model_path", rewrite.model_path
    for field_name in ("general_probes", "probe_files"):
        for i, path in enumerate(getattr(recipe.monitor, field_name)):
            yield f"monitor.{field_name}.{i}", path


def _check_inputs_outside(recipe, run_dir: Path) -> None:
    """--overwrite replaces the run in run_dir: nothing the new run reads may live in it."""
    replaced = [(run_dir / name).resolve() for name in RUN_OUTPUTS]
    for field_name, path in _input_paths(recipe):
        if not Path(path).exists():
            continue  # a hub id, a built-in probe set, an hf: dataset
        resolved = Path(path).resolve()
        if any(resolved == output or output in resolved.parents for output in replaced):
            raise UserError(f"{field_name}: {path} is part of the run in {run_dir} that --overwrite would replace; "
                            "copy it out first, or use another output_dir")


def recipe_differences(recipe, run_dir: Path, flag: str = "--resume") -> list[str]:
    """The fields in which `recipe` differs from the run's recipe.yaml (output_dir aside)."""
    try:
        before = yaml.safe_load((run_dir / "recipe.yaml").read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as error:
        raise UserError(f"{flag}: cannot read {run_dir / 'recipe.yaml'}: {error}") from None
    now = yaml.safe_load(recipe.to_yaml())
    before.pop("output_dir", None)
    now.pop("output_dir", None)
    return _differences(before, now)


def _check_same_recipe(recipe, run_dir: Path) -> None:
    changed = recipe_differences(recipe, run_dir)
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


def resume_point(recipe, run_dir: Path) -> ResumePoint | None:
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


def truncate(path: Path, size: int) -> None:
    if path.exists() and path.stat().st_size > size:
        with open(path, "r+b") as handle:
            handle.truncate(size)
