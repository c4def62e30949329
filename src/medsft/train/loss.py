"""The training loss: next-token cross-entropy per token, for padded and padding-free batches.

Two ways to get it. The plain one asks the model for its logits (batch x tokens x vocabulary) and
casts them to fp32: at a 152k vocabulary and 8 x 1024 tokens that is 4.6 GB before its gradient.
The chunked one (`train.loss_chunk_tokens`) asks the model for its last hidden states with the head
applied to no position, keeps only the positions that have a target, and applies the head a chunk of
positions at a time under activation checkpointing, so no more than one chunk's logits exist at once,
forward or backward; prompt positions never reach the head at all. A frozen head (LoRA's) has its
gradient with respect to the hidden states made in the forward (FrozenHeadLoss), so its logits are
computed once rather than again in backward."""

from __future__ import annotations

from contextlib import contextmanager
from functools import cache

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable
from torch.utils.checkpoint import checkpoint

from medsft.data.encode import IGNORE
from medsft.models import runs_more_than_forward
from medsft.tensors import eval_mode

# What the model's forward receives from a batch (the rest is medsft's bookkeeping).
PADDED_KEYS = ("input_ids", "attention_mask")
PACKED_KEYS = ("input_ids", "position_ids", "segment_bounds", "cu_seq_lens_q", "cu_seq_lens_k", "max_length_q",
               "max_length_k")


def is_packed(inputs: dict) -> bool:
    return "position_ids" in inputs


def model_inputs(inputs: dict) -> dict:
    """The forward's arguments for a padded or a padding-free batch. No KV cache: transformers keeps
    packed samples apart only without one, and training never needs it."""
    keys = PACKED_KEYS if is_packed(inputs) else PADDED_KEYS
    return {**{k: inputs[k] for k in keys if k in inputs}, "use_cache": False}


def per_sample(values: torch.Tensor, inputs: dict) -> torch.Tensor:
    """Sums of `values` (one per predicting position, batch x tokens-1) for each sample of the batch."""
    if not is_packed(inputs):
        return values.sum(dim=1)
    owner = inputs["sample_index"][:, 1:].reshape(-1)  # a target belongs to the sample of the token it is
    sums = values.new_zeros(len(inputs["source_ids"]))
    return sums.index_add_(0, owner, values.reshape(-1))


def per_position(values: torch.Tensor, inputs: dict) -> torch.Tensor:
    """A value per sample spread over the predicting positions (batch x tokens-1) of its targets."""
    if not is_packed(inputs):
        return values[:, None].expand(-1, inputs["input_ids"].shape[1] - 1)
    return values[inputs["sample_index"][:, 1:]]


def token_losses(model, inputs: dict, keep_logits: bool = False, chunk_tokens: int = 0, compiled: bool = False):
    """(per-token loss, supervised mask, source ids) for a batch; positions that predict nothing
    supervised have loss 0. keep_logits: the fp32 logits (positions that predict a next token) come
    fourth, which needs the plain path. chunk_tokens > 0: the chunked path (see the module), its
    per-chunk loss torch.compiled when `compiled` (train.compile)."""
    targets = inputs["labels"][:, 1:]
    mask = targets != IGNORE
    if chunk_tokens > 0 and not keep_logits:
        losses = chunked_token_losses(model, inputs, targets, mask, chunk_tokens, compiled)
        return losses, mask, inputs["source_ids"]
    logits = model(**model_inputs(inputs)).logits[:, :-1, :].float()
    losses = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=IGNORE, reduction="none"
    ).view(targets.shape)
    if keep_logits:
        return losses, mask, inputs["source_ids"], logits
    return losses, mask, inputs["source_ids"]


def output_head(model) -> torch.nn.Module:
    while hasattr(model, "module"):  # DDP and similar wrappers
        model = model.module
    return model.get_output_embeddings()


def _decoder(model):
    """The model's decoder stack (transformers' `get_decoder`: the backbone under the LM head, whose
    first output is the last hidden state), or None where there is none apart from the model, or
    where nn.DataParallel would run copies of it on several GPUs (each would report its own share)."""
    while hasattr(model, "module"):
        if isinstance(model, torch.nn.DataParallel):
            return None
        model = model.module
    find = getattr(model, "get_decoder", None)
    try:
        decoder = find() if callable(find) else None
    except (AttributeError, NotImplementedError, TypeError, ValueError):  # remote code's own lookups
        return None
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return decoder if isinstance(decoder, torch.nn.Module) and decoder is not model and decoder is not inner else None


def _first_output(output):
    return output if torch.is_tensor(output) else output[0]


def _hidden_states(model, inputs: dict) -> torch.Tensor:
    """The last hidden states, the ones the output head reads, with the head applied to no position
    (`logits_to_keep` of no index: its cost and memory are nil). Read from the decoder stack's output
    rather than asked for with `output_hidden_states`: asking makes transformers hook every layer and
    attention module for good, and the hooks read a context variable that torch.compile cannot
    trace, which split each compiled layer (train.compile) at its attention."""
    nothing = torch.zeros(0, dtype=torch.long, device=inputs["input_ids"].device)
    decoder = _decoder(model)
    if decoder is not None:
        seen = []
        handle = decoder.register_forward_hook(lambda module, args, output: seen.append(_first_output(output)))
        try:
            model(**model_inputs(inputs), logits_to_keep=nothing)
        finally:
            handle.remove()
        if seen:
            return seen[-1]
    outputs = model(**model_inputs(inputs), output_hidden_states=True, logits_to_keep=nothing)
    return outputs.hidden_states[-1]


def _head_and_states(model, inputs: dict, positions: torch.Tensor) -> tuple[torch.nn.Module, torch.Tensor]:
    """The output head, and the last hidden states at `positions` (a mask over the predicting
    positions, batch x tokens-1) that it is to be applied to. Under mixed precision the Trainer's
    autocast wraps the model's forward only and hands back fp32 outputs; the head, applied by the
    caller, takes the states in its own weights' dtype."""
    head = output_head(model)
    hidden = _hidden_states(model, inputs)[:, :-1][positions]
    return head, hidden.to(getattr(getattr(head, "weight", None), "dtype", hidden.dtype))


def chunk_loss(head: torch.nn.Module, states: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of one chunk of positions: the head applied (its hooks run), fp32 logits."""
    return F.cross_entropy(head(states).float(), targets, reduction="none")


@cache
def compile_once(function):
    """`function` under torch.compile (dynamic shapes), wrapped once per process (train.compile): the
    cast to fp32, the softmax and its gradient fuse into passes over a chunk's logits instead of a
    copy and several kernels."""
    return torch.compile(function, dynamic=True)


def losses_and_logit_grads(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each position's cross-entropy (fp32) and its gradient with respect to the logits, softmax - one-hot,
    in the logits' dtype (what autograd hands the head's backward on the plain path)."""
    dtype, logits = logits.dtype, logits.float()
    normalizer = torch.logsumexp(logits, dim=-1)
    losses = normalizer - logits.gather(1, targets[:, None]).squeeze(1)
    grads = logits.sub_(normalizer[:, None]).exp_()  # in place: the chunk's fp32 logits are not needed again
    grads.scatter_add_(1, targets[:, None], grads.new_full((len(targets), 1), -1.0))
    return losses, grads.to(dtype)


class FrozenHeadLoss(torch.autograd.Function):
    """Cross-entropy through a frozen bias-free head whose gradient is computed in the forward: a
    position's loss depends on its own hidden state only, so d loss / d state = (softmax - one-hot) · W
    can be kept and, in backward, scaled by each position's incoming gradient. The head's logits are
    then computed once, not again in backward as the checkpointed path does."""

    @staticmethod
    def forward(ctx, states, weight, targets, losses_and_grads):
        losses, logit_grads = losses_and_grads(states @ weight.t(), targets)
        ctx.save_for_backward((logit_grads @ weight).to(states.dtype))
        return losses

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_losses):
        (state_grads,) = ctx.saved_tensors
        scaled = state_grads.float() * grad_losses[:, None].float()
        return scaled.to(state_grads.dtype), None, None, None


def frozen_plain_head(head) -> bool:
    """A bias-free linear head with no trainable weight and no hooks (LoRA with its usual targets):
    FrozenHeadLoss computes exactly what applying it would. Not in fp16, where the softmax's small
    probabilities would be rounded away before a grad scaler's factor reaches them (the recomputing
    path scales them first)."""
    return (type(head) is torch.nn.Linear and head.bias is None and not head.weight.requires_grad
            and head.weight.dtype != torch.float16 and not runs_more_than_forward(head))


def chunked_token_losses(model, inputs: dict, targets: torch.Tensor, mask: torch.Tensor,
                         chunk_tokens: int, compile_loss: bool = False) -> torch.Tensor:
    head, chosen = _head_and_states(model, inputs, mask)
    wanted = targets[mask]
    loss_of = compile_once(chunk_loss) if compile_loss else chunk_loss
    grads_of = compile_once(losses_and_logit_grads) if compile_loss else losses_and_logit_grads
    frozen = torch.is_grad_enabled() and chosen.requires_grad and frozen_plain_head(head)
    pieces = []
    for start in range(0, len(wanted), chunk_tokens):
        part = slice(start, start + chunk_tokens)
        if frozen:
            pieces.append(FrozenHeadLoss.apply(chosen[part], head.weight, wanted[part], grads_of))
        elif torch.is_grad_enabled():  # the chunk's logits are recomputed in backward, not kept
            pieces.append(checkpoint(loss_of, head, chosen[part], wanted[part], use_reentrant=False))
        else:
            pieces.append(loss_of(head, chosen[part], wanted[part]))
    flat = torch.cat(pieces) if pieces else chosen.new_zeros(0, dtype=torch.float32)
    return torch.zeros(mask.shape, dtype=torch.float32, device=chosen.device).masked_scatter(mask, flat)


def head_gives_logits(model) -> bool:
    """Whether the model's logits are exactly its output head applied to its last hidden states (the
    chunked loss relies on it; a model that caps or scales its logits after the head does not, nor
    one whose forward takes no `logits_to_keep`)."""
    inputs = {"input_ids": torch.arange(8, device=model.device)[None] % model.config.vocab_size,
              "attention_mask": torch.ones(1, 8, dtype=torch.long, device=model.device)}
    with eval_mode(model):
        logits = model(**model_inputs(inputs)).logits
        try:
            again = output_head(model)(_hidden_states(model, inputs))
        except (TypeError, ValueError, IndexError, RuntimeError):
            return False
        return again.shape == logits.shape and torch.allclose(again, logits, atol=1e-4, rtol=1e-4)


@contextmanager
def without_embedding_noise(model):
    """NEFTune (train.neftune_alpha) off for the block: the Trainer's hook adds its noise to the input
    embeddings only while they are in training mode, and each forward draws its own. The KL terms
    compare two forwards (and the base is the base without noise), so theirs run without it."""
    embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    noisy = embeddings is not None and embeddings.training and getattr(embeddings, "neftune_noise_alpha", None)
    if noisy:
        embeddings.train(False)
    try:
        yield
    finally:
        if noisy:
            embeddings.train(True)


def kl_to_base_sum(model, inputs: dict, tuned_logits: torch.Tensor, positions: torch.Tensor, reference=None):
    """Sum over `positions` (a mask over the predicting positions) of KL(base || tuned) per token.
    The base is `reference` (full fine-tuning) or `model` with its adapter switched off (LoRA), without
    NEFTune's noise: the tuned logits may carry it, the anchor does not."""
    rows = positions.any(dim=1)
    if not bool(rows.any()):
        return tuned_logits.new_zeros(())
    with torch.no_grad():
        forward = model_inputs(inputs)
        if not is_packed(inputs):  # only the rows that have covered positions (a packed batch is one row)
            forward = {k: v[rows] if torch.is_tensor(v) else v for k, v in forward.items()}
        if reference is not None:
            base = reference(**forward).logits
        else:
            with model.disable_adapter(), without_embedding_noise(model):
                base = model(**forward).logits
        base_logp = F.log_softmax(base[:, :-1, :].float()[positions[rows]], dim=-1)
    tuned_logp = F.log_softmax(tuned_logits[rows][positions[rows]], dim=-1)
    return (base_logp.exp() * (base_logp - tuned_logp)).sum()


def on_policy_kl_sum(model, batch: dict, reference=None, through_head: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum over the answer tokens of KL(tuned || base), how many tokens) on answers the tuned model
    gave itself (`batch`: input_ids, attention_mask, answer_mask; pipeline/onpolicy.py). The reverse KL
    is the one that puts weight where the tuned model goes: it falls only by moving the tuned model's
    probability to tokens the base also finds likely. The base is `reference` (full fine-tuning) or
    `model` with its adapter switched off (LoRA).

    through_head: the output head is applied at the answer positions only (the model's logits must be
    its head on its last hidden states: `head_gives_logits`), so no prompt position's vocabulary-wide
    logits exist; else the full logits."""
    forward = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    positions = batch["answer_mask"][:, 1:] & batch["attention_mask"][:, :-1].bool()  # they predict an answer token

    def answer_logits(net) -> torch.Tensor:
        if not through_head:
            return net(**model_inputs(forward)).logits[:, :-1][positions].float()
        head, states = _head_and_states(net, forward, positions)
        return head(states).float()

    with without_embedding_noise(model):
        tuned_logp = F.log_softmax(answer_logits(model), dim=-1)
        with torch.no_grad():
            if reference is not None:
                base = answer_logits(reference)
            else:
                with model.disable_adapter():
                    base = answer_logits(model)
            base_logp = F.log_softmax(base, dim=-1)
    return (tuned_logp.exp() * (tuned_logp - base_logp)).sum(), positions.sum()
