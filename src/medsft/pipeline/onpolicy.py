"""On-policy distillation from the base (`train.on_policy`): the tuned model's own answers.

Replay and `kl_to_base` compare the tuned model with the base on text the tuned model is given. A
tuned model drifts where it generates: it ends a general answer after one sentence, or answers a
general question in the domain's style, in states that given text never visits. Every `every` steps
the tuned model answers a fresh draw of general prompts (greedy, as it will be used); the trainer
adds KL(tuned || base) over some of those answers' tokens to each micro-batch's loss, so that where
the tuned model goes the base's next-token distribution pulls it back.

A draw depends on the seed, the draw's number and the weights at its step, and the answers are
kept in the checkpoint's state, so a resumed run hands out the same answers as an uninterrupted one."""

from __future__ import annotations

import random
import statistics

import torch

from medsft import distributed
from medsft.eval.generate import Sampling, generate_prompts
from medsft.tensors import pad_batch


class OnPolicyAnswers:
    """The current draw of the tuned model's answers; `batch` hands out `per_batch` of them in turn."""

    def __init__(self, settings, chat, prompts: list[str], prompt_ids: list[list[int]], seed: int, log=print):
        """settings: the recipe's train.on_policy. prompts: the general training prompts, rendered by
        the template (each draw samples `settings.prompts` of them, at least one); prompt_ids: their tokens."""
        self.settings = settings
        self.chat = chat
        self.prompts = prompts
        self.prompt_ids = prompt_ids
        self.seed = seed
        self.log = log
        self.draw = -1  # the draw held now (optimizer step // every); -1: none yet
        self.sequences: list[list[int]] = []  # prompt + answer tokens
        self.prompt_lengths: list[int] = []
        self.taken = 0  # micro-batches served from this draw

    def batch(self, model, step: int, device) -> dict | None:
        """The on-policy inputs of the next micro-batch at optimizer step `step` (0-based, run-wide):
        input_ids, attention_mask and answer_mask (the answer's tokens), right-padded."""
        draw = step // self.settings.every
        if draw != self.draw:
            self._answer(model, draw)
        count, k = len(self.sequences), min(self.settings.per_batch, len(self.sequences))
        start = (self.taken * distributed.world_size() + distributed.rank()) * k  # every process its own answers
        chosen = [(start + i) % count for i in range(k)]
        self.taken += 1
        input_ids, attention_mask = pad_batch([self.sequences[i] for i in chosen], self.chat.pad_id, side="right")
        answer_mask = torch.zeros_like(attention_mask, dtype=torch.bool)
        for row, i in enumerate(chosen):
            answer_mask[row, self.prompt_lengths[i]:len(self.sequences[i])] = True
        return {"input_ids": input_ids.to(device), "attention_mask": attention_mask.to(device),
                "answer_mask": answer_mask.to(device)}

    def _answer(self, model, draw: int) -> None:
        settings = self.settings
        chosen = random.Random(f"{self.seed}:on-policy:{draw}").sample(range(len(self.prompts)),
                                                                       min(settings.prompts, len(self.prompts)))
        # Every process draws the same answers (greedy, the same weights) and takes its own of them.
        answers = generate_prompts(model, self.chat, [self.prompts[i] for i in chosen],
                                   Sampling(settings.max_new_tokens), settings.batch_size,
                                   label=f"on-policy draw {draw}" if distributed.is_main() else None)
        self.sequences = [list(self.prompt_ids[i]) + list(answer.ids) for i, answer in zip(chosen, answers)]
        self.prompt_lengths = [len(self.prompt_ids[i]) for i in chosen]
        self.draw, self.taken = draw, 0
        tokens = statistics.median(answer.tokens for answer in answers)
        ended = sum(answer.stopped for answer in answers) / len(answers)
        self.log(f"train.on_policy: draw {draw}: the tuned model answered {len(answers)} general prompts "
                 f"(median {tokens:g} tokens, {ended:.0%} ended within {settings.max_new_tokens})")

    def state(self) -> dict:
        return {"draw": self.draw, "sequences": self.sequences, "prompt_lengths": self.prompt_lengths,
                "taken": self.taken}

    def load_state(self, state: dict) -> None:
        self.draw, self.taken = state["draw"], state["taken"]
        self.sequences = [list(s) for s in state["sequences"]]
        self.prompt_lengths = list(state["prompt_lengths"])
