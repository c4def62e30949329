"""Every use medsft makes of the HF Trainer beyond its documented hooks, in one place.

medsft subclasses `transformers.Trainer` and overrides public methods only (`compute_loss`, `log`,
`evaluate`), plus callbacks. Three things have no public form; they are here, and
`tests/test_hf_internals.py` fails loudly when a transformers release changes them:

- `model_accepts_loss_kwargs = True`: makes the Trainer count the supervised tokens of the whole
  accumulated batch (`num_items_in_batch`) and pass them to `compute_loss`, so the loss is the
  exact mean over supervised tokens under gradient accumulation.
- `loss_is_scaled_for_ga`: documented on the Trainer class for subclasses that compute their own
  loss; set per micro-batch by `compute_loss`.
- `callback_handler.on_evaluate`: an overridden `evaluate` must tell the callbacks itself (the
  Trainer's own evaluation loop does this inside `evaluate`).
- `current_gradient_accumulation_steps`: how many micro-batches the step being accumulated has (fewer
  than `gradient_accumulation_steps` on a stage's last, short window); what the Trainer divides by.
"""

from __future__ import annotations


def count_tokens_over_accumulation(trainer) -> None:
    """Ask the Trainer for `num_items_in_batch` (supervised tokens of the accumulated batch)."""
    trainer.model_accepts_loss_kwargs = True


def say_loss_is_scaled(trainer, scaled: bool) -> None:
    """Whether `compute_loss` already divided by the accumulated token count (else the Trainer
    divides by the accumulation steps)."""
    trainer.loss_is_scaled_for_ga = scaled


def micro_batches_this_step(trainer) -> int:
    """Micro-batches the optimizer step being accumulated has (the last one of an epoch may have fewer)."""
    return getattr(trainer, "current_gradient_accumulation_steps", trainer.args.gradient_accumulation_steps)


def notify_evaluate(trainer, metrics: dict) -> None:
    """Run the callbacks' `on_evaluate`, as the Trainer's own `evaluate` does."""
    trainer.control = trainer.callback_handler.on_evaluate(trainer.args, trainer.state, trainer.control, metrics)
