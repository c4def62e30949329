"""`medsft lab`: run variants over seeds on the synthetic world, score them, write the table and plots."""

from __future__ import annotations

import base64
import html
import json
import platform
import statistics
import time
from pathlib import Path

import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer

from medsft.data.templates import get_template
from medsft.errors import UserError
from medsft.eval import names
from medsft.eval.evaluate import evaluate, flat_scores
from medsft.eval.generate import Chat
from medsft.eval.probes import Probe, ProbeSet
from medsft.eval.sets import general_set
from medsft.lab.base import BaseConfig, build_base, default_lab_cache
from medsft.lab.open_general import open_general
from medsft.lab.real import BASES, SYNTHETIC, LabBase, smollm2_base
from medsft.lab.variants import VARIANTS, LabContext, find_variant, recipe_variant
from medsft.lab.world import Item, World, build_world
from medsft.pipeline.run import train
from medsft.recipe import parse_recipe

# The real model is slow on CPU (a LoRA step of 16 records takes about 12 s on 2 cores): a world of 12
# diseases, each record once per epoch, keeps its lab within about half an hour.
SMOLLM2_WORLD = {"n_diseases": 12, "per_family": 60, "probes_per_family": 10, "probe_facts": 24, "medical_repeats": 1}

METRICS = [
    # (name, what it is, higher is better)
    ("general_accuracy", "general probes answered exactly right (unseen lists; facts in unseen phrasings)", True),
    ("length_ratio", "median general answer length, tuned / base", None),
    ("domain_accuracy", "fictional medical facts recalled, questions as trained", True),
    ("paraphrase_accuracy", "the same facts asked in words never trained", True),
    ("transfer_accuracy", "facts seen only in knowledge passages, asked as questions", True),
    ("general_eos_rate", "general answers that end on their own", True),
    ("kl_to_base", "drift: mean token KL(base || tuned) on the base's general answers (LoRA only)", False),
    ("distinct_2", "general answer diversity: distinct bigrams / bigrams", True),
    ("eval_loss_medical", "validation loss on held-out medical records", False),
    ("eval_loss_general", "validation loss on held-out general records", False),
    ("wall_seconds", "training and scoring time", False),
]


def probe_sets(world: World, base: LabBase = SYNTHETIC) -> list[ProbeSet]:
    """The world's probes; general ability on the world's own general probes (exact answers), or on
    a built-in set for a real model that never learned the world's answer format."""
    def probes(items: list[Item]) -> list[Probe]:
        return [Probe(i.question, i.key, i.answer, i.family) for i in items]

    if base.general_probes == "world":
        general = ProbeSet(names.GENERAL, probes(world.general_probes), "exact", world.language)
    else:
        general = general_set([base.general_probes])
    return [
        general,
        ProbeSet("medical_trained", probes(world.medical_trained_probes), "fact", world.language),
        ProbeSet("medical_paraphrase", probes(world.medical_paraphrase_probes), "fact", world.language),
        ProbeSet("medical_transfer", probes(world.medical_transfer_probes), "fact", world.language),
    ]


def _score(model, tokenizer, sets: list[ProbeSet], template: str = "chatml") -> dict:
    chat = Chat(tokenizer, get_template(template, tokenizer))
    results = evaluate(model, chat, sets, max_new_tokens=96, batch_size=64, label="scoring")
    general = results[names.GENERAL]
    return {
        "general_accuracy": general.accuracy,
        "general_median_tokens": general.median_tokens,
        "general_eos_rate": general.eos_rate,
        "distinct_2": general.metrics[names.DISTINCT_2],
        "scores": flat_scores(results),
        "domain_accuracy": results["medical_trained"].accuracy,
        "paraphrase_accuracy": results["medical_paraphrase"].accuracy,
        "transfer_accuracy": results["medical_transfer"].accuracy,
        "samples": {
            name: [{"question": p.question, "answer": a.text, "correct": c}
                   for p, a, c in list(zip(s.probes, results[name].answers, results[name].correct))[:5]]
            for name, s in ((s.name, s) for s in sets)
        },
    }


def trained_run(run_dir: Path, base: str = "smollm2") -> tuple:
    """(lab base, base model folder, probe sets, tokenizer) of a trained lab run, for scoring its
    adapter again (scripts/lab_scale_scan.py, scripts/lab_length_check.py)."""
    import yaml

    lab_base = BASES[base]
    recipe = yaml.safe_load((Path(run_dir) / "recipe.yaml").read_text(encoding="utf-8"))
    base_path = Path(recipe["model"]["name_or_path"])
    world = build_world(0, "en", **(SMOLLM2_WORLD if base == "smollm2" else {}))
    return lab_base, base_path, probe_sets(world, lab_base), AutoTokenizer.from_pretrained(base_path)


def _last_eval(run_dir: Path) -> dict:
    events = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    evals = [e for e in events if e["event"] == "eval"]
    last = evals[-1] if evals else {}
    return {"eval_loss_medical": last.get("eval_loss/medical"), "eval_loss_general": last.get("eval_loss/general"),
            "kl_to_base": last.get("general/kl_to_base")}


def _tune_scale(result) -> float:
    """`medsft tune-scale` on the run, and its choice applied to the model in memory."""
    from peft.tuners.lora import LoraLayer

    from medsft.pipeline.tune_scale import tune_scale

    chosen = tune_scale(result.run_dir, save=True, log=lambda *_: None)["chosen"]
    for layer in result.model.modules():
        if isinstance(layer, LoraLayer):
            for adapter in layer.active_adapters:
                layer.set_scale(adapter, chosen)
    return chosen


class _PlaceholderFiles(dict):
    def __missing__(self, key):
        return Path("lab-world") / f"{key}.jsonl"


def _check_recipe_files(files: dict, lab_base) -> None:
    """Each recipe file's variant parsed as it will run (a typo is one line now, not after the base
    model is built), on placeholder paths for the base and the world."""
    context = LabContext(Path("lab-base"), _PlaceholderFiles(), Path("lab-out"), lab_base)
    for name, (make, path) in files.items():
        tree = make(context, name, 0)
        parse_recipe(tree, path)


def run_lab(variants: list[str], seeds: int = 1, out: str | Path = "runs/lab", cache_dir: str | Path | None = None,
            language: str = "en", base_config: BaseConfig | None = None, world_size: dict | None = None,
            log=print, base: str = "synthetic") -> dict:
    """Run every variant for every seed; returns (and writes) the results.

    base: `synthetic` (the lab's tiny model, built on first use) or `smollm2` (a real pretrained chat
    model, converted from its GGUF file on first use; English world)."""
    makers, descriptions, files = {}, {}, {}
    for name in variants:
        found = find_variant(name)
        if found:
            makers[name], descriptions[name] = found
        elif name.endswith((".yaml", ".yml")):
            if not Path(name).is_file():
                raise UserError(f"--variants: {name}: no such recipe file")
            makers[Path(name).stem] = recipe_variant(Path(name))
            files[Path(name).stem] = (makers[Path(name).stem], name)
            descriptions[Path(name).stem] = f"the recipe {name}"
        else:
            raise UserError(f"--variants: unknown variant {name!r} (known: {', '.join(VARIANTS)}, augmented:A+B (an ablation), mix-D-G or augmented-mix-D-G (any ratio), or a recipe .yaml)")
    if seeds < 1:
        raise UserError("--seeds: must be at least 1")
    if base not in BASES:
        raise UserError(f"--base: unknown base {base!r} (known: {', '.join(BASES)})")
    lab_base = BASES[base]
    if base != "synthetic" and language != "en":
        raise UserError(f"--base {base}: the real-model lab runs the English world (--language en)")
    _check_recipe_files(files, lab_base)  # before the base model is built (minutes)
    out = Path(out)
    started = time.time()
    cache = Path(cache_dir) if cache_dir else default_lab_cache()
    if base == "smollm2":
        world = build_world(0, language, **{**SMOLLM2_WORLD, **(world_size or {})})
        base_path = smollm2_base(cache, log=log)
    else:
        world = build_world(0, language, **(world_size or {}))
        base_path = build_base(world, base_config or BaseConfig(), cache, log=log)
    tokenizer = AutoTokenizer.from_pretrained(base_path)
    base_model = AutoModelForCausalLM.from_pretrained(base_path).eval()
    chat = Chat(tokenizer, get_template(lab_base.template, tokenizer))
    if lab_base.open_general:
        world.general_train += open_general(base_model, chat, base_path, cache, log=log)
    context = LabContext(base_path, world.write(out / "world"), out, lab_base)
    sets = probe_sets(world, lab_base)

    log("scoring the base model")
    base_scores = _score(base_model, tokenizer, sets, lab_base.template)
    del base_model

    runs: dict[str, list[dict]] = {}
    for name, make in makers.items():
        for seed in range(seeds):
            log(f"variant {name}, seed {seed}: {descriptions[name]}")
            t0 = time.time()
            tree = make(context, name, seed)
            if tree is None:
                scores = dict(base_scores)
                scores.update({"eval_loss_medical": None, "eval_loss_general": None, "kl_to_base": 0.0})
            else:
                then = tree.pop("_then", None)
                result = train(parse_recipe(tree, f"lab variant {name}"), log=lambda *_: None, overwrite=True)
                scale = _tune_scale(result) if then == "tune-scale" else None
                scores = _score(result.model, tokenizer, sets, lab_base.template)
                if scale is not None:
                    scores["adapter_scale"] = scale
                scores.update(_last_eval(result.run_dir))
                del result
            scores["length_ratio"] = names.relative_to_base(scores.pop("scores"), base_scores["scores"]).get(names.LENGTH_RATIO)
            scores["wall_seconds"] = round(time.time() - t0, 1)
            runs.setdefault(name, []).append({"seed": seed, **scores})
            log("  " + ", ".join(f"{m} {scores[m]:.3f}" for m, _, _ in METRICS[:4]))

    results = {
        "versions": {
            "medsft": __import__("medsft").__version__,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "peft": __import__("peft").__version__,
            "python": platform.python_version(),
        },
        "seeds": list(range(seeds)),
        "language": language,
        "base": base,
        "lora": {"rank": lab_base.lora_rank, "alpha": 2 * lab_base.lora_rank, "learning_rate": lab_base.lora_lr},
        "full_learning_rate": lab_base.full_lr,
        "world": {"general_train": len(world.general_train), "medical_train": len(world.medical_train),
                  "diseases": len(world.diseases), "probes": {s.name: len(s.probes) for s in sets}},
        "base_model": str(base_path),
        "metrics": {m: d for m, d, _ in METRICS},
        "variants": {name: _aggregate(rows) for name, rows in runs.items()},
        "descriptions": descriptions,
        "runs": runs,
        "seconds": round(time.time() - started, 1),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    (out / "results.md").write_text(results_table(results) + "\n", encoding="utf-8")
    results["plots"] = [str(p) for p in write_plots(results, out / "plots")]
    write_lab_report(results, out)
    return results


def write_lab_report(results: dict, out: Path) -> Path:
    """report.html: the table and every plot in one self-contained page."""
    columns = [m for m, _, _ in METRICS]
    seeds = len(results["seeds"])
    rows = []
    for name, summary in results["variants"].items():
        cells = [_cell(summary[metric], metric, seeds) for metric in columns]
        rows.append(f"<tr><th>{html.escape(name)}</th>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    figures = "".join(
        f'<figure><img alt="{html.escape(Path(p).stem)}" src="data:image/png;base64,'
        f'{base64.b64encode(Path(p).read_bytes()).decode()}"></figure>' for p in results.get("plots", []))
    legend = "".join(f"<li><b>{html.escape(m)}</b>: {html.escape(d)}</li>" for m, d, _ in METRICS)
    variants = "".join(f"<li><b>{html.escape(n)}</b>: {html.escape(results.get('descriptions', {}).get(n, ''))}</li>"
                       for n in results["variants"])
    page = f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>medsft forgetting lab</title>
<style>body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1300px; }}
table {{ border-collapse: collapse; font-size: 13px; }} th, td {{ border: 1px solid #ccc; padding: 3px 8px; }}
.grid {{ display: grid; grid-template-columns: repeat(auto-fill, minmax(560px, 1fr)); gap: 10px; }}
img {{ max-width: 100%; }}</style></head><body>
<h1>Forgetting lab ({html.escape(results.get('base', 'synthetic'))} base, {html.escape(results['language'])}, {seeds} seed{'s' if seeds > 1 else ''})</h1>
<table><thead><tr><th>variant</th>{''.join(f'<th>{html.escape(c)}</th>' for c in columns)}</tr></thead>
<tbody>{''.join(rows)}</tbody></table><ul>{legend}</ul><ul>{variants}</ul>
<div class=grid>{figures}</div></body></html>
"""
    path = out / "report.html"
    path.write_text(page, encoding="utf-8")
    return path


def _aggregate(rows: list[dict]) -> dict:
    summary = {}
    for metric, _, _ in METRICS:
        values = [r[metric] for r in rows if r.get(metric) is not None]
        if not values:
            summary[metric] = {"mean": None, "std": None, "values": []}
            continue
        summary[metric] = {
            "mean": statistics.fmean(values),
            "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "values": values,
        }
    return summary


def _cell(entry: dict, metric: str, seeds: int) -> str:
    """mean (± std over seeds), or – when the variant has no such figure."""
    if entry["mean"] is None:
        return "–"
    digits = 0 if metric == "wall_seconds" else 3
    return f"{entry['mean']:.{digits}f}" + (f" ± {entry['std']:.{digits}f}" if seeds > 1 else "")


def results_table(results: dict) -> str:
    columns = [m for m, _, _ in METRICS]
    seeds = len(results["seeds"])
    lines = [
        f"Forgetting lab ({results.get('base', 'synthetic')} base, {results['language']}, "
        f"{seeds} seed{'s' if seeds > 1 else ''}; mean"
        + (" ± std" if seeds > 1 else "") + ")",
        "",
        "| variant | " + " | ".join(columns) + " |",
        "|---|" + "---|" * len(columns),
    ]
    for name, summary in results["variants"].items():
        cells = [_cell(summary[metric], metric, seeds) for metric in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", *(f"- `{m}`: {d}" for m, d, _ in METRICS)]
    lines += ["", *(f"- {n}: {results.get('descriptions', {}).get(n, '')}" for n in results["variants"])]
    if "lora" in results:
        lora = results["lora"]
        lines += ["", f"LoRA variants: rank {lora['rank']}, alpha {lora['alpha']}, learning rate {lora['learning_rate']:g}; "
                      f"full fine-tuning: learning rate {results['full_learning_rate']:g}."]
    return "\n".join(lines)


def write_plots(results: dict, folder: Path) -> list[Path]:
    """One bar chart per metric, variants side by side, error bars over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    names = list(results["variants"])
    for metric, description, _ in METRICS:
        means = [results["variants"][n][metric]["mean"] for n in names]
        if all(m is None for m in means):
            continue
        stds = [results["variants"][n][metric]["std"] or 0 for n in names]
        fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(names)), 3.6))
        colors = ["#888888" if n == "base" else "#3b7dd8" for n in names]
        ax.bar(names, [m or 0 for m in means], yerr=stds, color=colors, capsize=3)
        if metric == "length_ratio":
            ax.axhline(1.0, color="black", linewidth=0.8, linestyle="--")
        ax.set_title(f"{metric}: {description}", fontsize=9)
        ax.tick_params(axis="x", labelrotation=30, labelsize=8)
        fig.tight_layout()
        path = folder / f"{metric}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths
