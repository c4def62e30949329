"""Checkpoint selection: the most domain skill gained while general ability holds."""

from __future__ import annotations

import statistics

from medsft.eval import names


def domain_score(entry: dict, domain_sources: list[str]) -> tuple[float, str]:
    """(score, what it is): higher is better. Domain probe scores when there are any, else -validation loss."""
    metrics = entry["metrics"]
    scores = [v for k, v in metrics.items() if names.is_domain_score(k)]
    if scores:
        return statistics.fmean(scores), "mean domain probe score"
    losses = [entry["eval_loss"][s] for s in domain_sources if s in entry["eval_loss"]]
    if losses:
        return -statistics.fmean(losses), "negative domain validation loss"
    return 0.0, "no domain measurement"


def holds_general(candidate: dict, min_general_retention: float, min_length_ratio: float) -> bool:
    """Whether a candidate (checkpoint, adapter scale) keeps general ability: retention and length
    ratio at or above their minimums (a measure that is missing does not count against it)."""
    retention, length = candidate["general_retention"], candidate["length_ratio"]
    return ((retention is None or retention >= min_general_retention)
            and (length is None or length >= min_length_ratio))


def kept_clause(candidates: list[dict], min_general_retention: float, min_length_ratio: float) -> str:
    """' that keep general retention >= R and length ratio >= L', naming only what was measured."""
    kept = " and ".join(
        f"{label} >= {minimum}" for label, key, minimum in (("general retention", "general_retention",
                                                             min_general_retention),
                                                            ("length ratio", "length_ratio", min_length_ratio))
        if any(c[key] is not None for c in candidates))
    return ((f" that keep {kept}" if kept else "")
            + ("" if all(c["general_retention"] is not None for c in candidates) else
               "; general retention was not measured (no general probes, or the base scored 0 on them)"))


def select_checkpoint(history: list[dict], checkpoints: dict[tuple[str, int], str], domain_sources: list[str],
                      min_general_retention: float, min_length_ratio: float) -> dict | None:
    """Pick among evaluations that have a checkpoint. Returns the choice with its reason, or None."""
    candidates = []
    for entry in history:
        path = checkpoints.get((entry["stage"], entry["stage_step"]))
        if path is None:
            continue
        score, meaning = domain_score(entry, domain_sources)
        metrics = entry["metrics"]
        candidates.append({
            "step": entry["step"], "stage": entry["stage"], "checkpoint": path,
            "domain_score": score, "domain_score_is": meaning,
            "general_retention": metrics.get(names.RETENTION),
            "length_ratio": metrics.get(names.LENGTH_RATIO),
        })
    if not candidates:
        return None

    qualified = [c for c in candidates if holds_general(c, min_general_retention, min_length_ratio)]
    if qualified:
        best = max(qualified, key=lambda c: (c["domain_score"], c["step"]))
        why = (f"best {best['domain_score_is']} ({best['domain_score']:.3f}) among {len(qualified)} of "
               f"{len(candidates)} checkpoints" + kept_clause(candidates, min_general_retention, min_length_ratio))
    else:
        # Nothing holds: the best trade-off, with domain skill ranked (scale-free) against what is kept.
        ranked = sorted(candidates, key=lambda c: c["domain_score"])
        for rank, c in enumerate(ranked):
            kept = min(c["general_retention"] if c["general_retention"] is not None else 1.0, 1.0)
            length = min(c["length_ratio"] if c["length_ratio"] is not None else 1.0, 1.0)
            c["trade_off"] = rank / max(len(ranked) - 1, 1) + kept + length
        best = max(candidates, key=lambda c: (c["trade_off"], c["step"]))
        why = (f"no checkpoint keeps general retention >= {min_general_retention} and length ratio >= "
               f"{min_length_ratio}; this is the best trade-off of domain score rank, retention and length")
    return {**best, "reason": why, "candidates": candidates}
