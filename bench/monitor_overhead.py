"""Monitoring overhead: the wall-time share of a run spent probing, against the same run unprobed.

Runs the lab's 7:3 LoRA recipe on the lab's base model twice, with the monitor's defaults
(built-in general probes, 16 domain probes, KL to base; by default at the end of each stage, or
every `--every` steps), and with probes off (validation losses on the same schedule). Prints the probing share measured inside the run, the wall-time ratio of the two
runs, and checks that probing did not change training (identical final adapters).

    .venv/bin/python bench/monitor_overhead.py [--every N] [--cache-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from medsft.lab.base import BaseConfig, build_base
from medsft.lab.variants import VARIANTS, LabContext
from medsft.lab.world import build_world
from medsft.recipe import parse_recipe
from medsft.pipeline.run import train


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--every", type=int, default=None,
                        help="probe every N steps (default: the recipe default, at the end of each stage)")
    parser.add_argument("--cache-dir", default=None)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="medsft-overhead-"))
    world = build_world(0, "en")
    base = build_base(world, BaseConfig(), Path(args.cache_dir) if args.cache_dir else None)
    context = LabContext(base, world.write(work / "world"), work)

    timings, adapters = {}, {}
    for name, probes in [("probed", True), ("unprobed", False)]:
        tree = VARIANTS["mix-7-3"](context, name, 0)
        # The monitor's defaults (built-in general probes, 16 domain probes, 256 new tokens, KL), not the lab's.
        tree["monitor"] = {"eval_every": args.every, "probes": probes, "select": {"enabled": False}}
        started = time.perf_counter()
        result = train(parse_recipe(tree, name), log=lambda *_: None)
        timings[name] = time.perf_counter() - started
        adapters[name] = (result.run_dir / "adapter" / "adapter_model.safetensors").read_bytes()
        if name == "probed":
            overhead = json.loads((result.run_dir / "monitor" / "overhead.json").read_text())
            evaluations = sum(1 for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()
                              if '"event": "eval"' in line)
    share = overhead["monitor_seconds"] / overhead["run_seconds"]
    every = f"every {args.every} steps" if args.every else "at the end of each stage"
    print(f"probed run   : {timings['probed']:7.1f} s ({evaluations} evaluations, {every})")
    print(f"unprobed run : {timings['unprobed']:7.1f} s")
    print(f"wall-time ratio probed / unprobed: {timings['probed'] / timings['unprobed']:.3f}")
    print(f"share of the probed run spent probing: {share:.1%} (target < 15%)")
    print("probing time by phase: " + ", ".join(f"{k} {v:.1f} s" for k, v in overhead["phases"].items()))
    same = adapters["probed"] == adapters["unprobed"]
    print(f"identical final adapters (probing does not perturb training): {same}")
    if not same:
        raise SystemExit("MISMATCH")


if __name__ == "__main__":
    main()
