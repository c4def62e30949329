"""Checkpoints that are whole or absent.

A checkpoint is written into a hidden `.partial-checkpoint-N` folder next to where it belongs,
listed in a manifest of file sizes and SHA-256 hashes, flushed to disk, and only then renamed to
`checkpoint-N`: a crash mid-write leaves a partial folder, never a checkpoint that looks whole.
Partial folders are never loaded and are removed on the next start.

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

MANIFEST = "medsft_manifest.json"
STATE = "medsft_state.json"
PARTIAL = ".partial-"
STAGE_COMPLETE = "complete.json"


def checkpoint_step(folder: Path) -> int | None:
    prefix, _, number = folder.name.partition("-")
    return int(number) if prefix == "checkpoint" and number.isdigit() else None


def staging_folder(final: Path, clear: bool = True) -> Path:
    """The folder to write a checkpoint into, as `staging/<final's name>`, before `publish`.

    Cleared of any earlier attempt, except when another process (rank 0) does that."""
    staging = final.with_name(PARTIAL + final.name)
    if clear:
        shutil.rmtree(staging, ignore_errors=True)
    return staging


def publish(staging: Path, final: Path) -> None:
    commit(staging / final.name, final)
    staging.rmdir()


def commit(written: Path, final: Path) -> None:
    """Manifest, fsync, rename: after this returns `final` is whole; before, it does not exist."""
    files = sorted(p for p in written.rglob("*") if p.is_file())
    manifest = {"files": {str(p.relative_to(written)): {"bytes": p.stat().st_size, "sha256": _sha256(p)}
                          for p in files}}
    (written / MANIFEST).write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    for path in files + [written / MANIFEST]:
        _fsync(path)
    if final.exists():  # an incomplete leftover under the final name (never a complete one: see is_complete)
        shutil.rmtree(final)
    os.replace(written, final)
    _fsync(final.parent)


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
