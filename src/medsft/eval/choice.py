"""Multiple choice by likelihood: the option whose text the model finds most likely after the question."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from medsft.eval.generate import Chat
from medsft.eval.probe_files import choice_prompt
from medsft.eval.probes import ChoiceProbe
from medsft.tensors import eval_mode, pad_batch

def choose(model, chat: Chat, probes: list[ChoiceProbe]) -> list[str]:
    """The letter the model picks for each probe: highest mean log-probability per option token."""
    if not probes:
        return []
    device = next(model.parameters()).device
    prompts = chat.tokenize([chat.prompt(choice_prompt(p)) for p in probes])
    chosen = []
    with eval_mode(model):
        for probe, prompt in zip(probes, prompts):
            options = chat.tokenize([f" {letter}. {text}" for letter, text in probe.options])
            ids, attention = pad_batch([prompt + o for o in options], chat.pad_id)
            logp = F.log_softmax(model(input_ids=ids.to(device), attention_mask=attention.to(device)).logits.float(), -1)
            scores = []
            for row, option in enumerate(options):
                # Position t predicts token t+1: the option's tokens are predicted from len(prompt)-1 on.
                positions = torch.arange(len(prompt) - 1, len(prompt) + len(option) - 1, device=logp.device)
                targets = torch.tensor(option, device=logp.device)
                scores.append(float(logp[row, positions, targets].mean()))
            chosen.append(probe.options[max(range(len(scores)), key=scores.__getitem__)][0])
    return chosen
