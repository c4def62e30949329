"""One answer, token by token, as text pieces: what `medsft chat` prints and the server streams.

Greedy or sampled (temperature, top-p) with a seeded generator of its own, a KV cache, the
template's end-of-turn token, and stop strings that are never shown even in part: while a stop
string could still be forming, the text it would cover is held back."""

from __future__ import annotations

from collections.abc import Iterator
from functools import cached_property

import torch
from transformers import DynamicCache, LogitsProcessorList, TemperatureLogitsWarper, TopPLogitsWarper

from medsft.eval.generate import Sampling


class AnswerStream:
    """Iterate for text pieces; afterwards `text`, `tokens`, `prompt_tokens` and `finish_reason`
    (`stop`: end-of-turn token or a stop string; `length`: max_new_tokens reached)."""

    def __init__(self, model, chat, prompt: str, sampling: Sampling, stop: tuple[str, ...] = (),
                 prompt_ids: list[int] | None = None):
        self.model, self.chat, self.sampling = model, chat, sampling
        self.stop = tuple(s for s in stop if s)
        self.prompt_ids = prompt_ids if prompt_ids is not None else chat.tokenize([prompt])[0]
        self.text = ""
        self.tokens = 0
        self.finish_reason: str | None = None

    @property
    def prompt_tokens(self) -> int:
        return len(self.prompt_ids)

    def __iter__(self) -> Iterator[str]:
        model, tokenizer = self.model, self.chat.tokenizer
        stop_ids = set(self.chat.stop_ids)
        hold = max((len(s) for s in self.stop), default=1) - 1
        generator = torch.Generator().manual_seed(self.sampling.seed)
        device = next(model.parameters()).device
        new: list[int] = []
        shown = 0  # characters of the answer already given out
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                cache = DynamicCache(config=model.config)
                ids = torch.tensor([self.prompt_ids], device=device)
                logits = model(input_ids=ids, cache=cache, use_cache=True, logits_to_keep=1).logits[0, -1]
                for _ in range(self.sampling.max_new_tokens):
                    token = self._pick(logits, generator)
                    if token in stop_ids:
                        self.finish_reason = "stop"
                        break
                    new.append(token)
                    self.tokens += 1
                    text = tokenizer.decode(new, skip_special_tokens=False)
                    cut = min((i for i in (text.find(s) for s in self.stop) if i >= 0), default=-1)
                    if cut >= 0:
                        self.text, self.finish_reason = text[:cut], "stop"
                        break
                    self.text = text
                    ready = len(text.rstrip("\ufffd")) if text.endswith("\ufffd") else len(text)  # a split character
                    ready = min(ready, len(text) - hold)
                    if ready > shown:
                        yield text[shown:ready]
                        shown = ready
                    logits = model(input_ids=torch.tensor([[token]], device=device), cache=cache,
                                   use_cache=True).logits[0, -1]
                else:
                    self.finish_reason = "length"
        finally:
            model.train(was_training)
        if len(self.text) > shown:
            yield self.text[shown:]

    def _pick(self, logits: torch.Tensor, generator: torch.Generator) -> int:
        if self.sampling.greedy:
            return int(logits.argmax())
        scores = self._warpers(None, logits.float().cpu()[None, :])[0]  # transformers' own temperature and top-p
        return int(torch.multinomial(torch.softmax(scores, dim=-1), 1, generator=generator))

    @cached_property
    def _warpers(self) -> LogitsProcessorList:
        warpers = LogitsProcessorList([TemperatureLogitsWarper(self.sampling.temperature)])
        if self.sampling.top_p < 1:
            warpers.append(TopPLogitsWarper(self.sampling.top_p))
        return warpers
