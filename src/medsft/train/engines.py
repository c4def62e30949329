"""DeepSpeed ZeRO and FSDP: the recipe's train fields written into each engine's settings.

`train.deepspeed` names a shipped config (`zero2`, `zero3`, in `train/configs/`) or the user's own
JSON file; every field the recipe already decides (micro-batch, accumulation, global batch,
clipping, bf16/fp16) is filled from the recipe, and a file that sets one of them to another value
is refused in one line, so that the recipe stays the one place a run is described. The fields that
depend on the model's width stay "auto" for the Trainer to fill. `train.fsdp` builds the Trainer's
FSDP (version 2) settings: the model's decoder layer class is the wrapping unit.
"""

from __future__ import annotations

import json
from pathlib import Path

from medsft.errors import UserError

CONFIGS = Path(__file__).parent / "configs"
SHIPPED = ("zero2", "zero3")


def _read_deepspeed(spec: str) -> tuple[Path, dict]:
    """The DeepSpeed config a `train.deepspeed` value names, as read from its file."""
    path = CONFIGS / f"{spec}.json" if spec in SHIPPED else Path(spec)
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"train.deepspeed: {spec}: no such file (or use a shipped config: "
                        f"{', '.join(SHIPPED)})") from None
    except (OSError, json.JSONDecodeError) as error:
        raise UserError(f"train.deepspeed: {path}: not a readable JSON file ({error})") from None
    if not isinstance(config, dict):
        raise UserError(f"train.deepspeed: {path}: a DeepSpeed config is a JSON object")
    return path, config


def deepspeed_config(spec: str, train, mixed: str | None, world_size: int) -> dict:
    """The DeepSpeed config for this recipe: the file's, with the recipe's fields filled in.

    train: the recipe's train section. mixed: "bf16", "fp16" or None (choose_dtype's answer).
    world_size: processes of the job (the global batch counts them)."""
    path, config = _read_deepspeed(spec)
    recipe_fields = {
        ("train_micro_batch_size_per_gpu",): (train.batch_size, "train.batch_size"),
        ("gradient_accumulation_steps",): (train.grad_accum, "train.grad_accum"),
        ("train_batch_size",): (train.batch_size * train.grad_accum * world_size,
                                "train.batch_size x train.grad_accum x processes"),
        ("gradient_clipping",): (train.max_grad_norm, "train.max_grad_norm"),
        ("bf16", "enabled"): (mixed == "bf16", "model.dtype"),
        ("fp16", "enabled"): (mixed == "fp16", "model.dtype"),
    }
    if isinstance(config.get("optimizer"), dict):
        recipe_fields[("optimizer", "params", "lr")] = (train.learning_rate, "train.learning_rate")
    for keys, (value, field) in recipe_fields.items():
        holder = config
        for key in keys[:-1]:
            holder = holder.setdefault(key, {})
        current = holder.get(keys[-1], "auto")
        if current != "auto" and current != value:
            raise UserError(f"train.deepspeed: {path} sets {'.'.join(keys)} to {current!r} but the recipe gives "
                            f"{value!r} ({field}); write \"auto\" there, or the same value")
        holder[keys[-1]] = value
    return config


def fsdp_settings(mode: str, model) -> tuple[bool, dict]:
    """(the Trainer's `fsdp` option, its `fsdp_config`) for `train.fsdp: full_shard | shard_grad_op`:
    FSDP on, everything said in the config (transformers 5 deprecates the option strings)."""
    layers = list(getattr(model, "_no_split_modules", None) or [])
    if not layers:
        raise UserError(f"train.fsdp: {type(model).__name__} does not name its decoder layer class "
                        "(_no_split_modules), which FSDP wraps one by one")
    config = {
        "version": 2,
        "auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
        "transformer_layer_cls_to_wrap": layers,
        "reshard_after_forward": mode == "full_shard",  # shard_grad_op keeps the weights gathered
        "state_dict_type": "FULL_STATE_DICT",  # checkpoints and the final weights as plain safetensors
        "use_orig_params": True,  # LoRA: frozen and trained weights in one wrapped unit
        "sync_module_states": True,
        "activation_checkpointing": False,  # medsft checkpoints the model itself (train.gradient_checkpointing)
    }
    return True, config


def shards_weights(train) -> bool:
    """Every process holds only part of the weights: each forward needs them all (probes included)."""
    if train.fsdp is not None:
        return True
    return train.deepspeed is not None and _read_deepspeed(train.deepspeed)[1].get("zero_optimization", {}).get("stage") == 3
