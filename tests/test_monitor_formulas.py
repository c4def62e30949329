"""The monitor's formulas on known answers: a stub generator at the scoring boundary returns fixed
answers, and every metric must come out exactly as computed by hand."""

from __future__ import annotations

import io
import json

import pytest

import medsft.eval.evaluate as evaluation
from medsft.eval.generate import Chat, Generated, Progress
from medsft.eval.probes import KnowledgeProbe, Probe, ProbeSet
from medsft.monitor.monitor import Monitor
from medsft.recipe import MonitorConfig

GENERAL = ProbeSet("general", [Probe("Capital of France?", "Paris"), Probe("2+2?", "4"),
                               Probe("Tell me something.", None), Probe("Colour of the sky?", "blue")])
DOMAIN = ProbeSet("domain/medical", [Probe("How to prevent a stroke?", None, "take aspirin daily")], rouge_l=True)
KNOWLEDGE = ProbeSet("knowledge/facts", [KnowledgeProbe("What is hypertension?", ("blood pressure", "salt"))],
                     "knowledge")

ANSWERS = {  # model -> question -> (text, tokens, ended on its own)
    "base": {"Capital of France?": ("Paris is the capital.", 5, True), "2+2?": ("2+2 is 4", 4, True),
             "Tell me something.": ("open answer one two", 4, False), "Colour of the sky?": ("The sky is blue", 4, True),
             "How to prevent a stroke?": ("rest", 1, True), "What is hypertension?": ("a disease", 2, True)},
    "tuned": {"Capital of France?": ("Paris", 1, True), "2+2?": ("five", 1, True),
              "Tell me something.": ("x y x y", 4, True), "Colour of the sky?": ("blue blue", 2, False),
              "How to prevent a stroke?": ("take aspirin", 2, True), "What is hypertension?": ("high blood pressure", 3, False)},
}


@pytest.fixture
def stub_generation(monkeypatch):
    def generate(model, chat, questions, max_new_tokens=128, batch_size=32, label=None):
        return [Generated(*ANSWERS[model][q]) for q in questions]

    monkeypatch.setattr(evaluation, "generate", generate)


def test_probe_metrics_are_exactly_the_hand_computed_ones(tmp_path, stub_generation):
    config = MonitorConfig(kl_to_base=False)
    monitor = Monitor(config, [GENERAL, DOMAIN, KNOWLEDGE], Chat(None, None), tmp_path, {})
    base = monitor.compute_base("base")
    assert base["scores"]["general/accuracy"] == 1.0  # Paris, 4 and blue all in the base's answers
    assert base["scores"]["general/median_tokens"] == 4  # median of 5, 4, 4, 4
    metrics = monitor.probe("tuned", step=10, stage="mixed", stage_step=10, eval_losses={}, train_losses={})
    assert metrics == pytest.approx({
        "general/median_tokens": 1.5,  # median of 1, 1, 4, 2
        "general/eos_rate": 0.75,  # three of four ended on their own
        "general/distinct_2": 0.75,  # bigrams (x,y) (y,x) (x,y) (blue,blue): 3 distinct of 4
        "general/accuracy": 2 / 3,  # Paris and blue; "five" is not 4; the open probe is not scored
        "domain/medical/median_tokens": 2,
        "domain/medical/eos_rate": 1.0,
        "domain/medical/distinct_2": 1.0,
        "domain/medical/rouge_l": 0.8,  # LCS 2: precision 2/2, recall 2/3
        "knowledge/facts/median_tokens": 3,
        "knowledge/facts/eos_rate": 0.0,
        "knowledge/facts/distinct_2": 1.0,
        "knowledge/facts/accuracy": 0.5,  # blood pressure, not salt
        "general/length_ratio": 1.5 / 4,
        "general/retention": (2 / 3) / 1.0,
    })
    assert monitor.history[-1]["metrics"] == metrics
    samples = [json.loads(line) for line in (tmp_path / "monitor" / "samples.jsonl").read_text().splitlines()]
    assert [(s["set"], s["answer"], s["base"]) for s in samples][:2] == [
        ("general", "Paris", "Paris is the capital."), ("general", "five", "2+2 is 4")]


def test_the_base_answers_are_cached_and_reused(tmp_path, stub_generation):
    monitor = Monitor(MonitorConfig(kl_to_base=False), [GENERAL], Chat(None, None), tmp_path, {})
    first = monitor.compute_base("base")
    again = Monitor(MonitorConfig(kl_to_base=False), [GENERAL], Chat(None, None), tmp_path, {})
    assert again.compute_base("tuned") == first  # read from monitor/base.json, not generated again


def test_progress_lines_say_answers_done_speed_and_time_left():
    stream = io.StringIO()
    progress = Progress("probing the base model", 10, every=0.0, stream=stream)
    progress.update(4, 200)
    progress.update(6, 300)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("probing the base model: 4/10 answers, ") and "tokens/s, ETA" in lines[0]
    assert lines[1].startswith("probing the base model: 10/10 answers, ") and lines[1].endswith("ETA 0s")
