"""Adaptive mixing: the policy that moves a stage's domain:general weights from what the probes show.

A pure function of the evaluation's metrics, the one before it and the stage's bounds: general
accuracy or answer length below target raises the general share by one step; a domain score that
stopped rising while general ability holds lowers it by one step; otherwise the mix stays."""

from __future__ import annotations

from medsft.eval import names
from medsft.monitor.selection import domain_score


def general_share(weights: dict[str, float], roles: dict[str, str]) -> float:
    return sum(w for s, w in weights.items() if roles[s] == "general")


def with_general_share(weights: dict[str, float], roles: dict[str, str], share: float) -> dict[str, float]:
    """The weights with the general sources holding `share` together, each side keeping its inner proportions."""
    general = general_share(weights, roles)
    domain = 1 - general
    return {s: round(w / general * share if roles[s] == "general" else w / domain * (1 - share), 6)
            for s, w in weights.items()}


def decide(config, weights: dict[str, float], roles: dict[str, str], metrics: dict,
           previous_domain: float | None) -> tuple[dict[str, float], str] | None:
    """New weights and the reason, or None to keep the mix. config: the stage's `adaptive` section."""
    low, high = config.general_share
    share = general_share(weights, roles)
    retention, length = metrics.get(names.RETENTION), metrics.get(names.LENGTH_RATIO)
    short = []
    if retention is not None and retention < config.min_general_retention:
        short.append(f"general retention {retention:.3f} < {config.min_general_retention}")
    if length is not None and length < config.min_length_ratio:
        short.append(f"length ratio {length:.3f} < {config.min_length_ratio}")
    if short:
        new = min(high, round(share + config.step, 6))
        if new <= share:
            return None
        return with_general_share(weights, roles, new), "; ".join(short) + f": general share {share:.2f} -> {new:.2f}"
    score, meaning = domain_score({"metrics": metrics, "eval_loss": {}}, [])
    if previous_domain is not None and meaning != "no domain measurement" and score - previous_domain < config.min_domain_gain:
        new = max(low, round(share - config.step, 6))
        if new >= share:
            return None
        return with_general_share(weights, roles, new), (
            f"{meaning} flat ({previous_domain:.3f} -> {score:.3f}) while general ability holds: "
            f"general share {share:.2f} -> {new:.2f}")
    return None
