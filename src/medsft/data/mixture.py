"""Validation split and stage mixing: which records a stage trains on, in which order.

An epoch is one pass over the stage's anchor source. Every other source is drawn to hit its
share (by samples or by tokens), without replacement, from a permutation that is reshuffled on
each new pass, so the order is never the same twice and a small source cycles when exhausted.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field


def in_validation(content_key: str, val_fraction: float) -> bool:
    """Stable per record: adding data never moves an old record between train and validation."""
    if val_fraction <= 0:
        return False
    bucket = int(hashlib.sha256(content_key.encode()).hexdigest()[:12], 16) / float(16**12)
    return bucket < val_fraction


class _Stream:
    """Indices of one source without replacement; a fresh shuffle on every pass."""

    def __init__(self, indices: Sequence[int], rng: random.Random):
        self.indices = list(indices)
        self.rng = rng
        self.order: list[int] = []
        self.passes = 0

    def _refill(self) -> None:
        self.order = self.indices[:]
        self.rng.shuffle(self.order)
        self.order.reverse()  # pop() from the end walks the shuffle in order
        self.passes += 1

    def peek(self) -> int:
        if not self.order:
            self._refill()
        return self.order[-1]

    def next(self) -> int:
        value = self.peek()
        self.order.pop()
        return value


@dataclass
class StagePlan:
    name: str
    order: list[int]  # record indices in training order
    asked_share: dict[str, float]  # by samples or tokens, as the recipe asked
    ratio_by: str
    samples: dict[str, int] = field(default_factory=dict)
    tokens: dict[str, int] = field(default_factory=dict)
    passes: dict[str, float] = field(default_factory=dict)  # how many times each source was gone through

    @property
    def realized_share_samples(self) -> dict[str, float]:
        total = sum(self.samples.values()) or 1
        return {k: v / total for k, v in self.samples.items()}

    @property
    def realized_share_tokens(self) -> dict[str, float]:
        total = sum(self.tokens.values()) or 1
        return {k: v / total for k, v in self.tokens.items()}


def plan_stage(
    name: str,
    pools: dict[str, list[int]],
    lengths: Sequence[int],
    weights: dict[str, float] | None,
    epochs: float,
    ratio_by: str = "samples",
    anchor: str | None = None,
    seed: int = 0,
) -> StagePlan:
    """The records of one stage in training order.

    pools: training record indices per source; lengths: tokens per record (indexed globally);
    weights: share per source summing to 1, or None for every source once per epoch, unmixed.
    """
    rng = random.Random(f"{seed}:{name}")
    if weights is None:
        weights = {s: len(p) for s, p in pools.items()}
        total = sum(weights.values()) or 1
        weights = {s: w / total for s, w in weights.items() if w}
        plan = StagePlan(name, [], weights, "samples")
        everything = [i for s in weights for i in pools[s]]
        for epoch in range(math.ceil(epochs)):
            chunk = everything[:]
            rng.shuffle(chunk)
            take = len(chunk) if epoch + 1 <= epochs else round(len(chunk) * (epochs - epoch))
            plan.order += chunk[:take]
        _count(plan, pools, lengths)
        return plan

    empty = [s for s in weights if not pools.get(s)]
    if empty:
        raise ValueError(f"stage {name!r}: source {empty[0]!r} has no training records")
    anchor = anchor or max(weights, key=lambda s: weights[s])
    streams = {s: _Stream(pools[s], random.Random(f"{seed}:{name}:{s}")) for s in weights}
    plan = StagePlan(name, [], dict(weights), ratio_by)
    anchor_count = round(len(pools[anchor]) * epochs)
    # Cumulative targets: each draw aims at the share of what the anchor has contributed so far,
    # so rounding never accumulates into drift over many epochs.
    drawn_count = dict.fromkeys(weights, 0)
    drawn_tokens = dict.fromkeys(weights, 0)
    epoch_items: list[int] = []
    per_epoch = len(pools[anchor])
    for step in range(anchor_count):
        index = streams[anchor].next()
        epoch_items.append(index)
        drawn_count[anchor] += 1
        drawn_tokens[anchor] += lengths[index]
        for source, weight in weights.items():
            if source == anchor:
                continue
            ratio = weight / weights[anchor]
            if ratio_by == "samples":
                while drawn_count[source] < round(drawn_count[anchor] * ratio):
                    epoch_items.append(_draw(streams[source], drawn_count, drawn_tokens, lengths, source))
            else:
                target = drawn_tokens[anchor] * ratio
                # Take the next record when that lands nearer the target than stopping short does.
                while drawn_tokens[source] + lengths[streams[source].peek()] / 2 <= target:
                    epoch_items.append(_draw(streams[source], drawn_count, drawn_tokens, lengths, source))
        if (step + 1) % per_epoch == 0 or step + 1 == anchor_count:
            rng.shuffle(epoch_items)
            plan.order += epoch_items
            epoch_items = []
    _count(plan, pools, lengths)
    return plan


def _draw(stream: _Stream, counts: dict, tokens: dict, lengths: Sequence[int], source: str) -> int:
    index = stream.next()
    counts[source] += 1
    tokens[source] += lengths[index]
    return index


def _count(plan: StagePlan, pools: dict[str, list[int]], lengths: Sequence[int]) -> None:
    owner = {i: s for s, p in pools.items() for i in p}
    for source in plan.asked_share:
        plan.samples[source] = 0
        plan.tokens[source] = 0
    for index in plan.order:
        source = owner[index]
        plan.samples[source] += 1
        plan.tokens[source] += lengths[index]
    for source in plan.asked_share:
        plan.passes[source] = plan.samples[source] / max(len(pools[source]), 1)


class AdaptiveOrder:
    """A stage's training order whose remainder can be re-drawn with new weights (adaptive mixing).

    Starts as the stage's plan. reweight(position, weights, number) re-draws every position from
    `position` on: each source takes its share by cumulative targets (the one furthest behind its
    target goes next), its records from a fresh shuffle seeded by the change's number. The same
    changes at the same positions give the same order, which is how a resumed run replays them.
    arrange(remainder, number), when given, reorders each re-drawn remainder (length grouping)."""

    def __init__(self, plan: StagePlan, pools: dict[str, list[int]], seed: int, lengths: Sequence[int],
                 arrange=None):
        self.name = plan.name
        self.arrange = arrange
        self.order = list(plan.order)
        self.pools = pools
        self.seed = seed
        self.owner = {i: source for source, indices in pools.items() for i in indices}
        self.lengths = lengths  # tokens per record (indexed globally)
        self.ratio_by = plan.ratio_by

    def __len__(self) -> int:
        return len(self.order)

    def reweight(self, position: int, weights: dict[str, float], number: int) -> None:
        """Re-draw from `position` on: the source furthest behind its share (of the records, or of the
        tokens when the stage mixes by tokens) goes next."""
        position = max(0, min(position, len(self.order)))
        streams = {s: _Stream(self.pools[s], random.Random(f"{self.seed}:{self.name}:adaptive:{number}:{s}"))
                   for s in weights if weights[s] > 0}
        drawn = dict.fromkeys(streams, 0)
        total = sum(weights[s] for s in streams)
        by_tokens = self.ratio_by == "tokens"
        remainder = []
        for count in range(1, len(self.order) - position + 1):
            if by_tokens:
                so_far = sum(drawn.values())
                source = max(streams, key=lambda s: (so_far * weights[s] / total - drawn[s], weights[s], s))
            else:
                source = max(streams, key=lambda s: (count * weights[s] / total - drawn[s], s))
            index = streams[source].next()
            remainder.append(index)
            drawn[source] += self.lengths[index] if by_tokens else 1
        self.order[position:] = self.arrange(remainder, number) if self.arrange else remainder

    def shares(self, start: int = 0, end: int | None = None, by: str = "samples") -> dict[str, float]:
        """Each source's share of the order's positions start..end, by records or (by="tokens") by tokens."""
        window = self.order[start:end]
        counts: dict[str, int] = {}
        for index in window:
            weight = self.lengths[index] if by == "tokens" else 1
            counts[self.owner[index]] = counts.get(self.owner[index], 0) + weight
        total = sum(counts.values())
        return {s: round(c / max(total, 1), 4) for s, c in sorted(counts.items())}


def group_by_length(order: list[int], lengths: Sequence[int], batch_size: int, window_batches: int,
                    seed: str) -> list[int]:
    """`order` with samples of similar length batched together, so padded batches waste less.

    Within each window of `window_batches` batches' worth of consecutive positions, the samples are
    sorted by length and cut into batches, and those batches are shuffled (seeded by `seed` and the
    window). A window holds the same records as before, so every source's share over a window, and
    over the stage, is unchanged; only the order inside a window moves."""
    size = batch_size * window_batches
    grouped: list[int] = []
    for start in range(0, len(order), size):
        window = sorted(order[start:start + size], key=lambda i: (-lengths[i], i))
        batches = [window[i:i + batch_size] for i in range(0, len(window), batch_size)]
        full = [b for b in batches if len(b) == batch_size]  # a short last batch stays last
        random.Random(f"{seed}:length-window:{start}").shuffle(full)
        grouped.extend(i for batch in full + batches[len(full):] for i in batch)
    return grouped


def padding_efficiency(order: Sequence[int], lengths: Sequence[int], batch_size: int) -> float:
    """Real tokens / tokens of the padded batches, for the samples of `order` batched in that order."""
    real = padded = 0
    for start in range(0, len(order), batch_size):
        batch = [lengths[i] for i in order[start:start + batch_size]]
        real += sum(batch)
        padded += max(batch) * len(batch)
    return real / padded if padded else 1.0
