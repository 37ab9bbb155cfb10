"""The compiled group step of MuJoCo physics (hebb_envs.batch_physics) against the bindings' own calls."""

from __future__ import annotations

import numpy as np
import pytest

from hebb_envs import batch_physics
from hebb_envs.batch_physics import Layout, Region, resolve_env_kernel, step_physics
from hebb_envs.locomotion import AntDamageEnv, HalfCheetahDamageEnv


def test_compiled_and_python_physics_give_the_same_states_and_reads():
    """Both paths step each env as mj_step / mj_rnePostConstraint do, and read the same values."""
    pairs = [[AntDamageEnv(damage=damage) for _ in range(2)] for damage in ("intact", "front_left_short")]
    for envs in pairs:
        for env in envs:
            env.reset(seed=3)
    compiled, python = [pair[0] for pair in pairs], [pair[1] for pair in pairs]  # bodies differ per row
    nbody = compiled[0].model.nbody
    before = (Region("qpos", 0, 3), Region("xpos", 3, 2))
    after = (Region("qvel", 0, 14), Region("cfrc_ext", 0, 6 * nbody), Region("qpos", 2, 1))
    layout = Layout(before, after, 8)
    rng = np.random.default_rng(0)
    largest_force = 0.0
    for _ in range(30):
        actions = rng.uniform(-1, 1, (2, 8)).astype(np.float32)
        got = step_physics(compiled, actions, layout, kernel="numba")
        want = step_physics(python, actions, layout, kernel="python")
        for g, w in zip(got, want):
            np.testing.assert_array_equal(g, w)
        largest_force = max(largest_force, np.abs(got[1][:, 14:-1]).max())
        assert got[0].shape == (2, 5) and got[1].shape == (2, 14 + 6 * nbody + 1)
        for c, p in zip(compiled, python):
            np.testing.assert_array_equal(c.data.qpos, p.data.qpos)
            np.testing.assert_array_equal(c.data.ctrl, p.data.ctrl)
            assert c.data.time == p.data.time
    assert largest_force > 0  # contacts happened: the contact forces were compared


def test_env_kernel_names_are_checked_and_read_from_the_environment(monkeypatch):
    with pytest.raises(ValueError, match="unknown env kernel 'fortran'.*accepted: auto, numba, python"):
        resolve_env_kernel("fortran")
    monkeypatch.setenv("HEBB_ENV_KERNEL", "python")
    assert resolve_env_kernel() == "python"
    assert HalfCheetahDamageEnv.batch([HalfCheetahDamageEnv()]).kernel == "python"
    monkeypatch.setenv("HEBB_ENV_KERNEL", "numba")
    assert HalfCheetahDamageEnv.batch([HalfCheetahDamageEnv()]).kernel == "numba"
    monkeypatch.setenv("HEBB_ENV_KERNEL", "cuda")
    with pytest.raises(ValueError, match="unknown env kernel 'cuda' \\(HEBB_ENV_KERNEL\\)"):
        HalfCheetahDamageEnv.batch([HalfCheetahDamageEnv()])


def test_without_the_compiled_path_auto_falls_back_and_numba_says_why(monkeypatch):
    monkeypatch.setattr(batch_physics, "_compiled_unavailable", lambda: "numba is not installed (test)")
    assert resolve_env_kernel("auto") == "python"
    with pytest.raises(ValueError, match="env kernel 'numba' is unavailable: numba is not installed"):
        resolve_env_kernel("numba")


def test_a_copied_env_steps_its_own_physics_not_the_originals():
    """Addresses are cached per env object: a deep copy (own MjModel and MjData) must not reuse them."""
    import copy

    original = HalfCheetahDamageEnv()
    original.reset(seed=0)
    batch_actions = np.full((1, 6), 0.5, dtype=np.float32)
    HalfCheetahDamageEnv.batch([original], kernel="numba").step(batch_actions)  # fills the cache
    clone = copy.deepcopy(original)
    qpos_before = original.data.qpos.copy()
    HalfCheetahDamageEnv.batch([clone], kernel="numba").step(batch_actions)
    np.testing.assert_array_equal(original.data.qpos, qpos_before)  # the original did not move
    assert not np.array_equal(clone.data.qpos, qpos_before)
