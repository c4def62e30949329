"""The training options MedicalGPT users expect: continuing an adapter, NEFTune, RoPE scaling, the optimizer."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from medsft.cli import main
from medsft.pipeline.run import train
from medsft.recipe import load_recipe
from test_train import _recipe_file

QUIET = ["monitor.probes=false", "monitor.select.enabled=false"]


def _first_losses(run_dir) -> list[float]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["train_loss"] for r in rows if r["event"] == "train"]


def _run(tmp_path, model_dir, name, *overrides):
    folder = tmp_path / name
    folder.mkdir()
    recipe = load_recipe(_recipe_file(folder, model_dir), [*QUIET, *overrides])
    return train(recipe, log=lambda *_: None)


def test_init_from_continues_the_saved_adapter(tmp_path, tiny_model_dir):
    """The second run starts from the first run's adapter weights (its rank too), and trains them."""
    first = _run(tmp_path, tiny_model_dir, "first", "finetune.lora.rank=6")
    saved = load_file(first.run_dir / "adapter" / "adapter_model.safetensors")
    lines = []
    recipe = load_recipe(_recipe_file(tmp_path / "first", tiny_model_dir, output_dir=str(tmp_path / "second")),
                         [*QUIET, f"finetune.lora.init_from={first.run_dir / 'adapter'}", "finetune.lora.rank=2"])
    from medsft.pipeline.run import Run

    run = Run(recipe, lines.append)
    run.check_optional_packages()
    run.prepare_data()
    run.load_model()
    live = {k: v for k, v in run.model.state_dict().items() if "lora_" in k}
    assert any("continuing the adapter" in line for line in lines)
    assert len(live) == len(saved)
    for name, value in saved.items():  # saved names lack the adapter name PEFT adds in memory
        match = [v for k, v in live.items() if k.replace(".default", "") == name]
        assert match and torch.equal(match[0], value), name
    assert all(p.requires_grad for n, p in run.model.named_parameters() if "lora_" in n)
    assert next(v for k, v in saved.items() if "lora_A" in k).shape[0] == 6  # the adapter's rank, not the recipe's


def test_init_from_a_folder_without_an_adapter_is_one_line_before_loading(tmp_path, tiny_model_dir, capsys):
    path = _recipe_file(tmp_path, tiny_model_dir)
    assert main(["train", str(path), "--set", f"finetune.lora.init_from={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert "finetune.lora.init_from" in err and "no adapter_config.json" in err and "Traceback" not in err


def test_neftune_adds_noise_while_training_only(tmp_path, tiny_model_dir):
    plain = _run(tmp_path, tiny_model_dir, "plain")
    noisy = _run(tmp_path, tiny_model_dir, "noisy", "train.neftune_alpha=50")
    assert _first_losses(noisy.run_dir)[0] != pytest.approx(_first_losses(plain.run_dir)[0], abs=1e-6)
    model = noisy.model  # after training, the embeddings answer without noise (no hook left behind)
    ids = torch.tensor([[5, 6, 7]])
    embeddings = model.get_input_embeddings()
    model.train()
    assert torch.equal(embeddings(ids), embeddings(ids))


def test_rope_scaling_reaches_the_model_config(tmp_path, tiny_model_dir):
    from medsft.models import load_model

    scaled = load_model(str(tiny_model_dir), rope_scaling={"rope_type": "linear", "factor": 4.0})
    plain = load_model(str(tiny_model_dir))
    assert scaled.config.rope_parameters["factor"] == 4.0
    ids = torch.tensor([list(range(3, 40))])
    with torch.no_grad():
        assert not torch.allclose(scaled(ids).logits, plain(ids).logits)


def test_an_8bit_optimizer_without_a_gpu_is_one_line_before_loading(tmp_path, tiny_model_dir, capsys):
    path = _recipe_file(tmp_path, tiny_model_dir)
    assert main(["train", str(path), "--set", "train.optim=adamw_8bit"]) == 2
    err = capsys.readouterr().err
    assert "train.optim: adamw_8bit needs a CUDA GPU and bitsandbytes" in err


@pytest.mark.parametrize("quantization", ["4bit", "8bit"])
def test_quantized_loading_without_a_gpu_is_one_line_before_loading(tmp_path, tiny_model_dir, capsys, quantization):
    path = _recipe_file(tmp_path, tiny_model_dir)
    assert main(["train", str(path), "--set", f"model.quantization={quantization}"]) == 2
    err = capsys.readouterr().err
    assert f"model.quantization: {quantization} needs a CUDA GPU and bitsandbytes" in err and "Traceback" not in err
    assert main(["train", str(path), "--set", f"model.quantization={quantization}", "--set", "finetune.method=full"]) == 2
    assert "set finetune.method: lora" in capsys.readouterr().err


def test_quantized_loading_asks_for_nf4_qlora_or_8bit():
    from medsft.models import quantization_config

    four = quantization_config("4bit")
    assert four.load_in_4bit and four.bnb_4bit_quant_type == "nf4" and four.bnb_4bit_use_double_quant
    assert four.bnb_4bit_compute_dtype == torch.bfloat16
    assert quantization_config("8bit").load_in_8bit
