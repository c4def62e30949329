"""DeepSpeed ZeRO-2/3 and FSDP through `medsft train` on a GPU, against the plain run of the same recipe.

Each engine trains the same recipe (a 4-layer Llama with a tokenizer built here, the tests' sample
data, one 7:3 stage, probes on) as `torchrun --nproc_per_node N -m medsft train RECIPE --set train.X=...`.
Checked per engine: the run ends with its adapter (or model) and report; the engine was really on
(medsft refuses to train when the Trainer did not enable it); its train losses and final weights
against the plain run's. Tolerance: the LoRA base weights are bf16 on CUDA, so sums in another order
move the loss in its third or fourth digit: relative loss difference <= 2e-2 and weight difference
<= 5e-2 of the weights' largest magnitude. Exits 1 when a run fails or a check misses.

    python bench/gpu_engines.py [--nproc 1] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests")]


def setup(out: Path) -> Path:
    from sample_data import sample_texts, write_sample
    from medsft.lab.tiny import build_tiny_model

    model = out / "model"
    if not (model / "config.json").exists():
        build_tiny_model(model, sample_texts(), vocab_size=512, hidden_size=256, num_layers=4,
                         intermediate_size=512)
    files = write_sample(out / "data")
    tree = {
        "model": {"name_or_path": str(model), "template": "qwen"},
        "finetune": {"method": "lora", "lora": {"rank": 8, "alpha": 16, "dropout": 0.0}},
        "data": {"sources": [{"name": "medical", "path": str(files["medical"]), "role": "domain"},
                             {"name": "general", "path": str(files["general"]), "role": "general"}],
                 "val_fraction": 0.15},
        # One stage: DeepSpeed and FSDP wrap the model in place, so medsft runs them one stage per run.
        "stages": [{"name": "mixed", "epochs": 2, "weights": {"medical": 0.7, "general": 0.3}, "max_steps": 12}],
        "train": {"learning_rate": 2e-3, "batch_size": 4, "logging_steps": 1, "save_steps": 4, "seed": 11},
        "monitor": {"eval_every": 4, "max_general_probes": 4, "domain_probes": 2, "max_new_tokens": 8,
                    "batch_size": 4},
        "output_dir": str(out / "runs" / "plain"),
    }
    path = out / "recipe.yaml"
    path.write_text(yaml.safe_dump(tree), encoding="utf-8")
    return path


def run(recipe: Path, out: Path, name: str, nproc: int, sets: list[str]) -> tuple[int, float, str]:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "medsft", "train", str(recipe), f"--set=output_dir={out / 'runs' / name}", "--overwrite"]
    command += [f"--set={s}" for s in sets]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
           "MEDSFT_CACHE": str(out / "cache")}
    started = time.time()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    (out / f"{name}.log").write_text(done.stdout + done.stderr)
    return done.returncode, time.time() - started, (done.stdout + done.stderr)[-1500:]


def weights(run_dir: Path) -> dict:
    from safetensors.torch import load_file

    folder = run_dir / ("adapter" if (run_dir / "adapter").exists() else "model")
    found = {}
    for file in sorted(folder.glob("*.safetensors")):
        found.update(load_file(file))
    return found


def losses(run_dir: Path) -> list[float]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["train_loss"] for r in rows if r["event"] == "train"]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nproc", type=int, default=1)
    parser.add_argument("--out", default=os.environ.get("OUT", "/tmp/gpu-engines"))
    parser.add_argument("--engines", default="plain,zero2,zero3,fsdp-full,fsdp-grad-op")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    recipe = setup(out)
    engines = {"plain": [], "zero2": ["train.deepspeed=zero2"], "zero3": ["train.deepspeed=zero3"],
               "fsdp-full": ["train.fsdp=full_shard"], "fsdp-grad-op": ["train.fsdp=shard_grad_op"]}
    rows, failed = [], False
    for name in args.engines.split(","):
        code, seconds, tail = run(recipe, out, name, args.nproc, engines[name])
        run_dir = out / "runs" / name
        if code != 0 or not (run_dir / "report.html").exists():
            rows.append((name, f"FAILED (exit {code})", "", "", f"{seconds:.0f}"))
            print(f"--- {name} failed:\n{tail}")
            failed = True
            continue
        if name == "plain":
            reference_w, reference_l = weights(run_dir), losses(run_dir)
            rows.append((name, "ok", f"{reference_l[-1]:.4f}", "-", f"{seconds:.0f}"))
            continue
        w, l = weights(run_dir), losses(run_dir)
        scale = max(float(t.abs().max()) for t in reference_w.values())
        same_keys = w.keys() == reference_w.keys()
        dw = max(float((w[k].float() - reference_w[k].float()).abs().max()) for k in w) / scale if same_keys else float("inf")
        dl = max(abs(a - b) / abs(b) for a, b in zip(l, reference_l)) if len(l) == len(reference_l) else float("inf")
        good = same_keys and dw <= 5e-2 and dl <= 2e-2
        failed |= not good
        rows.append((name, "ok" if good else "MISMATCH", f"{l[-1]:.4f} (max rel. diff {dl:.1e})",
                     f"{dw:.1e}", f"{seconds:.0f}"))
    print(f"\n{args.nproc} process(es); LoRA r8 on a 4-layer Llama, bf16 base, 12 steps in one stage")
    print("| engine | result | last train loss (vs plain) | max weight diff / max weight | seconds |")
    print("|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
