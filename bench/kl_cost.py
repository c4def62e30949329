"""Cost of anchored replay (train.kl_to_base) and of on-policy distillation (train.on_policy) per LoRA
training step, against the plain step.

Times forward + backward + optimizer step of a LoRA model on the same batches, with the loss alone
(the baseline), with the KL term on the general half of the batch (the base computed with the adapter
switched off), and with the on-policy term (KL(tuned || base) over `--per-batch` answers of `--seq`
tokens, half of them answer); for the on-policy term it also times one draw (`--prompts` greedy
answers of `--new-tokens` tokens) and spreads it over `--every` steps. Prints the ratios. Correctness
beside it: at initialization (LoRA B = 0) the tuned model is the base, so both KL terms are 0 and
the first-step losses are equal.

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
    from medsft.tensors import eval_mode
    from medsft.train.loss import kl_to_base_sum, on_policy_kl_sum, token_losses

    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=8000)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--per-batch", type=int, default=4, help="train.on_policy.per_batch")
    parser.add_argument("--prompts", type=int, default=64, help="train.on_policy.prompts")
    parser.add_argument("--new-tokens", type=int, default=96, help="train.on_policy.max_new_tokens")
    parser.add_argument("--every", type=int, default=40, help="train.on_policy.every")
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
    answers = {"input_ids": torch.randint(0, args.vocab, (args.per_batch, args.seq)),
               "attention_mask": torch.ones(args.per_batch, args.seq, dtype=torch.long),
               "answer_mask": torch.arange(args.seq)[None].expand(args.per_batch, -1) >= args.seq // 2}

    def run(term: str) -> tuple[float, float]:
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
            if term == "kl_to_base":
                general = mask & (source_ids == 1)[:, None]
                loss = loss + kl_to_base_sum(model, inputs, logits, general) / mask.sum()
            elif term == "on_policy":
                kl, tokens = on_policy_kl_sum(model, answers)
                loss = loss + kl / tokens
            if first_loss is None:
                first_loss = float(loss.detach())
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        return (time.perf_counter() - started) / args.steps, first_loss

    plain, plain_loss = run("plain")
    anchored, anchored_loss = run("kl_to_base")
    on_policy, on_policy_loss = run("on_policy")
    model = add_lora(copy.deepcopy(base), rank=8, alpha=16, dropout=0.0)
    prompts = torch.randint(0, args.vocab, (args.prompts, args.seq // 2))
    with eval_mode(model):
        started = time.perf_counter()
        model.generate(input_ids=prompts, attention_mask=torch.ones_like(prompts), max_new_tokens=args.new_tokens,
                       min_new_tokens=args.new_tokens, do_sample=False, pad_token_id=0)
        draw = time.perf_counter() - started
    with_draws = on_policy + draw / args.every
    print(f"model: hidden {args.hidden}, {args.layers} layers, vocab {args.vocab}; batch {args.batch} x {args.seq} "
          f"tokens; LoRA r8; {args.steps} timed steps on {torch.get_num_threads()} threads")
    rows = [("plain LoRA step", plain), ("with kl_to_base (general)", anchored),
            (f"with on_policy ({args.per_batch} answers a batch)", on_policy),
            (f"  + a draw of {args.prompts} x {args.new_tokens} tokens ({draw:.1f} s) every {args.every} steps", with_draws)]
    width = max(len(label) for label, _ in rows) + 1
    for label, seconds in rows:
        ratio = f"   ratio {seconds / plain:.2f}x" if seconds is not plain else ""
        print(f"{(label + ':').ljust(width + 1)}{seconds * 1000:8.1f} ms{ratio}")
    same = max(abs(plain_loss - anchored_loss), abs(plain_loss - on_policy_loss)) < 1e-5
    print(f"check: first-step losses {plain_loss:.6f}, {anchored_loss:.6f}, {on_policy_loss:.6f} "
          f"(both KL terms 0 at initialization): {'equal' if same else 'DIFFERENT'}")
    if not same:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
