#!/bin/bash
# The learner's MFU sweep on a GPU machine that has torch and transformers but not this project's
# other needs (pydantic, hjson, deepspeed) and no network, e.g. a lent H100:
#
#   here:  bash bench/learner_gpu.sh fetch      # wheels for Python 3.12 + a copy of deepspeed into .whl/
#   there: bash bench/learner_gpu.sh run        # the sweep below; or: run "SPEC" "SPEC" ... (bench learner flags)
#
# .whl/ is git-ignored: carry it to the GPU machine with the checkout.
set -u
cd "$(dirname "$0")/.."
# Ragged responses (256..1024 tokens after 256 prompt tokens) so padding exists to remove; bf16.
# Packing off vs on at the same memory (--max-tokens = micro-batch x longest sequence, 16 x 1280),
# then Liger's fused kernels (needs liger-kernel on the GPU machine: `fetch` adds its wheel).
# The `on` rows fail with a one-line error where liger-kernel is missing; `auto` would skip it.
# Packed rows use sdpa with transformers' block-diagonal mask unless --attn says otherwise
# (flex_attention skips the masked-out blocks; flash_attention_2 needs the flash-attn package).
RAGGED="--response-len 1024 --min-response-len 256 --dtype bfloat16"
SWEEP=(
  "--shape qwen2.5-0.5b --micro-batch 16"
  "--shape qwen2.5-0.5b --micro-batch 32"
  "--shape qwen2.5-0.5b --micro-batch 16 --compile"
  "--shape qwen2.5-0.5b --micro-batch 32 --compile"
  "--shape qwen2.5-0.5b --micro-batch 32 --compile --logits-chunk 8192"
  "--shape qwen2.5-0.5b --micro-batch 16 $RAGGED --fused-kernels off"
  "--shape qwen2.5-0.5b --micro-batch 16 $RAGGED --fused-kernels off --packing --max-tokens 20480"
  "--shape qwen2.5-0.5b --micro-batch 16 $RAGGED --fused-kernels on"
  "--shape qwen2.5-0.5b --micro-batch 16 $RAGGED --fused-kernels on --packing --max-tokens 20480"
  "--shape qwen2.5-0.5b --micro-batch 16 $RAGGED --fused-kernels off --packing --max-tokens 20480 --attn flex_attention"
  "--shape qwen2.5-1.5b --micro-batch 8 $RAGGED --gradient-checkpointing --fused-kernels off"
  "--shape qwen2.5-1.5b --micro-batch 8 $RAGGED --gradient-checkpointing --fused-kernels off --packing --max-tokens 10240"
  "--shape qwen2.5-1.5b --micro-batch 8 $RAGGED --gradient-checkpointing --fused-kernels on"
  "--shape qwen2.5-1.5b --micro-batch 8 $RAGGED --gradient-checkpointing --fused-kernels on --packing --max-tokens 10240"
)
case "${1:-}" in
fetch)
  mkdir -p .whl
  .venv/bin/python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
    "pydantic==$(.venv/bin/python -c 'import pydantic; print(pydantic.VERSION)')" \
    "pydantic_core==$(.venv/bin/python -c 'import pydantic_core; print(pydantic_core.__version__)')" \
    annotated_types typing_inspection typing_extensions hjson liger_kernel || exit 1
  # deepspeed is pure Python at import time (its ops build on first use): its source tree travels as is
  rm -rf .whl/ds && mkdir -p .whl/ds && cp -r "$(.venv/bin/python -c 'import deepspeed, os; print(os.path.dirname(deepspeed.__file__))')" .whl/ds/
  find .whl/ds -name __pycache__ -prune -exec rm -rf {} + ; du -sh .whl ;;
run)
  shift
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD/.whl/ds:$PWD PYTHONUNBUFFERED=1
  nvidia-smi --query-gpu=name,memory.total --format=csv
  specs=("$@")
  [ ${#specs[@]} -eq 0 ] && specs=("${SWEEP[@]}")
  for spec in "${specs[@]}"; do
    echo "=== rlvr bench learner $spec"
    # shellcheck disable=SC2086
    timeout 300 python3 -m rlvr.cli bench learner $spec 2>&1 | grep -v "Loading weights\|Writing model" | tail -13
  done ;;
*) sed -n 2,8p "$0"; exit 2 ;;
esac
