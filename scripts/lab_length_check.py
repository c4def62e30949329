"""Where a lab run's general answers lose length against the base's: the base and the run's adapter answer the
lab's general probes (96 new tokens, greedy, as the lab scores them), and for each this prints the median
answer length, the share cut at the budget, the share that loops (some word 4-gram three times or more, words as the
probes' metrics count them),
and the median length over the probes where neither model loops:

    python scripts/lab_length_check.py runs/lab/runs/medsft-default/seed-0 [--base smollm2]"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import Counter
from pathlib import Path

from peft import PeftModel
from transformers import AutoModelForCausalLM

from medsft.data.templates import get_template
from medsft.eval import names
from medsft.eval.evaluate import evaluate
from medsft.eval.generate import Chat
from medsft.eval.textmetrics import ngrams, tokens
from medsft.lab.real import BASES
from medsft.lab.runner import trained_run


def loops(text: str, n: int = 4, times: int = 3) -> bool:
    grams = Counter(ngrams(tokens(text), n))
    return bool(grams) and max(grams.values()) >= times


def answers(model, chat, sets) -> list:
    return evaluate(model, chat, sets, max_new_tokens=96, batch_size=64, label="answering")[names.GENERAL].answers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--base", default="smollm2", choices=sorted(BASES))
    args = parser.parse_args()
    lab_base, base_path, sets, tokenizer = trained_run(args.run_dir, args.base)
    sets = [s for s in sets if s.name == names.GENERAL]
    chat = Chat(tokenizer, get_template(lab_base.template, tokenizer))
    model = AutoModelForCausalLM.from_pretrained(base_path).eval()
    base = answers(model, chat, sets)
    tuned = answers(PeftModel.from_pretrained(model, args.run_dir / "adapter").eval(), chat, sets)
    clean = [i for i in range(len(base)) if not loops(base[i].text) and not loops(tuned[i].text)]
    for name, rows in (("base", base), ("tuned", tuned)):
        print(json.dumps({
            "model": name, "probes": len(rows),
            "median_tokens": statistics.median(a.tokens for a in rows),
            "cut_at_budget": round(sum(not a.stopped for a in rows) / len(rows), 3),
            "looping": round(sum(loops(a.text) for a in rows) / len(rows), 3),
            "median_tokens_where_neither_loops": statistics.median(rows[i].tokens for i in clean) if clean else None,
            "probes_where_neither_loops": len(clean)}))


if __name__ == "__main__":
    main()
