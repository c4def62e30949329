"""`medsft demo`: the quick forgetting lab. Base model (built once, cached), then the base,
domain-only, 7:3 and progressive variants, each trained through `medsft train`."""

from __future__ import annotations

import time
from pathlib import Path

from medsft.lab.runner import results_table, run_lab
from medsft.lab.variants import DEMO_VARIANTS


def print_results(results: dict, out: str | Path) -> None:
    out = Path(out)
    print()
    print(results_table(results))
    print()
    print(f"results: {out / 'results.json'}  table: {out / 'results.md'}")
    print(f"plots:   {out / 'plots'}/")


def run_demo(out: str | Path = "runs/demo", cache_dir: str | Path | None = None) -> dict:
    started = time.time()
    results = run_lab(DEMO_VARIANTS, seeds=1, out=out, cache_dir=cache_dir)
    print_results(results, out)
    print(f"demo finished in {time.time() - started:.0f}s")
    return results
