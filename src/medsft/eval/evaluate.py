"""Evaluating a model on probe sets: one batched generation pass for every generated set, one
likelihood pass for multiple choice, then each set scored by its own scorer."""

from __future__ import annotations

from medsft.eval.choice import choose
from medsft.eval.generate import Chat, generate
from medsft.eval.names import metric
from medsft.eval.probes import ProbeResult, ProbeSet, score, score_choices


def evaluate(model, chat: Chat, probe_sets: list[ProbeSet], max_new_tokens: int = 128, batch_size: int = 32,
             label: str | None = "probing") -> dict[str, ProbeResult]:
    """Results by set name, in the order of `probe_sets`. label: the console progress line's name."""
    generated = [s for s in probe_sets if s.generates]
    questions = [p.question for s in generated for p in s.probes]
    answers = generate(model, chat, questions, max_new_tokens, batch_size, label) if questions else []
    results, start = {}, 0
    for probe_set in generated:
        end = start + len(probe_set.probes)
        results[probe_set.name] = score(probe_set, answers[start:end])
        start = end
    for probe_set in probe_sets:
        if not probe_set.generates:
            results[probe_set.name] = score_choices(probe_set, choose(model, chat, probe_set.probes))
    return {s.name: results[s.name] for s in probe_sets}


def flat_scores(results: dict[str, ProbeResult]) -> dict[str, float]:
    """Every metric of every set under its stable name, `set/metric`."""
    return {metric(name, key): value for name, result in results.items() for key, value in result.metrics.items()}


def answers_of(results: dict[str, ProbeResult]) -> dict[str, list[str]]:
    """The generated answer texts of each set."""
    return {name: [a.text for a in r.answers] for name, r in results.items() if r.generated}
