"""Probe sets and how each is scored. Pure Python: the model side is in `eval/evaluate.py`.

A `ProbeSet` is the one unit every evaluation works with (the training monitor, `medsft eval`
and the lab): a name that prefixes its metrics (`general`, `domain/medical`, ...), its probes,
and its scoring. `score` turns the answers to a set into its metrics."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from medsft.eval.matching import contains_fact, exact_match
from medsft.eval.textmetrics import distinct_n, fact_recall, rouge_l

SCORINGS = ("fact", "exact", "knowledge", "choice")


@dataclass(frozen=True)
class Probe:
    question: str
    key: str | None = None  # what a correct answer must give; None: not scored for accuracy
    reference: str | None = None  # a reference answer, for reading side by side (and ROUGE-L)
    family: str = ""


@dataclass(frozen=True)
class KnowledgeProbe:
    question: str
    facts: tuple[str, ...]  # key facts a good answer states
    reference: str | None = None  # a reference answer, for ROUGE-L


@dataclass(frozen=True)
class ChoiceProbe:
    question: str
    options: tuple[tuple[str, str], ...]  # (letter, text), in letter order
    answer: str  # the letter of the correct option


@dataclass
class ProbeSet:
    """name: its metrics are `name/metric`. scoring: `fact` (the key appears in the answer), `exact`
    ('The answer is KEY.'), `knowledge` (share of the facts stated), `choice` (the most likely
    option is the right one). rouge_l: also ROUGE-L against the references of unkeyed probes."""

    name: str
    probes: list
    scoring: str = "fact"
    language: str = "en"
    rouge_l: bool = False

    def __post_init__(self):
        if self.scoring not in SCORINGS:
            raise ValueError(f"unknown scoring {self.scoring!r} (expected one of {', '.join(SCORINGS)})")

    @property
    def generates(self) -> bool:
        """Answers are generated (every scoring but `choice`, which compares option likelihoods)."""
        return self.scoring != "choice"


@dataclass
class ProbeResult:
    name: str
    metrics: dict[str, float]  # median_tokens, eos_rate, distinct_2, accuracy, rouge_l (those that apply)
    answers: list = field(repr=False, default_factory=list)  # eval.generate.Generated, or chosen letters
    correct: list = field(repr=False, default_factory=list)  # per probe: True/False, a fact share, or None

    @property
    def generated(self) -> bool:
        """The answers are generated texts (not the letters chosen in a multiple-choice set)."""
        return "median_tokens" in self.metrics

    @property
    def accuracy(self) -> float | None:
        return self.metrics.get("accuracy")

    @property
    def median_tokens(self) -> float:
        return self.metrics.get("median_tokens", 0.0)

    @property
    def eos_rate(self) -> float:
        return self.metrics.get("eos_rate", 0.0)


def judge(probe, text: str, scoring: str, language: str = "en") -> bool | float | None:
    """Whether one answer is right (a share of facts for knowledge probes); None when unscored."""
    if scoring == "knowledge":
        return fact_recall(text, list(probe.facts))
    if probe.key is None:
        return None
    if scoring == "exact":
        return exact_match(text, probe.key, language)
    return contains_fact(text, probe.key)


def score(probe_set: ProbeSet, answers: list) -> ProbeResult:
    """The metrics of a generated set: answer length, how many ended on their own, diversity,
    accuracy over the probes that can be scored, and ROUGE-L where asked for."""
    texts = [a.text for a in answers]
    correct = [judge(p, t, probe_set.scoring, probe_set.language) for p, t in zip(probe_set.probes, texts)]
    metrics = {
        "median_tokens": statistics.median(a.tokens for a in answers) if answers else 0.0,
        "eos_rate": sum(a.stopped for a in answers) / len(answers) if answers else 0.0,
        "distinct_2": distinct_n(texts, 2),
    }
    scored = [c for c in correct if c is not None]
    if scored:
        metrics["accuracy"] = statistics.fmean(float(c) for c in scored)
    references = [rouge_l(t, p.reference) for p, t in zip(probe_set.probes, texts)
                  if p.reference is not None and (probe_set.scoring == "knowledge" or
                                                  (probe_set.rouge_l and p.key is None))]
    if references:
        metrics["rouge_l"] = statistics.fmean(references)
    return ProbeResult(probe_set.name, metrics, answers, correct)


def score_choices(probe_set: ProbeSet, chosen: list[str]) -> ProbeResult:
    """A multiple-choice set: the share of probes whose chosen letter is the answer."""
    correct = [letter == p.answer for p, letter in zip(probe_set.probes, chosen)]
    accuracy = sum(correct) / len(correct) if correct else 0.0
    return ProbeResult(probe_set.name, {"accuracy": accuracy}, chosen, correct)


def score_knowledge(answer: str, probe: KnowledgeProbe) -> dict:
    """Key-fact recall of an answer, whether it states every fact, and ROUGE-L against the
    reference (None without one)."""
    return {
        "fact_recall": fact_recall(answer, list(probe.facts)),
        "all_facts": all(contains_fact(answer, fact) for fact in probe.facts),
        "rouge_l": rouge_l(answer, probe.reference) if probe.reference is not None else None,
    }
