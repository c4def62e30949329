"""Padding-free batches and the chunked loss on a GPU: the same checks as tests/test_padding_free.py,
on CUDA, in fp32 and in bf16, with the attention implementations installed there.

For each attention implementation (SDPA through medsft's per-sample kernel; FlashAttention-2 when
the flash_attn package is installed) and dtype: changing one packed sample moves no other sample's
logits; per-sample losses equal the padded batch's; the chunked loss's gradients equal the plain
loss's, with the frozen head's gradient made in forward as with it recomputed in backward, compiled as
eager. In bf16 also: torch's variable-length kernel (one call per layer) gives the per-sample loop's
LoRA gradients, LoRA under autocast (inputs left in bf16) gives the gradients of PEFT's fp32 casts, and
the adapter's product inside the base product gives those of PEFT's forward. With liger_kernel installed,
last (Liger patches transformers for the rest of the process): train.liger's loss and LoRA gradients against
the same model without Liger's kernels, bf16 autocast (2e-2 / 5e-2). Tolerances: fp32 1e-4 (GPU kernels differ in summation order), bf16 5e-2 on losses (bf16
keeps about 3 significant digits); a sample that saw another would move its logits far more than
the 1e-3 allowed. Exits 1 on any failure.

    python bench/gpu_checks.py
"""

from __future__ import annotations

import contextlib
import importlib.util
import random
import sys

import torch

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"  # --cpu: a dry run of the same checks


def rows(lengths=(37, 120, 9, 64, 200, 15), vocab=512, seed=0) -> list[dict]:
    generator = random.Random(seed)
    out = []
    for i, n in enumerate(lengths):
        ids = [generator.randrange(vocab) for _ in range(n)]
        out.append({"input_ids": ids, "labels": [-100] * 3 + ids[3:], "source_id": i % 2, "record_index": i})
    return out


def model_for(implementation: str, dtype):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=512, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, attn_implementation=implementation)
    with torch.device(DEVICE):
        return Qwen2ForCausalLM(config).to(dtype).eval()


def to_cuda(batch: dict) -> dict:
    return {k: v.to(DEVICE) if torch.is_tensor(v) else v for k, v in batch.items()}


def check(implementation: str, dtype) -> list[tuple[str, float, float]]:
    from medsft.models import add_lora, use_packed_attention
    from medsft.train.collate import Collator, PackedCollator
    from medsft.train.loss import per_sample, token_losses

    results = []
    padded_model = model_for("sdpa", dtype)
    with torch.no_grad():
        padded = to_cuda(Collator(0)(rows()))
        reference, reference_mask, _ = token_losses(padded_model, padded)
        reference = per_sample(reference.double(), padded) / per_sample(reference_mask.double(), padded)
    model = model_for(implementation, dtype)
    use_packed_attention(model, log=print)
    loss_tolerance = 1e-4 if dtype == torch.float32 else 5e-2
    with torch.no_grad():
        packed = to_cuda(PackedCollator()(rows()))
        losses, mask, _ = token_losses(model, packed)
        mine = per_sample(losses.double(), packed) / per_sample(mask.double(), packed)
        results.append(("per-sample loss vs padded, max |diff|", float((mine - reference).abs().max()), loss_tolerance))
        changed = rows()
        changed[1]["input_ids"] = [(t + 1) % 512 for t in changed[1]["input_ids"]]
        other = to_cuda(PackedCollator()(changed))
        keys = ("input_ids", "position_ids", "segment_bounds", "cu_seq_lens_q", "cu_seq_lens_k", "max_length_q", "max_length_k")
        before = model(**{k: packed[k] for k in keys}, use_cache=False).logits[0]
        after = model(**{k: other[k] for k in keys}, use_cache=False).logits[0]
        owner = packed["sample_index"][0]
        results.append(("other samples' logits after changing one, max |diff|",
                        float((before[owner != 1] - after[owner != 1]).abs().max()), 1e-3))
    lora = add_lora(model, rank=8, alpha=16, dropout=0.0)
    with torch.no_grad():
        for name, parameter in lora.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.05)
    lora.train()

    from unittest import mock

    def grads(chunk: int, autocast: bool = False, compiled: bool = False, recompute: bool = False) -> dict:
        lora.zero_grad()
        earlier = mock.patch("medsft.train.loss.frozen_plain_head", return_value=False) if recompute else None
        with torch.autocast(DEVICE, dtype=torch.bfloat16, enabled=autocast), earlier or contextlib.nullcontext():
            losses, mask, _ = token_losses(lora, packed, chunk_tokens=chunk, compiled=compiled)
        (losses.sum() / mask.sum()).backward()
        return {n: p.grad.float().clone() for n, p in lora.named_parameters() if p.requires_grad}

    def worst(a: dict, b: dict) -> float:
        return max(float((a[n] - b[n]).abs().max() / (a[n].abs().max() + 1e-12)) for n in a)

    plain, chunked = grads(0), grads(64)
    tolerance = 1e-4 if dtype == torch.float32 else 5e-2
    results.append(("chunked vs plain LoRA gradients, max relative |diff|", worst(plain, chunked), tolerance))
    results.append(("chunked LoRA gradients, frozen head's gradient in forward vs head recomputed in backward, "
                    "max relative |diff|", worst(grads(64, recompute=True), chunked), tolerance))
    results.append(("chunked LoRA gradients, compiled loss vs eager, max relative |diff|",
                    worst(chunked, grads(64, compiled=True)), tolerance))
    if dtype == torch.bfloat16:  # how medsft trains LoRA on a bf16 GPU: fp32 adapters under bf16 autocast
        import medsft.models as models

        calls = []
        real = models._varlen_attention
        with mock.patch.object(models, "_varlen_attention", lambda *a: calls.append(1) or real(*a)):
            under_autocast = grads(64, autocast=True)
        # FlashAttention-2 (model.attn_implementation) keeps its own variable-length path
        kernel_used = models._VARLEN and DEVICE == "cuda" and implementation == "sdpa"
        expected = model.config.num_hidden_layers if kernel_used else 0
        results.append((f"variable-length kernel calls in one forward: {len(calls)}, expected {expected}, off by",
                        abs(len(calls) - expected), 0))
        with mock.patch.object(models, "_VARLEN", None):
            per_sample_loop = grads(64, autocast=True)
        results.append(("LoRA gradients, variable-length kernel vs per-sample loop, max relative |diff|",
                        worst(per_sample_loop, under_autocast), 5e-2))
        results.append(("LoRA gradients, autocast (no fp32 input copies) vs PEFT's casts, max relative |diff|",
                        worst(chunked, under_autocast), 5e-2))
        plain_class, fused_class = models._fused_lora_class()
        adapted = [m for m in lora.modules() if type(m) is fused_class]
        for module in adapted:
            module.__class__ = plain_class
        peft_forward = grads(64, autocast=True)
        for module in adapted:
            module.__class__ = fused_class
        results.append((f"LoRA gradients, autocast, the adapter inside the base product ({len(adapted)} layers) vs PEFT's "
                        "forward, max relative |diff|", worst(peft_forward, under_autocast), 5e-2))
    return results


def main() -> int:
    if DEVICE == "cpu" and "--cpu" not in sys.argv:
        print("no CUDA device: nothing to check here (--cpu runs the same checks on the CPU)")
        return 0
    implementations = ["sdpa"] + (["flash_attention_2"] if importlib.util.find_spec("flash_attn") else [])
    print(f"{torch.cuda.get_device_name() if DEVICE == 'cuda' else 'CPU'}, torch {torch.__version__}; flash_attn "
          f"{'installed' if len(implementations) > 1 else 'not installed'}; liger_kernel "
          f"{'installed' if importlib.util.find_spec('liger_kernel') else 'not installed'}; torch's variable-length "
          f"attention {'present' if __import__('medsft.models').models._find_varlen() else 'absent'}")
    ok = True
    print("| attention | dtype | check | value | tolerance | |\n|---|---|---|---|---|---|")
    for implementation in implementations:
        for dtype in (torch.float32, torch.bfloat16):
            for name, value, tolerance in check(implementation, dtype):
                good = value <= tolerance
                ok &= good
                print(f"| {implementation} | {str(dtype).split('.')[1]} | {name} | {value:.3g} | {tolerance:g} | "
                      f"{'ok' if good else 'FAILED'} |", flush=True)
    if DEVICE == "cuda" and importlib.util.find_spec("liger_kernel"):  # last: Liger patches transformers for good
        for name, value, tolerance in check_liger():
            good = value <= tolerance
            ok &= good
            print(f"| sdpa | bfloat16 | {name} | {value:.3g} | {tolerance:g} | {'ok' if good else 'FAILED'} |", flush=True)
    return 0 if ok else 1


def check_liger() -> list[tuple[str, float, float]]:
    """train.liger: the same LoRA model, padding-free, under bf16 autocast, with and without Liger's
    RMSNorm and SwiGLU kernels (models.apply_liger_kernels; not its RoPE): losses and LoRA gradients."""
    from medsft.models import add_lora, apply_liger_kernels, use_packed_attention
    from medsft.train.collate import PackedCollator
    from medsft.train.loss import token_losses

    batch = to_cuda(PackedCollator()(rows()))
    results = []
    for liger in (False, True):
        model = model_for("sdpa", torch.bfloat16)
        if liger:
            apply_liger_kernels(model)
        use_packed_attention(model, log=lambda *_: None)
        lora = add_lora(model, rank=8, alpha=16, dropout=0.0)
        with torch.no_grad():
            for name, parameter in lora.named_parameters():
                if "lora_B" in name:
                    parameter.normal_(0, 0.05, generator=torch.Generator(DEVICE).manual_seed(len(name)))
        lora.train()
        with torch.autocast(DEVICE, dtype=torch.bfloat16):
            losses, mask, _ = token_losses(lora, batch, chunk_tokens=64)
            loss = losses.sum() / mask.sum()
        loss.backward()
        results.append((float(loss.detach()), {n: p.grad.float() for n, p in lora.named_parameters() if p.requires_grad}))
    (plain_loss, plain), (liger_loss, liger) = results
    worst = max(float((liger[n] - plain[n]).abs().max() / (plain[n].abs().max() + 1e-12)) for n in plain)
    return [("train.liger: loss vs without Liger, relative |diff|", abs(liger_loss - plain_loss) / abs(plain_loss), 2e-2),
            ("train.liger: LoRA gradients vs without Liger, max relative |diff|", worst, 5e-2)]


if __name__ == "__main__":
    sys.exit(main())
