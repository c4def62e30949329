"""Drift from the base model: mean token-level KL(base || tuned) over the base's own answers.

With LoRA the base model is the same weights with the adapter switched off
(`model.disable_adapter()`), so this costs two forward passes and no second copy in memory.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from medsft.tensors import eval_mode, pad_batch


def base_model_context(model):
    """A context in which `model` behaves as the base model, or None when that needs a second copy."""
    disable = getattr(model, "disable_adapter", None)
    return disable() if callable(disable) else None


def kl_to_base(model, sequences: list[tuple[list[int], list[int]]], pad_id: int, batch_size: int = 16) -> float | None:
    """Mean over answer tokens of KL(base || tuned) on (prompt_ids, answer_ids) pairs; None without an adapter."""
    if base_model_context(model) is None or not sequences:
        return None
    device = next(model.parameters()).device
    total, count = 0.0, 0
    with eval_mode(model):
        for start in range(0, len(sequences), batch_size):
            batch = sequences[start : start + batch_size]
            input_ids, attention = pad_batch([p + a for p, a in batch], pad_id)
            answer_mask = torch.zeros(input_ids.shape, dtype=torch.bool)
            for row, (prompt, answer) in enumerate(batch):
                # Position t predicts token t+1: the answer's tokens are predicted from len(prompt)-1 on.
                answer_mask[row, len(prompt) - 1 : len(prompt) + len(answer) - 1] = True
            input_ids, attention, answer_mask = input_ids.to(device), attention.to(device), answer_mask.to(device)
            tuned = model(input_ids=input_ids, attention_mask=attention).logits.float()
            with base_model_context(model) or contextlib.nullcontext():
                base = model(input_ids=input_ids, attention_mask=attention).logits.float()
            base_logp = F.log_softmax(base[answer_mask], dim=-1)
            tuned_logp = F.log_softmax(tuned[answer_mask], dim=-1)
            kl = (base_logp.exp() * (base_logp - tuned_logp)).sum(-1)
            total += float(kl.sum())
            count += int(answer_mask.sum())
    return total / count if count else None
