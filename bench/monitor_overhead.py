"""Monitoring overhead: the wall-time share of a run spent probing, against the same run unprobed.

Runs the lab's 7:3 LoRA recipe on the lab's base model twice, with the monitor's defaults
(built-in general probes, 32 domain probes, KL to base) probing every `--every` steps, and with
probes off. Prints the probing share measured inside the run, the wall-time ratio of the two
runs, and checks that probing did not change training (identical final adapters).

    .venv/bin/python bench/monitor_overhead.py [--every 50] [--cache-dir DIR]
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
from medsft.train.run import train


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--every", type=int, default=50)
    parser.add_argument("--cache-dir", default=None)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="medsft-overhead-"))
    world = build_world(0, "en")
    base = build_base(world, BaseConfig(), Path(args.cache_dir) if args.cache_dir else None)
    context = LabContext(base, world.write(work / "world"), work)

    timings, adapters = {}, {}
    for name, monitor in [("probed", {"eval_every": args.every}), ("unprobed", {"probes": False})]:
        tree = VARIANTS["mix-7-3"](context, name, 0)
        tree["monitor"] = {**monitor, "select": {"enabled": False}}
        started = time.perf_counter()
        result = train(parse_recipe(tree, name), log=lambda *_: None)
        timings[name] = time.perf_counter() - started
        adapters[name] = (result.run_dir / "adapter" / "adapter_model.safetensors").read_bytes()
        if name == "probed":
            overhead = json.loads((result.run_dir / "monitor" / "overhead.json").read_text())
            evaluations = sum(1 for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()
                              if '"event": "eval"' in line)
    share = overhead["monitor_seconds"] / overhead["run_seconds"]
    print(f"probed run   : {timings['probed']:7.1f} s ({evaluations} evaluations, every {args.every} steps)")
    print(f"unprobed run : {timings['unprobed']:7.1f} s")
    print(f"wall-time ratio probed / unprobed: {timings['probed'] / timings['unprobed']:.3f}")
    print(f"share of the probed run spent probing: {share:.1%} (target < 15%)")
    same = adapters["probed"] == adapters["unprobed"]
    print(f"identical final adapters (probing does not perturb training): {same}")
    if not same:
        raise SystemExit("MISMATCH")


if __name__ == "__main__":
    main()
