"""`report.html`: one self-contained page (plots embedded as PNG, no scripts, no network) that a
person reads at a glance: what the data was, what training did to each source, what the model
kept and lost against the base, which checkpoint was kept and why, and sample answers."""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

PROBE_PLOTS = [
    # (metric suffix, title, reference value or "base")
    ("length_ratio", "General answer length, tuned / base", 1.0),
    ("kl_to_base", "Drift from base: mean token KL on the base's answers", 0.0),
    ("accuracy", "Probe accuracy", "base"),
    ("rouge_l", "Domain answers vs reference (ROUGE-L)", "base"),
    ("eos_rate", "Answers that end on their own (EOS rate)", "base"),
    ("distinct_2", "Answer diversity (distinct-2)", "base"),
]


def _read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _read_json(path: Path):
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _figure(title: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.2, 3.2))
    ax.yaxis.get_major_formatter().set_useOffset(False)  # a flat series at 1 +- 1e-17 reads as 1, not as an offset
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    return fig, ax


def _stage_marks(ax, starts: dict[str, int]) -> None:
    """Dotted lines where a new stage starts, so progressive training reads as such. starts: each
    stage's first step, from every event (an evaluation plot's own first point of a stage comes later)."""
    for number, (stage, step) in enumerate(starts.items()):
        if number:
            ax.axvline(step - 0.5, color="grey", linestyle=":", linewidth=1)
            ax.text(step - 0.5, ax.get_ylim()[1], f" {stage}", fontsize=7, va="top", color="grey")


def _stage_starts(events: list[dict]) -> dict[str, int]:
    """The first step of each stage, in order."""
    starts: dict[str, int] = {}
    for e in events:
        if "stage" in e and "step" in e:
            starts[e["stage"]] = min(starts.get(e["stage"], e["step"]), e["step"])
    return dict(sorted(starts.items(), key=lambda item: item[1]))


def _series_plot(events: list[dict], keys: list[str], title: str, starts: dict[str, int],
                 reference: dict[str, float] | None = None):
    fig, ax = _figure(title)
    for key in keys:
        points = [(e["step"], e[key]) for e in events if e.get(key) is not None]
        if points:
            line, = ax.plot(*zip(*points), marker="o", markersize=3, label=key)
            if reference and reference.get(key) is not None:
                ax.axhline(reference[key], color=line.get_color(), linestyle="--", linewidth=1, alpha=0.7)
    ax.set_xlabel("step")
    if ax.get_lines():  # a metric with no value yet (e.g. one eval without probes) draws no line
        ax.legend(fontsize=7)
    _stage_marks(ax, starts)
    return _png(fig)


def mix_bars(manifest: dict) -> list[tuple[str, dict[str, float], bool]]:
    """The mix chart's bars, (label, share of samples per source, planned): each stage's trained mix,
    and its plan beside it where the two differ. A run written before the manifest recorded what was
    trained (or a stage never reached) has the plan alone."""
    bars = []
    for stage in manifest["stages"]:
        plan = stage["realized_share_samples"]
        trained = stage.get("trained", {}).get("realized_share_samples")
        if trained is not None:
            bars.append((f"{stage['name']}\ntrained", trained, False))
        if trained is None or _percent(trained) != _percent(plan):
            bars.append((f"{stage['name']}\nplanned", plan, True))
    return bars


def _mix_plot(manifest: dict) -> str:
    fig, ax = _figure("Data mix per stage: trained (solid), planned (hatched); share of samples")
    bars = mix_bars(manifest)
    bottom = [0.0] * len(bars)
    for source in manifest["sources"]:
        shares = [mix.get(source, 0.0) for _, mix, _ in bars]
        drawn = ax.bar(range(len(bars)), shares, bottom=bottom, label=source)
        for patch, (_, _, planned) in zip(drawn, bars):
            if planned:
                patch.set_alpha(0.45)
                patch.set_hatch("//")
        bottom = [b + v for b, v in zip(bottom, shares)]
    ax.set_xticks(range(len(bars)), [label for label, _, _ in bars], fontsize=7)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7)
    return _png(fig)


def _percent(shares: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.1%}" for k, v in shares.items())


def _mix_cell(stage: dict, key: str) -> str:
    """A stage's share by samples or tokens (`key`): what it trained on, with the plan beside it where
    the two differ; the plan alone, said to be, for a run written before the manifest recorded both."""
    plan = _percent(stage[key])
    if "trained" not in stage:
        return f"planned: {plan}"
    trained = _percent(stage["trained"][key])
    return f"trained: {trained}" if trained == plan else f"trained: {trained} (planned: {plan})"


def _records_cell(stage: dict) -> str:
    planned = stage.get("records", "–")
    if "trained" not in stage:
        return f"– of {planned} planned"
    return f"{stage['trained']['records']} of {planned} planned"


def _adaptive_plot(changes: list[dict], manifest: dict) -> str:
    """The weights the adaptive controller set, step by step (each change's reason in the events table)."""
    fig, ax = _figure("Adaptive mix: weights set by the controller")
    sources = sorted({k.split("/", 1)[1] for c in changes for k in c if k.startswith("mix/")})
    asked = {st["name"]: st["asked_share"] for st in manifest.get("stages", [])}
    stage_steps = {st["name"]: (st.get("trained") or {}).get("steps") or st.get("steps") or 0
                   for st in manifest.get("stages", [])}
    for source in sources:
        steps, values = [], []
        for change in changes:
            if not steps and change["stage"] in asked:  # the stage's starting weight, then each change
                steps.append(change["step"] - change["stage_step"])
                values.append(asked[change["stage"]].get(source, 0.0))
            steps.append(change["step"])
            values.append(change.get(f"mix/{source}", 0.0))
        marked = len(steps)
        last = changes[-1]
        end = last["step"] - last["stage_step"] + stage_steps.get(last["stage"], 0)
        if end > steps[-1]:  # the last weights held to the stage's end (no marker there: not a change)
            steps.append(end)
            values.append(values[-1])
        ax.step(steps, values, where="post", marker="o", markevery=list(range(marked)), label=source)
    ax.set_xlabel("step")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7)
    return _png(fig)


def _batch_efficiency(manifest: dict, stage: dict) -> str:
    """Real tokens over the tokens the batches hold: 1 without padding, else what padding leaves
    (in the batches trained where the manifest says, else in the plan's)."""
    if manifest.get("batches") == "padding-free":
        return "100% (padding-free)"
    stage = stage.get("trained", stage)
    return f"{stage['padding_efficiency']:.0%} (padded)" if "padding_efficiency" in stage else "–"


def _table(header: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _fmt(value) -> str:
    return f"{value:.3f}" if isinstance(value, float) else ("–" if value is None else str(value))


def write_report(run_dir: str | Path) -> Path:
    """Write run_dir/report.html from what the run directory holds, and return its path."""
    run = Path(run_dir)
    events = _read_jsonl(run / "metrics.jsonl")
    manifest = _read_json(run / "data_manifest.json") or {"sources": {}, "stages": []}
    base = _read_json(run / "monitor" / "base.json")
    verdicts = _read_json(run / "monitor" / "verdicts.json") or {}
    selection = _read_json(run / "selection.json")
    samples = _read_jsonl(run / "monitor" / "samples.jsonl")
    recipe_text = (run / "recipe.yaml").read_text(encoding="utf-8") if (run / "recipe.yaml").exists() else ""

    train = [e for e in events if e["event"] == "train"]
    evals = [e for e in events if e["event"] == "eval"]
    sources = list(manifest["sources"])
    sections: list[str] = []

    # At a glance: the last evaluation against the base.
    if evals:
        last = evals[-1]
        glance = [[k, _fmt(last[k]), _fmt((base or {}).get("scores", {}).get(k))]
                  for k in sorted(last) if "/" in k and not k.startswith(("train_loss", "eval_loss"))
                  and not k.endswith("median_tokens")]
        glance = [[k, v, b] for k, v, b in glance] + [[k, _fmt(last[k]), "–"] for k in sorted(last)
                                                       if k.startswith("eval_loss")]
        sections.append("<h2>At a glance (last evaluation, step %d)</h2>" % last["step"]
                        + _table(["metric", "tuned", "base"], glance))

    if selection:
        sections.append(
            "<h2>Selected checkpoint</h2>"
            f"<p class=big>step {selection['step']} ({html.escape(selection['stage'])}): "
            f"{html.escape(selection['reason'])}</p>"
            + _table(["step", "stage", "domain score", "general retention", "length ratio"],
                     [[c["step"], c["stage"], _fmt(c["domain_score"]), _fmt(c["general_retention"]),
                       _fmt(c["length_ratio"])] for c in selection["candidates"]])
        )

    if verdicts:
        sections.append("<h2>Memorization</h2>" + _table(
            ["source", "verdict"], [[s, v["reason"]] for s, v in sorted(verdicts.items())]))
    mix_events = [e for e in events if e["event"] == "mix"]
    if mix_events:
        sections.append("<h2>Adaptive mix changes</h2>" + _table(
            ["step", "stage", "new weights", "why"],
            [[e["step"], e["stage"], ", ".join(f"{k[4:]} {v:.2f}" for k, v in e.items() if k.startswith("mix/")),
              e["mix_reason"]] for e in mix_events]))

    plots: list[tuple[str, str]] = []
    loss_keys = [f"train_loss/{s}" for s in sources]
    starts = _stage_starts(train + evals)  # where each stage begins, not its first evaluation
    if train:
        plots.append(("Train loss per source", _series_plot(train, loss_keys, "Train loss per source", starts)))
    if evals:
        plots.append(("Validation loss per source",
                      _series_plot(evals, [f"eval_loss/{s}" for s in sources], "Validation loss per source", starts)))
        base_scores = (base or {}).get("scores", {})
        for suffix, title, reference in PROBE_PLOTS:
            keys = sorted({k for e in evals for k in e if k.endswith("/" + suffix)})
            if not keys:
                continue
            refs = {k: (reference if reference != "base" else base_scores.get(k)) for k in keys}
            plots.append((title, _series_plot(evals, keys, title + " (dashed: base)", starts, refs)))
    if manifest["stages"]:
        plots.append(("Data mix per stage: trained, and planned where it differs", _mix_plot(manifest)))
    changes = [e for e in events if e["event"] == "mix"]
    if changes:
        plots.append(("Adaptive mix", _adaptive_plot(changes, manifest)))
    if plots:
        sections.append("<h2>Over training</h2><div class=grid>" + "".join(
            f'<figure><img alt="{html.escape(t)}" src="data:image/png;base64,{p}"><figcaption>{html.escape(t)}'
            "</figcaption></figure>" for t, p in plots) + "</div>")

    if manifest["sources"]:
        rows = [[name, s["read"], s["rejected"], s["train"], s["validation"], _fmt(s["supervised_fraction"]),
                 s["answer_tokens"]["median"]] for name, s in manifest["sources"].items()]
        stage_rows = [[st["name"], st.get("steps", "–"), _percent(st["asked_share"]), _records_cell(st),
                       _mix_cell(st, "realized_share_samples"), _mix_cell(st, "realized_share_tokens"),
                       _batch_efficiency(manifest, st)]
                      for st in manifest["stages"]]
        sections.append("<h2>Data</h2>" + _table(
            ["source", "read", "rejected", "train", "validation", "supervised fraction", "median answer tokens"], rows)
            + _table(["stage", "steps", "asked", "records trained", "realized (samples)", "realized (tokens)",
                      "real tokens / batch tokens"], stage_rows))

    if samples:
        last_step = max(s["step"] for s in samples)
        shown = [s for s in samples if s["step"] == last_step][:12]
        sections.append(f"<h2>Sample answers at step {last_step}: base and tuned</h2>" + "".join(
            f"<div class=sample><p class=q>[{html.escape(s['set'])}] {html.escape(s['question'])}</p>"
            f"<div class=pair><div><h4>base</h4><pre>{html.escape(s['base'] or '')}</pre></div>"
            f"<div><h4>tuned</h4><pre>{html.escape(s['answer'])}</pre></div></div></div>" for s in shown))

    sections.append(f"<h2>Recipe</h2><pre>{html.escape(recipe_text)}</pre>")
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>medsft report: {html.escape(run.name)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1300px; color: #222; }}
table {{ border-collapse: collapse; margin: .5em 0 1.5em; font-size: 13px; }}
th, td {{ border: 1px solid #ccc; padding: 3px 8px; text-align: left; }}
th {{ background: #f3f3f3; }}
.grid {{ display: grid; grid-template-columns: repeat(auto-fill, minmax(600px, 1fr)); gap: 12px; }}
figure {{ margin: 0; }} img {{ max-width: 100%; }} figcaption {{ font-size: 12px; color: #555; }}
.pair {{ display: grid; grid-template-columns: 1fr 1fr; gap: 10px; }}
pre {{ white-space: pre-wrap; background: #f7f7f7; padding: 6px; font-size: 12px; }}
.q {{ font-weight: bold; margin-bottom: 2px; }} .big {{ font-size: 15px; }}
</style></head><body>
<h1>medsft report: {html.escape(str(run))}</h1>
{''.join(sections)}
</body></html>
"""
    path = run / "report.html"
    path.write_text(page, encoding="utf-8")
    return path
