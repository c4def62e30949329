"""Padding-free batches against padded ones: real tokens per second of LoRA training steps.

The same records (bench/workload.py: a realistic length mix, medsft's encoding and order), the same
random-init model, LoRA r8 on every linear layer, batch 8, AdamW; each path trains the same
batches for --steps steps (the first step is a warm-up, not timed). Paths:

  padded                  medsft's padded batches, the loss over the full fp32 logits (the baseline)
  padded, by length       the same records grouped by length within windows of 32 batches
  padding-free            one row per batch, positions restarting per sample, per-sample attention
  padding-free, chunked   and the loss over supervised positions only, 1,024 tokens at a time

and, to find the crossover, the same paths on samples that all have one length (nothing to unpad).
Correctness beside the timing: on the first batch the padding-free per-sample losses equal the
padded ones (1e-4), and after the last step the padded and padding-free runs' losses agree (1e-3,
relative: the same batches in the same order, only summation order differs). Exits 1 otherwise.

    .venv/bin/python bench/padding_free.py [--steps 20] [--shapes qwen2-small,attention-heavy]
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import workload  # noqa: E402

from medsft.data.mixture import group_by_length, padding_efficiency  # noqa: E402
from medsft.models import add_lora, use_packed_attention  # noqa: E402
from medsft.train.collate import Collator, PackedCollator  # noqa: E402
from medsft.train.loss import per_sample, token_losses  # noqa: E402


def batches(rows: list[dict], batch: int, steps: int) -> list[list[dict]]:
    return [rows[i * batch:(i + 1) * batch] for i in range(steps)]


def train(base, groups: list[list[dict]], packed: bool, chunk: int, pad_id: int) -> dict:
    """Time LoRA steps over `groups`; the first step is not timed."""
    model = copy.deepcopy(base)
    if packed:
        use_packed_attention(model, log=lambda *_: None)
    model = add_lora(model, rank=8, alpha=16, dropout=0.0)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-4)
    collate = PackedCollator() if packed else Collator(pad_id)
    real = padded = 0
    first_losses, last_loss, started = None, None, None
    for number, group in enumerate(groups):
        if number == 1:
            started = time.perf_counter()
            real = padded = 0
        batch = collate(group)
        losses, mask, _ = token_losses(model, batch, chunk_tokens=chunk)
        loss = losses.sum() / mask.sum()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if number == 0:
            first_losses = per_sample(losses.detach(), batch) / per_sample(mask.double(), batch)
        last_loss = float(loss.detach())
        real += sum(len(r["input_ids"]) for r in group)
        padded += batch["input_ids"].numel()
    seconds = time.perf_counter() - started
    return {"real_tokens_per_second": real / seconds, "tokens_in_batches": padded, "real_tokens": real,
            "first_losses": first_losses, "last_loss": last_loss, "seconds": seconds}


def uniform(rows: list[dict], length: int) -> list[dict]:
    """Every sample cut to `length` tokens (longer ones only), so no batch has padding."""
    return [{**r, "input_ids": r["input_ids"][:length], "labels": r["labels"][:length]}
            for r in rows if len(r["input_ids"]) >= length]


def compare(name: str, base, rows: list[dict], args, pad_id: int) -> tuple[list[str], bool]:
    groups = batches(rows, args.batch, args.steps)
    lengths = [len(r["input_ids"]) for r in rows]
    order = group_by_length(list(range(len(rows))), lengths, args.batch, 32, "bench")
    grouped = batches([rows[i] for i in order], args.batch, args.steps)
    runs = {
        "padded": train(base, groups, False, 0, pad_id),
        "padded, by length": train(base, grouped, False, 0, pad_id),
        "padding-free": train(base, groups, True, 0, pad_id),
        "padding-free, chunked loss": train(base, groups, True, 1024, pad_id),
    }
    baseline = runs["padded"]
    ok = True
    for other in ("padding-free", "padding-free, chunked loss"):
        first = float((runs[other]["first_losses"] - baseline["first_losses"]).abs().max())
        last = abs(runs[other]["last_loss"] - baseline["last_loss"]) / abs(baseline["last_loss"])
        same = first <= 1e-4 and last <= 1e-3
        ok &= same
        print(f"  check {name} / {other}: first-batch per-sample loss |diff| {first:.2e} (<= 1e-4), "
              f"last loss relative diff {last:.2e} (<= 1e-3): {'ok' if same else 'FAILED'}")
    lines = []
    for path, run in runs.items():
        efficiency = run["real_tokens"] / run["tokens_in_batches"]
        lines.append(f"| {name} | {path} | {run['real_tokens_per_second']:,.0f} | {efficiency:.2f} | "
                     f"{run['real_tokens_per_second'] / baseline['real_tokens_per_second']:.2f}x | {run['last_loss']:.4f} |")
    print(f"  {name}: padding efficiency of the padded order {padding_efficiency(list(range(len(rows))), lengths, args.batch):.3f}")
    return lines, ok


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--shapes", default="qwen2-small,attention-heavy")
    parser.add_argument("--work", default=str(Path.home() / ".cache" / "medsft" / "bench"))
    args = parser.parse_args()
    work = Path(args.work)
    records = workload.write_records(work / "records.jsonl")
    table = ["| model, lengths | path | real tokens/s | real / batch tokens | vs padded | last loss |",
             "|---|---|---|---|---|---|"]
    ok = True
    for shape in args.shapes.split(","):
        folder = workload.build_model(work / shape, shape)
        rows = workload.encoded_rows(folder, records)
        from transformers import AutoModelForCausalLM

        base = AutoModelForCausalLM.from_pretrained(folder)
        pad_id = base.config.eos_token_id or 0
        for name, chosen in ((f"{shape}, realistic mix", rows), (f"{shape}, all 256 tokens", uniform(rows, 256))):
            print(f"{name}: {args.steps} steps x {args.batch} samples")
            lines, same = compare(name, base, chosen, args, pad_id)
            table += lines
            ok &= same
    print(f"\ntorch {torch.__version__}, {torch.get_num_threads()} threads, fp32, LoRA r8 on all linear layers\n")
    print("\n".join(table))
    if not ok:
        print("correctness check FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
