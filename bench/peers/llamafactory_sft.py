"""LLaMA-Factory's SFT on the benchmark's model and records, run inside its own venv by peers.py.

LoRA through `llamafactory.train.tuner.run_exp`, padded, or with `neat_packing` (--padding-free):
samples packed into rows of `cutoff_len` tokens, each attending only to itself. The template is
LLaMA-Factory's chatml with one change, so that its samples are medsft's token for token: the
newline between turns belongs to the next turn's prompt (unsupervised), not to the answer before
it (LLaMA-Factory's own chatml supervises it and ends the last answer with it). Writes one JSON
file: the loss and wall time of each logged step, and what each batch held (batches.py), counted
from the features the collator receives (a packed row split at its segment numbers).

    python llamafactory_sft.py --model DIR --data ordered.jsonl --steps 40 --batch 8 [--padding-free] --out result.json

With --padding-free the steps are however many the packed rows make (the same records, fewer and
larger batches): the comparison is by tokens, not by steps.
"""

from __future__ import annotations

import json
from pathlib import Path

import llamafactory
import peft
import torch
import transformers
from batches import describe
from llamafactory.data import collator as lf_collator
from llamafactory.data import template as lf_template
from llamafactory.data.formatter import EmptyFormatter, StringFormatter
from llamafactory.train.tuner import run_exp
from runner import StepLog, command_line

TEMPLATE = "medsft_chatml"


class SeparatedTemplate(lf_template.Template):
    """chatml with the newline between turns put before the next user turn, not after the answer."""

    def _encode(self, tokenizer, messages, system, tools):
        encoded = super()._encode(tokenizer, messages, system, tools)
        newline = tokenizer.encode("\n", add_special_tokens=False)
        return [newline + ids if i > 0 and i % 2 == 0 else ids for i, ids in enumerate(encoded)]


def register() -> None:
    lf_template.register_template(
        name=TEMPLATE,
        format_user=StringFormatter(slots=["<|im_start|>user\n{{content}}<|im_end|>\n<|im_start|>assistant\n"]),
        format_assistant=StringFormatter(slots=["{{content}}<|im_end|>"]),
        format_system=StringFormatter(slots=["<|im_start|>system\n{{content}}<|im_end|>\n"]),
        format_prefix=EmptyFormatter(),
        stop_words=["<|im_end|>"],
        replace_eos=True,
        template_class=SeparatedTemplate,
    )


def count_batches(batches: list) -> None:
    """Record each batch's samples from the features the collator gets (before its 4D mask)."""
    original = lf_collator.SFTDataCollatorWith4DAttentionMask.__call__

    def counting(self, features):
        samples = []
        for feature in features:
            ids, labels = list(feature["input_ids"]), list(feature["labels"])
            segments = list(feature.get("attention_mask") or [1] * len(ids))
            start = 0
            for end in range(1, len(ids) + 1):  # a packed row numbers its samples 1, 2, ...; 0 is padding
                if end == len(ids) or segments[end] != segments[start]:
                    if segments[start]:
                        samples.append((ids[start:end], labels[start:end]))
                    start = end
        batches.append(describe(samples) | {"sample_digests": [describe([s])["digest"] for s in samples]})
        return original(self, features)

    lf_collator.SFTDataCollatorWith4DAttentionMask.__call__ = counting


def arguments(args, dataset_dir: Path) -> dict:
    # Every field that differs from medsft's run, or whose LLaMA-Factory default differs from HF's, is set here.
    return {
        "model_name_or_path": args.model,
        "stage": "sft",
        "do_train": True,
        "finetuning_type": "lora",
        "lora_rank": 8,
        "lora_alpha": 16,
        "lora_dropout": 0.0,
        "lora_target": "all",
        "dataset": "bench",
        "dataset_dir": str(dataset_dir),
        "template": TEMPLATE,
        "cutoff_len": 1024,
        "neat_packing": args.padding_free,
        "packing": args.padding_free,
        "preprocessing_num_workers": None,
        "overwrite_cache": True,
        "disable_shuffling": True,  # medsft's order, as written in the data file
        "output_dir": str(Path(args.out).parent / "llamafactory-output"),
        "overwrite_output_dir": True,
        "per_device_train_batch_size": args.batch,
        "gradient_accumulation_steps": 1,
        "learning_rate": 2e-4,
        "lr_scheduler_type": "constant",
        "warmup_steps": 0,
        "weight_decay": 0.0,
        "max_grad_norm": 1.0,
        "num_train_epochs": 1.0,
        "max_steps": -1 if args.padding_free else args.steps,
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": "none",
        "bf16": False,
        "fp16": False,
        "plot_loss": False,
        "seed": 42,
        "data_seed": 42,
        "dataloader_num_workers": 0,
        "use_cpu": not torch.cuda.is_available(),
        "flash_attn": "sdpa",
    }


def main() -> None:
    args = command_line()
    dataset_dir = Path(args.out).parent / "llamafactory-data"
    dataset_dir.mkdir(parents=True, exist_ok=True)
    # The records the padded run's steps use (steps x batch), all of them for packing.
    lines = Path(args.data).read_text(encoding="utf-8").splitlines()[: args.steps * args.batch]
    (dataset_dir / "bench.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    info = {"bench": {"file_name": "bench.jsonl", "formatting": "sharegpt", "columns": {"messages": "messages"},
                      "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                               "assistant_tag": "assistant", "system_tag": "system"}}}
    (dataset_dir / "dataset_info.json").write_text(json.dumps(info), encoding="utf-8")
    register()
    steps, batches = StepLog(), []
    count_batches(batches)
    run_exp(arguments(args, dataset_dir), callbacks=[steps])
    result = {"steps": steps.steps, "batches": batches if args.padding_free else batches[: args.steps],
              "packed": args.padding_free,
              "versions": {"llamafactory": llamafactory.__version__, "transformers": transformers.__version__,
                           "peft": peft.__version__, "torch": torch.__version__}}
    Path(args.out).write_text(json.dumps(result), encoding="utf-8")


if __name__ == "__main__":
    main()
