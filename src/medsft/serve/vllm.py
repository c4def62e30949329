"""`medsft serve --engine vllm`: the same model served by vLLM's OpenAI server, on a CUDA GPU.

vLLM takes the base with the LoRA adapter (`--enable-lora --lora-modules NAME=ADAPTER`), or a
whole model (a full fine-tuning run, or a folder from `medsft merge`). The chat template is the
run's: a built-in template is written out as Jinja beside the adapter for vLLM to read."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tempfile
from pathlib import Path

from medsft.errors import UserError
from medsft.serve.loading import Source


def vllm_command(source: Source, name: str, host: str, port: int, api_key: str | None, template_file: Path | None,
                 python: str = sys.executable) -> list[str]:
    command = [python, "-m", "vllm.entrypoints.openai.api_server", "--model", source.base, "--host", host,
               "--port", str(port)]
    if source.adapter is not None:
        command += ["--enable-lora", "--lora-modules", f"{name}={source.adapter}", "--served-model-name",
                    f"{name}-base"]
    else:
        command += ["--served-model-name", name]
    if template_file is not None:
        command += ["--chat-template", str(template_file)]
    if api_key:
        command += ["--api-key", api_key]
    if source.trust_remote_code:
        command.append("--trust-remote-code")
    return command


def serve_vllm(source: Source, name: str | None, host: str, port: int, api_key: str | None) -> int:
    if importlib.util.find_spec("vllm") is None:
        raise UserError("--engine vllm: vllm is not installed (pip install vllm, on a machine with a CUDA GPU)")
    import torch

    if not torch.cuda.is_available():
        raise UserError("--engine vllm: no CUDA GPU here; use the default engine (--engine hf)")
    name = name or Path(source.run_dir or source.adapter or source.base).name
    template_file = None
    if source.template != "tokenizer":
        from medsft.data.templates import get_template, to_jinja
        from medsft.models import load_tokenizer

        tokenizer = load_tokenizer(source.base, source.trust_remote_code, source.allow_pickle_weights)
        jinja = to_jinja(get_template(source.template, tokenizer), source.system_prompt)
        if jinja is not None:  # else vLLM uses the model's own template (qwen3, deepseek3, glm4)
            template_file = Path(tempfile.mkdtemp(prefix="medsft-vllm-")) / "chat_template.jinja"
            template_file.write_text(jinja, encoding="utf-8")
    return subprocess.call(vllm_command(source, name, host, port, api_key, template_file))
