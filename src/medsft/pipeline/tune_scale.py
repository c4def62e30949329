"""`medsft tune-scale RUN_DIR`: the trained change scaled down, scored on the run's probes, at no training cost.

LoRA: the adapter's contribution multiplied by each scale (0.25 ... 1). Full fine-tuning: the
weights interpolated between base and tuned (WiSE-FT: base + s * (tuned - base)). The choice follows
checkpoint selection: the most domain skill among the scales that keep the recipe's general
retention and length ratio. LoRA: the chosen scale is written into the adapter's own config
(lora_alpha), so plain PEFT loading uses it, and recorded in medsft_scale.json; full fine-tuning:
the interpolated model is written to model_interpolated/."""

from __future__ import annotations

import json
from pathlib import Path

from medsft.errors import UserError
from medsft.eval import names
from medsft.eval.evaluate import evaluate, flat_scores
from medsft.eval.generate import Chat
from medsft.models import load_adapter, load_model
from medsft.monitor.selection import domain_score, holds_general, kept_clause
from medsft.recipe import load_recipe
from medsft.train import checkpoint

SCALE_FILE = "medsft_scale.json"
DEFAULT_SCALES = (0.25, 0.5, 0.75, 1.0)


def parse_scales(text: str) -> list[float]:
    try:
        scales = sorted({float(s) for s in text.split(",") if s.strip()})
    except ValueError:
        raise UserError(f"--scales: {text!r} is not a comma-separated list of numbers") from None
    if not scales or scales[0] < 0 or scales[-1] > 2:
        raise UserError("--scales: numbers from 0 to 2, e.g. 0.25,0.5,0.75,1")
    return scales


def restore_adapter_config(adapter: Path) -> None:
    """Undo an earlier tune-scale: the adapter's lora_alpha as training wrote it."""
    record = adapter / SCALE_FILE
    if not record.is_file():
        return
    saved = json.loads(record.read_text(encoding="utf-8"))
    if saved.get("in_adapter_config"):
        config_path = adapter / "adapter_config.json"
        config = json.loads(config_path.read_text(encoding="utf-8"))
        config["lora_alpha"] = saved["lora_alpha"]
        config["alpha_pattern"] = saved.get("alpha_pattern", {})
        checkpoint.write_json_atomic(config_path, config)
    record.unlink()


def write_adapter_scale(adapter: Path, scale: float, table: list[dict]) -> None:
    """The scale baked into adapter_config.json (lora_alpha and alpha_pattern times the scale)."""
    config_path = adapter / "adapter_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    record = {"scale": scale, "in_adapter_config": True, "lora_alpha": config["lora_alpha"],
              "alpha_pattern": config.get("alpha_pattern") or {}, "table": table}
    config["lora_alpha"] = config["lora_alpha"] * scale
    config["alpha_pattern"] = {k: v * scale for k, v in (config.get("alpha_pattern") or {}).items()}
    checkpoint.write_json_atomic(adapter / SCALE_FILE, record)
    checkpoint.write_json_atomic(config_path, config)


def tune_scale(run_dir: str | Path, scales=DEFAULT_SCALES, save: bool = True, log=print) -> dict:
    from medsft.pipeline.run import Run

    run_dir = Path(run_dir)
    if not (run_dir / "recipe.yaml").is_file():
        raise UserError(f"{run_dir}: not a run directory (no recipe.yaml)")
    recipe = load_recipe(run_dir / "recipe.yaml", check_files=False)
    method = recipe.finetune.method
    trained = run_dir / ("adapter" if method == "lora" else "model")
    if not trained.is_dir():
        raise UserError(f"{run_dir}: no {trained.name}/ (the run has not finished)")
    run = Run(recipe, log)
    run.prepare_data()  # the run's own probes: general set, held-out domain records, probe files
    if not run.probe_sets:
        raise UserError(f"{run_dir}: the recipe has no probes to score scales with")
    chat = Chat(run.tokenizer, run.template, recipe.model.system_prompt)
    monitor = recipe.monitor
    model_cfg = recipe.model

    def load(path) -> object:
        return load_model(str(path), trust_remote_code=model_cfg.trust_remote_code,
                          allow_pickle_weights=model_cfg.allow_pickle_weights, vocab_size=len(run.tokenizer),
                          rope_scaling=model_cfg.rope_scaling)  # as trained (a full fine-tune's config has it already)

    def ask(model, label: str) -> dict:
        return flat_scores(evaluate(model, chat, run.probe_sets, monitor.max_new_tokens, monitor.batch_size, label))

    base_file = run_dir / "monitor" / "base.json"
    base_scores = json.loads(base_file.read_text(encoding="utf-8"))["scores"] if base_file.is_file() else None
    if method == "lora":
        restore_adapter_config(trained)
        model = load_adapter(load(model_cfg.name_or_path), trained)
        model.eval()
        if base_scores is None:
            with model.disable_adapter():
                base_scores = ask(model, "probing the base model")
        from peft.tuners.lora import LoraLayer

        layers = [m for m in model.modules() if isinstance(m, LoraLayer)]

        def at(scale: float):
            for layer in layers:
                for adapter_name in layer.active_adapters:
                    layer.set_scale(adapter_name, scale)
            return model
    else:
        base, model = load(model_cfg.name_or_path), load(trained)
        base_state = {k: v.detach().clone() for k, v in base.state_dict().items()}
        tuned_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if base_scores is None:
            base_scores = ask(base, "probing the base model")
        del base

        def at(scale: float):
            model.load_state_dict({k: base_state[k] + scale * (tuned_state[k] - base_state[k])
                                   if tuned_state[k].is_floating_point() else tuned_state[k] for k in tuned_state})
            return model

    table = []
    for scale in scales:
        scores = ask(at(scale), f"scale {scale:g}")
        relative = names.relative_to_base(scores, base_scores)
        score, meaning = domain_score({"metrics": scores, "eval_loss": {}}, [])
        table.append({"scale": scale, "domain_score": round(score, 4), "domain_score_is": meaning,
                      "general_retention": _round(relative.get(names.RETENTION)),
                      "length_ratio": _round(relative.get(names.LENGTH_RATIO))})
    select = recipe.monitor.select
    chosen, reason = _choose(table, select.min_general_retention, select.min_length_ratio)
    result = {"method": method, "scales": table, "chosen": chosen, "reason": reason,
              "kind": "adapter scale" if method == "lora" else "interpolation base -> tuned (WiSE-FT)"}
    checkpoint.write_json_atomic(run_dir / "tune_scale.json", result)
    result["plot"] = str(_plot(table, chosen, run_dir / "tune_scale.png"))
    log(format_table(result))
    if save and method == "lora":
        write_adapter_scale(trained, chosen, table)
        log(f"scale {chosen:g} written into {trained}/adapter_config.json (plain PEFT loading uses it; "
            f"{SCALE_FILE} records the original)")
    elif save:
        out = run_dir / "model_interpolated"
        at(chosen).save_pretrained(str(out), safe_serialization=True)
        run.tokenizer.save_pretrained(str(out))
        checkpoint.write_json_atomic(out / "medsft_interpolation.json", {"scale": chosen, "table": table})
        log(f"the model at {chosen:g} of the way from base to tuned written to {out}")
    return result


def _round(value):
    return None if value is None else round(value, 4)


def _choose(table: list[dict], min_retention: float, min_length: float) -> tuple[float, str]:
    qualified = [r for r in table if holds_general(r, min_retention, min_length)]
    if qualified:
        best = max(qualified, key=lambda r: (r["domain_score"], r["scale"]))
        return best["scale"], (f"most domain skill ({best['domain_score']:.3f}) among the {len(qualified)} of "
                               f"{len(table)} scales" + kept_clause(table, min_retention, min_length))
    best = max(table, key=lambda r: ((r["general_retention"] or 0) + min(r["length_ratio"] or 0, 1), r["domain_score"]))
    return best["scale"], (f"no scale keeps general retention >= {min_retention} and length ratio >= {min_length}; "
                           "this one keeps the most of both")


def format_table(result: dict) -> str:
    lines = [f"{'scale':>6} {'domain':>8} {'retention':>10} {'length':>8}"]
    for row in result["scales"]:
        cells = [row["domain_score"], row["general_retention"], row["length_ratio"]]
        lines.append(f"{row['scale']:>6g} " + " ".join(f"{'-' if c is None else f'{c:.3f}':>{w}}"
                                                      for c, w in zip(cells, (8, 10, 8)))
                     + ("  <- chosen" if row["scale"] == result["chosen"] else ""))
    lines.append(f"chosen {result['chosen']:g}: {result['reason']} "
                 f"(domain score: {result['scales'][0]['domain_score_is']})")
    return "\n".join(lines)


def _plot(table: list[dict], chosen: float, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scales = [r["scale"] for r in table]
    figure, axis = plt.subplots(figsize=(5.5, 3.5))
    axis.plot(scales, [r["domain_score"] for r in table], "o-", label="domain score")
    if any(r["general_retention"] is not None for r in table):
        axis.plot(scales, [r["general_retention"] for r in table], "s-", label="general retention")
    if any(r["length_ratio"] is not None for r in table):
        axis.plot(scales, [r["length_ratio"] for r in table], "^-", label="length ratio")
    axis.axvline(chosen, color="grey", linestyle=":", label=f"chosen {chosen:g}")
    axis.set_xlabel("scale (0 = base, 1 = as trained)")
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
