"""Cost of anchored replay (train.kl_to_base) per LoRA training step, against the plain step.

Times forward + backward + optimizer step of a LoRA model on the same batches, with the loss alone
(the baseline) and with the KL term (the base computed with the adapter switched off), and prints
the ratio. Correctness beside it: at initialization (LoRA B = 0) the tuned model is the base, so
the KL is 0 and both losses are equal.

    .venv/bin/python bench/kl_cost.py [--steps 20] [--hidden 256] [--layers 4] [--vocab 8000] [--seq 256]
"""

from __future__ import annotations

import argparse
import copy
import time

import torch


def main() -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    from medsft.models import add_lora
    from medsft.train.loss import kl_to_base_sum, token_losses

    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=8000)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=4 * args.hidden,
                         num_hidden_layers=args.layers, num_attention_heads=args.hidden // 64,
                         num_key_value_heads=args.hidden // 64)
    base = LlamaForCausalLM(config)
    inputs = {"input_ids": torch.randint(0, args.vocab, (args.batch, args.seq)),
              "attention_mask": torch.ones(args.batch, args.seq, dtype=torch.long),
              "source_ids": torch.tensor([i % 2 for i in range(args.batch)])}
    inputs["labels"] = inputs["input_ids"].clone()

    def run(with_kl: bool) -> tuple[float, float]:
        torch.manual_seed(1)
        model = add_lora(copy.deepcopy(base), rank=8, alpha=16, dropout=0.0)
        model.train()
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
        first_loss, started = None, 0.0
        for step in range(args.steps + 2):  # two warm-up steps, not timed
            if step == 2:
                started = time.perf_counter()
            losses, mask, source_ids, logits = token_losses(model, inputs, keep_logits=True)
            loss = losses.sum() / mask.sum()
            if with_kl:
                general = mask & (source_ids == 1)[:, None]
                loss = loss + kl_to_base_sum(model, inputs, logits, general) / mask.sum()
            if first_loss is None:
                first_loss = float(loss.detach())
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        return (time.perf_counter() - started) / args.steps, first_loss

    plain, plain_loss = run(False)
    anchored, anchored_loss = run(True)
    print(f"model: hidden {args.hidden}, {args.layers} layers, vocab {args.vocab}; batch {args.batch} x {args.seq} "
          f"tokens; LoRA r8; {args.steps} timed steps on {torch.get_num_threads()} threads")
    print(f"plain LoRA step:            {plain * 1000:8.1f} ms")
    print(f"with kl_to_base (general):  {anchored * 1000:8.1f} ms   ratio {anchored / plain:.2f}x")
    same = abs(plain_loss - anchored_loss) < 1e-5
    print(f"check: first-step losses {plain_loss:.6f} and {anchored_loss:.6f} (KL 0 at initialization): "
          f"{'equal' if same else 'DIFFERENT'}")
    if not same:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
