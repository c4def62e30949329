"""Data-parallel training in several processes on CPU (gloo), for real: `medsft train --nproc 2` ends
where one process with the same global batch ends, ranks train on disjoint records whose mix is the
recipe's, the run directory is written once, and a 2-process run killed with SIGKILL resumes to the
end of an uninterrupted one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

from medsft import distributed
from medsft.cli import main
from run_checks import adapter_weights, max_difference, small_recipe, with_adaptive_mix

# One rank of a 2-process job, started the way torchrun starts it (the environment says who it is).
#   record - each rank appends the record ids of its micro-batches to RECORDS.rank<N>
#   on-policy - each rank appends the draw and the answers each micro-batch takes (train.on_policy)
#   step N - both ranks stop dead after run-wide step N's optimizer step (the test kills them)
DRIVER = r"""
import json, sys, time
from transformers import TrainerCallback
from medsft.train.trainer import MedsftTrainer

mode, at, marker, recipe = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
rank = __import__("os").environ["RANK"]

if mode == "record":
    compute = MedsftTrainer.compute_loss
    def recording(self, model, inputs, *args, **kwargs):
        if model.training:
            with open(f"{marker}.rank{rank}", "a") as out:
                out.write(json.dumps([self.run.stage, inputs["record_ids"].tolist(), inputs["source_ids"].tolist()]) + "\n")
        return compute(self, model, inputs, *args, **kwargs)
    MedsftTrainer.compute_loss = recording
elif mode == "on-policy":
    from medsft.pipeline.onpolicy import OnPolicyAnswers
    batch = OnPolicyAnswers.batch
    def recording(self, model, step, device):
        inputs = batch(self, model, step, device)
        with open(f"{marker}.rank{rank}", "a") as out:
            out.write(json.dumps({"draw": self.draw, "answers": inputs["input_ids"].tolist()}) + "\n")
        return inputs
    OnPolicyAnswers.batch = recording
else:
    class Pause(TrainerCallback):
        def __init__(self, trainer):
            self.trainer = trainer
        def on_step_end(self, args, state, control, **kwargs):
            if self.trainer.step == at:
                open(f"{marker}.rank{rank}", "w").close()
                time.sleep(600)
    init = MedsftTrainer.__init__
    def patched_init(self, *args, **kwargs):
        init(self, *args, **kwargs)
        self.add_callback(Pause(self))
    MedsftTrainer.__init__ = patched_init

from medsft.cli import main
sys.exit(main(["train", recipe]))
"""


def _recipe(folder: Path, model_dir: Path, name: str, batch_size: int, dropout: float) -> Path:
    return small_recipe(folder, model_dir, name, steps=(3, 4), dropout=dropout, batch_size=batch_size, save_steps=2)


def _ranks(recipe: Path, mode: str, at: int, marker: Path, cache: Path) -> list[subprocess.Popen]:
    port = distributed.free_port()
    children = []
    for rank in range(2):
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "MASTER_ADDR": "127.0.0.1",
               "MASTER_PORT": str(port), "WORLD_SIZE": "2", "RANK": str(rank), "LOCAL_RANK": str(rank),
               "OMP_NUM_THREADS": "1", "MEDSFT_CACHE": str(cache)}
        children.append(subprocess.Popen([sys.executable, "-c", DRIVER, mode, str(at), str(marker), str(recipe)],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env))
    return children


def _metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def recorded(tmp_path_factory, tiny_model_dir):
    """A 2-process run (batch 2 per process) that records what each rank trained on."""
    folder = tmp_path_factory.mktemp("two-processes")
    recipe = _recipe(folder, tiny_model_dir, "run", batch_size=2, dropout=0.0)
    marker = folder / "records"
    children = _ranks(recipe, "record", 0, marker, folder / "cache")
    for child in children:
        child.wait(timeout=600)
        assert child.returncode == 0, child.stderr.read().decode()[-3000:]
    ranks = [[json.loads(line) for line in Path(f"{marker}.rank{r}").read_text().splitlines()] for r in range(2)]
    return folder / "run", ranks


@pytest.mark.slow
def test_two_processes_end_where_one_process_with_the_same_global_batch_ends(recorded, tmp_path, tiny_model_dir):
    two, _ = recorded
    recipe = _recipe(tmp_path, tiny_model_dir, "one", batch_size=4, dropout=0.0)
    assert main(["train", str(recipe)]) == 0
    one = tmp_path / "one"
    difference = max_difference(adapter_weights(two), adapter_weights(one))
    print(f"largest |2 processes - 1 process| adapter weight difference: {difference:.3g}")
    assert difference <= 1e-5  # the same sums in another order (fp32)
    events = lambda rows: [(r["event"], r["stage"], r["step"]) for r in rows]
    assert events(_metrics(two)) == events(_metrics(one))  # every event once: the main process writes
    for key in ("train_loss", "eval_loss"):
        assert [r.get(key) for r in _metrics(two)] == pytest.approx([r.get(key) for r in _metrics(one)], abs=1e-5)
    assert len((two / "monitor" / "samples.jsonl").read_text().splitlines()) == \
        len((one / "monitor" / "samples.jsonl").read_text().splitlines())
    assert (two / "report.html").is_file() and (two / "checkpoints" / "mixed" / "complete.json").is_file()


@pytest.mark.slow
def test_two_processes_train_with_on_policy_answers_each_its_own(tmp_path, tiny_model_dir):
    """train.on_policy under data parallel: every process draws the same answers (greedy, same weights) and
    takes its own of them; the extra forward goes around DDP's wrapper and the run ends normally."""
    recipe = small_recipe(tmp_path, tiny_model_dir, "run", steps=(3, 4), dropout=0.0, batch_size=2,
                          on_policy={"every": 3, "prompts": 4, "per_batch": 1, "max_new_tokens": 6, "batch_size": 4})
    marker = tmp_path / "records"
    children = _ranks(recipe, "on-policy", 0, marker, tmp_path / "cache")
    for child in children:
        child.wait(timeout=600)
        assert child.returncode == 0, child.stderr.read().decode()[-3000:]
    taken = [[json.loads(line) for line in Path(f"{marker}.rank{r}").read_text().splitlines()] for r in range(2)]
    assert len(taken[0]) == len(taken[1]) == 7  # one micro-batch a step
    for first, second in zip(*taken):
        assert first["draw"] == second["draw"] and first["answers"] != second["answers"]
    assert [t["draw"] for t in taken[0]] == [0, 0, 0, 1, 1, 1, 2]
    logged = [r["train_on_policy_kl"] for r in _metrics(tmp_path / "run") if "train_on_policy_kl" in r]
    assert len(logged) == 7 and logged[0] == pytest.approx(0.0, abs=1e-6) and max(logged) > 0


@pytest.mark.slow
def test_ranks_train_on_disjoint_records_whose_mix_is_the_recipes(recorded, monkeypatch):
    """Step k of the job trains on the plan's records 4k..4k+3 (rank 0 the first two, rank 1 the next two):
    the ranks never share a record within a step, and together they train the single-process order,
    so the realized mix over all ranks is the one the recipe's plan gives."""
    from medsft.pipeline.prepare import prepare
    from medsft.recipe import load_recipe

    run_dir, ranks = recorded
    monkeypatch.setenv("MEDSFT_CACHE", str(run_dir.parent / "cache"))
    _, _, prepared = prepare(load_recipe(run_dir / "recipe.yaml"), log=lambda *a: None)
    manifest = json.loads((run_dir / "data_manifest.json").read_text())
    for stage, plan in zip(manifest["stages"], prepared.plans):
        batches = [[batch[1] for batch in rows if batch[0] == stage["name"]] for rows in ranks]
        assert len(batches[0]) == len(batches[1]) == stage["steps"]  # one micro-batch of 2 per rank and step
        trained = [record for first, second in zip(*batches) for record in first + second]
        assert all(not set(first) & set(second) for first, second in zip(*batches))
        assert trained == plan.order[:len(trained)]
        sources = Counter(s for rows in ranks for batch in rows if batch[0] == stage["name"] for s in batch[2])
        expected = Counter(prepared.source_index[i] for i in plan.order[:len(trained)])
        assert sources == expected
        # the manifest's `trained` counts the records both ranks took, not one process's share nor the plan
        assert stage["trained"]["records"] == len(trained)
        assert {k: v for k, v in stage["trained"]["samples"].items() if v} == {
            prepared.source_names[i]: count for i, count in sources.items()}


@pytest.mark.slow
def test_a_killed_two_process_adaptive_run_resumes_to_the_uninterrupted_end(tmp_path, tiny_model_dir):
    reference = with_adaptive_mix(_recipe(tmp_path / "reference", tiny_model_dir, "run", batch_size=2, dropout=0.1))
    assert main(["train", str(reference), "--nproc", "2"]) == 0
    changes = [r for r in _metrics(tmp_path / "reference" / "run") if r["event"] == "mix"]
    assert [round(c["mix/general"], 2) for c in changes] == [0.4]  # raised at mixed step 2, logged once
    mix = json.loads((tmp_path / "reference" / "run" / "monitor" / "mix.json").read_text())["mixed"]
    # Positions count both processes' records: (2 steps + the micro-batch each has fetched) x 2 x 2.
    assert [c["position"] for c in mix["changes"]] == [16]
    recipe = with_adaptive_mix(_recipe(tmp_path, tiny_model_dir, "run", batch_size=2, dropout=0.1))
    marker = tmp_path / "paused"
    children = _ranks(recipe, "step", 6, marker, tmp_path / "cache")  # mixed step 3: past the change and the checkpoint at mixed step 2
    deadline = time.time() + 300
    while not all(Path(f"{marker}.rank{r}").exists() for r in range(2)):
        for child in children:
            assert child.poll() is None, child.stderr.read().decode()[-3000:]
        assert time.time() < deadline, "the run never reached the kill point"
        time.sleep(0.05)
    for child in children:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    assert not (tmp_path / "run" / "adapter").exists()
    assert main(["train", str(recipe), "--nproc", "2", "--resume"]) == 0
    difference = max_difference(adapter_weights(tmp_path / "run"), adapter_weights(tmp_path / "reference" / "run"))
    print(f"largest |resumed - uninterrupted| adapter weight difference, 2 processes: {difference:.3g}")
    assert difference <= 1e-6
    rows, expected = _metrics(tmp_path / "run"), _metrics(tmp_path / "reference" / "run")
    assert [(r["event"], r["step"]) for r in rows] == [(r["event"], r["step"]) for r in expected]
    assert [r.get("train_loss") for r in rows] == pytest.approx([r.get("train_loss") for r in expected], abs=1e-6)
    # the manifest gives what both processes trained, the same after the resume, and mix.json's mix
    stages = json.loads((tmp_path / "run" / "data_manifest.json").read_text())["stages"]
    assert stages == json.loads((tmp_path / "reference" / "run" / "data_manifest.json").read_text())["stages"]
    trained = stages[1]["trained"]["realized_share_samples"]
    assert {k: v for k, v in trained.items() if v} == mix["realized_share_samples"]


def test_a_user_error_in_a_multi_process_run_is_one_line_from_the_main_process(tmp_path, tiny_model_dir, capfd):
    recipe = _recipe(tmp_path, tiny_model_dir, "run", batch_size=2, dropout=0.0)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "notes.txt").write_text("not a run")
    assert main(["train", str(recipe), "--nproc", "2"]) == 2
    err = capfd.readouterr().err
    errors = [line for line in err.splitlines() if "error" in line]
    assert len(errors) == 1 and errors[0].startswith(f"medsft: error: output_dir: {tmp_path / 'run'} is not empty")
    assert "Traceback" not in err and (tmp_path / "run" / "notes.txt").read_text() == "not a run"


def test_more_processes_than_cores_is_refused_before_anything_starts(tmp_path, tiny_model_dir, capsys):
    recipe = _recipe(tmp_path, tiny_model_dir, "run", batch_size=2, dropout=0.0)
    assert main(["train", str(recipe), "--nproc", str((os.cpu_count() or 1) + 1)]) == 2
    assert "CPU cores" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


# ---- DeepSpeed and FSDP: the recipe's fields in the engines' settings ------------------------------

def _train_section(**fields):
    from medsft.recipe import TrainConfig

    return TrainConfig(**{"batch_size": 4, "grad_accum": 8, "max_grad_norm": 0.5, "learning_rate": 2e-4, **fields})


@pytest.mark.parametrize("name, stage", [("zero2", 2), ("zero3", 3)])
def test_shipped_deepspeed_configs_take_the_recipes_batch_accumulation_clipping_and_precision(name, stage):
    from medsft.train.engines import deepspeed_config, shards_weights

    config = deepspeed_config(name, _train_section(), "bf16", world_size=4)
    assert config["zero_optimization"]["stage"] == stage
    assert config["train_micro_batch_size_per_gpu"] == 4 and config["gradient_accumulation_steps"] == 8
    assert config["train_batch_size"] == 4 * 8 * 4  # per process x accumulation x processes
    assert config["gradient_clipping"] == 0.5
    assert config["bf16"]["enabled"] is True and config["fp16"]["enabled"] is False
    assert deepspeed_config(name, _train_section(), "fp16", 1)["fp16"]["enabled"] is True
    assert shards_weights(_train_section(deepspeed=name)) is (stage == 3)
    # Only the model-dependent fields stay for the Trainer to fill.
    leftover = [k for k, v in config["zero_optimization"].items() if v == "auto"]
    assert set(leftover) <= {"reduce_bucket_size", "stage3_prefetch_bucket_size", "stage3_param_persistence_threshold"}


def test_a_deepspeed_file_that_contradicts_the_recipe_is_one_line(tmp_path):
    from medsft.errors import UserError
    from medsft.train.engines import deepspeed_config

    own = tmp_path / "ds.json"
    own.write_text(json.dumps({"zero_optimization": {"stage": 2}, "train_micro_batch_size_per_gpu": 8,
                               "gradient_accumulation_steps": "auto"}))
    with pytest.raises(UserError, match=r"train_micro_batch_size_per_gpu to 8 but the recipe gives 4 \(train.batch_size\)"):
        deepspeed_config(str(own), _train_section(), None, 1)
    own.write_text(json.dumps({"zero_optimization": {"stage": 2}, "train_micro_batch_size_per_gpu": 4,
                               "optimizer": {"type": "AdamW", "params": {"lr": 1e-3}}}))
    with pytest.raises(UserError, match=r"optimizer.params.lr to 0.001 but the recipe gives 0.0002"):
        deepspeed_config(str(own), _train_section(), None, 1)
    with pytest.raises(UserError, match="no such file"):
        deepspeed_config(str(tmp_path / "missing.json"), _train_section(), None, 1)
    own.write_text("{not json")
    with pytest.raises(UserError, match="not a readable JSON file"):
        deepspeed_config(str(own), _train_section(), None, 1)


def test_fsdp_wraps_each_decoder_layer_and_reaches_the_trainer(tmp_path, tiny_model_dir):
    from transformers import AutoModelForCausalLM

    from medsft.pipeline.stages import training_arguments
    from medsft.recipe import load_recipe

    recipe = load_recipe(_recipe(tmp_path, tiny_model_dir, "run", batch_size=2, dropout=0.0),
                         ["train.fsdp=shard_grad_op"])
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    args = training_arguments(recipe, recipe.resolved_stages[0], 3, tmp_path / "run", model)
    assert args.fsdp  # FSDP on, everything else said in fsdp_config
    assert args.fsdp_config["transformer_layer_cls_to_wrap"] == ["LlamaDecoderLayer"]
    assert args.fsdp_config["version"] == 2 and args.fsdp_config["reshard_after_forward"] is False
    assert args.fsdp_config["state_dict_type"] == "FULL_STATE_DICT"
    assert args.per_device_train_batch_size == 2 and args.max_grad_norm == recipe.train.max_grad_norm


@pytest.mark.parametrize("setting, says", [
    ("train.deepspeed=zero2", "train.deepspeed needs a CUDA GPU and DeepSpeed (pip install 'medsft[deepspeed]')"),
    ("train.fsdp=full_shard", "train.fsdp needs CUDA GPUs"),
])
def test_engines_without_cuda_are_refused_before_the_model_loads(tmp_path, tiny_model_dir, capsys, setting, says):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the engines may run")
    recipe = _recipe(tmp_path, tiny_model_dir, "run", batch_size=2, dropout=0.0)
    tree = yaml.safe_load(recipe.read_text())
    tree["stages"] = tree["stages"][1:]  # the engines train one stage per run
    recipe.write_text(yaml.safe_dump(tree))
    assert main(["train", str(recipe), "--set", setting]) == 2
    err = capsys.readouterr().err
    assert says in err and "Loading weights" not in err
    assert main(["train", str(recipe), "--set", "train.deepspeed=zero2", "--set", "train.fsdp=full_shard"]) == 2
    assert "choose one" in capsys.readouterr().err
    assert main(["train", str(recipe), "--set", "train.fsdp=full_shard", "--set", "train.compile=true"]) == 2
    assert "train.compile with train.deepspeed / train.fsdp is not supported" in capsys.readouterr().err


@pytest.mark.parametrize("setting", ["train.deepspeed=zero2", "train.fsdp=full_shard"])
def test_engines_train_one_stage_per_run(tmp_path, tiny_model_dir, capsys, setting):
    recipe = _recipe(tmp_path, tiny_model_dir, "run", batch_size=2, dropout=0.0)  # two stages
    assert main(["train", str(recipe), "--set", setting]) == 2
    err = capsys.readouterr().err
    assert "one stage per run (2 here)" in err and "finetune.lora.init_from" in err and "Loading weights" not in err
