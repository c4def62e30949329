"""One LoRA layer's forward + backward: medsft's adapter inside the base product against PEFT's forward.

PEFT computes base(x) + B(A(dropout(x)))·s: B's output is written, scaled and added, and in backward
the output's gradient is scaled into a new tensor and read twice more. medsft (models.py,
`_lora_forward_fused`) puts the adapter inside the base product: the joined product
[x | A(x)·s]·[W | B]ᵀ where the layer's output is at least 2/3 of its input, addmm(base(x), A(x)·s, Bᵀ)
elsewhere. Timed on Qwen2-1.5B's layer shapes (q, k, gate, down; q and k with a bias), LoRA r8, at
--rows tokens: `peft`, `addmm` (addmm on every layer) and `medsft` (what training runs), eager and
under torch.compile. On CUDA a bf16 base and fp32 adapters under bf16 autocast (how medsft trains LoRA
there); on CPU fp32. The same layer, input and output gradient for every way. Correctness beside the
time: the output and the gradients of x, A and B equal PEFT's (relative 1e-4 in fp32, 2e-2 in bf16);
exits 1 if not. On a CPU the saved passes over memory weigh far less than on a GPU, whose matrix
units outrun its memory about ten times more.

    .venv/bin/python bench/lora_linear.py [--rows 4096] [--repeats 5] [--no-compile]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from unittest import mock

import torch

LAYERS = {"q_proj": (1536, 1536, True), "k_proj": (1536, 256, True), "gate_proj": (1536, 8960, False),
          "down_proj": (8960, 1536, False)}  # Qwen2-1.5B: (input, output, bias)


def lora_layer(inputs: int, outputs: int, bias: bool, device: str, dtype):
    """A PEFT LoRA layer (r8, alpha 16, no dropout) over a frozen Linear: medsft's, and PEFT's own."""
    from peft import LoraConfig, get_peft_model

    import medsft.models as models

    torch.manual_seed(0)
    base = torch.nn.Sequential(torch.nn.Linear(inputs, outputs, bias=bias)).to(device, dtype)
    model = get_peft_model(base, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=["0"]))
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.02)
    models.prepare_adapter_layers(model)
    return model.base_model.model[0]


def way(layer, name: str):
    """The layer as `name` runs it: a context that sets its class and the joining threshold."""
    import medsft.models as models

    plain, fused = models._fused_lora_class()
    layer.__class__ = plain if name == "peft" else fused
    return mock.patch.object(models, "JOIN_FROM", float("inf")) if name == "addmm" else contextlib.nullcontext()


def run(layer, x, grad, autocast: bool, compiled: bool):
    """One forward + backward; (output, gradients of x, A and B)."""
    x = x.detach().requires_grad_()
    for parameter in layer.parameters():
        parameter.grad = None
    call = torch.compile(layer, dynamic=False) if compiled else layer
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=autocast):
        out = call(x)
    out.backward(grad)
    a, b = layer.lora_A["default"].weight.grad, layer.lora_B["default"].weight.grad
    return out.detach().float(), x.grad.float(), a.float(), b.float()


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-12))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=0, help="tokens per step (default: 32768 on CUDA, 4096 on CPU)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-compile", action="store_true")
    args = parser.parse_args()
    cuda = torch.cuda.is_available()
    device, dtype = ("cuda", torch.bfloat16) if cuda else ("cpu", torch.float32)
    rows = args.rows or (32768 if cuda else 4096)
    tolerance = 2e-2 if cuda else 1e-4
    where = f"bf16 base, fp32 adapter, bf16 autocast on {torch.cuda.get_device_name()}" if cuda else "fp32 on CPU"
    print(f"LoRA r8 layers of Qwen2-1.5B, {rows} rows, {where}; median of {args.repeats} forward + backward\n")
    print("| layer | compiled | way | ms | vs peft | output, grad x, A, B: max relative diff vs peft | |")
    print("|---|---|---|---|---|---|---|")
    ok = True
    for layer_name, (inputs, outputs, bias) in LAYERS.items():
        layer = lora_layer(inputs, outputs, bias, device, dtype)
        generator = torch.Generator(device).manual_seed(1)
        x = torch.randn(1, rows, inputs, device=device, dtype=dtype, generator=generator)
        grad = torch.randn(1, rows, outputs, device=device, dtype=dtype, generator=generator) / rows ** 0.5
        for compiled in [False] if args.no_compile else [False, True]:
            torch._dynamo.reset()
            reference, base_ms = None, None
            for name in ("peft", "addmm", "medsft"):
                with way(layer, name):
                    result = run(layer, x, grad, cuda, compiled)  # warm-up (and compiling), checked
                    times = []
                    for _ in range(args.repeats):
                        if cuda:
                            torch.cuda.synchronize()
                        started = time.perf_counter()
                        run(layer, x, grad, cuda, compiled)
                        if cuda:
                            torch.cuda.synchronize()
                        times.append((time.perf_counter() - started) * 1e3)
                ms = statistics.median(times)
                reference, base_ms = reference or result, base_ms or ms
                worst = max(relative(a, b) for a, b in zip(result, reference))
                good = worst <= tolerance
                ok &= good
                print(f"| {layer_name} ({inputs}->{outputs}) | {'yes' if compiled else 'no'} | {name} | {ms:.2f} | "
                      f"{base_ms / ms:.2f}x | {worst:.1e} | {'ok' if good else 'FAILED'} |", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
