"""Tiny local models: a byte-level BPE tokenizer and a small random Llama, saved like a real one.

Nothing can be downloaded from a hub here, so tests, the demo and the lab build their base
model with these functions and then load it through the same `from_pretrained` path a user's
Qwen or Llama checkpoint goes through.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AutoTokenizer,
    GenerationConfig,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

# The special tokens of every chat template medsft ships, so one tiny tokenizer can render
# any of them with each marker as a single id (as in the real model's vocabulary).
SPECIAL_TOKENS = [
    "<s>", "</s>", "<unk>", "<pad>",                                           # Llama-2, Mistral, Vicuna, Alpaca
    "<|im_start|>", "<|im_end|>", "<|endoftext|>",                             # ChatML / Qwen
    "<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>",  # Llama-3
    "<reserved_102>", "<reserved_103>",                                        # Baichuan
    "<reserved_106>", "<reserved_107>",                                        # Baichuan2
]  # fmt: skip

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}"
    "{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def build_tokenizer(texts: Iterable[str], out_dir, vocab_size: int = 1024) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on `texts`, save it to `out_dir`, return it as AutoTokenizer loads it."""
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    # Byte-level: every UTF-8 string (Chinese included) maps to bytes the base alphabet covers,
    # so decode(encode(t)) == t exactly and <unk> never appears.
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(texts), trainer=trainer)

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(out_dir)
    return AutoTokenizer.from_pretrained(out_dir)


def build_llama(
    out_dir,
    tokenizer,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    intermediate_size: int = 128,
    max_position_embeddings: int = 1024,
    seed: int = 0,
) -> Path:
    """Save a randomly initialized LlamaForCausalLM (and `tokenizer`) into `out_dir`; same seed, same weights."""
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        intermediate_size=intermediate_size,
        max_position_embeddings=max_position_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    # A private RNG scope: building a model must not shift the caller's random stream.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)  # safetensors is the default format
    tokenizer.save_pretrained(out_dir)
    return out_dir


def build_tiny_model(out_dir, texts: Iterable[str], vocab_size: int = 1024, **model_kwargs) -> Path:
    """Tokenizer trained on `texts` plus a random Llama on top of it, all in `out_dir`."""
    tokenizer = build_tokenizer(texts, out_dir, vocab_size=vocab_size)
    return build_llama(out_dir, tokenizer, **model_kwargs)
