"""`medsft eval`: score a model (and optionally its base) on probe sets, side by side."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from medsft.data.templates import get_template
from medsft.errors import UserError
from medsft.eval import names
from medsft.eval.evaluate import evaluate, flat_scores
from medsft.eval.generate import Chat
from medsft.eval.sets import BUILTIN, file_sets, general_set
from medsft.models import load_adapter, load_model, load_tokenizer


@dataclass
class EvalRequest:
    """What `medsft eval` is asked to do (its command-line options)."""

    model: str  # model folder or hub id (the base when an adapter is given)
    adapter: str | None = None
    baseline: str | None = None  # a second model to compare against
    compare_base: bool = False  # compare with the model without its adapter
    template: str = "tokenizer"
    general: list[str] = field(default_factory=lambda: ["builtin"])  # builtin | builtin-en | builtin-zh | none | files
    probe_files: list[str] = field(default_factory=list)
    max_new_tokens: int = 256
    batch_size: int = 16
    trust_remote_code: bool = False
    out: str | None = None
    system_prompt: str | None = None


def run_eval(request: EvalRequest) -> dict:
    """Scores of the model (and of the baseline or base, with deltas); written to request.out."""
    if request.compare_base and not request.adapter:
        raise UserError("--compare-base needs --adapter (the base is the model with the adapter switched off)")
    for path in request.probe_files:
        if not Path(path).is_file():
            raise UserError(f"--probes: {path}: no such file")
    general_entries = [] if request.general == ["none"] else list(request.general)
    for entry in general_entries:
        if entry not in BUILTIN and not Path(entry).is_file():
            raise UserError(f"--general: {entry}: not a built-in set ({', '.join(sorted(BUILTIN))}, none) "
                            "and no such file")
    general = general_set(general_entries)
    probe_sets = ([general] if general else []) + file_sets(request.probe_files)
    if not probe_sets:
        raise UserError("nothing to evaluate: no general probes and no --probes files")
    tokenizer = load_tokenizer(request.model, request.trust_remote_code, field="--model")
    chat = Chat(tokenizer, get_template(request.template, tokenizer), request.system_prompt)
    model = load_model(request.model, trust_remote_code=request.trust_remote_code)
    if request.adapter:
        model = load_adapter(model, request.adapter)

    def scores(m, label: str) -> dict[str, float]:
        return flat_scores(evaluate(m, chat, probe_sets, request.max_new_tokens, request.batch_size, label))

    tuned = scores(model, "probing the model")
    reference = None
    if request.compare_base:
        with model.disable_adapter():
            reference = scores(model, "probing the base (adapter off)")
    elif request.baseline:
        reference = scores(load_model(request.baseline, trust_remote_code=request.trust_remote_code),
                           "probing the baseline")
    result = {"model": request.model, "adapter": request.adapter,
              "baseline": request.baseline or (request.model if request.compare_base else None),
              "scores": tuned, "base_scores": reference}
    if reference is not None:
        result["delta"] = {k: tuned[k] - reference[k] for k in tuned if k in reference}
        ratio = names.relative_to_base(tuned, reference).get(names.LENGTH_RATIO)
        if ratio is not None:
            result["scores"][names.LENGTH_RATIO] = ratio
    if request.out:
        Path(request.out).parent.mkdir(parents=True, exist_ok=True)
        Path(request.out).write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
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
