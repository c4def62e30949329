"""TRL's SFTTrainer on the benchmark's model and records, run inside TRL's own venv by peers.py.

Assistant-only loss through TRL's own path (a chat template with {% generation %} markers, TRL
tokenizes the messages); padded, or padding-free with --padding-free. Writes one JSON file: the
loss and wall time of each logged step, and what each batch held (batches.py), so that peers.py
can check it trained on medsft's exact samples.

    python trl_sft.py --model DIR --data ordered.jsonl --steps 40 --batch 8 [--padding-free] --out result.json
"""

from __future__ import annotations

import json
from pathlib import Path

import peft
import torch
import transformers
import trl
from batches import batch_samples, describe
from datasets import load_dataset
from peft import LoraConfig
from runner import StepLog, command_line
from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed
from trl import SFTConfig, SFTTrainer

# ChatML as medsft's `chatml` template renders it (no default system prompt): the answer and its
# <|im_end|> are supervised, the newline after it is not, and the last answer has none (medsft
# encodes no separator after the last turn). SmolLM2's own template has no {% generation %}
# markers, which TRL's assistant-only loss needs.
CHATML_TRAINING = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'assistant' -%}"
    "{{- '<|im_start|>assistant\\n' -}}{% generation %}{{- message['content'] + '<|im_end|>' -}}{% endgeneration %}"
    "{%- if not loop.last -%}{{- '\\n' -}}{%- endif -%}"
    "{%- else -%}{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)


class CountingCollator:
    """The trainer's own collator, with a record of each batch it built (in dataloader order)."""

    def __init__(self, collator, batches: list):
        self.collator = collator
        self.batches = batches

    def __call__(self, features):
        batch = self.collator(features)
        self.batches.append(describe(batch_samples(batch)))
        return batch


def config(args) -> SFTConfig:
    # Every field that differs from medsft's run, or whose TRL default differs from HF's, is set here.
    return SFTConfig(
        output_dir=str(Path(args.out).parent / "trl-output"),
        max_steps=args.steps,
        per_device_train_batch_size=args.batch,
        gradient_accumulation_steps=1,
        learning_rate=2e-4,
        lr_scheduler_type="constant",
        warmup_steps=0,
        weight_decay=0.0,
        max_grad_norm=1.0,
        logging_steps=1,
        save_strategy="no",
        eval_strategy="no",
        report_to="none",
        bf16=False,  # TRL's default is bf16; the benchmark is fp32 throughout
        fp16=False,
        gradient_checkpointing=False,  # TRL's default is on; medsft's is off
        assistant_only_loss=True,
        padding_free=args.padding_free,
        # TRL refuses max_length with padding_free and no packing; every record is already under 1024 tokens
        max_length=None if args.padding_free else 1024,
        shuffle_dataset=False,
        train_sampling_strategy="sequential",  # medsft's order, as written in the data file
        seed=42,
        data_seed=42,
        dataloader_num_workers=0,
        use_cpu=not torch.cuda.is_available(),
    )


def main() -> None:
    args = command_line()
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    tokenizer.chat_template = CHATML_TRAINING
    set_seed(42)  # as medsft does right before loading, so the LoRA A matrices may start alike
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    lora = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
    dataset = load_dataset("json", data_files=args.data, split="train")
    trainer = SFTTrainer(model=model, args=config(args), train_dataset=dataset, processing_class=tokenizer,
                         peft_config=lora)
    steps, batches = StepLog(), []
    trainer.add_callback(steps)
    trainer.data_collator = CountingCollator(trainer.data_collator, batches)
    trainer.train()
    result = {"steps": steps.steps, "batches": batches[: args.steps],
              "versions": {"trl": trl.__version__, "transformers": transformers.__version__,
                           "peft": peft.__version__, "torch": torch.__version__}}
    Path(args.out).write_text(json.dumps(result), encoding="utf-8")


if __name__ == "__main__":
    main()
