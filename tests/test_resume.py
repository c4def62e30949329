"""Crash and resume, for real: a run in a subprocess is killed with SIGKILL, then resumed, and must
end exactly where an uninterrupted run ends. Also: atomic checkpoints, pruning, output_dir claims."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from medsft.cli import main
from run_checks import adapter_weights as _adapter, max_difference as _max_difference, small_recipe as _recipe
from run_checks import with_adaptive_mix
from medsft.recipe import load_recipe
from medsft.train import checkpoint
from medsft.pipeline.run import train

# Runs `medsft train RECIPE` and stops dead (sleeps until killed) at a chosen point:
#   step N     - after run-wide step N's optimizer step, before its logs and checkpoint
#   save N     - in the middle of writing checkpoint N (weights written, optimizer not yet)
DRIVER = r"""
import sys, time
from transformers import TrainerCallback
from medsft.train.trainer import MedsftTrainer

mode, at, marker, recipe = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]

def pause():
    open(marker, "w").close()
    time.sleep(600)

if mode == "step":
    class Pause(TrainerCallback):
        def __init__(self, trainer):
            self.trainer = trainer
        def on_step_end(self, args, state, control, **kwargs):
            if self.trainer.step == at:
                pause()
    init = MedsftTrainer.__init__
    def patched_init(self, *args, **kwargs):
        init(self, *args, **kwargs)
        self.add_callback(Pause(self))
    MedsftTrainer.__init__ = patched_init
else:
    save = MedsftTrainer._save_optimizer_and_scheduler
    def patched_save(self, output_dir):
        if self.step == at:
            pause()
        save(self, output_dir)
    MedsftTrainer._save_optimizer_and_scheduler = patched_save

from medsft.cli import main
sys.exit(main(["train", recipe]))
"""


def _killed_run(tmp_path: Path, recipe: Path, mode: str, at: int) -> None:
    marker = tmp_path / f"paused-{mode}-{at}"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    child = subprocess.Popen([sys.executable, "-c", DRIVER, mode, str(at), str(marker), str(recipe)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    deadline = time.time() + 300
    while not marker.exists():
        if child.poll() is not None:
            raise AssertionError(f"the run ended before the kill point: {child.stderr.read().decode()[-2000:]}")
        if time.time() > deadline:
            child.kill()
            raise AssertionError("the run never reached the kill point")
        time.sleep(0.05)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert child.returncode == -signal.SIGKILL


def _events(run_dir: Path) -> list[tuple]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [(r["event"], r["stage"], r["step"]) for r in rows]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, tiny_model_dir):
    folder = tmp_path_factory.mktemp("uninterrupted")
    recipe = _recipe(folder, tiny_model_dir, "run")
    assert main(["train", str(recipe)]) == 0
    return folder / "run"


def _same_as_uninterrupted(run_dir: Path, reference: Path) -> None:
    difference = _max_difference(_adapter(run_dir), _adapter(reference))
    print(f"largest |resumed - uninterrupted| adapter weight difference: {difference:.3g}")
    assert difference <= 1e-6
    events, expected = _events(run_dir), _events(reference)
    assert events == expected  # no step duplicated, none missing, same order
    losses = [json.loads(line).get("train_loss") for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    reference_losses = [json.loads(line).get("train_loss") for line in (reference / "metrics.jsonl").read_text().splitlines()]
    assert losses == pytest.approx(reference_losses, abs=1e-6)
    # what every stage trained, in data_manifest.json: the stages finished before the kill come from their
    # complete.json, the one it interrupted from its replayed order
    stages = json.loads((run_dir / "data_manifest.json").read_text())["stages"]
    assert all("trained" in stage for stage in stages)
    assert stages == json.loads((reference / "data_manifest.json").read_text())["stages"]


@pytest.mark.slow
@pytest.mark.parametrize("mode, at", [("step", 5), ("step", 11), ("save", 9)],
                         ids=["killed-in-first-stage", "killed-in-later-stage", "killed-while-writing-checkpoint"])
def test_sigkill_then_resume_ends_like_an_uninterrupted_run(tmp_path, tiny_model_dir, uninterrupted, mode, at, capsys):
    recipe = _recipe(tmp_path, tiny_model_dir, "run")
    _killed_run(tmp_path, recipe, mode, at)
    run_dir = tmp_path / "run"
    assert not (run_dir / "adapter").exists()
    if mode == "save":  # the half-written checkpoint has weights but no manifest yet: partial, never whole
        partial = run_dir / "checkpoints" / "mixed" / "checkpoint-3"
        assert (partial / "adapter_model.safetensors").is_file() and not checkpoint.is_complete(partial)
    capsys.readouterr()
    assert main(["train", str(recipe), "--resume"]) == 0
    out = capsys.readouterr().out
    assert "resuming stage" in out
    if mode == "save":
        assert "removed an incomplete checkpoint" in out
        assert checkpoint.is_complete(partial, verify_hashes=True)  # written again, whole, by the resumed run
    _same_as_uninterrupted(run_dir, uninterrupted)


def test_checkpoints_are_whole_with_a_manifest_and_state(uninterrupted):
    folders = sorted((uninterrupted / "checkpoints").glob("*/checkpoint-*"))
    assert folders and all(checkpoint.is_complete(f, verify_hashes=True) for f in folders)
    assert not list((uninterrupted / "checkpoints").glob("*/.partial-*"))
    mid = uninterrupted / "checkpoints" / "warmup" / "checkpoint-3"
    state = json.loads((mid / checkpoint.STATE).read_text())
    assert state["step"] == 3 and state["stage"] == "warmup"
    assert state["monitor"]["history"][-1]["step"] == 2  # the evaluations so far travel with the checkpoint
    # A damaged file is noticed: the checkpoint stops counting as whole.
    weights = mid / "adapter_model.safetensors"
    damaged = mid.parent / "checkpoint-damaged-copy"
    import shutil

    shutil.copytree(mid, damaged)
    with open(damaged / weights.name, "r+b") as handle:
        handle.seek(100)
        handle.write(b"\x00\x01\x02")
    assert checkpoint.is_complete(damaged) and not checkpoint.is_complete(damaged, verify_hashes=True)
    (damaged / weights.name).write_bytes(b"short")
    assert not checkpoint.is_complete(damaged)
    shutil.rmtree(damaged)


def test_prune_keeps_the_newest_and_the_protected(tmp_path):
    stage = tmp_path / "stage"
    stage.mkdir()
    for step in (2, 4, 6, 8, 10):
        folder = stage / f"checkpoint-{step}"
        folder.mkdir()
        (folder / "adapter_model.safetensors").write_bytes(b"x" * step)
        checkpoint.seal(folder)
    removed = checkpoint.prune(stage, 2, {stage / "checkpoint-4"})
    assert sorted(p.name for p in stage.iterdir()) == ["checkpoint-10", "checkpoint-4"]
    assert {p.name for p in removed} == {"checkpoint-2", "checkpoint-6", "checkpoint-8"}
    assert checkpoint.prune(stage, 1, set()) and [p.name for p in stage.iterdir()] == ["checkpoint-10"]


def test_save_total_limit_never_removes_the_selected_checkpoint(tmp_path, tiny_model_dir, monkeypatch):
    import medsft.pipeline.finish as select

    real = select.select_checkpoint

    def earliest(history, checkpoints, *args):  # a selection that prefers an old checkpoint, as a real one may
        choice = real(history, checkpoints, *args)
        first = next(h for h in history if (h["stage"], h["stage_step"]) in checkpoints)
        return {**choice, "stage": first["stage"], "step": first["step"],
                "checkpoint": checkpoints[(first["stage"], first["stage_step"])]}

    monkeypatch.setattr(select, "select_checkpoint", earliest)
    recipe = _recipe(tmp_path, tiny_model_dir, "run", save_total_limit=1)
    result = train(load_recipe(recipe, ["monitor.eval_every=2", "train.save_steps=null"]), log=lambda *_: None)
    selection = json.loads((result.run_dir / "selection.json").read_text())
    assert selection["checkpoint"].endswith("warmup/checkpoint-2") and Path(selection["checkpoint"]).is_dir()
    warmup = [p.name for p in checkpoint.complete_checkpoints(result.run_dir / "checkpoints" / "warmup")]
    mixed = [p.name for p in checkpoint.complete_checkpoints(result.run_dir / "checkpoints" / "mixed")]
    assert warmup == ["checkpoint-2", "checkpoint-6"]  # the best, and the newest; 4 was pruned
    assert mixed == ["checkpoint-6"]  # limit 1: only the newest


def test_non_empty_output_dir_is_refused_without_resume_or_overwrite(tmp_path, tiny_model_dir, capsys):
    recipe = _recipe(tmp_path, tiny_model_dir, "run")
    foreign = tmp_path / "run"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    assert main(["train", str(recipe)]) == 2
    err = capsys.readouterr().err
    assert "is not empty (files that are not a medsft run)" in err and len(err.strip().splitlines()) == 1
    assert main(["train", str(recipe), "--resume"]) == 2
    assert "nothing to resume" in capsys.readouterr().err
    assert main(["train", str(recipe), "--set", "stages.0.max_steps=2", "--set", "stages.1.max_steps=2",
                 "--overwrite"]) == 0
    assert (foreign / "notes.txt").read_text() == "mine"  # --overwrite removes only what medsft writes
    # Now it holds a run: a fresh start is refused, a different recipe cannot resume it.
    assert main(["train", str(recipe)]) == 2
    assert "(a previous run); use --resume" in capsys.readouterr().err
    assert main(["train", str(recipe), "--resume"]) == 2
    assert "recipe differs from the run's recipe.yaml (stages.0.max_steps" in capsys.readouterr().err


def test_resume_auto_starts_when_there_is_nothing_to_resume(tmp_path, tiny_model_dir, capsys):
    recipe = _recipe(tmp_path, tiny_model_dir, "run")
    overrides = ["--set", "stages.0.max_steps=2", "--set", "stages.1.max_steps=2"]
    assert main(["train", str(recipe), *overrides, "--resume"]) == 2
    assert "no whole checkpoint" in capsys.readouterr().err
    assert main(["train", str(recipe), *overrides, "--resume", "auto"]) == 0
    assert (tmp_path / "run" / "adapter").is_dir()
    # Finished runs resume to the same end: nothing is trained again.
    before = _adapter(tmp_path / "run")
    assert main(["train", str(recipe), *overrides, "--resume"]) == 0
    assert _max_difference(_adapter(tmp_path / "run"), before) == 0.0


def test_not_enough_disk_for_the_checkpoints_is_said_before_training(tmp_path, tiny_model_dir, capsys, monkeypatch):
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**6, 10**6 - 20_000, 20_000))
    recipe = _recipe(tmp_path, tiny_model_dir, "run")
    assert main(["train", str(recipe)]) == 2
    err = capsys.readouterr().err
    assert "has 19.5 KB free but this run will write about" in err and "checkpoints of" in err
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_resuming_a_run_that_stopped_early_does_not_train_later_stages(tmp_path, tiny_model_dir, capsys):
    recipe = _recipe(tmp_path, tiny_model_dir, "run")
    # Every source looks memorized at the first evaluation (step 2), and early_stop ends the run there.
    flags = ["--set", "monitor.early_stop=true", "--set", "monitor.near_zero_loss=100", "--set", "monitor.small_set=100000"]
    assert main(["train", str(recipe), *flags]) == 0
    stages = {e[1] for e in _events(tmp_path / "run")}
    assert stages == {"warmup"}
    before = _adapter(tmp_path / "run")
    assert main(["train", str(recipe), *flags, "--resume"]) == 0
    assert {e[1] for e in _events(tmp_path / "run")} == {"warmup"}
    assert _max_difference(_adapter(tmp_path / "run"), before) == 0.0


@pytest.mark.slow
def test_adaptive_mixing_changes_the_mix_and_a_killed_run_resumes_to_the_same_end(tmp_path, tiny_model_dir):
    reference = with_adaptive_mix(_recipe(tmp_path / "reference", tiny_model_dir, "run"))
    assert main(["train", str(reference)]) == 0
    reference_dir = tmp_path / "reference" / "run"
    changes = [json.loads(line) for line in (reference_dir / "metrics.jsonl").read_text().splitlines()
               if json.loads(line)["event"] == "mix"]
    assert [round(c["mix/general"], 2) for c in changes] == [0.4, 0.5]  # 0.3 asked, raised at mixed steps 2 and 4
    assert all("length ratio" in c["mix_reason"] for c in changes)
    mix = json.loads((reference_dir / "monitor" / "mix.json").read_text())["mixed"]
    assert [c["position"] for c in mix["changes"]] == [8, 12]  # after the micro-batch already fetched
    assert [(s["from_position"], s["to_position"]) for s in mix["segments"]] == [(0, 8), (8, 12)]
    # data_manifest.json gives the mix the stage trained (mix.json's), not the plan's
    stage = json.loads((reference_dir / "data_manifest.json").read_text())["stages"][1]
    trained = stage["trained"]
    assert trained["records"] == 12 and trained["steps"] == 6
    for key in ("realized_share_samples", "realized_share_tokens"):
        assert {k: v for k, v in trained[key].items() if v} == mix[key]
    assert trained["realized_share_samples"] != stage["realized_share_samples"]
    shares = ", ".join(f"{k} {v:.1%}" for k, v in trained["realized_share_samples"].items())
    report = (reference_dir / "report.html").read_text()
    assert "Adaptive mix changes" in report and "length ratio 1.000 &lt; 2.0" in report
    assert f"trained: {shares} (planned: " in report

    recipe = with_adaptive_mix(_recipe(tmp_path, tiny_model_dir, "run"))
    _killed_run(tmp_path, recipe, "step", 11)  # after the first change, past the checkpoint at mixed step 3
    assert main(["train", str(recipe), "--resume"]) == 0
    _same_as_uninterrupted(tmp_path / "run", reference_dir)


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_overwrite_that_fails_before_training_puts_the_previous_run_back(tmp_path, tiny_model_dir, capsys,
                                                                          monkeypatch):
    recipe = _recipe(tmp_path, tiny_model_dir, "run")
    short = ["--set", "stages.0.max_steps=2", "--set", "stages.1.max_steps=2"]
    run_dir = tmp_path / "run"
    assert main(["train", str(recipe), *short]) == 0
    capsys.readouterr()
    before = _files(run_dir)
    assert "adapter/adapter_model.safetensors" in before
    # Its own adapter cannot seed the run that replaces it: refused, nothing moved.
    assert main(["train", str(recipe), *short, "--overwrite",
                 "--set", f"finetune.lora.init_from={run_dir / 'adapter'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert "finetune.lora.init_from" in err and "--overwrite would replace" in err and len(err.splitlines()) == 1
    assert _files(run_dir) == before

    # A failure once the model has loaded (here, the monitor's start): the previous run comes back whole.
    def fail(self):
        raise KeyboardInterrupt

    monkeypatch.setattr("medsft.pipeline.run.Run.start_monitor", fail)
    with pytest.raises(KeyboardInterrupt):
        train(load_recipe(recipe, ["stages.0.max_steps=3", "stages.1.max_steps=3"]), log=lambda line: None,
              overwrite=True)
    assert _files(run_dir) == before and not (run_dir / ".medsft-previous-run").exists()
    monkeypatch.undo()
    # Once the new run trains, the previous one is gone.
    assert main(["train", str(recipe), "--set", "stages.0.max_steps=3", "--set", "stages.1.max_steps=2",
                 "--overwrite"]) == 0
    assert sorted(p.name for p in run_dir.iterdir() if p.name.startswith(".")) == []
    assert (run_dir / "recipe.yaml").read_bytes() != before["recipe.yaml"]


def test_fresh_run_that_fails_before_training_leaves_no_half_run(tmp_path, tiny_model_dir, monkeypatch):
    recipe = _recipe(tmp_path, tiny_model_dir, "run")
    short = ["stages.0.max_steps=2", "stages.1.max_steps=2"]

    def fail(self):
        raise RuntimeError("out of memory")

    monkeypatch.setattr("medsft.pipeline.run.Run.start_monitor", fail)
    with pytest.raises(RuntimeError):
        train(load_recipe(recipe, short), log=lambda line: None)
    assert not any((tmp_path / "run").iterdir())  # the recipe, manifest and rejects it wrote are gone
    monkeypatch.undo()
    # so the same command runs again without --overwrite
    assert main(["train", str(recipe), *[a for s in short for a in ("--set", s)]]) == 0
