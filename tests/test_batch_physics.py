"""The compiled group step of MuJoCo physics (hebb_envs.batch_physics) against the bindings' own calls."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from hebb_envs import batch_physics
from hebb_envs.batch_physics import Layout, Region, resolve_env_kernel, step_physics
from hebb_envs.locomotion import AntDamageEnv, HalfCheetahDamageEnv


def test_compiled_and_python_physics_give_the_same_states_and_reads():
    """Both paths step each env as mj_step / mj_rnePostConstraint do, and read the same values."""
    pytest.importorskip("numba", reason="the compiled path needs numba (the fast extra)")
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
    if importlib.util.find_spec("numba") is not None:
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


def test_an_env_given_new_data_or_a_copy_steps_its_own_physics():
    """Addresses are cached per env against its model and data: replacing either, or copying the env,
    must never step the old data through cached raw addresses."""
    pytest.importorskip("numba", reason="the compiled path needs numba (the fast extra)")
    import copy

    import mujoco

    env = HalfCheetahDamageEnv()
    env.reset(seed=0)
    batch = HalfCheetahDamageEnv.batch([env], kernel="numba")
    push = np.full((1, 6), 0.5, dtype=np.float32)
    batch.step(push)  # fills the cache
    old_data = env.data
    old_qpos = old_data.qpos.copy()
    env.data = mujoco.MjData(env.model)  # a fresh state at the model's defaults
    mujoco.mj_forward(env.model, env.data)
    batch.step(push)
    np.testing.assert_array_equal(old_data.qpos, old_qpos)  # the replaced data did not move
    assert env.data.time > 0 and not np.array_equal(env.data.qpos, env.model.qpos0)
    clone = copy.deepcopy(env)
    clone_before, env_before = clone.data.qpos.copy(), env.data.qpos.copy()
    HalfCheetahDamageEnv.batch([clone], kernel="numba").step(push)
    np.testing.assert_array_equal(env.data.qpos, env_before)
    assert not np.array_equal(clone.data.qpos, clone_before)


def test_bad_calls_are_refused_before_any_memory_is_touched():
    """Was: the compiled path wrote as many controls as the actions had columns, past ctrl's end."""
    pytest.importorskip("numba", reason="the compiled path needs numba (the fast extra)")
    envs = [HalfCheetahDamageEnv() for _ in range(2)]
    for env in envs:
        env.reset(seed=0)
    layout = Layout((Region("qpos", 0, 1),), (Region("qvel", 0, 9),), 6)
    for kernel in ("numba", "python"):
        with pytest.raises(ValueError, match=r"actions must have shape \(2, 6\).*got \(2, 8\)"):
            step_physics(envs, np.full((2, 8), 7.0), layout, kernel=kernel)
        with pytest.raises(ValueError, match="region 5:105 lies outside MjData.qpos, which holds 9 values"):
            step_physics(envs, np.zeros((2, 6)), Layout((), (Region("qpos", 5, 100),), 6), kernel=kernel)
    with pytest.raises(ValueError, match="unknown env kernel 'auto'; accepted: numba, python"):
        step_physics(envs, np.zeros((2, 6)), layout, kernel="auto")
    with pytest.raises(ValueError, match="layout for 8 actuators, but the model has 6"):
        step_physics(envs, np.zeros((2, 8)), Layout((), (), 8), kernel="numba")
    np.testing.assert_array_equal(envs[0].data.ctrl, 0.0)
    shared = HalfCheetahDamageEnv()
    twin = HalfCheetahDamageEnv()
    twin.data = shared.data
    with pytest.raises(ValueError, match="envs with their own MjData"):
        HalfCheetahDamageEnv.batch([shared, twin])


def test_actions_of_any_real_dtype_step_both_paths_alike():
    """The compiled path takes the actions as float64 (exact for these dtypes), as ctrl's assignment does."""
    pytest.importorskip("numba", reason="the compiled path needs numba (the fast extra)")
    for dtype in (np.float16, np.float32, np.int64):
        pair = [HalfCheetahDamageEnv() for _ in range(2)]
        for env in pair:
            env.reset(seed=1)
        layout = Layout((), (Region("qpos", 0, 9),), 6)
        actions = np.array([[1, -1, 0, 1, 0, -1]], dtype=dtype)
        got = step_physics(pair[:1], actions, layout, kernel="numba")[1]
        want = step_physics(pair[1:], actions, layout, kernel="python")[1]
        np.testing.assert_array_equal(got, want)
