#!/usr/bin/env bash
# The GPU checks of one short device lease (an H100/H200 with torch preinstalled), in order of value,
# each under its own time limit so that one slow step cannot take the others' time:
#   1. bench/gpu_checks.py: padding-free, the chunked loss and LoRA's fused forward against their
#      references, fp32 and bf16 (about 30 s);
#   2. bench/lora_linear.py: one LoRA layer of each Qwen2-1.5B shape, PEFT's forward against medsft's
#      (about 60 s with compiling);
#   3. bench/mfu.py on the Qwen2-1.5B shape: `train.compile` with PEFT's forward (`peft-add`) and with
#      medsft's, twice each, alternated (the first compiled path of a process has read slow before).
# The device has no internet: transformers, peft and accelerate come as wheels in .devwheels (ignored by
# git; carry it), made here with
#   .venv/bin/pip download --no-deps --only-binary=:all: -d .devwheels transformers==5.24.0 peft==0.21.2 accelerate==1.16.0
# and installed over the device's own packages into /tmp/site (transformers 5.24, not the 5.25 of .venv here: 5.24 is
# the release that runs with the device image's huggingface_hub).
#
#   run(command="bash bench/gpu_lease.sh", carry=[".devwheels"], timeout_s=590)
set -u
exec > >(tee -a "${OUT:-/tmp}/lease.log") 2>&1  # the whole log comes back in $OUT; the reply keeps its tail
if [ -d .devwheels ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .devwheels/*.whl
    export PYTHONPATH=/tmp/site:src
else
    export PYTHONPATH=src
fi
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
python3 -c "import torch, transformers, peft; print('torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__)"
status=0
timeout 90 python3 bench/gpu_checks.py || status=1
timeout 120 python3 bench/lora_linear.py --rows 32768 || status=1
paths=padding-free:128:compile-layers+compile-loss+peft-add,padding-free:128:compile-layers+compile-loss
timeout 330 python3 bench/mfu.py --shape qwen2-1.5b --steps 5 --paths "$paths,$paths" || status=1
exit $status
