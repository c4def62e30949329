"""The HF Trainer, with only what medsft must change: the loss split by source, and eval per source."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import Trainer, TrainerCallback

from medsft.train import checkpoint

IGNORE = -100


class Collator:
    """Right-pads a batch; labels pad with -100 so padding never carries loss."""

    def __init__(self, pad_id: int, multiple_of: int = 1):
        self.pad_id = pad_id
        self.multiple_of = multiple_of

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        longest = max(len(r["input_ids"]) for r in rows)
        longest = math.ceil(longest / self.multiple_of) * self.multiple_of
        input_ids = torch.full((len(rows), longest), self.pad_id, dtype=torch.long)
        labels = torch.full((len(rows), longest), IGNORE, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), longest), dtype=torch.long)
        for i, row in enumerate(rows):
            n = len(row["input_ids"])
            input_ids[i, :n] = torch.tensor(row["input_ids"])
            labels[i, :n] = torch.tensor(row["labels"])
            attention_mask[i, :n] = 1
        return {
            "input_ids": input_ids,
            "labels": labels,
            "attention_mask": attention_mask,
            "source_ids": torch.tensor([r["source_id"] for r in rows], dtype=torch.long),
            "record_ids": torch.tensor([r.get("record_index", -1) for r in rows], dtype=torch.long),
        }


def token_losses(model, inputs: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(per-token loss, supervised mask, source ids) for a batch; the loss is next-token cross-entropy."""
    source_ids = inputs["source_ids"]
    labels = inputs["labels"]
    outputs = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
    logits = outputs.logits[:, :-1, :].float()
    targets = labels[:, 1:]
    losses = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=IGNORE, reduction="none"
    ).view(targets.shape)
    return losses, targets != IGNORE, source_ids


class MedsftTrainer(Trainer):
    """Trainer whose loss is the mean over supervised tokens (exact under gradient accumulation,
    using the token count of the whole accumulated batch), logged per source, and whose evaluation
    is the validation loss per source."""

    def __init__(self, *args, source_names: list[str], val_sets: dict, monitor=None, stage: str = "",
                 step_offset: int = 0, console=print, provenance: list | None = None, on_nonfinite: str = "stop",
                 max_nonfinite_skips: int = 10, loss_spike_factor: float = 0.0, run_dir: Path | None = None,
                 run_started: float | None = None, keep_checkpoints: int | None = None, protected_checkpoints=lambda: set(), **kwargs):
        super().__init__(*args, **kwargs)
        self.run_dir = Path(run_dir) if run_dir is not None else Path(self.args.output_dir)
        self.run_started = run_started if run_started is not None else time.time()
        self.keep_checkpoints = keep_checkpoints  # save_total_limit, applied by prune() (the Trainer's is off)
        self.protected_checkpoints = protected_checkpoints  # () -> paths prune must keep (the best so far)
        self._staging: str | None = None
        self.provenance = provenance or []
        self.on_nonfinite = on_nonfinite
        self.max_nonfinite_skips = max_nonfinite_skips
        self.nonfinite_skips = 0
        self.loss_spike_factor = loss_spike_factor
        self.recent_losses: list[float] = []
        self.add_callback(_NonFiniteGradientGuard(self))
        self.source_names = source_names
        self.val_sets = val_sets
        self.monitor = monitor
        self.stage = stage
        self.step_offset = step_offset
        self.console = console
        self.last_train_losses: dict[str, float] = {}
        # Always count supervised tokens over the accumulated batch, and say our loss is already
        # normalized by that count, so the Trainer does not divide it again.
        self.model_accepts_loss_kwargs = True
        # Per-source sums stay on the device and are read only when logging: no sync per micro-batch.
        self._loss_sums = torch.zeros(len(source_names), dtype=torch.float64, device=self.args.device)
        self._token_counts = torch.zeros(len(source_names), dtype=torch.float64, device=self.args.device)
        self._supervised_total = torch.zeros((), dtype=torch.long, device=self.args.device)
        self._stage_loss, self._stage_tokens = 0.0, 0.0  # logged so far in this stage, for its summary

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        losses, mask, source_ids = token_losses(model, inputs)
        supervised = mask.sum()
        total = losses.sum()  # ignored positions contribute exact zeros, so this is finite iff the loss is
        if model.training and not torch.isfinite(total):
            self.nonfinite(f"non-finite loss ({float(total.detach())})", inputs)
            self.loss_is_scaled_for_ga = True
            # A zero loss that touches no weight: this micro-batch adds nothing to the step.
            zero = torch.zeros((), device=losses.device, requires_grad=True)
            return (zero, None) if return_outputs else zero
        if model.training:
            self._loss_sums.index_add_(0, source_ids, losses.detach().sum(dim=1).double())
            self._token_counts.index_add_(0, source_ids, mask.sum(dim=1).double())
            self._supervised_total += supervised.detach()
        denominator = num_items_in_batch if num_items_in_batch is not None else supervised.clamp(min=1)
        self.loss_is_scaled_for_ga = num_items_in_batch is not None
        loss = total / denominator
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            # num_items_in_batch counts every device's tokens, and DDP averages gradients over devices.
            loss = loss * self.accelerator.num_processes
        return (loss, None) if return_outputs else loss

    def nonfinite(self, what: str, inputs: dict | None = None) -> None:
        """Stop with one line naming the step, the stage and the batch's records, or skip (bounded)."""
        where = f"step {self.step_offset + self.state.global_step + 1} (stage {self.stage})"
        batch = ""
        if inputs is not None:
            names = [self.source_names[i] for i in inputs["source_ids"].tolist()]
            counts = {n: names.count(n) for n in dict.fromkeys(names)}
            records = [str(self.provenance[i]) for i in inputs["record_ids"].tolist() if 0 <= i < len(self.provenance)]
            batch = ("; batch: " + ", ".join(f"{n} x{c}" for n, c in counts.items())
                     + ("; records: " + ", ".join(records[:4]) + (" ..." if len(records) > 4 else "") if records else ""))
        if self.on_nonfinite == "skip" and self.nonfinite_skips < self.max_nonfinite_skips:
            self.nonfinite_skips += 1
            self.console(f"warning: {where}: {what}{batch}; skipped ({self.nonfinite_skips}/{self.max_nonfinite_skips})")
            return
        from medsft.errors import TrainingStopped

        raise TrainingStopped(f"{where}: {what}{batch}; training stopped, the checkpoints so far are kept")

    def _warn_on_spike(self, loss: float) -> None:
        """A logged train loss far above its recent median is worth a look (bad batch, too high a rate)."""
        if self.loss_spike_factor and self.recent_losses:
            typical = sorted(self.recent_losses)[len(self.recent_losses) // 2]
            if typical > 0 and loss > self.loss_spike_factor * typical:
                self.console(f"warning: step {self.step_offset + self.state.global_step} (stage {self.stage}): "
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
            for i, name in enumerate(self.source_names):
                if counts[i] > 0:
                    logs[f"train_loss/{name}"] = float(sums[i] / counts[i])
                    self.last_train_losses[name] = logs[f"train_loss/{name}"]
            self._stage_loss += float(sums.sum())
            self._stage_tokens += float(counts.sum())
            self._loss_sums.zero_()
            self._token_counts.zero_()
            logs["supervised_tokens_seen"] = int(self._supervised_total)
        elif "train_samples_per_second" in logs:  # the summary at the end of train(): the stage's mean loss
            pending_loss, pending_tokens = float(self._loss_sums.sum()), float(self._token_counts.sum())
            if self._stage_tokens + pending_tokens > 0:
                logs["train_loss"] = (self._stage_loss + pending_loss) / (self._stage_tokens + pending_tokens)
        super().log(logs, start_time)

    # ---- checkpoints: atomic, with medsft's own state, pruned without losing the newest or the best ----
    def _get_output_dir(self, trial):
        return self._staging or super()._get_output_dir(trial)

    def _save_checkpoint(self, model, trial) -> None:
        stage_dir = Path(self.args.output_dir)
        final = stage_dir / f"checkpoint-{self.state.global_step}"
        staging = checkpoint.staging_folder(final, clear=self.args.should_save)
        self._staging = str(staging)  # the Trainer writes staging/checkpoint-N
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self._staging = None
        self.accelerator.wait_for_everyone()  # every rank's shards are written before the rename
        if self.args.should_save:
            state = json.dumps(self.resume_state(), ensure_ascii=False)
            (staging / final.name / checkpoint.STATE).write_text(state, encoding="utf-8")
            checkpoint.publish(staging, final)
            if self.keep_checkpoints:
                checkpoint.prune(stage_dir, self.keep_checkpoints, self.protected_checkpoints())

    def resume_state(self) -> dict:
        """What medsft adds to a checkpoint, so that a resumed run continues exactly from it."""
        metrics = self.run_dir / "metrics.jsonl"
        samples = self.run_dir / "monitor" / "samples.jsonl"
        return {
            "stage": self.stage,
            "stage_step": self.state.global_step,
            "step": self.step_offset + self.state.global_step,
            "metrics_bytes": metrics.stat().st_size if metrics.exists() else 0,
            "samples_bytes": samples.stat().st_size if samples.exists() else 0,
            "run_seconds": time.time() - self.run_started,
            "trainer": {
                "loss_sums": self._loss_sums.tolist(),
                "token_counts": self._token_counts.tolist(),
                "supervised_total": int(self._supervised_total),
                "stage_loss": self._stage_loss,
                "stage_tokens": self._stage_tokens,
                "last_train_losses": self.last_train_losses,
                "recent_losses": self.recent_losses,
                "nonfinite_skips": self.nonfinite_skips,
            },
            "monitor": self.monitor.state() if self.monitor is not None else None,
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

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        """Token-weighted validation loss per source (and over all of them), then the monitor's probes.

        Evaluation runs on a forked RNG: how often a run is evaluated or probed never changes what it
        trains (data loaders and generation would otherwise draw from the global generator)."""
        devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
        with torch.random.fork_rng(devices=devices):
            return self._evaluate_now(metric_key_prefix)

    @torch.no_grad()
    def _evaluate_now(self, metric_key_prefix: str) -> dict[str, float]:
        model = self.model
        was_training = model.training
        model.eval()
        metrics: dict[str, float] = {}
        total_loss, total_tokens = 0.0, 0
        for name, dataset in self.val_sets.items():
            loss_sum, tokens = 0.0, 0
            for batch in self.get_eval_dataloader(dataset):
                batch = self._prepare_inputs(batch)
                losses, mask, _ = token_losses(model, batch)
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
        if self.monitor is not None:
            losses = {k.split("/", 1)[1]: v for k, v in metrics.items() if "/" in k}
            metrics.update(self.monitor.probe(model, self.step_offset + self.state.global_step, self.stage,
                                              self.state.global_step, losses, dict(self.last_train_losses)))
        if was_training:
            model.train()
        if metrics:
            self.log(metrics)
        if self.monitor is not None:
            self._report_verdicts()
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics


    def _report_verdicts(self) -> None:
        """Console and metrics.jsonl hear of each source that starts memorizing; optionally stop."""
        for line in self.monitor.update_verdicts():
            self.console(f"warning: {line}")
            self.log({"verdict": line})
            if self.monitor.config.early_stop:
                self.console("stopping early (monitor.early_stop)")
                self.control.should_training_stop = True


class _NonFiniteGradientGuard(TrainerCallback):
    """Before each optimizer step: a NaN/inf gradient stops the run, or zeroes the step (skip)."""

    def __init__(self, trainer: MedsftTrainer):
        self.trainer = trainer

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        model = self.trainer.model
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        # One device sync for the whole check, not one per tensor.
        if grads and not bool(torch.stack([torch.isfinite(g).all() for g in grads]).all()):
            self.trainer.nonfinite("non-finite gradient")
            model.zero_grad()  # skip: the optimizer sees a zero gradient for this step


class MetricsWriter(TrainerCallback):
    """Appends every log event to metrics.jsonl, tagged with the stage and the run-wide step."""

    RENAME = {"loss": "train_loss"}
    EVAL_PREFIXES = ("eval_", "general/", "domain/", "knowledge/", "choice/", "probes/")

    def __init__(self, path: Path, stage: str, step_offset: int):
        self.path = path
        self.stage = stage
        self.step_offset = step_offset

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        if "verdict" in logs:
            event = "verdict"
        elif any(k.startswith(self.EVAL_PREFIXES) for k in logs):
            event = "eval"
        elif "train_samples_per_second" in logs:  # the Trainer's summary at the end of train()
            event = "stage_end"
        else:
            event = "train"
        record = {"event": event, "stage": self.stage, "step": self.step_offset + state.global_step,
                  "stage_step": state.global_step, "time": round(time.time(), 3)}
        for key, value in logs.items():
            record[self.RENAME.get(key, key)] = value
        with open(self.path, "a", encoding="utf-8") as out:
            out.write(json.dumps(record) + "\n")
