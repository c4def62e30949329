"""How far a merged model's logits are from base + adapter, for a run directory or an adapter folder.

    .venv/bin/python scripts/merge_check.py RUN_DIR|ADAPTER

Merges in fp32 into a temporary folder, loads it with plain transformers, and prints the largest
logit difference on one chat prompt beside the logits' own scale (the figure in the merge notes)."""

from __future__ import annotations

import sys
import tempfile

import torch
from transformers import AutoModelForCausalLM

from medsft.serve.loading import load_for_use, resolve_source
from medsft.serve.merge import merge


def main(target: str) -> None:
    source = resolve_source(target)
    folder = merge(source, tempfile.mkdtemp(prefix="medsft-merge-") + "/merged", dtype="float32")
    loaded = load_for_use(source)
    merged = AutoModelForCausalLM.from_pretrained(folder).eval()
    chat = loaded.chat
    ids = torch.tensor([chat.tokenize([chat.prompt("What is a fever, and when should I see a doctor?")])[0]])
    with torch.no_grad():
        tuned, plain = loaded.model(input_ids=ids).logits, merged(input_ids=ids).logits
    print(f"tokens {ids.shape[1]}, max |logit difference| {(tuned - plain).abs().max().item():.3g}, "
          f"largest |logit| {tuned.abs().max().item():.3g}")


if __name__ == "__main__":
    main(*sys.argv[1:])
