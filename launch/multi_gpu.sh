#!/usr/bin/env bash
# One node, several GPUs, one process: the views of each step (or, with --config.prompts, the
# prompts) are split over the first NUM_GPUS GPUs.
#
#   launch/multi_gpu.sh NUM_GPUS CONFIG WORKDIR [--config.field=value ...]
#   launch/multi_gpu.sh 4 configs/dreamfusion.py /tmp/peacock --config.batch_size=4
#
# Install for GPUs first: pip install -e . "jax[cuda12]". batch_size must be a multiple of
# NUM_GPUS (the paper's 4 views: one per GPU on 4 GPUs).
set -euo pipefail
if [[ $# -lt 3 ]]; then
  echo "usage: $0 NUM_GPUS CONFIG WORKDIR [--config.field=value ...]" >&2
  exit 2
fi
gpus=$1 config=$2 workdir=$3
shift 3
if ! [[ "$gpus" =~ ^[1-9][0-9]*$ ]]; then
  echo "NUM_GPUS must be a positive integer, got '$gpus'" >&2
  exit 2
fi
CUDA_VISIBLE_DEVICES=$(seq -s, 0 $((gpus - 1)))
export CUDA_VISIBLE_DEVICES
cd "$(dirname "$0")/.."
exec python -m dreamfusion_jax.main --config "$config" --workdir "$workdir" \
    --config.num_devices="$gpus" "$@"
