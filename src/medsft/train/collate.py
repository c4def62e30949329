"""Batches for training: right-padded ids, labels padded with IGNORE so padding never carries loss."""

from __future__ import annotations

import torch

from medsft.data.encode import IGNORE
from medsft.tensors import pad_batch


class Collator:
    def __init__(self, pad_id: int, multiple_of: int = 1):
        self.pad_id = pad_id
        self.multiple_of = multiple_of

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        input_ids, attention_mask = pad_batch([r["input_ids"] for r in rows], self.pad_id, "right", self.multiple_of)
        labels, _ = pad_batch([r["labels"] for r in rows], IGNORE, "right", self.multiple_of)
        return {
            "input_ids": input_ids,
            "labels": labels,
            "attention_mask": attention_mask,
            "source_ids": torch.tensor([r["source_id"] for r in rows], dtype=torch.long),
            "record_ids": torch.tensor([r.get("record_index", -1) for r in rows], dtype=torch.long),
        }


class OrderedView(torch.utils.data.Dataset):
    """Rows of `encoded` in the order `order_of.order` holds when each row is read (adaptive mixing
    rewrites the part of the order not yet read)."""

    def __init__(self, encoded, order_of):
        self.encoded = encoded
        self.order_of = order_of

    def __len__(self) -> int:
        return len(self.order_of.order)

    def __getitem__(self, position: int) -> dict:
        return self.encoded[self.order_of.order[position]]
