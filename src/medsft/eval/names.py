"""Metric names, defined once. Every probe metric is `<set>/<metric>`, where a set is
`general`, `domain/<source>`, `knowledge/<file>`, `choice/<file>` or `probes/<file>`.

These names are what metrics.jsonl, the report, checkpoint selection and `medsft eval` share:
change one here and every reader follows."""

from __future__ import annotations

GENERAL = "general"
DOMAIN = "domain"
KNOWLEDGE = "knowledge"
CHOICE = "choice"
PROBES = "probes"  # the user's generation probe files
GROUPS = (GENERAL, DOMAIN, KNOWLEDGE, CHOICE, PROBES)
DOMAIN_GROUPS = (DOMAIN, KNOWLEDGE, CHOICE, PROBES)  # what checkpoint selection counts as domain skill

# Per-set metrics
MEDIAN_TOKENS = "median_tokens"
EOS_RATE = "eos_rate"
DISTINCT_2 = "distinct_2"
ACCURACY = "accuracy"
ROUGE_L = "rouge_l"
DOMAIN_SCORES = (ACCURACY, ROUGE_L)  # higher is better, comparable across sets in [0, 1]

# General ability against the base model
LENGTH_RATIO = "general/length_ratio"
RETENTION = "general/retention"
KL_TO_BASE = "general/kl_to_base"


def set_name(group: str, name: str | None = None) -> str:
    """`general`, or `domain/medical` for a group with a member."""
    if group not in GROUPS:
        raise ValueError(f"unknown probe group {group!r}")
    return group if name is None else f"{group}/{name}"


def metric(probe_set: str, name: str) -> str:
    return f"{probe_set}/{name}"


def group_of(metric_name: str) -> str | None:
    """The probe group a metric belongs to, or None for other metrics (losses, learning rate)."""
    head = metric_name.split("/", 1)[0]
    return head if head in GROUPS and "/" in metric_name else None


def is_domain_score(metric_name: str) -> bool:
    return group_of(metric_name) in DOMAIN_GROUPS and metric_name.rsplit("/", 1)[1] in DOMAIN_SCORES


def relative_to_base(scores: dict[str, float], base_scores: dict[str, float]) -> dict[str, float]:
    """General answer length and accuracy as shares of the base model's (where the base has them)."""
    relative = {}
    median, accuracy = metric(GENERAL, MEDIAN_TOKENS), metric(GENERAL, ACCURACY)
    if base_scores.get(median) and median in scores:
        relative[LENGTH_RATIO] = scores[median] / base_scores[median]
    if base_scores.get(accuracy):
        relative[RETENTION] = scores.get(accuracy, 0.0) / base_scores[accuracy]
    return relative
