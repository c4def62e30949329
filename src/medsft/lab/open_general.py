"""Open-ended general chat for the real-model lab, answered by the base model itself.

The world's general records are closed questions in one template (its tiny model learns that
format from scratch). A real model's general SFT data (Alpaca, ShareGPT) is mostly open-ended:
explain, list, write, rewrite. Without such records a mix replays none of the behaviour the
built-in probes ask for (explanations, lists, notes, poems), so the real-model lab would judge the
remedies on general data no user trains with. The prompts (data/open-general-en.json) are of
those kinds, on topics the built-in probes do not use; their answers are the base model's own
(greedy, only those it finishes), standing in for a general set of the model's own quality. They
are generated once per base and cached beside it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from medsft.lab.world import Item

FAMILY = "open"

PROMPTS_FILE = Path(__file__).with_name("data") / "open-general-en.json"


def open_prompts() -> list[str]:
    """The prompts, in a fixed order (every kind of open-ended task the built-in probes ask for)."""
    kinds = json.loads(PROMPTS_FILE.read_text(encoding="utf-8"))
    explain, lists = kinds["explain"], kinds["list"]
    prompts = [form.format(topic) for topic in explain["topics"] for form in explain["forms"]]
    prompts += [form.format(n=t["n"], theme=t["theme"]) for t in lists["themes"] for form in lists["forms"]]
    prompts += kinds["writing"]
    for kind, items in (("rewrite", "sentences"), ("summarize", "texts"), ("errands", "lists")):
        prompts += [kinds[kind]["form"].format(item) for item in kinds[kind][items]]
    return prompts


def open_general(model, chat, model_path: Path, cache_dir: Path, max_new_tokens: int = 256, batch_size: int = 32,
                 log=print) -> list[Item]:
    """The prompts with the base model's own answers (those it finishes within max_new_tokens),
    generated on first use and cached in cache_dir by the model's config, the rendered prompts and the budget."""
    from medsft.eval.generate import Sampling, generate_prompts

    prompts = open_prompts()
    rendered = [chat.prompt(p) for p in prompts]
    config = Path(model_path) / "config.json"
    identity = [config.read_text(encoding="utf-8") if config.is_file() else str(model_path), str(max_new_tokens)]
    digest = hashlib.sha256("\x00".join(identity + rendered).encode("utf-8")).hexdigest()[:16]
    path = Path(cache_dir) / f"open-general-{digest}.jsonl"
    if not path.is_file():
        log(f"the base model answers {len(prompts)} open-ended general prompts (first use; cached in {path})")
        answers = generate_prompts(model, chat, rendered, Sampling(max_new_tokens), batch_size,
                                   label="open-ended general answers")
        rows = [{"question": p, "answer": a.text.strip(), "stopped": a.stopped} for p, a in zip(prompts, answers)]
        work = path.with_suffix(".partial")
        work.parent.mkdir(parents=True, exist_ok=True)
        work.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
        work.replace(path)
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    return [Item(FAMILY, r["question"], r["answer"], "") for r in rows if r["stopped"] and r["answer"]]
