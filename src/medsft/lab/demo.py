"""`medsft demo`: a small 7:3 LoRA run on a tiny local model and the built-in sample, on CPU.

It goes through exactly the path a user's run takes: a recipe file, `load_recipe`, `train`.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import yaml

DEMO_RECIPE = {
    "model": {"template": "qwen"},
    "finetune": {"method": "lora", "lora": {"rank": 8, "alpha": 16, "dropout": 0.0}},
    "data": {
        "ratio_by": "samples",
        "max_length": 1024,
        "val_fraction": 0.1,
        "on_bad_record": "skip",
    },
    "stages": [{"name": "mixed", "epochs": 3, "weights": {"medical": 0.7, "general": 0.3}}],
    "train": {"learning_rate": 1.0e-3, "batch_size": 4, "grad_accum": 1, "logging_steps": 5, "seed": 42},
}


def tiny_sample_model(cache_root: Path) -> Path:
    """The tiny Llama for the sample, built once per sample text and reused."""
    from medsft.data.sample import sample_texts
    from medsft.lab.tiny import build_tiny_model

    texts = sample_texts()
    key = hashlib.sha256("\n".join(texts).encode("utf-8")).hexdigest()[:16]
    folder = cache_root / f"demo-model-{key}"
    if not (folder / "config.json").exists():
        build_tiny_model(folder, texts, vocab_size=1024)
    return folder


def run_demo(out: str | Path = "runs/demo") -> Path:
    from medsft.data.encode import default_cache_dir
    from medsft.data.sample import write_sample
    from medsft.recipe import load_recipe
    from medsft.train.run import train

    started = time.time()
    out = Path(out)
    files = write_sample(out / "data")
    recipe = dict(DEMO_RECIPE)
    recipe["model"] = {**DEMO_RECIPE["model"], "name_or_path": str(tiny_sample_model(default_cache_dir()))}
    recipe["data"] = {
        **DEMO_RECIPE["data"],
        "sources": [
            {"name": "medical", "path": str(files["medical"]), "role": "domain"},
            {"name": "general", "path": str(files["general"]), "role": "general"},
        ],
    }
    recipe["output_dir"] = str(out / "run")
    recipe_path = out / "recipe.yaml"
    recipe_path.write_text(yaml.safe_dump(recipe, sort_keys=False, allow_unicode=True), encoding="utf-8")
    run_dir = train(load_recipe(recipe_path)).run_dir
    print(f"demo finished in {time.time() - started:.0f}s")
    print(f"recipe:        {recipe_path}")
    print(f"run directory: {run_dir}")
    return run_dir
