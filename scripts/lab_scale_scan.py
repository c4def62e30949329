"""A trained lab run's LoRA adapter at several scales, scored with the lab's own scoring (its probes,
96 new tokens), as in docs/lab-results-default.md:

    python scripts/lab_scale_scan.py runs/lab/runs/medsft-default/seed-0 0.5,0.75 --base smollm2

(`medsft tune-scale RUN_DIR` does the same on the run's own, smaller probe sets, and saves its choice.)"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from peft import PeftModel
from peft.tuners.lora import LoraLayer
from transformers import AutoModelForCausalLM

from medsft.lab.real import BASES
from medsft.lab.runner import _score, trained_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("scales", help="comma-separated, e.g. 0.5,0.75,1")
    parser.add_argument("--base", default="smollm2", choices=sorted(BASES))
    args = parser.parse_args()
    lab_base, base_path, sets, tokenizer = trained_run(args.run_dir, args.base)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_path), args.run_dir / "adapter").eval()
    layers = [m for m in model.modules() if isinstance(m, LoraLayer)]
    for scale in (float(s) for s in args.scales.split(",")):
        for layer in layers:
            for adapter in layer.active_adapters:
                layer.set_scale(adapter, scale)
        r = _score(model, tokenizer, sets, lab_base.template)
        print(json.dumps({"scale": scale, "general_accuracy": round(r["general_accuracy"], 3),
                          "general_median_tokens": r["general_median_tokens"],
                          "domain_accuracy": round(r["domain_accuracy"], 3),
                          "paraphrase_accuracy": round(r["paraphrase_accuracy"], 3),
                          "transfer_accuracy": round(r["transfer_accuracy"], 3)}), flush=True)


if __name__ == "__main__":
    main()
