"""Probe sets and scoring them with batched generation."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from medsft.monitor.score import contains_fact, exact_match


@dataclass(frozen=True)
class Probe:
    question: str
    key: str | None = None  # what a correct answer must give; None: not scored for accuracy
    reference: str | None = None  # a reference answer, for reading side by side
    family: str = ""


@dataclass
class ProbeSet:
    name: str
    probes: list[Probe]
    scoring: str = "fact"  # "exact": 'The answer is KEY.' must match; "fact": KEY must appear in the answer
    language: str = "en"


@dataclass
class ProbeResult:
    name: str
    accuracy: float | None
    median_tokens: float
    eos_rate: float  # share of answers that ended on their own (not cut at max_new_tokens)
    answers: list = field(repr=False, default_factory=list)  # monitor.generate.Generated
    correct: list[bool | None] = field(repr=False, default_factory=list)


def score(probe_set: ProbeSet, answers: list) -> ProbeResult:
    correct: list[bool | None] = []
    for probe, answer in zip(probe_set.probes, answers):
        if probe.key is None:
            correct.append(None)
        elif probe_set.scoring == "exact":
            correct.append(exact_match(answer.text, probe.key, probe_set.language))
        else:
            correct.append(contains_fact(answer.text, probe.key))
    scored = [c for c in correct if c is not None]
    return ProbeResult(
        name=probe_set.name,
        accuracy=sum(scored) / len(scored) if scored else None,
        median_tokens=statistics.median(a.tokens for a in answers) if answers else 0.0,
        eos_rate=sum(a.stopped for a in answers) / len(answers) if answers else 0.0,
        answers=answers,
        correct=correct,
    )


def run_probes(model, tokenizer, template, probe_sets: list[ProbeSet], max_new_tokens: int = 128,
               batch_size: int = 32, system_prompt: str | None = None) -> dict[str, ProbeResult]:
    """Generate for every probe of every set in one batched pass, then score each set."""
    from medsft.monitor.generate import generate, prompt_for, stop_token_ids  # torch only when generating

    prompts = [prompt_for(template, p.question, system_prompt) for s in probe_sets for p in s.probes]
    answers = generate(model, tokenizer, prompts, stop_token_ids(template, tokenizer), max_new_tokens, batch_size)
    results, start = {}, 0
    for probe_set in probe_sets:
        end = start + len(probe_set.probes)
        results[probe_set.name] = score(probe_set, answers[start:end])
        start = end
    return results
