#!/usr/bin/env bash
# Runs one job on this machine, on every local device.
#
#   launch/local.sh CONFIG WORKDIR [--config.field=value ...]
#   launch/local.sh configs/nerf_small.py /tmp/nerf_small --config.data.path=/tmp/scene
#
# Cluster launchers (TPU pods, SLURM) sit beside this script.
set -euo pipefail
if [[ $# -lt 2 ]]; then
  echo "usage: $0 CONFIG WORKDIR [--config.field=value ...]" >&2
  exit 2
fi
config=$1
workdir=$2
shift 2
cd "$(dirname "$0")/.."
exec python -m dreamfusion_jax.main --config "$config" --workdir "$workdir" "$@"
