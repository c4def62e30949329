"""How well a domain-only LoRA run learns the lab's facts on a given base: as trained, paraphrased,
and seen only in passages, per kind of fact. The tuning behind the lab's `medical_repeats`.

    .venv/bin/python scripts/lab_fact_learning.py BASE_DIR DISEASES EPOCHS LR RANK PHRASINGS REPEATS [OUT]

e.g. `... ~/.cache/medsft/lab/base-en-<key>/model 40 10 0.01 8 2 5` (the lab's defaults).
"""

from __future__ import annotations

import collections
import json
import sys
import time
from pathlib import Path

from transformers import AutoTokenizer

from medsft.data.templates import get_template
from medsft.eval.evaluate import evaluate
from medsft.eval.generate import Chat
from medsft.lab.runner import probe_sets
from medsft.lab.variants import LabContext, _domain, _recipe
from medsft.lab.world import build_world
from medsft.pipeline.run import train
from medsft.recipe import parse_recipe


def main(base: str, diseases: str, epochs: str, lr: str, rank: str, phrasings: str, repeats: str,
         out: str = "runs/fact-learning") -> None:
    base_dir, folder = Path(base), Path(out) / f"{diseases}-{epochs}-{lr}-r{rank}-p{phrasings}-x{repeats}"
    world = build_world(0, "en", n_diseases=int(diseases), qa_phrasings=int(phrasings), medical_repeats=int(repeats))
    context = LabContext(base_dir, world.write(folder / "world"), folder)
    tree = _recipe(context, "domain", 0, _domain(float(epochs)), rank=int(rank), alpha=2 * int(rank),
                   learning_rate=float(lr))
    tree["monitor"]["probes"] = False
    started = time.time()
    model = train(parse_recipe(tree, "fact learning"), log=lambda *_: None, overwrite=True).model
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    sets = probe_sets(world)[1:]  # the medical sets
    results = evaluate(model, Chat(tokenizer, get_template("chatml", tokenizer)), sets, 96, 64, None)
    line = {name: round(result.accuracy, 3) for name, result in results.items()}
    for probe_set in sets:
        by_kind = collections.defaultdict(list)
        for probe, correct in zip(probe_set.probes, results[probe_set.name].correct):
            by_kind[probe.family].append(correct)
        line[f"{probe_set.name}_by_kind"] = {k: round(sum(v) / len(v), 2) for k, v in by_kind.items()}
    line["seconds"] = round(time.time() - started)
    print(folder.name, json.dumps(line))


if __name__ == "__main__":
    main(*sys.argv[1:])
