"""Checkpoints that are whole or absent.

A checkpoint is written into `checkpoint-N`, flushed to disk, and sealed last by a manifest of
its file sizes and SHA-256 hashes (written atomically): a folder without a whole manifest is
partial, whatever it holds. Partial folders are never loaded and are removed on the next start.

Each resumable checkpoint also carries `medsft_state.json`: everything medsft itself adds to
training (loss accumulators, guard counters, monitor history, how far metrics.jsonl had got), so
a resumed run continues exactly where the checkpoint was taken. Later features add their state there.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from safetensors.torch import load_file

MANIFEST = "medsft_manifest.json"
STATE = "medsft_state.json"
PARTIAL = ".partial-"
STAGE_COMPLETE = "complete.json"


def checkpoint_step(folder: Path) -> int | None:
    prefix, _, number = folder.name.partition("-")
    return int(number) if prefix == "checkpoint" and number.isdigit() else None


def seal(folder: Path) -> None:
    """Make a fully written checkpoint folder whole: its manifest is written last, atomically.

    Until then the folder has no manifest and counts as partial (never loaded, removed on the
    next start), so a crash at any moment leaves either a whole checkpoint or a partial one."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST
                   and not p.name.startswith(PARTIAL))
    for path in files:
        _fsync(path)
    manifest = {"files": {str(p.relative_to(folder)): {"bytes": p.stat().st_size, "sha256": _sha256(p)}
                          for p in files}}
    write_json_atomic(folder / MANIFEST, manifest)
    _fsync(folder)


def load_weights(model, folder: Path) -> None:
    """The trained weights of a checkpoint folder, into `model` (a LoRA adapter into a PeftModel,
    in place of its active adapter; all weights into a full model)."""
    if hasattr(model, "peft_config"):
        model.load_adapter(str(folder), adapter_name=model.active_adapter, is_trainable=True)
        return
    index = folder / "model.safetensors.index.json"
    files = sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.exists() else ["model.safetensors"]
    state = {}
    for name in files:
        state.update(load_file(folder / name))
    _, unexpected = model.load_state_dict(state, strict=False)  # tied weights are saved once
    if unexpected:
        raise ValueError(f"{folder}: weights the model does not have: {', '.join(unexpected[:3])}")


def is_complete(folder: Path, verify_hashes: bool = False) -> bool:
    """The manifest exists and every file it lists is there with its size (and hash, if asked)."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        for name, expected in manifest["files"].items():
            path = folder / name
            if path.stat().st_size != expected["bytes"]:
                return False
            if verify_hashes and _sha256(path) != expected["sha256"]:
                return False
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return True


def complete_checkpoints(stage_dir: Path) -> list[Path]:
    """The whole checkpoints of a stage, oldest first."""
    if not stage_dir.is_dir():
        return []
    found = [p for p in stage_dir.iterdir() if p.is_dir() and checkpoint_step(p) is not None and is_complete(p)]
    return sorted(found, key=checkpoint_step)


def remove_partial(checkpoints_dir: Path) -> list[Path]:
    """Remove what an interrupted save left behind: staging folders and checkpoints without a whole manifest."""
    removed = []
    for stage_dir in sorted(checkpoints_dir.iterdir()) if checkpoints_dir.is_dir() else []:
        if not stage_dir.is_dir():
            continue
        for folder in sorted(stage_dir.iterdir()):
            partial = folder.name.startswith(PARTIAL)
            broken = checkpoint_step(folder) is not None and not is_complete(folder)
            if folder.is_dir() and (partial or broken):
                shutil.rmtree(folder)
                removed.append(folder)
    return removed


def prune(stage_dir: Path, limit: int | None, protected: set[Path]) -> list[Path]:
    """Delete the oldest checkpoints beyond `limit`; never the newest whole one, nor any in `protected`."""
    if not limit:
        return []
    checkpoints = complete_checkpoints(stage_dir)
    if not checkpoints:
        return []
    keep = {checkpoints[-1].resolve()} | {p.resolve() for p in protected}
    others = [p for p in reversed(checkpoints) if p.resolve() not in keep]
    room = max(limit - sum(1 for p in checkpoints if p.resolve() in keep), 0)
    removed = others[room:]
    for folder in removed:
        shutil.rmtree(folder)
    return removed


def write_json_atomic(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(PARTIAL + path.name)
    temp.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    _fsync(temp)
    os.replace(temp, path)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync(path: Path) -> None:
    flags = os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() else 0)
    try:
        descriptor = os.open(path, flags)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)
