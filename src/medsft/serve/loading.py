"""What a user points the serving commands at: a run directory, an adapter folder, or a model.

A run directory knows everything (base model, template, system prompt, the selected weights);
an adapter folder knows its base; a plain model folder or hub id is used as it is. The answer is
one `Source`, checked before any weights load."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from medsft.errors import UserError
from medsft.models import check_model_source
from medsft.recipe import load_recipe


@dataclass(frozen=True)
class Source:
    base: str  # model folder or hub id
    adapter: Path | None  # a LoRA adapter on top of base, or None
    template: str  # a built-in template name or `tokenizer`
    system_prompt: str | None
    trust_remote_code: bool
    allow_pickle_weights: bool = False
    run_dir: Path | None = None
    rope_scaling: dict | None = None  # a LoRA run's model.rope_scaling: its adapter was trained on the scaled base


def resolve_source(target: str, adapter: str | None = None, base: str | None = None, template: str | None = None,
                   checkpoint: str | None = None, trust_remote_code: bool = False) -> Source:
    """target: RUN_DIR, an adapter folder, or a model folder / hub id.

    adapter: an adapter to put on a plain model. base: replaces the base a run or adapter names
    (the model moved since). checkpoint: in a run directory, a checkpoint folder name
    (`checkpoint-N`, searched under checkpoints/) instead of the selected weights."""
    path = Path(target).expanduser()
    if (path / "recipe.yaml").is_file() and (path / "metrics.jsonl").is_file():
        return _from_run(path, base, template, checkpoint, adapter)
    if checkpoint:
        raise UserError("--checkpoint: only with a run directory")
    if (path / "adapter_config.json").is_file():
        if adapter:
            raise UserError(f"{target} is itself an adapter; --adapter goes with a base model")
        adapter, target = str(path), base or _adapter_base(path)
    elif base:
        raise UserError("--base: only with a run directory or an adapter folder")
    check_model_source(target, field="model")
    if adapter and not (Path(adapter) / "adapter_config.json").is_file():
        raise UserError(f"--adapter: {adapter}: no adapter_config.json")
    return Source(target, Path(adapter) if adapter else None, template or "tokenizer", None, trust_remote_code)


def _adapter_base(folder: Path) -> str:
    config = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))
    name = config.get("base_model_name_or_path")
    if not name:
        raise UserError(f"{folder}: the adapter does not name its base model; give it with --base")
    return name


def _from_run(run_dir: Path, base: str | None, template: str | None, checkpoint: str | None,
              adapter: str | None) -> Source:
    if adapter:
        raise UserError("--adapter: a run directory brings its own weights (use --checkpoint for another one)")
    recipe = load_recipe(run_dir / "recipe.yaml", check_files=False)
    lora = recipe.finetune.method == "lora"
    if checkpoint:
        found = sorted(run_dir.glob(f"checkpoints/*/{checkpoint}"))
        if not found:
            raise UserError(f"--checkpoint: no {checkpoint} under {run_dir / 'checkpoints'}")
        weights = found[-1]
    else:
        weights = run_dir / ("adapter" if lora else "model")
        if not weights.is_dir():
            raise UserError(f"{run_dir}: the run has no {weights.name}/ yet (unfinished? use --checkpoint)")
    model = base or recipe.model.name_or_path
    if not lora:  # full fine-tuning: the weights are the whole model
        model = str(weights)
    # a full fine-tune's saved config already holds the run's RoPE scaling; a LoRA run's base needs it again
    return Source(model, weights if lora else None, template or recipe.model.template, recipe.model.system_prompt,
                  recipe.model.trust_remote_code, recipe.model.allow_pickle_weights, run_dir,
                  recipe.model.rope_scaling if lora else None)


@dataclass
class Loaded:
    """A model ready to answer: weights (adapter on top when there is one), tokenizer, chat."""

    model: object
    chat: object  # medsft.eval.generate.Chat
    source: Source

    @property
    def has_adapter(self) -> bool:
        return self.source.adapter is not None


def load_for_use(source: Source, dtype=None) -> Loaded:
    """Tokenizer and template first (the cheap, likely errors), then the weights."""
    from medsft.data.templates import get_template
    from medsft.eval.generate import Chat
    from medsft.models import load_adapter, load_model, load_tokenizer

    tokenizer = load_tokenizer(source.base, source.trust_remote_code, source.allow_pickle_weights, field="model")
    # a run's recipe chose the template; for a plain model or adapter, --template (default `tokenizer`)
    template = get_template(source.template, tokenizer, field="model.template" if source.run_dir else "--template")
    chat = Chat(tokenizer, template, source.system_prompt)
    model = load_model(source.base, dtype=dtype, trust_remote_code=source.trust_remote_code,
                       allow_pickle_weights=source.allow_pickle_weights, vocab_size=len(tokenizer),
                       rope_scaling=source.rope_scaling)
    if source.adapter:
        model = load_adapter(model, source.adapter)
    model.eval()
    return Loaded(model, chat, source)
