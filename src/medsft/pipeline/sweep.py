"""`medsft sweep RECIPE --grid key=v1,v2 ...`: a grid of runs, one after another, and their trade-off.

Each point of the grid is the recipe with those fields set (any field, as `--set` takes it), trained
into its own run directory under --out. A finished run is not trained again and an interrupted one
resumes from its newest checkpoint, so a killed sweep continues where it stopped. The table and a
scatter of domain score against general retention, the Pareto front marked, tell which settings
gain domain skill without the damage."""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path

from medsft.errors import UserError
from medsft.eval import names
from medsft.monitor.selection import domain_score
from medsft.pipeline.rundir import recipe_differences
from medsft.recipe import load_recipe
from medsft.train import checkpoint


def parse_grid(items: list[str]) -> dict[str, list[str]]:
    grid = {}
    for item in items:
        key, equals, values = item.partition("=")
        choices = [v.strip() for v in values.split(",") if v.strip()]
        if not equals or not key.strip() or not choices:
            raise UserError(f"--grid {item!r}: expected KEY=V1,V2 (e.g. train.learning_rate=1e-4,2e-4)")
        if key.strip() in grid:
            raise UserError(f"--grid {item!r}: {key.strip()} is given twice; list its values once, comma-separated")
        if len(set(choices)) < len(choices):
            raise UserError(f"--grid {item!r}: a value is listed twice")
        grid[key.strip()] = choices
    if not grid:
        raise UserError("--grid: give at least one KEY=V1,V2")
    return grid


def _grid_error(error: UserError, point: dict[str, str]) -> UserError:
    """A recipe error a grid value caused, said as the --grid value it came from (not the recipe file
    or --set)."""
    text = str(error)
    for key, value in point.items():
        at = text.find(f"{key}: ")
        if at >= 0:
            return UserError(f"--grid {key}={value}: {text[at + len(key) + 2:]}")
    return error


def point_name(point: dict[str, str]) -> str:
    return "_".join(f"{key.rsplit('.', 1)[-1]}={re.sub(r'[^A-Za-z0-9.+-]', '-', value)}" for key, value in point.items())


def sweep(recipe_path: str | Path, grid: dict[str, list[str]], out: str | Path, base_overrides: list[str] | None = None,
          log=print) -> dict:
    from medsft.pipeline.run import train

    out = Path(out)
    points = [dict(zip(grid, values)) for values in itertools.product(*grid.values())]
    recipes = []
    for point in points:  # every point is checked before the first one trains
        overrides = list(base_overrides or []) + [f"{k}={v}" for k, v in point.items()]
        overrides.append(f"output_dir={out / point_name(point)}")
        try:
            recipes.append(load_recipe(recipe_path, overrides))
        except UserError as error:
            raise _grid_error(error, point) from None
    for point, recipe in zip(points, recipes):  # a point trained before must have been this recipe
        run_dir = Path(recipe.output_dir)
        if (run_dir / "recipe.yaml").is_file():
            changed = recipe_differences(recipe, run_dir, "--out")
            if changed:
                raise UserError(f"--out: {run_dir} holds a run of another recipe ({', '.join(changed[:3])}"
                                f"{' ...' if len(changed) > 3 else ''}); use another --out, or remove that run")
    rows = []
    for number, (point, recipe) in enumerate(zip(points, recipes), 1):
        run_dir = Path(recipe.output_dir)
        final = run_dir / ("adapter" if recipe.finetune.method == "lora" else "model")
        if (run_dir / "report.html").is_file() and final.is_dir():
            log(f"[{number}/{len(points)}] {point_name(point)}: finished before, kept")
        else:
            log(f"[{number}/{len(points)}] {point_name(point)}: training")
            train(recipe, log=log, resume="auto")
        rows.append({"name": point_name(point), "settings": point, "run_dir": str(run_dir), **outcome(run_dir)})
    front = pareto_front(rows)
    for row in rows:
        row["pareto"] = row["name"] in front
    result = {"grid": grid, "runs": rows}
    out.mkdir(parents=True, exist_ok=True)
    checkpoint.write_json_atomic(out / "sweep.json", result)
    (out / "sweep.md").write_text(format_table(rows) + "\n", encoding="utf-8")
    result["plot"] = str(_plot(rows, out / "sweep.png"))
    log(format_table(rows))
    return result


def outcome(run_dir: Path) -> dict:
    """The kept weights' domain score, general retention and length ratio, from the run's evaluations."""
    events = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
              if line.strip()]
    evaluations = [e for e in events if e.get("event") == "eval"]
    if not evaluations:
        return {"domain_score": None, "domain_score_is": "no evaluation", "general_retention": None,
                "length_ratio": None, "step": None}
    chosen = evaluations[-1]
    selection = run_dir / "selection.json"
    if selection.is_file():
        step = json.loads(selection.read_text(encoding="utf-8"))["step"]
        chosen = next((e for e in evaluations if e["step"] == step), chosen)
    metrics = {k: v for k, v in chosen.items() if isinstance(v, (int, float)) and "/" in k}
    losses = {k.split("/", 1)[1]: v for k, v in chosen.items() if k.startswith("eval_loss/")}
    score, meaning = domain_score({"metrics": {k: v for k, v in metrics.items() if not k.startswith("eval_loss")},
                                   "eval_loss": losses}, [s for s in losses if s != "general"])
    return {"domain_score": round(score, 4), "domain_score_is": meaning,
            "general_retention": metrics.get(names.RETENTION), "length_ratio": metrics.get(names.LENGTH_RATIO),
            "step": chosen["step"]}


def pareto_front(rows: list[dict]) -> set[str]:
    """Runs no other run beats on both domain score and general retention."""
    scored = [r for r in rows if r["domain_score"] is not None]
    front = set()
    for row in scored:
        mine = (row["domain_score"], row["general_retention"] if row["general_retention"] is not None else 0.0)
        beaten = False
        for other in scored:
            theirs = (other["domain_score"], other["general_retention"] if other["general_retention"] is not None else 0.0)
            if other is not row and theirs[0] >= mine[0] and theirs[1] >= mine[1] and theirs != mine:
                beaten = True
                break
        if not beaten:
            front.add(row["name"])
    return front


def format_table(rows: list[dict]) -> str:
    lines = ["| run | domain score | general retention | length ratio | Pareto |", "|---|---|---|---|---|"]
    for row in rows:
        cells = [row["domain_score"], row["general_retention"], row["length_ratio"]]
        lines.append(f"| {row['name']} | " + " | ".join("–" if c is None else f"{c:.3f}" for c in cells)
                     + f" | {'yes' if row.get('pareto') else ''} |")
    if rows:
        lines.append(f"\ndomain score: {rows[0]['domain_score_is']}")
    return "\n".join(lines)


def _plot(rows: list[dict], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 4))
    scored = [r for r in rows if r["domain_score"] is not None]
    # The general measure on the y axis: retention where the probes gave one, else the answer length ratio;
    # a point without it is left out and counted (drawn at 0 it would read as total loss).
    key, label = next(((k, lab) for k, lab in (("general_retention", "general retention (share of base accuracy)"),
                                                ("length_ratio", "general answer length ratio (tuned / base)"))
                       if any(r[k] is not None for r in scored)), (None, "no general measure"))
    shown = [r for r in scored if key is not None and r[key] is not None]
    for row in shown:
        axis.scatter(row["domain_score"], row[key], marker="*" if row["pareto"] else "o",
                     s=120 if row["pareto"] else 40, color="tab:red" if row["pareto"] else "tab:blue")
        axis.annotate(row["name"], (row["domain_score"], row[key]), fontsize=7, xytext=(3, 3),
                      textcoords="offset points")
    front = sorted((r for r in shown if r["pareto"]), key=lambda r: r["domain_score"])
    if len(front) > 1:
        axis.plot([r["domain_score"] for r in front], [r[key] for r in front], "r--", lw=1, label="Pareto front")
        axis.legend(fontsize=8)
    if len(shown) < len(rows):
        axis.text(0.01, 0.01, f"{len(rows) - len(shown)} of {len(rows)} points not shown: no {label.split(' (')[0]}",
                  transform=axis.transAxes, fontsize=7, color="grey")
    axis.set_xlabel(scored[0]["domain_score_is"] if scored else "domain score")
    axis.set_ylabel(label)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
