"""Padding-free batches, the chunked loss and length grouping: the same numbers as the padded,
full-logits path, with no sample seeing another."""

from __future__ import annotations

import copy
import inspect
import json
import random

import pytest
import torch

from medsft.data.mixture import group_by_length, padding_efficiency
from medsft.models import PACKED_ATTENTION, add_lora, use_packed_attention
from medsft.train.collate import Collator, PackedCollator
from medsft.train.loss import head_gives_logits, per_position, per_sample, token_losses
from test_train import _recipe_file


def _tiny(kind: str = "llama", **extra):
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    shape = dict(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, **extra)
    model = LlamaForCausalLM(LlamaConfig(**shape)) if kind == "llama" else Qwen2ForCausalLM(Qwen2Config(**shape))
    return model.eval()


def _rows(lengths=(5, 11, 3, 8), seed=0) -> list[dict]:
    generator = random.Random(seed)
    rows = []
    for i, n in enumerate(lengths):
        ids = [generator.randrange(96) for _ in range(n)]
        rows.append({"input_ids": ids, "labels": [-100] * 2 + ids[2:], "source_id": i % 2, "record_index": i})
    return rows


def _forward(model, batch: dict) -> torch.Tensor:
    keys = ("input_ids", "position_ids", "segment_bounds", "cu_seq_lens_q", "cu_seq_lens_k", "max_length_q", "max_length_k")
    with torch.no_grad():
        return model(**{k: batch[k] for k in keys}, use_cache=False).logits[0]


@pytest.mark.parametrize("kind", ["llama", "qwen2"])
def test_a_packed_sample_is_not_seen_by_the_others(kind):
    """Change every token of one sample: the other samples' logits do not move at all, its own do."""
    model = _tiny(kind)
    assert use_packed_attention(model, log=lambda *_: None)
    assert model.config._attn_implementation == PACKED_ATTENTION
    rows = _rows()
    changed = copy.deepcopy(rows)
    changed[1]["input_ids"] = [(t + 1) % 96 for t in changed[1]["input_ids"]]
    before, after = _forward(model, PackedCollator()(rows)), _forward(model, PackedCollator()(changed))
    owner = PackedCollator()(rows)["sample_index"][0]
    assert float((before[owner != 1] - after[owner != 1]).abs().max()) == 0.0
    assert float((before[owner == 1] - after[owner == 1]).abs().max()) > 1e-3


def test_packed_losses_per_sample_equal_the_padded_ones():
    model = _tiny()
    rows = _rows()
    padded = Collator(pad_id=0)(rows)
    with torch.no_grad():
        reference, reference_mask, _ = token_losses(model, padded)
    use_packed_attention(model, log=lambda *_: None)
    packed = PackedCollator()(rows)
    with torch.no_grad():
        losses, mask, _ = token_losses(model, packed)
    assert per_sample(losses, packed).tolist() == pytest.approx(per_sample(reference, padded).tolist(), abs=1e-5)
    assert per_sample(mask.double(), packed).tolist() == per_sample(reference_mask.double(), padded).tolist()
    # a value per sample lands on that sample's targets, in both layouts
    marks = torch.tensor([10.0, 20.0, 30.0, 40.0])
    assert per_sample(per_position(marks, packed) * mask, packed).tolist() == \
        per_sample(per_position(marks, padded) * reference_mask, padded).tolist()
    # the label that would predict the next sample's first token is never a target
    starts = packed["cu_seq_lens_q"][:-1].long()
    assert (packed["labels"][0, starts] == -100).all()
    # the per-sample kernel and transformers' block-diagonal mask agree
    plain = model(input_ids=packed["input_ids"], position_ids=packed["position_ids"], use_cache=False).logits[0]
    assert torch.allclose(_forward(model, packed), plain.detach(), atol=1e-5)


def test_the_packed_kernel_attends_within_each_sample(monkeypatch):
    """With the sample bounds given, attention runs once per sample and layer, causal, with no mask
    over the row (the mask path above is correct too, only quadratic in the row's length)."""
    from transformers.integrations import sdpa_attention

    model = _tiny()
    use_packed_attention(model, log=lambda *_: None)
    calls = []
    real = sdpa_attention.sdpa_attention_forward

    def counting(module, query, key, value, attention_mask, **kwargs):
        calls.append((query.shape[2], attention_mask is None, kwargs.get("is_causal")))
        return real(module, query, key, value, attention_mask, **kwargs)

    monkeypatch.setattr(sdpa_attention, "sdpa_attention_forward", counting)
    rows = _rows()
    with torch.no_grad():  # the training path's own forward
        token_losses(model, PackedCollator()(rows), chunk_tokens=4)
    lengths = [len(r["input_ids"]) for r in rows]
    assert calls == [(n, True, True) for _ in range(model.config.num_hidden_layers) for n in lengths]


def _varlen_on_cpu(release: str, calls: list):
    """torch's variable-length kernel with each release's signature, done per sample on the CPU:
    what the padding-free kernel hands it (layout, bounds, causality, scale, GQA) is checked here; the
    kernel itself runs on CUDA only (bench/gpu_checks.py checks it there)."""
    import torch.nn.functional as F

    def attend(q, k, v, cu_q, cu_k, max_q, max_k, scale=None, enable_gqa=False):
        assert q.dim() == 3 and q.shape[0] == cu_q[-1] and cu_q.dtype == torch.int32 and cu_q is cu_k
        lengths = (cu_q[1:] - cu_q[:-1]).tolist()
        assert max_q == max_k == max(lengths)
        calls.append((q.shape[1], k.shape[1]))
        pieces = [F.scaled_dot_product_attention(q[a:b].transpose(0, 1), k[a:b].transpose(0, 1),
                                                 v[a:b].transpose(0, 1), is_causal=True, scale=scale,
                                                 enable_gqa=enable_gqa).transpose(0, 1)
                  for a, b in zip(cu_q[:-1].tolist(), cu_q[1:].tolist())]
        return torch.cat(pieces)

    if release == "2.13":  # causality as a window, GQA as a flag
        def varlen_attn(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, *, return_aux=None, scale=None,
                        window_size=(-1, -1), enable_gqa=False, seqused_k=None, block_table=None, num_splits=None):
            assert window_size == (-1, 0)
            return attend(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, scale, enable_gqa)
    elif release == "2.11":  # a window, and no GQA: the key and value heads come repeated
        def varlen_attn(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, *, return_aux=None, scale=None,
                        window_size=(-1, -1)):
            assert window_size == (-1, 0) and key.shape[1] == query.shape[1]
            return attend(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, scale)
    else:  # the first release: is_causal, no scale (the default only), no GQA
        def varlen_attn(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, is_causal=False, return_aux=None):
            assert is_causal and key.shape[1] == query.shape[1]
            return attend(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k)
    return varlen_attn


def _with_varlen_stand_in(monkeypatch, release: str, calls: list) -> None:
    import medsft.models as models

    fake = _varlen_on_cpu(release, calls)
    monkeypatch.setattr(models, "_VARLEN", (fake, frozenset(inspect.signature(fake).parameters)))
    monkeypatch.setattr(models, "_flash_dtype", lambda query: query.dtype)  # as if on CUDA


@pytest.mark.parametrize("release", ["2.13", "2.11", "first"])
def test_the_packed_kernel_hands_a_whole_row_to_torchs_variable_length_attention(monkeypatch, release):
    """Where torch has variable-length FlashAttention (CUDA, bf16), one call per layer does every
    sample: the same logits as the per-sample loop, and no other sample seen."""
    model = _tiny("qwen2")
    use_packed_attention(model, log=lambda *_: None)
    rows = _rows()
    batch = PackedCollator()(rows)
    reference = _forward(model, batch)
    calls = []
    _with_varlen_stand_in(monkeypatch, release, calls)
    logits = _forward(model, batch)
    heads = model.config.num_attention_heads
    kv_heads = model.config.num_key_value_heads if release == "2.13" else heads
    assert calls == [(heads, kv_heads)] * model.config.num_hidden_layers
    assert torch.allclose(logits, reference, atol=1e-5)
    changed = copy.deepcopy(rows)
    changed[2]["input_ids"] = [(t + 1) % 96 for t in changed[2]["input_ids"]]
    owner = batch["sample_index"][0]
    after = _forward(model, PackedCollator()(changed))
    assert float((logits[owner != 2] - after[owner != 2]).abs().max()) == 0.0


@pytest.mark.parametrize("release", ["2.11", "first"])
def test_a_scale_the_kernel_cannot_take_falls_back_to_the_per_sample_loop(monkeypatch, release):
    """A model with its own attention scale: passed where the kernel takes one, else the loop runs."""
    model = _tiny("qwen2")
    for layer in model.model.layers:
        layer.self_attn.scaling = 0.5
    use_packed_attention(model, log=lambda *_: None)
    batch = PackedCollator()(_rows())
    reference = _forward(model, batch)
    calls = []
    _with_varlen_stand_in(monkeypatch, release, calls)
    assert torch.allclose(_forward(model, batch), reference, atol=1e-5)
    assert len(calls) == (model.config.num_hidden_layers if release == "2.11" else 0)


def test_lora_under_autocast_skips_the_fp32_copy_of_each_input_and_keeps_it_without():
    """A bf16 base under an fp32 adapter: PEFT casts each adapted layer's input to fp32, which plain
    bf16 needs; under autocast (how medsft trains LoRA on a GPU) the input stays bf16, the adapter's
    matmuls run in bf16 and its fp32 weights still get their gradients."""
    model = _tiny().to(torch.bfloat16)
    lora = add_lora(model, rank=4, alpha=8, dropout=0.0)
    with torch.no_grad():
        for name, parameter in lora.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.1)
    adapter = next(m for n, m in lora.named_modules() if n.endswith("q_proj.lora_A.default"))
    assert adapter.weight.dtype == torch.float32
    seen = []
    adapter.register_forward_pre_hook(lambda module, args: seen.append(args[0].dtype))
    batch = Collator(pad_id=0)(_rows())
    lora.train()
    losses, mask, _ = token_losses(lora, batch)
    plain = float(losses.detach().sum() / mask.sum())
    assert seen == [torch.float32]  # outside autocast PEFT's cast stays (the matmul needs one dtype)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses, mask, _ = token_losses(lora, batch)
        loss = losses.sum() / mask.sum()
    loss.backward()
    assert seen == [torch.float32, torch.bfloat16]
    assert float(loss.detach()) == pytest.approx(plain, rel=2e-2)
    assert adapter.weight.grad is not None and adapter.weight.grad.dtype == torch.float32
    assert float(adapter.weight.grad.abs().max()) > 0


def _lora_pair(dropout: float = 0.0, kind: str = "llama", checkpointing: bool = False, **extra):
    """The same LoRA model twice: as medsft makes it (the adapter's product inside the base product) and with
    PEFT's own forward on every adapted layer."""
    from medsft.models import _fused_lora_class

    plain, fused = _fused_lora_class()
    models = []
    for _ in range(2):
        base = _tiny(kind)
        if checkpointing:  # as load_model does for train.gradient_checkpointing
            base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model = add_lora(base, rank=4, alpha=8, dropout=dropout, gradient_checkpointing=checkpointing, **extra)
        with torch.no_grad():
            for name, parameter in model.named_parameters():
                if "lora_B" in name:
                    parameter.normal_(0, 0.1, generator=torch.Generator().manual_seed(len(name)))
        models.append(model)
    assert sum(type(m) is fused for m in models[0].modules()) == 14  # 7 linear layers in each of 2 layers
    for module in models[1].modules():
        if type(module) is fused:
            module.__class__ = plain
    return models


def _loss_and_grads(model, batch, autocast: bool = False):
    model.train()
    torch.manual_seed(1)  # the same dropout masks in both models
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        losses, mask, _ = token_losses(model, batch)
        loss = losses.sum() / mask.sum()
    loss.backward()
    return float(loss.detach()), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("dropout", [0.0, 0.1])
@pytest.mark.parametrize("kind, checkpointing", [("llama", False), ("qwen2", False), ("llama", True)])  # Qwen2: q, k, v have a bias
def test_lora_adds_its_product_inside_the_base_product_with_peft_s_loss_and_gradients(dropout, kind, checkpointing,
                                                                                       monkeypatch):
    """The adapter's product inside the base product: while training, one product of
    [x | A(dropout(x))·s] with [W | B] where a layer's output is at least 2/3 of its input (q, o,
    gate and up of each of the 2 layers: 8 calls, 16 when checkpointing runs the forward again in
    backward), addmm(base(x), A(dropout(x))·s, Bᵀ) elsewhere. PEFT's forward never runs, and the loss
    and every adapter gradient are PEFT's (fp32: to rounding; bf16 autocast: 5e-2)."""
    import medsft.models as models
    from peft.tuners.lora.layer import Linear

    fused, plain = _lora_pair(dropout, kind, checkpointing)
    batch = PackedCollator()(_rows())
    expected_loss, expected = _loss_and_grads(plain, batch)
    calls, joins = [], []
    monkeypatch.setattr(Linear, "forward", lambda *a, **k: calls.append(1))
    monkeypatch.setattr(type(next(m for m in fused.modules() if isinstance(m, Linear))), "peft_forward",
                        lambda *a, **k: calls.append(1))
    product = models._joined_lora_product()
    monkeypatch.setattr(product, "apply", lambda *a, apply=product.apply: joins.append(1) or apply(*a))
    loss, grads = _loss_and_grads(fused, batch)
    assert not calls and len(joins) == (16 if checkpointing else 8)
    assert loss == pytest.approx(expected_loss, rel=1e-6)
    assert grads.keys() == expected.keys() and len(grads) == 28
    for name, grad in grads.items():
        assert float(grad.abs().max()) > 0, name
        torch.testing.assert_close(grad, expected[name], rtol=1e-5, atol=1e-6)
    monkeypatch.undo()
    fused, plain = _lora_pair(dropout, kind, checkpointing)
    low_loss, low = _loss_and_grads(fused, batch, autocast=True)
    assert low_loss == pytest.approx(expected_loss, rel=2e-2)
    for name, grad in low.items():
        assert float((grad - expected[name]).norm() / expected[name].norm()) < 5e-2, name


def test_what_the_fused_forward_does_not_cover_goes_to_peft_s_forward(tmp_path, monkeypatch):
    """A merged adapter, disabled adapters, DoRA, a bf16 input to an fp32 adapter outside autocast
    (PEFT casts it) give PEFT's outputs; an input another dtype than the base's is PEFT's error;
    hooks on the adapter or the base run; the saved adapter is PEFT's, key for key."""
    from peft import PeftModel
    from safetensors.torch import load_file

    batch = Collator(pad_id=0)(_rows())
    fused, plain = _lora_pair()
    for model in (fused, plain):
        model.eval()
    calls = []
    fused_class = type(next(m for n, m in fused.named_modules() if n.endswith("q_proj")))
    with monkeypatch.context() as patch:  # without grad every adapted layer takes the addmm, none PEFT's forward
        patch.setattr(fused_class, "peft_forward", lambda *a, **k: calls.append(1))
        patch.setattr(torch, "addmm", lambda *a, addmm=torch.addmm: calls.append("addmm") or addmm(*a))
        logits = [_forward_padded(fused, batch)]
    assert calls == ["addmm"] * 14
    logits.append(_forward_padded(plain, batch))
    torch.testing.assert_close(logits[0], logits[1])
    for model in (fused, plain):
        model.save_pretrained(tmp_path / str(id(model)))
    saved = [load_file(tmp_path / str(id(m)) / "adapter_model.safetensors") for m in (fused, plain)]
    assert saved[0].keys() == saved[1].keys()
    for key in saved[0]:
        assert torch.equal(saved[0][key], saved[1][key]), key
    reloaded = PeftModel.from_pretrained(_tiny(), str(tmp_path / str(id(fused)))).eval()
    torch.testing.assert_close(_forward_padded(reloaded, batch), logits[1])
    with fused.disable_adapter(), plain.disable_adapter():
        torch.testing.assert_close(_forward_padded(fused, batch), _forward_padded(plain, batch))
        torch.testing.assert_close(_forward_padded(fused, batch), _forward_padded(_tiny(), batch))
    for model in (fused, plain):
        model.merge_adapter()
    torch.testing.assert_close(_forward_padded(fused, batch), logits[1], rtol=1e-5, atol=1e-5)
    fused, plain = _lora_pair(dora=True)
    torch.testing.assert_close(_forward_padded(fused.eval(), batch), _forward_padded(plain.eval(), batch))
    fused, plain = _lora_pair()
    for model in (fused, plain):
        model.get_base_model().to(torch.bfloat16)
        for name, parameter in model.named_parameters():
            if "lora_" in name:
                parameter.data = parameter.data.float()
    torch.testing.assert_close(_forward_padded(fused.eval(), batch), _forward_padded(plain.eval(), batch))
    layers = [next(m for n, m in model.named_modules() if n.endswith("layers.0.self_attn.q_proj")) for model in (fused, plain)]
    for layer in layers:  # an fp32 input to a bf16 base outside autocast is an error in both, not a silent cast
        with pytest.raises(RuntimeError):
            layer(torch.ones(1, 40, layer.in_features))
    fired = []
    fused, plain = _lora_pair()
    layer = next(m for n, m in fused.named_modules() if n.endswith("layers.1.self_attn.q_proj"))  # its input has grad
    layer.lora_B["default"].register_full_backward_hook(lambda *a: fired.append("lora_B"))
    layer.base_layer.register_full_backward_hook(lambda *a: fired.append("base"))
    _loss_and_grads(fused, batch)
    assert sorted(fired) == ["base", "lora_B"]  # the hooked layer ran PEFT's forward


def _forward_padded(model, batch: dict) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False).logits


def test_lora_on_a_bf16_gpu_trains_under_autocast(monkeypatch):
    from medsft.models import choose_dtype

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert choose_dtype("auto", "lora") == (torch.bfloat16, "bf16")
    assert choose_dtype("bfloat16", "lora") == (torch.bfloat16, "bf16")
    assert choose_dtype("auto", "full") == (torch.float32, "bf16")
    assert choose_dtype("auto", "lora", engine=True) == (torch.bfloat16, None)  # as checked under DeepSpeed/FSDP
    assert choose_dtype("auto", "full", engine=True) == (torch.float32, "bf16")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert choose_dtype("auto", "lora") == (torch.float32, None)
    assert choose_dtype("bfloat16", "lora") == (torch.bfloat16, None)


def test_a_model_with_its_own_attention_code_is_padded_with_a_line_saying_so():
    model = _tiny()
    lines = []
    type(model)._supports_attention_backend, saved = False, type(model)._supports_attention_backend
    try:
        assert use_packed_attention(model, log=lines.append) is False
    finally:
        type(model)._supports_attention_backend = saved
    assert "batches are padded" in lines[0] and model.config._attn_implementation == "sdpa"


@pytest.mark.parametrize("packed", [False, True], ids=["padded", "padding-free"])
def test_the_chunked_loss_has_the_plain_loss_and_gradients(packed, monkeypatch):
    """LoRA on the attention and MLP, the chunks smaller than one sample: same losses and gradients."""
    model = _tiny()
    if packed:
        use_packed_attention(model, log=lambda *_: None)
    lora = add_lora(model, rank=4, alpha=8, dropout=0.0)
    with torch.no_grad():
        for name, parameter in lora.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.1)
    lora.train()
    batch = (PackedCollator() if packed else Collator(pad_id=0))(_rows())

    def loss_and_grads(**options):
        lora.zero_grad()
        losses, mask, _ = token_losses(lora, batch, **options)
        (losses.sum() / mask.sum()).backward()
        return losses.detach(), {n: p.grad.clone() for n, p in lora.named_parameters() if p.requires_grad}

    plain_losses, plain_grads = loss_and_grads()
    import medsft.train.loss as loss_module
    from torch._dynamo.utils import counters

    calls = []
    apply = loss_module.FrozenHeadLoss.apply
    monkeypatch.setattr(loss_module.FrozenHeadLoss, "apply", lambda *args: calls.append(1) or apply(*args))
    ways = {"chunked": dict(chunk_tokens=3)}
    if packed:  # train.compile's loss: the per-chunk cross-entropy under torch.compile
        ways["compiled"] = dict(chunk_tokens=3, compiled=True)
    for way, options in ways.items():
        torch._dynamo.reset()  # whatever compiled before in this process is compiled again here
        counters.clear()
        calls.clear()
        losses, grads = loss_and_grads(**options)
        assert torch.allclose(plain_losses, losses, atol=1e-5), way
        for name, grad in plain_grads.items():
            assert torch.allclose(grad, grads[name], atol=1e-5, rtol=1e-4), (way, name)
        supervised = int((batch["labels"][:, 1:] != -100).sum())
        assert len(calls) == -(-supervised // 3), way  # every chunk of 3 supervised positions: FrozenHeadLoss
        assert (counters["stats"]["unique_graphs"] > 0) == ("compiled" in options), way
    assert head_gives_logits(lora)


def test_a_trained_head_keeps_the_recomputed_chunks_and_the_plain_gradients(monkeypatch):
    """Full fine-tuning trains the head: its chunks are recomputed in backward (compiled with train.compile),
    gradients as the plain loss's."""
    import medsft.train.loss as loss_module
    from torch._dynamo.utils import counters

    monkeypatch.setattr(loss_module.FrozenHeadLoss, "apply", lambda *args: pytest.fail("a trained head went frozen"))
    model = _tiny().train()
    batch = PackedCollator()(_rows())

    def grads(**options):
        model.zero_grad()
        losses, mask, _ = token_losses(model, batch, **options)
        (losses.sum() / mask.sum()).backward()
        return losses.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}

    plain_losses, plain = grads()
    assert plain["lm_head.weight"].abs().sum() > 0
    for options in (dict(chunk_tokens=3), dict(chunk_tokens=3, compiled=True)):
        torch._dynamo.reset()
        counters.clear()
        chunked_losses, chunked = grads(**options)
        assert torch.allclose(plain_losses, chunked_losses, atol=1e-5), options
        for name, grad in plain.items():
            assert torch.allclose(grad, chunked[name], atol=1e-5, rtol=1e-4), (options, name)
        assert (counters["stats"]["unique_graphs"] > 0) == ("compiled" in options), options


def test_the_loss_leaves_no_hook_behind_and_gives_way_where_it_cannot_hook():
    """The decoder stack's output is read through a hook removed even when the forward fails; under
    nn.DataParallel (copies of the decoder on several GPUs) the model's own hidden states are asked for."""
    import medsft.train.loss as loss_module

    model = _tiny().train()
    decoder = model.get_decoder()
    batch = PackedCollator()(_rows())
    batch["input_ids"] = batch["input_ids"] + 1000  # outside the vocabulary: the embedding fails
    with pytest.raises(IndexError):
        token_losses(model, batch, chunk_tokens=3)
    assert not decoder._forward_hooks
    assert loss_module._decoder(model) is decoder
    assert loss_module._decoder(torch.nn.DataParallel(model)) is None


def test_a_model_that_caps_its_logits_after_the_head_keeps_the_plain_loss():
    from transformers import Gemma2Config, Gemma2ForCausalLM

    model = Gemma2ForCausalLM(Gemma2Config(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                           num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                                           final_logit_softcapping=2.0))
    assert head_gives_logits(model) is False
    assert head_gives_logits(_tiny()) is True


def test_length_grouping_keeps_every_window_s_records_and_pads_less():
    generator = random.Random(3)
    lengths = [generator.choice([20, 40, 300, 900]) for _ in range(400)]
    owner = {i: "medical" if i % 10 < 7 else "general" for i in range(400)}
    order = list(range(400))
    generator.shuffle(order)
    grouped = group_by_length(order, lengths, batch_size=4, window_batches=8, seed="7:mixed")
    assert grouped == group_by_length(order, lengths, batch_size=4, window_batches=8, seed="7:mixed")
    for start in range(0, 400, 32):  # same records in every window, so the same shares in every window
        assert sorted(grouped[start:start + 32]) == sorted(order[start:start + 32])
    assert sum(owner[i] == "medical" for i in grouped[:192]) == sum(owner[i] == "medical" for i in order[:192])
    before, after = padding_efficiency(order, lengths, 4), padding_efficiency(grouped, lengths, 4)
    print(f"padding efficiency {before:.3f} -> {after:.3f}")
    assert after > before + 0.2 and after <= 1.0
    assert padding_efficiency([0, 1], [5, 5], 2) == 1.0


def test_a_padding_free_run_trains_like_a_padded_one(tmp_path, tiny_model_dir):
    """The same recipe with padding-free batches, the chunked loss and length grouping: the first
    logged losses per source equal the padded run's (the weights are the same until the first
    update), and the manifest says how the batches were built."""
    from medsft.pipeline.run import train
    from medsft.recipe import load_recipe

    def first_losses(name, *overrides):
        folder = tmp_path / name
        folder.mkdir()
        recipe = load_recipe(_recipe_file(folder, tiny_model_dir), ["monitor.probes=false", *overrides])
        train(recipe, log=lambda *_: None)
        events = [json.loads(line) for line in (folder / "run" / "metrics.jsonl").read_text().splitlines()]
        manifest = json.loads((folder / "run" / "data_manifest.json").read_text())
        first = next(e for e in events if e["event"] == "train")
        return {k: v for k, v in first.items() if k.startswith("train_loss/")}, manifest, events

    padded, padded_manifest, padded_events = first_losses("padded", "train.padding_free=false",
                                                          "train.loss_chunk_tokens=0")
    packed, packed_manifest, packed_events = first_losses("packed", "train.loss_chunk_tokens=16")  # the default is padding-free
    assert packed.keys() == padded.keys() and packed
    for name in padded:
        assert packed[name] == pytest.approx(padded[name], abs=1e-5)
    assert padded_manifest["batches"] == "padded" and packed_manifest["batches"] == "padding-free"
    for before, after in zip(padded_manifest["stages"], packed_manifest["stages"]):  # joining keeps the order
        assert after["trained"]["samples"] == before["trained"]["samples"] and after["trained"]["records"]
    last = [e["eval_loss"] for e in padded_events if "eval_loss" in e][-1]
    assert [e["eval_loss"] for e in packed_events if "eval_loss" in e][-1] == pytest.approx(last, rel=1e-3)

    grouped, grouped_manifest, _ = first_losses("grouped", "train.padding_free=false", "train.group_by_length=true",
                                                "train.length_window=2")
    assert grouped_manifest["batches"] == "padded, grouped by length"
    for before, after in zip(padded_manifest["stages"], grouped_manifest["stages"]):
        assert after["realized_share_samples"] == before["realized_share_samples"]
        assert after["padding_efficiency"] >= before["padding_efficiency"]


def test_lora_trains_as_on_a_bf16_gpu_bf16_base_fp32_adapter_under_the_trainers_autocast(tmp_path, tiny_model_dir,
                                                                                          monkeypatch):
    """On a bf16 GPU, LoRA trains a bf16 base with fp32 adapters under the Trainer's bf16 autocast,
    which wraps only the model's forward and hands back fp32 outputs: the chunked loss's head, the
    validation losses and the monitor's generation (outside autocast) all run. Here on the CPU's
    autocast: the first losses are the fp32 run's within bf16's precision."""
    import medsft.pipeline.run as run_module
    import medsft.pipeline.stages as stages_module
    from medsft.pipeline.run import train
    from medsft.recipe import load_recipe

    def first_losses(name):
        folder = tmp_path / name
        folder.mkdir()
        recipe = load_recipe(_recipe_file(folder, tiny_model_dir), ["train.loss_chunk_tokens=16"])
        train(recipe, log=lambda *_: None)
        events = [json.loads(line) for line in (folder / "run" / "metrics.jsonl").read_text().splitlines()]
        first = next(e for e in events if e["event"] == "train")
        return {k: v for k, v in first.items() if k.startswith("train_loss/")}, events

    plain, _ = first_losses("fp32")
    as_on_gpu = lambda requested, method, engine=False: (torch.bfloat16, "bf16")  # noqa: E731
    monkeypatch.setattr(run_module, "choose_dtype", as_on_gpu)
    monkeypatch.setattr(stages_module, "choose_dtype", as_on_gpu)
    mixed, events = first_losses("bf16")
    assert mixed.keys() == plain.keys() and mixed
    for name in plain:
        assert mixed[name] == pytest.approx(plain[name], rel=3e-2)
    evaluations = [e for e in events if e["event"] == "eval"]
    assert evaluations and all("eval_loss" in e for e in evaluations)
    assert any("general/accuracy" in e and "general/kl_to_base" in e for e in evaluations)  # generated, scored


@pytest.mark.slow
def test_a_compiled_run_trains_like_an_eager_one(tmp_path, tiny_model_dir):
    """train.compile: every decoder layer compiled, and the first logged losses are the eager run's."""
    from medsft.pipeline.run import train
    from medsft.recipe import load_recipe

    def first_losses(name, *overrides):
        folder = tmp_path / name
        folder.mkdir()
        lines = []
        recipe = load_recipe(_recipe_file(folder, tiny_model_dir), ["monitor.probes=false", "stages.0.max_steps=2",
                                                                    "stages.1.max_steps=2", *overrides])
        train(recipe, log=lambda line, *_: lines.append(str(line)))
        events = [json.loads(line) for line in (folder / "run" / "metrics.jsonl").read_text().splitlines()]
        first = next(e for e in events if e["event"] == "train")
        return {k: v for k, v in first.items() if k.startswith("train_loss/")}, lines

    from torch._dynamo.utils import counters

    eager, eager_lines = first_losses("eager")
    counters.clear()
    compiled, lines = first_losses("compiled", "train.compile=true")
    assert counters["stats"]["unique_graphs"] >= 1  # torch.compile did build graphs
    assert not counters["graph_break"]  # each layer one graph: nothing hooks the layers' outputs
    assert compiled.keys() == eager.keys() and compiled
    for name in eager:
        assert compiled[name] == pytest.approx(eager[name], rel=1e-4)
    assert any("train.compile: 2 decoder layers compiled" in line for line in lines)
    assert not any("train.compile" in line for line in eager_lines)
