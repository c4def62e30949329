"""medsft against its peers on the same model, records, batch and steps.

Runs `medsft train` (padded, padding-free, padding-free with the chunked loss), TRL's SFTTrainer
(assistant-only loss; padded and padding-free) and LLaMA-Factory (padded and neat_packing) where it
installs, each on the workload's Qwen2-shaped model with LoRA r8/alpha 16/dropout 0 on all linear
layers, batch 8, no accumulation, fp32, AdamW at a constant 2e-4, the same optimizer steps, and
the records in the order medsft trains on them. Prints real and supervised tokens/s, the first and
final step's loss, and ratios against medsft padded measured in the same run. LLaMA-Factory's
neat_packing packs the same records into fewer, larger batches: it is compared by tokens (the same
records, whatever the step count), not by steps.

Timing: from the wall time logged at step 1 to the one logged at the last step (each framework's
on_log, as medsft stamps metrics.jsonl), so model loading, tokenization and the first step's
one-off costs are left out; tokens are those of steps 2..N.

Peers install into their own venvs under ~/.cache/medsft/bench-peers (never medsft's), on first
use or with --setup (which also retries one that failed, then exits): torch first, then the peer,
with torch held at that version. TRL gets torch 2.13.0 (the CPU wheel this machine has);
LLaMA-Factory 0.9.5 imports torchaudio at start and PyPI has torchaudio only up to 2.11, so its venv
gets torch, torchaudio and torchvision 2.11 / 2.11 / 0.26 from PyPI (CUDA builds, about 5 GB, which
run on CPU).

Correctness (exit 1 when it fails): every run's batches hold medsft's samples, counted the same
way (bench/peers/batches.py: real tokens, supervised tokens, and for the peers a digest of each
batch's ids and labels; for packed LLaMA-Factory runs, the digests of all samples trained, as a
multiset, against those of medsft's steps); and each run's first-step loss is within
LOSS_TOLERANCE of medsft padded's (packed runs: their first batch holds other samples, so not
compared).

    .venv/bin/python bench/peers.py [--steps 40] [--repeats 1] [--only trl] [--setup] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE / "peers"))
import workload  # noqa: E402
from batches import describe  # noqa: E402

# Step 1 runs before any update, on the same random-init weights (LoRA B is 0, so the adapter adds
# nothing) and the same supervised tokens, so every run's first loss is the same number up to the
# order of fp32 sums in different kernels (padded or packed attention, full, fused or chunked
# logits): within 2e-6 of each other in the smoke runs. 1e-4 leaves that 50 times over and still
# fails a run whose loss path differs (another precision, normalization or mask). It cannot tell
# batches apart (a random-init model gives every batch about ln(49152) = 10.84); the digests do.
LOSS_TOLERANCE = 1e-4
PEER_CACHE = Path.home() / ".cache" / "medsft" / "bench-peers"
TORCH = "torch==2.13.0"  # installed first: a bare torch requirement would pull the CUDA build (gigabytes)


@dataclass(frozen=True)
class Variant:
    name: str
    framework: str  # medsft, trl or llamafactory
    padding_free: bool = False  # medsft and TRL: one unpadded row per batch; LLaMA-Factory: neat_packing
    loss_chunk_tokens: int = 0  # medsft only


VARIANTS = [
    Variant("medsft padded", "medsft"),
    Variant("medsft padding-free", "medsft", padding_free=True),
    Variant("medsft padding-free, chunked loss", "medsft", padding_free=True, loss_chunk_tokens=1024),
    Variant("TRL padded", "trl"),
    Variant("TRL padding-free", "trl", padding_free=True),
    Variant("LLaMA-Factory padded", "llamafactory"),
    Variant("LLaMA-Factory neat_packing", "llamafactory", padding_free=True),
]
BASELINE = "medsft padded"
MEDSFT_PADDING_FREE = "medsft padding-free"


@dataclass(frozen=True)
class PeerEnv:
    installs: list  # (pip install arguments, Python that must then run), in order; torch held at `torch`
    runner: str | None  # the script under bench/peers/ that trains with it
    torch: tuple = (TORCH,)  # installed first and held


PEERS = {
    "trl": PeerEnv([(["trl==1.16.*", "transformers==5.24.*", "peft==0.21.*", "datasets"],
                     "import trl, peft, datasets")], "trl_sft.py"),
    # LLaMA-Factory 0.9.5 imports torchaudio at start (data/mm_plugin.py): PyPI has none for torch 2.13,
    # so its venv holds the 2.11 trio (CUDA builds from PyPI; they run on CPU), checked before the
    # gigabyte of LLaMA-Factory's own requirements.
    "llamafactory": PeerEnv([(["llamafactory==0.9.5"], "from llamafactory.train.tuner import run_exp")],
                            "llamafactory_sft.py",
                            torch=("torch==2.11.0", "torchaudio==2.11.0", "torchvision==0.26.0")),
}


# ---- peer environments ----

def peer_python(name: str, setup: bool) -> tuple[Path | None, str]:
    """The peer venv's python, built on first use (or again with `setup`); (None, why) when it cannot be."""
    folder = PEER_CACHE / name
    python, failed = folder / "bin" / "python", folder / "FAILED"
    if (folder / "READY").is_file() and not setup:
        return python, ""
    if failed.is_file() and not setup:
        return None, failed.read_text(encoding="utf-8")
    print(f"setting up {name} in {folder} (log: {folder / 'setup.log'})", flush=True)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    why = build_venv(folder, PEERS[name])
    if why:  # keep the log and the reason, not the gigabyte of a venv that cannot run
        for item in folder.iterdir():
            if item.name != "setup.log":
                shutil.rmtree(item) if item.is_dir() else item.unlink()
    (folder / ("FAILED" if why else "READY")).write_text(why, encoding="utf-8")
    return (None, why) if why else (python, "")


def build_venv(folder: Path, env: PeerEnv) -> str:
    """'' when the venv installed and passes its checks, else a line that says why not."""
    python = str(folder / "bin" / "python")
    constraints = folder / "constraints.txt"
    constraints.write_text("\n".join(env.torch) + "\n", encoding="utf-8")
    steps = [[sys.executable, "-m", "venv", str(folder)], [python, "-m", "pip", "install", *env.torch],
             [python, "-c", "import " + ", ".join(t.split("==")[0] for t in env.torch)]]
    for names, check_code in env.installs:
        steps += [[python, "-m", "pip", "install", "-c", str(constraints), *names], [python, "-c", check_code]]
    log = folder / "setup.log"
    with open(log, "w", encoding="utf-8") as out:
        for command in steps:
            out.write("$ " + " ".join(command) + "\n")
            out.flush()
            if subprocess.run(command, stdout=out, stderr=subprocess.STDOUT).returncode != 0:
                shown = " ".join(["python", *command[1:]] if command[0] == python else command)
                return f"`{shown}` failed: {last_error(log)}{installed(log)}"
    return ""


def last_error(log: Path) -> str:
    lines = [line.strip() for line in log.read_text(encoding="utf-8").splitlines() if line.strip()]
    lines = [line for line in lines if not line.startswith("WARNING: Location")]  # pip's noise about local indexes
    errors = [line for line in lines if line.startswith(("ERROR", "OSError", "ImportError", "RuntimeError"))]
    return " / ".join((errors or lines)[-2:])


def installed(log: Path) -> str:
    """What pip installed last before the failure (the versions it chose say much of why)."""
    done = [line for line in log.read_text(encoding="utf-8").splitlines() if line.startswith("Successfully installed")]
    return f" (after {done[-1].lower()})" if done else ""


# ---- the shared inputs ----

@dataclass
class Workload:
    model: Path
    records: Path
    ordered: Path  # the records the steps use, in medsft's order, as {messages: [...]} for the peers
    expected: list  # describe() of each step's batch, from medsft's encoded rows
    sample_digests: list  # describe() digest of each sample of those steps, in order


def prepare_workload(work: Path, steps: int, batch: int) -> Workload:
    model = workload.build_model(work / "qwen2-small")
    records = workload.write_records(work / "records.jsonl")
    rows = workload.encoded_rows(model, records)
    if steps * batch > len(rows):
        raise SystemExit(f"--steps {steps} x batch {batch} needs more than the {len(rows)} records")
    lines = records.read_text(encoding="utf-8").splitlines()
    ordered = work / f"ordered-{steps}x{batch}.jsonl"
    with open(ordered, "w", encoding="utf-8") as out:
        for row in rows[: steps * batch]:
            out.write(json.dumps({"messages": messages(json.loads(lines[row["record_index"]]))}) + "\n")
    expected = [describe([(r["input_ids"], r["labels"]) for r in rows[k * batch:(k + 1) * batch]])
                for k in range(steps)]
    samples = [describe([(r["input_ids"], r["labels"])])["digest"] for r in rows[: steps * batch]]
    return Workload(model, records, ordered, expected, samples)


def messages(record: dict) -> list[dict]:
    roles = {"human": "user", "gpt": "assistant", "system": "system"}
    return [{"role": roles[turn["from"]], "content": turn["value"]} for turn in record["conversations"]]


# ---- one run of each framework ----

def run_medsft(variant: Variant, load: Workload, steps: int, batch: int, folder: Path) -> dict:
    """`medsft train` on a recipe of the benchmark's settings; steps and counts from metrics.jsonl."""
    run_dir = folder / "run"
    recipe = {
        "model": {"name_or_path": str(load.model), "template": "chatml", "dtype": "float32"},
        "finetune": {"method": "lora", "lora": {"rank": 8, "alpha": 16, "dropout": 0.0,
                                                "target_modules": "all-linear"}},
        "data": {"sources": [{"name": "chat", "path": str(load.records)}], "max_length": 1024,
                 "val_fraction": 0.0},  # as workload.encoded_rows, so the order is the same
        "stages": [{"name": "sft", "max_steps": steps}],
        "train": {"learning_rate": 2e-4, "batch_size": batch, "grad_accum": 1, "scheduler": "constant",
                  "warmup_ratio": 0.0, "logging_steps": 1, "padding_free": variant.padding_free,
                  "loss_chunk_tokens": variant.loss_chunk_tokens},
        "monitor": {"probes": False, "kl_to_base": False, "select": {"enabled": False}},
        "output_dir": str(run_dir),
    }
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False), encoding="utf-8")
    medsft = Path(sys.executable).parent / "medsft"
    run_logged([str(medsft), "train", str(path), "--overwrite"], folder / "train.log")
    events = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    train = [e for e in events if e["event"] == "train"]
    result = {"steps": [{"step": e["step"], "time": e["time"], "loss": e["train_loss"]} for e in train],
              "batches": [], "versions": {"medsft": medsft_version()}}
    real = supervised = 0
    for event in train:  # the Trainer's count of non-padding tokens and medsft's of supervised ones, cumulative
        result["batches"].append({"real_tokens": event["num_input_tokens_seen"] - real,
                                  "supervised_tokens": event["supervised_tokens_seen"] - supervised})
        real, supervised = event["num_input_tokens_seen"], event["supervised_tokens_seen"]
    return result


def medsft_version() -> str:
    from importlib.metadata import version

    return version("medsft")


def run_peer(variant: Variant, load: Workload, steps: int, batch: int, folder: Path, python: Path) -> dict:
    out = folder / "result.json"
    command = [str(python), str(HERE / "peers" / PEERS[variant.framework].runner), "--model", str(load.model),
               "--data", str(load.ordered), "--steps", str(steps), "--batch", str(batch), "--out", str(out)]
    run_logged(command + (["--padding-free"] if variant.padding_free else []), folder / "train.log")
    return json.loads(out.read_text(encoding="utf-8"))


def run_logged(command: list[str], log: Path) -> None:
    with open(log, "w", encoding="utf-8") as out:
        done = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        tail = log.read_text(encoding="utf-8").strip().splitlines()[-3:]
        raise RunFailed(f"exit {done.returncode} ({log}): " + " / ".join(line.strip() for line in tail))


class RunFailed(Exception):
    pass


# ---- measuring and checking ----

def measure(result: dict, expected: list) -> dict:
    """Tokens/s over steps 2..N (between the times logged at step 1 and step N) and the losses.
    A packed run's steps hold other batches than medsft's: their own counts are timed (checked in total)."""
    steps = result["steps"]
    seconds = steps[-1]["time"] - steps[0]["time"]
    timed = (result["batches"] if result.get("packed") else expected)[1:len(steps)]
    real = sum(b["real_tokens"] for b in timed)
    supervised = sum(b["supervised_tokens"] for b in timed)
    return {"real_tokens_per_s": real / seconds, "supervised_tokens_per_s": supervised / seconds,
            "timed_steps": len(steps) - 1, "seconds": seconds,
            "first_loss": steps[0]["loss"], "final_loss": steps[-1]["loss"]}


def check(name: str, result: dict, expected: list, steps: int, baseline_loss: float | None,
          sample_digests: list | None = None) -> list[str]:
    """What disagrees with medsft padded's samples and first loss; [] when nothing does."""
    if result.get("packed"):
        return check_packed(name, result, expected, sample_digests or [])
    problems = []
    if [s["step"] for s in result["steps"]] != list(range(1, steps + 1)):
        problems.append(f"{name}: logged steps {[s['step'] for s in result['steps']]}, not 1..{steps}")
    keys = ("real_tokens", "supervised_tokens", "digest")
    for number, (got, want) in enumerate(zip(result["batches"], expected), start=1):
        differing = [k for k in keys if k in got and got[k] != want[k]]
        if differing:
            problems.append(f"{name}: step {number}: " + ", ".join(f"{k} {got[k]} (medsft's samples: {want[k]})"
                                                                     for k in differing))
            break
    if len(result["batches"]) < steps:
        problems.append(f"{name}: {len(result['batches'])} batches seen, {steps} steps asked")
    first = result["steps"][0]["loss"] if result["steps"] else None
    if baseline_loss is not None and first is not None and abs(first - baseline_loss) > LOSS_TOLERANCE:
        problems.append(f"{name}: first-step loss {first:.6f} vs medsft padded {baseline_loss:.6f} "
                        f"(tolerance {LOSS_TOLERANCE})")
    return problems


def check_packed(name: str, result: dict, expected: list, sample_digests: list) -> list[str]:
    """A packed run trains medsft's samples, each once, in other batches: the multiset of sample
    digests and the token totals must be medsft's."""
    problems = []
    if [s["step"] for s in result["steps"]] != list(range(1, len(result["batches"]) + 1)):
        problems.append(f"{name}: logged steps {[s['step'] for s in result['steps']]}, "
                        f"not 1..{len(result['batches'])} (one per packed batch)")
    trained = sorted(d for b in result["batches"] for d in b["sample_digests"])
    if trained != sorted(sample_digests):
        missing = len(set(sample_digests) - set(trained))
        problems.append(f"{name}: the packed batches hold {len(trained)} samples, medsft's steps "
                        f"{len(sample_digests)} ({missing} of medsft's not among them, or different tokens)")
    for key in ("real_tokens", "supervised_tokens"):
        got, want = sum(b[key] for b in result["batches"]), sum(b[key] for b in expected)
        if got != want:
            problems.append(f"{name}: {key} {got} in all packed batches, medsft's steps {want}")
    return problems


# ---- the table ----

def table(rows: list[dict]) -> str:
    base = next((r for r in rows if r["run"] == BASELINE and "real_tokens_per_s" in r), None)
    lines = ["| run | real tokens/s | supervised tokens/s | first-step loss | final loss "
             "| real tokens/s vs medsft padded |", "|---|---:|---:|---:|---:|---:|"]
    for row in rows:
        if "real_tokens_per_s" not in row:  # the reason is printed under the table
            lines.append(f"| {row['run']} | {row['status'].split(':')[0]} | | | | |")
            continue
        ratio = f"x{row['real_tokens_per_s'] / base['real_tokens_per_s']:.2f}" if base else "-"
        lines.append(f"| {row['run']} | {row['real_tokens_per_s']:,.0f} | {row['supervised_tokens_per_s']:,.0f} | "
                     f"{row['first_loss']:.4f} | {row['final_loss']:.4f} | {ratio} |")
    return "\n".join(lines)


def against_peers(rows: list[dict]) -> str:
    """medsft padding-free's real tokens/s as a multiple of each peer's."""
    ours = next((r for r in rows if r["run"] == MEDSFT_PADDING_FREE and "real_tokens_per_s" in r), None)
    peers = [r for r in rows if not r["run"].startswith("medsft") and "real_tokens_per_s" in r]
    if ours is None or not peers:
        return ""
    lines = ["| medsft padding-free vs | real tokens/s ratio | supervised tokens/s ratio |", "|---|---:|---:|"]
    for peer in peers:
        lines.append(f"| {peer['run']} | x{ours['real_tokens_per_s'] / peer['real_tokens_per_s']:.2f} | "
                     f"x{ours['supervised_tokens_per_s'] / peer['supervised_tokens_per_s']:.2f} |")
    return "\n".join(lines)


# ---- the whole benchmark ----

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=40, help="optimizer steps per run (at least 2)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=1, help="runs of each variant; the median is reported")
    parser.add_argument("--only", default="", help="comma-separated frameworks: medsft,trl,llamafactory")
    parser.add_argument("--setup", action="store_true", help="(re)build the peer venvs, also those that failed, "
                        "and exit")
    parser.add_argument("--work", type=Path, default=Path("/tmp/benchwork"), help="model and records")
    parser.add_argument("--out", type=Path, default=Path("/tmp/benchwork/peers"), help="runs, peers.md, peers.json")
    args = parser.parse_args()
    if args.steps < 2:
        raise SystemExit("--steps: at least 2 (step 1 is not timed)")
    variants = chosen(args.only)
    pythons = {name: peer_python(name, args.setup) for name in PEERS if name in {v.framework for v in variants}}
    if args.setup:
        for name, (python, why) in pythons.items():
            print(f"{name}: {python or 'not installable here: ' + why}")
        return
    load = prepare_workload(args.work, args.steps, args.batch)
    rows, problems = run_all(variants, load, pythons, args)
    report(rows, problems, load, args)
    if problems:
        raise SystemExit(1)


def chosen(only: str) -> list[Variant]:
    """The variants of the frameworks named (all by default), and always medsft padded (the baseline)
    and medsft padding-free (what each peer is set against)."""
    if not only:
        return VARIANTS
    names = set(only.split(","))
    return [v for v in VARIANTS if v.framework in names or v.name in (BASELINE, MEDSFT_PADDING_FREE)]


def run_all(variants: list[Variant], load: Workload, pythons: dict, args) -> tuple[list[dict], list[str]]:
    """Every variant `repeats` times (interleaved, so that a slow spell of the machine hits all alike)."""
    results: dict[str, list] = {v.name: [] for v in variants}
    failures = {v.name: skip_reason(v, pythons) for v in variants if skip_reason(v, pythons)}
    for repeat in range(args.repeats):
        for variant in [v for v in variants if v.name not in failures]:
            folder = args.out / "runs" / variant.name.replace(" ", "-").replace(",", "") / str(repeat)
            folder.mkdir(parents=True, exist_ok=True)
            print(f"[{repeat + 1}/{args.repeats}] {variant.name} ...", flush=True)
            try:
                results[variant.name].append(run_once(variant, load, pythons, args, folder))
            except RunFailed as error:
                failures[variant.name] = f"failed: {error}"
    return summarize(variants, results, failures, load, args.steps)


def skip_reason(variant: Variant, pythons: dict) -> str:
    """Why a peer cannot run here; '' when it can."""
    if variant.framework == "medsft":
        return ""
    python, why = pythons[variant.framework]
    if python is None:
        return f"not installable here: {why}"
    if PEERS[variant.framework].runner is None:
        return "installed, but bench/peers/ has no runner for it yet"
    return ""


def run_once(variant: Variant, load: Workload, pythons: dict, args, folder: Path) -> dict:
    if variant.framework == "medsft":
        result = run_medsft(variant, load, args.steps, args.batch, folder)
    else:
        result = run_peer(variant, load, args.steps, args.batch, folder, pythons[variant.framework][0])
    if len(result["steps"]) < 2:  # nothing to time
        raise RunFailed(f"{len(result['steps'])} steps logged ({folder / 'train.log'})")
    return result


def summarize(variants, results, failures, load: Workload, steps: int) -> tuple[list[dict], list[str]]:
    rows, problems = [], []
    baseline = results.get(BASELINE) or []
    baseline_loss = baseline[0]["steps"][0]["loss"] if baseline and baseline[0]["steps"] else None
    for variant in variants:
        if variant.name in failures:
            rows.append({"run": variant.name, "status": failures[variant.name]})
            if failures[variant.name].startswith("failed"):
                problems.append(f"{variant.name}: {failures[variant.name]}")
            continue
        runs = results[variant.name]
        for result in runs:
            problems += check(variant.name, result, load.expected, steps, baseline_loss, load.sample_digests)
        measured = [measure(r, load.expected) for r in runs]
        row = {"run": variant.name, "versions": runs[0].get("versions", {}), "repeats": len(runs),
               "packed": bool(runs[0].get("packed"))}
        for key in measured[0]:
            row[key] = statistics.median(m[key] for m in measured)
        rows.append(row)
    return rows, problems


def report(rows: list[dict], problems: list[str], load: Workload, args) -> None:
    text = [f"model: {load.model} (Qwen2 hidden 256, 4 layers, vocab 49,152), records {load.records}; "
            f"{args.steps} steps x batch {args.batch}, LoRA r8/16 all-linear, fp32, AdamW 2e-4 constant; "
            f"median of {args.repeats}; tokens/s over steps 2..{args.steps} (step-1 to step-N log times)", "",
            table(rows), "", against_peers(rows), ""]
    text += [f"- {row['run']}: " + ", ".join(f"{k} {v}" for k, v in row["versions"].items())
             for row in rows if row.get("versions")]
    text += [f"- {row['run']}: {row['status']}" for row in rows if "status" in row]
    text += [f"- {row['run']}: packed into {row['timed_steps'] + 1:g} steps of up to {args.batch} rows of 1,024 "
             f"tokens (the same {args.steps * args.batch} records as the other runs' {args.steps} steps; compared "
             "by tokens/s, its first-step loss is another batch's)" for row in rows if row.get("packed")]
    text += ["", f"check (same samples per step; first-step loss within {LOSS_TOLERANCE} of medsft padded): "
             + ("passed" if not problems else "FAILED")] + [f"- {p}" for p in problems]
    output = "\n".join(text)
    print(output)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "peers.md").write_text(output + "\n", encoding="utf-8")
    (args.out / "peers.json").write_text(json.dumps({"settings": vars(args) | {"work": str(args.work),
                                                                                "out": str(args.out)},
                                                     "rows": rows, "problems": problems}, indent=1, default=str),
                                         encoding="utf-8")


if __name__ == "__main__":
    main()
