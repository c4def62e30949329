"""What the end-to-end run tests share: a small two-stage recipe on the sample data, the adapter a run
wrote, and the largest difference between two sets of weights."""

from __future__ import annotations

from pathlib import Path

import yaml
from safetensors.torch import load_file

from sample_data import write_sample


def small_recipe(folder: Path, model_dir: Path, name: str, steps: tuple[int, int] = (6, 6), dropout: float = 0.1,
                 **train_overrides) -> Path:
    """A general warm-up stage then a 7:3 stage (`steps` optimizer steps each), LoRA r4, probes every 2 steps;
    written to folder/NAME.yaml, its run in folder/NAME. Dropout on by default: resuming must restore the
    random state too, not only weights and optimizer."""
    files = write_sample(folder / "data")
    tree = {
        "model": {"name_or_path": str(model_dir), "template": "qwen"},
        "finetune": {"method": "lora", "lora": {"rank": 4, "alpha": 8, "dropout": dropout}},
        "data": {"sources": [{"name": "medical", "path": str(files["medical"]), "role": "domain"},
                             {"name": "general", "path": str(files["general"]), "role": "general"}],
                 "val_fraction": 0.15},
        "stages": [
            {"name": "warmup", "epochs": 1, "weights": {"general": 1.0}, "max_steps": steps[0]},
            {"name": "mixed", "epochs": 2, "weights": {"medical": 0.7, "general": 0.3}, "max_steps": steps[1]},
        ],
        "train": {"learning_rate": 5e-3, "batch_size": 2, "logging_steps": 1, "save_steps": 3, "seed": 11,
                  "scheduler": "cosine", "warmup_ratio": 0.2, **train_overrides},
        "monitor": {"eval_every": 2, "max_general_probes": 3, "domain_probes": 2, "max_new_tokens": 6,
                    "batch_size": 4},
        "output_dir": str(folder / name),
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(tree, allow_unicode=True), encoding="utf-8")
    return path


def with_adaptive_mix(path: Path) -> Path:
    """The recipe with its second stage adaptive. Length ratio 1.0 is always below 2.0: the controller
    raises the general share at every evaluation."""
    tree = yaml.safe_load(path.read_text())
    tree["stages"][1]["adaptive"] = {"general_share": [0.1, 0.6], "step": 0.1, "min_length_ratio": 2.0}
    path.write_text(yaml.safe_dump(tree), encoding="utf-8")
    return path


def adapter_weights(run_dir: Path) -> dict:
    return load_file(run_dir / "adapter" / "adapter_model.safetensors")


def max_difference(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)
