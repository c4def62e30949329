"""Rendered exchanges -> input_ids and labels, in batches, cached by content hash.

Labels are -100 everywhere but on the answers (assistant text + end-of-turn token) that the
recipe supervises. A record longer than max_length loses whole later exchanges, never the end of
an answer; a record whose first exchange alone does not fit cannot be trained on and is rejected.
Under train_on: last_assistant it loses its earliest exchanges instead, so the one supervised
answer is kept; it is rejected only when the last exchange alone does not fit.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from medsft.data.templates import WHOLE, Exchange

IGNORE = -100
ENCODING_VERSION = "2"  # bump when the encoding rules change, so old caches are not reused


def _stitch(
    prompt_ids: list[list[int]],
    answer_ids: list[list[int]],
    separator_ids: list[list[int]],
    supervised: list[bool | str],
    max_length: int,
    too_long: str = "drop",
) -> dict:
    """One record's token ids and labels from its exchanges' pieces, truncated by whole exchanges.
    too_long: `drop` leaves out a record whose first exchange does not fit; `truncate` cuts that
    exchange's answer to fit (its end token then falls outside and is not supervised)."""
    input_ids: list[int] = []
    labels: list[int] = []
    answer_lengths: list[int] = []
    whole_tokens = 0  # prompt tokens supervised under train_on: all
    kept = 0
    for i, (prompt, answer) in enumerate(zip(prompt_ids, answer_ids)):
        before = separator_ids[i - 1] if i > 0 else []
        if len(input_ids) + len(before) + len(prompt) + len(answer) > max_length:
            break
        input_ids += before + prompt + answer
        if supervised[i] == WHOLE:  # train_on: all
            labels += before + prompt + answer
            answer_lengths.append(len(answer))
            whole_tokens += len(before) + len(prompt)
        elif supervised[i]:
            labels += [IGNORE] * (len(before) + len(prompt)) + answer
            answer_lengths.append(len(answer))
        else:
            labels += [IGNORE] * (len(before) + len(prompt) + len(answer))
        kept += 1
    total = len(prompt_ids)
    if kept < total and supervised[-1] is True and not any(supervised[:-1]):
        # last_assistant: the one supervised answer was cut; keep it with the most recent history
        # that fits, dropping the earliest exchanges instead (as LLaMA-Factory's mask_history does)
        row = _last_exchange_with_recent_history(prompt_ids, answer_ids, separator_ids, max_length)
        if row["length"] or too_long == "drop":
            return row
        return _cut_answer(prompt_ids[-1], answer_ids[-1], True, max_length, total, total - 1)
    if kept == 0 and too_long == "truncate":
        return _cut_answer(prompt_ids[0], answer_ids[0], supervised[0], max_length, total, 0)
    if kept == 0:
        input_ids, labels, answer_lengths, whole_tokens = [], [], [], 0
    return _row(input_ids, labels, answer_lengths, whole_tokens, total, total - kept)


def _cut_answer(prompt: list[int], answer: list[int], flag, max_length: int, total: int, history: int) -> dict:
    """One exchange whose answer is cut to fit max_length (data.too_long: truncate); nothing when
    not even the prompt and one answer token fit."""
    room = max_length - len(prompt)
    if room < 1 or not flag:
        return _row([], [], [], 0, total, total)
    answer = answer[:room]
    labels = (prompt if flag == WHOLE else [IGNORE] * len(prompt)) + answer
    whole = len(prompt) if flag == WHOLE else 0
    row = _row(prompt + answer, labels, [len(answer)], whole, total, total - 1, history_dropped=history)
    row["answer_truncated"] = 1
    return row


def _row(input_ids, labels, answer_lengths, whole_tokens, total, dropped, history_dropped=0) -> dict:
    return {
        "input_ids": input_ids,
        "labels": labels,
        "length": len(input_ids),
        "supervised_tokens": sum(answer_lengths) + whole_tokens,
        "answer_lengths": answer_lengths,
        "exchanges": total,
        "exchanges_dropped": dropped,
        "history_dropped": history_dropped,  # earliest exchanges dropped to keep the last answer
        "answer_truncated": 0,  # 1: the answer was cut to fit (data.too_long: truncate)
    }


def _last_exchange_with_recent_history(prompt_ids, answer_ids, separator_ids, max_length: int) -> dict:
    """The last exchange (supervised) after as many of the exchanges just before it as fit; the
    record then starts at an exchange boundary (a system prompt in the first exchange goes with it)."""
    total = len(prompt_ids)
    last = total - 1
    length = len(prompt_ids[last]) + len(answer_ids[last])
    if length > max_length:
        return _row([], [], [], 0, total, total)
    start = last
    while start > 0:
        added = len(prompt_ids[start - 1]) + len(answer_ids[start - 1]) + len(separator_ids[start - 1])
        if length + added > max_length:
            break
        length += added
        start -= 1
    input_ids: list[int] = []
    for i in range(start, total):
        input_ids += (separator_ids[i - 1] if i > start else []) + prompt_ids[i] + answer_ids[i]
    labels = [IGNORE] * (len(input_ids) - len(answer_ids[last])) + answer_ids[last]
    return _row(input_ids, labels, [len(answer_ids[last])], 0, total, start, history_dropped=start)


def encode_batch(
    exchanges: list[list[Exchange]],
    supervised: list[list[bool]],
    tokenize: Callable[[list[str]], list[list[int]]],
    max_length: int,
    too_long: str = "drop",
) -> dict[str, list]:
    """Encode many records with ONE tokenizer call over all their pieces (fast tokenizers batch in Rust)."""
    pieces: list[str] = []
    for record in exchanges:
        for ex in record:
            pieces += [ex.prompt, ex.answer, ex.separator]
    ids = tokenize(pieces)
    columns: dict[str, list] = {}
    cursor = 0
    for record, flags in zip(exchanges, supervised):
        n = len(record)
        chunk = ids[cursor : cursor + 3 * n]
        cursor += 3 * n
        row = _stitch(chunk[0::3], chunk[1::3], chunk[2::3], flags, max_length, too_long)
        for key, value in row.items():
            columns.setdefault(key, []).append(value)
    return columns


def batch_tokenizer(tokenizer) -> Callable[[list[str]], list[list[int]]]:
    """texts -> token ids, without special tokens added, in one call for the whole list.

    A fast tokenizer goes straight to its Rust backend (`encode_batch_fast`, no offsets), which
    is about twice as fast as the Python wrapper; a slow one (e.g. Baichuan's) takes the wrapper.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None) if getattr(tokenizer, "is_fast", False) else None
    if backend is not None and hasattr(backend, "encode_batch_fast"):
        return lambda texts: [e.ids for e in backend.encode_batch_fast(texts, add_special_tokens=False)]
    return lambda texts: tokenizer(texts, add_special_tokens=False)["input_ids"]


def tokenizer_fingerprint(tokenizer) -> str:
    """Identifies what a tokenizer does to text, for the encoding cache."""
    digest = hashlib.sha256()
    digest.update(type(tokenizer).__name__.encode())
    digest.update(json.dumps(sorted(tokenizer.get_vocab().items()), ensure_ascii=False).encode("utf-8"))
    digest.update(json.dumps(tokenizer.special_tokens_map, sort_keys=True, default=str).encode("utf-8"))
    return digest.hexdigest()


def content_fingerprint(exchanges: list[list[Exchange]], supervised: list[list[bool | str]]) -> str:
    digest = hashlib.sha256()
    for record, flags in zip(exchanges, supervised):
        for ex, flag in zip(record, flags):
            for text in (ex.prompt, ex.answer, ex.separator):
                digest.update(text.encode("utf-8"))
                digest.update(b"\x00")
            digest.update(b"A" if flag == WHOLE else b"1" if flag else b"0")  # A: train_on all
        digest.update(b"\x01")
    return digest.hexdigest()


def default_cache_dir() -> Path:
    return Path(os.environ.get("MEDSFT_CACHE") or Path.home() / ".cache" / "medsft")


def encode_records(
    exchanges: list[list[Exchange]],
    supervised: list[list[bool]],
    tokenizer,
    max_length: int,
    cache_dir: str | Path | None = None,
    num_proc: int | None = None,
    too_long: str = "drop",
):
    """A `datasets.Dataset` with one encoded row per record, in the same order.

    The result is saved under the cache folder, keyed by a hash of the rendered text, the
    tokenizer and max_length: the second run of the same recipe loads it instead of tokenizing.
    Returns (dataset, cache_hit).
    """
    import datasets

    key = hashlib.sha256(
        "|".join(
            [ENCODING_VERSION, content_fingerprint(exchanges, supervised), tokenizer_fingerprint(tokenizer), str(max_length),
             too_long]
        ).encode()
    ).hexdigest()[:32]
    folder = Path(cache_dir or default_cache_dir()) / "encoded" / key
    if (folder / "dataset_info.json").exists():
        return datasets.load_from_disk(str(folder)), True

    table = datasets.Dataset.from_dict(
        {
            "prompt": [[ex.prompt for ex in record] for record in exchanges],
            "answer": [[ex.answer for ex in record] for record in exchanges],
            "separator": [[ex.separator for ex in record] for record in exchanges],
            "supervised": supervised,
        }
    )

    tokenize = batch_tokenizer(tokenizer)

    def encode(batch: dict) -> dict:
        rebuilt = [
            [Exchange(p, a, s) for p, a, s in zip(ps, as_, ss)]
            for ps, as_, ss in zip(batch["prompt"], batch["answer"], batch["separator"])
        ]
        return encode_batch(rebuilt, batch["supervised"], tokenize, max_length, too_long)

    if num_proc is None:  # worker processes only pay off on large sets
        num_proc = min(os.cpu_count() or 1, 8) if len(exchanges) >= 50_000 else None
    encoded = table.map(
        encode,
        batched=True,
        batch_size=1000,
        num_proc=num_proc,
        remove_columns=table.column_names,
        desc="Tokenizing",
    )
    tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
    encoded.save_to_disk(str(tmp))
    if folder.exists():  # another process finished the same encoding first
        shutil.rmtree(tmp)
    else:
        os.replace(tmp, folder)
    return datasets.load_from_disk(str(folder)), False
