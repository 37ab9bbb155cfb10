"""Reformer-style locality-sensitive-hashing (LSH) attention.

Kitaev, Kaiser & Levskaya, "Reformer: The Efficient Transformer", ICLR 2020,
https://arxiv.org/abs/2001.04451

Each of ``n_hashes`` rounds hashes the shared query/key vectors with an angular LSH (a random
rotation ``R``; bucket = argmax of ``[xR ; -xR]``), sorts the tokens by (bucket, position), cuts
the sorted sequence into chunks of ``bucket_size`` and lets every chunk attend to itself and to
the previous chunk (the first chunk looks back to the last one). Rounds are combined with the
softmax over rounds of each round's log-sum-exp, which is the softmax over every (key, round)
pair a query saw; with de-duplication each pair seen in several rounds counts once.

Memory is ``O(L * bucket_size)`` per round for the scores, and nothing of size ``L^2`` or
``L * n_hashes * L`` is ever built: the PyTorch path runs several rounds at once only while
their scores and gathered keys and values fit a fixed budget (one round at a time once one round
alone fills it: for one sequence of width 64 in buckets of 64, from 4,096 tokens), so inference
holds at most one group's; training keeps one ``(L, 2 * bucket_size)`` probability tensor per
round for a hand-written backward
(:class:`_ChunkedAttention`); hashing runs over blocks of tokens so that the
``L * n_buckets / 2`` rotation products never exist at once; the sorts are undone by inverse
permutations (gathers both ways, no ``index_add``).

Conventions: ``qk`` is ``(B, L, d)``, ``v`` is ``(B, L, dv)``; ``key_padding_mask`` is ``(B, L)``
bool with ``True`` where a token must not be attended to (PyTorch's convention). Masked tokens
are also left out of the hashing (they sort behind every real token, like internal padding), so
their content never changes another token's output. Their number can, through the length the
attention works on: it sets the bucket count (unless ``n_buckets`` is fixed), and the first
chunk's look-back wraps to the last chunk, which may then hold masked tokens only. The outputs
at masked positions themselves are not meaningful.

Rounds are combined relative to the largest log-sum-exp, not with ``logaddexp``: a token that
sees only itself has a log-sum-exp near ``SELF_SCORE``, where ``logaddexp`` would round its
weights by ~1e-3 in float32 (and to nothing in float16).
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hebb_agents.options import check_bool, check_int, check_optional_int, check_probability

# Masked scores use large finite constants rather than -inf so that a row with every key
# masked still has a finite softmax. A token's own key gets SELF_SCORE: lower than any real
# score, higher than a masked one, so a token attends to itself only when nothing else is
# attendable (Reformer, section 2).
MASK_SCORE = -1e9
SELF_SCORE = -1e5
# fp16 cannot hold -1e9; the same ordering with representable values.
_HALF_SCORES = (-6.0e4, -5.0e4)

# Hashing computes L x (n_buckets / 2) rotation products; they are produced in blocks of at
# most this many elements, which keeps hashing memory O(L) instead of O(L^2 / bucket_size). On CPU
# a 4 MiB float32 block is still in cache when its argmax reads it: 1.08-1.40x faster hashing than
# 16 MiB blocks at 4K-64K tokens (interleaved A/B, 2-core machine).
_HASH_BLOCK_ELEMENTS = 1 << 20
# Rounds of at most this many rotations (n_buckets / 2; 1,024-2,048 tokens in buckets of 64) are
# hashed together in one product with the signed rotations on CPU (see _narrow_hash_buckets).
_NARROW_HASH = 16
# The PyTorch path runs as many rounds at once as keep a group's scores and gathered look-back
# keys and values within this many elements (6 MiB in float32; one sequence of width 64 in
# buckets of 64: 4 rounds at 1,024 tokens, 2 at 2,048, 1 from 4,096; sequences and heads count
# as tokens): at short lengths each round's dozens of small operations, not their arithmetic, took
# most of the time (interleaved A/B, 1,024 tokens: 1.13-1.37x with 2-8 hashes; groups of 4 and 8
# rounds timed alike, forward+backward used up to 1.5x more memory with 8 than with 4).
_ROUND_GROUP_ELEMENTS = 3 << 19
# Several blocks (rounds x sequences x heads) of at least this many chunks run as one sequence
# of look-back windows (see _joined_blocks), at the cost of one extra window between blocks. At
# 1,024 tokens (16 chunks a block) joining was 1.01-1.17x faster forward+backward with 1-8 hashes
# or 4 sequences, forward 0.97-1.00x; at 512 tokens (8 chunks) 1.00-1.03x (interleaved A/B).
_JOINED_MIN_CHUNKS = 16


def _mask_scores(dtype: torch.dtype) -> tuple[float, float]:
    return _HALF_SCORES if dtype == torch.float16 else (MASK_SCORE, SELF_SCORE)


def _unit(qk: Tensor, scale: float = 1.0) -> Tensor:
    """Keys: ``qk`` L2-normalised, times ``scale``; a zero row (padding) stays zero in every dtype.

    ``F.normalize``'s default ``eps`` (1e-12) is zero in float16, where ``0 / 0`` would give NaN keys
    whose gradient poisons the backward pass even though the forward pass masks them.
    """
    if not transform_running() and torch.is_grad_enabled() and qk.requires_grad:
        return _UnitRows.apply(qk, scale)
    return _normalized(qk, scale)


def _normalized(qk: Tensor, scale: float = 1.0) -> Tensor:
    keys = F.normalize(qk, dim=-1, eps=max(1e-12, torch.finfo(qk.dtype).tiny))
    return keys if scale == 1.0 else keys * scale


def _unit_parts(qk: Tensor, scale: float) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`_unit`'s keys with what their backward needs: the divisor (the clamped norm over the
    scale; unscaled, the same arithmetic as ``F.normalize``) and where the norm was clamped."""
    eps = max(1e-12, torch.finfo(qk.dtype).tiny)
    norm = torch.linalg.vector_norm(qk, dim=-1, keepdim=True)
    divisor = norm.clamp_min(eps)
    if scale != 1.0:
        divisor = divisor / scale
    return qk / divisor, divisor, norm < eps


def _unit_backward(keys: Tensor, divisor: Tensor, clamped: Tensor, d_keys: Tensor, scale: float) -> Tensor:
    """The gradient for ``qk`` of unit keys ``keys = s qk / |qk|`` (see :func:`_unit_parts`):
    ``(dk - keys (keys . dk) / s^2) * s / |qk|``, and ``dk * s / eps`` where the norm was clamped
    to eps (a constant divisor there)."""
    along = (keys * d_keys).sum(dim=-1, keepdim=True).masked_fill_(clamped, 0.0)
    return torch.addcmul(d_keys, keys, along, value=-1.0 / scale**2).div_(divisor)


class _UnitRows(torch.autograd.Function):
    """:func:`_unit` with a hand-written backward: five operations where autograd's through
    ``F.normalize`` takes about fifteen, each a pass over the whole ``(B, L, d)`` (keys' forward +
    backward at 1,024 x 64: ~255 against ~360 us on CPU)."""

    @staticmethod
    def forward(ctx, qk, scale):  # type: ignore[override]
        keys, divisor, clamped = _unit_parts(qk, scale)
        ctx.save_for_backward(qk, keys, divisor, clamped)
        ctx.scale = scale
        return keys

    @staticmethod
    def backward(ctx, d_keys):  # type: ignore[override]
        qk, keys, divisor, clamped = ctx.saved_tensors
        scale = ctx.scale
        if torch.is_grad_enabled():  # create_graph=True: differentiate a replay
            (d_qk,) = _recomputed_grads(lambda x: (_normalized(x, scale),), (qk,), (True,), (d_keys,))
            return d_qk, None
        return _unit_backward(keys, divisor, clamped, d_keys, scale), None


KERNELS = ("auto", "torch", "triton")


def _triton_module():
    """The Triton kernels' module, or None where triton is not installed."""
    try:
        from hebb_agents.encoders import lsh_triton
    except ImportError:
        return None
    return lsh_triton


def _triton_device(x: Tensor) -> bool:
    """Whether Triton kernels can run on ``x``'s device: CUDA, or CPU under Triton's interpreter."""
    interpreting = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
    return x.device.type == "cuda" or (x.device.type == "cpu" and interpreting)


def _check_kernel(kernel: str) -> None:
    if kernel not in KERNELS:
        raise ValueError(f"unknown kernel {kernel!r}; accepted: {', '.join(KERNELS)}")


def check_padding_mask(mask: Tensor | None, batch: int, length: int) -> None:
    """A ValueError unless ``mask`` is None or a bool tensor of shape ``(batch, length)``."""
    if mask is None:
        return
    if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
        got = f"a {mask.dtype} tensor" if isinstance(mask, Tensor) else type(mask).__name__
        raise ValueError(
            f"key_padding_mask must be a bool tensor (B, L), True where a token is masked; got {got} "
            "(convert it with mask.bool() or mask > 0.5)"
        )
    if tuple(mask.shape) != (batch, length):
        raise ValueError(f"key_padding_mask must be (B, L) = {(batch, length)}, got {tuple(mask.shape)}")


def _functorch_wrapped(*tensors: Tensor | None) -> bool:
    """Whether any of ``tensors`` is seen through a ``torch.func`` transform (``vmap``, ``grad``),
    which the Triton kernels' launches do not support."""
    check = getattr(torch._C._functorch, "is_functorch_wrapped_tensor", None)
    return check is not None and any(t is not None and check(t) for t in tensors)


def transform_running() -> bool:
    """Whether a ``torch.func`` transform (``vmap``, ``grad``, ...) is running on this thread: its
    custom autograd.Functions cannot run then, whichever input (mask, rotations) it batches."""
    peek = getattr(torch._C._functorch, "peek_interpreter_stack", None)
    return peek is not None and peek() is not None


def _draw_outside_transforms(shape: tuple[int, ...], generator: torch.Generator) -> Tensor:
    """``torch.randn(shape, generator=generator)`` (CPU), drawn where no ``torch.func`` transform sees it.

    The transforms' state is per thread, so a draw on a helper thread is an ordinary draw even when
    the caller runs inside ``torch.vmap``; a seeded draw then gives the same rotations whether or
    not ``vmap`` (whose default ``randomness="error"`` refuses random operations) is the first caller.
    """
    if not transform_running():  # draw here, no thread to start
        return torch.randn(shape, generator=generator)
    result: list[Tensor] = []
    errors: list[BaseException] = []

    def draw() -> None:
        try:
            with torch.no_grad():
                result.append(torch.randn(shape, generator=generator))
        except BaseException as err:  # re-raised on the caller's thread
            errors.append(err)

    worker = threading.Thread(target=draw, name="lsh-rotations")
    worker.start()
    worker.join()
    if errors:
        raise errors[0]
    return result[0]


def _use_triton(
    kernel: str, x: Tensor, unsupported: str | None, others: tuple[Tensor | None, ...] = ()
) -> bool:
    """Whether to run the Triton kernels on ``x`` (and ``others``, the call's other tensors):
    ``auto`` uses them where they apply, ``triton`` insists.

    ``unsupported`` says which setting rules them out (None: nothing does).
    """
    _check_kernel(kernel)
    if kernel == "torch":
        return False
    why_not = None
    if not _triton_device(x):
        why_not = f"needs a CUDA tensor (got a {x.device.type} tensor)"
    elif _triton_module() is None:
        why_not = "needs the triton package (pip install triton)"
    elif _functorch_wrapped(x, *others):
        why_not = "does not run under torch.func transforms (vmap, grad)"
    elif unsupported is not None:
        why_not = f"does not support {unsupported}"
    if why_not is not None and kernel == "triton":
        raise ValueError(f"kernel='triton' {why_not}; use kernel='auto' or 'torch'")
    return why_not is None


def _does_not_fit(kernel: str, err: Exception) -> None:
    """A Triton kernel too large for this GPU: ``auto`` goes on with PyTorch, ``triton`` stops."""
    if kernel == "triton":
        raise ValueError(f"kernel='triton': {err}; use kernel='auto' or 'torch'") from err


def _recomputed_grads(
    compute: Callable[..., tuple[Tensor | None, ...]],
    inputs: tuple[Tensor, ...],
    needs_grad: tuple[bool, ...],
    grad_outputs: tuple[Tensor | None, ...],
) -> tuple[Tensor | None, ...]:
    """Gradients of ``compute(*inputs)`` for the inputs that need them, by running it again under
    autograd: in a backward pass with ``create_graph=True`` the result is differentiable again.
    ``compute``'s first results pair with ``grad_outputs`` (any further results are ignored)."""
    create_graph = torch.is_grad_enabled()  # in a backward pass: on only for create_graph=True
    with torch.enable_grad():
        # Aliases, so that an input that is an ancestor of another (qk of its unit keys) gets the
        # gradient of its own uses only, as the Function's result for it must be.
        inputs = tuple(x.view_as(x) for x in inputs)
        wanted = [x for x, need in zip(inputs, needs_grad) if need]
        outputs = compute(*inputs)
        # outputs that do not depend on the wanted inputs (the log-sum-exp when only v needs a
        # gradient) carry no graph and contribute nothing
        pairs = [
            (o, g)
            for o, g in zip(outputs, grad_outputs)
            if o is not None and g is not None and o.requires_grad
        ]
        if not pairs:
            return tuple(None for _ in needs_grad)
        grads = torch.autograd.grad(
            [o for o, _ in pairs],
            wanted,
            [g.to(o.dtype) for o, g in pairs],
            create_graph=create_graph,
            allow_unused=True,
        )
    found = iter(grads)
    return tuple(next(found) if need else None for need in needs_grad)


def full_shared_qk_attention(
    qk: Tensor,
    v: Tensor,
    key_padding_mask: Tensor | None = None,
    causal: bool = False,
    return_lse: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Materialised shared-QK attention over the whole sequence (the exact reference).

    Keys are the L2-normalised ``qk``; scores are scaled by ``d ** -0.5``; a token's own key is
    masked with ``SELF_SCORE``, padded keys and (when ``causal``) later positions with
    ``MASK_SCORE``. Memory is ``O(L^2)``: a test and benchmark baseline, not a layer to train.
    """
    b, length, d = qk.shape
    mask_value, self_value = _mask_scores(qk.dtype)
    keys = _unit(qk)
    scores = torch.einsum("bid,bjd->bij", qk * d**-0.5, keys)  # (B, L, L)
    eye = torch.eye(length, dtype=torch.bool, device=qk.device)
    scores = scores.masked_fill(eye, self_value)
    if causal:
        later = torch.ones(length, length, dtype=torch.bool, device=qk.device).triu_(1)
        scores = scores.masked_fill(later, mask_value)
    if key_padding_mask is not None:
        scores = scores.masked_fill(key_padding_mask[:, None, :], mask_value)
    out = torch.einsum("bij,bjd->bid", torch.softmax(scores, dim=-1), v)
    if return_lse:
        return out, torch.logsumexp(scores, dim=-1)
    return out


def _signed_argmax(rotated: Tensor) -> Tensor:
    """Index of the largest entry of ``[x ; -x]`` along the last axis of ``rotated`` ``(N, K)``.

    CPU ``argmax``/``max`` with indices are several times slower than ``amax``; for wide rows
    the winner is found in two steps: the best group of ``g`` columns from ``amax``/``amin``
    (fast reductions), then the best column inside that group only.
    """
    n, k = rotated.shape
    group = next((g for g in (32, 16, 8, 4) if k % g == 0), None) if k > 64 else None
    if group is None:
        top, arg_top = rotated.max(dim=-1)
        bottom, arg_bottom = rotated.min(dim=-1)
        return torch.where(top >= -bottom, arg_top, arg_bottom + k)
    grouped = rotated.view(n, k // group, group)
    best = torch.maximum(grouped.amax(dim=-1), grouped.amin(dim=-1).neg_())  # (N, K/g)
    which = best.argmax(dim=-1)  # (N,)
    inside = grouped.gather(1, which[:, None, None].expand(n, 1, group)).squeeze(1)  # (N, g)
    col = inside.abs().argmax(dim=-1)
    value = inside.gather(1, col[:, None]).squeeze(1)
    index = which * group + col
    return torch.where(value >= 0, index, index + k)


def _narrow_hash_buckets(vectors: Tensor, rotations: Tensor) -> Tensor:
    """:func:`hash_buckets` on CPU for few buckets: every round in one product with the signed
    rotations ``[R ; -R]``, whose argmax over each round's ``n_buckets`` columns is the bucket.

    One product and one reduction per block of tokens, where a product per round and a max, a min
    and a choice between them cost more small calls than the twice wider product (1.1-2x faster
    hashing at 1,024-2,048 tokens with 1-8 rounds; at 16,384 tokens and beyond, 1.3-2.8x slower).
    Ties go to the first column, as they do in :func:`_signed_argmax`.
    """
    b, length, d = vectors.shape
    _, n_hashes, half = rotations.shape
    signed = torch.cat([rotations, -rotations], dim=2).reshape(d, n_hashes * 2 * half)
    block = max(1, _HASH_BLOCK_ELEMENTS // max(1, 2 * n_hashes * half * b))
    parts = []
    with torch.no_grad():
        for start in range(0, length, block):
            chunk = vectors if block >= length else vectors[:, start : start + block]
            rotated = (chunk @ signed).view(b, chunk.shape[1], n_hashes, 2 * half)
            parts.append(rotated.argmax(dim=-1))
    return (torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]).transpose(1, 2)


class _BucketTape(threading.local):
    """Bucket ids of the LSH calls inside a reversible block: recorded by its forward pass and
    handed back, in call order, when its backward pass recomputes the block (see :func:`bucket_tape`)."""

    def __init__(self) -> None:
        self.record: list[Tensor] | None = None
        self.replay: list[Tensor] | None = None


_TAPE = _BucketTape()


@contextlib.contextmanager
def bucket_tape(record: list[Tensor] | None = None, replay: list[Tensor] | None = None) -> Iterator[None]:
    """Inside the body, LSH attention takes its bucket ids ``(B, n_hashes, L)`` from ``replay`` (in
    call order) instead of hashing, and appends the ids it uses to ``record``.

    A reversible stack's backward pass recomputes each block from inputs rebuilt as ``y - F(x)``,
    which differ from the forward pass's by rounding; a token whose two largest rotated values are
    that close would change bucket, attend elsewhere and corrupt the rebuilt activations below it.
    Replaying the forward pass's bucket ids makes the recomputation attend exactly as it did.

    Contexts nest: a ``record`` context leaves an enclosing replay running (a reversible stack
    inside another one's recomputed block records the ids it is replayed), and a ``replay`` context
    records nothing; with neither, nothing changes.
    """
    saved = (_TAPE.record, _TAPE.replay)
    if replay is not None:
        _TAPE.record, _TAPE.replay = None, list(replay)
    elif record is not None:
        _TAPE.record = record
    try:
        yield
    finally:
        _TAPE.record, _TAPE.replay = saved


def _taped_buckets(vectors: Tensor, rotations: Tensor, kernel: str) -> Tensor:
    """:func:`hash_buckets`, or the ids a :func:`bucket_tape` replays (and records)."""
    if _TAPE.replay is not None:
        if not _TAPE.replay:
            raise RuntimeError("the recomputed block made more LSH attention calls than its forward pass")
        buckets = _TAPE.replay.pop(0).long()
        expected = (vectors.shape[0], rotations.shape[1], vectors.shape[1])
        if tuple(buckets.shape) != expected:
            raise RuntimeError(f"replayed bucket ids have shape {tuple(buckets.shape)}, expected {expected}")
    else:
        buckets = hash_buckets(vectors, rotations, kernel=kernel)
    if _TAPE.record is not None:
        _TAPE.record.append(buckets.to(torch.int32))  # ids < n_buckets: half the bytes of int64
    return buckets


def hash_buckets(vectors: Tensor, rotations: Tensor, kernel: str = "auto") -> Tensor:
    """Angular LSH buckets of ``vectors`` ``(B, L, d)`` for every round of ``rotations``.

    ``rotations`` is ``(d, n_hashes, n_buckets // 2)``; returns ``(B, n_hashes, L)`` int64 bucket
    ids in ``[0, n_buckets)``: the argmax over ``[xR ; -xR]``, computed over blocks of tokens so
    that memory stays ``O(L)`` (for many buckets without building the concatenation, for few as
    one product with ``[R ; -R]``, see :func:`_narrow_hash_buckets`). On CUDA (``kernel``
    ``auto`` or ``triton``) one fused Triton kernel keeps the products out of memory (``auto``
    goes on with PyTorch operations where no tile of it fits the GPU).
    """
    triton_dtype = vectors.dtype in (torch.float32, torch.float16, torch.bfloat16)
    if _use_triton(kernel, vectors, None if triton_dtype else f"dtype {vectors.dtype}", (rotations,)):
        triton_kernels = _triton_module()
        try:
            with torch.no_grad():
                return triton_kernels.hash_buckets_triton(vectors, rotations)
        except triton_kernels.KernelDoesNotFit as err:
            _does_not_fit(kernel, err)
    b, length, d = vectors.shape
    _, n_hashes, half = rotations.shape
    rotations = rotations.to(vectors.dtype)
    if half <= _NARROW_HASH and vectors.device.type == "cpu":
        return _narrow_hash_buckets(vectors, rotations)
    # Blocks 64x larger on accelerators, where many small matmuls would cost launch overhead.
    budget = _HASH_BLOCK_ELEMENTS * (64 if vectors.device.type != "cpu" else 1)
    block = max(1, budget // max(1, half * b))
    rounds = []
    # Lists and cat rather than writes into a preallocated tensor: works under torch.vmap.
    with torch.no_grad():
        for h in range(n_hashes):
            parts = []
            for start in range(0, length, block):
                stop = min(length, start + block)
                rotated = vectors[:, start:stop] @ rotations[:, h]  # (B, T, half)
                parts.append(_signed_argmax(rotated.reshape(-1, half)).view(b, stop - start))
            rounds.append(torch.cat(parts, dim=1))
    return torch.stack(rounds, dim=1)


class LSHAttention(nn.Module):
    """LSH attention on already-projected shared query/key vectors and values.

    Args:
        bucket_size: chunk length of the sorted sequence (each query sees at most
            ``2 * bucket_size`` keys per round); also sets ``n_buckets = L_padded / bucket_size``
            (rounded up to an even number, at least 2) unless ``n_buckets`` is given.
        n_hashes: number of hash rounds (>= 1); more rounds, closer to full attention.
        n_buckets: fixed even number of buckets, or None to follow the sequence length.
        causal: a token attends only to tokens at the same or earlier original positions. This
            masks later tokens out of the attention weights; it does not make an early output
            independent of later tokens: later tokens take places in the sorted sequence and so
            move the chunk boundaries, which changes which earlier keys an early token sees (as
            in Reformer). An output at position t can change when a token after t changes.
        dropout: attention-weight dropout probability in [0, 1).
        allow_duplicate_attention: if False, a (query, key) pair that several rounds put
            together counts once (its score gets ``-log(count)`` in each round).
        seed: if given, every forward uses the same rotations, drawn from this seed;
            if None, rotations are re-drawn on every forward from the global RNG, in ``eval()``
            too: the output is then random, not a function of the input alone. Set a seed for
            deterministic outputs. The seed is a constructor argument, not part of the
            ``state_dict``: a module rebuilt to load a state dict needs the same seed.
        kernel: ``auto`` (fused Triton kernels on CUDA where they apply, see
            :func:`lsh_attention`), ``torch`` or ``triton``.

    ``forward`` takes ``rotations`` (explicit, shape ``(d, n_hashes, n_buckets // 2)``) or a
    ``generator`` (a CPU ``torch.Generator``) to override the module's choice for one call.
    Seeded rotations and those from a generator are drawn on the CPU and moved to the input's
    device, so a seed gives the same rotations on every device; unseeded ones come from the
    input device's global RNG.

    ``torch.func`` transforms (``grad``, ``vmap``, ``vmap(grad(...))``) run on PyTorch operations.
    Seeded rotations and those from a ``generator`` are drawn outside the transform, so
    ``torch.vmap`` needs no ``randomness`` setting for them. Unseeded rotations (and attention
    dropout in training) are random operations: under ``vmap`` pass ``randomness="same"`` (one
    draw for the whole batch, like an unbatched call) or ``"different"``.
    """

    def __init__(
        self,
        bucket_size: int = 64,
        n_hashes: int = 4,
        n_buckets: int | None = None,
        causal: bool = False,
        dropout: float = 0.0,
        allow_duplicate_attention: bool = True,
        seed: int | None = None,
        kernel: str = "auto",
    ) -> None:
        super().__init__()
        _check_kernel(kernel)
        bucket_size = check_int("bucket_size", bucket_size)
        n_hashes = check_int("n_hashes", n_hashes)
        if n_buckets is not None:
            refused = ValueError(f"n_buckets must be an even int >= 2 or None, got {n_buckets!r}")
            try:
                n_buckets = check_int("n_buckets", n_buckets, minimum=2)
            except ValueError:
                raise refused from None
            if n_buckets % 2:
                raise refused
        seed = check_optional_int("seed", seed, minimum=None)
        self.bucket_size = bucket_size
        self.n_hashes = n_hashes
        self.fixed_n_buckets = n_buckets
        self.causal = check_bool("causal", causal)
        self.dropout = check_probability("dropout", dropout)
        self.allow_duplicate_attention = check_bool("allow_duplicate_attention", allow_duplicate_attention)
        self.seed = seed
        self.kernel = kernel
        self._seeded_rotations: tuple[tuple[int, ...], Tensor] | None = None  # (seed, shape), draw

    def extra_repr(self) -> str:
        return (
            f"bucket_size={self.bucket_size}, n_hashes={self.n_hashes}, causal={self.causal}, "
            f"dropout={self.dropout}, allow_duplicate_attention={self.allow_duplicate_attention}, "
            f"seed={self.seed}, kernel={self.kernel!r}"
        )

    def num_buckets(self, length: int) -> int:
        """Number of hash buckets used for a sequence of ``length`` tokens."""
        if self.fixed_n_buckets is not None:
            return self.fixed_n_buckets
        n_chunks = -(-length // self.bucket_size)
        return max(2, n_chunks + n_chunks % 2)

    def draw_rotations(
        self,
        dim: int,
        length: int,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> Tensor:
        """Random rotations ``(dim, n_hashes, n_buckets // 2)`` for a sequence of ``length``.

        Drawn on the CPU from ``generator``, else from the module's seed (the same rotations on
        every device), else from the global RNG of ``device`` (default CPU; a reversible block
        saves and restores the CPU and CUDA RNG states, so it replays them). The first two are
        drawn outside any ``torch.func`` transform (see :func:`_draw_outside_transforms`).
        """
        shape = (dim, self.n_hashes, self.num_buckets(length) // 2)
        if generator is None and self.seed is not None:
            # the same draw every time: kept, not redrawn at every step of a seeded policy encoder
            key = (self.seed, *shape)
            if self._seeded_rotations is None or self._seeded_rotations[0] != key:
                drawn = _draw_outside_transforms(shape, torch.Generator().manual_seed(self.seed))
                self._seeded_rotations = (key, drawn)
            return self._seeded_rotations[1]
        if generator is not None:
            return _draw_outside_transforms(shape, generator)
        return torch.randn(shape, device=device)

    def forward(
        self,
        qk: Tensor,
        v: Tensor,
        key_padding_mask: Tensor | None = None,
        rotations: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Attend ``qk`` ``(B, L, d)`` over itself; returns ``(B, L, dv)``.

        ``key_padding_mask``: bool ``(B, L)``, True where a token must not be attended to.
        """
        if qk.dim() != 3 or v.dim() != 3 or qk.shape[:2] != v.shape[:2]:
            raise ValueError(
                f"expected qk (B, L, d) and v (B, L, dv), got {tuple(qk.shape)} and {tuple(v.shape)}"
            )
        b, length, d = qk.shape
        if b == 0 or length == 0:
            raise ValueError(
                f"LSHAttention needs at least one sequence of one token, got qk {tuple(qk.shape)}"
            )
        if generator is not None and not isinstance(generator, torch.Generator):
            raise ValueError(f"generator must be a torch.Generator or None, got {generator!r}")
        if rotations is None:
            # drawn where they are used: a CPU draw and copy cost ~3 ms per call at 262K tokens
            rotations = self.draw_rotations(d, length, generator, device=qk.device)
        expected = (d, self.n_hashes, self.num_buckets(length) // 2)
        if tuple(rotations.shape) != expected:
            raise ValueError(f"rotations must have shape {expected}, got {tuple(rotations.shape)}")
        out, _ = lsh_attention(
            qk,
            v,
            rotations.to(qk.device),
            bucket_size=self.bucket_size,
            causal=self.causal,
            key_padding_mask=key_padding_mask,
            dropout=self.dropout if self.training else 0.0,
            allow_duplicate_attention=self.allow_duplicate_attention,
            return_lse=False,
            kernel=self.kernel,
        )
        return out


def lsh_attention(
    qk: Tensor,
    v: Tensor,
    rotations: Tensor,
    bucket_size: int,
    causal: bool = False,
    key_padding_mask: Tensor | None = None,
    dropout: float = 0.0,
    allow_duplicate_attention: bool = True,
    return_lse: bool = True,
    kernel: str = "auto",
) -> tuple[Tensor, Tensor | None]:
    """Functional LSH attention; returns the output ``(B, L, dv)`` and its log-sum-exp ``(B, L)``.

    ``rotations`` ``(d, n_hashes, n_buckets // 2)`` fixes the hashes (see :class:`LSHAttention`).
    With ``return_lse=False`` the log-sum-exp is None, and a single round skips computing it.
    ``kernel``: ``torch`` (PyTorch operations), ``triton`` (the fused kernels of
    :mod:`hebb_agents.encoders.lsh_triton`; an error where they do not apply) or ``auto`` (Triton
    on CUDA where it applies: no attention dropout, no de-duplication, bucket size 16-128 and a
    power of two, head width at most 256, float32/16-bit inputs, not under ``torch.func``
    transforms, and kernels that fit the GPU's shared memory and registers). Both paths are
    twice differentiable. Under ``torch.func`` transforms (``grad``, ``vmap``, ``jacrev``, ...) the
    PyTorch path differentiates with autograd's own rules instead of its hand-written backward,
    which those transforms cannot run.
    """
    b, length, d = qk.shape
    if b == 0 or length == 0:
        raise ValueError(f"LSH attention needs at least one sequence of one token, got qk {tuple(qk.shape)}")
    check_padding_mask(key_padding_mask, b, length)
    dv = v.shape[-1]
    n_hashes = rotations.shape[1]
    c = bucket_size
    n_chunks = -(-length // c)
    padded = n_chunks * c
    n_buckets = 2 * rotations.shape[2]
    device = qk.device

    # Pad to whole chunks; padded tokens get bucket id n_buckets so that they sort behind every
    # real token, and are masked as keys; their outputs are cut off at the end.
    pad = padded - length
    if pad:
        qk = F.pad(qk, (0, 0, 0, pad))
        v = F.pad(v, (0, 0, 0, pad))
    key_masked = None  # (B, Lp) True: padded or masked token
    if key_padding_mask is not None or pad:
        if key_padding_mask is None:
            key_padding_mask = torch.zeros(b, length, dtype=torch.bool, device=device)
        key_masked = F.pad(key_padding_mask, (0, pad), value=True)

    # Out-of-place construction throughout: the function also runs under torch.vmap.
    dedup = not allow_duplicate_attention and n_hashes > 1
    unsupported = _fused_unsupported(qk.dtype, c, d, dv, dropout, dedup)
    fused = _use_triton(kernel, qk, unsupported, (v, rotations, key_masked))
    buckets = _taped_buckets((qk[:, :length] if pad else qk).detach(), rotations, kernel)  # (B, H, L)
    if pad:
        buckets = F.pad(buckets, (0, pad), value=n_buckets)
    if key_masked is not None:
        # Masked tokens leave the hashing too, so their content cannot move any other token
        # to another chunk: their outputs are meaningless, everyone else's are untouched.
        buckets = buckets.masked_fill(key_masked[:, None, :], n_buckets)
    positions = torch.arange(padded, device=device)
    # Sorting by bucket * padded + position sorts by (bucket, position) in one pass.
    order = torch.sort(positions.add(buckets, alpha=padded)).indices  # (B, H, Lp): token at each slot
    del buckets
    slot_of = None if fused else _slots_of(order)
    chunk_of = None
    if dedup and n_chunks > 2:
        chunk_of = slot_of // c  # (B, H, Lp): chunk holding token t in round h

    needs_grad = torch.is_grad_enabled() and (qk.requires_grad or v.requires_grad)
    # torch.func transforms cannot run the custom autograd.Functions: plain differentiable operations
    transformed = transform_running()

    if fused:
        triton_kernels = _triton_module()
        keys = _unit(qk)  # the kernels scale the scores themselves

        # where the backward kernel does not fit, and for double backward
        reference = functools.partial(
            _all_rounds_torch, order=order, key_masked=key_masked, causal=causal, bucket_size=c
        )
        masked_rows = key_masked.reshape(-1).contiguous() if key_masked is not None else None
        try:
            outs, lses = triton_kernels.FusedRounds.apply(
                qk.reshape(b * padded, d).contiguous(),
                keys.reshape(b * padded, d).contiguous(),
                v.reshape(b * padded, dv).contiguous(),
                order,
                masked_rows,
                causal,
                c,
                functools.partial(_recomputed_grads, reference),
                kernel == "triton",
            )  # every round at once: (H, B * Lp, dv) and (H, B * Lp) float32
        except triton_kernels.KernelDoesNotFit as err:
            _does_not_fit(kernel, err)
            fused = False
    if fused:
        outs = outs.view(n_hashes, b, padded, dv)[:, :, :length]
        lses = lses.view(n_hashes, b, padded)[:, :, :length]
        if n_hashes == 1:
            return outs[0], (lses[0].to(qk.dtype) if return_lse else None)
        # the softmax over rounds of their log-sum-exp (float32; it subtracts the largest), summed
        # a round at a time: one float32 output's worth of temporaries, not one per round
        weights = torch.softmax(lses, dim=0)[..., None]
        out = sum(o * w for o, w in zip(outs.unbind(0), weights.unbind(0))).to(qk.dtype)
        return out, (torch.logsumexp(lses, dim=0).to(qk.dtype) if return_lse else None)
    if slot_of is None:  # the fused kernels did not fit
        slot_of = _slots_of(order)

    # The PyTorch path's keys carry the scores' d ** -0.5, so queries are used as they are.
    scale = d**-0.5
    group = 1 if dedup else _rounds_per_group(b * padded, c, d, dv, look_back=n_chunks > 1)
    groups = [range(first, min(n_hashes, first + group)) for first in range(0, n_hashes, group)]
    unit = key_scale = keys = None
    if not transformed and all(_joins(b * len(rounds), n_chunks, dedup, transformed) for rounds in groups):
        # queries and keys from one gather of qk's sorted rows (the keys made there, and their
        # gradient folded into qk's there)
        key_scale = scale
    elif needs_grad and not transformed and qk.requires_grad:
        # the attention's backward folds the keys' gradient into qk's: one autograd node
        with torch.no_grad():
            keys, divisor, clamped = _unit_parts(qk, scale)
        unit = (divisor, clamped, scale)
    else:
        keys = _unit(qk, scale)
    out, lse = _torch_rounds(
        qk, keys, v, order, slot_of, chunk_of, key_masked, groups, c, causal,
        dropout, dedup, return_lse, needs_grad, transformed, combine=True, unit=unit, key_scale=key_scale,
    )  # fmt: skip
    if pad:
        out, lse = out[:, :length], (None if lse is None else lse[:, :length])
    return out, lse


def _rounds_per_group(rows: int, bucket_size: int, dim: int, dim_v: int, look_back: bool = True) -> int:
    """How many rounds the PyTorch path runs at once for ``rows`` padded tokens (all sequences):
    as many as keep their scores and gathered look-back keys and values within
    ``_ROUND_GROUP_ELEMENTS``, at least one."""
    chunks_seen = 2 if look_back else 1  # a chunk and the one before it
    per_round = rows * chunks_seen * (bucket_size + dim + dim_v)
    return max(1, _ROUND_GROUP_ELEMENTS // per_round)


def _all_rounds_torch(
    flat_q: Tensor,
    flat_k: Tensor,
    flat_v: Tensor,
    order: Tensor,
    key_masked: Tensor | None,
    causal: bool,
    bucket_size: int,
) -> tuple[Tensor, Tensor]:
    """Every round with PyTorch operations, laid out as the fused kernels return them: outputs
    ``(H, N, dv)`` and float32 log-sum-exp ``(H, N)`` (their backward pass's fallback). Takes the
    fused kernels' unit keys, which the PyTorch path wants scaled by ``d ** -0.5``."""
    b, n_hashes, padded = order.shape
    slots = _slots_of(order)
    flat_k = flat_k * flat_k.shape[-1] ** -0.5
    outs, lses = [], []
    for h in range(n_hashes):  # a round at a time: the fallback keeps one round's scores
        out_h, lse_h = _torch_rounds(
            flat_q, flat_k, flat_v, order, slots, None, key_masked, [range(h, h + 1)], bucket_size, causal,
            0.0, False, True, True, transform_running(),
        )  # fmt: skip
        outs.append(out_h.reshape(b * padded, -1))
        lses.append(lse_h.reshape(b * padded).float())
    return torch.stack(outs), torch.stack(lses)


def _slots_of(order: Tensor) -> Tensor:
    """The inverse of the sort permutation ``order`` ``(B, H, Lp)``: the slot of each token (a
    scatter, not a second sort)."""
    positions = torch.arange(order.shape[-1], device=order.device).expand_as(order)
    return torch.zeros_like(order).scatter(-1, order, positions)


def _fused_unsupported(
    dtype: torch.dtype, bucket_size: int, dim: int, dim_v: int, dropout: float, dedup: bool
) -> str | None:
    """Which setting keeps the fused Triton kernels from running (None: they apply)."""
    if dropout > 0.0:
        return "attention dropout"
    if dedup:
        return "de-duplication across rounds (allow_duplicate_attention=False)"
    if dtype not in (torch.float32, torch.float16, torch.bfloat16):
        return f"dtype {dtype} (accepted: float32, float16, bfloat16)"
    if bucket_size not in (16, 32, 64, 128):
        return f"bucket_size {bucket_size} (accepted: 16, 32, 64, 128)"
    if max(dim, dim_v) > 256:
        return f"head width {max(dim, dim_v)} (accepted: at most 256)"
    return None


def _torch_rounds(
    qk: Tensor,
    keys: Tensor,
    v: Tensor,
    order: Tensor,
    slot_of: Tensor,
    chunk_of: Tensor | None,
    key_masked: Tensor | None,
    groups: list[range],
    c: int,
    causal: bool,
    dropout: float,
    dedup: bool,
    with_lse: bool,
    needs_grad: bool,
    transformed: bool = False,
    combine: bool = False,
    unit: tuple[Tensor, Tensor, float] | None = None,
    key_scale: float | None = None,
) -> tuple[Tensor, Tensor | None]:
    """Rounds with PyTorch operations on ``qk``, ``keys`` (scaled by ``d ** -0.5``) and ``v``,
    ``(B, Lp, ...)`` or flat ``(B * Lp, ...)``, a group of consecutive rounds at a time (``groups``).
    With ``combine``, every round combined by the softmax over rounds of their log-sum-exp:
    ``(B, Lp, dv)`` and ``(B, Lp)``; else (one group of G rounds) each round's output
    ``(G, B, Lp, dv)`` and log-sum-exp ``(G, B, Lp)``; both in token order, the log-sum-exp None
    unless ``with_lse``. ``unit`` (divisor, clamped, scale; see :func:`_unit_parts`): ``keys`` were
    made from ``qk`` outside autograd, and the keys' gradient goes to ``qk``. Without ``keys``
    (every group a single or joined block), each group makes them from its gather of ``qk``'s
    rows, normalised and times ``key_scale``.
    ``transformed`` (inputs seen through ``torch.func`` transforms): no custom autograd.Function,
    only operations that autograd and the transforms differentiate themselves."""
    assert combine or len(groups) == 1
    b, _, padded = order.shape
    layouts = (  # built a group at a time
        _group_layout(order, slot_of, chunk_of, key_masked, rounds, c, causal, dedup, transformed, qk.dtype)
        for rounds in groups
    )
    n_rounds = sum(len(rounds) for rounds in groups)
    args = (layouts, n_rounds, dropout, (b, padded), with_lse, combine)
    if transformed:  # keep_probs: nothing autograd needs is overwritten in place
        out, lse = _attend_groups(qk, keys, v, *args, keep_probs=True, key_scale=key_scale)
    elif needs_grad:
        out, lse = _ChunkedAttention.apply(qk, keys, v, *args, unit, key_scale)
    else:
        out, lse = _attend_groups(qk, keys, v, *args, key_scale=key_scale)
    return out, lse


def _joins(blocks: int, n_chunks: int, dedup: bool, transformed: bool) -> bool:
    """Whether a group's look-back windows are views of one gather (see :func:`_joined_blocks`):
    a single block always, several when they are long enough. (A single chunk's copy would be
    its own look-back.)"""
    return n_chunks > 1 and (
        blocks == 1 or (n_chunks >= _JOINED_MIN_CHUNKS and not dedup and not transformed)
    )


def _group_layout(
    order: Tensor,
    slot_of: Tensor,
    chunk_of: Tensor | None,
    key_masked: Tensor | None,
    rounds: range,
    c: int,
    causal: bool,
    dedup: bool,
    transformed: bool,
    dtype: torch.dtype,
) -> tuple[_SortedRows, _ChunkMask]:
    """Where a group of consecutive ``rounds`` finds its sorted rows, and its score masks.

    The G rounds' sorted sequences are stacked round-major, ``(G * B, n, c)``, so every operation
    runs once for the group; blocks of many chunks run joined, ``(1, G * B * (n + 1) - 1, c)``
    (see :func:`_joined_blocks`). De-duplication takes one round at a time."""
    b, n_hashes, padded = order.shape
    g = len(rounds)
    assert not dedup or g == 1
    n_chunks = padded // c
    device = order.device
    blocks = g * b
    if b == 1 and g == n_hashes:  # one sequence, every round: already round-major
        q_pos, slots = order.view(blocks, n_chunks, c), slot_of.view(blocks, padded)
    else:
        q_pos = order[:, rounds.start : rounds.stop].transpose(0, 1).reshape(blocks, n_chunks, c)
        slots = slot_of[:, rounds.start : rounds.stop].transpose(0, 1).reshape(blocks, padded)
    # Flat input row of each (round, sequence): the sequence's offset (none for one sequence).
    row_offset = None
    if b > 1:
        row_offset = (torch.arange(b, device=device) * padded).expand(g, b).reshape(blocks, 1, 1)
    joined = None
    if _joins(blocks, n_chunks, dedup, transformed):
        q_pos, k_pos, k_masked, q_idx, kv_idx, back, unsorted, joined = _joined_blocks(
            q_pos, row_offset, slots, key_masked
        )
        shape = (1, q_pos.shape[1], c)
    else:  # whole windows: each chunk's keys gathered behind the previous chunk's
        shape = (blocks, n_chunks, c)
        q_idx = (q_pos if row_offset is None else q_pos + row_offset).reshape(-1)  # input row of each slot
        # Undo the sort: token t of round h sits at slot slot_of[., h, t] of that round's block;
        # sorted slot j of a block holds token q_pos[j] (the inverse permutation).
        back, unsorted = slots.reshape(-1), q_pos.reshape(-1)
        if blocks > 1:
            slot_offset = (torch.arange(blocks, device=device) * padded)[:, None]  # (G*B, 1)
            back = (slots + slot_offset).reshape(-1)
            unsorted = (q_pos + slot_offset[:, :, None]).reshape(-1)
        k_pos = _look_back(q_pos)  # (G*B, n, K): token index of each key slot
        kv_idx = (k_pos if row_offset is None else k_pos + row_offset).reshape(-1)
        k_masked = None
        if key_masked is not None:
            k_masked = key_masked.reshape(-1).index_select(0, kv_idx).view(blocks, n_chunks, 1, -1)
    log_count = None
    if dedup:
        if chunk_of is not None:
            log_count = _log_shared_rounds(chunk_of, q_pos, k_pos, n_chunks, dtype)
        else:  # every round's window is the whole sequence
            log_count = torch.full((), math.log(n_hashes), device=device, dtype=dtype)
    mask = _ChunkMask(q_pos, k_pos, k_masked, causal, log_count)
    rows = _SortedRows(q_idx, kv_idx, back, unsorted, shape, g, joined)
    return rows, mask


def _joined_blocks(
    q_pos: Tensor, row_offset: Tensor | None, slots: Tensor, key_masked: Tensor | None
) -> tuple[Tensor, Tensor, Tensor | None, Tensor, Tensor, Tensor, Tensor, tuple[Tensor, Tensor] | None]:
    """One or several blocks' chunks as one sequence of look-back windows, without a second copy
    of any key or value.

    Each block's sorted slots follow a copy of its last chunk, and the blocks follow each other:
    ``(n + 1)`` chunks a block, ``B * (n + 1)`` in all. Window ``w`` is chunks ``w`` and ``w + 1``
    (look-back, then own) and its queries are chunk ``w + 1``: every block's windows are the
    chunks' true windows, and between two blocks lies one extra window (the last chunk of one
    block before the copy chunk of the next), computed, never read, and given no gradient.
    Returns the window layout's query and key token indices ``(1, W, c)`` and ``(1, W, 2c)``,
    key mask ``(1, W, 1, 2c)`` (or None), the query and key/value input rows, the window slot of
    each (block, token), the output row of each window slot (``B * Lp``, a zero row, for the
    extra windows), and the extra and last windows of the blocks (see :meth:`_SortedRows.scatter`;
    None for a single block, which has no extra window).
    """
    blocks, n_chunks, c = q_pos.shape
    padded = n_chunks * c
    stride = (n_chunks + 1) * c  # slots a block, its copy chunk included
    device = q_pos.device
    buffer_pos = torch.cat([q_pos[:, -1:], q_pos], dim=1).reshape(-1)  # token index of each slot
    kv_idx = buffer_pos
    if row_offset is not None:  # (None: one sequence, each block's rows are its tokens)
        kv_idx = (buffer_pos.view(blocks, stride) + row_offset.view(blocks, 1)).reshape(-1)
    windows = blocks * (n_chunks + 1) - 1
    query_pos = buffer_pos[c:].view(1, windows, c)
    key_pos = buffer_pos.as_strided((1, windows, 2 * c), (0, c, 1))
    k_masked = None
    if key_masked is not None:
        gathered = key_masked.reshape(-1).index_select(0, kv_idx)
        k_masked = gathered.as_strided((1, windows, 1, 2 * c), (0, c, 0, 1))
    if blocks == 1:  # its windows' queries are its sorted tokens (no in-place write: torch.func)
        return query_pos, key_pos, k_masked, kv_idx[c:], kv_idx, slots.reshape(-1), buffer_pos[c:], None
    # window slot of each (block, token): slot s of block i is window i * (n + 1) + s // c
    first = (torch.arange(blocks, device=device) * stride)[:, None]  # (B, 1) first slot of a block
    back = (slots + first).reshape(-1)
    unsorted = torch.full((windows * c,), blocks * padded, device=device, dtype=back.dtype)
    unsorted[back] = torch.arange(blocks * padded, device=device)
    block_windows = torch.arange(blocks, device=device) * (n_chunks + 1)
    extra, last = block_windows[1:] - 1, block_windows + n_chunks - 1
    return query_pos, key_pos, k_masked, kv_idx[c:], kv_idx, back, unsorted, (extra, last)


def _look_back(x: Tensor) -> Tensor:
    """Keys of each chunk: the previous one (the first sees the last), then the chunk itself.

    ``(B, n, c, ...)`` -> ``(B, n, 2c, ...)``; a single chunk sees only itself.
    """
    return torch.cat([x.roll(1, dims=1), x], dim=2) if x.shape[1] > 1 else x


class _ChunkMask:
    """What decides a group of rounds' score masks: slot token indices and the static masks.

    Kept window-major, like the scores ``(W, c, K)`` (``W``: blocks x chunks, or joined windows).
    """

    def __init__(
        self,
        q_pos: Tensor,  # (B, n, c) token index of each query slot
        k_pos: Tensor,  # (B, n, K) token index of each key slot
        k_masked: Tensor | None,  # (B, n, 1, K) padded / masked keys
        causal: bool,
        log_count: Tensor | None,  # (B, n, c, K) or scalar: log of rounds sharing each pair
    ) -> None:
        c, keys = q_pos.shape[-1], k_pos.shape[-1]
        self.q_pos, self.k_pos = q_pos.reshape(-1, c), k_pos.reshape(-1, keys)  # (W, c), (W, K)
        self.k_masked = None if k_masked is None else k_masked.reshape(-1, 1, keys)
        if log_count is not None and log_count.dim() > 0:
            log_count = log_count.reshape(-1, c, keys)
        self.causal, self.log_count = causal, log_count

    def forbidden(self) -> Tensor | None:
        """(W, c, K) bool of keys a query may not attend to, or None."""
        bad = None
        if self.causal:
            bad = self.k_pos[:, None, :] > self.q_pos[:, :, None]
        if self.k_masked is not None:
            bad = self.k_masked if bad is None else bad | self.k_masked
        return bad

    def scores(self, sq: Tensor, sk: Tensor) -> Tensor:
        """Masked scores ``(W, c, K)`` of sorted queries ``sq`` and their (scaled) keys ``sk``."""
        mask_value, self_value = _mask_scores(sq.dtype)
        scores = torch.bmm(sq, sk.mT)
        c = sq.shape[1]
        # A token's own key sits on the diagonal of the current-chunk block, the last c keys.
        scores[..., -c:].diagonal(dim1=-2, dim2=-1).fill_(self_value)
        bad = self.forbidden()
        if bad is not None:
            scores.masked_fill_(bad, mask_value)
        if self.log_count is not None:
            scores -= self.log_count
        return scores


class _SortedRows:
    """Where a group of rounds' sorted queries and look-back keys come from in the flat rows.

    The rows of several rounds stack round-major (``rounds`` blocks of the sequences' slots).
    With a single block, or several joined into one (:func:`_joined_blocks`; ``shape`` is then
    ``(1, windows, c)``), ``kv_idx`` lists every slot once, behind a copy of the block's last
    chunk, and the look-back windows are overlapping views of that gather, which a batched matmul
    takes as they are. Otherwise (several blocks of few chunks, de-duplication, ``torch.func``
    transforms) ``kv_idx`` lists each window whole, the previous chunk's tokens, then the chunk's
    own. Each gather is its own call, so that a sorted copy can be dropped as soon as it has been
    used; a single or joined block's queries are its key rows from the ``c``-th on, so queries and
    keys can also come from one gather (:meth:`shared_keys`). ``back`` holds the sorted slot of
    each (round, sequence, token) and ``unsorted`` the token row of each sorted slot (one past the
    last row for the joined layout's extra windows): the two directions of the sort, both gathers.
    """

    def __init__(
        self,
        q_idx: Tensor,
        kv_idx: Tensor,
        back: Tensor,
        unsorted: Tensor,
        shape: tuple[int, int, int],
        rounds: int = 1,
        joined: tuple[Tensor, Tensor] | None = None,
    ) -> None:
        self.q_idx, self.kv_idx, self.joined = q_idx, kv_idx, joined
        self.back, self.unsorted = back, unsorted
        self.b, self.n, self.c = shape  # b: rounds * sequences (1 when joined)
        self.rounds = rounds
        self._windows = self.n > 1 and kv_idx.numel() == (self.n + 1) * self.c
        self._back_in_look_back: Tensor | None = None  # ``back`` in the (n, 2c) look-back layout

    def queries(self, flat_qk: Tensor) -> Tensor:
        """Sorted queries ``(W, c, d)``."""
        return flat_qk.index_select(0, self.q_idx).view(self.b * self.n, self.c, -1)

    def look_back(self, flat: Tensor) -> Tensor:
        """Each chunk's keys (or values) with its look-back, ``(W, K, ...)``; with a single or
        joined block a view whose windows overlap (each chunk's rows are also the next chunk's
        look-back)."""
        gathered = flat.index_select(0, self.kv_idx)
        if not self._windows:
            return gathered.view(self.b * self.n, -1, gathered.shape[-1])
        return self._overlapping(gathered)

    def _overlapping(self, gathered: Tensor) -> Tensor:
        """The look-back windows ``(W, 2c, d)`` of a single or joined block's gathered rows."""
        width = gathered.shape[-1]
        return gathered.as_strided((self.n, 2 * self.c, width), (self.c * width, width, 1))

    def shared_keys(self, flat_qk: Tensor, scale: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Sorted queries ``(W, c, d)`` and look-back keys ``(W, 2c, d)`` of a single or joined
        block, whose queries are its gathered rows from the ``c``-th on, from one gather of
        ``flat_qk``: the keys are the gathered rows L2-normalised times ``scale``. Also returns
        the keys' divisors and clamped rows (see :func:`_unit_parts`), ``(rows, 1)`` over the
        gathered rows."""
        gathered = flat_qk.index_select(0, self.kv_idx)
        keys, divisor, clamped = _unit_parts(gathered, scale)
        return self.own(gathered), self._overlapping(keys), divisor, clamped

    def shared_rows(self, flat_qk: Tensor, divisor: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """:meth:`shared_keys`' queries and keys again, from the divisors it returned, and the
        keys' own rows ``(W, c, d)`` (aligned with the queries)."""
        gathered = flat_qk.index_select(0, self.kv_idx)
        keys = gathered / divisor
        return self.own(gathered), self._overlapping(keys), self.own(keys)

    def own(self, gathered: Tensor) -> Tensor:
        """A single or joined block's gathered rows of the windows' own chunks, ``(W, c, ...)``."""
        return gathered[self.c :].view(self.n, self.c, *gathered.shape[1:])

    def tokens(self, sorted_rows: Tensor) -> Tensor:
        """Rows over sorted slots ``(W, c, ...)`` in token order, ``(rounds * sequences * Lp, ...)``."""
        return sorted_rows.reshape(-1, *sorted_rows.shape[2:]).index_select(0, self.back)

    def slots(self, token_rows: Tensor) -> Tensor:
        """A gradient over token rows (from :meth:`tokens`) back over the sorted slots, ``(W, c, ...)``;
        the joined layout's extra windows get zeros."""
        if self.joined is not None:
            token_rows = F.pad(token_rows, (0, 0) * (token_rows.dim() - 1) + (0, 1))
        return token_rows.index_select(0, self.unsorted).view(self.b * self.n, self.c, *token_rows.shape[1:])

    def fold(self, d_windows: Tensor) -> Tensor:
        """Adds each key's look-back copy (in the next chunk) of a gradient over the look-back
        windows ``(W, 2c, d)``, a fresh tensor, to its own slot in place; returns the own slots
        ``(B, n, c, d)`` (a view)."""
        d_windows = d_windows.view(self.b, self.n, 2 * self.c, -1)
        copies, own = d_windows[:, :, : self.c], d_windows[:, :, self.c :]
        own[:, :-1].add_(copies[:, 1:])  # chunk i's keys are chunk i + 1's look-back
        # (add_ on the slice: ``+=`` would also copy the slice onto itself)
        if self.joined is None:
            own[:, -1].add_(copies[:, 0])  # and the last chunk's are the first one's
        else:  # each block's copy chunk: the look-back of its first window
            extra, last = self.joined  # its gradient: the first copies, then extra windows'
            own.index_add_(1, last, torch.cat([copies[:, :1], own[:, extra]], dim=1))
        return own

    def scatter(self, d_sorted: Tensor, look_back: bool) -> Tensor:
        """Gradient for the flat rows from a gradient over sorted slots ``(W, c or 2c, d)``, a
        fresh tensor that this overwrites: with ``look_back``, the look-back copies are folded
        into their own slots (:meth:`fold`), and the own slots are gathered from there."""
        index = self.back
        if look_back and d_sorted.shape[1] > self.c:
            self.fold(d_sorted)
            if self._back_in_look_back is None:  # shared by the key and value gradients
                chunk = self.back.div(self.c, rounding_mode="floor")
                self._back_in_look_back = self.back.add(chunk, alpha=self.c).add_(self.c)  # + (chunk + 1) c
            index = self._back_in_look_back
        # Every row appears once among each round's own slots: the inverse permutation gathers
        # it, once per round.
        d_rows = d_sorted.reshape(-1, d_sorted.shape[-1]).index_select(0, index)
        if self.rounds == 1:
            return d_rows
        return d_rows.view(self.rounds, -1, d_rows.shape[-1]).sum(0)


def _chunked_attention_forward(
    qk: Tensor,
    keys: Tensor | None,
    v: Tensor,
    rows: _SortedRows,
    mask: _ChunkMask,
    dropout: float,
    lead: tuple[int, ...],
    keep_probs: bool = False,
    with_lse: bool = True,
    keep: Tensor | None = None,
    key_scale: float | None = None,
) -> tuple[Tensor, Tensor | None, Tensor | None, Tensor | None, tuple[Tensor, Tensor] | None]:
    """Softmax attention of a group's chunks over their keys; in place where autograd allows
    (with ``keep_probs``, autograd can differentiate it).

    Gathers the rounds' sorted queries, look-back keys (scaled by ``d ** -0.5``) and values
    from their rows (``(B*Lp, ...)`` once flattened), each only while it is needed; without
    ``keys`` (a single or joined block) the keys are made from the queries' own gather,
    normalised and times ``key_scale``. Returns each round's output ``(*lead, dv)`` and
    log-sum-exp ``lead`` (None unless ``with_lse``) in token order, ``lead`` being ``(G, B, Lp)``,
    the dropout keep mask (or None), with ``keep_probs`` the attention probabilities before
    dropout, and the keys' divisors and clamped rows where they were made here.
    """
    flat_qk, flat_v = qk.reshape(-1, qk.shape[-1]), v.reshape(-1, v.shape[-1])
    unit_rows = None
    if keys is None:
        assert key_scale is not None
        sq, sk, *unit_rows = rows.shared_keys(flat_qk, key_scale)
        scores = mask.scores(sq, sk)  # (W, c, K)
        del sq, sk
    else:
        scores = mask.scores(rows.queries(flat_qk), rows.look_back(keys.reshape(-1, keys.shape[-1])))
    # torch.softmax is fused and fast on CPU, while torch.exp / logsumexp take a slow path on
    # the large negative mask scores (several times slower here). The log-sum-exp follows from
    # the largest probability: p_max = exp(top - lse), so lse = top - log(p_max), p_max >= 1/K.
    top = scores.amax(dim=-1) if with_lse else None
    probs = torch.softmax(scores, dim=-1)
    del scores
    lse = None if top is None else rows.tokens(top - probs.amax(dim=-1).log()).view(lead)
    used = probs
    if dropout > 0.0:
        if keep is None:
            keep = torch.rand_like(probs) >= dropout
        used = probs * keep if keep_probs else probs.mul_(keep)
        used.mul_(1.0 / (1.0 - dropout))
    out = rows.tokens(torch.bmm(used, rows.look_back(flat_v))).view(*lead, -1)
    return out, lse, keep, (probs if keep_probs else None), (None if unit_rows is None else tuple(unit_rows))


def _attend_groups(
    qk: Tensor,
    keys: Tensor | None,
    v: Tensor,
    layouts: Iterable[tuple[_SortedRows, _ChunkMask]],
    n_rounds: int,
    dropout: float,
    lead: tuple[int, int],
    with_lse: bool,
    combine: bool,
    keep_probs: bool = False,
    keeps: Sequence[Tensor | None] | None = None,
    record: list[list[Tensor | None]] | None = None,
    key_scale: float | None = None,
) -> tuple[Tensor, Tensor | None]:
    """Every group of rounds (``layouts``, one after the other) and, with ``combine``, the
    softmax over rounds of their log-sum-exp: returns the output ``(*lead, dv)`` and its
    log-sum-exp ``lead`` (None unless ``with_lse``). Without ``combine``, the single group's
    rounds as :func:`_chunked_attention_forward` returns them. Several groups are combined
    relative to the running maximum ``top`` (see the module's docstring).

    ``keeps``: the groups' dropout masks to reuse; ``record`` collects each group's dropout mask,
    probabilities (with ``keep_probs``), for several rounds their shares of the output
    ``(G, B, Lp)``, and the divisors and clamped rows of keys made from the queries' gather
    (without ``keys``; see :func:`_chunked_attention_forward`)."""
    several = combine and n_rounds > 1  # rounds to combine
    top = out_sum = weight_sum = None
    lses_of_groups = []
    for index, (rows, mask) in enumerate(layouts):
        keep = None if keeps is None else keeps[index]
        outs, lses, keep, probs, unit_rows = _chunked_attention_forward(
            qk,
            keys,
            v,
            rows,
            mask,
            dropout,
            (rows.rounds, *lead),
            keep_probs,
            with_lse or several,
            keep,
            key_scale,
        )
        if record is not None:
            record.append([keep, probs, None, *(unit_rows or (None, None))])
        if not combine:
            return outs, lses
        if not several:
            return outs[0], (None if lses is None else lses[0])
        assert lses is not None
        if rows.rounds == n_rounds:  # the only group: a softmax over its rounds
            weights = torch.softmax(lses, dim=0)
            if record is not None:
                record[0][2] = weights
            out = (outs * weights[..., None]).sum(dim=0)
            return out, (torch.logsumexp(lses, dim=0) if with_lse else None)
        # The result does not depend on top (it cancels), so it carries no gradient.
        group_top = lses.detach().amax(dim=0)
        new_top = group_top if top is None else torch.maximum(top, group_top)
        weights = torch.exp(lses - new_top)  # (G, B, Lp)
        group_out = (outs * weights[..., None]).sum(dim=0)
        if top is None:
            out_sum, weight_sum = group_out, weights.sum(dim=0)
        else:
            decay = torch.exp(top - new_top)
            out_sum = out_sum * decay[..., None] + group_out
            weight_sum = weight_sum * decay + weights.sum(dim=0)
        top = new_top
        if record is not None:
            lses_of_groups.append(lses)
    assert top is not None and out_sum is not None and weight_sum is not None
    for group, lses in zip(record or (), lses_of_groups):  # each round's share of the output
        group[2] = torch.exp(lses - top).div_(weight_sum)
    out = out_sum / weight_sum[..., None]
    return out, ((top + weight_sum.log()) if with_lse else None)


def _group_backward(
    flat_qk: Tensor,
    flat_k: Tensor | None,
    flat_v: Tensor,
    rows: _SortedRows,
    mask: _ChunkMask,
    dropout: float,
    keep: Tensor | None,
    probs: Tensor,
    d_out: Tensor,
    row: Tensor,
    unit_rows: tuple[Tensor, Tensor, float] | None = None,
) -> tuple[Tensor, Tensor | None, Tensor]:
    """Gradients for the flat queries, keys and values of one group of rounds, from its rounds'
    output gradients ``d_out`` and row terms ``row`` (``d_out . out - d_lse`` per query) in token
    order, flat; the sorted rows and masks are gathered again, one at a time. Without keys, the
    keys were made from the queries' gather (``unit_rows``: their divisors, clamped rows and
    scale) and their gradient goes to the queries' (no keys' gradient)."""
    c = probs.shape[1]
    look_back = probs.shape[2] > c
    d_out = rows.slots(d_out)  # (W, c, dv) over sorted slots
    sv = rows.look_back(flat_v)
    # d softmax: P * (dP - sum_j P_j dP_j - d_lse), that sum being d_out . out per query
    d_probs = torch.bmm(d_out, sv.mT)
    del sv
    if keep is not None:
        scale = 1.0 / (1.0 - dropout)
        used = probs * keep * scale
        d_probs.mul_(keep).mul_(scale)
    else:
        used = probs
    d_v = rows.scatter(torch.bmm(used.mT, d_out), look_back)
    del used
    d_scores = d_probs.sub_(rows.slots(row)[..., None]).mul_(probs)
    # Entries replaced by constants carry no gradient.
    d_scores[..., -c:].diagonal(dim1=-2, dim2=-1).zero_()
    bad = mask.forbidden()
    if bad is not None:
        d_scores.masked_fill_(bad, 0.0)
    del bad
    if flat_k is not None:
        d_qk = rows.scatter(torch.bmm(d_scores, rows.look_back(flat_k)), False)
        d_k = rows.scatter(torch.bmm(d_scores.mT, rows.queries(flat_qk)), look_back)
        return d_qk, d_k, d_v
    assert unit_rows is not None
    divisor, clamped, key_scale = unit_rows
    sq, sk, own_keys = rows.shared_rows(flat_qk, divisor)
    d_sorted = torch.bmm(d_scores, sk)  # over the query slots, which are the keys' own slots
    del sk
    d_own_keys = rows.fold(torch.bmm(d_scores.mT, sq)).view_as(own_keys)
    del sq, d_scores
    d_sorted += _unit_backward(own_keys, rows.own(divisor), rows.own(clamped), d_own_keys, key_scale)
    return rows.scatter(d_sorted, False), None, d_v


class _ChunkedAttention(torch.autograd.Function):
    """Chunked attention with a hand-written backward: :func:`_attend_groups` as one autograd node.

    Takes the unsorted queries ``qk``, keys (scaled by ``d ** -0.5``) and values, ``(B, Lp, ...)``
    or flat, and the groups of rounds' row indices; returns the output and log-sum-exp in token
    order, per round (one group) or (``combine``) combined. With ``unit`` (see
    :func:`_unit_parts`) the keys were made from ``qk`` outside autograd and their gradient goes
    to ``qk``; without keys (``key_scale``, single or joined blocks) each group makes them from
    its queries' gather (see :func:`_chunked_attention_forward`). It saves the output, and per
    group the indices, the rounds' shares of the output and one ``(G * B * n, c, K)`` probability tensor,
    ``(G * B * (n + 1) - 1, c, K)`` when joined (``O(L * bucket_size)`` per round, the
    algorithm's own bound). No sorted copies, no round's output and none of autograd's several
    intermediates of the probabilities' size (scores, masks, softmax, dropout) are kept: the
    sorted rows and the boolean masks are gathered again in the backward pass, one at a time.
    """

    @staticmethod
    def forward(ctx, qk, keys, v, layouts, n_rounds, dropout, lead, with_lse, combine, unit, key_scale):  # type: ignore[override]
        record: list[list[Tensor | None]] = []
        ctx.layouts = layouts = list(layouts)
        out, lse = _attend_groups(
            qk, keys, v, layouts, n_rounds, dropout, lead, with_lse, combine, True, None, record, key_scale
        )
        divisor, clamped, ctx.unit_scale = unit if unit is not None else (None, None, None)
        saved = [t for group in record for t in group]
        ctx.save_for_backward(qk, keys, v, out, divisor, clamped, *saved)
        ctx.n_rounds, ctx.dropout, ctx.lead, ctx.combine = n_rounds, dropout, lead, combine
        ctx.key_scale = key_scale
        return out, lse

    @staticmethod
    def backward(ctx, d_out, d_lse):  # type: ignore[override]
        qk, keys, v, out, divisor, clamped, *saved = ctx.saved_tensors
        keeps, probs, shares, key_divisors, key_clamped = (saved[i::5] for i in range(5))
        dropout, unit_scale, key_scale = ctx.dropout, ctx.unit_scale, ctx.key_scale
        if torch.is_grad_enabled():  # create_graph=True: differentiate a replay, twice differentiable
            # (output and log-sum-exp, its first two results, pair with the incoming gradients)
            replay = functools.partial(
                _attend_groups,
                layouts=ctx.layouts,
                n_rounds=ctx.n_rounds,
                dropout=dropout,
                lead=ctx.lead,
                with_lse=True,
                combine=ctx.combine,
                keep_probs=True,
                keeps=keeps,
                key_scale=key_scale,
            )
            needs = ctx.needs_input_grad[:3]
            if key_scale is not None:  # keys from qk's sorted rows, inside the replay
                d_qk, d_v = _recomputed_grads(
                    lambda q, w: replay(q, None, w), (qk, v), needs[::2], (d_out, d_lse)
                )
                grads = (d_qk, None, d_v)
            elif unit_scale is None:
                grads = _recomputed_grads(replay, (qk, keys, v), needs, (d_out, d_lse))
            else:  # keys from qk, replayed too
                d_qk, d_v = _recomputed_grads(
                    lambda q, w: replay(q, _normalized(q, unit_scale), w), (qk, v), needs[::2], (d_out, d_lse)
                )
                grads = (d_qk, None, d_v)
            return (*grads, None, None, None, None, None, None, None, None)
        flat_qk, flat_v = qk.reshape(-1, qk.shape[-1]), v.reshape(-1, v.shape[-1])
        flat_k = None if keys is None else keys.reshape(-1, keys.shape[-1])
        # d softmax's row term, d_out . out - d_lse per query (token order, like the output)
        row = (d_out * out).sum(dim=-1).view(-1)
        # contiguous: a broadcast gradient (of out.sum(), say) gathers several times slower
        d_out = d_out.contiguous().view(-1, d_out.shape[-1])
        if d_lse is not None:
            row = row - d_lse.reshape(-1)
        d_qk = d_k = d_v = None
        groups = zip(ctx.layouts, keeps, probs, shares, key_divisors, key_clamped)
        for (rows, mask), keep, group_probs, weights, key_divisor, clamped_keys in groups:
            d_out_group, row_group = d_out, row
            if weights is not None:
                # out = sum_h w_h out_h with w = softmax_h(lse_h): round h's output gradient is
                # w_h d_out and its own row term w_h (d_out . out - d_lse); the rounds' output
                # terms cancel.
                weights = weights.view(weights.shape[0], -1)  # (G, B*Lp)
                d_out_group = (weights[..., None] * d_out).view(-1, d_out.shape[-1])
                row_group = (weights * row).view(-1)
            unit_rows = None if key_scale is None else (key_divisor, clamped_keys, key_scale)
            grads = _group_backward(
                flat_qk,
                flat_k,
                flat_v,
                rows,
                mask,
                dropout,
                keep,
                group_probs,
                d_out_group,
                row_group,
                unit_rows,
            )
            if d_qk is None:
                d_qk, d_k, d_v = grads
            else:
                d_qk.add_(grads[0]), d_v.add_(grads[2])
                if d_k is not None:
                    d_k.add_(grads[1])
        assert d_qk is not None and d_v is not None
        d_qk = d_qk.view(qk.shape)
        if d_k is not None:
            d_k = d_k.view(keys.shape)
        if unit_scale is not None:  # the keys' gradient goes to qk (the keys were made from it)
            d_qk, d_k = d_qk.add_(_unit_backward(keys, divisor, clamped, d_k, unit_scale)), None
        return d_qk, d_k, d_v.view(v.shape), None, None, None, None, None, None, None, None


def _log_shared_rounds(
    chunk_of: Tensor, q_pos: Tensor, k_pos: Tensor, n_chunks: int, dtype: torch.dtype
) -> Tensor:
    """``log`` of the number of rounds whose window holds each (query, key) pair of this round.

    ``chunk_of`` ``(B, H, Lp)``; ``q_pos`` ``(B, n, c)`` and ``k_pos`` ``(B, n, K)`` are token
    indices; returns ``(B, n, c, K)``. A key is in a query's window in round h when it sits in
    the query's chunk or the one before it (cyclically).
    """
    b, n_hashes, _ = chunk_of.shape
    count = None  # (B, n, c, K)
    for h in range(n_hashes):
        q_chunk = chunk_of[:, h].gather(1, q_pos.reshape(b, -1)).view(q_pos.shape)[..., None]
        k_chunk = chunk_of[:, h].gather(1, k_pos.reshape(b, -1)).view(k_pos.shape)[:, :, None, :]
        together = ((k_chunk == q_chunk) | (k_chunk == (q_chunk - 1) % n_chunks)).to(dtype)
        count = together if count is None else count + together
    assert count is not None
    # Each pair lies in this round's own window, so count >= 1.
    return count.clamp(min=1.0).log()


class LSHSelfAttention(nn.Module):
    """Multi-head LSH self-attention: shared query/key and value projections, output projection.

    Args:
        dim: model width of the input and output.
        heads: number of attention heads (folded into the batch for the LSH core).
        dim_head: width per head (default ``dim // heads``).
        bucket_size, n_hashes, n_buckets, causal, allow_duplicate_attention, seed, kernel: see
            :class:`LSHAttention`.
        attn_dropout: dropout on attention weights; ``dropout``: dropout on the output.

    The rotations are shared by all heads of one forward (as in the paper's default). With
    ``causal=True`` an early output can still change when a later token changes (later tokens
    move the chunk boundaries of the sorted sequence), and with ``seed=None`` the rotations are
    redrawn on every forward, in ``eval()`` too; :class:`LSHAttention` says more, and how
    ``torch.func`` transforms run.
    """

    def __init__(
        self,
        dim: int,
        heads: int = 4,
        dim_head: int | None = None,
        bucket_size: int = 64,
        n_hashes: int = 4,
        n_buckets: int | None = None,
        causal: bool = False,
        attn_dropout: float = 0.0,
        dropout: float = 0.0,
        allow_duplicate_attention: bool = True,
        seed: int | None = None,
        kernel: str = "auto",
    ) -> None:
        super().__init__()
        dim = check_int("dim", dim)
        heads = check_int("heads", heads)
        if dim_head is None:
            dim_head = dim // heads
            if dim_head < 1:
                raise ValueError(f"dim_head = dim // heads must be >= 1, got dim={dim}, heads={heads}")
        dim_head = check_int("dim_head", dim_head)
        attn_dropout = check_probability("attn_dropout", attn_dropout)
        dropout = check_probability("dropout", dropout, one=True)  # torch.nn.Dropout's range
        self.dim = dim
        self.heads = heads
        self.dim_head = dim_head
        inner = heads * dim_head
        self.to_qk = nn.Linear(dim, inner, bias=False)
        self.to_v = nn.Linear(dim, inner, bias=False)
        self.to_out = nn.Linear(inner, dim)
        self.out_dropout = nn.Dropout(dropout)
        self.attn = LSHAttention(
            bucket_size=bucket_size,
            n_hashes=n_hashes,
            n_buckets=n_buckets,
            causal=causal,
            dropout=attn_dropout,
            allow_duplicate_attention=allow_duplicate_attention,
            seed=seed,
            kernel=kernel,
        )

    def forward(
        self,
        x: Tensor,
        key_padding_mask: Tensor | None = None,
        rotations: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """``x`` ``(B, L, dim)`` -> ``(B, L, dim)``; ``key_padding_mask`` bool ``(B, L)``, True where
        a token must not be attended to."""
        if not isinstance(x, Tensor) or x.dim() != 3 or x.shape[-1] != self.dim:
            got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(
                f"LSHSelfAttention expects x of shape (B, L, dim) = (B, L, {self.dim}), got {got}"
            )
        b, length, _ = x.shape
        if b == 0 or length == 0:
            raise ValueError(
                f"LSHSelfAttention needs at least one sequence of one token, got x {tuple(x.shape)}"
            )
        check_padding_mask(key_padding_mask, b, length)
        h, dh = self.heads, self.dim_head

        def split(t: Tensor) -> Tensor:  # (B, L, h*dh) -> (B*h, L, dh)
            return t.view(b, length, h, dh).transpose(1, 2).reshape(b * h, length, dh)

        qk, v = split(self.to_qk(x)), split(self.to_v(x))
        if key_padding_mask is not None:
            key_padding_mask = key_padding_mask.repeat_interleave(h, dim=0)
        out = self.attn(qk, v, key_padding_mask=key_padding_mask, rotations=rotations, generator=generator)
        out = out.view(b, h, length, dh).transpose(1, 2).reshape(b, length, h * dh)
        return self.out_dropout(self.to_out(out))


def shared_qk_sdpa(qk: Tensor, v: Tensor, causal: bool = False) -> Tensor:
    """Shared-QK attention through ``torch.nn.functional.scaled_dot_product_attention``.

    The benchmark's honest competitor: same keys (normalised ``qk``) and scale, but the
    self-key is not masked (SDPA takes no such mask without materialising ``L x L``).
    """
    keys = _unit(qk)
    # (B, 1, L, d): the 4-D head layout lets SDPA pick its fused (flash) CPU/GPU kernels.
    out = F.scaled_dot_product_attention(qk[:, None], keys[:, None], v[:, None], is_causal=causal)
    return out[:, 0]


__all__ = [
    "MASK_SCORE",
    "SELF_SCORE",
    "LSHAttention",
    "LSHSelfAttention",
    "full_shared_qk_attention",
    "KERNELS",
    "hash_buckets",
    "lsh_attention",
    "shared_qk_sdpa",
]
