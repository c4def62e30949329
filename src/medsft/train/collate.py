"""Batches for training: padded (right-padded ids, labels padded with IGNORE so padding never
carries loss) or padding-free (the samples joined into one row, positions restarting per sample)."""

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


class PackedCollator:
    """Padding-free batches: a batch's samples joined into one row of real tokens.

    `position_ids` restart at 0 for each sample; with no attention mask, transformers keeps the
    samples apart from them (and FlashAttention-2 from `cu_seq_lens_*`). Each sample's first label
    is IGNORE, so no sample is trained to predict the next one's first token; that label is never
    a target in a padded batch either (nothing predicts position 0). `sample_index` says which
    sample each position belongs to, for the per-source loss."""

    def __call__(self, rows: list[dict]) -> dict:
        lengths = [len(r["input_ids"]) for r in rows]
        labels = [[IGNORE] + list(r["labels"][1:]) for r in rows]
        bounds = torch.tensor([0] + lengths, dtype=torch.int32).cumsum(0, dtype=torch.int32)
        return {
            "input_ids": torch.tensor([[t for r in rows for t in r["input_ids"]]], dtype=torch.long),
            "labels": torch.tensor([[t for row in labels for t in row]], dtype=torch.long),
            "position_ids": torch.cat([torch.arange(n) for n in lengths])[None],
            # never given to the model (it would turn the packed-sequence detection off): the Trainer
            # counts input tokens from it
            "attention_mask": torch.ones(1, sum(lengths), dtype=torch.long),
            "sample_index": torch.cat([torch.full((n,), i) for i, n in enumerate(lengths)])[None],
            "segment_bounds": bounds.tolist(),  # the same, as a list: medsft's SDPA kernel reads it
            "cu_seq_lens_q": bounds,
            "cu_seq_lens_k": bounds,
            "max_length_q": max(lengths),
            "max_length_k": max(lengths),
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
