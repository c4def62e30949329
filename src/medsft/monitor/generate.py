"""Batched greedy generation: left padding, KV cache, stop at the template's end-of-turn token."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from medsft.data.encode import batch_tokenizer
from medsft.data.records import Conversation, Message


@dataclass(frozen=True)
class Generated:
    text: str  # the answer, without the end-of-turn token
    tokens: int  # answer length in tokens, without the end token
    stopped: bool  # ended with an end-of-turn token (False: cut at max_new_tokens)


def prompt_for(template, question: str, system_prompt: str | None = None, history: list[Message] | None = None) -> str:
    """The text a chat model sees before it answers `question`, rendered by `template`."""
    messages = tuple(history or ()) + (Message("user", question), Message("assistant", ""))
    exchanges = template.render(Conversation(messages), system_prompt)
    earlier = "".join(e.prompt + e.answer + e.separator for e in exchanges[:-1])
    return earlier + exchanges[-1].prompt


def stop_token_ids(template, tokenizer) -> list[int]:
    """Ids that end an answer: the template's end-of-turn token (when it is one token) and EOS."""
    ids = set()
    end = getattr(template, "end", "")
    if end:
        encoded = batch_tokenizer(tokenizer)([end])[0]
        if len(encoded) == 1:
            ids.add(encoded[0])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return sorted(ids)


@torch.no_grad()
def generate(model, tokenizer, prompts: list[str], stop_ids: list[int], max_new_tokens: int = 128,
             batch_size: int = 32) -> list[Generated]:
    """Greedy answers for `prompts`, batched by similar length; results in the order given."""
    tokenize = batch_tokenizer(tokenizer)
    encoded = tokenize(prompts)
    order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stop_ids[0]
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    results: list[Generated | None] = [None] * len(prompts)
    for start in range(0, len(order), batch_size):
        batch = order[start : start + batch_size]
        longest = max(len(encoded[i]) for i in batch)
        input_ids = torch.full((len(batch), longest), pad, dtype=torch.long)
        attention_mask = torch.zeros((len(batch), longest), dtype=torch.long)
        for row, i in enumerate(batch):  # left padding: every prompt ends where generation starts
            ids = encoded[i]
            input_ids[row, longest - len(ids):] = torch.tensor(ids)
            attention_mask[row, longest - len(ids):] = 1
        output = model.generate(
            input_ids=input_ids.to(device),
            attention_mask=attention_mask.to(device),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=stop_ids,
            pad_token_id=pad,
            use_cache=True,
        )
        for row, i in enumerate(batch):
            new = output[row, longest:].tolist()
            stopped = False
            for position, token in enumerate(new):
                if token in stop_ids:
                    new, stopped = new[:position], True
                    break
            results[i] = Generated(tokenizer.decode(new, skip_special_tokens=False), len(new), stopped)
    if was_training:
        model.train()
    return results  # type: ignore[return-value]
