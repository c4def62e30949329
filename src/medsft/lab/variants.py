"""Lab variants: each is a recipe (or, for `base`, no training at all).

A variant is a function of the shared context (base model path, data files, seed, output folder)
returning a recipe tree that `medsft train` runs like any user recipe. Later remedies add
entries here; `medsft lab --variants` picks any subset.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from medsft.errors import UserError
from medsft.lab.real import SYNTHETIC, LabBase
from medsft.recipe import DEFAULT_ADAPTIVE, DEFAULT_AUGMENT, DEFAULT_DOMAIN_SHARE, DEFAULT_EPOCHS

DOMAIN_EPOCHS = 3


@dataclass(frozen=True)
class LabContext:
    base_model: Path
    files: dict[str, Path]
    out: Path
    base: LabBase = SYNTHETIC  # template, learning rates and general probes for this base


def _recipe(ctx: LabContext, name: str, seed: int, stages: list[dict], method: str = "lora",
            rank: int | None = None, alpha: float | None = None, learning_rate: float | None = None) -> dict:
    # Tiny models need larger steps than 7B models; the ratios between variants are what matter.
    learning_rate = learning_rate or (ctx.base.lora_lr if method == "lora" else ctx.base.full_lr)
    rank = rank or ctx.base.lora_rank
    alpha = alpha or 2 * rank
    general = [str(ctx.files["general_probes"])] if ctx.base.general_probes == "world" else [ctx.base.general_probes]
    finetune: dict = {"method": method}
    if method == "lora":
        finetune["lora"] = {"rank": rank, "alpha": alpha, "dropout": 0.05, "target_modules": "all-linear"}
    recipe = {
        "model": {"name_or_path": str(ctx.base_model), "template": ctx.base.template},
        "finetune": finetune,
        "data": {
            "sources": [
                {"name": "medical", "path": str(ctx.files["medical"]), "role": "domain"},
                {"name": "general", "path": str(ctx.files["general"]), "role": "general"},
            ],
            "max_length": 256,
            "val_fraction": 0.05,
        },
        "stages": stages,
        "train": {"learning_rate": learning_rate, "batch_size": 16, "grad_accum": 1, "warmup_ratio": 0.05,
                  "logging_steps": 20, "seed": seed},
        # The monitor measures drift from the base on the world's general probes at the end of each
        # stage; the lab keeps the final weights (no selection) and scores them itself.
        "monitor": {"general_probes": general, "domain_probes": 0,
                    "max_new_tokens": 96, "batch_size": 64, "select": {"enabled": False}},
        "output_dir": str(ctx.out / "runs" / name / f"seed-{seed}"),
    }
    recipe["monitor"].update(dict(ctx.base.monitor))
    return recipe


def _domain(epochs: float = DOMAIN_EPOCHS) -> list[dict]:
    return [{"name": "domain", "epochs": epochs, "weights": {"medical": 1.0}}]


def _mix(domain_share: float, epochs: float = DOMAIN_EPOCHS) -> list[dict]:
    # Epochs count passes over the medical source whatever the ratio: more general data adds steps.
    return [{"name": "mixed", "epochs": epochs, "anchor": "medical",
             "weights": {"medical": domain_share, "general": round(1 - domain_share, 6)}}]


def _augmented(recipe: dict, augmenters: list[str] | None = None) -> dict:
    """The same recipe with the medical source augmented (training records only)."""
    recipe["data"]["sources"][0]["augment"] = {**DEFAULT_AUGMENT, **({"augmenters": augmenters} if augmenters else {})}
    return recipe


def _ratio(name: str) -> tuple[bool, float] | None:
    """`mix-D-G` or `augmented-mix-D-G` (D, G whole numbers): whether augmented, and the medical share."""
    plain = name.removeprefix("augmented-")
    parts = plain.split("-")
    if len(parts) != 3 or parts[0] != "mix" or not all(p.isdigit() for p in parts[1:]):
        return None
    domain, general = int(parts[1]), int(parts[2])
    if domain == 0:  # the epochs are passes over the medical source: it needs a share
        raise UserError(f"--variants: {name}: the medical share must be above 0 (mix-D-G trains D:G for 3 epochs "
                        "over the medical source; `base` is the model without training)")
    return plain != name, round(domain / (domain + general), 6)


def find_variant(name: str) -> tuple[Callable[[LabContext, str, int], dict | None], str] | None:
    """A named variant and its description; `augmented:A+B` and `augmented-mix-7-3:A+B` are the
    augmented variants with only augmenters A and B (for ablations); `mix-D-G` and
    `augmented-mix-D-G` mix medical:general D:G for 3 epochs over the medical source (ratio sweeps)."""
    if name in VARIANTS:
        return VARIANTS[name], DESCRIPTIONS[name]
    ratio = _ratio(name)
    if ratio is not None:
        augmented, share = ratio

        def mixed(ctx: LabContext, n: str, seed: int) -> dict:
            recipe = _recipe(ctx, n, seed, _mix(share))
            return _augmented(recipe) if augmented else recipe

        ratio_text = name.removeprefix("augmented-").removeprefix("mix-").replace("-", ":")
        return mixed, f"LoRA, {'augmented ' if augmented else ''}medical:general {ratio_text}, 3 epochs over the medical source"
    plain, _, chosen = name.partition(":")
    if plain not in ("augmented", "augmented-mix-7-3") or not chosen:
        return None
    from medsft.data.augment import RULE_AUGMENTERS

    augmenters = chosen.split("+")
    unknown = [a for a in augmenters if a not in RULE_AUGMENTERS]
    if unknown:
        raise UserError(f"--variants: {name}: unknown augmenter {unknown[0]!r} (known: {', '.join(RULE_AUGMENTERS)})")
    stages = _domain if plain == "augmented" else (lambda: _mix(0.7))
    return ((lambda ctx, n, seed: _augmented(_recipe(ctx, n, seed, stages()), augmenters)),
            f"{DESCRIPTIONS[plain]}, augmenters {', '.join(augmenters)} only")


KL_WEIGHT = 1.0  # train.kl_to_base of the kl-replay variant
ON_POLICY = {"weight": 1.0, "every": 40, "prompts": 64, "per_batch": 4, "max_new_tokens": 96}  # the on-policy variant


def _with(recipe: dict, **sections) -> dict:
    """The recipe with some fields set: _with(r, train={"kl_to_base": 1}) merges into r["train"]."""
    for section, values in sections.items():
        recipe.setdefault(section, {}).update(values)
    return recipe


def _self_distilled(recipe: dict) -> dict:
    recipe["data"]["sources"][1]["self_distill"] = {"mode": "replace", "max_new_tokens": 128, "batch_size": 64}
    return recipe


def _scaled(recipe: dict) -> dict:
    """Trained as given, then `medsft tune-scale` picks the adapter scale on the run's probes (general
    probes and held-out medical records), keeping at least 95% of the base's general accuracy."""
    recipe["monitor"].update({"domain_probes": 40, "select": {"enabled": False, "min_general_retention": 0.95,
                                                              "min_length_ratio": 0.9}})
    recipe["_then"] = "tune-scale"
    return recipe


def _adaptive(recipe: dict, general_share: tuple[float, float] = (0.2, 0.6)) -> dict:
    """The monitor moves the general share (within `general_share`) from the probes every 40 steps,
    with the default targets (98% general retention, 95% length)."""
    recipe["stages"][0]["adaptive"] = {**DEFAULT_ADAPTIVE, "general_share": list(general_share)}
    recipe["monitor"].update({"eval_every": 40, "domain_probes": 40})
    return recipe


def _medsft_default(ctx: LabContext, name: str, seed: int) -> dict:
    """What `medsft init` writes: augmented medical data, mixed from the first step, the mix adaptive."""
    return _adaptive(_augmented(_recipe(ctx, name, seed, _mix(DEFAULT_DOMAIN_SHARE, DEFAULT_EPOCHS))),
                     tuple(DEFAULT_ADAPTIVE["general_share"]))


def _lower_half_frozen(ctx: LabContext, recipe: dict) -> dict:
    import json

    layers = json.loads((ctx.base_model / "config.json").read_text())["num_hidden_layers"]
    recipe["finetune"]["layers"] = f"{layers // 2}-"
    return recipe


VARIANTS: dict[str, Callable[[LabContext, str, int], dict | None]] = {
    "base": lambda ctx, name, seed: None,
    "domain-only": lambda ctx, name, seed: _recipe(ctx, name, seed, _domain()),
    "domain-only-10ep": lambda ctx, name, seed: _recipe(ctx, name, seed, _domain(10)),
    "mix-7-3": lambda ctx, name, seed: _recipe(ctx, name, seed, _mix(0.7)),
    "mix-8-2": lambda ctx, name, seed: _recipe(ctx, name, seed, _mix(0.8)),
    "domain-only-r64": lambda ctx, name, seed: _recipe(ctx, name, seed, _domain(), rank=64, alpha=128),
    "progressive": lambda ctx, name, seed: _recipe(
        ctx, name, seed, [{"name": "general", "epochs": 0.25, "weights": {"general": 1.0}}] + _mix(0.7)
    ),
    "full-ft": lambda ctx, name, seed: _recipe(ctx, name, seed, _domain(), method="full"),
    "augmented": lambda ctx, name, seed: _augmented(_recipe(ctx, name, seed, _domain())),
    "augmented-mix-7-3": lambda ctx, name, seed: _augmented(_recipe(ctx, name, seed, _mix(0.7))),
    "kl-replay": lambda ctx, name, seed: _with(_recipe(ctx, name, seed, _mix(0.7)),
                                               train={"kl_to_base": KL_WEIGHT, "kl_on": "general"}),
    "on-policy": lambda ctx, name, seed: _with(_recipe(ctx, name, seed, _mix(0.7)), train={"on_policy": ON_POLICY}),
    "self-distill": lambda ctx, name, seed: _self_distilled(_recipe(ctx, name, seed, _mix(0.7))),
    "scaled": lambda ctx, name, seed: _scaled(_recipe(ctx, name, seed, _mix(0.7))),
    "frozen-lower": lambda ctx, name, seed: _lower_half_frozen(ctx, _recipe(ctx, name, seed, _mix(0.7))),
    "adaptive": lambda ctx, name, seed: _adaptive(_recipe(ctx, name, seed, _mix(0.7))),
    "medsft-default": _medsft_default,
}

DESCRIPTIONS = {
    "base": "the base model, no SFT",
    "domain-only": "LoRA, medical only, 3 epochs (the setup users report failing)",
    "domain-only-10ep": "LoRA, medical only, 10 epochs",
    "mix-7-3": "LoRA, medical:general 7:3, 3 epochs",
    "mix-8-2": "LoRA, medical:general 8:2, 3 epochs",
    "domain-only-r64": "LoRA r64/alpha128, medical only, 3 epochs",
    "progressive": "LoRA, a general stage (a quarter of the general set), then 7:3 for 3 epochs",
    "full-ft": "full fine-tuning, medical only, 3 epochs",
    "augmented": "LoRA, medical only, augmented (rephrase, restate, synonyms, statements, multiturn, shuffle; "
                 "up to 8 per record), 3 epochs",
    "augmented-mix-7-3": "LoRA, augmented medical:general 7:3, 3 epochs",
    "kl-replay": f"LoRA, 7:3, 3 epochs, plus {KL_WEIGHT:g} x KL(base || tuned) on the general records (anchored replay)",
    "on-policy": f"LoRA, 7:3, 3 epochs, plus {ON_POLICY['weight']:g} x KL(tuned || base) on the tuned model's own "
                 f"answers to general prompts ({ON_POLICY['prompts']} drawn every {ON_POLICY['every']} steps)",
    "self-distill": "LoRA, 7:3, 3 epochs, the general records answered by the base model itself (self-distilled)",
    "scaled": "LoRA, 7:3, 3 epochs, then tune-scale: the adapter scale (0.25-1) with the most medical skill "
              "that keeps 95% of the base's general accuracy",
    "frozen-lower": "LoRA on the upper half of the layers only (the lower half frozen), 7:3, 3 epochs",
    "adaptive": "LoRA, 7:3 to start, the general share moved (0.2-0.6) by the monitor every 40 steps: up when "
                "general accuracy < 98% of base or length < 95%, down when medical skill stalls",
    "medsft-default": f"what `medsft init` writes: augmented medical data, medical:general "
                      f"{DEFAULT_DOMAIN_SHARE:g}:{1 - DEFAULT_DOMAIN_SHARE:g} to start, the general share moved "
                      f"({DEFAULT_ADAPTIVE['general_share'][0]:g}-{DEFAULT_ADAPTIVE['general_share'][1]:g}) by the "
                      f"monitor every 40 steps, {DEFAULT_EPOCHS} passes over the medical source",
}

DEMO_VARIANTS = ["base", "domain-only", "mix-7-3", "progressive"]


def recipe_variant(path: Path) -> Callable[[LabContext, str, int], dict]:
    """A user's recipe file as a lab variant: its finetune, stages and train settings run on the
    lab's base model and world (sources must be named `medical` and/or `general`)."""
    try:
        tree = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as error:
        raise UserError(f"{path}: cannot read the recipe ({error})") from None
    if not isinstance(tree, dict):
        raise UserError(f"{path}: a recipe is a YAML mapping")

    def variant(ctx: LabContext, name: str, seed: int) -> dict:
        recipe = _recipe(ctx, name, seed, tree.get("stages") or _domain())
        for section in ("finetune", "train"):
            recipe[section] = {**recipe.get(section, {}), **(tree.get(section) or {})}
        recipe["train"]["seed"] = seed
        if recipe["finetune"].get("method") == "full":
            recipe["finetune"].pop("lora", None)
        for key in ("ratio_by", "train_on", "max_length"):
            if key in (tree.get("data") or {}):
                recipe["data"][key] = tree["data"][key]
        sources = (tree.get("data") or {}).get("sources", [])
        names = {s.get("name") for s in sources if isinstance(s, dict)}
        if names - {"medical", "general"} or len(names) != len(sources):
            raise UserError(f"{path}: lab recipes draw only on the sources `medical` and `general`")
        # A source's own settings (augment, self_distill, ...) apply to the lab's file of that name.
        lab_sources = {s["name"]: s for s in recipe["data"]["sources"]}
        for source in sources:
            lab_sources[source["name"]].update({k: v for k, v in source.items() if k not in ("name", "path", "role")})
        # The monitor's cadence and targets (adaptive stages act at its evaluations); its probes stay the lab's.
        # The lab scores the final weights, so selection stays off.
        own_monitor = {k: v for k, v in (tree.get("monitor") or {}).items() if k not in ("general_probes", "select")}
        recipe["monitor"].update(own_monitor)
        return recipe

    return variant
