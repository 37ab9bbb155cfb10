"""Reversible residual stacks: same gradients as an ordinary stack, memory flat in depth."""

from __future__ import annotations

import pytest
import torch

from hebb_agents.encoders.reversible import ChunkedFeedForward, reformer_stack


def _stack(depth: int, replay: bool = True):
    torch.manual_seed(0)
    return reformer_stack(
        dim=8,
        depth=depth,
        heads=2,
        bucket_size=8,
        n_hashes=2,
        causal=True,
        attn_dropout=0.2,
        dropout=0.1,
        ff_dropout=0.2,
        ff_chunks=3,
        replay_randomness=replay,
    ).double()


def _grads(stack, x: torch.Tensor, mask: torch.Tensor, reversible: bool, seed: int = 5):
    stack.reversible = reversible
    stack.zero_grad()
    x = x.clone().requires_grad_(True)
    torch.manual_seed(seed)  # same dropout masks and rotations for both stacks
    out = stack(x, key_padding_mask=mask)
    (out * torch.linspace(-1, 1, out.shape[-1], dtype=out.dtype)).sum().backward()
    return out.detach(), x.grad, [p.grad.clone() for p in stack.parameters()]


def _inputs():
    x = torch.randn(2, 45, 16, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    mask = torch.zeros(2, 45, dtype=torch.bool)
    mask[1, 40:] = True
    return x, mask


def test_reversible_gradients_equal_ordinary_residual_stack_with_dropout() -> None:
    stack = _stack(depth=3)
    x, mask = _inputs()
    out_r, dx_r, dp_r = _grads(stack, x, mask, reversible=True)
    out_p, dx_p, dp_p = _grads(stack, x, mask, reversible=False)
    assert torch.allclose(out_r, out_p, atol=1e-12)
    assert torch.allclose(dx_r, dx_p, atol=1e-9)
    assert len(dp_r) == len(dp_p) > 0
    for a, b in zip(dp_r, dp_p):
        assert torch.allclose(a, b, atol=1e-9)
    # Randomness really is in play: another seed gives another output.
    out_other, _, _ = _grads(stack, x, mask, reversible=False, seed=6)
    assert not torch.allclose(out_other, out_p)


def test_recomputation_attends_with_the_forward_passs_buckets(monkeypatch) -> None:
    """Rebuilt inputs differ by rounding, which can move a near-tie token to another bucket: the
    backward pass must reuse the forward pass's bucket ids, not hash again."""
    from hebb_agents.encoders import lsh

    stack = _stack(depth=2)
    x, mask = _inputs()
    _, dx_p, dp_p = _grads(stack, x, mask, reversible=False)
    real, hashed = lsh.hash_buckets, []

    def shifted_after_forward(vectors, rotations, kernel="auto"):
        hashed.append(vectors.shape)
        buckets = real(vectors, rotations, kernel)
        # a third call or later hashes "differently": what a flipped bucket does, at every token
        return buckets if len(hashed) <= 2 else (buckets + 1) % (2 * rotations.shape[-1])

    monkeypatch.setattr(lsh, "hash_buckets", shifted_after_forward)
    _, dx_r, dp_r = _grads(stack, x, mask, reversible=True)
    assert len(hashed) == 2  # one hashing per attention layer, in the forward pass only
    torch.testing.assert_close(dx_r, dx_p, rtol=1e-9, atol=1e-10)
    for a, b in zip(dp_r, dp_p):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


def test_a_reversible_stack_nested_in_another_with_attention_in_g_has_the_plain_gradients() -> None:
    from torch import nn

    from hebb_agents.encoders.reversible import (
        PreNormAttention,
        ReversibleBlock,
        ReversibleSequence,
    )

    def attention(dim: int) -> nn.Module:
        return PreNormAttention(dim, bucket_size=4, n_hashes=2, heads=2)

    torch.manual_seed(0)
    inner = ReversibleSequence([ReversibleBlock(attention(4), attention(4)) for _ in range(2)])
    outer = ReversibleSequence([ReversibleBlock(inner, ChunkedFeedForward(8))]).double()
    x = torch.randn(2, 32, 16, dtype=torch.float64)
    grads = []
    for reversible in (True, False):
        inner.reversible = outer.reversible = reversible
        leaf = x.clone().requires_grad_(True)
        torch.manual_seed(1)
        outer(leaf).sum().backward()
        grads.append(leaf.grad)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-9, atol=1e-10)


def test_gradients_are_wrong_without_replaying_randomness() -> None:
    stack = _stack(depth=3, replay=False)
    x, mask = _inputs()
    _, dx_r, dp_r = _grads(stack, x, mask, reversible=True)
    _, dx_p, dp_p = _grads(stack, x, mask, reversible=False)
    worst = max((a - b).abs().max().item() for a, b in zip([dx_r, *dp_r], [dx_p, *dp_p]))
    assert worst > 1e-3


def test_autograd_grad_returns_parameter_gradients() -> None:
    stack = _stack(depth=2)
    stack.eval()
    x, mask = _inputs()
    params = list(stack.parameters())
    stack.reversible = True
    torch.manual_seed(3)  # rotations are still drawn per forward in eval mode
    got = torch.autograd.grad(stack(x, key_padding_mask=mask).sum(), params)
    stack.reversible = False
    torch.manual_seed(3)
    want = torch.autograd.grad(stack(x, key_padding_mask=mask).sum(), params)
    for a, b in zip(got, want):
        assert torch.allclose(a, b, atol=1e-9)


def _saved_bytes(depth: int, reversible: bool) -> int:
    stack = _stack(depth)
    stack.reversible = reversible
    x = torch.randn(1, 64, 16, dtype=torch.float64, requires_grad=True)
    total = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal total
        if not isinstance(t, torch.nn.Parameter):
            total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        stack(x).sum()
    return total


def test_activation_memory_does_not_grow_with_depth() -> None:
    assert _saved_bytes(8, reversible=True) == _saved_bytes(2, reversible=True)
    assert _saved_bytes(8, reversible=False) > 3 * _saved_bytes(2, reversible=False)


def test_chunked_feed_forward_equals_unchunked() -> None:
    torch.manual_seed(0)
    ff = ChunkedFeedForward(8, mult=2, chunks=5)
    x = torch.randn(2, 23, 8)
    chunked = ff(x)
    ff.chunks = 1
    assert torch.allclose(chunked, ff(x), atol=1e-6)
    with pytest.raises(ValueError, match="chunks"):
        ChunkedFeedForward(8, chunks=0)


def test_a_seeded_stack_gives_every_layer_its_own_rotations() -> None:
    stack = reformer_stack(16, depth=3, heads=2, bucket_size=4, n_hashes=2, seed=7)
    layers = [block.f.attn.attn for block in stack.blocks]
    assert [layer.seed for layer in layers] == [7, 8, 9]
    first, second = (layer.draw_rotations(8, 64) for layer in layers[:2])
    assert not torch.equal(first, second)
    assert torch.equal(
        first,
        reformer_stack(16, depth=1, heads=2, bucket_size=4, n_hashes=2, seed=7)
        .blocks[0]
        .f.attn.attn.draw_rotations(8, 64),
    )


def test_second_derivatives_are_refused_by_a_reversible_stack_and_work_without_it() -> None:
    # the recomputing backward has no graph of its own: create_graph=True would give wrong (or,
    # through allow_unused, silently absent) second derivatives, so it is an error at once; the
    # ordinary residual stack differentiates twice
    stack = reformer_stack(dim=8, depth=2, heads=2, bucket_size=4, n_hashes=2, seed=0)
    x = torch.randn(1, 20, 16, requires_grad=True)
    with pytest.raises(RuntimeError, match="second derivatives.*reversible=False"):
        torch.autograd.grad(stack(x).square().sum(), x, create_graph=True, allow_unused=True)
    stack.reversible = False
    (grad,) = torch.autograd.grad(stack(x).square().sum(), x, create_graph=True)
    grad.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_torch_func_grad_through_a_reversible_stack_equals_autograd() -> None:
    # under torch.func the stack runs as an ordinary residual stack: same values, same gradients
    stack = _stack(depth=2).eval()
    for p in stack.parameters():
        p.requires_grad_(False)
    x, mask = _inputs()

    def loss(t: torch.Tensor) -> torch.Tensor:
        torch.manual_seed(3)  # the same rotations for every call
        return (stack(t, key_padding_mask=mask) * torch.linspace(-1, 1, 16, dtype=t.dtype)).sum()

    leaf = x.clone().requires_grad_(True)
    loss(leaf).backward()
    assert torch.allclose(torch.func.grad(loss)(x), leaf.grad, atol=1e-9)
    params = {name: p.detach() for name, p in stack.named_parameters()}

    def loss_of_params(weights: dict[str, torch.Tensor]) -> torch.Tensor:
        torch.manual_seed(3)
        out = torch.func.functional_call(stack, weights, (x,), {"key_padding_mask": mask})
        return (out * torch.linspace(-1, 1, 16, dtype=x.dtype)).sum()

    got = torch.func.grad(loss_of_params)(params)
    for p in stack.parameters():
        p.requires_grad_(True)
    stack.zero_grad()
    loss(x).backward()
    for name, p in stack.named_parameters():
        assert torch.allclose(got[name], p.grad, atol=1e-9), name
