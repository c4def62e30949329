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


def test_liger_without_a_gpu_or_with_compile_is_one_line_before_loading(tmp_path, tiny_model_dir, capsys, monkeypatch):
    import medsft.pipeline.run as run

    monkeypatch.setattr(run, "torch_cuda", lambda: False)
    path = _recipe_file(tmp_path, tiny_model_dir)
    assert main(["train", str(path), "--set", "train.liger=true"]) == 2
    err = capsys.readouterr().err
    assert "train.liger needs a CUDA GPU and liger-kernel (pip install 'medsft[liger]')" in err and "Traceback" not in err
    assert main(["train", str(path), "--set", "train.liger=true", "--set", "train.compile=true"]) == 2
    assert "train.liger with train.compile is not supported" in capsys.readouterr().err


def _fake_liger(monkeypatch, supported: set, patches: bool = True) -> list:
    """liger_kernel as far as medsft calls it (its kernels need CUDA): what it was handed, and, like
    Liger, each RMSNorm and MLP instance renamed and rebound, and transformers' class rebound in its
    modeling module for the whole process."""
    import importlib.util
    import sys
    import types

    import medsft.pipeline.run as run
    from transformers.models.llama import modeling_llama

    calls = []

    def apply(model, **kwargs):
        calls.append((model, kwargs, any("lora_" in name for name, _ in model.named_modules())))
        if not patches:
            return
        modeling_llama.LlamaRMSNorm = type("LigerRMSNorm", (torch.nn.Module,), {})
        modeling_llama.apply_rotary_pos_emb = lambda *a, **k: None
        for module in model.modules():
            kind = type(module).__name__
            if kind in ("LlamaRMSNorm", "LlamaMLP"):
                liger = "LigerRMSNorm" if kind == "LlamaRMSNorm" else "LigerSwiGLUMLP"
                module.__dict__["_get_name"] = lambda liger=liger: liger

    package = types.ModuleType("liger_kernel")
    transformers_part = types.ModuleType("liger_kernel.transformers")
    monkey_patch = types.ModuleType("liger_kernel.transformers.monkey_patch")
    monkey_patch.MODEL_TYPE_TO_APPLY_LIGER_FN = dict.fromkeys(supported)
    transformers_part._apply_liger_kernel_to_instance = apply
    for name, module in [("liger_kernel", package), ("liger_kernel.transformers", transformers_part),
                         ("liger_kernel.transformers.monkey_patch", monkey_patch)]:
        monkeypatch.setitem(sys.modules, name, module)
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "liger_kernel" else find_spec(name, *a))
    monkeypatch.setattr(run, "torch_cuda", lambda: True)
    return calls


def test_liger_patches_the_model_on_its_gpu_before_lora_and_leaves_transformers_as_it_was(tmp_path, tiny_model_dir,
                                                                                          monkeypatch):
    """train.liger: the loaded model goes to this process's GPU (here a stand-in for it), then to
    liger-kernel for its RMSNorm and MLP kernels only (no rotary embedding, no cross-entropy: medsft's
    chunked loss stays), before LoRA and before the base is probed; the log counts what was patched;
    transformers' modeling module is left as it was for the next model. A model type Liger has no
    kernels for is one line before the model loads; a patch that changes nothing is one line too."""
    import medsft.distributed as distributed
    from medsft.errors import UserError
    from medsft.monitor.monitor import Monitor
    from transformers.models.llama import modeling_llama

    norm_class, rope = modeling_llama.LlamaRMSNorm, modeling_llama.apply_rotary_pos_emb
    calls = _fake_liger(monkeypatch, {"qwen2", "mistral"})
    recipe = load_recipe(_recipe_file(tmp_path, tiny_model_dir), ["monitor.select.enabled=false", "train.liger=true"])
    with pytest.raises(UserError, match="train.liger: liger-kernel has no kernels for model type 'llama'; drop train.liger"):
        train(recipe, log=lambda *_: None)
    assert not calls
    calls = _fake_liger(monkeypatch, {"llama", "qwen2"})
    order = []
    monkeypatch.setattr(distributed, "local_device", lambda: order.append("device") or torch.device("cpu"))
    compute_base = Monitor.compute_base
    monkeypatch.setattr(Monitor, "compute_base", lambda self, model: order.append("probe") or compute_base(self, model))
    lines = []
    result = train(recipe, log=lambda line, *_: lines.append(str(line)))
    assert len(calls) == 1
    model, kwargs, had_lora = calls[0]
    assert type(model).__name__ == "LlamaForCausalLM" and not had_lora
    assert kwargs == dict(rope=False, rms_norm=True, swiglu=True, geglu=True, cross_entropy=False,
                          fused_linear_cross_entropy=False)
    assert result.model.get_base_model() is model  # the patched instance is the one LoRA wraps and trains
    assert order == ["device", "probe"]
    layers = model.config.num_hidden_layers
    assert f"train.liger: {2 * layers + 1} LigerRMSNorm, {layers} LigerSwiGLUMLP modules in the llama model" in lines
    assert modeling_llama.LlamaRMSNorm is norm_class and modeling_llama.apply_rotary_pos_emb is rope
    assert _first_losses(result.run_dir)
    _fake_liger(monkeypatch, {"llama"}, patches=False)
    again = tmp_path / "again"
    again.mkdir()
    quiet = load_recipe(_recipe_file(again, tiny_model_dir), [*QUIET, "train.liger=true"])
    with pytest.raises(UserError, match="train.liger: liger-kernel patched nothing in this llama model"):
        train(quiet, log=lambda *_: None)


def test_on_a_gpu_the_model_and_the_kl_reference_go_to_the_process_s_gpu(tmp_path, tiny_model_dir, monkeypatch):
    """Full fine-tuning with kl_to_base: the loaded model and its frozen reference copy are both asked onto this
    process's GPU (here a stand-in that records the asking); under DeepSpeed/FSDP only the copy, which the
    engines do not move."""
    import medsft.distributed as distributed
    import medsft.pipeline.run as run

    asked = []
    monkeypatch.setattr(run, "torch_cuda", lambda: True)
    monkeypatch.setattr(distributed, "local_device", lambda: asked.append(1) or torch.device("cpu"))
    result = _run(tmp_path, tiny_model_dir, "full", "finetune.method=full", "train.kl_to_base=0.1")
    assert len(asked) == 2 and _first_losses(result.run_dir)


@pytest.mark.parametrize("overrides, message", [
    (["finetune.layers=9-"], "finetune.layers: '9-' is outside this model's layers 0-1"),
    (["finetune.method=full", "finetune.layers=[0, 5]"], "outside this model's layers 0-1"),
    (["finetune.lora.target_modules=[W_pack]"], "finetune.lora.target_modules: Target modules {'W_pack'} not found"),
    (["model.rope_scaling={rope_type: bogus, factor: 2.0}"], "model.rope_scaling: rope_type 'bogus' is not one of"),
    (["model.rope_scaling={rope_type: linear}"], "model.rope_scaling: Missing required keys"),
    (["model.rope_scaling={factor: 2.0}"], "model.rope_scaling: needs a rope_type"),
    (["train.optim=lion_32bit"], "train.optim: lion_32bit needs a CUDA GPU and bitsandbytes"),
    (["model.attn_implementation=flash_attention_2"], "flash_attention_2 needs a CUDA GPU and the flash-attn package"),
])
def test_what_the_models_config_answers_is_one_line_before_loading(tmp_path, tiny_model_dir, capsys, monkeypatch,
                                                                   overrides, message):
    import medsft.models

    def no_loading(*args, **kwargs):
        raise AssertionError("the weights loaded before the recipe's error")

    monkeypatch.setattr("medsft.pipeline.run.load_model", no_loading)
    monkeypatch.setattr(medsft.models, "load_model", no_loading)
    path = _recipe_file(tmp_path, tiny_model_dir)
    assert main(["train", str(path), *[a for o in overrides for a in ("--set", o)]]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert message in err[-1] and "Traceback" not in "\n".join(err)
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())


def test_a_layer_range_and_targets_that_fit_pass_the_check_and_train(tmp_path, tiny_model_dir):
    run = _run(tmp_path, tiny_model_dir, "fit", "finetune.layers=1-", "finetune.lora.target_modules=[q_proj, v_proj]",
               "model.rope_scaling={rope_type: linear, factor: 2.0}")
    assert (run.run_dir / "adapter" / "adapter_config.json").is_file()
