"""The tiny local model loads through the same from_pretrained path a user's model does."""

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from sample_data import sample_texts
from medsft.lab.tiny import SPECIAL_TOKENS, build_tiny_model

ROUND_TRIP = [
    "Take ibuprofen after meals, not on an empty stomach.",
    "高血压患者每天食盐不超过5克，并定期测量血压。",
    "  leading spaces, tabs\tand\nnewlines; unseen words: xylophone, 鳄梨, naïve, 🙂",
    "Mixed 中英文 text: BMI = 24.5 kg/m², 血糖 7.4 mmol/L.",
]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("tiny"), sample_texts())


@pytest.fixture(scope="module")
def tokenizer(tiny_dir):
    return AutoTokenizer.from_pretrained(tiny_dir)


@pytest.mark.parametrize("text", ROUND_TRIP)
def test_decode_inverts_encode_exactly(tokenizer, text):
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert tokenizer.unk_token_id not in ids
    assert tokenizer.decode(ids) == text


def test_training_compresses_the_text_it_saw(tokenizer):
    text = "高血压患者日常饮食要注意什么？"
    # Byte-level fallback alone would need 3 ids per Chinese character.
    assert len(tokenizer.encode(text, add_special_tokens=False)) < len(text.encode("utf-8")) / 2


@pytest.mark.parametrize("special", SPECIAL_TOKENS)
def test_special_token_is_one_id_inside_text(tokenizer, special):
    ids = tokenizer.encode(f"before{special}after", add_special_tokens=False)
    special_id = tokenizer.convert_tokens_to_ids(special)
    assert ids.count(special_id) == 1
    assert tokenizer.decode(ids) == f"before{special}after"
    assert tokenizer.encode(special, add_special_tokens=False) == [special_id]


def test_bos_eos_pad_unk(tokenizer):
    assert (tokenizer.bos_token, tokenizer.eos_token) == ("<s>", "</s>")
    assert (tokenizer.pad_token, tokenizer.unk_token) == ("<pad>", "<unk>")
    assert len({tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id}) == 3


def test_chat_template_renders_chatml(tokenizer):
    chat = [{"role": "user", "content": "头痛怎么办？"}, {"role": "assistant", "content": "Rest."}]
    assert tokenizer.apply_chat_template(chat, tokenize=False) == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\n头痛怎么办？<|im_end|>\n"
        "<|im_start|>assistant\nRest.<|im_end|>\n"
    )
    with_system = [{"role": "system", "content": "Be brief."}, chat[0]]
    assert tokenizer.apply_chat_template(with_system, tokenize=False, add_generation_prompt=True) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\n头痛怎么办？<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_model_loads_like_a_user_model(tiny_dir, tokenizer):
    assert (tiny_dir / "model.safetensors").is_file()
    assert not list(tiny_dir.glob("*.bin"))
    model = AutoModelForCausalLM.from_pretrained(tiny_dir)
    assert model.config.model_type == "llama"
    assert model.config.vocab_size == len(tokenizer)
    assert model.config.tie_word_embeddings is False
    assert model.generation_config.eos_token_id == tokenizer.eos_token_id
    assert model.generation_config.pad_token_id == tokenizer.pad_token_id

    ids = tokenizer("Is it normal to feel tired after a vaccine?", return_tensors="pt").input_ids
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    assert logits.shape == (1, ids.shape[1], len(tokenizer))
    assert torch.isfinite(logits).all()


def test_same_seed_same_model_and_vocab(tmp_path, tiny_dir, tokenizer):
    again = build_tiny_model(tmp_path / "again", sample_texts())
    assert AutoTokenizer.from_pretrained(again).get_vocab() == tokenizer.get_vocab()
    first, second = load_file(tiny_dir / "model.safetensors"), load_file(again / "model.safetensors")
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)

    other = build_tiny_model(tmp_path / "other", sample_texts(), seed=1)
    third = load_file(other / "model.safetensors")
    assert not torch.equal(first["model.embed_tokens.weight"], third["model.embed_tokens.weight"])
