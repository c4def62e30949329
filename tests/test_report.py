"""report.html: self-contained, complete, and it loads in a real browser without errors."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest

from medsft.cli import main


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_model_dir):
    from test_monitor import _run

    return _run(tmp_path_factory.mktemp("report"), tiny_model_dir).run_dir


def test_report_is_self_contained_and_has_every_section(run_dir):
    page = (run_dir / "report.html").read_text(encoding="utf-8")
    for heading in ["At a glance", "Selected checkpoint", "Memorization", "Over training", "Data",
                    "Sample answers", "Recipe"]:
        assert heading in page, heading
    images = re.findall(r'src="data:image/png;base64,', page)
    assert len(images) >= 6  # losses, probe metrics, data mix
    assert "http://" not in page and "https://" not in page and "<script" not in page
    assert "general/kl_to_base" in page and "Train loss per source" in page and "Validation loss per source" in page


def test_report_command_rewrites_it_and_rejects_a_non_run(run_dir, tmp_path, capsys):
    (run_dir / "report.html").unlink()
    assert main(["report", str(run_dir)]) == 0
    assert (run_dir / "report.html").exists()
    assert main(["report", str(tmp_path)]) == 2
    assert "not a run directory" in capsys.readouterr().err


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (.ci/run installs it)")
def test_report_loads_in_headless_chromium_without_console_errors(run_dir, tmp_path):
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0"]
    url = (run_dir / "report.html").as_uri()
    shot = tmp_path / "report.png"
    done = subprocess.run([CHROMIUM, *flags, "--window-size=1300,2400", f"--screenshot={shot}", url],
                          capture_output=True, text=True, timeout=120)
    assert shot.exists() and shot.stat().st_size > 50_000  # a page with plots, not a blank one
    console_errors = [line for line in done.stderr.splitlines() if "CONSOLE" in line and "ERROR" in line.upper()]
    assert console_errors == []
    dom = subprocess.run([CHROMIUM, *flags, "--dump-dom", url], capture_output=True, text=True, timeout=120).stdout
    assert dom.count("<img") >= 6 and "Selected checkpoint" in dom


def test_eval_compares_base_and_tuned_side_by_side(run_dir, tiny_model_dir, tmp_path, capsys, monkeypatch):
    import json

    out = tmp_path / "eval.json"
    probes = run_dir.parent / "choice.jsonl"
    assert main(["eval", "--model", str(tiny_model_dir), "--adapter", str(run_dir / "adapter"), "--compare-base",
                 "--template", "qwen", "--general", "builtin-en", "--probes", str(probes),
                 "--max-new-tokens", "12", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "base" in printed and "tuned" in printed and "delta" in printed and "general/length_ratio" in printed
    result = json.loads(out.read_text())
    assert set(result["delta"]) >= {"general/median_tokens", "general/accuracy", "choice/choice/accuracy"}
    for key, delta in result["delta"].items():
        assert delta == pytest.approx(result["scores"][key] - result["base_scores"][key])
    assert main(["eval", "--model", str(tiny_model_dir), "--compare-base"]) == 2
    assert "--compare-base needs --adapter" in capsys.readouterr().err
    # General probes from a file, as the monitor takes them
    general = tmp_path / "general.jsonl"
    general.write_text("".join(json.dumps({"question": f"What is {i} plus {i}?", "key": str(2 * i)}) + "\n"
                               for i in range(5)))
    import medsft.eval.command as command

    asked = []
    real_evaluate = command.evaluate

    def spy(model, chat, probe_sets, *args, **kwargs):
        asked.extend((s.name, [p.question for p in s.probes]) for s in probe_sets)
        return real_evaluate(model, chat, probe_sets, *args, **kwargs)

    monkeypatch.setattr(command, "evaluate", spy)
    assert main(["eval", "--model", str(tiny_model_dir), "--template", "qwen", "--general", str(general),
                 "--max-new-tokens", "4", "--out", str(out)]) == 0
    capsys.readouterr()
    assert asked == [("general", [f"What is {i} plus {i}?" for i in range(5)])]
    assert "general/accuracy" in json.loads(out.read_text())["scores"]
    assert main(["eval", "--model", str(tiny_model_dir), "--general", str(tmp_path / "nope.jsonl")]) == 2
    assert "--general: " in capsys.readouterr().err


def _stage(name: str, plan: dict, trained: dict | None = None, records: int = 54) -> dict:
    stage = {"name": name, "asked_share": plan, "realized_share_samples": plan, "realized_share_tokens": plan,
             "records": records, "steps": 6, "padding_efficiency": 0.8}
    if trained is not None:
        stage["trained"] = {"records": 24, "steps": 6, "realized_share_samples": trained,
                            "realized_share_tokens": trained, "padding_efficiency": 0.9}
    return stage


def test_the_data_section_shows_what_each_stage_trained_beside_its_plan(tmp_path):
    """A stage that trained another mix than planned shows both, labelled; one that trained its plan shows it
    once, as trained; a run written before the manifest recorded `trained` shows the plan, labelled so."""
    from medsft.report.html import mix_bars, write_report

    manifest = {"sources": {"medical": {"read": 60, "rejected": 0, "train": 54, "validation": 6,
                                        "supervised_fraction": 0.5, "answer_tokens": {"median": 20}}},
                "stages": [_stage("capped", {"medical": 0.76, "general": 0.24}, {"medical": 0.46, "general": 0.54}),
                           _stage("whole", {"general": 1.0}, {"general": 1.0}),
                           _stage("old", {"medical": 0.7, "general": 0.3})]}
    (tmp_path / "data_manifest.json").write_text(json.dumps(manifest))
    page = write_report(tmp_path).read_text(encoding="utf-8")
    assert "trained: medical 46.0%, general 54.0% (planned: medical 76.0%, general 24.0%)" in page
    assert "<td>24 of 54 planned</td>" in page and "<td>90% (padded)</td>" in page
    assert "<td>trained: general 100.0%</td>" in page
    assert "<td>planned: medical 70.0%, general 30.0%</td>" in page and "<td>– of 54 planned</td>" in page
    assert mix_bars(manifest) == [
        ("capped\ntrained", {"medical": 0.46, "general": 0.54}, False),
        ("capped\nplanned", {"medical": 0.76, "general": 0.24}, True),
        ("whole\ntrained", {"general": 1.0}, False),
        ("old\nplanned", {"medical": 0.7, "general": 0.3}, True)]


def test_evaluation_plots_mark_where_a_stage_starts_not_its_first_evaluation():
    from medsft.report.html import _stage_starts

    train = [{"event": "train", "stage": "warm", "step": s} for s in (1, 4, 7)] + \
            [{"event": "train", "stage": "mixed", "step": s} for s in (8, 11)]
    evals = [{"event": "eval", "stage": "warm", "step": 5}, {"event": "eval", "stage": "mixed", "step": 12}]
    assert _stage_starts(train + evals) == {"warm": 1, "mixed": 8}
    assert _stage_starts(evals) == {"warm": 5, "mixed": 12}  # what the evaluation plots alone would say
