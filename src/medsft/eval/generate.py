"""Batched greedy generation: left padding, KV cache, stop at the template's end-of-turn token."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from functools import cached_property

import torch
from transformers import DynamicCache

from medsft.data.encode import batch_tokenizer
from medsft.data.records import Conversation, Message
from medsft.tensors import eval_mode, pad_batch


@dataclass(frozen=True)
class Generated:
    text: str  # the answer, without the end-of-turn token
    tokens: int  # answer length in tokens, without the end token
    stopped: bool  # ended with an end-of-turn token (False: cut at max_new_tokens)
    ids: tuple[int, ...] = ()  # the tokens generated, up to and with the stop token


def prompt_before_answer(template, conversation: Conversation, system_prompt: str | None = None) -> str:
    """What a chat model sees before the conversation's last answer: its question and the turns before."""
    messages = conversation.messages
    last = max(i for i, m in enumerate(messages) if m.role == "assistant")
    return prompt_for(template, messages[last - 1].content, conversation.system or system_prompt,
                      list(messages[:last - 1]))


def prompt_for(template, question: str, system_prompt: str | None = None, history: list[Message] | None = None) -> str:
    """The text a chat model sees before it answers `question`, rendered by `template`."""
    messages = tuple(history or ()) + (Message("user", question), Message("assistant", ""))
    exchanges = template.render(Conversation(messages), system_prompt)
    earlier = "".join(e.prompt + e.answer + e.separator for e in exchanges[:-1])
    return earlier + exchanges[-1].prompt


@dataclass
class Chat:
    """How a model is talked to: its tokenizer, the chat template and the system prompt."""

    tokenizer: object
    template: object
    system_prompt: str | None = None

    def prompt(self, question: str) -> str:
        return prompt_for(self.template, question, self.system_prompt)

    @cached_property
    def tokenize(self):
        """texts -> token ids, without special tokens (the tokenizer's batch encoder, made once)."""
        return batch_tokenizer(self.tokenizer)

    @cached_property
    def stop_ids(self) -> list[int]:
        return stop_token_ids(self.template, self.tokenizer)

    @property
    def pad_id(self) -> int:
        return self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.stop_ids[0]


def stop_token_ids(template, tokenizer) -> list[int]:
    """Ids that end an answer: the template's end-of-turn token (when it is one token) and EOS."""
    ids = set()
    ends = [getattr(template, "end", "")] + list(getattr(template, "openers", None) or ())  # GLM: the next turn's marker
    for end in filter(None, ends):
        encoded = batch_tokenizer(tokenizer)([end])[0]
        if len(encoded) == 1:
            ids.add(encoded[0])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return sorted(ids)


@dataclass(frozen=True)
class Sampling:
    """How answers are drawn: temperature 0 is greedy (the default, and what probes use)."""

    max_new_tokens: int = 128
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0


def generate(model, chat: Chat, questions: list[str], max_new_tokens: int = 128, batch_size: int = 32,
             label: str | None = "probing") -> list[Generated]:
    """Greedy answers to `questions`, batched by similar length; results in the order given.

    label: a progress line on the console (answers done, tokens/s, ETA) under this name; None: silent."""
    return generate_prompts(model, chat, [chat.prompt(q) for q in questions], Sampling(max_new_tokens), batch_size,
                            label)


def generate_prompts(model, chat: Chat, prompts: list[str], sampling: Sampling = Sampling(), batch_size: int = 32,
                     label: str | None = None, on_batch=None) -> list[Generated]:
    """Answers to prompts already rendered by the template, in the order given.

    Batched by similar length. on_batch(indices, answers): called after each batch (what
    `medsft generate` writes as it goes). Sampled answers are drawn with a generator seeded by
    sampling.seed and the batch's first prompt, so a rerun of the same file draws the same."""
    encoded = chat.tokenize(prompts)
    order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))
    stop_ids = chat.stop_ids
    device = next(model.parameters()).device
    progress = Progress(label, len(prompts)) if label else None
    results: list[Generated | None] = [None] * len(prompts)
    with eval_mode(model):
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            # Left padding: every prompt ends where generation starts.
            input_ids, attention_mask = pad_batch([encoded[i] for i in batch], chat.pad_id, side="left")
            input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
            if not sampling.greedy:
                torch.manual_seed(sampling.seed * 1_000_003 + batch[0])
                answers = _sampled(model, input_ids, attention_mask, stop_ids, chat.pad_id, sampling)
            elif _native(model):
                answers = _greedy_shrinking(model, input_ids, attention_mask, stop_ids, chat.pad_id,
                                            sampling.max_new_tokens)
            else:
                answers = _greedy_hf(model, input_ids, attention_mask, stop_ids, chat.pad_id, sampling.max_new_tokens)
            done = [_answer(chat.tokenizer, answers[row], stop_ids) for row in range(len(batch))]
            for i, answer in zip(batch, done):
                results[i] = answer
            if on_batch:
                on_batch(batch, done)
            if progress:
                progress.update(len(batch), sum(len(a) for a in answers))
    if progress:
        progress.close()
    return results  # type: ignore[return-value]


def _answer(tokenizer, new: list[int], stop_ids: list[int]) -> Generated:
    """The answer up to its first stop token (kept out of the text and the length)."""
    for position, token in enumerate(new):
        if token in stop_ids:
            return Generated(tokenizer.decode(new[:position], skip_special_tokens=False), position, True,
                             tuple(new[:position + 1]))
    return Generated(tokenizer.decode(new, skip_special_tokens=False), len(new), False, tuple(new))


class Progress:
    """One console line per few seconds while answers are generated: done/total, tokens/s, ETA.

    Console only (stderr); nothing of it reaches metrics.jsonl."""

    def __init__(self, label: str, total: int, every: float = 2.0, stream=None):
        self.label, self.total, self.every = label, total, every
        self.stream = stream or sys.stderr
        self.done = self.tokens = 0
        self.started = self.shown = time.perf_counter()
        self.printed = False

    def update(self, answers: int, tokens: int) -> None:
        self.done += answers
        self.tokens += tokens
        now = time.perf_counter()
        if now - self.shown >= self.every or (self.printed and self.done == self.total):
            self.shown = now
            self.printed = True
            print(self.line(now), file=self.stream, flush=True)

    def line(self, now: float) -> str:
        elapsed = max(now - self.started, 1e-9)
        left = (self.total - self.done) * elapsed / self.done if self.done else 0.0
        return (f"{self.label}: {self.done}/{self.total} answers, {self.tokens / elapsed:.0f} tokens/s, "
                f"ETA {left:.0f}s")

    def close(self) -> None:
        if self.printed and self.done < self.total:
            print(self.line(time.perf_counter()), file=self.stream, flush=True)


def _native(model) -> bool:
    """Models implemented in transformers itself take a `Cache` we can shrink; remote code may not."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return type(inner).__module__.startswith("transformers.")


@torch.no_grad()
def _greedy_hf(model, input_ids, attention_mask, stop_ids, pad, max_new_tokens) -> list[list[int]]:
    output = model.generate(input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=max_new_tokens,
                            do_sample=False, eos_token_id=stop_ids, pad_token_id=pad, use_cache=True)
    return output[:, input_ids.shape[1]:].tolist()


@torch.no_grad()
def _sampled(model, input_ids, attention_mask, stop_ids, pad, sampling: Sampling) -> list[list[int]]:
    output = model.generate(input_ids=input_ids, attention_mask=attention_mask,
                            max_new_tokens=sampling.max_new_tokens, do_sample=True,
                            temperature=sampling.temperature, top_p=sampling.top_p, top_k=0,
                            eos_token_id=stop_ids, pad_token_id=pad, use_cache=True)
    return output[:, input_ids.shape[1]:].tolist()


@torch.no_grad()
def _greedy_shrinking(model, input_ids, attention_mask, stop_ids, pad, max_new_tokens) -> list[list[int]]:
    """Greedy decoding that drops each answer from the batch as soon as it ends.

    `model.generate` keeps every row until the longest answer stops, so one rambling answer makes
    the whole batch pay for its length; here the batch (and its KV cache) shrinks instead, and the
    work is the sum of the answer lengths. The tokens are the same as `generate`'s greedy ones."""
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
