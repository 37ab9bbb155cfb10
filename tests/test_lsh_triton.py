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

from hebb_agents.encoders.lsh import KERNELS, LSHAttention, lsh_attention

ROOT = Path(__file__).resolve().parents[1]
triton = pytest.importorskip("triton", reason="the Triton kernels need the triton package (dev extra)")


def _interpreter_env() -> dict[str, str]:
    return {**os.environ, "TRITON_INTERPRET": "1"}


def test_fused_kernels_equal_the_torch_path_in_the_interpreter() -> None:
    # float32 and float16; causal, masked, 1-4 rounds, lengths that are not multiples of the bucket;
    # outputs, log-sum-exp and gradients; and the hash kernel alone
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "check_lsh_kernels.py"), "--small"],
        env=_interpreter_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    rows = [line for line in done.stdout.splitlines() if "hashes=" in line]
    assert len(rows) == 16 and not any("FAILED" in line for line in rows)
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
    with pytest.raises(ValueError, match="needs the triton package and a CUDA tensor"):
        lsh_attention(x, x, torch.randn(16, 1, 1), 16, kernel="triton")


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
