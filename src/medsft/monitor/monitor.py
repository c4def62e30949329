"""The forgetting monitor: the training-time policy around evaluation.

At every evaluation (every `monitor.eval_every` steps and at the end of each stage) it asks the
probe sets (`eval/`) and compares the answers with the base model's, computed once and cached in
the run directory: answer length ratio, retention of general accuracy, KL drift. It keeps the
history of evaluations that the memorization verdicts and checkpoint selection read, and the
state a checkpoint carries so that a resumed run continues it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from medsft import distributed
from medsft.eval import names
from medsft.eval.drift import base_model_context, kl_to_base
from medsft.eval.evaluate import answers_of, evaluate, flat_scores
from medsft.eval.generate import Chat
from medsft.eval.probes import ProbeSet
from medsft.monitor.selection import domain_score
from medsft.monitor.verdicts import memorization_verdicts, newly_memorizing

SAMPLES_SHOWN = 4  # answers per set and evaluation kept for the report


class Monitor:
    def __init__(self, config, probe_sets: list[ProbeSet], chat: Chat, run_dir: Path,
                 train_sizes: dict[str, int] | None = None, log=print):
        """config: the recipe's monitor section. train_sizes: training records per source (verdicts)."""
        self.config = config
        self.probe_sets = probe_sets
        self.chat = chat
        self.run_dir = Path(run_dir)
        self.train_sizes = train_sizes or {}
        self.log = log
        self.base: dict | None = None
        self._kl_pairs: list[tuple[list[int], list[int]]] | None = None
        self.history: list[dict] = []  # one entry per evaluation: step, stage, losses, metrics
        self.seconds = 0.0  # wall time spent probing, for the overhead figure
        self.phase_seconds: dict[str, float] = {}  # where it went: base, generation, kl_and_samples
        self.verdicts: dict[str, dict] = {}
        self.mix_changes: list[dict] = []  # adaptive mixing: every change, in order (replayed on resume)
        self.domain_scores: dict[str, float] = {}  # adaptive mixing: the last domain score per stage

    # ---- resuming ---------------------------------------------------------------------------
    def state(self) -> dict:
        """What a checkpoint keeps of the monitor: evaluations so far, verdicts, time spent."""
        return {"history": self.history, "verdicts": self.verdicts, "seconds": self.seconds,
                "phase_seconds": self.phase_seconds, "mix_changes": self.mix_changes,
                "domain_scores": self.domain_scores}

    def load_state(self, state: dict) -> None:
        self.history = list(state["history"])
        self.verdicts = dict(state["verdicts"])
        self.seconds = state["seconds"]
        self.phase_seconds = dict(state["phase_seconds"])
        self.mix_changes = list(state.get("mix_changes", []))
        self.domain_scores = dict(state.get("domain_scores", {}))

    # ---- adaptive mixing ----------------------------------------------------------------------
    def adapt(self, stage: str, config, weights: dict[str, float], roles: dict[str, str], metrics: dict,
              step: int, position: int) -> dict | None:
        """The mix change this evaluation calls for (recorded), or None."""
        from medsft.monitor.adaptive import decide

        previous = self.domain_scores.get(stage)
        score, meaning = domain_score({"metrics": metrics, "eval_loss": {}}, [])
        if meaning != "no domain measurement":
            self.domain_scores[stage] = score
        decision = decide(config, weights, roles, metrics, previous)
        if decision is None:
            return None
        new, reason = decision
        change = {"stage": stage, "step": step, "position": position, "number": len(self.mix_changes) + 1,
                  "old": dict(weights), "new": new, "reason": reason}
        self.mix_changes.append(change)
        self.log(f"mix at step {step} ({stage}): {reason}")
        return change

    # ---- the base model, once -------------------------------------------------------------
    @property
    def general(self) -> ProbeSet | None:
        return next((s for s in self.probe_sets if s.name == names.GENERAL), None)

    def compute_base(self, model) -> dict:
        """Base answers and scores, cached in run_dir/monitor/base.json (recomputed if the probes change)."""
        started = time.perf_counter()
        try:
            return self._compute_base(model)
        finally:
            self._spent("base", started)

    def _compute_base(self, model) -> dict:
        path = self.run_dir / "monitor" / "base.json"
        questions = [p.question for p in self.general.probes] if self.general else []
        if path.exists():
            cached = json.loads(path.read_text(encoding="utf-8"))
            if cached.get("questions") == questions:
                self.base = cached
                return cached
        context = base_model_context(model)
        if context is not None:
            with context:
                results = self._ask(model, "probing the base model")
        else:  # full fine-tuning: called before any step, when the model still is the base
            results = self._ask(model, "probing the base model")
        self.base = {"questions": questions, "answers": answers_of(results), "scores": flat_scores(results)}
        median = self.base["scores"].get(names.metric(names.GENERAL, names.MEDIAN_TOKENS))
        if median is not None and median >= 0.9 * self.config.max_new_tokens:
            # Seen in the SmolLM2 lab: capped base answers hid a tuned model's answers shrinking to 63%.
            self.log(f"warning: the base model's median general answer ({median:g} tokens) reaches "
                     f"monitor.max_new_tokens ({self.config.max_new_tokens}): the length ratio cannot see answers "
                     "shorten until they fall under it; raise monitor.max_new_tokens")
        if not distributed.is_main():  # sharded weights: every process asked, the main one writes
            return self.base
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.base, ensure_ascii=False, indent=1), encoding="utf-8")
        return self.base

    # ---- one evaluation ---------------------------------------------------------------------
    def probe(self, model, step: int, stage: str, stage_step: int, eval_losses: dict[str, float],
              train_losses: dict[str, float]) -> dict[str, float]:
        """All probe metrics for the model as it is now, under stable names; recorded in the history."""
        metrics: dict[str, float] = {}
        if self.config.probes:
            if self.base is None:
                self.compute_base(model)
            started = time.perf_counter()
            results = self._ask(model, f"probing at step {step}")
            self._spent("generation", started)
            started = time.perf_counter()
            metrics.update(flat_scores(results))
            metrics.update(names.relative_to_base(metrics, self.base["scores"]))
            if self.config.kl_to_base:
                kl = self._kl(model)
                if kl is not None:
                    metrics[names.KL_TO_BASE] = kl
            self._write_samples(step, stage, results)
            self._spent("kl_and_samples", started)
        self.history.append({"step": step, "stage": stage, "stage_step": stage_step, "eval_loss": dict(eval_losses),
                             "train_loss": dict(train_losses), "metrics": dict(metrics)})
        return metrics

    def _ask(self, model, label: str):
        return evaluate(model, self.chat, self.probe_sets, self.config.max_new_tokens, self.config.batch_size, label)

    def _spent(self, phase: str, started: float) -> None:
        elapsed = time.perf_counter() - started
        self.seconds += elapsed
        self.phase_seconds[phase] = self.phase_seconds.get(phase, 0.0) + elapsed

    def _kl(self, model) -> float | None:
        if self._kl_pairs is None:  # the base's answers do not change: tokenize them once per run
            questions = [p.question for p in self.general.probes] if self.general else []
            prompts = self.chat.tokenize([self.chat.prompt(q) for q in questions])
            answers = self.chat.tokenize(self.base["answers"].get(names.GENERAL, []))
            self._kl_pairs = [(p, a) for p, a in zip(prompts, answers) if a]
        return kl_to_base(model, self._kl_pairs, self.chat.pad_id, self.config.batch_size)

    def _write_samples(self, step: int, stage: str, results: dict) -> None:
        """A few answers per set at this step, base answers beside them, for the report."""
        if not distributed.is_main():
            return
        rows = []
        for probe_set in self.probe_sets:
            if not probe_set.generates:
                continue
            base_texts = self.base["answers"].get(probe_set.name, [])
            for i, answer in enumerate(results[probe_set.name].answers[:SAMPLES_SHOWN]):
                probe = probe_set.probes[i]
                rows.append({"step": step, "stage": stage, "set": probe_set.name, "question": probe.question,
                             "answer": answer.text, "base": base_texts[i] if i < len(base_texts) else None,
                             "reference": probe.reference})
        with open(self.run_dir / "monitor" / "samples.jsonl", "a", encoding="utf-8") as out:
            for row in rows:
                out.write(json.dumps(row, ensure_ascii=False) + "\n")

    # ---- memorization -----------------------------------------------------------------------
    def update_verdicts(self) -> list[str]:
        """Newly raised memorization flags, as console lines. Verdicts per source live in self.verdicts."""
        now = memorization_verdicts(self.history, self.train_sizes, self.config.patience,
                                    self.config.near_zero_loss, self.config.small_set)
        raised = newly_memorizing(self.verdicts, now)
        self.verdicts.update(now)
        return raised
