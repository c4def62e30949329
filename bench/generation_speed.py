"""Monitor generation: answers dropped from the batch as they end, against `model.generate`.

Answers the 79 built-in general probes plus 16 repeats (95 prompts, as the monitor does at its
defaults) with the lab's tiny base model, greedy, 256 new tokens at most, batch 32, both ways;
prints the time ratio and checks that every answer is identical.

    .venv/bin/python bench/generation_speed.py [--cache-dir DIR]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import medsft.eval.generate as generation
from medsft.data.templates import get_template
from medsft.lab.base import BaseConfig, build_base
from medsft.lab.world import build_world
from medsft.eval.builtin import general_probes


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cache-dir", default=None)
    args = parser.parse_args()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = build_base(build_world(0, "en"), BaseConfig(), Path(args.cache_dir) if args.cache_dir else None)
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base)
    chat = generation.Chat(tokenizer, get_template("chatml", tokenizer))
    questions = [p.question for p in general_probes(None)]
    questions += questions[:16]
    native = generation._native
    timings, answers = {}, {}
    for name, shrinking in [("model.generate", False), ("shrinking batch", True)] * 2:  # second round counts
        generation._native = lambda model, value=shrinking: value
        started = time.perf_counter()
        answers[name] = generation.generate(model, chat, questions, 256, 32, label=None)
        timings[name] = time.perf_counter() - started
    generation._native = native
    tokens = sum(g.tokens for g in answers["model.generate"])
    for name, seconds in timings.items():
        print(f"{name:16}: {seconds:5.2f} s for {len(questions)} answers, {tokens} tokens")
    print(f"speed-up: x{timings['model.generate'] / timings['shrinking batch']:.2f}")
    same = answers["model.generate"] == answers["shrinking batch"]
    print(f"identical answers: {same}")
    if not same:
        raise SystemExit("MISMATCH")


if __name__ == "__main__":
    main()
