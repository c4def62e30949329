"""What one training batch holds, counted one way for every framework.

peers.py counts medsft's encoded rows with it and the peer runners count the batches their trainer
actually builds, so a difference in records, order, tokens or supervised positions shows up as a
different count or digest. Plain Python over lists (torch tensors are turned into lists first):
it runs in medsft's venv and in each peer's.

A sample is (input_ids, labels) without padding. Its first label is never a target (nothing
predicts position 0, and padding-free batches set it to -100), so it is set to -100 before counting."""

from __future__ import annotations

import hashlib
import json

IGNORE = -100


def normalized(input_ids: list[int], labels: list[int]) -> tuple[list[int], list[int]]:
    return list(input_ids), [IGNORE] + list(labels[1:])


def describe(samples: list[tuple[list[int], list[int]]]) -> dict:
    """Real tokens, supervised tokens and a digest of a batch's samples, in order."""
    digest = hashlib.sha256()
    real = supervised = 0
    for input_ids, labels in samples:
        input_ids, labels = normalized(input_ids, labels)
        real += len(input_ids)
        supervised += sum(1 for label in labels if label != IGNORE)
        digest.update(json.dumps([input_ids, labels]).encode())
    return {"samples": len(samples), "real_tokens": real, "supervised_tokens": supervised,
            "digest": digest.hexdigest()[:16]}


def padded_samples(input_ids: list[list[int]], labels: list[list[int]], mask: list[list[int]]) -> list:
    """Samples of a padded batch: each row's positions whose attention mask is 1 (non-zero)."""
    samples = []
    for row_ids, row_labels, row_mask in zip(input_ids, labels, mask):
        keep = [i for i, bit in enumerate(row_mask) if bit]
        samples.append(([row_ids[i] for i in keep], [row_labels[i] for i in keep]))
    return samples


def packed_samples(input_ids: list[int], labels: list[int], position_ids: list[int]) -> list:
    """Samples of one padding-free row: a sample starts where its position is 0."""
    starts = [i for i, position in enumerate(position_ids) if position == 0] + [len(input_ids)]
    return [(input_ids[a:b], labels[a:b]) for a, b in zip(starts, starts[1:])]


def batch_samples(batch: dict) -> list:
    """Samples of a collated batch (tensors or lists): padding-free when it has position_ids and no
    attention mask (TRL, medsft), padded otherwise."""
    def plain(key):
        value = batch[key]
        return value.tolist() if hasattr(value, "tolist") else value

    if "position_ids" in batch and "attention_mask" not in batch:
        return [s for ids, labels, positions in zip(plain("input_ids"), plain("labels"), plain("position_ids"))
                for s in packed_samples(ids, labels, positions)]
    return padded_samples(plain("input_ids"), plain("labels"), plain("attention_mask"))
