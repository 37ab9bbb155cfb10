"""Check the fused Triton LSH kernels against the PyTorch path on this device.

For each setting (causal or not, key padding mask or not, rounds, odd lengths, dtypes) runs
:func:`hebb_agents.encoders.lsh.lsh_attention` with ``kernel="triton"`` and ``kernel="torch"`` on
the same inputs and rotations, and prints the largest differences of output, log-sum-exp and the
gradients of a random projection of both (outputs at masked positions are left out: they are not
meaningful). 16-bit inputs are compared with the PyTorch path run on their float32 copies, whose
hashes the kernels reproduce (they round the rotations to the input dtype and accumulate the
products in float32); the log-sum-exp only where a query saw a real key (otherwise it is a mask
constant, which float16 keeps smaller). Then the hash kernel alone, and (on CUDA) a reversible
stack's gradients against an ordinary stack's, with rotations drawn from the CUDA RNG. Exits 1
if a difference passes its tolerance. ``--small`` leaves bfloat16 out: Triton's CPU interpreter
computes bfloat16 dot products wrongly (3.9.0), the GPU does not.

    python scripts/check_lsh_kernels.py                          # on CUDA
    TRITON_INTERPRET=1 python scripts/check_lsh_kernels.py --small   # CPU, Triton's interpreter
"""

from __future__ import annotations

import argparse
import sys

import torch

from hebb_agents.encoders.lsh import hash_buckets, lsh_attention
from hebb_agents.encoders.reversible import reformer_stack

TOLERANCE = {torch.float32: 1e-4, torch.float16: 2e-2, torch.bfloat16: 1e-1}


def compare(
    device: str,
    dtype: torch.dtype,
    b: int,
    length: int,
    dim: int,
    bucket: int,
    hashes: int,
    causal: bool,
    masked: bool,
) -> float:
    """Largest difference (relative to the reference's scale) between the kernels and the PyTorch path."""
    gen = torch.Generator().manual_seed(length * 31 + hashes)
    qk32 = torch.randn(b, length, dim, generator=gen)
    v32 = torch.randn(b, length, dim, generator=gen)
    n_chunks = -(-length // bucket)
    rotations = torch.randn(dim, hashes, max(2, n_chunks + n_chunks % 2) // 2, generator=gen)
    rotations = rotations.to(dtype).float()  # the kernels round them to the input dtype
    pad_mask = (torch.rand(b, length, generator=gen) < 0.2).to(device) if masked else None
    weights = torch.randn(b, length, dim, generator=gen).to(device)
    keep = ~pad_mask if masked else torch.ones(b, length, dtype=torch.bool, device=device)
    results = []
    for kernel, run_dtype in (("triton", dtype), ("torch", torch.float32)):
        # the 16-bit inputs, and their exact float32 copies for the reference
        qk = qk32.to(dtype).to(run_dtype).to(device).requires_grad_(True)
        v = v32.to(dtype).to(run_dtype).to(device).requires_grad_(True)
        out, lse = lsh_attention(
            qk, v, rotations.to(device), bucket, causal=causal, key_padding_mask=pad_mask, kernel=kernel
        )
        if kernel == "torch":
            saw_key = keep & (lse > -1e3)  # not a row of constants only
        loss = (out.float() * weights)[keep].sum() + 0.5 * lse.float()[keep].sum()
        grads = torch.autograd.grad(loss, (qk, v))
        results.append([out.float()[keep], lse.float(), *(g.float() for g in grads)])
    for r in results:
        r[1] = r[1][saw_key]
    worst = 0.0
    for mine, ref in zip(*results):
        scale = ref.abs().max().item() or 1.0
        worst = max(worst, (mine - ref).abs().max().item() / scale)
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--small", action="store_true", help="short sequences (for Triton's CPU interpreter)")
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    lengths = (100, 257) if args.small else (100, 1000, 4099)
    failed = False
    print(f"device {device}; max |triton - torch| / max |torch| over output, log-sum-exp and gradients")
    dtypes = (torch.float32, torch.float16) + (() if args.small else (torch.bfloat16,))
    for dtype in dtypes:
        for length in lengths:
            for hashes, causal, masked in (
                (1, False, False),
                (2, True, False),
                (3, False, True),
                (4, True, True),
            ):
                bucket = 16 if args.small else 64
                err = compare(device, dtype, 2, length, 32, bucket, hashes, causal, masked)
                bad = err > TOLERANCE[dtype]
                failed |= bad
                print(
                    f"  {str(dtype):15s} L={length:5d} hashes={hashes} causal={causal!s:5s} "
                    f"masked={masked!s:5s} {err:.1e}{'  FAILED' if bad else ''}",
                    flush=True,
                )
    failed |= check_hashes(device)
    if device == "cuda":  # rotations come from the CUDA RNG there; a reversible stack replays it
        failed |= check_reversible(device)
    sys.exit(1 if failed else 0)


def check_hashes(device: str) -> bool:
    """The fused hash kernel against the PyTorch path, float32; True if they disagree."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3000, 64, generator=gen).to(device)
    rotations = torch.randn(64, 4, 47, generator=gen).to(device)  # n_buckets 94: a partial tile
    agree = hash_buckets(x, rotations, kernel="triton") == hash_buckets(x, rotations, kernel="torch")
    share = agree.float().mean().item()
    print(f"  hash buckets, float32: {100 * share:.3f} % equal to the PyTorch path's")
    return share < 0.999  # near-ties may differ: products summed in another order


def check_reversible(device: str) -> bool:
    """Reversible stack on the fused kernels: gradients equal an ordinary stack's; True if not."""
    worst = 0.0
    stack = reformer_stack(dim=64, depth=3, heads=2, bucket_size=32, n_hashes=2, dropout=0.1, ff_dropout=0.1)
    stack = stack.to(device)
    x = torch.randn(2, 500, 2 * 64, device=device)  # the two reversible streams side by side
    grads = []
    for reversible in (True, False):
        stack.reversible = reversible
        stack.zero_grad()
        torch.manual_seed(5)  # the same rotations (CUDA RNG) and dropout masks for both
        stack(x).square().mean().backward()
        grads.append([p.grad.clone() for p in stack.parameters()])
    for a, b in zip(*grads):
        worst = max(worst, ((a - b).abs().max() / b.abs().max().clamp(min=1e-12)).item())
    print(f"  reversible stack vs ordinary stack on {device}: parameter gradients differ by {worst:.1e}")
    return worst > 1e-3


if __name__ == "__main__":
    main()
