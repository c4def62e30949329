"""Loading the tokenizer and the model the way a user's model is loaded, and wrapping it in LoRA."""

from __future__ import annotations

from pathlib import Path

from medsft.errors import UserError


def _looks_like_path(name: str) -> bool:
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or Path(name).exists()


def check_model_source(model_config) -> None:
    """A local folder must hold a model; a hub id must be reachable. Cheap: no weights are read."""
    name = model_config.name_or_path
    if _looks_like_path(name):
        folder = Path(name).expanduser()
        if not folder.is_dir():
            raise UserError(f"model.name_or_path: {name}: no such folder")
        if not (folder / "config.json").is_file():
            raise UserError(f"model.name_or_path: {name}: no config.json (is this a model folder?)")
        pickled = list(folder.glob("*.bin")) or list(folder.glob("*.pt")) or list(folder.glob("*.pth"))
        if pickled and not list(folder.glob("*.safetensors")) and not model_config.allow_pickle_weights:
            raise UserError(
                f"model.name_or_path: {name} has only pickle weights ({pickled[0].name}); unpickling can run code. "
                "Convert them to safetensors, or set model.allow_pickle_weights: true if you trust them"
            )


def load_tokenizer(model_config):
    """The model's tokenizer; missing or unreachable models fail here, before any weights load."""
    from transformers import AutoTokenizer

    check_model_source(model_config)
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            model_config.name_or_path, trust_remote_code=model_config.trust_remote_code
        )
    except ValueError as error:
        if "trust_remote_code" in str(error):
            raise UserError(
                f"model.name_or_path: {model_config.name_or_path} ships its own code; "
                "set model.trust_remote_code: true if you trust it"
            ) from None
        raise UserError(f"model.name_or_path: cannot load the tokenizer: {str(error).splitlines()[0]}") from None
    except OSError as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(
            f"model.name_or_path: cannot load {model_config.name_or_path!r} "
            f"(not a local folder, and the hub could not provide it: {first})"
        ) from None
    if tokenizer.pad_token is None:
        # Padding positions are masked out of attention and loss, so any token will do; EOS is the convention.
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    return tokenizer


def choose_dtype(requested: str, method: str):
    """(weights dtype, mixed precision 'bf16'|'fp16'|None)."""
    import torch

    if requested == "auto":
        if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
            # LoRA: frozen base in bf16, adapter in fp32 (peft upcasts). Full FT: fp32 master weights + bf16 autocast.
            return (torch.bfloat16, None) if method == "lora" else (torch.float32, "bf16")
        return torch.float32, None
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[requested]
    if dtype is torch.float16:
        return (torch.float32, "fp16") if method == "full" else (torch.float16, "fp16")
    return dtype, None


def load_model(recipe, tokenizer):
    """The base model, with a LoRA adapter when finetune.method is lora."""
    import torch
    from transformers import AutoModelForCausalLM

    model_config = recipe.model
    dtype, _ = choose_dtype(model_config.dtype, recipe.finetune.method)
    kwargs = {
        "dtype": dtype,
        "trust_remote_code": model_config.trust_remote_code,
        "use_safetensors": None if model_config.allow_pickle_weights else True,
    }
    if model_config.attn_implementation:
        kwargs["attn_implementation"] = model_config.attn_implementation
    try:
        model = AutoModelForCausalLM.from_pretrained(model_config.name_or_path, **kwargs)
    except OSError as error:
        hint = "" if model_config.allow_pickle_weights else " (safetensors only, unless model.allow_pickle_weights)"
        raise UserError(
            f"model.name_or_path: cannot load weights{hint}: {str(error).strip().splitlines()[0]}"
        ) from None
    if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(tokenizer))
    if recipe.train.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    if recipe.finetune.method == "full":
        return model
    return add_lora(model, recipe.finetune.lora, recipe.train.gradient_checkpointing)


def add_lora(model, lora, gradient_checkpointing: bool = False):
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=lora.rank,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        use_rslora=lora.rslora,
        use_dora=lora.dora,
        modules_to_save=lora.modules_to_save,
        task_type="CAUSAL_LM",
    )
    if gradient_checkpointing:
        model.enable_input_require_grads()  # frozen embeddings would otherwise cut the graph
    try:
        return get_peft_model(model, config)
    except ValueError as error:
        raise UserError(f"finetune.lora.target_modules: {str(error).splitlines()[0]}") from None
