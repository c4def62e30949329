"""The HF Trainer, with only what medsft must change: the loss split by source, and eval per source.

Public Trainer hooks only (`compute_loss`, `log`, `evaluate`, callbacks); what has no public form
goes through `train/hf_internals.py`."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from transformers import Trainer

from medsft import distributed
from medsft.errors import TrainingStopped
from medsft.tensors import eval_mode
from medsft.train import hf_internals
from medsft.train.callbacks import NonFiniteGradientGuard, SealCheckpoints
from medsft.train.loss import kl_to_base_sum, on_policy_kl_sum, per_position, per_sample, token_losses


@dataclass
class StageRun:
    """Where one stage's trainer sits in the run."""

    run_dir: Path
    stage: str
    source_names: list[str]  # source_ids in the batches index this list
    val_sets: dict = field(default_factory=dict)  # source name -> encoded validation set
    step_offset: int = 0  # run-wide steps before this stage
    provenance: list = field(default_factory=list)  # record_ids -> where the record came from
    run_started: float = field(default_factory=time.time)
    console: Callable[[str], None] = print
    protected_checkpoints: Callable[[], set[Path]] = set  # () -> checkpoints pruning must keep (the best so far)
    general_ids: list[int] = field(default_factory=list)  # source ids of general sources (train.kl_on: general)
    reference: object = None  # full fine-tuning with train.kl_to_base / on_policy: a frozen copy of the base model
    on_policy: object = None  # train.on_policy: pipeline.onpolicy.OnPolicyAnswers, the tuned model's own answers
    answers_through_head: bool = False  # on_policy: the output head applied at answer positions only (see loss.py)
    adaptive: object = None  # the stage's `adaptive` section, when the monitor may move its mix
    mixer: object = None  # medsft.data.mixture.AdaptiveOrder behind the stage's training set (adaptive)
    mix_weights: dict = field(default_factory=dict)  # the weights in force now (adaptive)
    roles: dict = field(default_factory=dict)  # source name -> domain | general
    padding_free: bool = False  # batches joined into one row (train/collate.py PackedCollator)
    loss_chunk_tokens: int = 0  # > 0: the chunked loss (train/loss.py), when the model allows it
    compile_loss: bool = False  # train.compile: the chunked loss's per-chunk cross-entropy compiled
    probe_everywhere: bool = False  # weights sharded over the processes: every one takes part in the probes


class MedsftTrainer(Trainer):
    """Trainer whose loss is the mean over supervised tokens (exact under gradient accumulation,
    using the token count of the whole accumulated batch), logged per source, and whose evaluation
    is the validation loss per source."""

    def __init__(self, *args, run: StageRun, settings, monitor=None, **kwargs):
        """run: the stage's place in the run. settings: the recipe's train section (non-finite
        handling, loss-spike warnings, checkpoints kept). monitor: probes at each evaluation."""
        super().__init__(*args, **kwargs)
        self.run = run
        self.settings = settings
        self.monitor = monitor
        self.nonfinite_skips = 0
        self.recent_losses: list[float] = []
        self.last_train_losses: dict[str, float] = {}
        self.add_callback(NonFiniteGradientGuard(self))
        self.add_callback(SealCheckpoints(self))
        hf_internals.count_tokens_over_accumulation(self)
        # Per-source sums stay on the device and are read only when logging: no sync per micro-batch.
        sources = len(run.source_names)
        self._loss_sums = torch.zeros(sources, dtype=torch.float64, device=self.args.device)
        self._token_counts = torch.zeros(sources, dtype=torch.float64, device=self.args.device)
        self._supervised_total = torch.zeros((), dtype=torch.long, device=self.args.device)
        self._stage_loss, self._stage_tokens = 0.0, 0.0  # logged so far in this stage, for its summary
        self._kl_sum = torch.zeros((), dtype=torch.float64, device=self.args.device)  # train.kl_to_base
        self._kl_tokens = torch.zeros((), dtype=torch.float64, device=self.args.device)
        self._on_policy_sum = torch.zeros((), dtype=torch.float64, device=self.args.device)  # train.on_policy
        self._on_policy_tokens = torch.zeros((), dtype=torch.float64, device=self.args.device)

    @property
    def step(self) -> int:
        """The run-wide step."""
        return self.run.step_offset + self.state.global_step

    @property
    def micro_step_records(self) -> int:
        """Records of the stage's order one micro-step takes, over all processes."""
        return self.args.per_device_train_batch_size * self.args.world_size

    def records_trained(self) -> int:
        """Records of the stage's order the optimizer steps so far have taken."""
        return self.state.global_step * self.args.gradient_accumulation_steps * self.micro_step_records

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        # train.on_policy: generation and the extra forward use the model without DDP's wrapper (its gradients
        # are reduced all the same); a new draw is generated before this micro-batch's forward holds activations.
        answers = None
        if model.training and self.run.on_policy is not None:
            plain = self.accelerator.unwrap_model(model)
            answers = self.run.on_policy.batch(plain, self.step, self.args.device)
        weight = self.settings.kl_to_base if model.training else 0.0
        if weight > 0:
            losses, mask, source_ids, logits = token_losses(model, inputs, keep_logits=True)
            general = torch.isin(source_ids, torch.tensor(self.run.general_ids, device=source_ids.device))
            covered = mask if self.settings.kl_on == "all" else mask & per_position(general, inputs)
            kl = kl_to_base_sum(model, inputs, logits, covered, self.run.reference)
        else:
            losses, mask, source_ids = token_losses(model, inputs, chunk_tokens=self.run.loss_chunk_tokens,
                                                    compiled=self.run.compile_loss)
            kl = None
        on_policy = None
        if answers is not None:
            on_policy, answer_tokens = on_policy_kl_sum(plain, answers, self.run.reference,
                                                        self.run.answers_through_head)
        supervised = mask.sum()
        total = losses.sum()  # ignored positions contribute exact zeros, so this is finite iff the loss is
        if kl is not None:
            total = total + weight * kl  # the KL is normalized by the same supervised-token count
        if model.training and not distributed.active() and not (
                torch.isfinite(total) and (on_policy is None or torch.isfinite(on_policy))):
            extra = "" if on_policy is None else f", on-policy KL sum {float(on_policy.detach())}"
            self.nonfinite(f"non-finite loss ({float(total.detach())}{extra})", inputs)
            hf_internals.say_loss_is_scaled(self, True)
            # A zero loss that touches no weight: this micro-batch adds nothing to the step.
            zero = torch.zeros((), device=losses.device, requires_grad=True)
            return (zero, None) if return_outputs else zero
        if model.training:
            self._loss_sums.index_add_(0, source_ids, per_sample(losses.detach().double(), inputs))
            self._token_counts.index_add_(0, source_ids, per_sample(mask.double(), inputs))
            self._supervised_total += supervised.detach()
            if kl is not None:
                self._kl_sum += kl.detach().double()
                self._kl_tokens += covered.sum().double()
            if on_policy is not None:
                self._on_policy_sum += on_policy.detach().double()
                self._on_policy_tokens += answer_tokens.double()
        denominator = num_items_in_batch if num_items_in_batch is not None else supervised.clamp(min=1)
        hf_internals.say_loss_is_scaled(self, num_items_in_batch is not None)
        loss = total / denominator
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            # num_items_in_batch counts every device's tokens, and DDP averages gradients over devices.
            loss = loss * self.accelerator.num_processes
        if on_policy is not None:
            # A mean per answer token for the step: each micro-batch's share of it, unless the Trainer divides.
            share = hf_internals.micro_batches_this_step(self) if num_items_in_batch is not None else 1
            loss = loss + self.settings.on_policy.weight * on_policy / answer_tokens.clamp(min=1) / share
        return (loss, None) if return_outputs else loss

    def nonfinite(self, what: str, inputs: dict | None = None) -> None:
        """Stop with one line naming the step, the stage and the batch's records, or skip (bounded)."""
        run = self.run
        where = f"step {self.step + 1} (stage {run.stage})"
        batch = ""
        if inputs is not None:
            names = [run.source_names[i] for i in inputs["source_ids"].tolist()]
            counts = {n: names.count(n) for n in dict.fromkeys(names)}
            records = [str(run.provenance[i]) for i in inputs["record_ids"].tolist() if 0 <= i < len(run.provenance)]
            batch = ("; batch: " + ", ".join(f"{n} x{c}" for n, c in counts.items())
                     + ("; records: " + ", ".join(records[:4]) + (" ..." if len(records) > 4 else "") if records else ""))
        limit = self.settings.max_nonfinite_skips
        if self.settings.on_nonfinite == "skip" and self.nonfinite_skips < limit:
            self.nonfinite_skips += 1
            run.console(f"warning: {where}: {what}{batch}; skipped ({self.nonfinite_skips}/{limit})")
            return
        raise TrainingStopped(f"{where}: {what}{batch}; training stopped, the checkpoints so far are kept")

    def _warn_on_spike(self, loss: float) -> None:
        """A logged train loss far above its recent median is worth a look (bad batch, too high a rate)."""
        factor = self.settings.loss_spike_factor
        if factor and self.recent_losses:
            typical = sorted(self.recent_losses)[len(self.recent_losses) // 2]
            if typical > 0 and loss > factor * typical:
                self.run.console(f"warning: step {self.step} (stage {self.run.stage}): "
                                 f"train loss {loss:.3f} is {loss / typical:.1f}x its recent median")
        self.recent_losses = (self.recent_losses + [loss])[-20:]

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:
            both = torch.stack([self._loss_sums, self._token_counts])
            if self.accelerator.num_processes > 1:
                both = self.accelerator.reduce(both, "sum")
            sums, counts = both.cpu()
            if counts.sum() > 0:  # the mean over supervised tokens since the last log, like the loss we train on
                logs["loss"] = float(sums.sum() / counts.sum())
            self._warn_on_spike(logs["loss"])
            for i, name in enumerate(self.run.source_names):
                if counts[i] > 0:
                    logs[f"train_loss/{name}"] = float(sums[i] / counts[i])
                    self.last_train_losses[name] = logs[f"train_loss/{name}"]
            self._stage_loss += float(sums.sum())
            self._stage_tokens += float(counts.sum())
            self._loss_sums.zero_()
            self._token_counts.zero_()
            logs["supervised_tokens_seen"] = int(self._supervised_total)
            if float(self._kl_tokens) > 0:  # train.kl_to_base: the mean KL(base || tuned) since the last log
                logs["train_kl_to_base"] = float(self._kl_sum / self._kl_tokens)
                self._kl_sum.zero_()
                self._kl_tokens.zero_()
            if self.run.on_policy is not None:  # the mean KL(tuned || base) on its own answers since the last log
                on_policy = torch.stack([self._on_policy_sum, self._on_policy_tokens])
                if self.accelerator.num_processes > 1:
                    on_policy = self.accelerator.reduce(on_policy, "sum")
                if float(on_policy[1]) > 0:
                    logs["train_on_policy_kl"] = float(on_policy[0] / on_policy[1])
                self._on_policy_sum.zero_()
                self._on_policy_tokens.zero_()
        elif "train_samples_per_second" in logs:  # the summary at the end of train(): the stage's mean loss
            pending_loss, pending_tokens = float(self._loss_sums.sum()), float(self._token_counts.sum())
            if self._stage_tokens + pending_tokens > 0:
                logs["train_loss"] = (self._stage_loss + pending_loss) / (self._stage_tokens + pending_tokens)
        super().log(logs, start_time)

    # ---- resuming: what a checkpoint keeps of the trainer ----
    def resume_state(self) -> dict:
        """What medsft adds to a checkpoint, so that a resumed run continues exactly from it."""
        metrics = self.run.run_dir / "metrics.jsonl"
        samples = self.run.run_dir / "monitor" / "samples.jsonl"
        return {
            "stage": self.run.stage,
            "stage_step": self.state.global_step,
            "step": self.step,
            "metrics_bytes": metrics.stat().st_size if metrics.exists() else 0,
            "samples_bytes": samples.stat().st_size if samples.exists() else 0,
            "run_seconds": time.time() - self.run.run_started,
            "trainer": {
                "loss_sums": self._loss_sums.tolist(),
                "token_counts": self._token_counts.tolist(),
                "supervised_total": int(self._supervised_total),
                "stage_loss": self._stage_loss,
                "stage_tokens": self._stage_tokens,
                "last_train_losses": self.last_train_losses,
                "recent_losses": self.recent_losses,
                "nonfinite_skips": self.nonfinite_skips,
                "kl": [float(self._kl_sum), float(self._kl_tokens)],  # KL terms not yet logged
                "on_policy_kl": [float(self._on_policy_sum), float(self._on_policy_tokens)],
            },
            "monitor": self.monitor.state() if self.monitor is not None else None,
            "on_policy": self.run.on_policy.state() if self.run.on_policy is not None else None,
        }

    def load_resume_state(self, state: dict) -> None:
        own = state["trainer"]
        device = self._loss_sums.device
        self._loss_sums = torch.tensor(own["loss_sums"], dtype=torch.float64, device=device)
        self._token_counts = torch.tensor(own["token_counts"], dtype=torch.float64, device=device)
        self._supervised_total = torch.tensor(own["supervised_total"], dtype=torch.long, device=device)
        self._stage_loss, self._stage_tokens = own["stage_loss"], own["stage_tokens"]
        self.last_train_losses = dict(own["last_train_losses"])
        self.recent_losses = list(own["recent_losses"])
        self.nonfinite_skips = own["nonfinite_skips"]
        for (total, tokens), key in (((self._kl_sum, self._kl_tokens), "kl"),
                                     ((self._on_policy_sum, self._on_policy_tokens), "on_policy_kl")):
            saved_total, saved_tokens = own.get(key, (0.0, 0.0))
            total.fill_(saved_total)
            tokens.fill_(saved_tokens)

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        """Token-weighted validation loss per source (and over all of them), then the monitor's probes.

        Evaluation runs on a forked RNG: how often a run is evaluated or probed never changes what it
        trains (data loaders and generation would otherwise draw from the global generator)."""
        devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
        with torch.random.fork_rng(devices=devices):
            return self._evaluate_now(metric_key_prefix)

    def _evaluate_now(self, metric_key_prefix: str) -> dict[str, float]:
        metrics = self.validation_losses(metric_key_prefix)
        if self.monitor is not None:
            # The main process probes (every process, when each holds only part of the weights); the others
            # take its figures and its monitor state, so that every process makes the same mix change and stop.
            if distributed.is_main() or self.run.probe_everywhere:
                losses = {k.split("/", 1)[1]: v for k, v in metrics.items() if "/" in k}
                metrics.update(self.monitor.probe(self.model, self.step, self.run.stage, self.state.global_step,
                                                  losses, dict(self.last_train_losses)))
            if distributed.active():
                metrics, state = distributed.broadcast((metrics, self.monitor.state()))
                self.monitor.load_state(state)
        if metrics:
            self.log(metrics)
        if self.monitor is not None and self.run.mixer is not None:
            self._adapt_mix(metrics)
        if self.monitor is not None:
            self._report_verdicts()
        hf_internals.notify_evaluate(self, metrics)
        return metrics

    def _adapt_mix(self, metrics: dict) -> None:
        """Adaptive mixing: the monitor's decision applied to the training order from the next batches on.

        The data loader has already fetched the next micro-batch, so the change applies after it: a
        deterministic position, which a resumed run replays exactly."""
        if self.state.global_step >= self.state.max_steps:
            return
        # Every process has fetched its next micro-batch already: the change applies after it.
        position = self.records_trained() + 2 * self.micro_step_records
        change = self.monitor.adapt(self.run.stage, self.run.adaptive, self.run.mix_weights, self.run.roles, metrics,
                                    self.step, position)
        if change is None:
            return
        self.run.mixer.reweight(change["position"], change["new"], change["number"])
        self.run.mix_weights = change["new"]
        self.log({"mix_reason": change["reason"], **{f"mix/{s}": w for s, w in change["new"].items()}})

    def validation_losses(self, metric_key_prefix: str = "eval") -> dict[str, float]:
        """Token-weighted validation loss per source (`eval_loss/<source>`) and over all (`eval_loss`)."""
        metrics: dict[str, float] = {}
        total_loss, total_tokens = 0.0, 0
        with eval_mode(self.model):
            for name, dataset in self.run.val_sets.items():
                loss_sum, tokens = 0.0, 0
                if distributed.active():  # each process a contiguous share (no record twice), summed below
                    dataset = dataset.shard(distributed.world_size(), distributed.rank(), contiguous=True)
                for batch in DataLoader(dataset, batch_size=self.args.per_device_eval_batch_size,
                                        collate_fn=self.data_collator):
                    batch = {k: v.to(self.args.device) if torch.is_tensor(v) else v for k, v in batch.items()}
                    losses, mask, _ = token_losses(self.model, batch, chunk_tokens=self.run.loss_chunk_tokens,
                                                   compiled=self.run.compile_loss)
                    loss_sum += float(losses.sum())
                    tokens += int(mask.sum())
                if self.accelerator.num_processes > 1:
                    pair = self.accelerator.reduce(torch.tensor([loss_sum, tokens], device=self.args.device), "sum")
                    loss_sum, tokens = float(pair[0]), int(pair[1])
                if tokens:
                    metrics[f"{metric_key_prefix}_loss/{name}"] = loss_sum / tokens
                    total_loss += loss_sum
                    total_tokens += tokens
        if total_tokens:
            metrics[f"{metric_key_prefix}_loss"] = total_loss / total_tokens
        return metrics

    def _report_verdicts(self) -> None:
        """Console and metrics.jsonl hear of each source that starts memorizing; optionally stop."""
        for line in self.monitor.update_verdicts():
            self.run.console(f"warning: {line}")
            self.log({"verdict": line})
            if self.monitor.config.early_stop:
                self.run.console("stopping early (monitor.early_stop)")
                self.control.should_training_stop = True
