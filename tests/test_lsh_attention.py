"""LSH attention against exact references (REFERENCE.md section 2, issue 4)."""

from __future__ import annotations

import math
import re

import pytest
import torch

from hebb_agents.encoders.lsh import (
    LSHAttention,
    LSHSelfAttention,
    full_shared_qk_attention,
    hash_buckets,
    lsh_attention,
)


def _inputs(b: int, length: int, d: int, dv: int, seed: int, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    qk = torch.randn(b, length, d, generator=g, dtype=dtype)
    v = torch.randn(b, length, dv, generator=g, dtype=dtype)
    return qk, v


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("length", [1, 2, 7, 64, 65, 100, 128])
def test_one_round_covering_sequence_equals_full_attention(causal: bool, length: int) -> None:
    # bucket 64: at most two chunks, each sees itself and the other one = the whole sequence.
    qk, v = _inputs(2, length, 32, 16, seed=length)
    qk.requires_grad_(True)
    v.requires_grad_(True)
    attn = LSHAttention(bucket_size=64, n_hashes=1, causal=causal)
    out = attn(qk, v)
    ref = full_shared_qk_attention(qk, v, causal=causal)
    assert out.shape == (2, length, 16)
    assert (out - ref).abs().max().item() <= 1e-5
    grad = torch.randn_like(out)
    got = torch.autograd.grad(out, (qk, v), grad)
    want = torch.autograd.grad(ref, (qk, v), grad)
    for g_got, g_want in zip(got, want):
        assert (g_got - g_want).abs().max().item() <= 1e-5


@pytest.mark.parametrize("dedup", [False, True])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("n_hashes", [2, 4])
def test_several_rounds_covering_sequence_equal_full_attention(
    n_hashes: int, causal: bool, dedup: bool
) -> None:
    # Every round's window is the whole sequence: combining rounds must give full attention back,
    # including the causal first token, which sees only itself (log-sum-exp at SELF_SCORE).
    qk, v = _inputs(2, 100, 32, 16, seed=n_hashes)
    attn = LSHAttention(
        bucket_size=64, n_hashes=n_hashes, causal=causal, allow_duplicate_attention=not dedup, seed=1
    )
    rotations = attn.draw_rotations(32, 100)
    out, lse = lsh_attention(
        qk, v, rotations, 64, causal=causal, allow_duplicate_attention=not dedup, return_lse=True
    )
    ref, ref_lse = full_shared_qk_attention(qk, v, causal=causal, return_lse=True)
    assert (out - ref).abs().max().item() <= 1e-5
    # each pair counted once with de-duplication, once per round without
    extra = 0.0 if dedup else math.log(n_hashes)
    assert torch.allclose(lse, ref_lse + extra, rtol=0, atol=1e-5 * ref_lse.abs().max().item())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_a_token_that_sees_only_itself_returns_its_value_in_every_dtype(dtype: torch.dtype) -> None:
    # Four rounds all give the first causal token its own value with weight 1; combined, still 1.
    qk, v = _inputs(1, 5, 16, 8, seed=2, dtype=dtype)
    out = LSHAttention(bucket_size=4, n_hashes=4, causal=True, seed=0)(qk, v)
    torch.testing.assert_close(out[0, 0], v[0, 0])  # the dtype's own tolerance: a few roundings
    single = LSHAttention(bucket_size=4, n_hashes=8, seed=0)(qk[:, :1], v[:, :1])
    torch.testing.assert_close(single[0, 0], v[0, 0])


def test_float16_backward_is_finite_with_internal_padding() -> None:
    # 60 tokens, bucket 16: four zero padding rows, whose keys must not become 0 / 0.
    qk, v = _inputs(1, 60, 16, 8, seed=3, dtype=torch.float16)
    qk.requires_grad_(True)
    v.requires_grad_(True)
    out = LSHAttention(bucket_size=16, n_hashes=2, seed=0)(qk, v)
    out.float().sum().backward()
    assert torch.isfinite(out).all()
    assert torch.isfinite(qk.grad).all() and torch.isfinite(v.grad).all()


def _naive_buckets(qk: torch.Tensor, rotations: torch.Tensor) -> torch.Tensor:
    """(L, H) bucket ids by the textbook formula argmax([xR ; -xR])."""
    rotated = torch.einsum("ld,dhr->lhr", qk, rotations)
    return torch.cat([rotated, -rotated], dim=-1).argmax(dim=-1)


def _window_counts(buckets: torch.Tensor, masked: torch.Tensor, bucket_size: int) -> torch.Tensor:
    """C[i, j] = number of rounds in which key j lies in query i's window (i unmasked)."""
    length, n_hashes = buckets.shape
    n_chunks = math.ceil(length / bucket_size)
    counts = torch.zeros(length, length)
    for h in range(n_hashes):
        real = sorted((int(buckets[t, h]), t) for t in range(length) if not masked[t])
        slots = [t for _, t in real] + [t for t in range(length) if masked[t]]
        slots += [None] * (n_chunks * bucket_size - length)
        chunks = [slots[i * bucket_size : (i + 1) * bucket_size] for i in range(n_chunks)]
        for i, chunk in enumerate(chunks):
            window = list(chunk) if n_chunks == 1 else list(chunk) + list(chunks[i - 1])
            for q in chunk:
                if q is None:
                    continue
                for k in window:
                    if k is not None:
                        counts[q, k] += 1
    return counts


@pytest.mark.parametrize("dedup", [False, True])
@pytest.mark.parametrize("causal", [False, True])
def test_many_rounds_and_chunks_match_an_independent_reference(dedup: bool, causal: bool) -> None:
    """Several rounds, many chunks, padding and a mask, against a from-scratch construction.

    Without de-duplication the rounds' logsumexp combination is softmax attention over the
    keys each query saw, each weighted by the number of rounds that showed it; with it, each
    key that was seen counts once. This pins down sorting, unsorting across rounds, look-back
    (with its wrap-around), masks and the round combination at once.
    """
    length, d, dv, bucket = 45, 8, 5, 4
    qk, v = _inputs(1, length, d, dv, seed=11, dtype=torch.float64)
    masked = torch.zeros(length, dtype=torch.bool)
    masked[[3, 17, 30]] = True
    n_chunks = math.ceil(length / bucket)
    n_buckets = n_chunks + n_chunks % 2
    rotations = torch.randn(
        d, 3, n_buckets // 2, generator=torch.Generator().manual_seed(5), dtype=torch.float64
    )
    out, lse = lsh_attention(
        qk,
        v,
        rotations,
        bucket_size=bucket,
        causal=causal,
        key_padding_mask=masked[None],
        allow_duplicate_attention=not dedup,
    )
    assert torch.equal(hash_buckets(qk, rotations)[0].T, _naive_buckets(qk[0], rotations))
    counts = _window_counts(_naive_buckets(qk[0], rotations), masked, bucket)
    scores = (qk[0] * d**-0.5) @ torch.nn.functional.normalize(qk[0], dim=-1).T
    scores.fill_diagonal_(-1e5)
    scores[:, masked] = -1e9
    if causal:
        scores = scores.masked_fill(torch.ones(length, length, dtype=torch.bool).triu(1), -1e9)
    weight = (counts > 0).double() if dedup else counts.double()
    logits = scores + weight.log()  # -inf where a key was never seen
    want_lse = torch.logsumexp(logits, dim=-1)
    want = torch.softmax(logits, dim=-1) @ v[0]
    keep = ~masked
    assert (counts[keep].sum(1) < length * 3).all(), "windows must not cover everything"
    assert torch.allclose(out[0, keep], want[keep], rtol=0, atol=1e-10)
    assert torch.allclose(lse[0, keep], want_lse[keep], rtol=0, atol=1e-8)


@pytest.mark.parametrize("half", [40, 8])  # per-round products; all rounds in one signed product
def test_hashing_in_blocks_equals_hashing_at_once(monkeypatch, half: int) -> None:
    from hebb_agents.encoders import lsh

    qk = torch.randn(2, 300, 16, generator=torch.Generator().manual_seed(0))
    rotations = torch.randn(16, 3, half, generator=torch.Generator().manual_seed(1))
    whole = hash_buckets(qk, rotations)
    # 7 tokens (2 sequences, 3 rounds of 2 * half columns when narrow), a ragged last block
    block = 2 * half * 7 * (6 if half <= lsh._NARROW_HASH else 1)
    monkeypatch.setattr(lsh, "_HASH_BLOCK_ELEMENTS", block)
    assert torch.equal(hash_buckets(qk, rotations), whole)
    for b in range(2):
        assert torch.equal(whole[b].T, _naive_buckets(qk[b], rotations))


def test_narrow_hashing_equals_per_round_hashing(monkeypatch) -> None:
    from hebb_agents.encoders import lsh

    qk = torch.randn(3, 1000, 64, generator=torch.Generator().manual_seed(2))
    for half in (1, 4, 8, 16):
        rotations = torch.randn(64, 4, half, generator=torch.Generator().manual_seed(half))
        narrow = hash_buckets(qk, rotations)
        with monkeypatch.context() as patch:
            patch.setattr(lsh, "_NARROW_HASH", 0)
            assert torch.equal(hash_buckets(qk, rotations), narrow)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("group", [1, 2, 5])  # rounds per group: one at a time, ragged, all at once
def test_rounds_run_in_groups_equal_rounds_one_at_a_time(monkeypatch, causal: bool, group: int) -> None:
    """The PyTorch path stacks several rounds into one pass; outputs, log-sum-exp and gradients
    must be those of running the rounds one by one (three sequences, one partly masked)."""
    from hebb_agents.encoders import lsh

    qk, v = _inputs(3, 37, 8, 5, seed=4, dtype=torch.float64)
    mask = torch.zeros(3, 37, dtype=torch.bool)
    mask[1, 20:] = True
    mask[2, ::5] = True
    rotations = torch.randn(8, 5, 5, generator=torch.Generator().manual_seed(6), dtype=torch.float64)

    def run(rounds_per_group: int):
        with monkeypatch.context() as patch:
            patch.setattr(lsh, "_rounds_per_group", lambda *shape, **kind: rounds_per_group)
            q, w = qk.clone().requires_grad_(True), v.clone().requires_grad_(True)
            out, lse = lsh_attention(q, w, rotations, bucket_size=4, causal=causal, key_padding_mask=mask)
            (out.sin().sum() + lse.cos().sum()).backward()
        return out, lse, q.grad, w.grad

    for grouped, alone in zip(run(group), run(1)):
        assert torch.allclose(grouped, alone, rtol=0, atol=1e-12)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("n_hashes", [1, 3])
@pytest.mark.parametrize("joined", [True, False])
def test_a_batch_equals_its_sequences_one_at_a_time(
    monkeypatch, causal: bool, n_hashes: int, joined: bool
) -> None:
    """A single block takes its look-back windows as views of one gather; several blocks
    (sequences, rounds) run joined into one sequence of windows, or gather each window whole.
    Outputs, log-sum-exp and gradients must be those of each sequence alone with whole windows
    (10 chunks; two sequences unmasked, so that every chunk of theirs takes gradient, one with
    padding, two with masks)."""
    from hebb_agents.encoders import lsh

    qk, v = _inputs(5, 40, 8, 5, seed=9, dtype=torch.float64)
    mask = torch.zeros(5, 40, dtype=torch.bool)
    mask[2, 37:] = True  # as padding
    mask[3, 20:] = True
    mask[4, ::5] = True
    rotations = torch.randn(8, n_hashes, 5, generator=torch.Generator().manual_seed(3), dtype=torch.float64)

    def run(q: torch.Tensor, w: torch.Tensor, m: torch.Tensor, join: bool) -> tuple[torch.Tensor, ...]:
        with monkeypatch.context() as patch:
            patch.setattr(lsh, "_JOINED_MIN_CHUNKS", 2 if join else 1000)
            q, w = q.clone().requires_grad_(True), w.clone().requires_grad_(True)
            out, lse = lsh_attention(q, w, rotations, bucket_size=4, causal=causal, key_padding_mask=m)
            (out.sin().sum() + lse.cos().sum()).backward()
        return out, lse, q.grad, w.grad

    batch = run(qk, v, mask, joined)
    alone = [run(qk[i : i + 1], v[i : i + 1], mask[i : i + 1], False) for i in range(5)]
    for together, parts in zip(batch, zip(*alone)):
        assert torch.allclose(together, torch.cat(parts), rtol=0, atol=1e-12)


def test_blocks_of_one_chunk_are_never_joined(monkeypatch) -> None:
    """A single chunk's copy would be its own look-back (every key seen twice): even with the
    joining threshold at 1, several one-chunk sequences equal full attention."""
    from hebb_agents.encoders import lsh

    monkeypatch.setattr(lsh, "_JOINED_MIN_CHUNKS", 1)
    qk, v = _inputs(3, 7, 8, 5, seed=2, dtype=torch.float64)
    rotations = torch.randn(8, 1, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    out, lse = lsh_attention(qk, v, rotations, bucket_size=8)
    want, want_lse = full_shared_qk_attention(qk, v, return_lse=True)
    assert torch.allclose(out, want, rtol=0, atol=1e-12)
    assert torch.allclose(lse, want_lse, rtol=0, atol=1e-12)


def test_round_groups_follow_the_working_set_budget() -> None:
    from hebb_agents.encoders.lsh import _rounds_per_group

    # one sequence of width 64 in buckets of 64: 4 rounds at 1,024 tokens, 2 at 2,048, then 1
    assert [_rounds_per_group(n, 64, 64, 64) for n in (1024, 2048, 4096, 65536)] == [4, 2, 1, 1]
    assert _rounds_per_group(8 * 1024, 64, 64, 64) == 1  # 8 heads (or sequences) count as tokens
    assert _rounds_per_group(1024, 64, 64, 64, look_back=False) == 8  # a single chunk per sequence


@pytest.mark.parametrize(
    ("length", "causal", "masked", "dedup"),
    [
        (23, True, True, False),
        (23, True, True, True),
        (23, False, False, False),
        (23, False, True, True),
        (5, False, False, True),  # two chunks: every round's window is the whole sequence
    ],
)
def test_gradients_through_several_rounds_pass_gradcheck(
    length: int, causal: bool, masked: bool, dedup: bool
) -> None:
    qk, v = _inputs(2, length, 4, 3, seed=2, dtype=torch.float64)
    qk.requires_grad_(True)
    v.requires_grad_(True)
    mask = None
    if masked:
        mask = torch.zeros(2, length, dtype=torch.bool)
        mask[1, 15:] = True
    attn = LSHAttention(bucket_size=3, n_hashes=3, causal=causal, allow_duplicate_attention=not dedup, seed=3)
    assert torch.autograd.gradcheck(lambda q, w: attn(q, w, key_padding_mask=mask), (qk, v), fast_mode=True)


def test_gradients_with_attention_dropout_pass_gradcheck() -> None:
    # The same dropout masks at every call (seed reset inside), so the function is deterministic.
    qk, v = _inputs(1, 19, 4, 3, seed=5, dtype=torch.float64)
    qk.requires_grad_(True)
    v.requires_grad_(True)
    attn = LSHAttention(bucket_size=4, n_hashes=2, dropout=0.3, seed=2).train()

    def attend(q: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        torch.manual_seed(0)
        return attn(q, w)

    assert not torch.equal(attend(qk, v), attn.eval()(qk, v))  # dropout is on
    attn.train()
    assert torch.autograd.gradcheck(attend, (qk, v), fast_mode=True)


@pytest.mark.parametrize(
    ("causal", "dedup", "dropout", "qk_grad"),
    [(True, False, 0.0, True), (False, True, 0.0, True), (True, False, 0.3, True), (True, False, 0.0, False)],
)
def test_second_derivatives_pass_gradgradcheck(
    causal: bool, dedup: bool, dropout: float, qk_grad: bool
) -> None:
    # create_graph=True (gradient penalties, meta-learning): the hand-written backward is replaced
    # by autograd over a replay of the forward pass, with the same dropout mask; also when only
    # the values need a gradient (the replayed log-sum-exp then has no graph)
    qk, v = _inputs(2, 13, 4, 3, seed=4, dtype=torch.float64)
    qk.requires_grad_(qk_grad)
    v.requires_grad_(True)
    attn = LSHAttention(
        bucket_size=3, n_hashes=2, causal=causal, allow_duplicate_attention=not dedup, dropout=dropout, seed=1
    ).train()

    def attend(q: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        torch.manual_seed(0)
        return attn(q, w)

    if qk_grad:
        assert torch.autograd.gradgradcheck(attend, (qk, v), fast_mode=True)
    else:
        assert torch.autograd.gradgradcheck(lambda w: attend(qk, w), (v,), fast_mode=True)


@pytest.mark.parametrize(("n_hashes", "grouped"), [(1, False), (3, False), (3, True)])
@pytest.mark.parametrize("causal", [False, True])
def test_first_derivatives_are_the_same_with_create_graph(
    monkeypatch, n_hashes: int, grouped: bool, causal: bool
) -> None:
    # gradgradcheck differentiates the first derivatives without checking their values: with
    # create_graph=True (a replay under autograd) they must equal the hand-written backward's,
    # with every round in one group and with one round a group
    from hebb_agents.encoders import lsh

    if grouped:
        monkeypatch.setattr(lsh, "_ROUND_GROUP_ELEMENTS", 1)
    qk, v = _inputs(2, 37, 4, 3, seed=6, dtype=torch.float64)
    qk.requires_grad_(True)
    v.requires_grad_(True)
    rotations = torch.randn(4, n_hashes, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    grads = []
    for create_graph in (False, True):
        out, lse = lsh_attention(qk, v, rotations, bucket_size=4, causal=causal)
        loss = out.square().sum() + lse.sum()
        grads.append(torch.autograd.grad(loss, (qk, v), create_graph=create_graph))
    for plain, replayed in zip(*grads):
        torch.testing.assert_close(replayed, plain, rtol=0, atol=1e-12)


def test_skipping_the_log_sum_exp_changes_nothing_else() -> None:
    # One round without return_lse skips computing it; outputs and gradients must not move.
    qk, v = _inputs(2, 29, 4, 3, seed=4, dtype=torch.float64)
    qk.requires_grad_(True)
    v.requires_grad_(True)
    mask = torch.zeros(2, 29, dtype=torch.bool)
    mask[0, 20:] = True
    rotations = torch.randn(4, 1, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)

    def attend(q: torch.Tensor, w: torch.Tensor, return_lse: bool) -> tuple:
        return lsh_attention(
            q, w, rotations, bucket_size=4, causal=True, key_padding_mask=mask, return_lse=return_lse
        )

    with_lse, lse = attend(qk, v, True)
    without, none = attend(qk, v, False)
    assert none is None and lse is not None
    assert torch.equal(with_lse, without)
    grad = torch.randn_like(without)
    assert all(
        torch.equal(a, b)
        for a, b in zip(
            torch.autograd.grad(with_lse, (qk, v), grad), torch.autograd.grad(without, (qk, v), grad)
        )
    )
    assert torch.autograd.gradcheck(lambda q, w: attend(q, w, False)[0], (qk, v), fast_mode=True)


def test_error_against_full_attention_falls_as_hashes_grow() -> None:
    errors = []
    for n_hashes in (1, 2, 4, 8):
        per_seed = []
        for seed in range(6):
            qk, v = _inputs(1, 256, 16, 16, seed=100 + seed)
            ref = full_shared_qk_attention(qk, v)
            attn = LSHAttention(bucket_size=16, n_hashes=n_hashes, seed=seed)
            per_seed.append((attn(qk, v) - ref).abs().mean().item())
        errors.append(sum(per_seed) / len(per_seed))
    assert all(a > b for a, b in zip(errors, errors[1:])), errors
    assert errors[-1] < 0.6 * errors[0], errors


@pytest.mark.parametrize("causal", [False, True])
def test_masked_tokens_do_not_change_other_outputs(causal: bool) -> None:
    qk, v = _inputs(1, 300, 16, 8, seed=4)
    mask = torch.zeros(1, 300, dtype=torch.bool)
    mask[0, [0, 5, 77, 150, 151, 299]] = True
    attn = LSHAttention(bucket_size=16, n_hashes=4, causal=causal, seed=9)
    out = attn(qk, v, key_padding_mask=mask)
    qk2, v2 = qk.clone(), v.clone()
    qk2[mask] = 50.0 * torch.randn_like(qk2[mask])
    v2[mask] = 1e3
    out2 = attn(qk2, v2, key_padding_mask=mask)
    keep = ~mask[0]
    assert torch.equal(out[0, keep], out2[0, keep])
    # Unmasking changes the outputs: the test above could fail.
    assert not torch.allclose(attn(qk2, v2)[0, keep], out[0, keep])


def test_padding_tokens_do_not_change_other_outputs() -> None:
    # 100 real tokens, then 20 padding tokens masked out: same chunk count (bucket 64), so the
    # real tokens' outputs must be identical to the unpadded run.
    qk, v = _inputs(1, 120, 16, 8, seed=6)
    mask = torch.zeros(1, 120, dtype=torch.bool)
    mask[0, 100:] = True
    attn = LSHAttention(bucket_size=64, n_hashes=2, causal=False, n_buckets=4, seed=1)
    padded = attn(qk, v, key_padding_mask=mask)[0, :100]
    plain = attn(qk[:, :100], v[:, :100])[0]
    assert torch.allclose(padded, plain, atol=1e-6)


@pytest.mark.parametrize("length", [1, 3, 63, 65, 127, 129, 333, 1001])
def test_odd_lengths_work_forward_and_backward(length: int) -> None:
    qk, v = _inputs(2, length, 16, 8, seed=length)
    qk.requires_grad_(True)
    attn = LSHAttention(bucket_size=64, n_hashes=2, causal=True)
    out = attn(qk, v)
    assert out.shape == (2, length, 8)
    assert torch.isfinite(out).all()
    out.square().sum().backward()
    assert qk.grad is not None and torch.isfinite(qk.grad).all()


def test_same_seed_same_output_and_fresh_rotations_by_default() -> None:
    qk, v = _inputs(1, 512, 16, 8, seed=7)
    seeded = LSHAttention(bucket_size=16, n_hashes=2, seed=123)
    assert torch.equal(seeded(qk, v), seeded(qk, v))
    assert torch.equal(seeded(qk, v), LSHAttention(bucket_size=16, n_hashes=2, seed=123)(qk, v))
    fresh = LSHAttention(bucket_size=16, n_hashes=2)
    assert not torch.equal(fresh(qk, v), fresh(qk, v))
    one = fresh(qk, v, generator=torch.Generator().manual_seed(4))
    two = fresh(qk, v, generator=torch.Generator().manual_seed(4))
    assert torch.equal(one, two)
    torch.manual_seed(8)
    three = fresh(qk, v)
    torch.manual_seed(8)
    assert torch.equal(three, fresh(qk, v))


def test_attention_dropout_only_in_training() -> None:
    qk, v = _inputs(1, 200, 16, 8, seed=3)
    attn = LSHAttention(bucket_size=16, n_hashes=2, dropout=0.5, seed=1)
    attn.eval()
    assert torch.equal(attn(qk, v), attn(qk, v))
    attn.train()
    assert not torch.equal(attn(qk, v), attn(qk, v))
    torch.manual_seed(0)
    first = attn(qk, v)
    torch.manual_seed(0)
    assert torch.equal(first, attn(qk, v))


def test_multi_head_self_attention_matches_per_head_full_attention() -> None:
    torch.manual_seed(0)
    layer = LSHSelfAttention(dim=24, heads=3, bucket_size=64, n_hashes=1, causal=True)
    x = torch.randn(2, 90, 24)
    out = layer(x)
    qk = layer.to_qk(x).view(2, 90, 3, 8).transpose(1, 2).reshape(6, 90, 8)
    v = layer.to_v(x).view(2, 90, 3, 8).transpose(1, 2).reshape(6, 90, 8)
    heads = full_shared_qk_attention(qk, v, causal=True).view(2, 3, 90, 8).transpose(1, 2).reshape(2, 90, 24)
    assert torch.allclose(out, layer.to_out(heads), atol=1e-5)


def test_bad_arguments_are_rejected_with_the_value() -> None:
    with pytest.raises(ValueError, match="bucket_size"):
        LSHAttention(bucket_size=0)
    with pytest.raises(ValueError, match="n_hashes"):
        LSHAttention(n_hashes=0)
    with pytest.raises(ValueError, match="n_buckets"):
        LSHAttention(n_buckets=5)
    with pytest.raises(ValueError, match="dropout"):
        LSHAttention(dropout=1.0)
    attn = LSHAttention(bucket_size=8, n_hashes=2)
    qk, v = _inputs(1, 20, 4, 4, seed=0)
    with pytest.raises(ValueError, match="rotations must have shape"):
        attn(qk, v, rotations=torch.randn(4, 3, 2))
    with pytest.raises(ValueError, match="key_padding_mask"):
        attn(qk, v, key_padding_mask=torch.zeros(1, 19, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"generator must be a torch.Generator or None, got 5"):
        attn(qk, v, generator=5)
    # flags were read for their truth value; the layer's two rates were told apart only by torch
    for make, message in [
        (lambda: LSHAttention(causal="no"), "causal must be a boolean (true or false), got 'no'"),
        (lambda: LSHAttention(allow_duplicate_attention=None), "allow_duplicate_attention must be a boolean"),
        (lambda: LSHSelfAttention(16, attn_dropout=1.0), "attn_dropout must be a number in [0, 1), got 1.0"),
        (lambda: LSHSelfAttention(16, dropout=1.5), "dropout must be a number in [0, 1], got 1.5"),
        (lambda: LSHSelfAttention(16, dropout="0.1"), "dropout must be a number in [0, 1], got '0.1'"),
    ]:
        with pytest.raises(ValueError, match=re.escape(message)):
            make()


def test_self_attention_checks_its_inputs_in_the_callers_terms() -> None:
    layer = LSHSelfAttention(32, heads=4, bucket_size=8, n_hashes=2, seed=0)
    x = torch.randn(2, 20, 32)
    # (B, L) of the caller, not (B * heads, L) of the split heads
    with pytest.raises(ValueError, match=r"key_padding_mask must be \(B, L\) = \(2, 20\), got \(2, 19\)"):
        layer(x, key_padding_mask=torch.zeros(2, 19, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"at least one sequence of one token, got x \(2, 0, 32\)"):
        layer(torch.randn(2, 0, 32))
    for dtype in (torch.float32, torch.int64):
        with pytest.raises(ValueError, match=f"must be a bool tensor.*got a {dtype}"):
            layer(x, key_padding_mask=torch.zeros(2, 20, dtype=dtype))
    for bad in (torch.randn(20, 32), torch.randn(2, 20, 31)):
        with pytest.raises(ValueError, match=re.escape(f"(B, L, dim) = (B, L, 32), got {tuple(bad.shape)}")):
            layer(bad)
    assert layer(x, key_padding_mask=torch.zeros(2, 20, dtype=torch.bool)).shape == (2, 20, 32)


def test_lsh_attention_checks_its_mask_and_length() -> None:
    attn = LSHAttention(bucket_size=8, n_hashes=2)
    qk, v = _inputs(2, 20, 4, 4, seed=0)
    with pytest.raises(ValueError, match="must be a bool tensor"):
        attn(qk, v, key_padding_mask=torch.zeros(2, 20))
    with pytest.raises(ValueError, match=r"LSHAttention needs at least one sequence.*\(2, 0, 4\)"):
        attn(qk[:, :0], v[:, :0])


@pytest.mark.parametrize("name", ["bucket_size", "n_hashes", "n_buckets"])
def test_integer_arguments_take_any_integer_type_and_no_other(name: str) -> None:
    import numpy as np

    for good in (8, np.int64(8), np.int32(8), 8.0):  # a whole float: JSON from other tools, older files
        attn = LSHAttention(**{name: good})
        value = attn.fixed_n_buckets if name == "n_buckets" else getattr(attn, name)
        assert value == 8 and type(value) is int
    for bad in (8.5, "8", True, 0):
        with pytest.raises(ValueError, match=f"{name} must be an (even )?int"):
            LSHAttention(**{name: bad})


def _grad_modules():
    torch.manual_seed(0)
    self_attention = LSHSelfAttention(16, heads=2, bucket_size=8, n_hashes=2, seed=0)
    attention = LSHAttention(bucket_size=8, n_hashes=1, seed=0)
    v = torch.randn(3, 20, 16)
    return [self_attention, lambda x: attention(x, v)]


@pytest.mark.parametrize("index", [0, 1], ids=["self_attention", "lsh_attention_one_round"])
def test_torch_func_grad_and_vmap_grad_equal_autograd(index: int) -> None:
    module = _grad_modules()[index]
    x = torch.randn(3, 20, 16, generator=torch.Generator().manual_seed(1))
    leaf = x.clone().requires_grad_(True)
    (module(leaf) * torch.linspace(-1, 1, 16)).sum().backward()

    def loss(t: torch.Tensor) -> torch.Tensor:
        return (module(t) * torch.linspace(-1, 1, 16)).sum()

    assert torch.allclose(torch.func.grad(loss)(x), leaf.grad, atol=1e-6)
    if index == 0:  # one sequence per vmapped call
        per_sample = torch.vmap(torch.func.grad(lambda xi: loss(xi[None])))(x)
        assert torch.allclose(per_sample, leaf.grad, atol=1e-6)


def test_torch_func_on_one_sequence_of_many_chunks_equals_autograd() -> None:
    """One sequence takes its look-back windows as overlapping views: grad and vmap(grad) see them."""
    attention = LSHAttention(bucket_size=4, n_hashes=1, seed=0)
    x = torch.randn(3, 1, 20, 8, generator=torch.Generator().manual_seed(1))
    v = torch.randn(1, 20, 8, generator=torch.Generator().manual_seed(2))

    def loss(t: torch.Tensor) -> torch.Tensor:
        return (attention(t, v) * torch.linspace(-1, 1, 8)).sum()

    expected = []
    for sample in x:
        leaf = sample.clone().requires_grad_(True)
        loss(leaf).backward()
        expected.append(leaf.grad)
    assert torch.allclose(torch.func.grad(loss)(x[0]), expected[0], atol=1e-6)
    assert torch.allclose(torch.vmap(torch.func.grad(loss))(x), torch.stack(expected), atol=1e-6)


def test_a_seeded_module_runs_under_vmap_on_its_first_call() -> None:
    x = torch.randn(3, 20, 16, generator=torch.Generator().manual_seed(2))
    torch.manual_seed(0)
    first = LSHSelfAttention(16, heads=2, bucket_size=8, n_hashes=2, seed=4)
    torch.manual_seed(0)
    twin = LSHSelfAttention(16, heads=2, bucket_size=8, n_hashes=2, seed=4)
    # vmap's default randomness="error" refused the seeded draw until a plain call had cached it
    with torch.no_grad():
        mapped = torch.vmap(lambda xi: first(xi[None])[0])(x)
        assert torch.allclose(mapped, twin(x), atol=1e-6)
    # unseeded rotations are random operations: vmap wants a randomness setting
    unseeded = LSHSelfAttention(16, heads=2, bucket_size=8, n_hashes=2)
    with pytest.raises(RuntimeError, match="randomness"):
        torch.vmap(lambda xi: unseeded(xi[None])[0])(x)
    assert torch.vmap(lambda xi: unseeded(xi[None])[0], randomness="same")(x).shape == x.shape


def test_vmap_over_masks_or_rotations_alone_runs_on_plain_operations() -> None:
    """Only the mask (or the rotations) is batched: the inputs are plain tensors, the transform runs."""
    m = LSHSelfAttention(16, heads=2, bucket_size=4, n_hashes=2, seed=1)
    x = torch.randn(1, 13, 16)
    masks = torch.rand(3, 13, generator=torch.Generator().manual_seed(0)) < 0.3
    batched = torch.vmap(lambda mask: m(x, key_padding_mask=mask[None]))(masks)
    for row, mask in zip(batched, masks):
        torch.testing.assert_close(row, m(x, key_padding_mask=mask[None]), rtol=1e-5, atol=1e-6)
    attention = LSHAttention(bucket_size=4, n_hashes=1)
    qk, v = torch.randn(1, 13, 8), torch.randn(1, 13, 8)
    rotations = torch.randn(2, 8, 1, 2, generator=torch.Generator().manual_seed(1))
    batched = torch.vmap(lambda r: attention(qk, v, rotations=r))(rotations)
    for row, r in zip(batched, rotations):
        torch.testing.assert_close(row, attention(qk, v, rotations=r), rtol=1e-5, atol=1e-6)


def test_unit_keys_backward_equals_autograd_of_normalize() -> None:
    """The keys' hand-written backward must equal autograd's through ``F.normalize``: zero rows,
    rows below eps and exactly at it included; in float16 at gradients near its range too; and it
    must be twice differentiable."""
    from hebb_agents.encoders.lsh import _unit

    qk = torch.randn(2, 6, 5, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    qk[0, 2] = 0.0
    qk[1, 4] = 1e-14  # below eps: a constant divisor there
    qk[1, 5] = torch.tensor(
        [1e-12, 0, 0, 0, 0], dtype=torch.float64
    )  # at eps: F.normalize passes the gradient through
    weight = torch.randn(2, 6, 5, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    large = [(qk[0, :2] * 4).half(), (weight[0, :2] * 3e3).half()]  # float16, no zero rows: finite
    for x, w, tolerance in [(qk, weight, 1e-12), (*large, 1e-3)]:
        mine = x.clone().requires_grad_(True)
        plain = x.clone().requires_grad_(True)
        keys = _unit(mine)
        eps = max(1e-12, torch.finfo(x.dtype).tiny)
        want = torch.nn.functional.normalize(plain, dim=-1, eps=eps)
        assert "UnitRows" in type(keys.grad_fn).__name__
        assert torch.equal(keys, want)
        keys.backward(w)
        want.backward(w)
        assert torch.isfinite(mine.grad).all()
        scale = plain.grad.abs().max()
        assert torch.allclose(mine.grad, plain.grad, rtol=0, atol=tolerance * float(scale))
    nonzero = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(_unit, (nonzero,))


def test_float16_second_derivatives_stay_finite_with_internal_padding() -> None:
    """Padding rows are zero: the keys' double backward must not turn them into NaN that the
    attention's double backward then spreads to real tokens."""
    g = torch.Generator().manual_seed(0)
    qk = torch.randn(2, 37, 8, generator=g).half().requires_grad_(True)
    v = torch.randn(2, 37, 5, generator=g).half()
    rotations = torch.randn(8, 3, 5, generator=g).half()
    out, lse = lsh_attention(qk, v, rotations, bucket_size=4, causal=True, kernel="torch")
    (grad,) = torch.autograd.grad(out.float().sum() + lse.float().sum(), qk, create_graph=True)
    (second,) = torch.autograd.grad(grad.float().pow(2).sum(), qk)
    assert torch.isfinite(grad).all() and torch.isfinite(second).all()
