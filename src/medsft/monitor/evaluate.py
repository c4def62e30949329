"""`medsft eval`: score a model (and optionally its base) on probe sets, side by side."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

from medsft.errors import UserError


def _load(path: str, trust_remote_code: bool):
    from transformers import AutoModelForCausalLM

    from medsft.train.model import check_model_source

    check_model_source(SimpleNamespace(name_or_path=path, allow_pickle_weights=False))
    return AutoModelForCausalLM.from_pretrained(path, trust_remote_code=trust_remote_code, use_safetensors=True)


def run_eval(model_path: str, adapter: str | None = None, baseline: str | None = None, compare_base: bool = False,
             template: str = "tokenizer", general: str = "builtin", probe_files: list[str] | None = None,
             max_new_tokens: int = 256, batch_size: int = 16, trust_remote_code: bool = False,
             out: str | None = None, system_prompt: str | None = None) -> dict:
    from medsft.data.templates import get_template
    from medsft.monitor.watch import Monitor, build_suite
    from medsft.recipe import MonitorConfig
    from medsft.train.model import load_tokenizer

    if compare_base and not adapter:
        raise UserError("--compare-base needs --adapter (the base is the model with the adapter switched off)")
    for path in probe_files or []:
        if not Path(path).is_file():
            raise UserError(f"--probes: {path}: no such file")
    config = MonitorConfig(general_probes=[] if general == "none" else [general], probe_files=probe_files or [],
                           max_new_tokens=max_new_tokens, batch_size=batch_size)
    suite = build_suite(config)
    if not suite.general and not (suite.knowledge or suite.choice or suite.generation):
        raise UserError("nothing to evaluate: no general probes and no --probes files")
    tokenizer = load_tokenizer(SimpleNamespace(name_or_path=model_path, trust_remote_code=trust_remote_code,
                                               allow_pickle_weights=False))
    renderer = get_template(template, tokenizer)
    model = _load(model_path, trust_remote_code)
    if adapter:
        from peft import PeftModel

        if not (Path(adapter) / "adapter_config.json").is_file():
            raise UserError(f"--adapter: {adapter}: no adapter_config.json")
        model = PeftModel.from_pretrained(model, adapter)
    monitor = Monitor(config, suite, tokenizer, renderer, Path(out or "."), system_prompt, {})
    tuned = monitor.scores(model)
    reference = None
    if compare_base:
        with model.disable_adapter():
            reference = monitor.scores(model)
    elif baseline:
        reference = monitor.scores(_load(baseline, trust_remote_code))
    result = {"model": model_path, "adapter": adapter, "baseline": baseline or (model_path if compare_base else None),
              "scores": tuned, "base_scores": reference}
    if reference is not None:
        result["delta"] = {k: tuned[k] - reference[k] for k in tuned if k in reference}
        if reference.get("general/median_tokens"):
            result["scores"]["general/length_ratio"] = tuned["general/median_tokens"] / reference["general/median_tokens"]
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return result


def format_eval(result: dict) -> str:
    tuned, base = result["scores"], result.get("base_scores")
    if base is None:
        return "\n".join(f"{k:<40}{v:>10.3f}" for k, v in sorted(tuned.items()))
    lines = [f"{'metric':<40}{'base':>10}{'tuned':>10}{'delta':>10}"]
    for key in sorted(tuned):
        if key in base:
            lines.append(f"{key:<40}{base[key]:>10.3f}{tuned[key]:>10.3f}{tuned[key] - base[key]:>+10.3f}")
        else:
            lines.append(f"{key:<40}{'–':>10}{tuned[key]:>10.3f}{'':>10}")
    return "\n".join(lines)
