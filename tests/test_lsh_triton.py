"""The fused Triton LSH kernels: checked against the PyTorch path through Triton's CPU interpreter.

On a machine with a CUDA GPU, ``scripts/check_lsh_kernels.py`` runs the same comparison compiled.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hebb_agents.encoders import lsh
from hebb_agents.encoders.lsh import KERNELS, LSHAttention, lsh_attention

ROOT = Path(__file__).resolve().parents[1]
triton = pytest.importorskip("triton", reason="the Triton kernels need the triton package (dev extra)")


def _interpreter_env() -> dict[str, str]:
    return {**os.environ, "TRITON_INTERPRET": "1"}


def test_fused_kernels_equal_the_torch_path_in_the_interpreter() -> None:
    # float32 and float16; causal, masked, 1-4 rounds, lengths that are not multiples of the bucket,
    # one chunk, two chunks, head widths that differ and are not powers of two; outputs,
    # log-sum-exp and gradients; and the hash kernel alone
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "check_lsh_kernels.py"), "--small"],
        env=_interpreter_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    rows = [line for line in done.stdout.splitlines() if "hashes=" in line]
    assert len(rows) == 22 and not any("FAILED" in line for line in rows)
    assert "hash buckets, float32: 100.000 %" in done.stdout


def test_fused_kernels_run_under_autograd_and_differ_from_no_kernels_only_by_rounding() -> None:
    # in-process: LSHAttention picks the kernels itself (kernel="auto") when they can run
    code = """
import torch
from hebb_agents.encoders.lsh import LSHAttention
torch.manual_seed(0)
x = torch.randn(2, 70, 16, requires_grad=True)
outs = []
for kernel in ("auto", "torch"):
    layer = LSHAttention(bucket_size=16, n_hashes=2, causal=True, seed=3, kernel=kernel)
    out = layer(x, x)
    (grad,) = torch.autograd.grad(out.square().sum(), x)
    outs.append((out.detach(), grad))
err = max((a - b).abs().max().item() for a, b in zip(*outs))
print(err)
"""
    done = subprocess.run(
        [sys.executable, "-c", code], env=_interpreter_env(), capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert float(done.stdout.strip()) < 1e-5


def test_unknown_kernel_is_named_with_the_accepted_values() -> None:
    with pytest.raises(ValueError, match="unknown kernel 'cuda'.*auto, torch, triton"):
        LSHAttention(kernel="cuda")
    assert KERNELS == ("auto", "torch", "triton")


def test_triton_on_a_cpu_tensor_without_the_interpreter_says_what_it_needs(monkeypatch) -> None:
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    x = torch.randn(1, 32, 16)
    with pytest.raises(ValueError, match="needs a CUDA tensor \\(got a cpu tensor\\)"):
        lsh_attention(x, x, torch.randn(16, 1, 1), 16, kernel="triton")


def test_triton_without_the_package_says_so(monkeypatch) -> None:
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # the device passes
    monkeypatch.setattr(lsh, "_triton_module", lambda: None)
    x = torch.randn(1, 32, 16)
    with pytest.raises(ValueError, match="needs the triton package"):
        lsh_attention(x, x, torch.randn(16, 1, 1), 16, kernel="triton")
    auto, _ = lsh_attention(x, x, torch.randn(16, 1, 1), 16, kernel="auto")  # PyTorch path
    assert auto.shape == x.shape


def _run_in_interpreter(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code], env=_interpreter_env(), capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


_INPUTS = """
import torch
from hebb_agents.encoders import lsh_triton
from hebb_agents.encoders.lsh import hash_buckets, lsh_attention
torch.manual_seed(0)
qk = torch.randn(2, 40, 8, requires_grad=True)
v = torch.randn(2, 40, 8, requires_grad=True)
rotations = torch.randn(8, 2, 2)
def run(kernel):
    return lsh_attention(qk, v, rotations, 16, causal=True, kernel=kernel)
def grads(kernel, create_graph=False):
    out, lse = run(kernel)
    return torch.autograd.grad(out.square().sum() + lse.sum(), (qk, v), create_graph=create_graph)
def gap(a, b):
    return max((x - y).abs().max().item() for x, y in zip(a, b))
real_launch = lsh_triton._launch
def refuse(*kernels):  # these kernels "need more shared memory than the GPU has"
    def launch(kernel, grid, *args, **settings):
        if kernel in kernels:
            raise lsh_triton.KernelDoesNotFit(f"{kernel.fn.__name__} too large")
        return real_launch(kernel, grid, *args, **settings)
    lsh_triton._launch = launch
"""


def test_second_derivatives_through_the_fused_kernels_equal_the_torch_paths() -> None:
    code = (
        _INPUTS
        + """
second = {}
for kernel in ("triton", "torch"):
    g_qk, g_v = grads(kernel, create_graph=True)
    second[kernel] = torch.autograd.grad(g_qk.square().sum() + g_v.sum(), (qk, v))
print(gap(second["triton"], second["torch"]), second["torch"][0].abs().max().item())
# only the values need a gradient: the log-sum-exp the kernels return then carries no graph
only_v = {}
for kernel in ("triton", "torch"):
    out, _ = lsh_attention(qk.detach(), v, rotations, 16, causal=True, kernel=kernel)
    (g_v,) = torch.autograd.grad(out.square().sum(), v, create_graph=True)
    only_v[kernel] = torch.autograd.grad(g_v.square().sum(), v)
print(gap(only_v["triton"], only_v["torch"]), only_v["torch"][0].abs().max().item())
"""
    )
    for line in _run_in_interpreter(code).splitlines():
        gap, scale = map(float, line.split())
        assert scale > 1e-3 and gap < 1e-5 * max(1.0, scale)


def test_kernels_too_large_for_the_gpu_fall_back_to_pytorch() -> None:
    # a backward kernel that does not fit: auto takes the gradients from the PyTorch path; a
    # forward kernel that does not fit: auto runs the PyTorch path; triton says why it cannot
    code = (
        _INPUTS
        + """
reference = grads("torch")
refuse(lsh_triton._round_backward_kernel)
print(gap(grads("auto"), reference))
try:
    grads("triton")
except ValueError as err:
    print(err)
refuse(lsh_triton._round_forward_kernel)
print(gap(run("auto"), run("torch")))
try:
    run("triton")
except ValueError as err:
    print(err)
"""
    )
    backward_gap, backward_message, forward_gap, forward_message = _run_in_interpreter(code).splitlines()
    assert float(backward_gap) < 1e-5 and float(forward_gap) == 0.0
    too_large = "kernel='triton': {} too large; use kernel='auto' or 'torch'"
    assert too_large.format("_round_backward_kernel") in backward_message
    assert too_large.format("_round_forward_kernel") in forward_message


def test_hash_tries_smaller_tiles_and_then_pytorch() -> None:
    code = (
        _INPUTS
        + """
x = torch.randn(2, 300, 8)
rot = torch.randn(8, 3, 5)
reference = hash_buckets(x, rot, kernel="torch")
tiles = lsh_triton.HASH_TILES
too_large = {tiles[0][0]}  # tiles by their number of tokens
def launch(kernel, grid, *args, **settings):
    used.append(settings["BLOCK_N"])
    if settings["BLOCK_N"] in too_large:
        raise lsh_triton.KernelDoesNotFit("too large")
    return real_launch(kernel, grid, *args, **settings)
lsh_triton._launch = launch
used = []
print(torch.equal(lsh_triton.hash_buckets_triton(x, rot), reference), used == [tiles[0][0], tiles[1][0]])
too_large.update(tile[0] for tile in tiles)
print(torch.equal(hash_buckets(x, rot, kernel="auto"), reference))
try:
    hash_buckets(x, rot, kernel="triton")
except ValueError as err:
    print(err)
"""
    )
    smaller_tile, pytorch, message = _run_in_interpreter(code).splitlines()
    assert smaller_tile == "True True" and pytorch == "True"
    assert "no hash tile" in message and "use kernel='auto' or 'torch'" in message


def test_vmap_runs_the_pytorch_path() -> None:
    # torch.func transforms cannot see inside a Triton launch (the Hebbian agent vmaps its encoder)
    code = (
        _INPUTS
        + """
x = torch.randn(3, 1, 40, 8)
batched = torch.vmap(lambda a: lsh_attention(a, a, rotations, 16, kernel="auto")[0])(x)
looped = torch.stack([lsh_attention(a, a, rotations, 16, kernel="torch")[0] for a in x])
# a transform over another input than qk: here the rotations
many = torch.randn(3, 8, 2, 2)
over_rotations = torch.vmap(lambda r: lsh_attention(x[0], x[0], r, 16, kernel="auto")[0])(many)
looped_rotations = torch.stack([lsh_attention(x[0], x[0], r, 16, kernel="torch")[0] for r in many])
print(torch.equal(batched, looped) and torch.equal(over_rotations, looped_rotations))
try:
    torch.vmap(lambda a: lsh_attention(a, a, rotations, 16, kernel="triton")[0])(x)
except ValueError as err:
    print(err)
"""
    )
    same, message = _run_in_interpreter(code).splitlines()
    assert same == "True" and "does not run under torch.func transforms" in message


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"dropout": 0.1}, "attention dropout"),
        ({"allow_duplicate_attention": False}, "de-duplication"),
        ({"bucket_size": 24}, "bucket_size 24"),
    ],
)
def test_settings_the_kernels_do_not_cover_are_named(monkeypatch, kwargs: dict, message: str) -> None:
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # the device check passes; nothing is launched
    x = torch.randn(1, 48, 16)
    settings = {"bucket_size": 16, **kwargs}
    with pytest.raises(ValueError, match=f"does not support {message}"):
        lsh_attention(x, x, torch.randn(16, 2, 2), kernel="triton", **settings)


def test_auto_falls_back_to_torch_where_the_kernels_do_not_apply(monkeypatch) -> None:
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    x = torch.randn(1, 40, 16, dtype=torch.float64)  # float64: PyTorch path, no kernel launched
    rotations = torch.randn(16, 2, 2)
    auto, _ = lsh_attention(x, x, rotations, 16, kernel="auto")
    plain, _ = lsh_attention(x, x, rotations, 16, kernel="torch")
    assert torch.equal(auto, plain)


def test_unseeded_rotations_come_from_the_requested_devices_rng_and_seeded_ones_do_not() -> None:
    layer = LSHAttention(bucket_size=16, n_hashes=2)
    torch.manual_seed(7)
    first = layer.draw_rotations(8, 64, device="cpu")
    torch.manual_seed(7)
    assert torch.equal(first, torch.randn(8, 2, 2))
    seeded = LSHAttention(bucket_size=16, n_hashes=2, seed=11)
    assert torch.equal(seeded.draw_rotations(8, 64, device="cpu"), seeded.draw_rotations(8, 64))


def test_only_ptxas_resource_failures_count_as_too_large() -> None:
    from hebb_agents.encoders.lsh_triton import _out_of_space

    # ptxas's verbose log lists registers for kernels that compiled; only its error lines count
    assert _out_of_space("ptxas fatal   : (C7600) Register allocation failed with register count of '255'")
    assert _out_of_space("ptxas error   : Entry function 'k' uses too much shared data (0x40000 bytes)")
    assert not _out_of_space(
        "ptxas info    : Used 255 registers\nptxas fatal   : Unresolved extern function 'f'"
    )


def test_compile_check_lists_shared_memory_without_a_gpu() -> None:
    # Triton's bundled ptxas compiles for a named architecture; no GPU is touched
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "check_lsh_kernels.py"),
            "--compile-for",
            "89",
            "--widths",
            "16",
            "--buckets",
            "16",
            "--dtypes",
            "float16",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "sm_89: 99 KiB shared memory per block"
    assert "hash torch.float16  first tile that fits: d=16: 256x64" in lines[1]
    assert [line.split()[0] for line in lines[2:]] == ["forward", "backward"]
    assert all(" NO" not in line and "d=16: " in line for line in lines[2:])
