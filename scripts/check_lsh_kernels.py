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

``--compile-for 80 86 90`` needs no GPU: it compiles every setting the layer accepts for those
CUDA architectures (Triton's own ``ptxas``) and prints which ones fit the architecture's shared
memory and registers; at run time a setting that does not fit goes to the PyTorch path
(``kernel="auto"``), and the hash tries smaller tiles first.

    python scripts/check_lsh_kernels.py                          # on CUDA
    TRITON_INTERPRET=1 python scripts/check_lsh_kernels.py --small   # CPU, Triton's interpreter
    python scripts/check_lsh_kernels.py --compile-for 80 86 89 90     # any machine with triton
"""

from __future__ import annotations

import argparse
import math
import os
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
    dim_v: int,
    bucket: int,
    hashes: int,
    causal: bool,
    masked: bool,
) -> float:
    """Largest difference (relative to the reference's scale) between the kernels and the PyTorch path."""
    gen = torch.Generator().manual_seed(length * 31 + hashes)
    qk32 = torch.randn(b, length, dim, generator=gen)
    v32 = torch.randn(b, length, dim_v, generator=gen)
    n_chunks = -(-length // bucket)
    rotations = torch.randn(dim, hashes, max(2, n_chunks + n_chunks % 2) // 2, generator=gen)
    rotations = rotations.to(dtype).float()  # the kernels round them to the input dtype
    pad_mask = (torch.rand(b, length, generator=gen) < 0.2).to(device) if masked else None
    weights = torch.randn(b, length, dim_v, generator=gen).to(device)
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
        worst = max(worst, _relative_gap(mine, ref, scale))
    return worst


def _relative_gap(mine: torch.Tensor, ref: torch.Tensor, scale: float) -> float:
    """max |mine - ref| / scale; infinite where ``mine`` is NaN or infinite and ``ref`` is not (a
    plain max() would let a NaN pass: max(0.0, nan) is 0.0 and nan > tol is False)."""
    broken = ~torch.isfinite(mine) & torch.isfinite(ref)
    if bool(broken.any()):
        return math.inf
    gap = (mine - ref).abs().max().item() / scale
    return math.inf if math.isnan(gap) else gap


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--small", action="store_true", help="short sequences (for Triton's CPU interpreter)")
    parser.add_argument(
        "--compile-for",
        type=int,
        nargs="+",
        metavar="SM",
        help=f"only compile, for these CUDA architectures ({', '.join(map(str, SHARED_MEMORY))})",
    )
    parser.add_argument(
        "--widths", type=int, nargs="+", default=[16, 32, 64, 128, 256], help="head widths to compile"
    )
    parser.add_argument(
        "--buckets", type=int, nargs="+", default=[16, 32, 64, 128], help="bucket sizes to compile"
    )
    parser.add_argument(
        "--dtypes", nargs="+", default=list(DTYPES), choices=list(DTYPES), help="dtypes to compile"
    )
    args = parser.parse_args()
    if args.compile_for:
        compile_check(args.compile_for, args.widths, args.buckets, [DTYPES[name] for name in args.dtypes])
        return
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
        parser.error(
            "no CUDA GPU here: run the kernels through Triton's interpreter on the CPU "
            "(TRITON_INTERPRET=1 python scripts/check_lsh_kernels.py --small), or use --compile-for"
        )
    bucket = 16 if args.small else 64
    lengths = (100, 257) if args.small else (100, 1000, 4099)
    # (length, dim, dim_v, hashes, causal, masked): rounds, masks and odd lengths at width 32, then
    # one chunk (no look-back), two chunks (each the other's look-back), widths that differ and
    # are not powers of two
    cases = [
        (length, 32, 32, *setting)
        for length in lengths
        for setting in ((1, False, False), (2, True, False), (3, False, True), (4, True, True))
    ]
    cases += [
        (bucket - 3, 32, 32, 2, True, True),
        (2 * bucket, 32, 32, 3, False, True),
        (5 * bucket - 10, 20, 40, 2, True, False),
    ]
    failed = False
    print(f"device {device}; max |triton - torch| / max |torch| over output, log-sum-exp and gradients")
    dtypes = (torch.float32, torch.float16) + (() if args.small else (torch.bfloat16,))
    for dtype in dtypes:
        for length, dim, dim_v, hashes, causal, masked in cases:
            err = compare(device, dtype, 2, length, dim, dim_v, bucket, hashes, causal, masked)
            bad = err > TOLERANCE[dtype]
            failed |= bad
            print(
                f"  {str(dtype):15s} L={length:5d} d={dim} dv={dim_v} hashes={hashes} causal={causal!s:5s} "
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
        worst = max(worst, _relative_gap(a, b, max(b.abs().max().item(), 1e-12)))
    print(f"  reversible stack vs ordinary stack on {device}: parameter gradients differ by {worst:.1e}")
    return worst > 1e-3


# Shared memory one block may use (bytes, opt-in maximum) per compute capability (CUDA guide).
SHARED_MEMORY = {80: 166912, 86: 101376, 89: 101376, 90: 232448}

_TRITON_DTYPES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def _signature(kernel, dtype: torch.dtype) -> dict[str, str]:
    """Triton argument types of ``kernel``'s non-constexpr arguments for ``dtype`` inputs."""
    float32 = ("rot_ptr", "top_ptr", "total_ptr", "d_lse_ptr", "d_q_ptr")
    types = {}
    for name in kernel.arg_names:
        if name.isupper():  # constexpr
            continue
        if name == "order_ptr" or (name == "out_ptr" and kernel.fn.__name__ == "_hash_kernel"):
            types[name] = "*i64"
        elif name == "k_masked_ptr":
            types[name] = "*u8"
        elif name in float32 or name.startswith(("d_k_", "d_v_")):
            types[name] = "*fp32"
        elif name.endswith("_ptr"):
            types[name] = f"*{_TRITON_DTYPES[dtype]}"
        else:
            types[name] = "fp32" if name in ("scale", "mask_score", "self_score") else "i32"
    return types


def _compiled_shared_memory(kernel, dtype: torch.dtype, arch: int, num_warps: int, **constants) -> int | None:
    """Shared memory of ``kernel`` compiled for ``sm_<arch>``, or None where ptxas runs out of registers."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    signature = _signature(kernel, dtype)
    constexprs = {}
    for i, name in enumerate(kernel.arg_names):
        if name in constants:
            signature[name] = "constexpr"
            constexprs[(i,)] = constants[name]
    source = ASTSource(kernel, {n: signature[n] for n in kernel.arg_names}, constexprs)
    try:
        compiled = triton.compile(
            source, target=GPUTarget("cuda", arch, 32), options={"num_warps": num_warps}
        )
    except triton.runtime.errors.PTXASError:
        return None
    return compiled.metadata.shared


def compile_check(archs: list[int], widths: list[int], buckets: list[int], dtypes: list[torch.dtype]) -> None:
    """Print which kernel settings fit each architecture (compiled here, nothing launched)."""
    from hebb_agents.encoders import lsh_triton as kernels

    unknown = [a for a in archs if a not in SHARED_MEMORY]
    if unknown:
        raise SystemExit(f"unknown architectures {unknown}; accepted: {', '.join(map(str, SHARED_MEMORY))}")
    for arch in archs:
        limit = SHARED_MEMORY[arch]
        print(f"sm_{arch}: {limit // 1024} KiB shared memory per block", flush=True)
        for dtype in dtypes:
            precision = "tf32x3" if dtype == torch.float32 else "tf32"
            tiles = []
            for width in widths:
                fit = "none (PyTorch hash)"
                for block_n, block_k, warps in kernels.HASH_TILES:
                    shared = _compiled_shared_memory(
                        kernels._hash_kernel, dtype, arch, warps, D=width, BLOCK_N=block_n, BLOCK_K=block_k,
                        PRECISION=precision,
                    )  # fmt: skip
                    if shared is not None and shared <= limit:
                        fit = f"{block_n}x{block_k}"
                        break
                tiles.append(f"d={width}: {fit}")
            print(f"  hash {str(dtype):14s} first tile that fits: {', '.join(tiles)}", flush=True)
            for name, kernel, extra, warps in (
                ("forward ", kernels._round_forward_kernel, {}, kernels.FORWARD_WARPS),
                (
                    "backward",
                    kernels._round_backward_kernel,
                    {"HAS_D_LSE": True, "ACCUMULATE": True},
                    kernels.BACKWARD_WARPS,
                ),
            ):
                for bucket in buckets:
                    cells = []
                    for width in widths:
                        shared = _compiled_shared_memory(
                            kernel, dtype, arch, warps, C=bucket, D=width, DV=width, LOOK_BACK=True,
                            CAUSAL=True, HAS_MASK=True, PRECISION=precision, **extra,
                        )  # fmt: skip
                        fits = shared is not None and shared <= limit
                        size = "regs" if shared is None else f"{shared // 1024}K"
                        cells.append(f"d={width}: {size}{'' if fits else ' NO'}")
                    print(f"  {name} {str(dtype):14s} bucket {bucket:3d}: {', '.join(cells)}", flush=True)


if __name__ == "__main__":
    main()
