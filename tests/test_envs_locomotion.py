"""Damaged Ant / HalfCheetah environments: stock equivalence, seeding, sampling, info, gait, rendering."""

from __future__ import annotations

import copy
import json
import os
import pickle
import re
import subprocess
import sys

import gymnasium as gym
import mujoco
import numpy as np
import pytest

import hebb_envs  # noqa: F401  (registers the ids)
from hebb_envs import morphology
from hebb_envs.locomotion import AntDamageEnv, HalfCheetahDamageEnv
from hebb_envs.morphology import CATALOGUE, SPLITS, DamageSpec, build_model

ANT, CHEETAH = "hebb/AntDamage-v0", "hebb/HalfCheetahDamage-v0"
KEEP_X = "exclude_current_positions_from_observation"

# Open-loop gaits: fixed sinusoidal torques, no feedback.
# Ant trot: action order is (front_right hip, ankle, front_left hip, ankle, back_left ..., back_right ...);
# the hip sign swings each leg backward, the ankle sign pushes each foot down, diagonal pairs in anti-phase.
_ANT_BACK = np.array([-1, 1, 1, -1])
_ANT_DOWN = np.array([1, 1, -1, -1])
_ANT_PHASE = np.array([np.pi, 0, np.pi, 0])
# HalfCheetah: one sinusoid per joint (bthigh, bshin, bfoot, fthigh, fshin, ffoot), period 12 steps.
_CHEETAH_PHASE = np.array([0, 0, np.pi, np.pi / 2, np.pi / 2, 3 * np.pi / 2])


def ant_gait(t: int) -> np.ndarray:
    a = np.empty(8)
    wave = np.sin(2 * np.pi * t / 20 + _ANT_PHASE)
    a[0::2] = 0.5 * _ANT_BACK * wave
    a[1::2] = 0.5 * _ANT_DOWN * wave
    return a


def cheetah_gait(t: int) -> np.ndarray:
    return np.sin(2 * np.pi * t / 12 + _CHEETAH_PHASE)


def distance(env_id: str, damage, gait, seed: int, steps: int = 300) -> float:
    env = gym.make(env_id, damage=damage)
    env.reset(seed=seed)
    for t in range(steps):
        _, _, terminated, truncated, info = env.step(gait(t))
        if terminated or truncated:
            break
    return info["x_progress"]


def rollout(env: gym.Env, seed: int, steps: int, actions_seed: int = 0):
    rng = np.random.default_rng(actions_seed)
    obs, info = env.reset(seed=seed)
    observations, rewards, names = [obs], [], [info.get("damage")]
    for _ in range(steps):
        obs, r, terminated, truncated, info = env.step(rng.uniform(-1, 1, env.action_space.shape))
        observations.append(obs)
        rewards.append(r)
        if terminated or truncated:
            break
    return np.array(observations), np.array(rewards), names


@pytest.mark.parametrize(
    ("stock_id", "damage_id", "kwargs"),
    [
        ("Ant-v5", ANT, {"healthy_z_range": (0.2, 1.0), "use_contact_forces": True}),
        ("HalfCheetah-v5", CHEETAH, {}),
    ],
)
def test_intact_is_gymnasiums_env_bit_for_bit(stock_id, damage_id, kwargs):
    stock = gym.make(stock_id)
    ours = gym.make(damage_id, **kwargs)
    assert ours.observation_space == stock.observation_space and ours.action_space == stock.action_space
    a = rollout(stock, seed=5, steps=60)
    b = rollout(ours, seed=5, steps=60)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


@pytest.mark.parametrize(
    ("cls", "kwargs"),
    [
        (HalfCheetahDamageEnv, {}),
        (HalfCheetahDamageEnv, {KEEP_X: False, "ctrl_cost_weight": 0.3}),
        (AntDamageEnv, {}),
        (AntDamageEnv, {"use_contact_forces": True, "healthy_z_range": (0.2, 1.0)}),
        (AntDamageEnv, {KEEP_X: False, "terminate_when_unhealthy": False}),
        # weights given as NumPy float32 scalars: NumPy 2 promotes them differently from Python floats
        (HalfCheetahDamageEnv, {"forward_reward_weight": np.float32(1.3)}),
        (AntDamageEnv, {"forward_reward_weight": np.float32(1.3), "healthy_reward": np.float32(1.0)}),
    ],
)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_step_equals_gymnasiums_step_bit_for_bit(cls, kwargs, dtype):
    """Our step computes Gymnasium's observation, reward, termination and info with less Python."""
    gym_step = cls.__mro__[2].step  # AntEnv.step / HalfCheetahEnv.step, Gymnasium's own code
    ours, twin = cls(damage="all", **kwargs), cls(damage="all", **kwargs)
    rng = np.random.default_rng(0)
    checked = terminations = 0
    for episode in range(3):
        for env in (ours, twin):
            env.reset(seed=episode)
        assert ours.damage == twin.damage
        for t in range(150):
            if t == 60:  # a body switch mid-episode, as MidEpisodeDamage does
                for env in (ours, twin):
                    env.set_damage(SPLITS[ours.robot]["unseen"][episode])
            action = rng.uniform(-1.5, 1.5, ours.action_space.shape).astype(dtype)
            obs, reward, terminated, truncated, info = ours.step(action)
            want_obs, want_reward, want_terminated, _, want_info = gym_step(twin, action)
            np.testing.assert_array_equal(obs, want_obs)
            assert obs.dtype == want_obs.dtype and obs.shape == ours.observation_space.shape
            assert reward == want_reward and terminated == want_terminated and not truncated
            assert np.asarray(reward).dtype == np.asarray(want_reward).dtype
            for key, value in want_info.items():
                assert info[key] == value and np.asarray(info[key]).dtype == np.asarray(value).dtype, key
            assert set(info) == set(want_info) | {"damage", "x_progress"}
            checked += 1
            if terminated:
                terminations += 1
                break
    assert checked > 100
    if kwargs.get("healthy_z_range") == (0.2, 1.0):
        assert terminations > 0  # the termination test was exercised


@pytest.mark.parametrize(
    ("cls", "kwargs"),
    [
        (HalfCheetahDamageEnv, {}),
        (HalfCheetahDamageEnv, {KEEP_X: False, "forward_reward_weight": np.float32(1.3)}),
        (AntDamageEnv, {"use_contact_forces": True, "healthy_z_range": (0.2, 1.0)}),
        (AntDamageEnv, {"healthy_z_range": (0.2, 1.0), "termination_grace_steps": 15}),
        (AntDamageEnv, {KEEP_X: False, "healthy_reward": np.float32(1.0), "terminate_when_unhealthy": False}),
    ],
)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kernel", ["numba", "python"])
def test_batch_step_equals_each_envs_own_step_bit_for_bit(cls, kwargs, dtype, kernel):
    """EnvBatch.step gives, row by row, exactly what each env's step gives (subsets of rows too), with
    the physics compiled (one numba call for the batch) or stepped from Python."""
    if kernel == "numba":
        pytest.importorskip("numba", reason="the compiled path needs numba (the fast extra)")
    n = 4
    batched, single = (
        [cls(damage="all", **kwargs) for _ in range(n)],
        [cls(damage="all", **kwargs) for _ in range(n)],
    )
    batch = cls.batch(batched, kernel=kernel)
    assert batch.kernel == kernel
    rng = np.random.default_rng(1)
    checked = terminations = 0
    for episode in range(2):
        for i in range(n):
            for env in (batched[i], single[i]):
                env.reset(seed=10 * episode + i)
        running = list(range(n))
        for t in range(120):
            if t == 50:  # a body switch mid-episode for one env
                for env in (batched[0], single[0]):
                    env.set_damage(SPLITS[env.robot]["unseen"][episode])
            actions = rng.uniform(-1.5, 1.5, (len(running), batched[0].action_space.shape[0])).astype(dtype)
            obs, reward, terminated, truncated, info = batch.step(actions, running)
            assert obs.shape == (len(running), *batched[0].observation_space.shape) and not truncated.any()
            for row, i in enumerate(running):
                want_obs, want_reward, want_terminated, _, want_info = single[i].step(actions[row])
                np.testing.assert_array_equal(obs[row], want_obs)
                assert obs.dtype == want_obs.dtype
                assert reward[row] == want_reward and reward.dtype == np.asarray(want_reward).dtype
                assert terminated[row] == bool(want_terminated)
                assert set(info) == set(want_info)
                assert info["damage"][row] == want_info.pop("damage")
                for key, value in want_info.items():
                    assert info[key][row] == value and info[key].dtype == np.asarray(value).dtype, key
                checked += 1
            terminations += int(terminated.sum())
            running = [i for row, i in enumerate(running) if not terminated[row]]
            if not running:
                break
    assert checked > 300
    if kwargs.get("healthy_z_range") == (0.2, 1.0):
        assert terminations > 0  # the termination (and, where set, grace) test was exercised


def test_batch_rejects_mixed_settings_other_envs_and_bad_actions():
    with pytest.raises(ValueError, match="same arguments.*these differ: _ctrl_cost_weight"):
        HalfCheetahDamageEnv.batch([HalfCheetahDamageEnv(), HalfCheetahDamageEnv(ctrl_cost_weight=0.3)])
    with pytest.raises(ValueError, match="takes unwrapped HalfCheetahDamageEnv envs"):
        HalfCheetahDamageEnv.batch([HalfCheetahDamageEnv(), AntDamageEnv()])
    with pytest.raises(ValueError, match="takes unwrapped"):
        HalfCheetahDamageEnv.batch([gym.make(CHEETAH)])
    with pytest.raises(ValueError, match="at least one env"):
        AntDamageEnv.batch([])
    envs = [
        HalfCheetahDamageEnv(damage=name) for name in ("intact", "front_thigh_paralysed")
    ]  # bodies may differ
    batch = HalfCheetahDamageEnv.batch(envs)
    for env in envs:
        env.reset(seed=0)
    with pytest.raises(ValueError, match=r"Action dimension mismatch. Expected \(2, 6\), found \(6,\)"):
        batch.step(np.zeros(6))
    with pytest.raises(ValueError, match=r"Expected \(1, 6\)"):
        batch.step(np.zeros((2, 6)), rows=[1])
    with pytest.raises(ValueError, match="at least one row"):
        batch.step(np.zeros((0, 6)), rows=[])
    with pytest.raises(ValueError, match="must not repeat an env"):
        batch.step(np.zeros((2, 6)), rows=[1, 1])
    with pytest.raises(ValueError, match="1-D sequence of env indices, got bool"):
        batch.step(np.zeros((2, 6)), rows=np.array([True, True]))
    with pytest.raises(ValueError, match=r"env indices in 0..1, got \[-1\]"):  # -1 aliases row 1
        batch.step(np.zeros((2, 6)), rows=[1, -1])
    with pytest.raises(ValueError, match=r"env indices in 0..1, got \[2\]"):
        batch.step(np.zeros((1, 6)), rows=[2])
    with pytest.raises(ValueError, match="distinct envs"):
        HalfCheetahDamageEnv.batch([envs[0], envs[0]])
    ranged = [AntDamageEnv(healthy_z_range=np.array([0.2, 1.0])) for _ in range(2)]
    AntDamageEnv.batch(ranged)  # array-valued settings compare as arrays
    with pytest.raises(ValueError, match="these differ: _healthy_z_range"):
        AntDamageEnv.batch([ranged[0], AntDamageEnv(healthy_z_range=(0.3, 1.0))])


def test_batch_step_sums_in_one_order_whatever_the_actions_layout():
    """Ant's 8 actions: a Fortran-ordered batch must still give each env's own ctrl cost, bit for bit."""
    batched, single = [AntDamageEnv() for _ in range(3)], [AntDamageEnv() for _ in range(3)]
    for i in range(3):
        batched[i].reset(seed=i)
        single[i].reset(seed=i)
    batch = AntDamageEnv.batch(batched)
    rng = np.random.default_rng(4)
    for _ in range(40):
        actions = np.asfortranarray(rng.uniform(-1, 1, (3, 8)))
        _, reward, _, _, info = batch.step(actions)
        for row, env in enumerate(single):
            _, want_reward, _, _, want_info = env.step(actions[row])
            assert reward[row] == want_reward and info["reward_ctrl"][row] == want_info["reward_ctrl"]


def test_step_rejects_a_wrong_action_shape():
    env = HalfCheetahDamageEnv()
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"Action dimension mismatch. Expected \(6,\), found \(5,\)"):
        env.step(np.zeros(5))


def test_observation_and_action_sizes_never_change():
    for env_id, robot in ((ANT, "ant"), (CHEETAH, "half_cheetah")):
        intact = gym.make(env_id)
        for name in CATALOGUE[robot]:
            env = gym.make(env_id, damage=name)
            obs, _ = env.reset(seed=0)
            assert env.observation_space == intact.observation_space
            assert obs.shape == intact.observation_space.shape
            assert env.action_space == intact.action_space
    assert gym.make(ANT).observation_space.shape == (27,)
    assert gym.make(ANT, use_contact_forces=True).observation_space.shape == (105,)


@pytest.mark.parametrize(("env_id", "damage"), [(ANT, "front_left_short"), (CHEETAH, "seen"), (ANT, "all")])
def test_same_seed_same_trajectory(env_id, damage):
    runs = [rollout(gym.make(env_id, damage=damage), seed=9, steps=80) for _ in range(2)]
    assert np.array_equal(runs[0][0], runs[1][0]) and np.array_equal(runs[0][1], runs[1][1])
    assert runs[0][2] == runs[1][2]
    other = rollout(gym.make(env_id, damage=damage), seed=10, steps=80)
    assert not np.array_equal(runs[0][0], other[0])


def test_damage_changes_the_dynamics():
    intact = rollout(gym.make(ANT), seed=1, steps=40)[0]
    short = rollout(gym.make(ANT, damage="front_left_short"), seed=1, steps=40)[0]
    assert np.array_equal(intact[0], short[0])  # same initial state draw
    assert not np.allclose(intact[-1], short[-1])


def test_sampling_draws_from_the_split_per_episode_and_is_seeded():
    env = gym.make(ANT, damage="seen")
    assert env.unwrapped.damage_pool == SPLITS["ant"]["seen"]
    names = [env.reset(seed=s)[1]["damage"] for s in range(40)]
    assert set(names) == set(SPLITS["ant"]["seen"])
    again = gym.make(ANT, damage="seen")
    assert names == [again.reset(seed=s)[1]["damage"] for s in range(40)]
    unseeded = [env.reset()[1]["damage"] for _ in range(40)]  # continues the generator
    assert set(unseeded) <= set(SPLITS["ant"]["seen"]) and len(set(unseeded)) > 1

    pool = gym.make(CHEETAH, damage=["intact", DamageSpec("front_foot", "weaken", 0.2)])
    drawn = {pool.reset(seed=s)[1]["damage"] for s in range(20)}
    assert drawn == {"intact", "front_foot:weaken:0.2"}


def test_reset_option_overrides_the_body_for_one_episode():
    env = gym.make(ANT, damage="front_left_short")
    _, info = env.reset(seed=0, options={"damage": "back_right_locked"})
    assert info["damage"] == "back_right_locked"
    assert env.unwrapped.model.dof_armature.max() > 100
    _, info = env.reset(seed=0)
    assert info["damage"] == "front_left_short"


def test_info_reports_progress_and_damage():
    env = gym.make(CHEETAH, damage=(DamageSpec("back_thigh", "paralyse"), DamageSpec("front_shin", "lock")))
    _, info = env.reset(seed=2)
    start = info["x_position"]
    assert info["damage"] == "back_thigh:paralyse:0+front_shin:lock:0" and info["x_progress"] == 0.0
    for t in range(30):
        _, _, _, _, info = env.step(cheetah_gait(t))
    for key in ("x_position", "x_velocity", "reward_forward", "reward_ctrl", "damage", "x_progress"):
        assert key in info
    assert np.isclose(info["x_progress"], info["x_position"] - start)
    assert np.isclose(info["reward_forward"], info["x_velocity"])


def test_ant_termination_options():
    saturated = np.ones(8)

    def episode_length(**kwargs) -> int:
        env = gym.make(ANT, max_episode_steps=300, **kwargs)
        env.reset(seed=0)
        rng = np.random.default_rng(0)
        for t in range(300):
            _, _, terminated, truncated, _ = env.step(np.sign(rng.standard_normal(8)) * saturated)
            if terminated or truncated:
                return t + 1
        return 300

    stock = episode_length(healthy_z_range=(0.2, 1.0))
    assert stock < 100  # Ant-v5's range ends bang-bang episodes early (the documented problem)
    assert episode_length() == 300  # our default range does not
    assert episode_length(healthy_z_range=(0.2, 1.0), termination_grace_steps=stock + 20) >= stock + 20
    assert episode_length(healthy_z_range=(0.2, 1.0), terminate_when_unhealthy=False) == 300


def test_open_loop_gait_covers_less_distance_with_a_paralysed_leg():
    # HalfCheetah: every seed shows it, and the mean gap is large
    seeds = range(3)
    intact = np.array([distance(CHEETAH, None, cheetah_gait, s) for s in seeds])
    assert intact.min() > 8.0
    for leg in ("back_thigh_paralysed", "front_thigh_paralysed"):
        damaged = np.array([distance(CHEETAH, leg, cheetah_gait, s) for s in seeds])
        assert np.all(damaged < intact) and damaged.mean() < intact.mean() - 3.0, leg
    # Ant: open-loop torques on a quadruped are chaotic, so compare means over seeds
    seeds = range(5)
    intact = np.mean([distance(ANT, None, ant_gait, s) for s in seeds])
    assert intact > 2.0
    for leg in ("front_left", "front_right", "back_left", "back_right"):
        damaged = np.mean([distance(ANT, f"{leg}_paralysed", ant_gait, s) for s in seeds])
        assert damaged < intact - 1.0, leg


def test_bodies_share_one_mjdata_and_the_cached_models_stay_untouched():
    env = gym.make(ANT, damage="all").unwrapped
    data = env.data
    models = set()
    for seed in range(30):
        env.reset(seed=seed)
        for t in range(5):
            env.step(ant_gait(t))
        assert env.data is data  # one MjData for every body: no memory per body
        models.add(id(env.model))
    assert len(models) > 5
    # the env never writes into the shared, cached models
    for name, specs in CATALOGUE["ant"].items():
        if specs:
            fresh = morphology._build_model.__wrapped__("ant", specs)
            cached = build_model("ant", specs)
            for field in ("actuator_gear", "geom_size", "body_mass", "jnt_range", "geom_rgba"):
                assert np.array_equal(getattr(fresh, field), getattr(cached, field)), (name, field)


def test_a_larger_render_size_stays_with_its_own_env():
    small = HalfCheetahDamageEnv(damage="front_shin_short", width=480, height=480)
    large = HalfCheetahDamageEnv(damage="front_shin_short", width=1600, height=1200)
    size = large.model.vis.global_
    assert (size.offwidth, size.offheight) == (1600, 1200)
    cached = build_model("half_cheetah", "front_shin_short")
    for model in (small.model, cached):
        assert (model.vis.global_.offwidth, model.vis.global_.offheight) != (1600, 1200)


def test_pickle_and_copy_rebuild_the_same_env():
    env = AntDamageEnv(damage="paper_seen", termination_grace_steps=3)
    clone = pickle.loads(pickle.dumps(env))
    assert clone.damage_pool == ("intact", "front_left_short") and clone._grace_steps == 3
    cheetah = copy.deepcopy(HalfCheetahDamageEnv(damage="front_shin_short"))
    assert cheetah.damage == "front_shin_short"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"damage": "front_left_gone"}, "accepted: intact, front_left_short"),
        ({"damage": DamageSpec("back_shin", "paralyse")}, "not a ant limb"),
        ({"xml_file": "ant.xml"}, "xml_file is set by AntDamageEnv"),
        ({"include_cfrc_ext_in_observation": True}, "use_contact_forces"),
        ({"termination_grace_steps": -1}, "termination_grace_steps"),
        ({"termination_grace_steps": None}, "termination_grace_steps must be an integer >= 0, got None"),
        ({"termination_grace_steps": 2.5}, "termination_grace_steps must be an integer"),
        ({"termination_grace_steps": True}, "termination_grace_steps must be an integer"),
        ({"damage": []}, "empty"),
    ],
)
def test_bad_arguments_name_what_is_accepted(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AntDamageEnv(**kwargs)


def test_rgb_render_headless_shows_the_damaged_limb_in_red():
    # A fresh interpreter, so MUJOCO_GL is read before any GL context exists.
    script = """
import json, gymnasium as gym, hebb_envs
def red(img):
    return int(((img[..., 0] > 180) & (img[..., 1] < 60) & (img[..., 2] < 60)).sum())
env = gym.make("hebb/AntDamage-v0", render_mode="rgb_array", width=160, height=120)
env.reset(seed=0)
intact = env.render()
env.unwrapped.set_damage("front_right_short")
damaged = env.render()
env.close()
print(json.dumps({"shape": intact.shape, "intact": red(intact), "damaged": red(damaged)}))
"""
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env={**os.environ, "MUJOCO_GL": "egl"},
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["shape"] == [120, 160, 3]
    assert result["intact"] == 0 and result["damaged"] > 20


def test_halfcheetah_creation_is_quiet_and_leaves_mujoco_warnings_alone(capfd):
    """The stock XML's ``settotalmass`` deprecation is dropped; the warning hook is restored."""
    env = gym.make("hebb/HalfCheetahDamage-v0")
    env.reset(seed=0)
    env.close()
    assert "settotalmass" not in capfd.readouterr().err
    assert mujoco.get_mju_user_warning() is None


@pytest.mark.parametrize(
    ("cls", "kwargs"), [(AntDamageEnv, {"termination_grace_steps": 50}), (HalfCheetahDamageEnv, {})]
)
@pytest.mark.parametrize("kernel", ["numba", "python"])
def test_a_step_whose_physics_diverged_terminates_even_in_the_grace_period(
    cls, kwargs, kernel, tmp_path, monkeypatch
):
    """Was: MuJoCo resets a blown-up state to the start pose and the episode went on (the robot
    teleported home, the Ant paid as healthy); the 'non-finite state terminates' check never fired."""
    if kernel == "numba":
        pytest.importorskip("numba", reason="the compiled path needs numba (the fast extra)")
    monkeypatch.chdir(tmp_path)  # MuJoCo writes its warning to MUJOCO_LOG.TXT in the working folder
    env = cls(**kwargs)
    env.reset(seed=0)
    zero = np.zeros(env.action_space.shape)
    assert env.step(zero)[2] is False
    env.data.qvel[:] = 1e12
    _, _, terminated, truncated, _ = env.step(zero)
    assert terminated is True and truncated is False
    assert env.step(zero)[2] is False  # a step after it (the reset state) is an ordinary one
    env.reset(seed=1)  # the first step of an episode starts at time 0: the clock alone cannot tell
    env.data.qvel[:] = 1e12
    assert env.step(zero)[2] is True
    assert env.step(zero)[2] is False
    envs = [cls(**kwargs) for _ in range(4)]
    for seed, member in enumerate(envs):
        member.reset(seed=seed)
        if seed < 2:
            member.step(zero)
    envs[1].data.qvel[:] = 1e12  # after a step
    envs[3].data.qvel[:] = 1e12  # at the first step
    terminated = cls.batch(envs, kernel=kernel).step(np.zeros((4, *env.action_space.shape)))[2]
    assert terminated.tolist() == [False, True, False, True]


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        ({"healthy_z_range": 0.5}, "healthy_z_range must be two heights (low, high), low < high"),
        ({"healthy_z_range": (3.0, 0.2)}, "healthy_z_range must be two heights"),
        ({"healthy_z_range": (0.2, float("nan"))}, "healthy_z_range must be two heights"),
        ({"terminate_when_unhealthy": "no"}, "terminate_when_unhealthy must be a bool"),
        ({"use_contact_forces": "no"}, "use_contact_forces must be a bool"),
        ({"termination_grace_steps": 2.5}, "termination_grace_steps must be an integer >= 0"),
    ],
)
def test_ants_own_arguments_are_checked_when_built(kwargs, says):
    """Was: passed on to Gymnasium unchecked; 0.5 failed at the first step, (3.0, 0.2) ended every
    episode at once, 'no' read as True."""
    with pytest.raises(ValueError, match=re.escape(says)):
        gym.make("hebb/AntDamage-v0", **kwargs)
    env = gym.make("hebb/AntDamage-v0", healthy_z_range=[0.3, 2], termination_grace_steps=np.float32(5))
    assert env.unwrapped._healthy_z_range == (0.3, 2.0) and env.unwrapped._grace_steps == 5
    unbounded = gym.make("hebb/AntDamage-v0", healthy_z_range=(0.2, float("inf")))  # as Gymnasium takes it
    unbounded.reset(seed=0)
    assert unbounded.step(np.zeros(8))[2] is False


def test_torch_after_rendering_a_damaged_env_does_not_crash_the_process():
    """Was: under Mesa's software EGL (MUJOCO_GL=egl without a GPU), an SB3 model or any torch optimiser
    built after a rendered frame loaded Triton after Mesa's LLVM, and the process died (SIGSEGV)."""
    code = (
        "import gymnasium as gym, hebb_envs; env = gym.make('hebb/HalfCheetahDamage-v0', "
        "render_mode='rgb_array', width=32, height=32); env.reset(seed=0); env.render(); import torch; "
        "torch.optim.Adam([torch.zeros(1, requires_grad=True)]); print('trained after rendering')"
    )
    environment = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=environment
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "trained after rendering" in done.stdout
