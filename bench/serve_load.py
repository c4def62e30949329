"""`medsft serve` under a bounded load: latency percentiles and throughput, against one client alone.

Starts a real `medsft serve` on 127.0.0.1 and talks to it with the official openai client: first
one client sends every question in turn (the baseline), then C clients send R requests each at
once. Prints latency p50/p90/p99 and requests/s for both, and their ratios. Correctness check:
no request fails, and every greedy answer under load is the answer the lone client got.

    .venv/bin/python bench/serve_load.py [--model DIR] [--clients 16] [--requests 20] [--max-tokens 16]

Without --model it builds the tests' tiny Llama (a 2-core CPU answers it in milliseconds, so
the figures are mostly the server's own overhead); pass a real model folder (e.g. the SmolLM2
folder `medsft lab --base smollm2` caches) or a run directory for a heavier check.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the test fixture data
from sample_data import sample_texts  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def start(model: str, port: int, template: list[str]) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-m", "medsft", "serve", model, "--port", str(port), "--name", "m",
                                "--max-waiting", "256", *template],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).read()
            return process
        except OSError:
            if process.poll() is not None or time.time() > deadline:
                raise SystemExit("the server did not start")
            time.sleep(0.3)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default=None)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--max-tokens", type=int, default=16)
    args = parser.parse_args()
    model, template = args.model, []
    if model is None:
        template = ["--template", "chatml"]  # the tiny tokenizer has no chat template of its own
        from medsft.lab.tiny import build_tiny_model

        model = str(build_tiny_model(Path(tempfile.mkdtemp(prefix="medsft-bench-")) / "tiny", sample_texts(),
                                     vocab_size=512))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = start(model, port, template)
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0, timeout=600)
    questions = [f"Question {c}-{r}: what helps a cough?" for c in range(args.clients) for r in range(args.requests)]

    def ask(question: str) -> tuple[str, float]:
        t0 = time.perf_counter()
        answer = client.chat.completions.create(model="m", messages=[{"role": "user", "content": question}],
                                                max_tokens=args.max_tokens, temperature=0)
        return answer.choices[0].message.content, time.perf_counter() - t0

    try:
        ask(questions[0])  # warm-up
        t0 = time.perf_counter()
        alone = [ask(q) for q in questions]
        alone_seconds = time.perf_counter() - t0
        t0 = time.perf_counter()
        with ThreadPoolExecutor(args.clients) as pool:
            loaded = list(pool.map(ask, questions))
        loaded_seconds = time.perf_counter() - t0
    finally:
        server.terminate()
        server.wait(timeout=30)

    same = sum(a[0] == b[0] for a, b in zip(alone, loaded))
    rows = []
    for name, results, seconds in (("1 client, in turn", alone, alone_seconds),
                                   (f"{args.clients} clients at once", loaded, loaded_seconds)):
        latencies = [r[1] * 1000 for r in results]
        rows.append((name, percentile(latencies, 50), percentile(latencies, 90), percentile(latencies, 99),
                     len(results) / seconds))
    print(f"{len(questions)} requests, max_tokens {args.max_tokens}, model {model}")
    print(f"{'':24} {'p50 ms':>9} {'p90 ms':>9} {'p99 ms':>9} {'req/s':>8}")
    for name, p50, p90, p99, rate in rows:
        print(f"{name:24} {p50:9.1f} {p90:9.1f} {p99:9.1f} {rate:8.2f}")
    print(f"ratio under load / alone: p50 {rows[1][1] / rows[0][1]:.2f}x, "
          f"throughput {rows[1][4] / rows[0][4]:.2f}x (one model answers one request at a time)")
    print(f"correctness: {same}/{len(questions)} greedy answers under load equal the lone client's; "
          f"mean latency alone {statistics.mean(r[1] for r in alone) * 1000:.1f} ms")
    if same != len(questions):
        raise SystemExit("FAILED: answers under load differ from the lone client's")


if __name__ == "__main__":
    main()
