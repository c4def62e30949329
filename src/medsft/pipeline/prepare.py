"""Tokenizer, template and data of a recipe, and `medsft data mix` (the same data, written out)."""

from __future__ import annotations

import json
from pathlib import Path

from medsft.data.encode import IGNORE
from medsft.data.prepare import PreparedData, prepare_data, write_jsonl, write_rejects
from medsft.data.templates import BUILTIN, detect_template, get_template
from medsft.pipeline.distill import Distiller
from medsft.errors import UserError
from medsft.models import load_tokenizer
from medsft.train import checkpoint


def prepare(recipe, log=print):
    """Tokenizer, template and prepared data. Everything a user can get wrong is caught here, before weights load."""
    model = recipe.model
    tokenizer = load_tokenizer(model.name_or_path, model.trust_remote_code, model.allow_pickle_weights)
    template = get_template(_template_name(model, tokenizer, log), tokenizer, model.enable_thinking)
    distiller = Distiller(recipe, tokenizer, template, log) if any(s.self_distill for s in recipe.data.sources) else None
    prepared = prepare_data(recipe, tokenizer, template, _local_rewriter(model.trust_remote_code), distiller)
    return tokenizer, template, prepared


def _template_name(model, tokenizer, log) -> str:
    """The template to use: the recipe's; when left at its default (`tokenizer`), the tokenizer's own,
    or the built-in of a family whose own template cannot be split into turns. Says which."""
    if "template" in model.model_fields_set:
        return model.template
    own = getattr(tokenizer, "chat_template", None)
    family, why = detect_template(own, model.name_or_path)
    if family and (BUILTIN[family].turn_dependent or not own):
        log(f"model.template: {family} ({why}; set model.template to choose another)")
        model.template = family  # the run's recipe.yaml says which, for merge, serve and resume
        return family
    if own:
        log("model.template: the tokenizer's own chat template" + (f" ({family} family)" if family else ""))
    return model.template


def _local_rewriter(trust_remote_code: bool):
    def build(settings, seed):
        from medsft.eval.rewrite import LocalRewriter

        return LocalRewriter(settings, seed, trust_remote_code)

    return build


def report_data(prepared: PreparedData, log) -> None:
    totals = prepared.manifest["totals"]
    log(f"data: {totals['read']} records read, {totals['used']} used, {totals['rejected']} rejected"
        + (f", {totals['augmented_used']} augmented records added" if totals.get("augmented_used") else "")
        + (" (encoding cache hit)" if prepared.cache_hit else ""))
    for name, source in prepared.manifest["sources"].items():
        if "augmentation" in source:
            report = source["augmentation"]
            made = ", ".join(f"{a} {c['kept']}/{c['made']}" for a, c in report["per_augmenter"].items())
            log(f"augmented {name}: {report['records_in']} training records -> {made} kept "
                f"({report['exact_duplicates_removed']} exact and {report['near_duplicates_removed']} near "
                "duplicates removed" + (f", {report['rewrite_rejected']} rewrites failed the fact check"
                                        if report.get("rewrite_rejected") else "")
                + ("; from the augmentation cache" if report.get("cache_hit") else "") + ")")
        if "self_distill" in source:
            report = source["self_distill"]
            log(f"self-distilled {name} ({report['mode']}): {report['regenerated']} of {report['training_records']} "
                f"training answers from the base model (mean {report['mean_answer_chars_before']} -> "
                f"{report['mean_answer_chars_after']} characters; {report['kept_file_answer_unfinished']} unfinished "
                "kept the file's answer)")
    for warning in prepared.warnings:
        log(f"warning: {warning}")


def preview(recipe, count: int = 3, source: str | None = None, log=print) -> str:
    """`medsft data preview`: the first `count` records of each source (or of `source`) exactly as the
    model will see them, the supervised spans between [[ and ]], with their token counts."""
    tokenizer, _, prepared = prepare(recipe, lambda *_: None)
    names = prepared.source_names
    if source is not None and source not in names:
        raise UserError(f"--source: no source {source!r} (sources: {', '.join(names)})")
    blocks = []
    for name in [source] if source else names:
        rows = [i for i, s in enumerate(prepared.source_index) if names[s] == name][:count]
        for i in rows:
            row = prepared.encoded[i]
            where = prepared.conversations[i].provenance
            if row["length"] == 0:  # what training leaves out (and lists in rejects.jsonl)
                body = (f"(left out: longer than data.max_length={recipe.data.max_length} tokens even with only its "
                        f"{'last' if recipe.data.train_on == 'last_assistant' else 'first'} exchange)")
            else:
                body = marked_text(tokenizer, row["input_ids"], row["labels"])
            blocks.append(f"=== {name} · {where} · {row['length']} tokens, {row['supervised_tokens']} supervised ===\n"
                          + body)
    return "\n\n".join(blocks)


def marked_text(tokenizer, input_ids: list[int], labels: list[int]) -> str:
    """The decoded record with each run of supervised tokens between [[ and ]]."""
    pieces, start = [], 0
    for position in range(1, len(input_ids) + 1):
        ends = position == len(input_ids) or (labels[position] != IGNORE) != (labels[start] != IGNORE)
        if ends:
            text = tokenizer.decode(input_ids[start:position])
            pieces.append(f"[[{text}]]" if labels[start] != IGNORE else text)
            start = position
    return "".join(pieces)


def write_mix(recipe, out: str | Path, stage_name: str | None = None, log=print) -> Path:
    """`medsft data mix`: the records each stage trains on, in training order (as far as a stage's
    max_steps takes it, for one process), and the manifest."""
    from medsft.pipeline.stages import records_trained

    _, _, prepared = prepare(recipe, log)
    names = [s.name for s in recipe.resolved_stages]
    if stage_name is not None and stage_name not in names:
        raise UserError(f"--stage: no stage {stage_name!r} (stages: {', '.join(names)})")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    with open(out, "w", encoding="utf-8") as handle:
        for stage, name, plan in zip(recipe.resolved_stages, names, prepared.plans):
            if stage_name is not None and name != stage_name:
                continue
            trained = records_trained(recipe, stage, len(plan.order))
            if trained < len(plan.order):
                log(f"stage {name}: the first {trained} of {len(plan.order)} planned records (max_steps {stage.max_steps})")
            for position, index in enumerate(plan.order[:trained]):
                record = prepared.conversations[index].to_json()
                record["stage"], record["position"] = name, position
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
                written += 1
    manifest_path = out.with_name(out.stem + ".manifest.json")
    checkpoint.write_json_atomic(manifest_path, prepared.manifest)
    if prepared.rejects:
        write_rejects(prepared.rejects, out.with_name(out.stem + ".rejects.jsonl"))
    if prepared.augment_rejects:
        write_jsonl(prepared.augment_rejects, out.with_name(out.stem + ".augment_rejects.jsonl"))
    report_data(prepared, log)
    log(f"wrote {written} records to {out}; manifest {manifest_path}")
    return out
