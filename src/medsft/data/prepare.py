"""From a recipe's sources to encoded, split and mixed training data, with its manifest.

Used by `medsft train` and `medsft data mix`, so what `data mix` writes is exactly what a stage
trains on. The tokenizer is passed in (this module imports no torch).
"""

from __future__ import annotations

import json
import statistics
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from medsft.data.augment import AugmentSettings, augment_cached, check_settings
from medsft.data.encode import default_cache_dir, encode_records
from medsft.data.rewrite import RewriteSettings
from medsft.data.mixture import StagePlan, group_by_length, in_validation, padding_efficiency, plan_stage
from medsft.data.readers import original_texts, read_source
from medsft.data.records import Conversation, Message, Reject, has_placeholder, replace_text
from medsft.data.templates import supervised_exchanges
from medsft.errors import BadRecordError, UserError


@dataclass
class PreparedData:
    conversations: list[Conversation]  # every usable record; its index is its row in `encoded`
    encoded: object  # datasets.Dataset: input_ids, labels, length, supervised_tokens, ...
    source_names: list[str]
    source_index: list[int]  # per record: index into source_names
    train_pools: dict[str, list[int]]
    val_pools: dict[str, list[int]]
    plans: list[StagePlan]
    rejects: list[Reject]
    manifest: dict
    cache_hit: bool = False
    warnings: list[str] = field(default_factory=list)
    augment_rejects: list[dict] = field(default_factory=list)  # model rewrites that failed the fact check


def held_out(conversation: Conversation, source, val_fraction: float) -> bool:
    """Whether a record is validation: the source's `split` when fixed, else by a hash of its content."""
    if source.split != "auto":
        return source.split == "validation"
    return in_validation(conversation.split_key or conversation.content_key, val_fraction)


def _first_records(records, count: int) -> int:
    """Keep the source's first `count` usable records, and the bad ones met before the last of them:
    reading stops there, so read = used + rejected still holds. Returns how many records were not read."""
    if len(records.conversations) <= count:
        return 0
    order = {file: i for i, file in enumerate(records.files)}

    def position(provenance):
        return order.get(provenance.file, len(order)), provenance.line

    last = position(records.conversations[count - 1].provenance)
    before = records.read
    records.conversations = records.conversations[:count]
    records.rejects = [r for r in records.rejects if position(r.provenance) < last]
    return before - records.read


def _self_distill(source, conversations: list[Conversation], val_fraction: float, distiller):
    """The training records' last answers as the base model gives them: `replace` puts them in
    place of the file's (the record keeps its split), `join` adds them as new training records.
    Returns (conversations, added records, report)."""
    from dataclasses import replace

    train_side = [i for i, c in enumerate(conversations) if not held_out(c, source, val_fraction)]
    answers, report = distiller(source, [conversations[i] for i in train_side])
    conversations = list(conversations)
    added = []
    before, after = [], []
    for index, answer in zip(train_side, answers):
        if answer is None:  # unfinished within max_new_tokens: the file's answer stays
            continue
        original = conversations[index]
        last = max(i for i, m in enumerate(original.messages) if m.role == "assistant")
        before.append(len(original.messages[last].content))
        after.append(len(answer))
        messages = original.messages[:last] + (Message("assistant", answer),) + original.messages[last + 1:]
        if source.self_distill.mode == "replace":
            conversations[index] = replace(original, messages=messages, split_key=original.content_key)
        else:
            added.append(replace(original, messages=messages, augmenter="self_distill"))
    report = {**report, "mode": source.self_distill.mode, "training_records": len(train_side),
              "regenerated": len(before), "kept_file_answer_unfinished": len(train_side) - len(before),
              "mean_answer_chars_before": round(sum(before) / len(before), 1) if before else 0.0,
              "mean_answer_chars_after": round(sum(after) / len(after), 1) if after else 0.0}
    return conversations, added, report


def _augment_settings(source, local_rewriter) -> AugmentSettings:
    config = source.augment
    rewrite, rewrite_with = None, None
    if config.rewrite is not None:
        rewrite = RewriteSettings(config.rewrite.url, config.rewrite.model, config.rewrite.api_key_env,
                                  config.rewrite.model_path, config.rewrite.temperature, config.rewrite.max_new_tokens)
        if rewrite.model_path and "rewrite" in config.augmenters:
            if local_rewriter is None:
                raise UserError(f"data.sources.{source.name}.augment.rewrite.model_path: a local model can "
                                "rewrite only in `medsft train`/`data mix`")
            rewrite_with = local_rewriter(rewrite, config.seed)
    return AugmentSettings(tuple(config.augmenters), config.per_record, config.seed, rules_file=config.rules_file,
                           synonyms_file=config.synonyms_file, rewrite=rewrite, rewrite_with=rewrite_with)


def _quantiles(values: list[int]) -> dict:
    if not values:
        return {"count": 0, "median": 0, "p90": 0, "mean": 0}
    ordered = sorted(values)
    return {
        "count": len(ordered),
        "median": statistics.median(ordered),
        "p90": ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))],
        "mean": round(sum(ordered) / len(ordered), 2),
    }


def prepare_data(recipe, tokenizer, template, local_rewriter=None, distiller=None) -> PreparedData:
    """Read every source, reject what cannot be used, encode, split, and plan every stage.

    local_rewriter(settings, seed): the rewriter for `augment.rewrite.model_path`; distiller(source,
    conversations) -> (answers or None each, report): the base model's answers for
    `self_distill` (both need a model, which this layer does not load)."""
    data = recipe.data
    conversations: list[Conversation] = []
    augmented: list[Conversation] = []
    rejects: list[Reject] = []
    per_source: dict[str, dict] = {}
    augment_rejects: list[dict] = []
    for source in data.sources:
        try:
            records = read_source(source.name, source.path, source.format, data.on_bad_record)
        except BadRecordError as error:  # the first error a new user meets: say how to go on
            raise BadRecordError(f"{error} (to skip such records and keep them in rejects.jsonl, "
                                 "set data.on_bad_record: skip)") from None
        beyond = _first_records(records, source.max_samples) if source.max_samples else 0
        if source.replace:
            records.conversations = [replace_text(c, source.replace) for c in records.conversations]
        rejects += records.rejects
        per_source[source.name] = {
            "role": source.role,
            "path": source.path,
            "files": records.files,
            "read": records.read,
            "malformed": len(records.rejects),
            "trimmed_unanswered_turn": sum(c.trimmed for c in records.conversations),
            "not_read_max_samples": beyond,  # records after the first max_samples usable ones
            "unreplaced_placeholders": sum(has_placeholder(c) for c in records.conversations),
        }
        if source.self_distill:
            if distiller is None:
                raise UserError(f"data.sources.{source.name}.self_distill: needs the base model "
                                "(medsft train / data mix)")
            records.conversations, distilled, report = _self_distill(source, records.conversations, data.val_fraction,
                                                                     distiller)
            augmented += distilled
            per_source[source.name]["self_distill"] = report
        conversations += records.conversations
        if source.augment:
            # Validation is split off first: no rewrite of a validation record reaches training.
            train_side = [c for c in records.conversations if not held_out(c, source, data.val_fraction)]
            settings = _augment_settings(source, local_rewriter)
            check_settings(settings, f"data.sources.{source.name}.augment")
            made, report, hit = augment_cached(train_side, settings, records.conversations,
                                               data.cache_dir or default_cache_dir())
            augment_rejects += [{"source": source.name, **r} for r in report.rewrite_rejects]
            augmented += made
            per_source[source.name]["augmentation"] = {**report.to_json(), "cache_hit": hit}
    conversations += augmented  # after every read record: read records keep their positions

    exchanges = [template.render(c, recipe.model.system_prompt) for c in conversations]
    supervised = [supervised_exchanges(e, data.train_on) for e in exchanges]
    encoded, cache_hit = encode_records(exchanges, supervised, tokenizer, data.max_length, data.cache_dir,
                                        too_long=data.too_long)

    lengths = encoded["length"]
    names = [s.name for s in data.sources]
    position = {n: i for i, n in enumerate(names)}
    source_index = [position[c.source] for c in conversations]
    train_pools: dict[str, list[int]] = {n: [] for n in names}
    val_pools: dict[str, list[int]] = {n: [] for n in names}
    too_long_records: list[Conversation] = []
    augmented_too_long = Counter()
    by_name = {s.name: s for s in data.sources}
    for i, conversation in enumerate(conversations):
        if conversation.augmenter is not None:  # made from a training record: training only
            if lengths[i] == 0:
                augmented_too_long[conversation.source] += 1
            else:
                train_pools[conversation.source].append(i)
            continue
        if lengths[i] == 0:
            too_long_records.append(conversation)
            continue
        pool = val_pools if held_out(conversation, by_name[conversation.source], data.val_fraction) else train_pools
        pool[conversation.source].append(i)
    too_long = Counter(c.source for c in too_long_records)
    rejects += _too_long_rejects(too_long_records, by_name,
                                 f"longer than max_length={data.max_length} tokens even with only its "
                                 f"{'last' if data.train_on == 'last_assistant' else 'first'} exchange")

    for stage in recipe.resolved_stages:
        _check_stage(stage, train_pools, too_long, data.max_length)
    plans = [
        plan_stage(
            stage.name,
            train_pools,
            lengths,
            stage.weights,
            stage.epochs,
            data.ratio_by,
            stage.anchor,
            recipe.train.seed,
        )
        for stage in recipe.resolved_stages
    ]
    for stage, plan in zip(recipe.resolved_stages, plans):
        if not plan.order:
            raise UserError(f"stages: {stage.name!r} takes no records (epochs {stage.epochs:g} of its anchor source "
                            "rounds to none); raise its epochs")
    train = recipe.train
    if train.group_by_length:
        for plan in plans:
            plan.order = group_by_length(plan.order, lengths, train.batch_size, train.length_window,
                                         f"{train.seed}:{plan.name}")
    prepared = PreparedData(
        conversations, encoded, names, source_index, train_pools, val_pools, plans, rejects, {}, cache_hit
    )
    for name, count in augmented_too_long.items():
        per_source[name].setdefault("augmentation", {})["too_long_left_out"] = count
    prepared.manifest = _manifest(recipe, prepared, per_source, too_long, lengths)
    prepared.warnings = _warnings(prepared.manifest, data.max_length)
    _note_unweighted(recipe, prepared)
    prepared.augment_rejects = augment_rejects
    return prepared


def _too_long_rejects(conversations: list[Conversation], sources: dict, reason: str) -> list[Reject]:
    """The records max_length leaves out, as rejects holding each record's text as its file has it
    (like a malformed record's), so it can be fixed and fed again."""
    by_source: dict[str, list] = {}
    for conversation in conversations:
        by_source.setdefault(conversation.source, []).append(conversation.provenance)
    texts = {}
    for name, provenances in by_source.items():
        texts.update(original_texts(sources[name].path, provenances))
    # The normalized record only when its file no longer holds it (changed since it was read).
    return [Reject(c.source, c.provenance, reason,
                   texts.get(c.provenance) or json.dumps(c.to_json(), ensure_ascii=False)) for c in conversations]


def _note_unweighted(recipe, prepared) -> None:
    """A source that no stage's weights name is never trained on: said in the log and the manifest."""
    for source in recipe.data.sources:
        if source.split == "validation" or any(stage.weights is None or source.name in stage.weights
                                               for stage in recipe.resolved_stages):
            continue
        count = len(prepared.train_pools.get(source.name, []))
        prepared.manifest["sources"][source.name]["in_no_stage"] = True
        prepared.warnings.append(f"{source.name}: in no stage's weights, so none of its {count} training records is "
                                 f"trained on (its validation split still gives eval_loss/{source.name}); name it in "
                                 "a stage's weights, or drop the source")


def _check_stage(stage, train_pools: dict[str, list[int]], too_long: Counter, max_length: int) -> None:
    def why(source: str) -> str:  # the likeliest cause, when it is max_length
        return (f" ({too_long[source]} of its records are longer than max_length={max_length} and left out; "
                "medsft data inspect --tokenizer shows the lengths)") if too_long[source] else ""

    for source in stage.weights or {}:
        if not train_pools[source]:
            raise UserError(f"stages: {stage.name!r} draws from {source!r}, which has no usable training records"
                            + why(source))
    if not any(train_pools[s] for s in stage.weights or train_pools):
        raise UserError(f"stages: {stage.name!r} has no usable training records"
                        + "".join(why(s) for s in (stage.weights or train_pools) if too_long[s]))


def _manifest(recipe, prepared: PreparedData, per_source: dict[str, dict], too_long: Counter,
              lengths: list[int]) -> dict:
    encoded = prepared.encoded
    supervised_tokens = encoded["supervised_tokens"]
    answer_lengths = encoded["answer_lengths"]
    dropped = encoded["exchanges_dropped"]
    history = encoded["history_dropped"]
    cut = encoded["answer_truncated"]
    sources = {}
    for name, info in per_source.items():
        rows = prepared.train_pools[name] + prepared.val_pools[name]
        keys = Counter(prepared.conversations[i].content_key for i in rows)
        answers = [n for i in rows for n in answer_lengths[i]]
        answer_chars = [len(a) for i in rows for a in prepared.conversations[i].answers()]
        total_tokens = sum(lengths[i] for i in rows)
        supervised = sum(supervised_tokens[i] for i in rows)
        rejected = info["malformed"] + too_long[name]
        sources[name] = {
            **info,
            "too_long": too_long[name],
            "rejected": rejected,
            "used": sum(1 for i in rows if prepared.conversations[i].augmenter is None),
            "augmented_used": sum(1 for i in rows if prepared.conversations[i].augmenter is not None),
            "train": len(prepared.train_pools[name]),
            "validation": len(prepared.val_pools[name]),
            "truncated_records": sum(1 for i in rows if dropped[i] > 0),
            "exchanges_dropped": sum(dropped[i] for i in rows),
            # train_on: last_assistant: records that kept their last answer by losing earlier history
            "history_truncated_records": sum(1 for i in rows if history[i] > 0),
            "answers_truncated": sum(cut[i] for i in rows),  # data.too_long: truncate
            "exact_duplicates": sum(n - 1 for n in keys.values() if n > 1),
            "tokens": total_tokens,
            "supervised_tokens": supervised,
            "supervised_fraction": round(supervised / total_tokens, 4) if total_tokens else 0.0,
            "answer_tokens": _quantiles(answers),
            "answer_chars": _quantiles(answer_chars),
        }
        assert info["read"] == sources[name]["used"] + rejected, f"{name}: read != used + rejected"
    stages = []
    for stage, plan in zip(recipe.resolved_stages, prepared.plans):
        stages.append(
            {
                "name": plan.name,
                "epochs": stage.epochs,
                "max_steps": stage.max_steps,
                "ratio_by": plan.ratio_by,
                "asked_share": {k: round(v, 4) for k, v in plan.asked_share.items()},
                "realized_share_samples": {k: round(v, 4) for k, v in plan.realized_share_samples.items()},
                "realized_share_tokens": {k: round(v, 4) for k, v in plan.realized_share_tokens.items()},
                "samples": plan.samples,
                "tokens": plan.tokens,
                "passes": {k: round(v, 3) for k, v in plan.passes.items()},
                "records": len(plan.order),
                # real tokens / tokens of the padded batches in this order (a padding-free run has no padding)
                "padding_efficiency": round(padding_efficiency(plan.order, lengths, recipe.train.batch_size), 4),
            }
        )
    return {
        "max_length": recipe.data.max_length,
        "template": recipe.model.template,
        "val_fraction": recipe.data.val_fraction,
        "on_bad_record": recipe.data.on_bad_record,
        "train_on": recipe.data.train_on,
        "batches": "padding-free" if recipe.train.padding_free else
                   "padded, grouped by length" if recipe.train.group_by_length else "padded",
        "encoding_cache_hit": prepared.cache_hit,
        "totals": {
            "read": sum(s["read"] for s in sources.values()),
            "used": sum(s["used"] for s in sources.values()),
            "rejected": sum(s["rejected"] for s in sources.values()),
            "augmented_used": sum(s["augmented_used"] for s in sources.values()),
        },
        "sources": sources,
        "stages": stages,
    }


def trained_mix(order: list[int], records: int, steps: int, prepared: PreparedData, sources: list[str],
                batch_size: int) -> dict:
    """What a stage trained on, for its manifest entry's `trained`: the first `records` of `order` (the
    order its batches took: the plan's, or an adaptive stage's as re-drawn), counted per source as the
    plan is counted. sources: the plan's sources (listed even when none of their records was reached)."""
    lengths = prepared.encoded["length"]
    taken = order[:records]
    samples, tokens = dict.fromkeys(sources, 0), dict.fromkeys(sources, 0)
    for index in taken:
        name = prepared.source_names[prepared.source_index[index]]
        samples[name] = samples.get(name, 0) + 1
        tokens[name] = tokens.get(name, 0) + lengths[index]
    return {
        "records": len(taken),
        "steps": steps,
        "samples": samples,
        "tokens": tokens,
        "realized_share_samples": _shares(samples),
        "realized_share_tokens": _shares(tokens),
        "padding_efficiency": round(padding_efficiency(taken, lengths, batch_size), 4),
    }


def _shares(counts: dict[str, int]) -> dict[str, float]:
    total = sum(counts.values())
    return {name: round(count / total, 4) if total else 0.0 for name, count in counts.items()}


def _warnings(manifest: dict, max_length: int) -> list[str]:
    notes = []
    for name, s in manifest["sources"].items():
        if s["too_long"]:
            notes.append(f"{name}: {s['too_long']} records longer than max_length={max_length} were left out")
        if s["truncated_records"] - s.get("history_truncated_records", 0):
            notes.append(
                f"{name}: {s['truncated_records'] - s.get('history_truncated_records', 0)} records lost later "
                f"turns to max_length={max_length}"
            )
        if s.get("answers_truncated"):
            notes.append(f"{name}: {s['answers_truncated']} answers were cut to max_length={max_length} "
                         "(data.too_long: truncate; their end is not trained)")
        if s.get("history_truncated_records"):
            notes.append(f"{name}: {s['history_truncated_records']} records lost their earliest turns to "
                         f"max_length={max_length} (last_assistant keeps the answer it trains on)")
        if s["malformed"]:
            notes.append(f"{name}: {s['malformed']} malformed records skipped (see rejects.jsonl)")
        if s.get("unreplaced_placeholders"):
            notes.append(f"{name}: {s['unreplaced_placeholders']} records still hold {{{{...}}}} placeholders, "
                         "trained literally (fill them with data.sources[].replace)")
        if s.get("trimmed_unanswered_turn"):
            notes.append(f"{name}: {s['trimmed_unanswered_turn']} records ended on an unanswered user turn; "
                         "it was dropped and the answered turns kept")
    return notes


def write_rejects(rejects: list[Reject], path: Path) -> None:
    write_jsonl([reject.to_json() for reject in rejects], path)


def write_jsonl(rows: list[dict], path: Path) -> None:
    with open(path, "w", encoding="utf-8") as out:
        for row in rows:
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
