"""The long-memory task: phases, scoring, chance and perfect scores, seeding, speed."""

from __future__ import annotations

import time

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

from hebb_envs.memory import MAX_DELAY, MemoryTask

IDS = ["hebb/Memory-v0", "hebb/MemoryContinuous-v0"]


def _answer(env: MemoryTask, symbol: int):
    """The action that names ``symbol`` in either action variant."""
    if env.continuous:
        a = -np.ones(env.n_symbols, dtype=np.float32)
        a[symbol] = 1.0
        return a
    return symbol


def _run_episode(env: MemoryTask, policy, seed: int) -> tuple[float, int]:
    obs, _ = env.reset(seed=seed)
    total, steps, done = 0.0, 0, False
    while not done:
        obs, r, terminated, truncated, _ = env.step(policy(obs))
        total += r
        steps += 1
        done = terminated or truncated
    return total, steps


@pytest.mark.parametrize("env_id", IDS)
def test_checkers_pass(env_id):
    env = gym.make(f"hebb_envs:{env_id}", delay=8)
    gym_check_env(env.unwrapped, skip_render_check=True)
    sb3_check_env(gym.make(env_id, delay=8), warn=True)


@pytest.mark.parametrize("continuous", [False, True])
def test_phases_and_episode_length(continuous):
    env = MemoryTask(n_symbols=5, delay=7, cue_steps=3, continuous=continuous)
    obs, info = env.reset(seed=0)
    cue = info["cue"]
    seen = [(obs, info["phase"])]
    done = False
    while not done:
        obs, r, terminated, truncated, info = env.step(env.action_space.sample())
        done = terminated or truncated
        if not done:
            seen.append((obs, info["phase"]))
            assert r == 0.0
    assert len(seen) == 3 + 7 + 1
    for t, (o, phase) in enumerate(seen):
        assert o.shape == (7,) and o.dtype == np.float32
        if t < 3:
            assert phase == "cue" and o[5] == 1.0 and o[6] == 0.0
            assert np.argmax(o[:5]) == cue and o[:5].sum() == 1.0
        elif t < 10:
            # distractor symbols are one-hot too, only the flag marks the cue
            assert phase == "delay" and o[5] == 0.0 and o[6] == 0.0 and o[:5].sum() == 1.0
        else:
            assert phase == "query" and o[6] == 1.0 and o[5] == 0.0 and not o[:5].any()
    assert terminated and not truncated
    with pytest.raises(RuntimeError, match="reset"):
        env.step(env.action_space.sample())


@pytest.mark.parametrize("continuous", [False, True])
def test_oracle_scores_one_and_memoryless_scores_chance(continuous):
    k, n_episodes = 4, 2000
    env = MemoryTask(n_symbols=k, delay=32, continuous=continuous)
    memory = {}

    def oracle(obs):
        if obs[k] == 1.0:  # cue flag: remember the symbol
            memory["cue"] = int(np.argmax(obs[:k]))
        return _answer(env, memory.get("cue", 0))

    oracle_returns = [_run_episode(env, oracle, seed)[0] for seed in range(200)]
    assert np.mean(oracle_returns) == 1.0

    # A memoryless policy: a deterministic function of the current observation only.
    def memoryless(obs):
        return _answer(env, int(np.argmax(obs[:k])))

    returns = np.array([_run_episode(env, memoryless, 10_000 + s)[0] for s in range(n_episodes)])
    # 1/K = 0.25 with binomial std sqrt(0.25*0.75/2000) ~ 0.0097: a 4-sigma band
    assert abs(returns.mean() - 1 / k) < 0.04

    rng = np.random.default_rng(1)

    def random_policy(obs):
        return _answer(env, int(rng.integers(k)))

    returns = np.array([_run_episode(env, random_policy, 20_000 + s)[0] for s in range(n_episodes)])
    assert abs(returns.mean() - 1 / k) < 0.04


def test_last_query_action_only_is_scored():
    env = MemoryTask(n_symbols=3, delay=4)
    _, info = env.reset(seed=3)
    wrong = (info["cue"] + 1) % 3
    for _ in range(5):  # cue + delay: answers here never count
        _, r, terminated, _, _ = env.step(info["cue"])
        assert r == 0.0 and not terminated
    _, r, terminated, _, final = env.step(wrong)
    assert r == 0.0 and terminated and final["correct"] is False and final["answer"] == wrong


def test_same_seed_same_episode_and_seeds_differ():
    def trace(seed):
        env = MemoryTask(n_symbols=6, delay=50, distractor="uniform")
        obs, info = env.reset(seed=seed)
        rows = [obs]
        for _ in range(50):
            rows.append(env.step(0)[0])
        return info["cue"], np.stack(rows)

    cue_a, rows_a = trace(11)
    cue_b, rows_b = trace(11)
    assert cue_a == cue_b and np.array_equal(rows_a, rows_b)
    _, rows_c = trace(12)
    assert not np.array_equal(rows_a, rows_c)
    cues = {MemoryTask(n_symbols=6).reset(seed=s)[1]["cue"] for s in range(60)}
    assert cues == set(range(6))


def test_distractor_options():
    env = MemoryTask(n_symbols=4, delay=20, distractor="zeros")
    env.reset(seed=0)
    for _ in range(20):
        obs = env.step(0)[0]
        assert not obs[:4].any() or obs[5] == 1.0
    env = MemoryTask(n_symbols=4, delay=200, distractor="uniform")
    env.reset(seed=0)
    rows = np.stack([env.step(0)[0] for _ in range(200)])
    assert 0.4 < rows[:-1, :4].mean() < 0.6


def test_long_delay_is_fast():
    env = gym.make("hebb/Memory-v0", delay=4096, n_symbols=8)
    env.reset(seed=0)
    start = time.perf_counter()
    steps, done = 0, False
    while not done:
        _, _, terminated, truncated, _ = env.step(0)
        steps += 1
        done = terminated or truncated
    elapsed = time.perf_counter() - start
    assert steps == 4096 + 2 and terminated and not truncated
    # through gym.make's checker wrappers; the bare env is several times faster
    assert elapsed / steps < 100e-6


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_symbols": 1}, "n_symbols"),
        ({"delay": -1}, "delay"),
        ({"cue_steps": 0}, "cue_steps"),
        ({"distractor": "pink"}, "symbols, uniform, zeros"),
        ({"render_mode": "human"}, "accepted: None, rgb_array"),
        # 1e12 asked numpy for 21.8 TiB; None died in int(); True and "yes" were taken as 1 and True
        ({"delay": 1e12}, r"delay must be an integer in \[0, 1048576\], got 1000000000000.0"),
        ({"delay": MAX_DELAY + 1}, r"delay must be an integer in \[0, 1048576\], got 1048577"),
        ({"delay": None}, r"delay must be an integer in \[0, 1048576\], got None"),
        ({"delay": True}, r"delay must be an integer in \[0, 1048576\], got True"),
        ({"delay": 2.5}, r"delay must be an integer in \[0, 1048576\], got 2.5"),
        ({"delay": float("inf")}, r"delay must be an integer in \[0, 1048576\], got inf"),
        ({"continuous": "yes"}, r"continuous must be a bool \(True or False\), got 'yes'"),
        ({"continuous": 1}, r"continuous must be a bool \(True or False\), got 1"),
        ({"continuous": None}, r"continuous must be a bool \(True or False\), got None"),
        ({"n_symbols": True}, "n_symbols must be an integer >= 2, got True"),
        ({"n_symbols": 4.5}, "n_symbols must be an integer >= 2, got 4.5"),
        ({"n_symbols": None}, "n_symbols must be an integer >= 2, got None"),
        ({"cue_steps": True}, "cue_steps must be an integer >= 1, got True"),
        ({"cue_steps": 1.5}, "cue_steps must be an integer >= 1, got 1.5"),
        ({"correct_reward": None}, "correct_reward must be a finite number, got None"),
        ({"correct_reward": True}, "correct_reward must be a finite number, got True"),
        ({"wrong_reward": "0"}, "wrong_reward must be a finite number, got '0'"),
        ({"wrong_reward": float("nan")}, "wrong_reward must be a finite number, got nan"),
        ({"distractor": None}, "unknown distractor None; accepted: symbols"),
        # the episode array grows with n_symbols and cue_steps as well as with delay
        ({"n_symbols": 10**12}, r"n_symbols=1000000000000, .* of 240.1 TiB, .* accepted: at most 1.0 GiB"),
        ({"cue_steps": 2**40}, r"cue_steps=1099511627776, .* accepted: at most 1.0 GiB"),
        ({"n_symbols": 300, "delay": MAX_DELAY}, r"delay=1048576 .* of 1.2 GiB"),
    ],
)
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MemoryTask(**kwargs)


def test_whole_floats_and_the_longest_delay_are_accepted():
    env = MemoryTask(n_symbols=4.0, delay=64.0, cue_steps=np.int64(2), correct_reward=np.float32(2))
    assert (env.n_symbols, env.delay, env.cue_steps, env.correct_reward) == (4, 64, 2, 2.0)
    assert type(env.delay) is int and env.continuous is False
    longest = MemoryTask(delay=MAX_DELAY, distractor="zeros")
    obs, _ = longest.reset(seed=0)
    assert longest.episode_length == MAX_DELAY + 2 and obs[4] == 1.0
    assert MemoryTask(continuous=np.bool_(True)).continuous is True


def test_the_continuous_id_refuses_discrete_actions_and_the_base_id_keeps_its_override():
    # gym.make merged continuous=False over the id's own continuous=True: a discrete task behind
    # the continuous id, with no error
    with pytest.raises(
        ValueError,
        match="hebb/MemoryContinuous-v0 .* got continuous=False; use gym.make\\('hebb/Memory-v0'\\)",
    ):
        gym.make("hebb/MemoryContinuous-v0", continuous=False)
    with pytest.raises(ValueError, match="continuous must be a bool"):
        gym.make("hebb/MemoryContinuous-v0", continuous="yes")
    assert isinstance(gym.make("hebb/MemoryContinuous-v0").action_space, gym.spaces.Box)
    assert isinstance(gym.make("hebb/Memory-v0").action_space, gym.spaces.Discrete)
    # runs of earlier versions may have saved hebb/Memory-v0 with continuous=True: they still build
    assert isinstance(gym.make("hebb/Memory-v0", continuous=True).action_space, gym.spaces.Box)


def test_bad_actions_are_rejected():
    env = MemoryTask(n_symbols=3, delay=0)
    env.reset(seed=0)
    env.step(0)
    with pytest.raises(ValueError, match="Discrete"):
        env.step(7)


@pytest.mark.parametrize("action", [99, -1, "1", 1.7, True, np.array([0, 1]), np.float32(1.0)])
def test_a_bad_action_fails_at_the_first_step_not_after_the_delay(action):
    """Was: actions were checked only at the query step (after up to 2**20 steps), and there int()
    took "1", 1.7 and True as answer 1."""
    env = MemoryTask(n_symbols=4, delay=50)
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"action must be an integer in \[0, 4\) \(Discrete\(4\)\)"):
        env.step(action)
    for good in (np.int64(3), np.array(2), np.array([1]), 0):  # integer scalars and one-element arrays
        env.reset(seed=0)
        assert env.step(good)[2] is False


def test_memory_task_renders_rgb_and_works_with_sb3_make_vec_env():
    from stable_baselines3.common.env_util import make_vec_env

    env = gym.make("hebb/Memory-v0", delay=3, render_mode="rgb_array")
    obs, _ = env.reset(seed=0)
    frame = env.render()
    assert frame.shape == (16, 16 * obs.size, 3) and frame.dtype == np.uint8
    assert frame[0, 16 * int(np.argmax(obs[:-2])), 0] == 255  # the cue's cell is lit
    vec = make_vec_env("hebb/Memory-v0", n_envs=2, env_kwargs={"delay": 3})  # SB3 asks for rgb_array
    assert vec.reset().shape == (2, obs.size)
