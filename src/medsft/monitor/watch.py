"""The forgetting monitor: probes the model while it trains and compares it with the base model.

At every evaluation (every `monitor.eval_every` steps and at the end of each stage) it generates
answers to the general probes and compares them with the base model's answers, computed once and
cached in the run directory: answer length ratio, KL drift, end-of-sequence rate, repetition,
accuracy on keyed probes; domain probes (the validation split of each domain source and the
user's knowledge / multiple-choice files) measure what was learned. It also keeps the loss
histories that the memorization detector and checkpoint selection read.
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from medsft.data.encode import batch_tokenizer
from medsft.monitor.drift import base_model_context, kl_to_base
from medsft.monitor.generate import generate, prompt_for, stop_token_ids
from medsft.monitor.probe_files import ChoiceProbe, KnowledgeProbe, choice_prompt, load_probe_file, score_knowledge
from medsft.monitor.probes import Probe
from medsft.monitor.score import contains_fact
from medsft.monitor.textmetrics import distinct_n, rouge_l


@dataclass
class ProbeSuite:
    """Everything the monitor asks, grouped by what it measures."""

    general: list[Probe]
    domain: dict[str, list[Probe]]  # per domain source: held-out records, scored by ROUGE-L
    knowledge: dict[str, list[KnowledgeProbe]] = field(default_factory=dict)
    choice: dict[str, list[ChoiceProbe]] = field(default_factory=dict)
    generation: dict[str, list[Probe]] = field(default_factory=dict)  # user files with keys


def build_suite(monitor_config, domain_records: dict[str, list] | None = None) -> ProbeSuite:
    """Probe sets: built-in and user general probes, held-out domain records (name -> conversations),
    and the user's probe files."""
    from medsft.monitor.builtin_probes import general_probes

    general: list[Probe] = []
    for entry in monitor_config.general_probes:
        if entry in ("builtin", "builtin-en", "builtin-zh"):
            language = None if entry == "builtin" else entry.split("-")[1]
            general += [Probe(p["question"], p["key"], p["reference"], p["category"]) for p in general_probes(language)]
        else:
            loaded = load_probe_file(entry, "generation")
            general += list(loaded.items)
    if monitor_config.max_general_probes:
        general = general[: monitor_config.max_general_probes]

    domain: dict[str, list[Probe]] = {}
    for name, conversations in (domain_records or {}).items():
        # Single-turn records make clean probes: the question, and the answer as the reference.
        probes = [Probe(c.messages[0].content, None, c.messages[1].content)
                  for c in conversations[: monitor_config.domain_probes] if len(c.messages) == 2]
        if probes:
            domain[name] = probes

    suite = ProbeSuite(general, domain)
    for path in monitor_config.probe_files:
        loaded = load_probe_file(path)
        target = {"knowledge": suite.knowledge, "choice": suite.choice, "generation": suite.generation}[loaded.kind]
        target[loaded.name] = list(loaded.items)
    return suite


class Monitor:
    def __init__(self, config, suite: ProbeSuite, tokenizer, template, run_dir: Path, system_prompt: str | None,
                 train_sizes: dict[str, int], log=print):
        self.config = config
        self.suite = suite
        self.tokenizer = tokenizer
        self.template = template
        self.run_dir = Path(run_dir)
        self.system_prompt = system_prompt
        self.train_sizes = train_sizes
        self.log = log
        self.stop_ids = stop_token_ids(template, tokenizer)
        self.tokenize = batch_tokenizer(tokenizer)
        self.base: dict | None = None
        self._kl_pairs: list[tuple[list[int], list[int]]] | None = None
        self.history: list[dict] = []  # one entry per evaluation: step, stage, metrics
        self.seconds = 0.0  # wall time spent probing, for the overhead figure
        self.phase_seconds: dict[str, float] = {}  # where it went: base, generation, kl
        self.verdicts: dict[str, dict] = {}

    # ---- resuming ---------------------------------------------------------------------------
    def state(self) -> dict:
        """What a checkpoint keeps of the monitor: evaluations so far, verdicts, time spent."""
        return {"history": self.history, "verdicts": self.verdicts, "seconds": self.seconds,
                "phase_seconds": self.phase_seconds}

    def load_state(self, state: dict) -> None:
        self.history = list(state["history"])
        self.verdicts = dict(state["verdicts"])
        self.seconds = state["seconds"]
        self.phase_seconds = dict(state["phase_seconds"])

    # ---- the base model, once -------------------------------------------------------------
    def scores(self, model) -> dict[str, float]:
        """Every probe score of `model` as it is (for `medsft eval`)."""
        return self._evaluate(model)[0]

    def compute_base(self, model) -> dict:
        """Base answers and scores, cached in run_dir/monitor/base.json (recomputed if the probes change)."""
        started = time.perf_counter()
        try:
            return self._compute_base(model)
        finally:
            self._spent("base", started)

    def _compute_base(self, model) -> dict:
        path = self.run_dir / "monitor" / "base.json"
        questions = [p.question for p in self.suite.general]
        if path.exists():
            cached = json.loads(path.read_text(encoding="utf-8"))
            if cached.get("questions") == questions:
                self.base = cached
                return cached
        context = base_model_context(model)
        if context is not None:
            with context:
                scores, answers = self._evaluate(model)
        else:  # full fine-tuning: called before any step, when the model still is the base
            scores, answers = self._evaluate(model)
        self.base = {"questions": questions, "answers": answers, "scores": scores}
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.base, ensure_ascii=False, indent=1), encoding="utf-8")
        return self.base

    # ---- one evaluation ---------------------------------------------------------------------
    def probe(self, model, step: int, stage: str, stage_step: int, eval_losses: dict[str, float],
              train_losses: dict[str, float]) -> dict[str, float]:
        """All probe metrics for the model as it is now, under stable names; also updates verdicts."""
        metrics: dict[str, float] = {}
        if self.config.probes:
            if self.base is None:
                self.compute_base(model)
            started = time.perf_counter()
            scores, answers = self._evaluate(model)
            self._spent("generation", started)
            started = time.perf_counter()
            metrics.update(scores)
            base_scores = self.base["scores"]
            if base_scores.get("general/median_tokens"):
                metrics["general/length_ratio"] = scores["general/median_tokens"] / base_scores["general/median_tokens"]
            if base_scores.get("general/accuracy"):
                metrics["general/retention"] = scores.get("general/accuracy", 0.0) / base_scores["general/accuracy"]
            if self.config.kl_to_base:
                kl = self._kl(model)
                if kl is not None:
                    metrics["general/kl_to_base"] = kl
            self._write_samples(step, stage, answers)
            self._spent("kl_and_samples", started)
        self.history.append({"step": step, "stage": stage, "stage_step": stage_step, "eval_loss": dict(eval_losses),
                             "train_loss": dict(train_losses), "metrics": dict(metrics)})
        return metrics

    def _spent(self, phase: str, started: float) -> None:
        elapsed = time.perf_counter() - started
        self.seconds += elapsed
        self.phase_seconds[phase] = self.phase_seconds.get(phase, 0.0) + elapsed

    def _evaluate(self, model) -> tuple[dict[str, float], dict[str, list[str]]]:
        suite = self.suite
        groups: list[tuple[str, list[Probe]]] = [("general", suite.general)] if suite.general else []
        groups += [(f"domain/{name}", probes) for name, probes in suite.domain.items()]
        groups += [(f"knowledge/{name}", [Probe(p.question) for p in probes]) for name, probes in suite.knowledge.items()]
        groups += [(f"probes/{name}", probes) for name, probes in suite.generation.items()]
        prompts = [prompt_for(self.template, p.question, self.system_prompt) for _, probes in groups for p in probes]
        generated = generate(model, self.tokenizer, prompts, self.stop_ids, self.config.max_new_tokens,
                             self.config.batch_size)
        scores: dict[str, float] = {}
        answers: dict[str, list[str]] = {}
        start = 0
        for name, probes in groups:
            out = generated[start : start + len(probes)]
            start += len(probes)
            texts = [g.text for g in out]
            answers[name] = texts
            scores[f"{name}/median_tokens"] = statistics.median(g.tokens for g in out) if out else 0.0
            scores[f"{name}/eos_rate"] = sum(g.stopped for g in out) / len(out) if out else 0.0
            scores[f"{name}/distinct_2"] = distinct_n(texts, 2)
            keyed = [(p, t) for p, t in zip(probes, texts) if p.key]
            if keyed:
                scores[f"{name}/accuracy"] = sum(contains_fact(t, p.key) for p, t in keyed) / len(keyed)
            referenced = [(p, t) for p, t in zip(probes, texts) if p.reference and not p.key]
            if name.startswith("domain/") and referenced:
                scores[f"{name}/rouge_l"] = statistics.fmean(rouge_l(t, p.reference) for p, t in referenced)
            if name.startswith("knowledge/"):
                knowledge = suite.knowledge[name.split("/", 1)[1]]
                judged = [score_knowledge(t, p) for p, t in zip(knowledge, texts)]
                scores[f"{name}/accuracy"] = statistics.fmean(j["fact_recall"] for j in judged)
                with_reference = [j["rouge_l"] for j in judged if j["rouge_l"] is not None]
                if with_reference:
                    scores[f"{name}/rouge_l"] = statistics.fmean(with_reference)
        for name, probes in suite.choice.items():
            scores[f"choice/{name}/accuracy"] = self._choice_accuracy(model, probes)
        return scores, answers

    @torch.no_grad()
    def _choice_accuracy(self, model, probes: list[ChoiceProbe]) -> float:
        """Pick the option whose text the model finds most likely (mean log-probability per token)."""
        if not probes:
            return 0.0
        device = next(model.parameters()).device
        prompts = self.tokenize([prompt_for(self.template, choice_prompt(p), self.system_prompt) for p in probes])
        options = [self.tokenize([f" {letter}. {text}" for letter, text in p.options]) for p in probes]
        pad = self.tokenizer.pad_token_id or 0
        correct = 0
        was_training = model.training
        model.eval()
        for probe, prompt, option_ids in zip(probes, prompts, options):
            longest = max(len(prompt) + len(o) for o in option_ids)
            ids = torch.full((len(option_ids), longest), pad, dtype=torch.long)
            attention = torch.zeros_like(ids)
            for row, o in enumerate(option_ids):
                ids[row, : len(prompt) + len(o)] = torch.tensor(prompt + o)
                attention[row, : len(prompt) + len(o)] = 1
            logp = F.log_softmax(model(input_ids=ids.to(device), attention_mask=attention.to(device)).logits.float(), -1)
            scores = []
            for row, o in enumerate(option_ids):
                positions = torch.arange(len(prompt) - 1, len(prompt) + len(o) - 1, device=logp.device)
                targets = torch.tensor(o, device=logp.device)
                scores.append(float(logp[row, positions, targets].mean()))
            chosen = probe.options[max(range(len(scores)), key=scores.__getitem__)][0]
            correct += chosen == probe.answer
        if was_training:
            model.train()
        return correct / len(probes)

    def _kl(self, model) -> float | None:
        if self._kl_pairs is None:  # the base's answers do not change: tokenize them once per run
            questions = [p.question for p in self.suite.general]
            prompts = self.tokenize([prompt_for(self.template, q, self.system_prompt) for q in questions])
            answers = self.tokenize(self.base["answers"]["general"])
            self._kl_pairs = [(p, a) for p, a in zip(prompts, answers) if a]
        return kl_to_base(model, self._kl_pairs, self.tokenizer.pad_token_id or 0, self.config.batch_size)

    def _write_samples(self, step: int, stage: str, answers: dict[str, list[str]]) -> None:
        """A few answers per set at this step, base answers beside them, for the report."""
        path = self.run_dir / "monitor" / "samples.jsonl"
        shown = 4
        rows = []
        for name, texts in answers.items():
            probes = self._probes_of(name)
            base_texts = self.base["answers"].get(name, [])
            for i, text in enumerate(texts[:shown]):
                rows.append({"step": step, "stage": stage, "set": name, "question": probes[i].question,
                             "answer": text, "base": base_texts[i] if i < len(base_texts) else None,
                             "reference": getattr(probes[i], "reference", None)})
        with open(path, "a", encoding="utf-8") as out:
            for row in rows:
                out.write(json.dumps(row, ensure_ascii=False) + "\n")

    def _probes_of(self, name: str) -> list:
        kind, _, rest = name.partition("/")
        if kind == "general":
            return self.suite.general
        return {"domain": self.suite.domain, "knowledge": self.suite.knowledge,
                "probes": self.suite.generation}[kind][rest]

    # ---- memorization -----------------------------------------------------------------------
    def update_verdicts(self) -> list[str]:
        """Newly raised memorization flags, as console lines. Verdicts per source live in self.verdicts."""
        raised = []
        for source in sorted({s for h in self.history for s in h["eval_loss"]}):
            points = [(h["step"], h["eval_loss"][source], h["train_loss"].get(source))
                      for h in self.history if source in h["eval_loss"]]
            verdict = self._verdict(source, points)
            previous = self.verdicts.get(source, {}).get("verdict")
            self.verdicts[source] = verdict
            if verdict["verdict"] == "memorizing" and previous != "memorizing":
                raised.append(f"memorization: {source}: {verdict['reason']}")
        return raised

    def _verdict(self, source: str, points: list[tuple[int, float, float | None]]) -> dict:
        patience = self.config.patience
        best = min(range(len(points)), key=lambda i: points[i][1])
        train_now = points[-1][2]
        if len(points) > patience and best <= len(points) - 1 - patience:
            rising = all(points[i][1] > points[i - 1][1] for i in range(len(points) - patience, len(points)))
            train_then = points[best][2]
            falling = train_now is not None and train_then is not None and train_now < train_then
            if rising and falling:
                return {"verdict": "memorizing", "since_step": points[best][0],
                        "reason": f"memorizing since step {points[best][0]}: validation loss rose for {patience} "
                                  f"evaluations ({points[best][1]:.3f} -> {points[-1][1]:.3f}) while train loss "
                                  f"kept falling ({train_then:.3f} -> {train_now:.3f})"}
        size = self.train_sizes.get(source, 0)
        if train_now is not None and train_now < self.config.near_zero_loss and size < self.config.small_set:
            return {"verdict": "memorizing", "since_step": points[-1][0],
                    "reason": f"memorizing: train loss {train_now:.3f} is near zero on a small set ({size} records)"}
        return {"verdict": "learning", "since_step": None,
                "reason": f"learning: validation loss {points[0][1]:.3f} -> {points[-1][1]:.3f}"
                          + (f" (best {points[best][1]:.3f} at step {points[best][0]})" if best != len(points) - 1 else "")}
