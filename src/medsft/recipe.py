"""The Recipe: everything a run needs, validated before any model is loaded.

Every field is documented once, here; `medsft train --help-recipe` and the README's recipe
reference come from these descriptions. Relative paths are relative to the current directory.
"""

from __future__ import annotations

import copy
import json
import re
import typing
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from medsft.errors import UserError

TEMPLATE_NAMES = (
    "tokenizer",
    "qwen",
    "chatml",
    "baichuan",
    "baichuan2",
    "llama2",
    "llama3",
    "mistral",
    "vicuna",
    "alpaca",
    "qwen3",
    "deepseek3",
    "glm4",
    "chatglm3",
    "intern2",
    "yi",
    "gemma",
    "phi3",
    "llama2-zh",
)


class _Section(BaseModel):
    # Unknown keys are errors: a typo like `learning_rat` must not be silently ignored.
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelConfig(_Section):
    name_or_path: str = Field(description="Local folder or hub id of the base chat model.")
    template: Literal[TEMPLATE_NAMES] = Field(  # type: ignore[valid-type]
        "tokenizer",
        description="Chat template: a built-in one (qwen, qwen3, chatml, baichuan, baichuan2, llama2, llama2-zh, "
        "llama3, mistral, vicuna, alpaca, deepseek3, glm4, chatglm3, intern2, yi, gemma, phi3) or `tokenizer` for "
        "the tokenizer's own chat template.",
    )
    trust_remote_code: bool = Field(
        False, description="Run the model folder's own Python code (Baichuan needs it). Off unless set."
    )
    allow_pickle_weights: bool = Field(
        False,
        description="Load a model that has only pickle (.bin) weights. Unpickling can run code: "
        "only for checkpoints you trust (Baichuan2 ships .bin). Off: safetensors only.",
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="Weights dtype: `auto` is bf16 on a GPU that supports it, fp32 on CPU."
    )
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2"] | None = Field(
        None, description="Attention kernel; default lets transformers choose (sdpa)."
    )
    system_prompt: str | None = Field(
        None, description="System prompt for records that have none; default: the template's own."
    )
    enable_thinking: bool = Field(
        True, description="Reasoning templates (qwen3): an answer with no <think> reasoning is trained with an "
        "empty think block the model learns to write (true, Qwen3's default mode), or with the block given in the "
        "prompt, as Qwen3 is prompted with enable_thinking=False (false). Answers that open with "
        "<think>...</think> (or have reasoning_content) are always trained with their reasoning.")
    quantization: Literal["4bit", "8bit"] | None = Field(
        None, description="Load the base weights quantized (QLoRA: 4bit NF4 with bf16 compute; or 8bit) and train "
        "a LoRA adapter on top. Needs a CUDA GPU and bitsandbytes (pip install 'medsft[gpu]'); LoRA only.")
    rope_scaling: dict[str, Any] | None = Field(
        None, description="RoPE scaling for contexts longer than the model was trained on, set on the model's "
        "config, e.g. {rope_type: linear, factor: 2.0} (or yarn, dynamic, with their own keys).")

    @field_validator("rope_scaling")
    @classmethod
    def _rope_type_given(cls, value):
        if value is None:
            return value
        kind = value.get("rope_type", value.get("type"))
        if not isinstance(kind, str) or kind == "default":
            raise ValueError("needs a rope_type (linear, dynamic, yarn, llama3, longrope) with that type's keys, "
                             "e.g. {rope_type: linear, factor: 2.0}")
        factor = value.get("factor")
        if factor is not None and (isinstance(factor, bool) or not isinstance(factor, (int, float)) or factor < 1):
            raise ValueError(f"factor must be a number >= 1 (how many times the trained context), got {factor!r}")
        return value


class LoraSection(_Section):
    rank: int = Field(8, ge=1, description="LoRA rank r.")
    alpha: float = Field(16, gt=0, description="LoRA alpha; the update is scaled by alpha/rank.")
    dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the LoRA input.")
    target_modules: str | list[str] = Field(
        "all-linear",
        description="`all-linear`, or module names such as [q_proj, v_proj] or Baichuan's [W_pack, o_proj].",
    )
    rslora: bool = Field(False, description="Rank-stabilized LoRA: scale by alpha/sqrt(rank).")
    dora: bool = Field(False, description="Weight-decomposed LoRA (DoRA).")
    modules_to_save: list[str] | None = Field(
        None, description="Modules trained in full next to the adapter, e.g. [embed_tokens, lm_head]."
    )
    init_from: str | None = Field(
        None, description="Continue training an existing adapter folder (adapter_config.json and weights) instead "
        "of a fresh one; its rank, alpha and target modules are the adapter's own, the fields above are not used.")


class FinetuneConfig(_Section):
    method: Literal["lora", "full"] = Field("lora", description="`lora` trains an adapter; `full` all weights.")
    lora: LoraSection = Field(default_factory=LoraSection, description="LoRA settings (method: lora).")
    layers: str | list[int] | None = Field(
        None, description='Train only these decoder layers (0-based): "8-" (8 to the last), "4-11", "-5", or a '
        "list [8, 9, 10]; the others stay frozen (with layer 0 frozen, the embeddings too). Leaving the lowest "
        "layers frozen is reported to reduce forgetting. Default: all layers.")

    @field_validator("layers")
    @classmethod
    def _layer_range(cls, value):
        if isinstance(value, str) and not re.fullmatch(r"\s*\d*\s*-\s*\d*\s*|\s*\d+\s*", value) or value == "-":
            raise ValueError('a range such as "8-", "4-11", "-5", or a list of layer numbers')
        if isinstance(value, list) and (not value or min(value) < 0):
            raise ValueError("a non-empty list of layer numbers from 0")
        return value


class RewriteConfig(_Section):
    url: str | None = Field(None, description="An OpenAI-compatible endpoint's base URL, e.g. "
                            "http://127.0.0.1:8000/v1 (`medsft serve` is one).")
    model: str | None = Field(None, description="The endpoint's model name.")
    api_key_env: str = Field("OPENAI_API_KEY", description="Environment variable holding the endpoint's key "
                             "(keys never go in a recipe).")
    model_path: str | None = Field(None, description="Instead of an endpoint: a local model folder, run "
                                   "through medsft's own batched generation.")
    temperature: float = Field(0.8, ge=0, le=2, description="Sampling temperature of the rewrites.")
    max_new_tokens: int = Field(96, ge=8, description="Longest rewrite, in tokens.")


class AugmentConfig(_Section):
    augmenters: list[Literal["rephrase", "restate", "synonyms", "statements", "multiturn", "shuffle", "rewrite"]] = Field(
        default_factory=lambda: ["rephrase", "statements", "shuffle"],
        description="rephrase: the question in other forms and voices; restate: a terse answer as full "
        "sentences naming the subject; synonyms: dictionary words swapped in the questions; statements: QA "
        "about one subject joined into passages in several orders; multiturn: the same QA as follow-up "
        "questions in one conversation; shuffle: a long answer's sentences reordered; rewrite: a model "
        "paraphrases (needs `rewrite`), each rewrite fact-checked.",
    )
    per_record: int = Field(4, ge=1, description="New records per original record and augmenter, at most.")
    seed: int = Field(0, description="Augmentation is deterministic for a seed.")
    rules_file: str | None = Field(None, description="YAML file of extra rephrasing rules ({en: [[pattern, "
                                   "[replacement, ...]]], zh: [...]}).")
    synonyms_file: str | None = Field(None, description="YAML file of extra synonym groups ({en: [[word, "
                                      "synonym, ...]], zh: [...]}), added to the built-in list.")
    rewrite: RewriteConfig | None = Field(None, description="The model the `rewrite` augmenter asks.")


class SelfDistillConfig(_Section):
    mode: Literal["replace", "join"] = Field(
        "replace", description="`replace`: the base model's answers take the place of the file's (training "
        "records only); `join`: they are added beside them.")
    max_new_tokens: int = Field(256, ge=8, description="Longest answer the base model may give; answers it "
                                "does not finish keep the file's answer.")
    batch_size: int = Field(16, ge=1, description="Prompts generated at once.")


class SourceConfig(_Section):
    name: str = Field(description="Short name used in stage weights, metrics and the manifest.")
    path: str = Field(description="A file (.json, .jsonl, .csv, .parquet), a folder read recursively, a folder "
                      "saved by datasets' save_to_disk, or `hf:NAME[:SPLIT]` (datasets.load_dataset: a hub id or "
                      "a local dataset folder; split `train` by default).")
    format: Literal["auto", "alpaca", "sharegpt", "messages"] = Field(
        "auto", description="Record layout: `alpaca` (instruction, input, output; optional system, history, tools), "
        "`sharegpt` (conversations of from/value turns; optional system, tools), `messages` (OpenAI "
        "role/content messages; optional tools), or `auto`: detected per file from its first recognizable record."
    )
    role: Literal["domain", "general"] = Field(
        "domain", description="What the source teaches: domain knowledge or general ability."
    )
    max_samples: int | None = Field(
        None, ge=1, description="Use only the first N usable records of this source (file order); the rest are "
        "not read (counted as not_read_max_samples in the manifest).")
    split: Literal["auto", "train", "validation"] = Field(
        "auto", description="`auto`: data.val_fraction of the records held out by a hash of their content; "
        "`validation`: a fixed dev set, every record held out (its loss is eval_loss/<name>; a domain one also "
        "feeds the domain probes), never trained on; `train`: every record trained on, none held out.")
    augment: AugmentConfig | None = Field(
        None, description="Augment this source's training records (never its validation records) before "
        "encoding: more question wordings and the facts in more contexts, never a changed fact.",
    )
    self_distill: SelfDistillConfig | None = Field(
        None, description="Before training, the base model answers this source's prompts (batched, cached by "
        "content hash, resumable), so replay carries the base model's own style and length; `true` for the "
        "defaults. Validation records keep the file's answers.")
    replace: dict[str, str] = Field(
        default_factory=dict,
        description='Text replaced in every message of this source before training, e.g. '
        '`{"{{name}}": "MedBot", "{{author}}": "City Hospital"}` for identity data with placeholders.',
    )

    @field_validator("self_distill", mode="before")
    @classmethod
    def _self_distill_flag(cls, value):
        return {} if value is True else None if value is False else value

    @field_validator("name")
    @classmethod
    def _plain_name(cls, v: str) -> str:
        if not v or not all(c.isalnum() or c in "-_." for c in v):
            raise ValueError(f"source name {v!r} must be letters, digits, '-', '_' or '.'")
        return v


class DataConfig(_Section):
    sources: list[SourceConfig] = Field(min_length=1, description="The data sources.")
    ratio_by: Literal["samples", "tokens"] = Field(
        "samples", description="Whether stage weights count records or tokens."
    )
    max_length: int = Field(1024, ge=16, description="Longest sequence in tokens; later turns are dropped to fit.")
    val_fraction: float = Field(
        0.02, ge=0, lt=1, description="Share of each source held out for validation (stable hash per record)."
    )
    on_bad_record: Literal["fail", "skip"] = Field(
        "fail", description="`fail` stops at the first malformed record; `skip` writes it to rejects.jsonl."
    )
    too_long: Literal["drop", "truncate"] = Field(
        "drop", description="A record whose first exchange (under last_assistant: last exchange) does not fit "
        "max_length: `drop` it (listed in rejects.jsonl), or `truncate` its answer to fit (the cut answer's end "
        "token is not trained; counted as answers_truncated in the manifest).")
    train_on: Literal["all_assistant", "last_assistant", "all"] = Field(
        "all_assistant", description="Which tokens carry loss: every assistant turn, the last one only, or "
        "`all` (prompts too, for completion-style data)."
    )
    cache_dir: str | None = Field(
        None, description="Where encoded sets are cached by content hash; default $MEDSFT_CACHE or ~/.cache/medsft."
    )


class AdaptiveConfig(_Section):
    general_share: list[float] = Field(
        default_factory=lambda: [0.1, 0.5], min_length=2, max_length=2,
        description="[lowest, highest] share of the general sources the controller may set.")
    step: float = Field(0.1, gt=0, le=0.5, description="How far one decision moves the general share.")
    min_general_retention: float = Field(
        0.95, ge=0, description="General accuracy (share of the base's) below this raises the general share.")
    min_length_ratio: float = Field(
        0.9, ge=0, description="General answer length (share of the base's) below this raises the general share.")
    min_domain_gain: float = Field(
        0.005, ge=0, description="A domain score rising less than this between evaluations, while general "
        "ability holds, lowers the general share.")

    @field_validator("general_share")
    @classmethod
    def _bounds(cls, v: list[float]) -> list[float]:
        if not 0 < v[0] <= v[1] < 1:
            raise ValueError("[lowest, highest] with 0 < lowest <= highest < 1")
        return v


class StageConfig(_Section):
    name: str = Field(description="Stage name, carried by every metric of the stage.")
    weights: dict[str, float] | None = Field(
        None,
        description="Mix by source name, e.g. {medical: 0.7, general: 0.3} (normalized to sum 1). "
        "Omitted: every source once per epoch, unmixed.",
    )
    epochs: float = Field(1.0, gt=0, description="Passes over the anchor source (the one with the largest weight).")
    anchor: str | None = Field(None, description="Source that defines an epoch; default the largest weight.")
    max_steps: int | None = Field(None, ge=1, description="Cap on optimizer steps for this stage (smoke runs).")
    learning_rate: float | None = Field(None, gt=0, le=1, description="This stage's learning rate; default train.learning_rate.")
    adaptive: AdaptiveConfig | None = Field(
        None, description="Let the monitor move the domain:general weights at each evaluation, within bounds: "
        "general retention or answer length below target raises the general share; a flat domain score while "
        "general ability holds lowers it. Needs monitor.eval_every and general probes.")

    @field_validator("weights")
    @classmethod
    def _positive(cls, v: dict[str, float] | None) -> dict[str, float] | None:
        if v is None:
            return v
        if not v:
            raise ValueError("weights must name at least one source")
        bad = [k for k, w in v.items() if not w > 0]
        if bad:
            raise ValueError(f"weight of {bad[0]!r} must be > 0")
        total = sum(v.values())
        return {k: w / total for k, w in v.items()}


class OnPolicyConfig(_Section):
    weight: float = Field(1.0, gt=0, description="Weight of the on-policy term in the loss (its mean per token).")
    every: int = Field(40, ge=1, description="The tuned model answers a fresh draw of general prompts every N "
                       "optimizer steps (and before the first).")
    prompts: int = Field(64, ge=1, description="General prompts answered at each draw.")
    per_batch: int = Field(4, ge=1, description="Answers from the current draw added to each micro-batch "
                           "(taken in turn).")
    max_new_tokens: int = Field(96, ge=4, description="Longest answer the tuned model gives at a draw.")
    batch_size: int = Field(32, ge=1, description="Prompts generated at once.")


class TrainConfig(_Section):
    learning_rate: float = Field(2e-4, gt=0, le=1, description="Peak learning rate.")
    batch_size: int = Field(4, ge=1, description="Sequences per device per step.")
    grad_accum: int = Field(1, ge=1, description="Gradient accumulation steps.")
    scheduler: Literal["cosine", "linear", "constant", "constant_with_warmup"] = Field(
        "cosine", description="Learning-rate schedule within each stage."
    )
    warmup_ratio: float = Field(0.03, ge=0, lt=1, description="Share of a stage's steps spent warming up.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient clipping norm.")
    seed: int = Field(42, description="Seed for data order, splits' shuffles and initialization.")
    logging_steps: int = Field(10, ge=1, description="Train metrics every N optimizer steps.")
    save_steps: int | None = Field(None, ge=1, description="Checkpoint every N steps; default: end of each stage.")
    save_total_limit: int | None = Field(None, ge=1, description="Keep at most N checkpoints per stage; never the newest, nor the one selection keeps.")
    gradient_checkpointing: bool = Field(False, description="Trade compute for memory.")
    on_nonfinite: Literal["stop", "skip"] = Field(
        "stop", description="A NaN/inf loss or gradient: `stop` (the checkpoints so far are kept) or `skip` the step."
    )
    max_nonfinite_skips: int = Field(10, ge=0, description="With on_nonfinite: skip, stop after this many skips.")
    loss_spike_factor: float = Field(
        5.0, ge=0, description="Warn when the train loss exceeds this multiple of its recent median (0: never)."
    )
    report_to: Literal["none", "tensorboard"] = Field("none", description="Live logging besides metrics.jsonl.")
    kl_to_base: float = Field(
        0.0, ge=0, description="Anchored replay: add this weight times KL(base || tuned), the base model's "
        "next-token distribution against the tuned one's on the supervised tokens, to the loss. LoRA computes "
        "the base with the adapter switched off (no second copy); full fine-tuning keeps a frozen copy of the "
        "base (twice the weights' memory). 0: off.")
    kl_on: Literal["general", "all"] = Field(
        "general", description="Which batches' records the KL term covers: those of `general` sources, or `all`.")
    on_policy: OnPolicyConfig | None = Field(
        None, description="On-policy distillation from the base: every `every` steps the tuned model answers "
        "general prompts itself (greedy), and each micro-batch adds `weight` times KL(tuned || base) over the "
        "tokens of some of those answers. Teacher-forced replay and kl_to_base look only at text the model is "
        "given; this term looks where the tuned model goes when it answers (a turn ended early, a domain "
        "style on a general question) and pulls it back to what the base would say there. The base is the "
        "model with its adapter switched off (LoRA) or a frozen copy (full fine-tuning). Not with "
        "train.deepspeed or train.fsdp. Omitted: off.")
    optim: Literal["adamw_torch", "adamw_torch_fused", "adafactor", "sgd", "rmsprop", "lion_32bit", "adamw_8bit",
                   "paged_adamw_32bit", "paged_adamw_8bit", "lion_8bit"] = Field(
        "adamw_torch", description="Optimizer, by the Trainer's names. The 8-bit and paged ones need a CUDA GPU "
        "and bitsandbytes (pip install 'medsft[gpu]').")
    neftune_alpha: float | None = Field(
        None, gt=0, description="NEFTune: uniform noise of this scale (divided by sqrt(tokens x width)) added to "
        "the input embeddings while training, never at evaluation (the Trainer's own support). Typical: 5.")
    padding_free: bool = Field(
        True, description="Join a batch's samples into one row with no padding, each sample attending only to "
        "itself (positions restart per sample; FlashAttention-2's variable-length path when "
        "model.attn_implementation asks for it; else, on an Ampere or newer GPU in bf16/fp16 or under autocast, "
        "torch's variable-length FlashAttention, one call per layer; elsewhere one SDPA call per sample). A model with its own attention "
        "code (trust_remote_code) is padded instead, with a line saying so.")
    loss_chunk_tokens: int = Field(
        1024, ge=0, description="Compute the loss this many supervised tokens at a time, the output head applied per "
        "chunk under activation checkpointing (a frozen head, as with LoRA: its gradient made in the forward, the "
        "logits computed once), so the tokens x vocabulary fp32 logits never exist at once "
        "(prompt positions skip the head entirely). 0: the plain loss over the full logits. The KL term "
        "(kl_to_base) and models that scale or cap their logits after the head use the plain loss.")
    compile: bool = Field(
        False, description="torch.compile each decoder layer (dynamic shapes) before training, which fuses the "
        "elementwise work around the matrix multiplies (norms, activation, rotary embedding), and the chunked "
        "loss's cross-entropy (the cast to fp32, the softmax and its gradient fused): for LoRA on a 1.5B model "
        "on an H200, 1.40x the tokens per second from the layers and 1.07-1.09x more from the loss (measured "
        "before a frozen head's gradient moved into the forward; bench/RESULTS.md). The first steps pay the "
        "compiling (about a minute on a GPU; needs a C compiler on CPU, where it rarely pays). Not with "
        "train.deepspeed or train.fsdp.")
    liger: bool = Field(
        False, description="Liger's Triton kernels in the model's RMSNorm and MLP (SwiGLU, GeGLU) modules "
        "(liger-kernel, for the model types it supports: Llama, Qwen2, Mistral, Gemma, ...), patched into the "
        "loaded model before LoRA; the log says how many modules. medsft's chunked loss stays (Liger's fused "
        "cross-entropy gives no per-source losses), and so does the rotary embedding (Liger patches that only "
        "for the whole process). A way to fuse those layers without compiling; train.compile fused more on an "
        "H200 (bench/RESULTS.md). Needs a CUDA GPU and pip install 'medsft[liger]'. Not with train.compile "
        "(torch.compile cannot trace Liger's kernels inside a layer), train.deepspeed or train.fsdp.")
    group_by_length: bool = Field(
        False, description="Batch samples of similar length together (sorted within windows of "
        "`length_window` batches, the batches then shuffled), so padded batches waste less. A window keeps "
        "its records, so the mix is unchanged.")
    length_window: int = Field(32, ge=1, description="Batches per length-grouping window (group_by_length).")
    deepspeed: str | None = Field(
        None, description="DeepSpeed ZeRO: `zero2`, `zero3` (configs shipped with medsft) or a JSON file. The "
        "recipe fills micro-batch, accumulation, global batch, clipping and bf16/fp16 (a file that sets them "
        "otherwise is refused). Needs CUDA and pip install 'medsft[deepspeed]'; launch with --nproc N, "
        "torchrun or accelerate launch.")
    fsdp: Literal["full_shard", "shard_grad_op"] | None = Field(
        None, description="PyTorch FSDP (version 2), each decoder layer a wrapped unit: `full_shard` shards "
        "weights, gradients and optimizer state; `shard_grad_op` keeps the weights whole between forward and "
        "backward. Launch with --nproc N, torchrun or accelerate launch.")

    @model_validator(mode="after")
    def _one_engine(self):
        if self.deepspeed is not None and self.fsdp is not None:
            raise ValueError("train.deepspeed and train.fsdp: choose one")
        if self.compile and (self.deepspeed is not None or self.fsdp is not None):
            raise ValueError("train.compile with train.deepspeed / train.fsdp is not supported: drop one")
        if self.compile and self.liger:
            raise ValueError("train.liger with train.compile is not supported (torch.compile cannot trace Liger's "
                             "kernels inside a layer): drop one")
        if self.liger and (self.deepspeed is not None or self.fsdp is not None):
            raise ValueError("train.liger with train.deepspeed / train.fsdp is not supported (not checked): drop one")
        if self.on_policy is not None and (self.deepspeed is not None or self.fsdp is not None):
            raise ValueError("train.on_policy with train.deepspeed / train.fsdp is not supported (the tuned "
                             "model generates between steps): drop one")
        return self


class SelectConfig(_Section):
    enabled: bool = Field(True, description="Pick the checkpoint to keep as adapter/ (or model/) from the probes.")
    min_general_retention: float = Field(
        0.9, ge=0, description="General probe accuracy, as a share of the base model's, a checkpoint must keep."
    )
    min_length_ratio: float = Field(
        0.8, ge=0, description="General answer length, as a share of the base model's, a checkpoint must keep."
    )


class MonitorConfig(_Section):
    eval_every: int | None = Field(
        None, ge=1, description="Validation loss and probes every N steps (and at the end of every stage); "
        "default: at the end of every stage only."
    )
    probes: bool = Field(True, description="Generate answers to probes at each evaluation (off: losses only).")
    general_probes: list[str] = Field(
        default_factory=lambda: ["builtin"],
        description="General probe sets: `builtin` (about 80 zh/en prompts), `builtin-en`, `builtin-zh`, "
        "or generation probe files (question, optional key).",
    )
    max_general_probes: int | None = Field(None, ge=1, description="Use at most N general probes.")
    domain_probes: int = Field(
        16, ge=0, description="Records of each domain source's validation split asked as probes (ROUGE-L).",
    )
    probe_files: list[str] = Field(
        default_factory=list,
        description="Your probe files: knowledge (question + facts), multiple choice (question, options, answer) "
        "or generation (question + key); see the README for the layouts.",
    )
    max_new_tokens: int = Field(256, ge=1, description="Longest generated answer; longer ones count as truncated.")
    batch_size: int = Field(32, ge=1, description="Probes generated at once.")
    kl_to_base: bool = Field(True, description="Measure drift from the base model (LoRA: adapter switched off).")
    patience: int = Field(3, ge=1, description="Evaluations of rising validation loss that flag memorization.")
    near_zero_loss: float = Field(0.05, gt=0, description="Train loss below this on a small set flags memorization.")
    small_set: int = Field(2000, ge=1, description="A source with fewer training records counts as small.")
    early_stop: bool = Field(False, description="Stop training when a source starts memorizing.")
    select: SelectConfig = Field(default_factory=SelectConfig, description="Checkpoint selection.")


class Recipe(_Section):
    model: ModelConfig
    finetune: FinetuneConfig = Field(default_factory=FinetuneConfig)
    data: DataConfig
    stages: list[StageConfig] | None = Field(
        None, description="Progressive training: each stage continues from the previous one's weights. "
        "Omitted: one stage `sft`, every source once per epoch."
    )
    train: TrainConfig = Field(default_factory=TrainConfig)
    monitor: MonitorConfig = Field(default_factory=MonitorConfig)
    output_dir: str = Field("runs/medsft", description="The run directory.")

    @model_validator(mode="after")
    def _consistent(self) -> Recipe:
        names = [s.name for s in self.data.sources]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"data.sources: name {dupes[0]!r} used twice")
        for i, stage in enumerate(self.stages or []):
            for source in stage.weights or {}:
                if source not in names:
                    raise ValueError(
                        f"stages.{i}.weights: {source!r} names no source (sources: {', '.join(names)})"
                    )
                if next(s for s in self.data.sources if s.name == source).split == "validation":
                    raise ValueError(f"stages.{i}.weights: {source!r} is a validation set (split: validation), "
                                     "never trained on")
            if stage.anchor is not None and stage.anchor not in (stage.weights or dict.fromkeys(names)):
                raise ValueError(f"stages.{i}.anchor: {stage.anchor!r} is not weighted in this stage")
            if stage.adaptive is not None:
                roles = {s.name: s.role for s in self.data.sources}
                weighted = {roles[s] for s in stage.weights or {}}
                if weighted != {"domain", "general"}:
                    raise ValueError(f"stages.{i}.adaptive: the stage's weights must name domain and general sources")
                if self.monitor.eval_every is None or not self.monitor.probes or not self.monitor.general_probes:
                    raise ValueError(f"stages.{i}.adaptive: needs monitor.eval_every, monitor.probes and "
                                     "general probes (what the controller reads)")
        if self.train.on_policy is not None and not any(
                s.role == "general" and s.split != "validation" for s in self.data.sources):
            raise ValueError("train.on_policy: needs a training source with role: general (its prompts are "
                             "what the tuned model answers)")
        stage_names = [s.name for s in self.stages or []]
        if len(set(stage_names)) != len(stage_names):
            raise ValueError("stages: stage names must be unique")
        return self

    @property
    def resolved_stages(self) -> list[StageConfig]:
        return self.stages or [StageConfig(name="sft")]

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


def _set_path(tree: dict, dotted: str, value: Any) -> None:
    """Set `a.b.0.c` in a nested dict/list tree, creating dicts on the way."""
    keys = dotted.split(".")
    node: Any = tree
    for i, key in enumerate(keys):
        last = i == len(keys) - 1
        if isinstance(node, list):
            if not key.isdigit() or int(key) >= len(node):
                raise UserError(f"--set {dotted}: {key!r} is not an index of a list of {len(node)}")
            key = int(key)
        elif not isinstance(node, dict):
            raise UserError(f"--set {dotted}: {'.'.join(keys[:i])} is not a section")
        if last:
            node[key] = value
        else:
            if isinstance(node, dict) and node.get(key) is None:
                node[key] = {}
            node = node[key]


def apply_overrides(tree: dict, overrides: list[str]) -> dict:
    """Apply `key.path=value` overrides; the value is read as YAML (so `3`, `1e-5`, `true`, `[a, b]` work)."""
    tree = copy.deepcopy(tree)
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise UserError(f"--set {item!r}: expected key=value")
        try:
            value = yaml.safe_load(text) if text else ""
        except yaml.YAMLError:
            value = text
        _set_path(tree, key.strip(), value)
    return tree


def _describe(error: ValidationError, origin: str) -> str:
    """One line for the first problem pydantic found, naming the field."""
    first = error.errors()[0]
    where = ".".join(str(p) for p in first["loc"])
    message = first["msg"]
    if first["type"] == "extra_forbidden":
        message = "unknown field"
    elif first["type"] == "missing":
        message = "required field is missing"
    elif first["type"] == "literal_error":
        message = f"{message}, got {first['input']!r}"
    message = message.removeprefix("Value error, ")
    prefix = f"{origin}: " if origin else ""
    return f"{prefix}{where}: {message}" if where else f"{prefix}{message}"


def parse_recipe(tree: Any, origin: str = "") -> Recipe:
    if not isinstance(tree, dict):
        raise UserError(f"{origin}: a recipe is a YAML mapping (model:, data:, ...)")
    try:
        return Recipe.model_validate(tree)
    except ValidationError as error:
        raise UserError(_describe(error, origin)) from None


def load_recipe(path: str | Path, overrides: list[str] | None = None, check_files: bool = True) -> Recipe:
    """Read, override, validate. With `check_files`, data paths must exist (the model is checked later)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: recipe file not found")
    try:
        tree = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        problem = " ".join(str(getattr(error, "problem", None) or error).split())  # YAML's messages span lines
        raise UserError(f"{path}{line}: not valid YAML ({problem})") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not valid UTF-8") from None
    recipe = parse_recipe(apply_overrides(tree or {}, overrides or []), str(path))
    if check_files:
        check_data_paths(recipe, str(path))
    return recipe


def check_data_paths(recipe: Recipe, origin: str = "recipe") -> None:
    for i, source in enumerate(recipe.data.sources):
        if not source.path.startswith("hf:") and not Path(source.path).exists():
            raise UserError(f"{origin}: data.sources.{i}.path: {source.path}: no such file or directory")
    builtin = ("builtin", "builtin-en", "builtin-zh")
    for field_name in ("general_probes", "probe_files"):
        for i, path in enumerate(getattr(recipe.monitor, field_name)):
            if path not in builtin and not Path(path).is_file():
                raise UserError(f"{origin}: monitor.{field_name}.{i}: {path}: no such file")


def field_reference() -> str:
    """The recipe reference as Markdown, generated from the schema's descriptions."""
    lines: list[str] = []

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, info in model.model_fields.items():
            annotation = info.annotation
            nested = _section_type(annotation)
            key = f"{prefix}{name}"
            if nested is not None:
                if info.description:
                    lines.append(f"| `{key}` | | {info.description} |")
                walk(nested, f"{key}." if nested is not SourceConfig and nested is not StageConfig else f"{key}[].")
                continue
            default = "required" if info.is_required() else f"`{json.dumps(info.get_default(call_default_factory=True))}`"
            description = info.description or ""
            choices = _choices(annotation)
            if choices and not all(f"`{c}`" in description for c in choices):
                description += (" " if description else "") + "One of: " + ", ".join(f"`{c}`" for c in choices) + "."
            lines.append(f"| `{key}` | {default} | {description} |")

    walk(Recipe, "")
    return "| field | default | meaning |\n|---|---|---|\n" + "\n".join(lines)


def _choices(annotation: Any) -> list[str]:
    """The values a Literal field (or a list or optional of one) accepts."""
    if typing.get_origin(annotation) is Literal:
        return [str(value) for value in typing.get_args(annotation)]
    return [choice for arg in typing.get_args(annotation) for choice in _choices(arg)]


def _section_type(annotation: Any) -> type[BaseModel] | None:
    args = getattr(annotation, "__args__", None) or ()
    for candidate in (annotation, *args):
        inner = getattr(candidate, "__args__", None) or ()
        for c in (candidate, *inner):
            if isinstance(c, type) and issubclass(c, _Section):
                return c
    return None


# medsft's default remedies (the lab's `medsft-default` variant, and what `medsft init` writes): the domain
# sources augmented, mixed with general data from the first step, the general share moved by the monitor.
DEFAULT_AUGMENT = {"augmenters": ["rephrase", "restate", "synonyms", "statements", "multiturn", "shuffle"],
                   "per_record": 8}
DEFAULT_DOMAIN_SHARE = 0.6
DEFAULT_EPOCHS = 4  # passes over the domain source (the lab: 3 kept 89% of domain-only recall, 4 kept all of it)
DEFAULT_ADAPTIVE = {"general_share": [0.4, 0.5], "step": 0.1, "min_general_retention": 0.98,
                    "min_length_ratio": 0.95, "min_domain_gain": 0.005}

INIT_TEMPLATE = """\
# Written by `medsft init` on the defaults the forgetting lab measured best (README: "Remedies").
# The fields people change most are commented; `medsft data inspect` and `--set key=value` help.
model:
  name_or_path: {model}
  template: {template}  # {template_why}
  # trust_remote_code: true   # models that ship their own code (Baichuan) need it; off unless set
finetune:
  method: lora          # or full
  lora: {{rank: 16, alpha: 32, dropout: 0.05, target_modules: all-linear}}  # rank: more capacity, more drift
data:
  sources:
{sources}
  max_length: 2048      # `medsft data inspect FILE --tokenizer MODEL` shows what each length would cut
  val_fraction: 0.05
  on_bad_record: fail   # or skip: malformed records go to rejects.jsonl
stages:
  # Domain and general data mixed from the first step (the general share keeps general ability); the
  # monitor moves the general share within `general_share` at each evaluation: up when general accuracy
  # falls under 98% of the base's or answers shorten, down when domain skill stops rising.
  - name: mixed
    epochs: {epochs}
    anchor: {anchor}      # epochs count passes over this source (at the starting mix: the stage's length)
    weights: {weights}
    adaptive: {adaptive}
train:
  learning_rate: 2.0e-4  # LoRA on 7B models; full fine-tuning wants about 1e-5
  batch_size: 4
  grad_accum: 4
  seed: 42
monitor:
  general_probes: [builtin]   # general ability probes (built-in English and Chinese); add your own files
  eval_every: 200             # probes and validation loss every N steps (and the adaptive mix's moves)
  select: {{min_general_retention: 0.9, min_length_ratio: 0.8}}  # what the kept checkpoint must hold
output_dir: {output_dir}
"""


def init_recipe(model: str, template: str, template_why: str, domain: list[str], general: list[str],
                output_dir: str = "runs/my-run") -> str:
    """A ready recipe (YAML text with comments) on medsft's defaults, for `medsft init`."""
    def source(name: str, path: str, role: str, augment: bool) -> str:
        line = f"    - {{name: {name}, path: {json.dumps(path)}, role: {role}"
        if augment:  # more wordings of each question and the facts in more contexts (README: Augmentation)
            line += (f", augment: {{augmenters: [{', '.join(DEFAULT_AUGMENT['augmenters'])}], "
                     f"per_record: {DEFAULT_AUGMENT['per_record']}}}}}  # up to per_record new records per "
                     "record and augmenter: lower it for large sources")
            return line
        return line + "}"

    names = [f"domain{i + 1}" if len(domain) > 1 else "domain" for i in range(len(domain))]
    general_names = [f"general{i + 1}" if len(general) > 1 else "general" for i in range(len(general))]
    sources = [source(n, p, "domain", True) for n, p in zip(names, domain)]
    sources += [source(n, p, "general", False) for n, p in zip(general_names, general)]
    share = DEFAULT_DOMAIN_SHARE
    weights = {**{n: round(share / len(names), 4) for n in names},
               **{n: round((1 - share) / len(general_names), 4) for n in general_names}}
    adaptive = ", ".join(f"{k}: {json.dumps(v)}" for k, v in DEFAULT_ADAPTIVE.items())
    text = INIT_TEMPLATE.format(model=json.dumps(model), template=template, template_why=template_why,
                                sources="\n".join(sources), weights=json.dumps(weights).replace('"', ""),
                                adaptive="{" + adaptive + "}", output_dir=json.dumps(output_dir), anchor=names[0],
                                epochs=DEFAULT_EPOCHS)
    parse_recipe(yaml.safe_load(text), "medsft init")  # what it writes is a valid recipe
    return text
