"""Memory and time of the loss step: the chunked loss against the loss over the full fp32 logits.

One LoRA forward + backward of a Qwen2-shaped model (hidden 256, 4 layers, random init) on 8 x 1024
tokens (the first 40% of each a prompt, not supervised), at vocabularies of 32k and 152k (Qwen2's).
Each measurement runs in its own process, so its peak resident memory is its own: `peak RSS` is
the process's peak, `step peak` what the step added to the memory resident before it (on CUDA,
in bf16: the GPU memory PyTorch allocated, peak and added by the step). The step is
timed on a second forward + backward after a first one. Correctness beside it: the loss and the
LoRA gradients' norm of the chunked loss equal the plain loss's (relative 1e-5; 2e-2 in bf16 on
CUDA, where the chunks' matmuls round differently); exits 1 if not.

    .venv/bin/python bench/loss_memory.py [--vocabs 32000,152064] [--batch 8] [--seq 1024] [--chunk 1024]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def resident_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def measure(vocab: int, chunk: int, batch: int, seq: int, recompute: bool = False) -> dict:
    """One configuration, in this process: what the parent prints. recompute: the chunked loss as it
    was before, the frozen head's logits recomputed in backward instead of its gradient made in forward."""
    import contextlib
    from unittest import mock

    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from medsft.models import add_lora
    from medsft.train.loss import token_losses

    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=vocab, hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                         num_key_value_heads=2, intermediate_size=1024, tie_word_embeddings=True)
    cuda = torch.cuda.is_available()
    device, dtype = ("cuda", torch.bfloat16) if cuda else ("cpu", torch.float32)
    with torch.device(device):
        model = add_lora(Qwen2ForCausalLM(config).to(dtype), rank=8, alpha=16, dropout=0.0)
    with torch.no_grad():  # B = 0 would leave A's gradient 0: give the adapter a direction
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.02)
    model.train()
    ids = torch.randint(0, vocab, (batch, seq), device=device)
    labels = ids.clone()
    labels[:, : int(seq * 0.4)] = -100
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels,
              "source_ids": torch.zeros(batch, dtype=torch.long)}

    def step() -> float:
        model.zero_grad(set_to_none=True)
        earlier = mock.patch("medsft.train.loss.frozen_plain_head", return_value=False) if recompute else None
        with earlier or contextlib.nullcontext():
            losses, mask, _ = token_losses(model, inputs, chunk_tokens=chunk)
        loss = losses.sum() / mask.sum()
        loss.backward()
        return float(loss)

    before = torch.cuda.memory_allocated() if cuda else resident_bytes()
    step()
    if cuda:
        torch.cuda.synchronize()
    peak_after_first = torch.cuda.max_memory_allocated() if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    started = time.perf_counter()
    loss = step()
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    grads = [p.grad.double().norm() for p in model.parameters() if p.grad is not None]
    return {"vocab": vocab, "chunk": chunk, "loss": loss, "grad_norm": float(torch.stack(grads).norm()),
            "peak_rss": torch.cuda.max_memory_allocated() if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "step_peak": peak_after_first - before, "seconds": seconds}


def in_child(vocab: int, chunk: int, args, recompute: bool = False) -> dict:
    command = [sys.executable, __file__, "--child", f"{vocab},{chunk},{int(recompute)}", "--batch", str(args.batch),
               "--seq", str(args.seq)]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--vocabs", default="32000,152064")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=1024)
    parser.add_argument("--chunk", type=int, default=1024)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        vocab, chunk, recompute = (int(x) for x in args.child.split(","))
        print(json.dumps(measure(vocab, chunk, args.batch, args.seq, bool(recompute))))
        return 0
    import torch

    gb = 1024 ** 3
    rows = ["| vocab | loss | peak RSS | step peak | step seconds | step peak vs plain | time vs plain |",
            "|---|---|---|---|---|---|---|"]
    ok = True
    for vocab in (int(v) for v in args.vocabs.split(",")):
        plain, before = in_child(vocab, 0, args), in_child(vocab, args.chunk, args, recompute=True)
        chunked = in_child(vocab, args.chunk, args)
        for name, run in (("full fp32 logits", plain), (f"chunked ({args.chunk} tokens), head recomputed in backward (before)", before),
                          (f"chunked ({args.chunk} tokens), head's gradient made in forward", chunked)):
            rows.append(f"| {vocab:,} | {name} | {run['peak_rss'] / gb:.2f} GB | {run['step_peak'] / gb:.2f} GB | "
                        f"{run['seconds']:.2f} | {plain['step_peak'] / run['step_peak']:.1f}x lower | "
                        f"{run['seconds'] / plain['seconds']:.2f}x |")
        tolerance = 2e-2 if torch.cuda.is_available() else 1e-5  # bf16 matmuls in chunks round differently
        for label, run in (("recomputed head (before)", before), ("head's gradient in forward", chunked)):
            same = (abs(run["loss"] - plain["loss"]) <= tolerance * abs(plain["loss"])
                    and abs(run["grad_norm"] - plain["grad_norm"]) <= tolerance * abs(plain["grad_norm"]))
            ok &= same
            print(f"check vocab {vocab}, {label}: loss {plain['loss']:.6f} vs {run['loss']:.6f}, LoRA grad norm "
                  f"{plain['grad_norm']:.6e} vs {run['grad_norm']:.6e} (relative {tolerance:g}): {'ok' if same else 'FAILED'}")
        print(f"vocab {vocab}: the head's gradient in forward against the recomputed head: step peak "
              f"{before['step_peak'] / chunked['step_peak']:.2f}x lower, {chunked['seconds'] / before['seconds']:.2f}x the time")
    where = f"bf16 on {torch.cuda.get_device_name()} (peak = GPU memory allocated)" if torch.cuda.is_available() else "fp32 on CPU"
    print(f"\nQwen2-shaped (hidden 256, 4 layers), LoRA r8, {args.batch} x {args.seq} tokens, 60% supervised, {where}\n")
    print("\n".join(rows))
    if not ok:
        print("correctness check FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
