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
    decode = _greedy_shrinking if _native(model) else _greedy_hf
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
        answers = decode(model, input_ids.to(device), attention_mask.to(device), stop_ids, pad, max_new_tokens)
        for row, i in enumerate(batch):
            new = answers[row]
            stopped = False
            for position, token in enumerate(new):
                if token in stop_ids:
                    new, stopped = new[:position], True
                    break
            results[i] = Generated(tokenizer.decode(new, skip_special_tokens=False), len(new), stopped)
    if was_training:
        model.train()
    return results  # type: ignore[return-value]


def _native(model) -> bool:
    """Models implemented in transformers itself take a `Cache` we can shrink; remote code may not."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return type(inner).__module__.startswith("transformers.")


def _greedy_hf(model, input_ids, attention_mask, stop_ids, pad, max_new_tokens) -> list[list[int]]:
    output = model.generate(input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=max_new_tokens,
                            do_sample=False, eos_token_id=stop_ids, pad_token_id=pad, use_cache=True)
    return output[:, input_ids.shape[1]:].tolist()


def _greedy_shrinking(model, input_ids, attention_mask, stop_ids, pad, max_new_tokens) -> list[list[int]]:
    """Greedy decoding that drops each answer from the batch as soon as it ends.

    `model.generate` keeps every row until the longest answer stops, so one rambling answer makes
    the whole batch pay for its length; here the batch (and its KV cache) shrinks instead, and the
    work is the sum of the answer lengths. The tokens are the same as `generate`'s greedy ones."""
    from transformers import DynamicCache

    rows = input_ids.shape[0]
    answers: list[list[int]] = [[] for _ in range(rows)]
    alive = list(range(rows))  # the original row of each row still generating
    stops = set(stop_ids)
    cache = DynamicCache(config=model.config)
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    logits = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, cache=cache,
                   use_cache=True, logits_to_keep=1).logits
    for step in range(1, max_new_tokens + 1):
        tokens = logits[:, -1, :].argmax(-1)
        going = []  # positions, in the current batch, of the rows that did not just stop
        for position, (row, token) in enumerate(zip(alive, tokens.tolist())):  # the one device sync per step
            answers[row].append(token)
            if token not in stops:
                going.append(position)
        if not going or step == max_new_tokens:
            break
        if len(going) < len(alive):
            keep = torch.tensor(going, device=input_ids.device)
            cache.batch_select_indices(keep)
            tokens, attention_mask = tokens[keep], attention_mask[keep]
            alive = [alive[i] for i in going]
        position_ids = attention_mask.sum(-1, keepdim=True)  # the next position of each row
        attention_mask = torch.cat([attention_mask, attention_mask.new_ones((attention_mask.shape[0], 1))], dim=1)
        logits = model(input_ids=tokens[:, None], attention_mask=attention_mask, position_ids=position_ids,
                       cache=cache, use_cache=True, logits_to_keep=1).logits
    return answers
