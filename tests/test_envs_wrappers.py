"""Damage in the middle of an episode: continuous state, changed dynamics, marked in info."""

from __future__ import annotations

import gymnasium as gym
import mujoco
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import hebb_envs.wrappers
from hebb_envs.morphology import DamageSpec
from hebb_envs.wrappers import MidEpisodeDamage, ObservationHistory

ANT, CHEETAH = "hebb/AntDamage-v0", "hebb/HalfCheetahDamage-v0"


def _actions(n: int, dim: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, (n, dim))  # (n, act_dim)


@pytest.mark.parametrize(("env_id", "damage"), [(ANT, "front_left_paralysed"), (CHEETAH, "back_shin_short")])
def test_set_damage_keeps_the_physical_state_and_changes_the_body(env_id, damage):
    env = gym.make(env_id).unwrapped
    env.reset(seed=0)
    for a in _actions(30, env.action_space.shape[0]):
        env.step(a)
    old_model, old_data = env.model, env.data
    size = mujoco.mj_stateSize(old_model, mujoco.mjtState.mjSTATE_INTEGRATION)
    before = np.empty(size)
    mujoco.mj_getState(old_model, old_data, before, mujoco.mjtState.mjSTATE_INTEGRATION)
    obs_before = env._get_obs()

    env.set_damage(damage)
    assert env.model is not old_model and env.damage == damage
    after = np.empty(size)
    mujoco.mj_getState(env.model, env.data, after, mujoco.mjtState.mjSTATE_INTEGRATION)
    assert np.array_equal(before, after)  # time, qpos, qvel, act, ctrl, warm start: all unchanged
    assert env.data.time == old_data.time > 0
    assert np.array_equal(env.data.qpos, old_data.qpos) and np.array_equal(env.data.qvel, old_data.qvel)
    assert np.array_equal(env._get_obs(), obs_before)


@pytest.mark.parametrize(("env_id", "damage"), [(ANT, "front_left_paralysed"), (CHEETAH, "front_thigh_weak")])
def test_wrapper_switches_at_step_t_and_only_the_dynamics_change(env_id, damage):
    t_switch, n = 25, 40
    reference = gym.make(env_id)
    wrapped = MidEpisodeDamage(gym.make(env_id), damage, at_step=t_switch)
    manual = gym.make(env_id)
    actions = _actions(n, reference.action_space.shape[0])

    ref_obs = [reference.reset(seed=3)[0]]
    obs, info = wrapped.reset(seed=3)
    assert info["damage_step"] == t_switch and info["damage_applied"] is False
    dmg_obs, applied = [obs], []
    manual.reset(seed=3)
    for t, a in enumerate(actions, start=1):
        ref_obs.append(reference.step(a)[0])
        obs, _, _, _, info = wrapped.step(a)
        dmg_obs.append(obs)
        applied.append(info["damage_applied"])
        assert info["damage_step"] == t_switch
        assert info["damage"] == (damage if t >= t_switch else "intact")
        if t == t_switch:
            manual.unwrapped.set_damage(damage)
        manual_obs = manual.step(a)[0]
        assert np.array_equal(manual_obs, obs)  # the wrapper adds nothing beyond the body swap
    ref_obs, dmg_obs = np.array(ref_obs), np.array(dmg_obs)  # (n + 1, obs_dim)

    assert applied.index(True) == t_switch - 1 and sum(applied) == 1
    # identical until the switch, different right after it
    assert np.array_equal(ref_obs[:t_switch], dmg_obs[:t_switch])
    assert not np.allclose(ref_obs[t_switch], dmg_obs[t_switch])
    # no jump across the switch: the first damaged step moves the state no more than the intact one
    # (positions of an env that sees its body replaced would otherwise jump)
    jump = np.abs(dmg_obs[t_switch] - dmg_obs[t_switch - 1]).max()
    typical = np.abs(np.diff(ref_obs[t_switch - 10 : t_switch + 1], axis=0)).max()
    assert jump <= 2 * typical


def test_reset_restores_the_body_and_sampling_is_seeded():
    env = MidEpisodeDamage(gym.make(ANT), "unseen", at_step=(5, 15))
    seen_steps, seen_bodies = set(), set()
    for seed in range(30):
        _, info = env.reset(seed=seed)
        assert env.unwrapped.damage == "intact"
        step = info["damage_step"]
        assert 5 <= step <= 15
        for _ in range(step):
            _, _, terminated, truncated, info = env.step(np.zeros(8))
        assert info["damage_applied"] and info["damage"] != "intact"
        seen_steps.add(step)
        seen_bodies.add(info["damage"])
    assert len(seen_steps) > 5 and len(seen_bodies) > 3
    again = MidEpisodeDamage(gym.make(ANT), "unseen", at_step=(5, 15))
    a = [again.reset(seed=s)[1]["damage_step"] for s in range(10)]
    b = [env.reset(seed=s)[1]["damage_step"] for s in range(10)]
    assert a == b


def test_custom_spec_keeps_its_name_and_lock_pulls_the_joint_into_its_window():
    spec = DamageSpec("back_foot", "lock")
    env = MidEpisodeDamage(gym.make(CHEETAH), spec, at_step=10)
    env.reset(seed=0)
    for a in _actions(60, 6):
        _, _, _, _, info = env.step(a)
    assert info["damage"] == "back_foot:lock:0"
    model, data = env.unwrapped.model, env.unwrapped.data
    joint = model.joint("bfoot")
    assert abs(data.qpos[joint.qposadr[0]] - model.jnt_range[joint.id].mean()) < np.radians(1.0)


def test_no_damage_if_the_episode_ends_first():
    env = MidEpisodeDamage(gym.make(CHEETAH, max_episode_steps=20), "front_shin_paralysed", at_step=50)
    env.reset(seed=0)
    for _ in range(20):
        _, _, _, truncated, info = env.step(np.zeros(6))
        assert not info["damage_applied"]
    assert truncated and info["damage"] == "intact"


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: MidEpisodeDamage(gym.make("hebb/Memory-v0"), "front_left_short"), "needs a damage env"),
        (lambda: MidEpisodeDamage(gym.make(ANT), "front_left_short", at_step=0), "at_step"),
        (lambda: MidEpisodeDamage(gym.make(ANT), "front_left_short", at_step=(9, 3)), "low <= high"),
        # bools, None and fractional steps were taken as 1, a TypeError, or truncated
        (lambda: MidEpisodeDamage(gym.make(ANT), "front_left_short", at_step=True), "got True"),
        (lambda: MidEpisodeDamage(gym.make(ANT), "front_left_short", at_step=None), "got None"),
        (lambda: MidEpisodeDamage(gym.make(ANT), "front_left_short", at_step=2.5), "got 2.5"),
        (lambda: MidEpisodeDamage(gym.make(ANT), "front_left_short", at_step=(2.5, 5)), r"got \(2.5, 5\)"),
        (lambda: MidEpisodeDamage(gym.make(ANT), "front_left_short", at_step=(True, 5)), "low <= high"),
        (lambda: MidEpisodeDamage(gym.make(ANT), "front_left_short", at_step=(1, 2, 3)), "pair"),
        (lambda: MidEpisodeDamage(gym.make(ANT), "front_legs_gone"), "accepted: intact"),
    ],
)
def test_bad_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_whole_float_steps_are_accepted():
    env = MidEpisodeDamage(gym.make(CHEETAH), "front_shin_paralysed", at_step=(3.0, 3))
    assert env.reset(seed=0)[1]["damage_step"] == 3


# MuJoCo observations are unbounded in Gymnasium's own envs too; the checker's note on that is expected.
# check_env notes that a wrapped env is checked: that is the point here.
@pytest.mark.filterwarnings("ignore:.*Box observation space .*infinity")
@pytest.mark.filterwarnings("ignore:.*is different from the unwrapped version")
def test_wrapper_passes_check_env_and_is_remade_from_its_spec():
    env = MidEpisodeDamage(gym.make(CHEETAH), "seen", at_step=(2, 5))
    check_env(env, skip_render_check=True)  # re-makes the env from env.spec for its close check
    (wrapper_spec,) = env.spec.additional_wrappers
    assert wrapper_spec.entry_point == "hebb_envs.wrappers:MidEpisodeDamage"
    assert wrapper_spec.kwargs == {"damage": "seen", "at_step": (2, 5)}
    remade = gym.make(env.spec)
    assert isinstance(remade, MidEpisodeDamage) and remade.spec.additional_wrappers == (wrapper_spec,)
    for seed in (0, 1, 2):
        obs, info = env.reset(seed=seed)
        obs_again, info_again = remade.reset(seed=seed)
        assert np.array_equal(obs, obs_again) and info == info_again
        for a in _actions(8, 6, seed):
            step, step_again = env.step(a), remade.step(a)
            assert np.array_equal(step[0], step_again[0]) and step[1:] == step_again[1:]
        assert step[4]["damage_applied"] or step[4]["damage"] != "intact"  # the switch (step <= 5) came


def test_every_wrapper_records_its_arguments():
    wrappers = [getattr(hebb_envs.wrappers, name) for name in hebb_envs.wrappers.__all__]
    wrappers = [w for w in wrappers if isinstance(w, type) and issubclass(w, gym.Wrapper)]
    assert set(wrappers) == {MidEpisodeDamage, ObservationHistory}
    for wrapper in wrappers:
        assert issubclass(wrapper, gym.utils.RecordConstructorArgs), wrapper.__name__
    history = ObservationHistory(gym.make("hebb/Memory-v0", delay=3), length=4, stride=2)
    remade = gym.make(history.spec)
    assert isinstance(remade, ObservationHistory) and (remade.length, remade.stride) == (4, 2)
    assert np.array_equal(history.reset(seed=5)[0], remade.reset(seed=5)[0])
