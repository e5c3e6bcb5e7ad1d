#!/usr/bin/env bash
# Installs the package on every worker of a TPU VM pod slice and starts the same training command
# on all of them (one process per host; JAX finds the other workers by itself).
#
#   launch/tpu_pod.sh TPU_NAME ZONE CONFIG WORKDIR [--config.field=value ...]
#   launch/tpu_pod.sh my-v4-32 us-central2-b configs/dreamfusion.py /mnt/shared/peacock \
#       --config.prompt="a DSLR photo of a peacock on a surfboard"
#
# WORKDIR must be a folder every worker sees (a Filestore/NFS mount or a gcsfuse mount of a
# bucket): checkpoints are written by all workers together, the exports by worker 0.
# Optional environment: PROJECT (gcloud --project), REMOTE_DIR (where the code goes on the
# workers, default dreamfusion_jax), JAX_SPEC (default "jax[tpu]").
set -euo pipefail
if [[ $# -lt 4 ]]; then
  echo "usage: $0 TPU_NAME ZONE CONFIG WORKDIR [--config.field=value ...]" >&2
  exit 2
fi
tpu=$1 zone=$2 config=$3 workdir=$4
shift 4
remote=${REMOTE_DIR:-dreamfusion_jax}
jax_spec=${JAX_SPEC:-jax[tpu]}
gcloud_args=(--zone "$zone")
if [[ -n "${PROJECT:-}" ]]; then
  gcloud_args+=(--project "$PROJECT")
fi
cd "$(dirname "$0")/.."
# The working tree as it is here, on every worker (no git remote needed).
tar czf /tmp/dreamfusion_jax_src.tgz --exclude=.git --exclude=.venv .
gcloud compute tpus tpu-vm scp /tmp/dreamfusion_jax_src.tgz "$tpu":~/ --worker=all \
    "${gcloud_args[@]}"
printf -v overrides ' %q' "$@"
gcloud compute tpus tpu-vm ssh "$tpu" --worker=all "${gcloud_args[@]}" --command "
  set -e
  mkdir -p $remote && tar xzf ~/dreamfusion_jax_src.tgz -C $remote && cd $remote
  python3 -m pip install -q -e . '$jax_spec'
  python3 -m dreamfusion_jax.main --multihost --config $config --workdir $workdir$overrides
"
