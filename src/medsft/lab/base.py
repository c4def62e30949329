"""The lab's base model: a tokenizer trained on the world's text and a tiny Llama trained on the
world's general data (through `medsft train`, full fine-tuning from random weights), cached by a
hash of everything that shapes it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from medsft.data.encode import default_cache_dir
from medsft.lab.tiny import build_llama, build_tokenizer
from medsft.lab.world import World
from medsft.pipeline.run import train
from medsft.recipe import parse_recipe

BASE_VERSION = "1"  # bump when the build procedure changes, so cached bases are rebuilt


@dataclass(frozen=True)
class BaseConfig:
    vocab_size: int = 1024
    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 4
    intermediate_size: int = 384
    epochs: float = 8
    learning_rate: float = 4e-3
    batch_size: int = 32
    seed: int = 0

    def key(self, world: World) -> str:
        # float fields as floats: epochs=8 and epochs=8.0 are the same base, so the same key
        config = {f.name: float(getattr(self, f.name)) if f.type == "float" else getattr(self, f.name)
                  for f in fields(self)}
        payload = json.dumps(
            {"version": BASE_VERSION, "config": config, "world": world_fingerprint(world)},
            sort_keys=True,
        )
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


def world_fingerprint(world: World) -> str:
    digest = hashlib.sha256()
    for text in world.texts():
        digest.update(text.encode("utf-8"))
        digest.update(b"\x00")
    return digest.hexdigest()


def default_lab_cache() -> Path:
    return default_cache_dir() / "lab"


def build_base(world: World, config: BaseConfig, cache_dir: Path | None = None, log=print) -> Path:
    """The base model folder (a normal HF model folder), built on first use and then reused."""
    cache_dir = Path(cache_dir or default_lab_cache())
    folder = cache_dir / f"base-{world.language}-{config.key(world)}"
    if (folder / "model" / "config.json").exists():
        return folder / "model"
    log(f"building the lab's base model in {folder} (first use; cached afterwards)")
    started = time.time()
    work = folder.with_name(folder.name + ".building")
    shutil.rmtree(work, ignore_errors=True)
    tokenizer = build_tokenizer(world.texts(), work / "init", vocab_size=config.vocab_size)
    build_llama(
        work / "init",
        tokenizer,
        hidden_size=config.hidden_size,
        num_layers=config.num_layers,
        num_heads=config.num_heads,
        num_kv_heads=config.num_kv_heads,
        intermediate_size=config.intermediate_size,
        seed=config.seed,
    )
    files = world.write(work / "data")
    recipe = parse_recipe(
        {
            "model": {"name_or_path": str(work / "init"), "template": "chatml"},
            "finetune": {"method": "full"},
            "data": {"sources": [{"name": "general", "path": str(files["general"]), "role": "general"}],
                     "max_length": 256, "val_fraction": 0.02},
            "stages": [{"name": "pretrain", "epochs": config.epochs}],
            "train": {"learning_rate": config.learning_rate, "batch_size": config.batch_size,
                      "warmup_ratio": 0.05, "logging_steps": 50, "seed": config.seed, "weight_decay": 0.01},
            "monitor": {"probes": False, "select": {"enabled": False}},
            "output_dir": str(work / "run"),
        },
        "lab base",
    )
    train(recipe, log=log, overwrite=True)  # a rebuild replaces what an interrupted build left
    (work / "run" / "model").rename(work / "model")
    (work / "build.json").write_text(
        json.dumps({"config": asdict(config), "seconds": round(time.time() - started, 1)}, indent=1)
    )
    shutil.rmtree(folder, ignore_errors=True)
    work.rename(folder)
    return folder / "model"
