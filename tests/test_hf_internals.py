"""What medsft relies on in transformers' Trainer beyond its documented hooks (train/hf_internals.py),
and in peft's LoRA layer (models._lora_forward_fused).

Each test fails loudly, with what changed, when a transformers or peft release changes one of them."""

from __future__ import annotations

import inspect

from transformers import Trainer, TrainerCallback, TrainerControl, TrainerState, TrainingArguments
from transformers.trainer_callback import CallbackHandler, DefaultFlowCallback

from medsft.train.hf_internals import micro_batches_this_step


def test_trainer_reads_model_accepts_loss_kwargs_to_count_tokens_over_accumulation():
    assert "self.model_accepts_loss_kwargs" in inspect.getsource(Trainer._get_num_items_in_batch), \
        "Trainer no longer decides from model_accepts_loss_kwargs whether to count num_items_in_batch"
    assert "num_items_in_batch" in inspect.signature(Trainer.compute_loss).parameters


def test_trainer_honours_loss_is_scaled_for_ga():
    assert hasattr(Trainer, "loss_is_scaled_for_ga"), "Trainer.loss_is_scaled_for_ga is gone"
    assert "self.loss_is_scaled_for_ga" in inspect.getsource(Trainer.training_step), \
        "training_step no longer reads loss_is_scaled_for_ga: the loss may be divided by the accumulation steps twice"


def test_trainer_counts_the_micro_batches_of_each_step(tmp_path):
    """train.on_policy divides its per-micro-batch mean by the step's micro-batches, as the Trainer does:
    6 micro-batches at accumulation 4 make a step of 4 and a last, short step of 2."""
    import torch

    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x, labels=None):
            return {"loss": ((self.weight * x - labels) ** 2).mean()}

    seen = []

    class Counting(Trainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            seen.append(micro_batches_this_step(self))
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

    data = [{"x": torch.tensor([float(i)]), "labels": torch.tensor([1.0])} for i in range(6)]
    args = TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=1, gradient_accumulation_steps=4,
                             num_train_epochs=1, report_to=[], use_cpu=True, save_strategy="no", logging_strategy="no")
    Counting(model=Tiny(), args=args, train_dataset=data).train()
    assert seen == [4, 4, 4, 4, 2, 2], "Trainer no longer tells how many micro-batches the step being accumulated has"


def test_callback_handler_on_evaluate_takes_metrics_and_clears_should_evaluate(tmp_path):
    seen = []

    class Listener(TrainerCallback):
        def on_evaluate(self, args, state, control, metrics=None, **kwargs):
            seen.append(metrics)

    handler = CallbackHandler([Listener()], None, None, None, None)
    control = TrainerControl(should_evaluate=True)
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to=[])
    control = handler.on_evaluate(args, TrainerState(), control, {"eval_loss": 1.0})
    assert seen == [{"eval_loss": 1.0}] and control.should_evaluate is False


def test_with_eval_strategy_no_the_default_flow_never_asks_for_evaluation(tmp_path):
    """medsft schedules evaluation itself (EvaluateEvery); the Trainer's flow must not add its own."""
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to=[], eval_strategy="no")
    state = TrainerState(global_step=10, max_steps=10)
    control = DefaultFlowCallback().on_step_end(args, state, TrainerControl())
    assert control.should_evaluate is False


def test_on_save_runs_after_the_checkpoint_is_written():
    """SealCheckpoints writes the manifest in on_save: the checkpoint's files must exist by then."""
    source = inspect.getsource(Trainer._maybe_log_save_evaluate)
    save, notify = source.find("self._save_checkpoint("), source.find("on_save(")
    assert 0 <= save < notify, "Trainer no longer calls on_save after _save_checkpoint"


def test_peft_s_lora_forward_is_what_medsft_s_fused_forward_computes():
    """models._lora_forward_fused computes what peft's LoRA Linear.forward computes for one plain adapter
    (base(x) + B(A(dropout(x)))·s over an input cast to the adapter's dtype) and hands every other case
    back to it. A peft release that changes that forward's arithmetic or its cases fails here."""
    from peft.tuners.lora.layer import Linear

    source = inspect.getsource(Linear.forward)
    for line in ("if self.disable_adapters:", "elif adapter_names is not None:", "elif self.merged:",
                 "x = self._cast_input_dtype(x, lora_A.weight.dtype)",
                 "if active_adapter not in self.lora_variant:  # vanilla LoRA",
                 "result = result + lora_B(lora_A(dropout(x))) * scaling",
                 "result = result.to(torch_result_dtype)"):
        assert line in source, f"peft's LoRA Linear.forward no longer has {line!r}: check models._lora_forward_fused"
    assignments = [line.strip() for line in source.splitlines() if line.strip().startswith("result = ")]
    assert len(assignments) == 7, f"peft's LoRA Linear.forward computes its result differently now: {assignments}"
