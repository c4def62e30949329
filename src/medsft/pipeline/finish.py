"""The end of a run: verdicts and overhead written, the selected checkpoint made the final weights."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from medsft.monitor.selection import select_checkpoint
from medsft.train import checkpoint


def finish_monitor(recipe, monitor, run_dir: Path, final: Path, started: float, log) -> None:
    """Verdicts and the selected checkpoint, written to the run directory; the choice becomes `final`."""
    monitor.update_verdicts()
    checkpoint.write_json_atomic(run_dir / "monitor" / "overhead.json",
                {"monitor_seconds": round(monitor.seconds, 3), "run_seconds": round(time.time() - started, 3),
                 "phases": {k: round(v, 3) for k, v in monitor.phase_seconds.items()}})
    for source, verdict in sorted(monitor.verdicts.items()):
        log(f"{source}: {verdict['reason']}")
    checkpoint.write_json_atomic(run_dir / "monitor" / "verdicts.json", monitor.verdicts)
    if not recipe.monitor.select.enabled:
        return
    choice = _select(recipe, monitor, run_dir)
    if choice is None:
        return
    last = monitor.history[-1]
    if (choice["stage"], choice["step"]) != (last["stage"], last["step"]):
        for item in Path(choice["checkpoint"]).iterdir():
            if item.suffix in (".safetensors", ".json") and not item.name.startswith(("trainer_state", "training_args")):
                shutil.copy2(item, final / item.name)
    checkpoint.write_json_atomic(run_dir / "selection.json", choice)
    log(f"selected step {choice['step']} ({choice['stage']}) as {final.name}/: {choice['reason']}")


def best_so_far(recipe, monitor, run_dir: Path) -> set[Path]:
    """The checkpoint selection would choose now: pruning must keep it."""
    if monitor is None or not recipe.monitor.select.enabled or not monitor.history:
        return set()
    choice = _select(recipe, monitor, run_dir)
    return {Path(choice["checkpoint"])} if choice else set()


def _select(recipe, monitor, run_dir: Path) -> dict | None:
    domain_sources = [s.name for s in recipe.data.sources if s.role == "domain"]
    select = recipe.monitor.select
    return select_checkpoint(monitor.history, checkpoint_map(run_dir), domain_sources,
                             select.min_general_retention, select.min_length_ratio)


def checkpoint_map(run_dir: Path) -> dict[tuple[str, int], str]:
    """Every whole checkpoint of the run, by (stage, step within the stage)."""
    stages = run_dir / "checkpoints"
    return {(folder.parent.name, checkpoint.checkpoint_step(folder)): str(folder)
            for stage_dir in (sorted(stages.iterdir()) if stages.is_dir() else []) if stage_dir.is_dir()
            for folder in checkpoint.complete_checkpoints(stage_dir)}
