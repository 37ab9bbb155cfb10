#!/usr/bin/env bash
# Issue 4's GPU table and issue 6's worker-scaling table, in one run on a large machine
# (a CUDA GPU and 16 cores). Each part has its own time limit, so one part cut short or failing
# leaves the other; the LSH measurements are saved after every sequence length.
#
#   scripts/bench_big_machine.sh OUT_DIR
#
# Environment: LSH_ARGS / ES_ARGS replace each part's default arguments, LSH_LIMIT / ES_LIMIT
# its limit in seconds, PYTHON the interpreter (default python3).
set -u
out=${1:?usage: scripts/bench_big_machine.sh OUT_DIR}
mkdir -p "$out"
out=$(cd "$out" && pwd)  # absolute: the script moves to the repository root below
py=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 MUJOCO_GL=${MUJOCO_GL:-egl}
cd "$(dirname "$0")/.."

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null
  nproc; "$py" -c "import torch, numpy, mujoco; print(torch.__version__, numpy.__version__, mujoco.__version__)"
} 2>&1 | tee "$out/machine.txt"

echo "== LSH attention on this device against the exact reference (issue 4)"
"$py" - <<'PY' 2>&1 | tee "$out/lsh_check.txt"
import torch

from hebb_agents.encoders.lsh import LSHAttention, full_shared_qk_attention

device = "cuda" if torch.cuda.is_available() else "cpu"
for causal in (False, True):
    torch.manual_seed(0)
    qk = torch.randn(2, 100, 64, dtype=torch.float64, device=device, requires_grad=True)
    v = torch.randn(2, 100, 64, dtype=torch.float64, device=device, requires_grad=True)
    out = LSHAttention(bucket_size=128, n_hashes=1, causal=causal, seed=0)(qk, v)  # one chunk: exact
    ref = full_shared_qk_attention(qk, v, causal=causal)
    grads = torch.autograd.grad(out.square().sum(), (qk, v))
    ref_grads = torch.autograd.grad(ref.square().sum(), (qk, v))
    err = max((a - b).abs().max().item() for a, b in zip((out, *grads), (ref, *ref_grads)))
    print(f"{device} causal={causal}: max |LSH - full| over output and gradients = {err:.2e}")
PY

echo "== fused Triton LSH kernels against the PyTorch path (issue 4)"
timeout 120 "$py" scripts/check_lsh_kernels.py 2>&1 | tee "$out/lsh_kernels_check.txt"

echo "== LSH attention (issue 4)"
timeout "${LSH_LIMIT:-220}" "$py" scripts/bench_lsh.py --repeats 3 --budget 1 \
  ${LSH_ARGS:---lengths 262144 65536 32768 16384 8192 4096 2048 1024} --out "$out/lsh.json" 2>&1 | tee "$out/lsh.log"
if [ -s "$out/lsh.json" ]; then
  "$py" scripts/bench_lsh.py --table-from "$out/lsh.json" | tee "$out/lsh_table.md"
fi

echo "== ES throughput and worker scaling (issue 6)"
timeout "${ES_LIMIT:-180}" "$py" scripts/bench_es.py \
  ${ES_ARGS:---envs ant,cheetah --workers 1,4,8,16 --kernels numba --lockstep-sizes auto --episode-steps 300 --generations 1 --memory-generations 0} \
  2>&1 | tee "$out/es.log"
