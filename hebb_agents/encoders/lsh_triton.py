"""Triton kernels for LSH attention on CUDA: hashing, and one round of chunked attention.

:mod:`hebb_agents.encoders.lsh` computes the same things with PyTorch operations, which on a
GPU spend most of their time moving data: the hash writes ``L x n_buckets / 2`` rotation
products to memory only to reduce them to one index per token (at 262,144 tokens that is 2 GiB
per round, and two thirds of a forward+backward pass), and the attention gathers sorted copies
of queries, keys and values, writes ``(L, 2 * bucket_size)`` scores and probabilities and undoes
the sort with further gathers. Here:

- :func:`hash_buckets_triton` multiplies a tile of tokens by tiles of the rotations and keeps a
  running signed argmax in registers: the products never reach memory.
- :class:`FusedRounds` runs the hash rounds: each program takes one chunk of one round's sorted sequence,
  loads its queries and its keys/values (own chunk and look-back chunk) straight from the
  unsorted rows by token index, computes the masked scores, the softmax and the output in
  registers, and writes output and log-sum-exp back at the tokens' own rows (no sorted copies,
  no inverse permutation). Its backward recomputes the probabilities from the saved log-sum-exp
  (as FlashAttention does) and writes each key's gradient twice, once from its own chunk and
  once from the chunk that looks back at it, into two buffers that are summed: no atomics, so
  results are deterministic.

The masks and constants are those of the PyTorch path (a token's own key at ``SELF_SCORE``,
masked, padded and, when causal, later keys at ``MASK_SCORE``); scores and softmax are computed
in float32 for every input dtype. Float32 products use three TF32 passes (``tf32x3``), close to
full float32 accuracy. Dropout and de-duplication across rounds are not implemented here; the
PyTorch path handles them. A kernel too large for the GPU at hand (shared memory or registers,
found when it is compiled and loaded) raises :class:`KernelDoesNotFit` before writing anything;
the hash first tries smaller tiles, the attention's caller goes on with PyTorch operations, and a
backward kernel that does not fit is replaced by autograd through those operations, as are
second derivatives.

Setting ``TRITON_INTERPRET=1`` before triton is imported runs these kernels on CPU tensors
through Triton's interpreter (slow; the tests use it to check them on machines without a GPU).
"""

from __future__ import annotations

import os
import re

import torch
import triton
import triton.language as tl
from torch import Tensor

# The values of hebb_agents.encoders.lsh (repeated so that this module stands alone).
_MASK_SCORE = -1e9
_SELF_SCORE = -1e5


# Warps per program of the attention kernels (one chunk each); module attributes so that a
# benchmark can try others.
FORWARD_WARPS = 4
BACKWARD_WARPS = 4


def interpreting() -> bool:
    """Whether Triton runs kernels through its CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def _precision(dtype: torch.dtype) -> str:
    # tf32x3: float32 accuracy within ~1e-6 at tensor-core speed; ignored for 16-bit inputs
    return "tf32x3" if dtype == torch.float32 else "tf32"


def _width(n: int) -> int:
    """Padded tile width of a feature axis: a power of two, at least 16 (tl.dot's minimum)."""
    return max(16, triton.next_power_of_2(n))


@triton.jit
def _hash_kernel(
    x_ptr,
    rot_ptr,
    out_ptr,
    n_rows,
    dim,
    half,
    stride_rot_d,
    stride_rot_h,
    stride_rot_k,
    D: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    PRECISION: tl.constexpr,
):
    # int64 offsets: rows * dim and h * n_rows pass 2**31 on long batched inputs
    row_block = tl.program_id(0).to(tl.int64)
    h = tl.program_id(1).to(tl.int64)
    rows = row_block * BLOCK_N + tl.arange(0, BLOCK_N)
    cols = tl.arange(0, D)
    row_ok = rows < n_rows
    col_ok = cols < dim
    x_mask = row_ok[:, None] & col_ok[None, :]
    x = tl.load(x_ptr + rows[:, None] * dim + cols[None, :], mask=x_mask, other=0.0)
    # Per column slot of the tile, the largest |xR| seen so far and its index in [xR ; -xR]:
    # elementwise updates in the matmul's own register layout; one reduction at the end.
    best = tl.full((BLOCK_N, BLOCK_K), -1.0, tl.float32)
    best_index = tl.zeros((BLOCK_N, BLOCK_K), tl.int32)
    for k0 in range(0, half, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        k_ok = ks < half
        r = tl.load(
            rot_ptr + cols[:, None] * stride_rot_d + h * stride_rot_h + ks[None, :] * stride_rot_k,
            mask=col_ok[:, None] & k_ok[None, :],
            other=0.0,
        ).to(x.dtype)
        rotated = tl.dot(x, r, input_precision=PRECISION)  # (BLOCK_N, BLOCK_K), float32
        size = tl.where(k_ok[None, :], tl.abs(rotated), -1.0)
        index = ks[None, :] + tl.where(rotated < 0, half, 0)  # -x wins where x < 0
        # strictly greater: the earlier column keeps a tie, as argmax does
        take = size > best
        best = tl.where(take, size, best)
        best_index = tl.where(take, index, best_index)
    top = tl.max(best, axis=1)
    # the smallest index among the slots holding the maximum: argmax's first-index rule
    bucket = tl.min(tl.where(best == top[:, None], best_index, 2 * half), axis=1)
    tl.store(out_ptr + h * n_rows + rows, bucket.to(tl.int64), mask=row_ok)


# Hash tiles (tokens, rotation columns, warps), tried in order until one fits the GPU: the first
# was the fastest on an H100; the smaller ones need less shared memory (consumer GPUs have 99 KiB
# per block, an A100 163 KiB, an H100 227 KiB) and fewer registers for wide heads.
HASH_TILES = ((256, 64, 8), (128, 64, 4), (64, 32, 4), (32, 16, 4))


class KernelDoesNotFit(RuntimeError):
    """A kernel needs more shared memory or registers than the GPU has for this setting."""


# Launch errors that mean "too large for this GPU", not a bug: shared memory over the device's
# limit (raised when the compiled kernel is loaded) and ptxas failing to allocate registers.
_RESOURCE_ERRORS = tuple(
    getattr(triton.runtime.errors, name)
    for name in ("OutOfResources", "PTXASError")
    if hasattr(triton.runtime.errors, name)
)

# (kernel name, device, constexpr settings) known not to fit: not compiled again.
_DOES_NOT_FIT: set[tuple] = set()


def _out_of_space(ptxas_log: str) -> bool:
    """Whether ptxas failed for want of registers or shared memory (its log also lists the
    registers used by kernels that compiled, so only its error lines count)."""
    return any(
        re.search(r"\b(error|fatal)\b", line, re.IGNORECASE)
        and re.search("register|shared", line, re.IGNORECASE)
        for line in ptxas_log.splitlines()
    )


def _launch(kernel, grid: tuple[int, ...], *args, **settings) -> None:
    """Launch ``kernel[grid](*args, **settings)``; :class:`KernelDoesNotFit` if it is too large here.

    Nothing is written before the error (it is raised while compiling or loading the kernel),
    and the setting is remembered so that it is not compiled again.
    """
    device = args[0].device
    key = (kernel.fn.__name__, str(device), tuple(sorted(settings.items())))
    if key in _DOES_NOT_FIT:
        raise KernelDoesNotFit(f"{kernel.fn.__name__} with {settings} does not fit on {device}")
    try:
        kernel[grid](*args, **settings)
    except _RESOURCE_ERRORS as err:
        if type(err).__name__ == "PTXASError" and not _out_of_space(str(err)):
            raise  # ptxas failing for another reason is a bug to see, not a size to avoid
        _DOES_NOT_FIT.add(key)
        raise KernelDoesNotFit(
            f"{kernel.fn.__name__} with {settings} needs more shared memory or registers than {device} "
            f"has ({type(err).__name__})"
        ) from err


def hash_buckets_triton(
    vectors: Tensor,
    rotations: Tensor,
    tiles: tuple[tuple[int, int, int], ...] = HASH_TILES,
    precision: str | None = None,
) -> Tensor:
    """:func:`hebb_agents.encoders.lsh.hash_buckets` as one fused kernel: ``(B, n_hashes, L)`` int64.

    Near-ties between two rotation products may resolve differently from the PyTorch path (the
    products are summed in another order; for 16-bit inputs they are accumulated in float32,
    where the PyTorch path rounds them to the input dtype), and so may exact ties between
    products of opposite signs; the buckets are otherwise the same. ``tiles`` lists
    ``(tokens, rotation columns, warps)`` multiplied per step, the first that fits the GPU is
    used (:class:`KernelDoesNotFit` if none does); ``precision`` overrides the float32 product
    precision (Triton's ``input_precision``: ``tf32x3`` by default, ``tf32``, ``ieee``).
    """
    b, length, d = vectors.shape
    _, n_hashes, half = rotations.shape
    x = vectors.reshape(b * length, d).contiguous()
    rot = rotations.to(device=x.device, dtype=torch.float32)
    out = torch.empty(n_hashes, b * length, dtype=torch.int64, device=x.device)
    for block_n, block_k, num_warps in tiles:
        try:
            _launch(
                _hash_kernel,
                (triton.cdiv(b * length, block_n), n_hashes),
                x,
                rot,
                out,
                b * length,
                d,
                half,
                *rot.stride(),
                D=_width(d),
                BLOCK_N=block_n,
                BLOCK_K=min(block_k, _width(half)),
                PRECISION=precision or _precision(x.dtype),
                num_warps=num_warps,
            )
        except KernelDoesNotFit:
            continue
        return out.view(n_hashes, b, length).transpose(0, 1)
    raise KernelDoesNotFit(f"no hash tile of {tiles} fits on {x.device} for {x.dtype} vectors of width {d}")


@triton.jit
def _scores(
    q,
    keys,
    q_tok,
    k_tok,
    k_masked_ptr,
    k_row,
    scale,
    mask_score,
    self_score,
    C: tl.constexpr,
    OWN: tl.constexpr,
    CAUSAL: tl.constexpr,
    HAS_MASK: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """Masked scores (C, C) of queries against one block of keys (own chunk or look-back)."""
    s = tl.dot(q, tl.trans(keys), input_precision=PRECISION) * scale
    if OWN:  # a token's own key sits on the diagonal of its own chunk
        same = tl.arange(0, C)[:, None] == tl.arange(0, C)[None, :]
        s = tl.where(same, self_score, s)
    if CAUSAL:
        s = tl.where(k_tok[None, :] > q_tok[:, None], mask_score, s)
    if HAS_MASK:
        bad = tl.load(k_masked_ptr + k_row) != 0
        s = tl.where(bad[None, :], mask_score, s)
    return s


@triton.jit
def _forbidden(
    q_tok,
    k_tok,
    k_masked_ptr,
    k_row,
    C: tl.constexpr,
    OWN: tl.constexpr,
    CAUSAL: tl.constexpr,
    HAS_MASK: tl.constexpr,
):
    """(C, C) True where a score is a constant (own key, later key, masked key): no gradient."""
    bad = q_tok[:, None] < 0  # all False, of the right shape
    if OWN:
        bad = bad | (tl.arange(0, C)[:, None] == tl.arange(0, C)[None, :])
    if CAUSAL:
        bad = bad | (k_tok[None, :] > q_tok[:, None])
    if HAS_MASK:
        bad = bad | (tl.load(k_masked_ptr + k_row) != 0)[None, :]
    return bad


@triton.jit
def _store(ptr, value, mask, ACCUMULATE: tl.constexpr):
    """Store ``value``, or add it to what is there (each row has one writer per launch)."""
    if ACCUMULATE:
        value += tl.load(ptr, mask=mask, other=0.0)
    tl.store(ptr, value, mask=mask)


@triton.jit
def _round_forward_kernel(
    q_ptr,
    k_ptr,
    v_ptr,
    order_ptr,
    k_masked_ptr,
    out_ptr,
    top_ptr,
    total_ptr,
    seq_len,
    n_chunks,
    n_rows,
    order_stride_b,
    order_stride_h,
    dim,
    dim_v,
    scale,
    mask_score,
    self_score,
    C: tl.constexpr,
    D: tl.constexpr,
    DV: tl.constexpr,
    LOOK_BACK: tl.constexpr,
    CAUSAL: tl.constexpr,
    HAS_MASK: tl.constexpr,
    PRECISION: tl.constexpr,
):
    # one program per (chunk, sequence, round); each round writes its own output plane
    chunk = tl.program_id(0)
    seq = tl.program_id(1).to(tl.int64)
    h = tl.program_id(2).to(tl.int64)
    base = seq * seq_len
    order_ptr += seq * order_stride_b + h * order_stride_h
    out_ptr += h * n_rows * dim_v
    top_ptr += h * n_rows
    total_ptr += h * n_rows
    slots = tl.arange(0, C)
    d_cols = tl.arange(0, D)
    v_cols = tl.arange(0, DV)
    d_ok = d_cols[None, :] < dim
    v_ok = v_cols[None, :] < dim_v
    q_tok = tl.load(order_ptr + chunk * C + slots)
    q_row = base + q_tok
    q = tl.load(q_ptr + q_row[:, None] * dim + d_cols[None, :], mask=d_ok, other=0.0)
    k = tl.load(k_ptr + q_row[:, None] * dim + d_cols[None, :], mask=d_ok, other=0.0)
    s = _scores(
        q,
        k,
        q_tok,
        q_tok,
        k_masked_ptr,
        q_row,
        scale,
        mask_score,
        self_score,
        C,
        True,
        CAUSAL,
        HAS_MASK,
        PRECISION,
    )
    top = tl.max(s, axis=1)
    if LOOK_BACK:
        prev = (chunk + n_chunks - 1) % n_chunks
        b_tok = tl.load(order_ptr + prev * C + slots)
        b_row = base + b_tok
        kb = tl.load(k_ptr + b_row[:, None] * dim + d_cols[None, :], mask=d_ok, other=0.0)
        sb = _scores(
            q,
            kb,
            q_tok,
            b_tok,
            k_masked_ptr,
            b_row,
            scale,
            mask_score,
            self_score,
            C,
            False,
            CAUSAL,
            HAS_MASK,
            PRECISION,
        )
        top = tl.maximum(top, tl.max(sb, axis=1))
    p = tl.exp(s - top[:, None])
    total = tl.sum(p, axis=1)
    v = tl.load(v_ptr + q_row[:, None] * dim_v + v_cols[None, :], mask=v_ok, other=0.0)
    acc = tl.dot(p.to(v.dtype), v, input_precision=PRECISION)
    if LOOK_BACK:
        pb = tl.exp(sb - top[:, None])
        total += tl.sum(pb, axis=1)
        vb = tl.load(v_ptr + b_row[:, None] * dim_v + v_cols[None, :], mask=v_ok, other=0.0)
        acc += tl.dot(pb.to(vb.dtype), vb, input_precision=PRECISION)
    out = acc / total[:, None]
    tl.store(out_ptr + q_row[:, None] * dim_v + v_cols[None, :], out.to(out_ptr.dtype.element_ty), mask=v_ok)
    # the row maximum and the sum apart: top + log(total) rounds log(total) away where top is a
    # mask constant (float32 steps are 64 at 1e9), and the backward pass divides by the sum
    tl.store(top_ptr + q_row, top)
    tl.store(total_ptr + q_row, total)


@triton.jit
def _round_backward_kernel(
    q_ptr,
    k_ptr,
    v_ptr,
    order_ptr,
    k_masked_ptr,
    out_ptr,
    top_ptr,
    total_ptr,
    d_out_ptr,
    d_lse_ptr,
    d_q_ptr,
    d_k_own_ptr,
    d_k_back_ptr,
    d_v_own_ptr,
    d_v_back_ptr,
    seq_len,
    n_chunks,
    order_stride_b,
    dim,
    dim_v,
    scale,
    mask_score,
    self_score,
    C: tl.constexpr,
    D: tl.constexpr,
    DV: tl.constexpr,
    LOOK_BACK: tl.constexpr,
    CAUSAL: tl.constexpr,
    HAS_MASK: tl.constexpr,
    HAS_D_LSE: tl.constexpr,
    ACCUMULATE: tl.constexpr,
    PRECISION: tl.constexpr,
):
    # one round per launch (rounds touch the same rows); ACCUMULATE adds to earlier rounds'
    chunk = tl.program_id(0)
    seq = tl.program_id(1).to(tl.int64)
    base = seq * seq_len
    order_ptr += seq * order_stride_b
    slots = tl.arange(0, C)
    d_cols = tl.arange(0, D)
    v_cols = tl.arange(0, DV)
    d_ok = d_cols[None, :] < dim
    v_ok = v_cols[None, :] < dim_v
    q_tok = tl.load(order_ptr + chunk * C + slots)
    q_row = base + q_tok
    q = tl.load(q_ptr + q_row[:, None] * dim + d_cols[None, :], mask=d_ok, other=0.0)
    k = tl.load(k_ptr + q_row[:, None] * dim + d_cols[None, :], mask=d_ok, other=0.0)
    v = tl.load(v_ptr + q_row[:, None] * dim_v + v_cols[None, :], mask=v_ok, other=0.0)
    d_out = tl.load(d_out_ptr + q_row[:, None] * dim_v + v_cols[None, :], mask=v_ok, other=0.0)
    out = tl.load(out_ptr + q_row[:, None] * dim_v + v_cols[None, :], mask=v_ok, other=0.0)
    top = tl.load(top_ptr + q_row)
    total = tl.load(total_ptr + q_row)
    # d softmax: P * (dP - sum_j P_j dP_j), and that sum is d_out . out per query
    row = tl.sum(d_out.to(tl.float32) * out.to(tl.float32), axis=1)
    if HAS_D_LSE:
        row -= tl.load(d_lse_ptr + q_row)

    s = _scores(
        q,
        k,
        q_tok,
        q_tok,
        k_masked_ptr,
        q_row,
        scale,
        mask_score,
        self_score,
        C,
        True,
        CAUSAL,
        HAS_MASK,
        PRECISION,
    )
    p = tl.exp(s - top[:, None]) / total[:, None]
    d_p = tl.dot(d_out, tl.trans(v), input_precision=PRECISION)
    d_s = p * (d_p - row[:, None])
    d_s = tl.where(_forbidden(q_tok, q_tok, k_masked_ptr, q_row, C, True, CAUSAL, HAS_MASK), 0.0, d_s)
    d_v = tl.dot(tl.trans(p).to(d_out.dtype), d_out, input_precision=PRECISION)
    d_k = tl.dot(tl.trans(d_s).to(q.dtype), q, input_precision=PRECISION) * scale
    d_q = tl.dot(d_s.to(k.dtype), k, input_precision=PRECISION)
    _store(d_v_own_ptr + q_row[:, None] * dim_v + v_cols[None, :], d_v, v_ok, ACCUMULATE)
    _store(d_k_own_ptr + q_row[:, None] * dim + d_cols[None, :], d_k, d_ok, ACCUMULATE)
    if LOOK_BACK:
        prev = (chunk + n_chunks - 1) % n_chunks
        b_tok = tl.load(order_ptr + prev * C + slots)
        b_row = base + b_tok
        kb = tl.load(k_ptr + b_row[:, None] * dim + d_cols[None, :], mask=d_ok, other=0.0)
        vb = tl.load(v_ptr + b_row[:, None] * dim_v + v_cols[None, :], mask=v_ok, other=0.0)
        sb = _scores(
            q,
            kb,
            q_tok,
            b_tok,
            k_masked_ptr,
            b_row,
            scale,
            mask_score,
            self_score,
            C,
            False,
            CAUSAL,
            HAS_MASK,
            PRECISION,
        )
        pb = tl.exp(sb - top[:, None]) / total[:, None]
        d_pb = tl.dot(d_out, tl.trans(vb), input_precision=PRECISION)
        d_sb = pb * (d_pb - row[:, None])
        d_sb = tl.where(_forbidden(q_tok, b_tok, k_masked_ptr, b_row, C, False, CAUSAL, HAS_MASK), 0.0, d_sb)
        d_vb = tl.dot(tl.trans(pb).to(d_out.dtype), d_out, input_precision=PRECISION)
        d_kb = tl.dot(tl.trans(d_sb).to(q.dtype), q, input_precision=PRECISION) * scale
        d_q += tl.dot(d_sb.to(kb.dtype), kb, input_precision=PRECISION)
        # each token is the look-back of exactly one chunk: one write per row
        _store(d_v_back_ptr + b_row[:, None] * dim_v + v_cols[None, :], d_vb, v_ok, ACCUMULATE)
        _store(d_k_back_ptr + b_row[:, None] * dim + d_cols[None, :], d_kb, d_ok, ACCUMULATE)
    _store(d_q_ptr + q_row[:, None] * dim + d_cols[None, :], d_q * scale, d_ok, ACCUMULATE)


def _mask_scores(dtype: torch.dtype) -> tuple[float, float]:
    """(masked, own-key) score constants: those of the PyTorch path for ``dtype``."""
    # float16 cannot hold -1e9: the log-sum-exp returned in the input dtype must stay finite
    return (-6.0e4, -5.0e4) if dtype == torch.float16 else (_MASK_SCORE, _SELF_SCORE)


class FusedRounds(torch.autograd.Function):
    """All hash rounds of chunked LSH attention, as Triton kernels.

    Inputs: ``flat_q`` (unscaled shared query/key), ``flat_k`` (normalised keys) and ``flat_v``,
    each ``(N, ...)`` with ``N = B * Lp`` rows, contiguous, in token order; ``order``
    ``(B, H, Lp)`` int64, the token index at each sorted slot of each round; ``key_masked``
    ``(N,)`` bool or None; ``reference_grads(inputs, needs_grad, grad_outputs)``, the gradients
    with respect to ``inputs = (flat_q, flat_k, flat_v)`` through the same computation done with
    PyTorch operations. Returns every round's output ``(H, N, dv)`` in the input dtype and
    log-sum-exp ``(H, N)`` in float32, in token order.

    The forward pass is one launch for all rounds (:class:`KernelDoesNotFit` where the kernel is
    too large for the GPU); the backward pass one launch per round, each adding its gradients to
    the last. Where the backward kernel does not fit, and for double backward
    (``create_graph=True``), the backward pass calls ``reference_grads`` instead; with ``strict``
    (``kernel="triton"``), a backward kernel that does not fit is an error.
    """

    @staticmethod
    def forward(ctx, flat_q, flat_k, flat_v, order, key_masked, causal, bucket_size, reference_grads, strict):  # type: ignore[override]
        b, n_hashes, seq_len = order.shape
        n_rows, d = flat_q.shape
        dv = flat_v.shape[1]
        n_chunks = seq_len // bucket_size
        out = flat_v.new_empty(n_hashes, n_rows, dv)
        top = torch.empty(n_hashes, n_rows, dtype=torch.float32, device=flat_q.device)
        total = torch.empty_like(top)
        masked = key_masked.view(torch.uint8) if key_masked is not None else order  # (unused if None)
        _launch(
            _round_forward_kernel,
            (n_chunks, b, n_hashes),
            flat_q,
            flat_k,
            flat_v,
            order,
            masked,
            out,
            top,
            total,
            seq_len,
            n_chunks,
            n_rows,
            order.stride(0),
            order.stride(1),
            d,
            dv,
            d**-0.5,
            *_mask_scores(flat_q.dtype),
            C=bucket_size,
            D=_width(d),
            DV=_width(dv),
            LOOK_BACK=n_chunks > 1,
            CAUSAL=causal,
            HAS_MASK=key_masked is not None,
            PRECISION=_precision(flat_q.dtype),
            num_warps=FORWARD_WARPS,
        )
        ctx.save_for_backward(flat_q, flat_k, flat_v, order, key_masked, out, top, total)
        ctx.causal, ctx.bucket_size, ctx.reference_grads, ctx.strict = (
            causal,
            bucket_size,
            reference_grads,
            strict,
        )
        return out, top + total.log()

    @staticmethod
    def backward(ctx, d_out, d_lse):  # type: ignore[override]
        if not torch.is_grad_enabled():  # grad mode is on in a backward pass only for create_graph=True
            try:
                return (*_fused_backward(ctx, d_out, d_lse), None, None, None, None, None, None)
            except KernelDoesNotFit as err:
                if ctx.strict:
                    raise ValueError(f"kernel='triton': {err}; use kernel='auto' or 'torch'") from err
        inputs = ctx.saved_tensors[:3]
        grads = ctx.reference_grads(inputs, ctx.needs_input_grad[:3], (d_out, d_lse))
        return (*grads, None, None, None, None, None, None)


def _fused_backward(ctx, d_out: Tensor | None, d_lse: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
    """Gradients of :class:`FusedRounds` with respect to ``flat_q``, ``flat_k``, ``flat_v``."""
    flat_q, flat_k, flat_v, order, key_masked, out, top, total = ctx.saved_tensors
    b, n_hashes, seq_len = order.shape
    d, dv = flat_q.shape[1], flat_v.shape[1]
    n_chunks = seq_len // ctx.bucket_size
    look_back = n_chunks > 1
    f32 = dict(dtype=torch.float32, device=flat_q.device)
    # Every row is written once per buffer and round: a key's gradient from its own chunk, and
    # from the chunk that looks back at it (summed below). No atomics: deterministic.
    d_q = torch.empty(flat_q.shape, **f32)
    d_k_own = torch.empty(flat_k.shape, **f32)
    d_v_own = torch.empty(flat_v.shape, **f32)
    d_k_back = torch.empty(flat_k.shape, **f32) if look_back else d_k_own
    d_v_back = torch.empty(flat_v.shape, **f32) if look_back else d_v_own
    d_out = d_out.contiguous() if d_out is not None else torch.zeros_like(out)
    d_lse = d_lse.float().contiguous() if d_lse is not None else None
    masked = key_masked.view(torch.uint8) if key_masked is not None else order
    for h in range(n_hashes):
        _launch(
            _round_backward_kernel,
            (n_chunks, b),
            flat_q,
            flat_k,
            flat_v,
            order[:, h],
            masked,
            out[h],
            top[h],
            total[h],
            d_out[h],
            d_lse[h] if d_lse is not None else top[h],
            d_q,
            d_k_own,
            d_k_back,
            d_v_own,
            d_v_back,
            seq_len,
            n_chunks,
            order.stride(0),
            d,
            dv,
            d**-0.5,
            *_mask_scores(flat_q.dtype),
            C=ctx.bucket_size,
            D=_width(d),
            DV=_width(dv),
            LOOK_BACK=look_back,
            CAUSAL=ctx.causal,
            HAS_MASK=key_masked is not None,
            HAS_D_LSE=d_lse is not None,
            ACCUMULATE=h > 0,
            PRECISION=_precision(flat_q.dtype),
            num_warps=BACKWARD_WARPS,
        )
    if look_back:
        d_k_own += d_k_back
        d_v_own += d_v_back
    return d_q.to(flat_q.dtype), d_k_own.to(flat_k.dtype), d_v_own.to(flat_v.dtype)


__all__ = ["HASH_TILES", "FusedRounds", "KernelDoesNotFit", "hash_buckets_triton", "interpreting"]
