#!/bin/bash
# Every GPU benchmark in one session, most important first, each part time-boxed so that one
# slow compile cannot cost the rest (all within TOTAL_S, 480 s by default):
#
#   bash benchmarks/gpu.sh [OUT_DIR]     # the tables; each part's full output in OUT_DIR/*.txt
#   PARTS_S=60 bash benchmarks/gpu.sh    # a shorter limit per part (default 150 s)
#   TOTAL_S=300 SKIP="info smoke" bash benchmarks/gpu.sh   # all parts within 300 s, two skipped
#   MODEL=tiny-latent bash benchmarks/gpu.sh  # a rehearsal of every part on tiny models (any CPU)
#
# Timed, one after the other: the device and the stack's versions; 20 small compiles with and
# without host_memory.keep_freed_memory(); a tiny step (does the stack
# work at all); the step table of the paper config with SD-2.1-base shapes in bfloat16 (4 views;
# its peak memory in use); its breakdown; JAX vs PyTorch (eager, diffusers' torch UNet and VAE)
# on that step, both on this GPU; the pixel and toy configs' steps; `run.py --quick`.
# Beside them, from the start, a process that only compiles: XLA's memory plan of that step per
# number of views (1 to 8) and the most views within a 16 GiB Colab T4, also with
# remat_chunks 16. It compiles without autotuning (so that it runs no kernels beside the timed
# parts; the plan may differ from an autotuned one by the convolutions' workspaces).
# JAX and PyTorch share the GPU, so JAX allocates on demand (XLA_PYTHON_CLIENT_PREALLOCATE=false);
# compiled programs go to a persistent cache that the timed parts share.
set -u
cd "$(dirname "$0")/.."
out=${1:-gpu_benchmarks}
limit=${PARTS_S:-150}
total=${TOTAL_S:-480}
skip=" ${SKIP:-} "
mkdir -p "$out"
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-/tmp/dreamfusion_jax_cache}
py=${PYTHON:-python3}
model=${MODEL:-sd21}
if [[ $model == sd21 ]]; then
  big=(--model sd21 --full --dtype bfloat16) vs=(--vs_model sd21 --vs_full --vs_dtype bfloat16)
else
  big=(--model "$model") vs=(--vs_model "$model")
fi

show() {  # show NAME RC: the tables of a part's output, or its last lines where it failed.
  if [[ $1 == info ]]; then
    cat "$out/$1.txt"
  elif (($2 == 0)); then
    grep -E '^(\||device|largest|jax_vs|torch |##|keep|default)' "$out/$1.txt"
  else
    grep -v -e 'Warning' -e 'warn(' -e '^ *$' "$out/$1.txt" | tail -n 25
  fi
}

part() {  # part NAME SECONDS COMMAND...: runs COMMAND, its output in $out/NAME.txt.
  local name=$1 seconds=$2
  shift 2
  local left=$((total - SECONDS))
  if [[ $skip == *" $name "* ]] || ((left < 20)); then
    echo "=== $name: skipped (${left}s of TOTAL_S left)"
    return
  fi
  ((seconds > left)) && seconds=$left
  echo "=== $name: $* (limit ${seconds}s)"
  local start=$SECONDS
  timeout "$seconds" "$@" > "$out/$name.txt" 2>&1
  local rc=$?
  show "$name" $rc
  echo "=== $name: exit $rc after $((SECONDS - start))s"
}

part info 60 bash -c "nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm \
  --format=csv; $py -c 'import jax, flax, optax, diffusers, transformers, torch; \
print(\"jax\", jax.__version__, jax.devices(), \"flax\", flax.__version__, \"optax\", \
optax.__version__, \"diffusers\", diffusers.__version__, \"transformers\", \
transformers.__version__, \"torch\", torch.__version__)'"

# 20 small programs compiled with and without host_memory.keep_freed_memory() (one malloc
# arena for every thread): on the H200 of benchmarks/NOTES.md item 9 each compile cost seconds.
probe="import sys, time; from dreamfusion_jax import host_memory
if sys.argv[1] == 'keep': host_memory.keep_freed_memory()
import jax, jax.numpy as jnp
x = jnp.ones(8); jax.block_until_ready(x + 1)
start = time.perf_counter()
for n in range(20): jax.block_until_ready(jax.jit(lambda v: jnp.sin(v) * n)(jnp.ones(n + 1)))
print(sys.argv[1], f'malloc: 20 small compiles in {time.perf_counter() - start:.2f} s')"
part compile_probe 120 bash -c "$py -c \"$probe\" keep; $py -c \"$probe\" default"

memory_rc=skipped
if [[ $skip != *" memory "* ]]; then
  echo "=== memory: started beside the timed parts"
  (XLA_FLAGS="${XLA_FLAGS:-} --xla_gpu_autotune_level=0" timeout $((total - SECONDS)) bash -c \
    "$py benchmarks/memory.py ${big[*]} --max_batch 8 && \
     $py benchmarks/memory.py ${big[*]} --max_batch 8 --remat_chunks 16" \
    > "$out/memory.txt" 2>&1; echo $? > "$out/memory.rc") &
  memory_pid=$!
fi

part smoke 120 $py benchmarks/step.py --steps 5
part step_big "$limit" $py benchmarks/step.py "${big[@]}" --steps 20
part breakdown_big "$limit" $py benchmarks/breakdown.py "${big[@]}" --repeats 10
part vs_torch_big "$limit" $py benchmarks/run.py --sections vs_torch "${vs[@]}" --rounds 2
part step_pixel_toy "$limit" bash -c "$py benchmarks/step.py --config pixel --model tiny-pixel \
  --full --steps 20 && $py benchmarks/step.py --config toy --model toy --steps 20"
part quick "$limit" $py benchmarks/run.py --quick --sections step,breakdown,vs_torch

if [[ -n ${memory_pid:-} ]]; then
  wait "$memory_pid"
  memory_rc=$(cat "$out/memory.rc" 2>/dev/null || echo 124)
  echo "=== memory (XLA plan, compiled without autotuning): exit $memory_rc"
  show memory "$memory_rc"
fi
echo "=== all parts done after ${SECONDS}s"
