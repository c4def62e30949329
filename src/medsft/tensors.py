"""Small torch helpers shared by training and evaluation: padding a batch, evaluation mode."""

from __future__ import annotations

import contextlib
import math

import torch

def pad_batch(rows: list[list[int]], pad_id: int, side: str = "right",
              multiple_of: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, attention mask) for token lists of different lengths, padded on `side` to the longest
    (rounded up to `multiple_of`)."""
    longest = math.ceil(max(len(r) for r in rows) / multiple_of) * multiple_of
    ids = torch.full((len(rows), longest), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), longest), dtype=torch.long)
    for i, row in enumerate(rows):
        span = slice(0, len(row)) if side == "right" else slice(longest - len(row), longest)
        ids[i, span] = torch.tensor(row, dtype=torch.long)
        mask[i, span] = 1
    return ids, mask


@contextlib.contextmanager
def eval_mode(model):
    """`model.eval()` for the block, gradients off; training mode comes back even when the block raises."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        if was_training:
            model.train()
