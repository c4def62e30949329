"""Where a lab run's general answers lose length against the base's: the base and the run's adapter answer the
lab's general probes (96 new tokens, greedy, as the lab scores them), and for each this prints the median
answer length, the share cut at the budget, the share that loops (some word 4-gram three times or more, words as
the probes' metrics count them), the median length over the probes where neither model loops, and over those the
base ends within the budget. Then, with the tuned answers fed to both models: where the tuned model chose to end
the turn, how likely each found ending there (median) and how often ending was the base's own first choice; and
along the base's answers, how often the tuned model would have ended the turn before the base did:

    python scripts/lab_length_check.py runs/lab/runs/medsft-default/seed-0 [--base smollm2] [--adapter DIR]"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import Counter
from pathlib import Path

import torch
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
    parser.add_argument("--adapter", type=Path, help="another adapter of the run (a checkpoint's); default RUN_DIR/adapter")
    args = parser.parse_args()
    lab_base, base_path, sets, tokenizer = trained_run(args.run_dir, args.base)
    sets = [s for s in sets if s.name == names.GENERAL]
    chat = Chat(tokenizer, get_template(lab_base.template, tokenizer))
    model = AutoModelForCausalLM.from_pretrained(base_path).eval()
    base = answers(model, chat, sets)
    adapted = PeftModel.from_pretrained(model, args.adapter or args.run_dir / "adapter").eval()
    tuned = answers(adapted, chat, sets)
    clean = [i for i in range(len(base)) if not loops(base[i].text) and not loops(tuned[i].text)]
    finished = [i for i in range(len(base)) if base[i].stopped]  # the base ends within the budget
    for name, rows in (("base", base), ("tuned", tuned)):
        print(json.dumps({
            "model": name, "probes": len(rows),
            "median_tokens": statistics.median(a.tokens for a in rows),
            "cut_at_budget": round(sum(not a.stopped for a in rows) / len(rows), 3),
            "looping": round(sum(loops(a.text) for a in rows) / len(rows), 3),
            "median_tokens_where_neither_loops": statistics.median(rows[i].tokens for i in clean) if clean else None,
            "probes_where_neither_loops": len(clean),
            "median_tokens_where_the_base_ends": statistics.median(rows[i].tokens for i in finished) if finished else None,
            "probes_where_the_base_ends": len(finished)}))
    questions = [p.question for s in sets for p in s.probes]
    print(json.dumps({"where_the_tuned_model_ends": ending_decisions(adapted, chat, questions, tuned)}))
    print(json.dumps({"along_the_base_answers": early_ends(adapted, chat, questions, base)}))


def fed(chat, question: str, answer) -> tuple[torch.Tensor, int]:
    """(prompt and answer tokens as a batch of one, the prompt's length): an answer fed back to a model."""
    prompt = chat.tokenize([chat.prompt(question)])[0]
    return torch.tensor([list(prompt) + list(answer.ids)]), len(prompt)


def ending_decisions(model, chat, questions: list[str], rows) -> dict:
    """At each tuned answer's end-of-turn token: p(end) under the tuned model and under the base (the
    adapter switched off), and whether ending was the base's most likely next token there."""
    tuned_p, base_p, base_first = [], [], []
    for question, answer in zip(questions, rows):
        if not answer.stopped or not answer.ids:
            continue
        ids, _ = fed(chat, question, answer)
        where, stop = ids.shape[1] - 2, ids[0, -1]  # the position that predicts the end-of-turn token
        with torch.no_grad():
            tuned = torch.softmax(model(input_ids=ids).logits[0, where].float(), -1)
            with model.disable_adapter():
                base = torch.softmax(model(input_ids=ids).logits[0, where].float(), -1)
        tuned_p.append(float(tuned[stop]))
        base_p.append(float(base[stop]))
        base_first.append(int(base.argmax()) == int(stop))
    if not tuned_p:
        return {"tuned_answers_that_end": 0}
    return {"tuned_answers_that_end": len(tuned_p),
            "median_p_end_tuned": round(statistics.median(tuned_p), 3),
            "median_p_end_base": round(statistics.median(base_p), 3),
            "base_would_end_there_too": round(sum(base_first) / len(base_first), 3)}


def early_ends(model, chat, questions: list[str], rows) -> dict:
    """Along the base's own answers: how often the tuned model would end the turn before the base does
    (ending is its most likely next token at some position where the base goes on), and how many of the
    base's tokens come before that first early end (median, as a share of the answer)."""
    stop_ids = set(chat.stop_ids)
    early, kept = 0, []
    for question, answer in zip(questions, rows):
        if not answer.ids:
            continue
        ids, prompt_length = fed(chat, question, answer)
        with torch.no_grad():
            tuned = model(input_ids=ids).logits[0, prompt_length - 1:-1].argmax(-1)
        ends = [i for i, token in enumerate(tuned.tolist()) if token in stop_ids and i < answer.tokens]
        if ends:
            early += 1
            kept.append(ends[0] / max(answer.tokens, 1))
    return {"base_answers": len(rows), "tuned_would_end_earlier": early,
            "median_share_of_the_base_answer_before_that": round(statistics.median(kept), 3) if kept else None}


if __name__ == "__main__":
    main()
