"""ObservationHistory against a naive list-of-observations reference."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from hebb_envs.history import ObservationHistory


def _naive_window(seen: list[np.ndarray], length: int, stride: int, pad: np.ndarray) -> np.ndarray:
    rows = []
    for i in range(length - 1, -1, -1):  # oldest first
        back = i * stride
        rows.append(seen[-1 - back] if back < len(seen) else pad)
    return np.stack(rows)


@pytest.mark.parametrize(("length", "stride", "fill"), [(1, 1, "zeros"), (5, 1, "zeros"), (4, 3, "first")])
def test_window_matches_naive_history_across_episodes(length: int, stride: int, fill: str) -> None:
    env = ObservationHistory(gym.make("Pendulum-v1"), length=length, stride=stride, fill=fill)
    assert env.observation_space.shape == (length, 3)
    rng = np.random.default_rng(0)
    for episode in range(3):
        obs, _ = env.reset(seed=episode)
        raw = [np.asarray(env.unwrapped._get_obs(), dtype=np.float32)]
        pad = raw[0] if fill == "first" else np.zeros(3, np.float32)
        np.testing.assert_array_equal(obs, _naive_window(raw, length, stride, pad))
        for _ in range(3 * length * stride + 2):
            obs, *_ = env.step(rng.uniform(-2, 2, size=1).astype(np.float32))
            raw.append(np.asarray(env.unwrapped._get_obs(), dtype=np.float32))
            np.testing.assert_array_equal(obs, _naive_window(raw, length, stride, pad))
            assert env.observation_space.contains(obs)


def test_view_is_read_only_and_copy_gives_independent_arrays() -> None:
    env = ObservationHistory(gym.make("Pendulum-v1"), length=6, copy=False)
    obs, _ = env.reset(seed=0)
    assert not obs.flags.writeable
    with pytest.raises(ValueError):
        obs[0, 0] = 1.0
    copying = ObservationHistory(gym.make("Pendulum-v1"), length=6)  # the default
    first, _ = copying.reset(seed=0)
    kept = first.copy()
    copying.step(np.zeros(1, np.float32))
    np.testing.assert_array_equal(first, kept)


def test_step_writes_rows_instead_of_copying_the_window() -> None:
    env = ObservationHistory(gym.make("Pendulum-v1"), length=1000, copy=False)
    obs, _ = env.reset(seed=0)
    nxt, *_ = env.step(np.zeros(1, np.float32))
    # Both windows are views of one ring buffer: nothing of size L was allocated per step.
    assert np.shares_memory(obs, nxt)


def test_default_copying_mode_passes_gymnasium_env_checker() -> None:
    # The checker keeps observations across resets, which a view into the ring buffer (copy=False)
    # does not survive.
    env = ObservationHistory(gym.make("Pendulum-v1").unwrapped, length=8, stride=2)
    check_env(env, skip_render_check=True)


def test_views_are_safe_inside_vector_envs() -> None:
    from stable_baselines3.common.vec_env import DummyVecEnv

    def make() -> gym.Env:
        return ObservationHistory(gym.make("Pendulum-v1"), length=4)

    vec = DummyVecEnv([make, make])
    vec.seed(3)
    kept = [vec.reset()]
    for _ in range(6):
        kept.append(vec.step(np.zeros((2, 1), np.float32))[0])
    # Each kept batch still shows its own step: row -1 of step t is row -2 of step t + 1.
    for before, after in zip(kept, kept[1:]):
        np.testing.assert_array_equal(before[:, 1:], after[:, :-1])
    assert not np.array_equal(kept[0], kept[-1])


def test_terminal_observation_survives_the_vector_env_reset() -> None:
    # SB3 keeps the final window in info["terminal_observation"] and resets at once; PPO
    # bootstraps truncated episodes from it, so the reset must not overwrite it.
    from stable_baselines3.common.vec_env import DummyVecEnv

    def make() -> gym.Env:
        return ObservationHistory(gym.make("Pendulum-v1", max_episode_steps=5), length=3)

    vec = DummyVecEnv([make])
    vec.seed(0)
    last = vec.reset()
    for _ in range(5):
        obs, _, dones, infos = vec.step(np.zeros((1, 1), np.float32))
        if not dones[0]:
            last = obs
    assert dones[0]
    terminal = infos[0]["terminal_observation"]  # (3, 3): the window after step 5
    np.testing.assert_array_equal(terminal[:-1], last[0, 1:])  # it follows step 4's window
    assert np.abs(terminal).min() > 0  # and no longer holds the zero fill of the start
    assert np.count_nonzero(obs[0].any(axis=-1)) == 1  # the new episode: one reset observation


def test_bad_arguments_name_the_value() -> None:
    base = gym.make("Pendulum-v1")
    with pytest.raises(ValueError, match="length"):
        ObservationHistory(base, length=0)
    with pytest.raises(ValueError, match="stride"):
        ObservationHistory(base, length=3, stride=0)
    with pytest.raises(ValueError, match="accepted: zeros, first"):
        ObservationHistory(base, length=3, fill="last")
    with pytest.raises(ValueError, match="Box"):
        ObservationHistory(gym.make("FrozenLake-v1"), length=3)
    shifted = gym.wrappers.TransformObservation(
        base, lambda o: o + 10.0, gym.spaces.Box(9.0, 11.0, (3,), np.float32)
    )
    with pytest.raises(ValueError, match='fill="first"'):
        ObservationHistory(shifted, length=3)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        # bools were taken as 1 and True, None died in int() with a TypeError
        ({"length": True}, "length must be an integer >= 1, got True"),
        ({"length": None}, "length must be an integer >= 1, got None"),
        ({"length": 2.5}, "length must be an integer >= 1, got 2.5"),
        ({"length": 3, "stride": True}, "stride must be an integer >= 1, got True"),
        ({"length": 3, "stride": None}, "stride must be an integer >= 1, got None"),
        ({"length": 3, "copy": "no"}, r"copy must be a bool \(True or False\), got 'no'"),
        ({"length": 3, "copy": None}, r"copy must be a bool \(True or False\), got None"),
        ({"length": 3, "flag_fill": 1}, r"flag_fill must be a bool \(True or False\), got 1"),
        ({"length": 3, "fill": None}, "unknown fill None; accepted: zeros, first"),
        # the ring buffer grows with (length - 1) * stride: 21.8 TiB asked of numpy before
        ({"length": 10**12}, r"length=1000000000000, stride=1 .* \(21.8 TiB\); accepted: at most 1.0 GiB"),
        ({"length": 1000, "stride": 10**6}, r"<= 44739242 for this observation space"),
    ],
)
def test_bad_argument_types_and_sizes_are_named(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ObservationHistory(gym.make("Pendulum-v1"), **kwargs)


def test_whole_float_sizes_are_accepted() -> None:
    env = ObservationHistory(gym.make("Pendulum-v1"), length=4.0, stride=np.int64(2), copy=np.bool_(False))
    assert (env.length, env.stride, env.copy) == (4, 2, False) and type(env.length) is int
    assert env.observation_space.shape == (4, 3)
