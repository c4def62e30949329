"""`medsft data inspect`: what a practitioner needs to know about data files before training on them."""

from __future__ import annotations

import json
import statistics
from collections import Counter
from pathlib import Path

from medsft.data.encode import batch_tokenizer, encode_batch
from medsft.data.readers import read_source
from medsft.data.records import SourceRecords, has_placeholder
from medsft.data.templates import get_template, supervised_exchanges

# An answer-length gap this large between sources teaches the model the shorter style.
LENGTH_GAP_WARNING = 1.5


def _stats(values: list[int]) -> dict:
    if not values:
        return {"median": 0, "p90": 0, "mean": 0.0}
    ordered = sorted(values)
    return {
        "median": statistics.median(ordered),
        "p90": ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))],
        "mean": round(sum(ordered) / len(ordered), 1),
    }


FIT_LENGTHS = (256, 512, 1024, 2048, 4096)


def _source_name(path: str, taken: set[str]) -> str:
    base = Path(path.rstrip("/")).stem or "data"
    name, n = base, 2
    while name in taken:
        name, n = f"{base}-{n}", n + 1
    return name


def inspect_sources(sources: list[SourceRecords], count=None, encode=None, max_length: int | None = None,
                    fit=None) -> dict:
    """Stats per source. `count(texts) -> token lengths`, or None for characters; `encode(conversations)`
    -> the encoded rows (to find what max_length cuts), or None."""
    unit = "characters" if count is None else "tokens"
    count = count or (lambda texts: [len(t) for t in texts])
    report: dict = {"unit": unit, "max_length": max_length, "sources": {}, "warnings": []}
    for source in sources:
        conversations = source.conversations
        prompts = [p for c in conversations for p in c.prompts()]
        answers = [a for c in conversations for a in c.answers()]
        reasons = [r.reason for r in source.rejects]
        keys = Counter(c.content_key for c in conversations)
        entry = {
            "files": source.files,
            "records": source.read,
            "usable": len(conversations),
            "malformed": len(source.rejects),
            "turns": _stats([len(c.messages) for c in conversations]),
            "prompt_length": _stats(count(prompts)),
            "answer_length": _stats(count(answers)),
            "exact_duplicates": sum(n - 1 for n in keys.values() if n > 1),
            "empty_answers": sum(1 for r in reasons if "empty content" in r and ("(assistant)" in r or "(function_call)" in r)),
            "nothing_to_supervise": sum(1 for r in reasons if "nothing to supervise" in r or r == "no messages"),
            "placeholders": sum(has_placeholder(c) for c in conversations),
        }
        if fit is not None and conversations:
            entry["max_length_fit"] = fit(conversations)
        if encode is not None and max_length and conversations:
            rows = encode(conversations)
            kept = [(n, d) for n, d in zip(rows["length"], rows["exchanges_dropped"]) if n > 0]
            entry["too_long"] = len(conversations) - len(kept)  # left out: the first exchange does not fit
            # cut: kept, without its later exchanges (a record left out is not counted again here)
            entry["records_cut"] = sum(1 for _, d in kept if d)
            entry["answers_cut"] = sum(d for _, d in kept)
        report["sources"][source.name] = entry
    report["warnings"] = _warnings(report)
    return report


def _warnings(report: dict) -> list[str]:
    notes = []
    sources = report["sources"]
    unit = report["unit"]
    medians = {n: s["answer_length"]["median"] for n, s in sources.items() if s["usable"]}
    if len(medians) > 1:
        short = min(medians, key=medians.get)
        long = max(medians, key=medians.get)
        if medians[short] > 0 and medians[long] / medians[short] >= LENGTH_GAP_WARNING:
            notes.append(
                f"answers in {short} are {medians[long] / medians[short]:.1f}x shorter than in {long} "
                f"(median {medians[short]:g} vs {medians[long]:g} {unit}): training on it will shorten answers"
            )
    for name, s in sources.items():
        if s["empty_answers"]:
            notes.append(f"{name}: {s['empty_answers']} records have an empty answer")
        if s["nothing_to_supervise"]:
            notes.append(f"{name}: {s['nothing_to_supervise']} records have nothing to supervise (no final answer)")
        if s["malformed"] - s["empty_answers"] - s["nothing_to_supervise"] > 0:
            other = s["malformed"] - s["empty_answers"] - s["nothing_to_supervise"]
            notes.append(f"{name}: {other} malformed records (run `medsft train` with on_bad_record: skip to list them)")
        if s.get("placeholders"):
            notes.append(f"{name}: {s['placeholders']} records hold {{{{...}}}} placeholders such as {{{{name}}}}; "
                         "they would be trained literally (fill them with data.sources[].replace in the recipe)")
        if s["exact_duplicates"]:
            notes.append(f"{name}: {s['exact_duplicates']} exact duplicates (they weigh double in training)")
        if s.get("too_long"):
            notes.append(f"{name}: {s['too_long']} records do not fit in max_length={report['max_length']} at all")
        if s.get("records_cut"):
            notes.append(f"{name}: {s['records_cut']} records would be cut to fit max_length={report['max_length']}, "
                         f"losing {s['answers_cut']} later answers")
    return notes


def format_report(report: dict) -> str:
    unit = report["unit"]
    header = (f"{'source':<16}{'records':>8}{'bad':>6}{'dups':>6}{'turns':>7}"
              f"{'prompt med/p90':>18}{'answer med/p90':>18}")
    lines = [f"lengths in {unit}", header, "-" * len(header)]
    for name, s in report["sources"].items():
        lines.append(
            f"{name[:15]:<16}{s['records']:>8}{s['malformed']:>6}{s['exact_duplicates']:>6}"
            f"{s['turns']['median']:>7g}"
            f"{s['prompt_length']['median']:>11g}/{s['prompt_length']['p90']:<6g}"
            f"{s['answer_length']['median']:>11g}/{s['answer_length']['p90']:<6g}"
        )
    fits = {name: s["max_length_fit"] for name, s in report["sources"].items() if "max_length_fit" in s}
    if fits:
        limits = list(next(iter(fits.values())))
        lines += ["", "records left out / cut at each max_length (first exchange too long / later turns dropped)",
                  f"{'source':<16}" + "".join(f"{limit:>14}" for limit in limits)]
        for name, fit in fits.items():
            lines.append(f"{name[:15]:<16}" + "".join(
                f"{fit[limit]['dropped']:>7.1%}/{fit[limit]['cut']:<6.1%}" for limit in limits))
    for warning in report["warnings"]:
        lines.append(f"warning: {warning}")
    return "\n".join(lines)


def inspect_command(files: list[str], tokenizer=None, template: str | None = None,
                    max_length: int | None = None, as_json: bool = False) -> int:
    """tokenizer: a loaded tokenizer, for lengths in tokens (None: characters)."""
    taken: set[str] = set()
    sources = []
    for path in files:
        name = _source_name(path, taken)
        taken.add(name)
        sources.append(read_source(name, path, "auto", on_bad_record="skip"))
    count = encode = fit = None
    if tokenizer:
        count, encode, fit = _token_counters(tokenizer, template, max_length)
    report = inspect_sources(sources, count, encode, max_length, fit)
    print(json.dumps(report, indent=2, ensure_ascii=False) if as_json else format_report(report))
    return 0


def _token_counters(tok, template_name: str | None, max_length: int | None):
    """Token counting and encoding through the model's tokenizer."""
    tokenize = batch_tokenizer(tok)

    def count(texts: list[str]) -> list[int]:
        return [len(ids) for ids in tokenize(texts)] if texts else []

    template = get_template(template_name or ("tokenizer" if tok.chat_template else "chatml"), tok)

    def fit(conversations) -> dict:
        """Per max_length, the share of records left out (first exchange too long) and cut (later
        exchanges dropped): what each setting would cost, before a run."""
        pieces = [[p for e in template.render(c) for p in (e.prompt, e.answer, e.separator)] for c in conversations]
        counted = iter(count([p for record in pieces for p in record]))  # one tokenizer call for them all
        firsts, totals = [], []
        for record in pieces:
            lengths = [next(counted) for _ in record]
            firsts.append(lengths[0] + lengths[1])
            totals.append(sum(lengths) - lengths[-1])  # the last separator is never trained
        shares = {}
        for limit in sorted({*FIT_LENGTHS, *([max_length] if max_length else [])}):  # and the one asked about
            dropped = sum(1 for f in firsts if f > limit)
            cut = sum(1 for f, t in zip(firsts, totals) if f <= limit < t)
            shares[str(limit)] = {"dropped": round(dropped / len(firsts), 4), "cut": round(cut / len(firsts), 4)}
        return shares

    if not max_length:
        return count, None, fit

    def encode(conversations):
        exchanges = [template.render(c) for c in conversations]
        flags = [supervised_exchanges(e, "all_assistant") for e in exchanges]
        return encode_batch(exchanges, flags, tokenize, max_length)

    return count, encode, fit
