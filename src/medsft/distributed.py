"""Several training processes (data parallel): who this process is, and the few collective steps
medsft itself needs before and around the Trainer.

A process learns its place from the launcher's environment (`medsft train --nproc`, `torchrun`,
`accelerate launch` all set RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT). With one
process every function here is a no-op: single-process runs never touch torch.distributed.

What a run writes (run directory, caches, probes, report) is written by the main process only;
the others wait, then read it. `on_main` carries a user error raised on the main process to every
process, so that all of them stop with the same one line instead of waiting forever.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time

from medsft.errors import UserError


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    return rank() == 0


def active() -> bool:
    """More than one process trains this run."""
    return world_size() > 1


def init() -> None:
    """Join the process group (gloo on CPU, nccl on CUDA) before the run's first collective step.
    The Trainer (through accelerate) then finds it initialized and uses it."""
    if not active():
        return
    import torch
    import torch.distributed as dist

    if dist.is_initialized():
        return
    if torch.cuda.is_available():
        device = local_device()
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", device_id=device)
    else:
        dist.init_process_group("gloo")


def local_device():
    """This process's device: its GPU (LOCAL_RANK under a launcher), else the CPU."""
    import torch

    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def close(wait: bool = True) -> None:
    """Leave the process group (a process that exits still in it aborts), by default once every
    process is done; wait=False when leaving on an error, where another process may never arrive."""
    if active():
        import torch.distributed as dist

        if dist.is_initialized():
            if wait:
                dist.barrier()
            dist.destroy_process_group()


def leave(code: int) -> None:
    """End this process of a multi-process run now, output flushed, without the interpreter's teardown:
    Gloo's worker threads can still hold tensors then, and freeing them during finalization aborts the
    process (seen once in about twenty 2-process runs here: exit 134, "terminate called without an
    active exception", after a run that had finished and written everything)."""
    import logging

    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    logging.shutdown()
    os._exit(code)


def barrier() -> None:
    if active():
        import torch.distributed as dist

        dist.barrier()


def broadcast(value=None):
    """The main process's `value`, on every process (any picklable object)."""
    if not active():
        return value
    import torch.distributed as dist

    box = [value if is_main() else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def on_main(function, *args, **kwargs):
    """`function` run by the main process only; its result (or its UserError) on every process."""
    if not active():
        return function(*args, **kwargs)
    outcome = None
    if is_main():
        try:
            outcome = ("ok", function(*args, **kwargs))
        except UserError as error:
            broadcast(("error", str(error), error.exit_code))
            raise
    outcome = broadcast(outcome)
    if outcome[0] == "error":
        raise MainProcessError(outcome[1], outcome[2])
    return outcome[1]


class MainProcessError(UserError):
    """The main process's user error, raised again in another process (which says nothing: the main
    process has printed it)."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


def main_first(function, *args, **kwargs):
    """`function` run by the main process first (it fills the caches), then by the others (they read
    them). A UserError on the main process stops every process with the same message."""
    if not active():
        return function(*args, **kwargs)
    box = []
    on_main(lambda: box.append(function(*args, **kwargs)))  # only "done" (or the error) crosses processes
    return box[0] if is_main() else function(*args, **kwargs)


def quiet(log):
    """The console of the main process; the others print nothing (their lines would repeat it)."""
    return log if is_main() else (lambda *args, **kwargs: None)


# ---- the launcher: `medsft train --nproc N` ------------------------------------------------------

def free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def launch(nproc: int, argv: list[str], log=print) -> int:
    """Run `python -m medsft ARGV` as `nproc` processes of one job on this machine (rendezvous on
    127.0.0.1). The main process prints; the others' error output is shown only if they fail. If
    one process fails, the others are stopped. Returns the job's exit status."""
    port = free_port()
    threads = max(1, (os.cpu_count() or 1) // nproc)
    children, errors = [], []
    for index in range(nproc):
        env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": str(nproc),
               "RANK": str(index), "LOCAL_RANK": str(index), "LOCAL_WORLD_SIZE": str(nproc)}
        env.setdefault("OMP_NUM_THREADS", str(threads))  # the cores shared, not oversubscribed
        quiet_child = index > 0  # its output goes to a file, shown only if it fails (a pipe could fill)
        errors.append(tempfile.TemporaryFile() if quiet_child else None)
        children.append(subprocess.Popen([sys.executable, "-m", "medsft", *argv], env=env,
                                         stdout=subprocess.DEVNULL if quiet_child else None, stderr=errors[-1]))
    log(f"started {nproc} training processes (data parallel, rendezvous on 127.0.0.1:{port})")
    interrupted = False
    try:
        while any(child.poll() is None for child in children):
            if any(child.poll() not in (None, 0) for child in children):
                # The others stop on their own when the error is the main process's; a crash leaves
                # them waiting in a collective step, so they are stopped after a grace period.
                grace = time.time() + 5
                while time.time() < grace and any(child.poll() is None for child in children):
                    time.sleep(0.1)
                break
            time.sleep(0.2)
    except KeyboardInterrupt:
        interrupted = True
    for child in children:
        if child.poll() is None:
            child.terminate()
    for child in children:
        try:
            child.wait(timeout=30)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
    # The main process's status says what happened; another's only when the main one did not fail.
    codes = [children[0].returncode] + [c.returncode for c in children[1:] if c.returncode != -15]
    status = 130 if interrupted else next((code for code in codes if code != 0), 0)
    for index, (child, output) in enumerate(zip(children, errors)):
        if output is None:
            continue
        output.seek(0)
        text = output.read().decode(errors="replace").strip()
        output.close()
        # The main process has said what went wrong when it failed too; a lone failure elsewhere is shown.
        if child.returncode not in (0, -15) and text and children[0].returncode in (0, -15):
            log(f"process {index} failed:\n{text[-3000:]}")
    return status if status >= 0 else 128 - status
