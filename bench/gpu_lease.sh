#!/usr/bin/env bash
# The GPU checks of one short device lease (an H100/H200 with torch preinstalled), in order of value,
# each under its own time limit so that one slow step cannot take the others' time:
#   1. bench/gpu_checks.py: padding-free, the chunked loss, LoRA's fused forward and train.liger against
#      their references, fp32 and bf16 (about 30 s);
#   2. bench/lora_linear.py: one LoRA layer of each Qwen2-1.5B shape, PEFT's forward against medsft's
#      (about 60 s with compiling);
#   3. bench/mfu.py on the Qwen2-1.5B shape, `train.compile`, LoRA r8, bf16, 128 samples a step: the step as
#      the 2026-12-04 lease measured it (38.5-39.2% MFU: PEFT's forward, the frozen head recomputed in backward,
#      the hidden states asked for with output_hidden_states) against today's, alternated twice (the first
#      compiled path of a process has read slow before). `bash bench/gpu_lease.sh each` instead times each of
#      the three changes alone against today's step; `bash bench/gpu_lease.sh profile` profiles today's step
#      (GPU time by kernel kind) beside cuBLAS's ceiling on the model's products, for what to cut next;
#      `bash bench/gpu_lease.sh liger` times train.liger against the same step without it, layers not compiled.
# The device has no internet: transformers, peft and accelerate come as wheels in .devwheels (ignored by
# git; carry it), made here with
#   .venv/bin/pip download --no-deps --only-binary=:all: -d .devwheels transformers==5.24.0 peft==0.21.2 accelerate==1.16.0 \
#       liger-kernel==0.8.5
# and installed over the device's own packages into /tmp/site (transformers 5.24, not the 5.25 of .venv here: 5.24 is
# the release that runs with the device image's huggingface_hub).
#
#   run(command="bash bench/gpu_lease.sh", carry=[".devwheels"], timeout_s=590)
# A dry run of the same steps on a CPU, small: SHAPE=qwen2-small SAMPLES=4 STEPS=1 ROWS=512 bash bench/gpu_lease.sh
set -u
exec > >(tee -a "${OUT:-/tmp}/lease.log") 2>&1  # the whole log comes back in $OUT; the reply keeps its tail
if [ -d .devwheels ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .devwheels/*.whl
    export PYTHONPATH=/tmp/site:src
else
    export PYTHONPATH=src
fi
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader || true
python3 -c "import torch, transformers, peft; print('torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__)"
status=0
shape=${SHAPE:-qwen2-1.5b} samples=${SAMPLES:-128} steps=${STEPS:-5} rows=${ROWS:-32768}
now=padding-free:$samples:compile-layers+compile-loss
profile=()
if [ "${1:-}" = each ]; then
    paths="$now+peft-add,$now,$now+recompute-head,$now+hidden-states"
elif [ "${1:-}" = liger ]; then
    eager=padding-free:$samples:compile-loss
    paths="$eager,$eager+liger,$eager,$eager+liger"
elif [ "${1:-}" = profile ]; then
    paths="$now"
    profile=(--profile --gemm "$rows")
else
    timeout 60 python3 bench/gpu_checks.py $([ -z "${SHAPE:-}" ] || echo --cpu) || status=1
    timeout 90 python3 bench/lora_linear.py --rows "$rows" || status=1
    paths="$now+peft-add+recompute-head+hidden-states,$now,$now+peft-add+recompute-head+hidden-states,$now"
fi
timeout 420 python3 bench/mfu.py --shape "$shape" --steps "$steps" --paths "$paths" "${profile[@]}" || status=1
exit $status
