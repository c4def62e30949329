"""Memorization verdicts: a pure function of the evaluation history.

A source is memorizing when its validation loss has risen for `patience` evaluations in a row
since its best while its train loss kept falling, or when its train loss is near zero on a
small set. Otherwise it is learning."""

from __future__ import annotations


def memorization_verdicts(history: list[dict], train_sizes: dict[str, int], patience: int = 3,
                          near_zero_loss: float = 0.05, small_set: int = 2000) -> dict[str, dict]:
    """The verdict of every source trained or validated in `history` (evaluations: step, eval_loss
    and train_loss by source). A source without validation records (split: train) can only meet the
    near-zero train loss rule."""
    verdicts = {}
    validated = {s for h in history for s in h["eval_loss"]}
    for source in sorted(validated):
        points = [(h["step"], h["eval_loss"][source], h["train_loss"].get(source))
                  for h in history if source in h["eval_loss"]]
        verdicts[source] = source_verdict(points, train_sizes.get(source, 0), patience, near_zero_loss, small_set)
    for source in sorted({s for h in history for s in h["train_loss"]} - validated):
        points = [(h["step"], h["train_loss"][source]) for h in history if h["train_loss"].get(source) is not None]
        if points:
            verdicts[source] = _train_only_verdict(points, train_sizes.get(source, 0), near_zero_loss, small_set)
    return verdicts


def _near_zero_since(points: list[tuple[int, float | None]], near_zero_loss: float) -> int:
    """The first step of the run of evaluations, up to the last, whose train loss is under near_zero_loss."""
    since = points[-1][0]
    for step, loss in reversed(points):
        if loss is None or loss >= near_zero_loss:
            break
        since = step
    return since


def _near_zero_verdict(train: list[tuple[int, float | None]], train_size: int, near_zero_loss: float,
                       small_set: int) -> dict | None:
    """Memorizing by the near-zero rule (train: (step, train loss) in order), else None."""
    train_now = train[-1][1]
    if train_now is None or train_now >= near_zero_loss or train_size >= small_set:
        return None
    return {"verdict": "memorizing", "since_step": _near_zero_since(train, near_zero_loss),
            "reason": f"memorizing: train loss {train_now:.3f} is near zero on a small set ({train_size} records)"}


def _train_only_verdict(points: list[tuple[int, float]], train_size: int, near_zero_loss: float,
                        small_set: int) -> dict:
    flagged = _near_zero_verdict(points, train_size, near_zero_loss, small_set)
    if flagged:
        return flagged
    train_now = points[-1][1]
    return {"verdict": "learning", "since_step": None,
            "reason": f"train loss {points[0][1]:.3f} -> {train_now:.3f}; no validation records (split: train), so only "
                      f"the near-zero rule applies (train loss under {near_zero_loss} on fewer than {small_set} records)"}


def source_verdict(points: list[tuple[int, float, float | None]], train_size: int, patience: int,
                   near_zero_loss: float, small_set: int) -> dict:
    """points: (step, validation loss, train loss) of one source, in order."""
    best = min(range(len(points)), key=lambda i: points[i][1])
    train_now = points[-1][2]
    if len(points) > patience and best <= len(points) - 1 - patience:
        rising = all(points[i][1] > points[i - 1][1] for i in range(len(points) - patience, len(points)))
        train_then = points[best][2]
        falling = train_now is not None and train_then is not None and train_now < train_then
        if rising and falling:
            return {"verdict": "memorizing", "since_step": points[best][0],
                    "reason": f"memorizing since step {points[best][0]}: validation loss rose for {patience} "
                              f"evaluations ({points[best][1]:.3f} -> {points[-1][1]:.3f}) while train loss "
                              f"kept falling ({train_then:.3f} -> {train_now:.3f})"}
    flagged = _near_zero_verdict([(p[0], p[2]) for p in points], train_size, near_zero_loss, small_set)
    if flagged:
        return flagged
    return {"verdict": "learning", "since_step": None,
            "reason": f"learning: validation loss {points[0][1]:.3f} -> {points[-1][1]:.3f}"
                      + (f" (best {points[best][1]:.3f} at step {points[best][0]})" if best != len(points) - 1 else "")}


def newly_memorizing(before: dict[str, dict], now: dict[str, dict]) -> list[str]:
    """Console lines for the sources that turned to memorizing between two sets of verdicts."""
    return [f"memorization: {source}: {verdict['reason']}" for source, verdict in sorted(now.items())
            if verdict["verdict"] == "memorizing" and before.get(source, {}).get("verdict") != "memorizing"]
