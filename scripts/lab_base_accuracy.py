"""Build (or reuse) the lab's base model for a world and a base config, and print its accuracy on the
held-out general probes per skill, with the build time.

    .venv/bin/python scripts/lab_base_accuracy.py LANGUAGE EPOCHS BATCH LR [CACHE_DIR]

e.g. `... en 8 32 0.004 /tmp/basecache` (the lab's defaults: 92.7%, 328 s on 2 cores).
"""

from __future__ import annotations

import collections
import sys
import time
from pathlib import Path

from transformers import AutoModelForCausalLM, AutoTokenizer

from medsft.data.templates import get_template
from medsft.eval.evaluate import evaluate
from medsft.eval.generate import Chat
from medsft.lab.base import BaseConfig, build_base, default_lab_cache
from medsft.lab.runner import probe_sets
from medsft.lab.world import build_world


def main(language: str, epochs: str, batch: str, lr: str, cache: str | None = None) -> None:
    world = build_world(0, language)
    started = time.time()
    config = BaseConfig(epochs=float(epochs), batch_size=int(batch), learning_rate=float(lr))
    path = build_base(world, config, Path(cache) if cache else default_lab_cache(), log=lambda *_: None)
    built = time.time() - started
    tokenizer = AutoTokenizer.from_pretrained(path)
    general = probe_sets(world)[0]
    model = AutoModelForCausalLM.from_pretrained(path)
    result = evaluate(model, Chat(tokenizer, get_template("chatml", tokenizer)), [general], 96, 64, None)["general"]
    by_skill = collections.defaultdict(list)
    for probe, correct in zip(general.probes, result.correct):
        by_skill[probe.family].append(correct)
    print(f"{path}: built or found in {built:.0f} s; general accuracy {result.accuracy:.3f};",
          {skill: f"{sum(v)}/{len(v)}" for skill, v in by_skill.items()})


if __name__ == "__main__":
    main(*sys.argv[1:])
