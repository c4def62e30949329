"""What every peer runner shares (imported inside the peer's own venv, which has transformers):
the command line peers.py calls it with, and the step log it writes."""

from __future__ import annotations

import argparse
import time

from transformers import TrainerCallback


def command_line() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True, help="jsonl of {messages: [...]}, in training order")
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--batch", type=int, required=True)
    parser.add_argument("--padding-free", action="store_true")
    parser.add_argument("--out", required=True)
    return parser.parse_args()


class StepLog(TrainerCallback):
    """Loss and wall time at each logged step, the way medsft's metrics.jsonl stamps them (on_log)."""

    def __init__(self):
        self.steps = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.steps.append({"step": state.global_step, "time": time.time(), "loss": float(logs["loss"])})
