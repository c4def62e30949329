"""`medsft merge`: the LoRA adapter folded into the base weights, as a folder any runtime loads.

The folder holds safetensors shards, the tokenizer with the chat template the model was trained
with (a built-in template is written out as Jinja), the generation config with the template's
end-of-turn token as EOS, a remote-code model's Python files, and `medsft_merge.json` saying
where it came from."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from medsft.errors import UserError
from medsft.serve.loading import Source, load_for_use

SCALE_FILE = "medsft_scale.json"  # written by `medsft tune-scale`: {"scale": s}


def merge(source: Source, out: str | Path, dtype: str = "auto", max_shard_size: str = "2GB", overwrite: bool = False,
          log=print) -> Path:
    """Write the merged model to `out`; returns the folder.

    dtype: `auto` keeps the base's own (bf16 stays bf16), or float32 / bfloat16 / float16."""
    import torch

    if dtype not in ("auto", "float32", "bfloat16", "float16"):
        raise UserError(f"--dtype: {dtype!r} is not one of auto, float32, bfloat16, float16")
    out = Path(out)
    if source.adapter is None:
        raise UserError(f"{source.base}: nothing to merge (no LoRA adapter: a full fine-tuning run's model/ "
                        "is already a whole model)")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise UserError(f"--out: {out} is not empty (pass --overwrite to replace it)")
    scale, tuned = _adapter_scale(source.adapter)
    log(f"loading {source.base} with the adapter {source.adapter}" + (f" at scale {scale}" if scale != 1 else ""))
    loaded = load_for_use(source, dtype=dtype if dtype == "auto" else getattr(torch, dtype))
    model = loaded.model
    if scale != 1:
        _scale_adapter(model, scale)
    merged = model.merge_and_unload()
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    tokenizer = loaded.chat.tokenizer
    if source.template != "tokenizer":
        from medsft.data.templates import to_jinja

        jinja = to_jinja(loaded.chat.template, source.system_prompt)
        if jinja is not None:  # else the base model's own template stays (qwen3, deepseek3, glm4)
            tokenizer.chat_template = jinja
    end_ids = loaded.chat.stop_ids
    merged.generation_config.eos_token_id = end_ids[0] if len(end_ids) == 1 else end_ids
    if tokenizer.pad_token_id is not None:
        merged.generation_config.pad_token_id = tokenizer.pad_token_id
    merged.save_pretrained(out, max_shard_size=max_shard_size)
    tokenizer.save_pretrained(out)
    copied = _copy_remote_code(source.base, out) if source.trust_remote_code else []
    (out / "medsft_merge.json").write_text(json.dumps({
        "base": source.base, "adapter": str(source.adapter), "run_dir": str(source.run_dir) if source.run_dir else None,
        "template": source.template, "adapter_scale": scale * tuned, "dtype": str(merged.dtype).removeprefix("torch."), "remote_code_files": copied,
    }, indent=1) + "\n", encoding="utf-8")
    size = sum(p.stat().st_size for p in out.glob("*.safetensors"))
    log(f"wrote {out} ({size / 1e6:.0f} MB of safetensors, template {source.template})")
    return out


def _adapter_scale(adapter: Path) -> tuple[float, float]:
    """(the scale merging applies, the scale already in adapter_config.json): their product is the
    adapter's scale against training's."""
    path = adapter / SCALE_FILE
    if not path.is_file():
        return 1.0, 1.0
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
        # tune-scale writes the scale into adapter_config.json itself: loading already applies it
        return (1.0, float(saved["scale"])) if saved.get("in_adapter_config") else (float(saved["scale"]), 1.0)
    except (ValueError, KeyError, TypeError, AttributeError):
        raise UserError(f"{path}: expected {{\"scale\": NUMBER}}") from None


def _scale_adapter(model, scale: float) -> None:
    """Every LoRA layer's contribution multiplied by `scale` (peft's own per-layer scaling)."""
    from peft.tuners.lora import LoraLayer

    for module in model.modules():
        if isinstance(module, LoraLayer):
            module.scale_layer(scale)


def _copy_remote_code(base: str, out: Path) -> list[str]:
    """A trust_remote_code model's own .py files, so the merged folder loads the same way."""
    folder = Path(base).expanduser()
    if not folder.is_dir():
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(base, allow_patterns=["*.py"]))
    names = []
    for path in sorted(folder.glob("*.py")):
        shutil.copy2(path, out / path.name)
        names.append(path.name)
    return names
