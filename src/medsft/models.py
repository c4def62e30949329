"""Loading the tokenizer and the model the way a user's model is loaded, and wrapping it in LoRA.

Plain keyword arguments, so every caller (training, `medsft eval`, `data inspect`, the lab) loads
models the same way without building a recipe. transformers and peft are imported when a model
is loaded, so that commands which never load one (`medsft data inspect` without --tokenizer,
`medsft --help`) start without them."""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import shutil
from pathlib import Path

from medsft.errors import UserError


def _looks_like_path(name: str) -> bool:
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or Path(name).exists()


def check_model_source(name_or_path: str, allow_pickle_weights: bool = False,
                       field: str = "model.name_or_path") -> None:
    """A local folder must hold a model; a hub id must be reachable. Cheap: no weights are read."""
    if not _looks_like_path(name_or_path):
        return
    folder = Path(name_or_path).expanduser()
    if not folder.is_dir():
        raise UserError(f"{field}: {name_or_path}: no such folder")
    if not (folder / "config.json").is_file():
        raise UserError(f"{field}: {name_or_path}: no config.json (is this a model folder?)")
    pickled = list(folder.glob("*.bin")) or list(folder.glob("*.pt")) or list(folder.glob("*.pth"))
    if pickled and not list(folder.glob("*.safetensors")) and not allow_pickle_weights:
        raise UserError(
            f"{field}: {name_or_path} has only pickle weights ({pickled[0].name}); unpickling can run code. "
            "Convert them to safetensors, or set model.allow_pickle_weights: true if you trust them"
        )


def load_tokenizer(name_or_path: str, trust_remote_code: bool = False, allow_pickle_weights: bool = False,
                   field: str = "model.name_or_path"):
    """The model's tokenizer; missing or unreachable models fail here, before any weights load."""
    from transformers import AutoTokenizer

    check_model_source(name_or_path, allow_pickle_weights, field)
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    except ValueError as error:
        if "trust_remote_code" in str(error):
            raise UserError(f"{field}: {name_or_path} ships its own code; "
                            "set model.trust_remote_code: true if you trust it") from None
        raise UserError(f"{field}: cannot load the tokenizer: {str(error).splitlines()[0]}") from None
    except OSError as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(f"{field}: cannot load {name_or_path!r} "
                        f"(not a local folder, and the hub could not provide it: {first})") from None
    if tokenizer.pad_token is None:
        # Padding positions are masked out of attention and loss, so any token will do; EOS is the convention.
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    return tokenizer


def choose_dtype(requested: str, method: str, engine: bool = False):
    """(weights dtype, mixed precision 'bf16'|'fp16'|None). engine: DeepSpeed or FSDP trains the
    model, whose LoRA runs were checked on a GPU without autocast (bench/gpu_engines.py), so they
    keep it off."""
    import torch

    if engine and method == "lora" and requested in ("auto", "bfloat16"):
        return choose_dtype(requested, method)[0], None

    if requested == "auto":
        if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
            # LoRA: frozen base in bf16, adapter in fp32 (peft upcasts), its matmuls in bf16 under autocast.
            # Full FT: fp32 master weights + bf16 autocast.
            return (torch.bfloat16 if method == "lora" else torch.float32), "bf16"
        return torch.float32, None
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[requested]
    if dtype is torch.float16:
        return (torch.float32, "fp16") if method == "full" else (torch.float16, "fp16")
    if dtype is torch.bfloat16 and method == "lora" and torch.cuda.is_available():
        return dtype, "bf16"  # as `auto` on such a GPU
    return dtype, None


class _CastOutsideAutocast:
    """PEFT's `cast_input_dtype_enabled` for medsft's LoRA layers: true (PEFT casts each adapted
    layer's input to the adapter's dtype, which a bf16 base under an fp32 adapter needs) unless
    autocast is on. Under autocast the adapter's matmuls run in bf16 anyway, so the cast only
    copied every adapted layer's input to fp32 (and its output back): 19% of a LoRA step's GPU time
    on an H200 (bench/RESULTS.md). PEFT reads the flag as a truth value at each forward."""

    def __bool__(self) -> bool:
        import torch

        return not (torch.is_autocast_enabled("cuda") or torch.is_autocast_enabled("cpu"))

    def __repr__(self) -> str:
        return "cast unless autocast"


CAST_OUTSIDE_AUTOCAST = _CastOutsideAutocast()


def skip_casts_under_autocast(model):
    """`model` (a PEFT model) with its adapter layers casting their inputs only outside autocast."""
    for module in model.modules():
        if hasattr(module, "cast_input_dtype_enabled"):
            module.cast_input_dtype_enabled = CAST_OUTSIDE_AUTOCAST
    return model


# The joined product saves about three passes over a layer's output and costs two over its input
# (joining them): it pays where the output is at least 2/3 of the input.
JOIN_FROM = 2 / 3


def _lora_forward_fused(self, x, *args, **kwargs):
    """PEFT's LoRA forward, base(x) + B(A(dropout(x)))·s, with the adapter's product inside the base
    product's matrix multiply. PEFT writes B's output, scales it and adds it: more passes over the
    layer's output in forward, and in backward the output's gradient is scaled into a new tensor and
    read twice more. Here the scaling falls on the rank-r activations, down = A(dropout(x))·s, and
      while training, a layer whose output is at least 2/3 of its input (q, o, gate, up): one product
        of the joined input [x | down] with the joined weight [W | B] (`_joined_lora_product`), whose
        backward gives the gradients of x and of down from one product with the output's gradient;
      the others (k and v under grouped-query attention, down; every layer without grad):
        addmm(base(x), down, Bᵀ), one pass over the output instead of PEFT's three, the gradient
        reaching B and down straight from it.
    Anything PEFT's forward handles that these do not (merged or disabled adapters, several adapters,
    DoRA, a LoRA bias, hooked or sharded weights, inputs PEFT would cast) goes to PEFT's forward."""
    import torch

    name = self.active_adapters[0] if len(self.active_adapters) == 1 else None
    lora_a, lora_b = (self.lora_A[name], self.lora_B[name]) if name in self.lora_B else (None, None)
    autocast = torch.is_autocast_enabled(x.device.type)
    if (args or kwargs or self.disable_adapters or self.merged or lora_b is None or name in self.lora_variant
            or lora_b.bias is not None or lora_b.weight.dim() != 2 or runs_more_than_forward(lora_b)
            or not (autocast or x.dtype == lora_a.weight.dtype == lora_b.weight.dtype)):
        return self.peft_forward(x, *args, **kwargs)
    down = lora_a(self.lora_dropout[name](x)) * self.scaling[name]
    base = self.base_layer
    if (type(base) is torch.nn.Linear and not runs_more_than_forward(base) and not base.weight.requires_grad
            and base.weight.dim() == 2 and (autocast or base.weight.dtype == x.dtype)
            and base.out_features >= JOIN_FROM * base.in_features and torch.is_grad_enabled()):
        dtype = torch.get_autocast_dtype(x.device.type) if autocast else x.dtype
        bias = None if base.bias is None else base.bias.to(dtype)
        return self.joined_product.apply(x.to(dtype), down.to(dtype), base.weight.to(dtype),
                                          lora_b.weight.to(dtype), bias)
    result = base(x)
    added = torch.addmm(result.reshape(-1, result.shape[-1]), down.reshape(-1, down.shape[-1]), lora_b.weight.t())
    return added.view(result.shape)


def runs_more_than_forward(module) -> bool:
    """Whether calling `module` runs more than its class's forward: hooks of its own (DeepSpeed ZeRO-3
    and FSDP gather weights in them), accelerate's offloading, or a forward replaced on the instance
    (which both accelerate and Liger do). Code that uses such a module's weights without calling it
    would skip that."""
    return bool(module._forward_pre_hooks or module._forward_hooks or module._backward_pre_hooks
                or module._backward_hooks or hasattr(module, "_hf_hook") or "forward" in vars(module))


@functools.cache
def _joined_lora_product():
    """y = [x | down]·[W | B]ᵀ + bias as one autograd function, for a frozen W: one matrix multiply
    in forward; in backward the output's gradient g gives [gx | gdown] = g·[W | B] in one product
    (PEFT reads g once for x and once more for down) and gB = gᵀ·down. Only the joined input is
    transient: down and the weights are what backward keeps, the weights joined again there. Used
    while training only: there a batch's rows outnumber a layer's input width, so joining the weights
    is small beside the products (generation, a row at a time, takes the addmm)."""
    import torch

    class JoinedLoraProduct(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, down, weight, lora_b, bias):
            ctx.save_for_backward(down, weight, lora_b)
            ctx.bias = bias is not None
            joined = torch.cat([x, down], dim=-1)
            return torch.nn.functional.linear(joined, torch.cat([weight, lora_b], dim=1), bias)

        @staticmethod
        def backward(ctx, grad):
            down, weight, lora_b = ctx.saved_tensors
            rows = grad.reshape(-1, grad.shape[-1])
            grad_x = grad_down = None
            if ctx.needs_input_grad[0] or ctx.needs_input_grad[1]:
                both = rows @ torch.cat([weight, lora_b], dim=1)
                width = weight.shape[1]
                grad_x = both[:, :width].unflatten(0, grad.shape[:-1]) if ctx.needs_input_grad[0] else None
                grad_down = both[:, width:].unflatten(0, grad.shape[:-1]) if ctx.needs_input_grad[1] else None
            grad_b = rows.t() @ down.reshape(-1, down.shape[-1]) if ctx.needs_input_grad[3] else None
            grad_bias = rows.sum(0) if ctx.bias and ctx.needs_input_grad[4] else None
            return grad_x, grad_down, None, grad_b, grad_bias

    return JoinedLoraProduct


@functools.cache
def _fused_lora_class():
    """(peft's LoRA Linear, the same with `_lora_forward_fused` as its forward): made at the first call."""
    from peft.tuners.lora.layer import Linear

    methods = {"forward": _lora_forward_fused, "peft_forward": Linear.forward, "joined_product": _joined_lora_product(),
               "__module__": __name__}
    return Linear, type("FusedLoraLinear", (Linear,), methods)


def __getattr__(name: str):  # lets pickle find the class made above
    if name == "FusedLoraLinear":
        return _fused_lora_class()[1]
    raise AttributeError(name)


def fuse_lora_products(model):
    """`model` (a PEFT model) with each plain LoRA Linear layer computing its adapter's product inside
    the base product (`_lora_forward_fused`); the layers keep their parameters, names and saved form."""
    plain, fused = _fused_lora_class()
    for module in model.modules():
        if type(module) is plain:
            module.__class__ = fused
    return model


def prepare_adapter_layers(model):
    """What medsft does to every PEFT model it makes or loads: no input casts under autocast, the
    adapter's product inside the base product."""
    return fuse_lora_products(skip_casts_under_autocast(model))


def load_model(name_or_path: str, dtype=None, trust_remote_code: bool = False, allow_pickle_weights: bool = False,
               attn_implementation: str | None = None, vocab_size: int | None = None,
               gradient_checkpointing: bool = False, rope_scaling: dict | None = None,
               quantization: str | None = None):
    """A causal LM from a folder or hub id, safetensors only unless pickle weights are allowed.

    vocab_size: grow the embeddings to the tokenizer's size when it is larger."""
    from transformers import AutoModelForCausalLM

    check_model_source(name_or_path, allow_pickle_weights)
    kwargs = {"trust_remote_code": trust_remote_code, "use_safetensors": None if allow_pickle_weights else True}
    if dtype is not None:
        kwargs["dtype"] = dtype
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    if quantization:  # k-bit weights live on the GPU they were quantized for
        import torch

        kwargs.update(quantization_config=quantization_config(quantization), device_map={"": torch.cuda.current_device()})
    try:
        if rope_scaling:
            kwargs["config"] = _rope_scaled_config(name_or_path, rope_scaling, trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(name_or_path, **kwargs)
    except OSError as error:
        hint = "" if allow_pickle_weights else " (safetensors only, unless model.allow_pickle_weights)"
        raise UserError(f"model.name_or_path: cannot load weights{hint}: {str(error).strip().splitlines()[0]}") from None
    if vocab_size and vocab_size > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(vocab_size)
    if quantization:  # norms in fp32, inputs that require grad: what PEFT needs to train on k-bit weights
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing,
                                                gradient_checkpointing_kwargs={"use_reentrant": False})
    elif gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if gradient_checkpointing:
        model.config.use_cache = False
    return model


def quantization_config(quantization: str):
    """QLoRA's loading (4-bit NF4, double quantization, bf16 compute) or 8-bit, for from_pretrained."""
    import torch
    from transformers import BitsAndBytesConfig

    if quantization == "4bit":
        config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                    bnb_4bit_compute_dtype=torch.bfloat16)
    else:
        config = BitsAndBytesConfig(load_in_8bit=True)
    return config


PACKED_ATTENTION = "medsft_packed_sdpa"


def _packed_sdpa(module, query, key, value, attention_mask, **kwargs):
    """SDPA that, for a padding-free batch (one row of samples with `segment_bounds`), attends
    within each sample with a plain causal kernel: the cost is the sum of the samples' squared
    lengths, not the square of the row. Anything else (generation, padded batches, a sliding
    window) is plain SDPA with the mask transformers built, which for a packed row is
    block-diagonal and so equally correct, only slower.

    On CUDA in bf16/fp16, where torch has it, one call of its variable-length FlashAttention does all
    the samples at once (a loop over samples launches a kernel per sample and layer, which left the
    GPU waiting on Python). Otherwise each sample gets its own SDPA call, with the flash and
    memory-efficient kernels asked for: cuDNN's builds a plan for every new sequence length, and a
    padding-free batch brings new lengths at every step."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    bounds = kwargs.get("segment_bounds")  # a Python list, so no layer waits on the GPU to read it
    if bounds is None or query.shape[0] != 1 or kwargs.get("sliding_window") or key.shape[2] != query.shape[2]:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    dtype = _varlen_dtype(module, query, key, value, kwargs, _VARLEN[1]) if _VARLEN is not None else None
    if dtype is not None:
        return _varlen_attention(_VARLEN, dtype, query, key, value, kwargs), None
    rest = {k: v for k, v in kwargs.items() if k not in ("is_causal", "position_ids")}
    with _fast_sdpa_kernels(query.is_cuda):
        pieces = [sdpa_attention_forward(module, query[:, :, a:b], key[:, :, a:b], value[:, :, a:b], None,
                                         is_causal=True, **rest)[0]
                  for a, b in zip(bounds, bounds[1:]) if b > a]
    return torch.cat(pieces, dim=1), None


_VARLEN = None  # (torch's variable-length attention, its keyword names): set by use_packed_attention


def _find_varlen():
    """torch's variable-length FlashAttention (`torch.nn.attention.varlen.varlen_attn`, CUDA, fp16 and
    bf16) and its keywords, which differ between releases; None where this torch has none or the GPU
    is older than Ampere, which FlashAttention does not run on (the per-sample loop above is then
    used). Looked up once, before any forward: torch.compile cannot trace `inspect`, and a lookup
    inside the layer would split its compiled graph."""
    import torch

    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None
    if torch.cuda.is_available() and torch.cuda.get_device_capability()[0] < 8:
        return None
    import inspect

    return varlen_attn, frozenset(inspect.signature(varlen_attn).parameters)


def _flash_dtype(query):
    """The dtype the variable-length kernel would run in for `query`: its own when it is on CUDA in
    bf16/fp16, autocast's when autocast is on there (as SDPA would; full fine-tuning's fp32 weights
    give fp32 queries), else None (the kernel does not apply)."""
    import torch

    if not query.is_cuda:
        return None
    if query.dtype in (torch.bfloat16, torch.float16):
        return query.dtype
    if torch.is_autocast_enabled("cuda"):
        return torch.get_autocast_dtype("cuda")
    return None


def _varlen_dtype(module, query, key, value, kwargs, options):
    """The dtype the variable-length kernel runs this call in, or None where it would not compute
    what SDPA would: dropout, no bounds, extra softmax terms, unequal head sizes or over 256, or a
    scale this torch's kernel cannot take (its first release had no `scale` keyword: the default
    1/sqrt(head size) only)."""
    dropout = kwargs.get("dropout", 0.0) if module.training else 0.0
    size = query.shape[-1]
    scale = kwargs.get("scaling")
    default_scale = scale is None or abs(scale - size ** -0.5) < 1e-6
    fits = (not dropout and kwargs.get("cu_seq_lens_q") is not None and kwargs.get("max_length_q") is not None
            and not kwargs.get("s_aux") and kwargs.get("softcap") is None
            and key.shape[-1] == value.shape[-1] == size <= 256
            and query.shape[1] % key.shape[1] == 0
            and ("scale" in options or default_scale))
    return _flash_dtype(query) if fits else None


def _varlen_attention(varlen, dtype, query, key, value, kwargs):
    """Causal attention within each sample of a packed row, in one call. query/key/value are
    (1, heads, tokens, dim) as transformers passes them; the kernel takes (tokens, heads, dim) and the
    samples' cumulative bounds. Its keywords for scale, causality and GQA differ between torch
    releases."""
    varlen, options = varlen
    q, k, v = (t[0].transpose(0, 1).to(dtype) for t in (query, key, value))
    extra = {}
    if "scale" in options:
        extra["scale"] = kwargs.get("scaling")
    if "is_causal" in options:
        extra["is_causal"] = True
    else:
        extra["window_size"] = (-1, 0)
    if k.shape[1] != q.shape[1]:
        if "enable_gqa" in options:
            extra["enable_gqa"] = True
        else:
            groups = q.shape[1] // k.shape[1]
            k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
    bounds, longest = kwargs["cu_seq_lens_q"], int(kwargs["max_length_q"])
    out = varlen(q, k, v, bounds, bounds, longest, longest, **extra)
    return out[None]  # (1, tokens, heads, dim), as transformers' attention functions return it


def _fast_sdpa_kernels(cuda: bool):
    import contextlib

    if not cuda:
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH])


def use_packed_attention(model, log=print) -> bool:
    """Make `model` ready for padding-free batches; False (with a line saying why) when it cannot
    keep packed samples apart, so the caller pads instead.

    A model built on transformers' attention interface keeps samples apart from `position_ids`
    (restarting at 0 per sample, no attention mask, and no KV cache: the forward must pass
    use_cache=False). SDPA is replaced by the per-sample kernel above; FlashAttention-2 (its
    variable-length path) and eager are kept. A model with its own attention code
    (trust_remote_code) would let samples see each other, so it is padded."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if not type(base).is_backend_compatible():
        log(f"train.padding_free: {type(base).__name__} has its own attention code, which cannot keep packed "
            "samples apart; batches are padded")
        return False
    global _VARLEN
    _VARLEN = _find_varlen()
    AttentionInterface.register(PACKED_ATTENTION, _packed_sdpa)
    AttentionMaskInterface.register(PACKED_ATTENTION, sdpa_mask)
    if base.config._attn_implementation == "sdpa":
        base.set_attn_implementation(PACKED_ATTENTION)
    return True


def compile_layers(model) -> int:
    """torch.compile (dynamic shapes) on each decoder layer of `model`, in place; returns how many.
    One layer's code serves them all, so it compiles once; the matrix multiplies stay cuBLAS's and
    the elementwise work between them is fused."""
    _, layers = _layer_list(model, "train.compile")
    for layer in layers:
        layer.compile(dynamic=True)
    return len(layers)


LIGER_EXTRA = "pip install 'medsft[liger]'"


def model_type(name_or_path: str, trust_remote_code: bool = False) -> str | None:
    """The config's model_type ("llama", "qwen2", ...), read without the weights; None if it cannot be read
    (loading the model then says why)."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(name_or_path, trust_remote_code=trust_remote_code).model_type
    except (OSError, ValueError, ImportError):  # ImportError: a remote config's own imports
        return None


def liger_model_types() -> set[str]:
    """The model types liger-kernel has kernels for (empty when it is not installed)."""
    if importlib.util.find_spec("liger_kernel") is None:
        return set()
    try:
        from liger_kernel.transformers.monkey_patch import MODEL_TYPE_TO_APPLY_LIGER_FN
    except ImportError as error:  # a release built for another transformers
        raise UserError(f"train.liger: liger-kernel does not load here ({error}); {LIGER_EXTRA} installs one that "
                        "does") from None
    return set(MODEL_TYPE_TO_APPLY_LIGER_FN)


def apply_liger_kernels(model) -> dict[str, int]:
    """Liger's Triton kernels in `model`'s own RMSNorm and MLP modules (train.liger; before LoRA wraps
    their layers): {Liger's kernel name: modules patched}. Liger also rebinds those classes and the
    rotary embedding in transformers' modeling module for every later model of the process; medsft
    puts the module's names back, so only this instance changes (its rotary embedding, which Liger
    patches only module-wide, stays transformers'). Not Liger's cross-entropy nor its fused linear
    cross-entropy: medsft's chunked loss keeps the per-source token losses."""
    import sys

    from liger_kernel.transformers import _apply_liger_kernel_to_instance

    if not type(model).__module__.startswith("transformers."):
        raise UserError("train.liger: the model's own code (trust_remote_code) is not what Liger patches; drop one")
    saved = {name: dict(vars(module)) for name, module in list(sys.modules.items())
             if name.startswith("transformers.models.") and module is not None}
    try:
        _apply_liger_kernel_to_instance(model=model, rope=False, rms_norm=True, swiglu=True, geglu=True,
                                        cross_entropy=False, fused_linear_cross_entropy=False)
    finally:
        for name, names in saved.items():
            module = sys.modules[name]
            for key, value in names.items():
                if vars(module).get(key) is not value:
                    setattr(module, key, value)
    patched: dict[str, int] = {}
    for module in model.modules():
        kind = module._get_name()
        if kind.startswith("Liger"):
            patched[kind] = patched.get(kind, 0) + 1
    if not patched:
        raise UserError(f"train.liger: liger-kernel patched nothing in this {model.config.model_type} model; drop "
                        "train.liger (train.compile fuses the same layers)")
    return patched


def _layer_list(model, field: str):
    """(attribute name, the ModuleList) of the model's stack of decoder layers."""
    import torch

    count = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and (count is None or len(module) == count) and len(module) > 0:
            return name.rsplit(".", 1)[-1], module
    raise UserError(f"{field}: cannot find this model's decoder layers")


def decoder_layers(model) -> tuple[str, int]:
    """(attribute name, count) of the model's stack of decoder layers ("layers" in Llama/Qwen, "h" in GPT-2)."""
    name, layers = _layer_list(model, "finetune.layers")
    return name, len(layers)


def layer_indices(spec, count: int) -> list[int]:
    """The layers a `finetune.layers` value names, checked against the model's `count` layers."""
    if isinstance(spec, list):
        chosen = sorted(set(int(i) for i in spec))
    else:
        text = str(spec).replace(" ", "")
        if "-" in text:
            low, high = text.split("-", 1)
            chosen = list(range(int(low) if low else 0, (int(high) if high else count - 1) + 1))
        else:
            chosen = [int(text)]
    if not chosen or chosen[-1] >= count:
        raise UserError(f"finetune.layers: {spec!r} is outside this model's layers 0-{count - 1}")
    return chosen


def freeze_layers_outside(model, indices: list[int]) -> int:
    """Full fine-tuning of some layers: every other decoder layer frozen, and the input embeddings
    with them when layer 0 is frozen. Returns the number of parameters left trainable."""
    import re

    name, _ = decoder_layers(model)
    keep = set(indices)
    pattern = re.compile(rf"(?:^|\.){re.escape(name)}\.(\d+)\.")
    for parameter_name, parameter in model.named_parameters():
        match = pattern.search(parameter_name)
        if match and int(match.group(1)) not in keep:
            parameter.requires_grad_(False)
    if 0 not in keep:
        model.get_input_embeddings().weight.requires_grad_(False)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _linear_names(model, layers_name: str) -> list[str]:
    """The names of the linear modules inside the decoder layers (what `all-linear` targets)."""
    import torch

    return sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules()
                   if isinstance(module, torch.nn.Linear) and f".{layers_name}." in f".{name}"})


def add_lora(model, rank: int = 8, alpha: float = 16, dropout: float = 0.05, target_modules="all-linear",
             rslora: bool = False, dora: bool = False, modules_to_save: list[str] | None = None,
             gradient_checkpointing: bool = False, layers=None):
    """`model` wrapped in a fresh LoRA adapter (peft); `layers`: only those decoder layers (finetune.layers)."""
    from peft import LoraConfig, get_peft_model

    where = {}
    if layers is not None:
        name, count = decoder_layers(model)
        where = {"layers_to_transform": layer_indices(layers, count), "layers_pattern": name}
        if isinstance(target_modules, str):  # peft takes a layer range only with module names
            target_modules = _linear_names(model, name) if target_modules == "all-linear" else [target_modules]
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=target_modules,
                        use_rslora=rslora, use_dora=dora, modules_to_save=modules_to_save, task_type="CAUSAL_LM",
                        **where)
    if gradient_checkpointing:
        model.enable_input_require_grads()  # frozen embeddings would otherwise cut the graph
    try:
        return prepare_adapter_layers(get_peft_model(model, config))
    except ValueError as error:
        raise UserError(f"finetune.lora.target_modules: {str(error).splitlines()[0]}") from None


def _rope_scaled_config(name_or_path: str, rope_scaling: dict, trust_remote_code: bool):
    """The model's config with the scaling merged into its RoPE settings (which keep their base theta)."""
    from transformers import AutoConfig

    return _with_rope_scaling(AutoConfig.from_pretrained(name_or_path, trust_remote_code=trust_remote_code), rope_scaling)


def _with_rope_scaling(config, rope_scaling: dict):
    if hasattr(config, "rope_parameters"):
        config.rope_parameters = {**(config.rope_parameters or {}), **rope_scaling}
    else:  # an older remote-code config
        config.rope_scaling = dict(rope_scaling)
    return config


def check_model_fit(name_or_path: str, trust_remote_code: bool = False, rope_scaling: dict | None = None,
                    lora: dict | None = None, layers=None) -> None:
    """What a recipe asks of its model that the model's config can answer, checked before the weights
    load: the RoPE scaling (transformers' own validation), and on a weightless copy (meta device) the
    decoder layers of finetune.layers and the LoRA target modules (lora: add_lora's arguments; None for
    full fine-tuning or an adapter loaded as it is). A config that cannot be read, or a model that
    cannot be built without weights, is left to the loading, which says why."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        config = AutoConfig.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, ImportError):
        return
    if rope_scaling:
        config = _check_rope_scaling(config, rope_scaling)
    if lora is None and layers is None:
        return
    try:
        with torch.device("meta"):
            skeleton = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    except Exception:  # noqa: BLE001 - some remote code cannot build without weights; loading reports the rest
        return
    if lora is not None:
        add_lora(skeleton, **lora, layers=layers)
    else:
        layer_indices(layers, decoder_layers(skeleton)[1])


def _check_rope_scaling(config, rope_scaling: dict):
    """`config` with the scaling merged in, once transformers' own validation accepts it."""
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    kind = rope_scaling.get("rope_type", rope_scaling.get("type"))
    if kind not in ROPE_INIT_FUNCTIONS:
        raise UserError(f"model.rope_scaling: rope_type {kind!r} is not one of {', '.join(sorted(ROPE_INIT_FUNCTIONS))}")
    config = _with_rope_scaling(config, rope_scaling)
    validate = getattr(config, "validate_rope", None)
    if validate is None:
        return config  # an older remote-code config: its own code reads the scaling
    try:
        validate()
    except (KeyError, ValueError, TypeError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error  # KeyError's str() quotes it
        raise UserError(f"model.rope_scaling: {message}") from None
    return config


def check_adapter_dir(adapter_dir: str | Path, field: str = "--adapter") -> None:
    if not (Path(adapter_dir) / "adapter_config.json").is_file():
        raise UserError(f"{field}: {adapter_dir}: no adapter_config.json")


def load_adapter(model, adapter_dir: str | Path, field: str = "--adapter", trainable: bool = False):
    """`model` with a saved LoRA adapter on top (trainable: to train it further)."""
    from peft import PeftModel

    check_adapter_dir(adapter_dir, field)
    return prepare_adapter_layers(PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=trainable))


REAL_MODEL_EXTRA = "pip install 'medsft[real-model]'"


def import_gguf(gguf_file: str | Path, out_dir: str | Path, log=print, overwrite: bool = False) -> Path:
    """A GGUF checkpoint as a normal HF model folder: fp32 safetensors, tokenizer with its chat
    template, generation config, and `medsft_import.json` (the source file and its SHA-256).

    transformers dequantizes GGUF on load but will not save a model loaded that way, so the model
    is rebuilt from its config without the GGUF quantization entry and given the loaded weights."""
    source = Path(gguf_file).expanduser()
    if importlib.util.find_spec("gguf") is None:
        raise UserError(f"reading GGUF needs the gguf package: {REAL_MODEL_EXTRA}")
    if not source.is_file():
        raise UserError(f"{source}: no such file")
    if source.suffix.lower() != ".gguf":
        raise UserError(f"{source}: not a .gguf file")
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise UserError(f"--out: {out} is not empty (pass --overwrite to replace it)")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log(f"reading {source.name} (dequantizing to fp32)")
    try:
        tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
        loaded = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name, dtype=torch.float32)
    except (ValueError, KeyError, OSError) as error:
        raise UserError(f"{source}: cannot import: {str(error).strip().splitlines()[0]}") from None
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    if out.is_dir() and not out.is_symlink():
        shutil.rmtree(out)
    elif out.exists() or out.is_symlink():
        out.unlink()
    out.mkdir(parents=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    digest = hashlib.sha256()
    with open(source, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    (out / "medsft_import.json").write_text(json.dumps(
        {"source": str(source), "sha256": digest.hexdigest(), "architecture": type(model).__name__}, indent=1) + "\n")
    log(f"wrote {out} ({type(model).__name__}, {sum(p.numel() for p in model.parameters()) / 1e6:.0f}M parameters)")
    return out
