"""Reversible residual blocks (RevNet / Reformer) with randomness replayed in the backward pass.

Gomez et al., "The Reversible Residual Network", NeurIPS 2017, https://arxiv.org/abs/1707.04585;
Kitaev et al., "Reformer", ICLR 2020, section 3.

A block maps ``(x1, x2)`` to ``y1 = x1 + F(x2)``, ``y2 = x2 + G(y1)``. The inputs can be recomputed
from the outputs (``x2 = y2 - G(y1)``, ``x1 = y1 - F(x2)``), so a stack of blocks trained through
:class:`ReversibleSequence` stores only its final output: activation memory does not grow with
depth. The recomputation must see the same randomness as the forward pass (dropout masks, LSH
rotations drawn from the global RNG), or the reconstructed inputs and the gradients are wrong;
the CPU and CUDA RNG states before each ``F`` and ``G`` call are saved and restored for the
recomputation. It must also hash every token into the same bucket, which the same rotations
alone do not ensure: the rebuilt inputs differ from the forward pass's by rounding, enough to
move a token whose two best buckets nearly tie. The forward pass therefore keeps each LSH call's
bucket ids (int32, ``B * n_hashes * L`` per attention layer: the one record that grows with depth,
``n_hashes / (2 * dim)`` of the activations an ordinary stack stores) and the recomputation
reuses them (:func:`hebb_agents.encoders.lsh.bucket_tape`). ``replay_randomness=False`` replays
neither, and exists to show that it matters.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from hebb_agents.encoders.lsh import LSHSelfAttention, bucket_tape, transform_running
from hebb_agents.options import check_bool, check_int, check_optional_int, check_probability

_RngState = tuple[Tensor, Tensor | None]


def _rng_state(device: torch.device) -> _RngState:
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return torch.get_rng_state(), cuda


@contextlib.contextmanager
def _replayed(state: _RngState, device: torch.device, replay: bool) -> Iterator[None]:
    """Run the body with the RNG as it was at ``state``; the outer RNG stream is untouched."""
    if not replay:
        yield
        return
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.set_rng_state(state[0])
        if state[1] is not None:
            torch.cuda.set_rng_state(state[1], device)
        yield


class ReversibleBlock(nn.Module):
    """One reversible residual block: ``y1 = x1 + f(x2)``, ``y2 = x2 + g(y1)``.

    ``f`` is called as ``f(x, **kwargs)`` (e.g. an attention layer with a padding mask); ``g`` as
    ``g(x)``. Both must map ``(B, L, dim)`` to the same shape.
    """

    def __init__(self, f: nn.Module, g: nn.Module) -> None:
        super().__init__()
        self.f = f
        self.g = g

    def forward(self, x1: Tensor, x2: Tensor, **kwargs: Any) -> tuple[Tensor, Tensor]:
        y1 = x1 + self.f(x2, **kwargs)
        return y1, x2 + self.g(y1)


class _ReversibleFunction(torch.autograd.Function):
    """Runs a stack of blocks keeping only the output; the backward walks it in reverse."""

    @staticmethod
    def forward(ctx, x, blocks, kwargs, replay, *params):  # type: ignore[override]
        x1, x2 = x.chunk(2, dim=-1)
        states = []
        for block in blocks:
            # bucket ids of the LSH calls in f and in g, for the recomputation
            buckets_f: list[Tensor] = []
            buckets_g: list[Tensor] = []
            state_f = _rng_state(x.device)
            with bucket_tape(record=buckets_f if replay else None):
                x1 = x1 + block.f(x2, **kwargs)
            state_g = _rng_state(x.device)
            with bucket_tape(record=buckets_g if replay else None):
                x2 = x2 + block.g(x1)
            states.append((state_f, state_g, buckets_f, buckets_g))
        out = torch.cat([x1, x2], dim=-1)
        ctx.save_for_backward(out)
        ctx.blocks, ctx.kwargs, ctx.replay, ctx.states = blocks, kwargs, replay, states
        ctx.params = params
        return out

    @staticmethod
    def backward(ctx, d_out):  # type: ignore[override]
        if torch.is_grad_enabled():  # create_graph=True: the recomputation below has no graph to give
            raise RuntimeError(
                "second derivatives (create_graph=True) of a reversible stack are not supported; "
                "use ReversibleSequence(reversible=False) for them"
            )
        (out,) = ctx.saved_tensors
        device = out.device
        position = {id(p): i for i, p in enumerate(ctx.params)}
        param_grads: list[Tensor | None] = [None] * len(ctx.params)

        def collect(module: nn.Module, output: Tensor, inputs: Tensor, grad: Tensor) -> Tensor:
            # Gradients of one sub-layer's output w.r.t. its input and its own parameters.
            own = [p for p in module.parameters() if p.requires_grad]
            grads = torch.autograd.grad(output, [inputs, *own], grad, allow_unused=True)
            for p, g in zip(own, grads[1:]):
                if g is not None:
                    i = position[id(p)]
                    param_grads[i] = g if param_grads[i] is None else param_grads[i] + g
            return grads[0] if grads[0] is not None else torch.zeros_like(inputs)

        y1, y2 = out.chunk(2, dim=-1)
        d_y1, d_y2 = d_out.chunk(2, dim=-1)
        for block, (state_f, state_g, buckets_f, buckets_g) in zip(
            reversed(ctx.blocks), reversed(ctx.states)
        ):
            with torch.enable_grad():
                y1 = y1.detach().requires_grad_(True)
                with (
                    _replayed(state_g, device, ctx.replay),
                    bucket_tape(replay=buckets_g if ctx.replay else None),
                ):
                    g_y1 = block.g(y1)
                d_y1 = d_y1 + collect(block.g, g_y1, y1, d_y2)
            with torch.no_grad():
                x2 = y2 - g_y1
            with torch.enable_grad():
                x2 = x2.detach().requires_grad_(True)
                with (
                    _replayed(state_f, device, ctx.replay),
                    bucket_tape(replay=buckets_f if ctx.replay else None),
                ):
                    f_x2 = block.f(x2, **ctx.kwargs)
                d_x2 = d_y2 + collect(block.f, f_x2, x2, d_y1)
            with torch.no_grad():
                x1 = y1 - f_x2
            y1, y2, d_y1, d_y2 = x1.detach(), x2.detach(), d_y1, d_x2
        return (torch.cat([d_y1, d_y2], dim=-1), None, None, None, *param_grads)


class ReversibleSequence(nn.Module):
    """A stack of :class:`ReversibleBlock` on a two-stream state ``(B, L, 2 * dim)``.

    Args:
        blocks: the blocks, applied in order.
        reversible: if True (default), training stores only the final output and recomputes
            activations in the backward pass; if False, an ordinary residual stack (same math,
            activations stored) for comparison.
        replay_randomness: restore the RNG state and reuse the LSH bucket ids of the forward
            pass in each recomputation (default True). Turning it off gives wrong gradients
            whenever a block uses randomness.

    Parameters reached only through ``kwargs`` are not supported, nor are second derivatives
    (``create_graph=True``) of a reversible stack: they raise an error; use ``reversible=False``.
    Under ``torch.func`` transforms (``grad``, ``vmap``) the stack runs as an ordinary residual
    stack (the same values; activations are stored).
    In a reversible stack, draw LSH rotations from the global RNG or a module seed (both are
    replayed), not from a ``torch.Generator`` passed per call.
    """

    def __init__(
        self, blocks: Sequence[ReversibleBlock], reversible: bool = True, replay_randomness: bool = True
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.reversible = check_bool("reversible", reversible)
        self.replay_randomness = check_bool("replay_randomness", replay_randomness)

    def forward(self, x: Tensor, **kwargs: Any) -> Tensor:
        """``x`` ``(B, L, 2 * dim)`` (the two streams side by side) -> same shape."""
        if x.shape[-1] % 2:
            raise ValueError(f"the last axis holds two equal streams, got odd width {x.shape[-1]}")
        params = tuple(p for p in self.parameters() if p.requires_grad)
        needs_grad = torch.is_grad_enabled() and (x.requires_grad or bool(params))
        # under torch.func transforms (grad, vmap) the recomputing autograd.Function cannot run: the
        # ordinary residual stack computes the same values, storing its activations
        if self.reversible and needs_grad and not transform_running():
            return _ReversibleFunction.apply(x, list(self.blocks), kwargs, self.replay_randomness, *params)
        x1, x2 = x.chunk(2, dim=-1)
        for block in self.blocks:
            x1, x2 = block(x1, x2, **kwargs)
        return torch.cat([x1, x2], dim=-1)


class ChunkedFeedForward(nn.Module):
    """Position-wise feed-forward ``Linear -> GELU -> dropout -> Linear`` over sequence chunks.

    Processing ``chunks`` slices of the sequence one after another bounds the hidden activation
    to ``(B, L / chunks, dim * mult)`` (Reformer, section 3, "chunking"); the result is the same.
    """

    def __init__(self, dim: int, mult: int = 4, dropout: float = 0.0, chunks: int = 1) -> None:
        super().__init__()
        dropout = check_probability("dropout", dropout, one=True)  # torch.nn.Dropout's range
        self.chunks = check_int("chunks", chunks)
        self.net = nn.Sequential(
            nn.LayerNorm(dim),
            nn.Linear(dim, dim * mult),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(dim * mult, dim),
        )

    def forward(self, x: Tensor) -> Tensor:
        if self.chunks == 1:
            return self.net(x)
        return torch.cat([self.net(part) for part in x.chunk(self.chunks, dim=1)], dim=1)


class PreNormAttention(nn.Module):
    """``LayerNorm`` then :class:`LSHSelfAttention`: the ``F`` of a reversible Reformer block."""

    def __init__(self, dim: int, **attention_kwargs: Any) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.attn = LSHSelfAttention(dim, **attention_kwargs)

    def forward(self, x: Tensor, key_padding_mask: Tensor | None = None) -> Tensor:
        return self.attn(self.norm(x), key_padding_mask=key_padding_mask)


def reformer_stack(
    dim: int,
    depth: int,
    ff_mult: int = 4,
    ff_chunks: int = 1,
    ff_dropout: float = 0.0,
    reversible: bool = True,
    replay_randomness: bool = True,
    **attention_kwargs: Any,
) -> ReversibleSequence:
    """``depth`` reversible blocks of (pre-norm LSH self-attention, chunked feed-forward).

    A ``seed`` among the attention arguments fixes the rotations of block ``i`` to ``seed + i``:
    every layer hashes with its own rotations, as with fresh draws.
    """
    depth = check_int("depth", depth)
    ff_chunks = check_int("ff_chunks", ff_chunks)
    ff_dropout = check_probability("ff_dropout", ff_dropout, one=True)
    seed = check_optional_int("seed", attention_kwargs.pop("seed", None), minimum=None)
    blocks = [
        ReversibleBlock(
            PreNormAttention(dim, **attention_kwargs, seed=None if seed is None else seed + layer),
            ChunkedFeedForward(dim, mult=ff_mult, dropout=ff_dropout, chunks=ff_chunks),
        )
        for layer in range(depth)
    ]
    return ReversibleSequence(blocks, reversible=reversible, replay_randomness=replay_randomness)


__all__ = [
    "ChunkedFeedForward",
    "PreNormAttention",
    "ReversibleBlock",
    "ReversibleSequence",
    "reformer_stack",
]
