"""Encoding speed: batched tokenization vs one tokenizer call per record, and the cache.

Prints ratios against the per-record baseline measured in the same run, and checks that the
batched path gives exactly the baseline's ids and labels.

    .venv/bin/python bench/encode_speed.py [--records 20000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from medsft.data.encode import encode_batch, encode_records
from medsft.data.readers import read_source
from medsft.data.templates import get_template, supervised_exchanges
from medsft.lab.tiny import build_tokenizer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the test fixture data
from sample_data import sample_texts, write_sample  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=20000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="medsft-bench-"))
    tokenizer = build_tokenizer(sample_texts(), work / "tok", vocab_size=1024)
    files = write_sample(work / "data")
    pool = read_source("medical", files["medical"]).conversations + read_source("general", files["general"]).conversations
    conversations = [pool[i % len(pool)] for i in range(args.records)]
    template = get_template("qwen", tokenizer)
    exchanges = [template.render(c) for c in conversations]
    flags = [supervised_exchanges(e, "all_assistant") for e in exchanges]

    def tokenize(texts):
        return tokenizer(texts, add_special_tokens=False)["input_ids"]

    start = time.perf_counter()
    baseline = {"input_ids": [], "labels": []}
    for record, flag in zip(exchanges, flags):  # the slow way: a tokenizer call per record
        row = encode_batch([record], [flag], tokenize, 1024)
        baseline["input_ids"] += row["input_ids"]
        baseline["labels"] += row["labels"]
    per_record = time.perf_counter() - start

    start = time.perf_counter()
    batched, hit = encode_records(exchanges, flags, tokenizer, 1024, cache_dir=work / "cache")
    fresh = time.perf_counter() - start
    assert not hit
    start = time.perf_counter()
    cached, hit = encode_records(exchanges, flags, tokenizer, 1024, cache_dir=work / "cache")
    again = time.perf_counter() - start
    assert hit

    same = batched["input_ids"] == baseline["input_ids"] and batched["labels"] == baseline["labels"]
    same_cached = cached["input_ids"] == baseline["input_ids"] and cached["labels"] == baseline["labels"]
    tokens = sum(batched["length"])
    print(f"records {args.records}, tokens {tokens}")
    print(f"per-record baseline : {per_record:7.2f} s  ({tokens / per_record:,.0f} tokens/s)")
    print(f"batched (datasets)  : {fresh:7.2f} s  speed-up x{per_record / fresh:.1f}")
    print(f"second run (cache)  : {again:7.2f} s  speed-up x{per_record / again:.1f}")
    print(f"identical ids and labels: batched {same}, cached {same_cached}")
    if not (same and same_cached):
        raise SystemExit("MISMATCH")


if __name__ == "__main__":
    main()
