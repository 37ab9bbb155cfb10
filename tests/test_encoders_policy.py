"""HebbianPolicy with encoder front ends: the LSH history encoder (fixed and co-evolved) and the
reference's CarRacing CNN end to end."""

from __future__ import annotations

import re

import gymnasium as gym
import numpy as np
import pytest

from hebb_agents.encoders.conv import ConvEncoder
from hebb_agents.encoders.history import LSHPolicyEncoder
from hebb_agents.policy import HebbianPolicy
from hebb_envs.memory import MemoryTask


def _memory_policy(evolvable: bool) -> tuple[HebbianPolicy, LSHPolicyEncoder, gym.Env]:
    env = MemoryTask(delay=10)
    encoder = LSHPolicyEncoder(
        env.observation_space, window=16, evolvable=evolvable, seed=0, d_model=16, bucket_size=8
    )
    policy = HebbianPolicy(env.observation_space, env.action_space, hidden=(16,), encoder=encoder)
    return policy, encoder, env


def _run_lockstep(policy: HebbianPolicy, population: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """One memory-task episode per member, all fed the same observations; outputs per step."""
    env = MemoryTask(delay=10)
    obs, _ = env.reset(seed=seed)
    policy.reset(seed=[7] * population)  # identical random weights for every member
    outputs, actions = [], []
    done = False
    while not done:
        action = policy.act(np.repeat(obs[None], population, axis=0))
        outputs.append(policy.last_output.copy())
        actions.append(action)
        obs, _, done, _, _ = env.step(int(action[0]))
    return np.stack(outputs), np.stack(actions)  # (T, P, act_dim), (T, P)


def test_hebbian_policy_runs_with_a_fixed_lsh_encoder() -> None:
    policy, encoder, env = _memory_policy(evolvable=False)
    assert encoder.num_params == 0
    assert policy.layer_sizes == (encoder.feature_dim, 16, env.action_space.n)
    assert policy.num_params == policy.num_network_params
    centre = policy.initial_params(np.random.default_rng(0))
    policy.set_params(np.repeat(centre[None], 2, axis=0))
    outputs, actions = _run_lockstep(policy, 2, seed=1)
    assert outputs.shape == (12, 2, 4) and np.isfinite(outputs).all()
    assert np.all((actions >= 0) & (actions < 4))
    np.testing.assert_array_equal(outputs[:, 0], outputs[:, 1])  # same params, same weights
    again, _ = _run_lockstep(policy, 2, seed=1)
    np.testing.assert_array_equal(again, outputs)  # reset clears the histories


def test_hebbian_policy_co_evolves_the_lsh_encoder() -> None:
    policy, encoder, _ = _memory_policy(evolvable=True)
    assert encoder.num_params > 0
    assert policy.num_params == policy.num_network_params + encoder.num_params
    centre = policy.initial_params(np.random.default_rng(0))
    n_net = policy.num_network_params
    np.testing.assert_array_equal(centre[n_net:], encoder.initial_params())
    params = np.repeat(centre[None], 3, axis=0)
    params[2, n_net:] += 0.5 * np.random.default_rng(1).standard_normal(encoder.num_params).astype(np.float32)
    policy.set_params(params)
    outputs, _ = _run_lockstep(policy, 3, seed=2)
    np.testing.assert_allclose(outputs[:, 0], outputs[:, 1], atol=1e-6)
    # Only member 2's encoder weights differ, and they change what it does.
    assert np.abs(outputs[:, 2] - outputs[:, 0]).max() > 1e-3


def test_conv_encoder_drives_a_hebbian_policy_on_car_racing() -> None:
    pytest.importorskip("Box2D", reason="CarRacing needs gymnasium[box2d]")
    env = gym.make("CarRacing-v3")
    encoder = ConvEncoder(evolvable=True, seed=0)
    policy = HebbianPolicy(env.observation_space, env.action_space, hidden=(128, 64), encoder=encoder)
    assert policy.layer_sizes == (648, 128, 64, 3)
    coefficients = 5 * (648 * 128 + 128 * 64 + 64 * 3)  # ABCD_lr, one rule per synapse
    assert policy.num_params == coefficients + 1362
    policy.set_params(policy.initial_params(np.random.default_rng(0)))
    policy.reset(seed=0)
    obs, _ = env.reset(seed=0)
    total = 0.0
    for _ in range(60):
        action = policy.act(obs)
        assert action.shape == (3,) and env.action_space.contains(action)
        obs, reward, terminated, truncated, _ = env.step(action)
        total += float(reward)
        if terminated or truncated:
            break
    assert np.isfinite(total)
    env.close()


def test_unknown_encoder_options_are_named_with_the_accepted_ones() -> None:
    import gymnasium as gym

    from hebb_agents.encoders import make_encoder

    space = gym.spaces.Box(-1.0, 1.0, (3,))
    with pytest.raises(ValueError, match=r"'windw'.*accepted: .*window"):
        make_encoder({"type": "lsh", "windw": 64}, space)
    with pytest.raises(ValueError, match=r"'window'.*accepted: evolvable, seed"):
        make_encoder({"type": "conv", "window": 8}, space)
    with pytest.raises(ValueError, match=r"bad 'lsh' encoder options \{'window': 'x'\}"):
        make_encoder({"type": "lsh", "window": "x"}, space)
    assert make_encoder({"type": "lsh", "window": 4, "depth": 1, "n_hashes": 1}, space).window == 4


@pytest.mark.parametrize(
    ("options", "message"),
    [
        # was a 46-line traceback ending in "negative dimension"
        ({"window": 8, "max_len": -1, "position": "learned"}, "max_len must be an int >= 1 or None, got -1"),
        ({"evolvable": "no"}, "evolvable must be a boolean (true or false), got 'no'"),  # was read as True
        ({"window": "64"}, "window must be an int >= 1, got '64'"),
        ({"window": 2.5}, "window must be an int >= 1, got 2.5"),  # was truncated to 2
        ({"feature_dim": 0}, "feature_dim must be an int >= 1, got 0"),
        ({"n_hashes": 1.5}, "n_hashes must be an int >= 1, got 1.5"),
        ({"causal": "no"}, "causal must be a boolean (true or false), got 'no'"),
        ({"lsh_seed": "x"}, "lsh_seed must be an int or None, got 'x'"),
        ({"ff_dropout": 2}, "ff_dropout must be a number in [0, 1], got 2"),
        ({"window": 16, "position": "learned", "max_len": 4}, "window of 16 is longer than max_len=4"),
    ],
)
def test_bad_lsh_encoder_values_are_one_line_value_errors(options: dict, message: str) -> None:
    from hebb_agents.encoders import make_encoder

    space = gym.spaces.Box(-1.0, 1.0, (4,))
    with pytest.raises(ValueError, match=re.escape(message)) as info:
        make_encoder({"type": "lsh", **options}, space)
    assert f"bad 'lsh' encoder options {options}" in str(info.value)


def test_the_conv_encoder_refuses_non_image_observations_at_construction() -> None:
    from hebb_agents.encoders import make_encoder

    # CartPole's observation space: the error used to wait for the first rollout
    cartpole = gym.spaces.Box(-1.0, 1.0, (4,), np.float32)
    with pytest.raises(ValueError, match=r"needs image observations of shape \(H, W, 3\).*\(4,\)"):
        make_encoder({"type": "conv"}, cartpole)
    with pytest.raises(ValueError, match=r"\(H, W, 3\).*\(84, 84\)"):
        make_encoder({"type": "conv", "evolvable": False}, gym.spaces.Box(0, 255, (84, 84), np.uint8))
    with pytest.raises(ValueError, match="evolvable must be a boolean"):
        make_encoder({"type": "conv", "evolvable": 2}, gym.spaces.Box(0, 255, (96, 96, 3), np.uint8))
    frames = gym.spaces.Box(0, 255, (96, 96, 3), np.uint8)
    assert make_encoder({"type": "conv", "evolvable": False}, frames).feature_dim == 648


def test_predict_after_set_params_starts_the_encoders_episode_as_without_an_encoder():
    env = gym.make("hebb/Memory-v0", delay=4)
    spec = {"type": "lsh", "window": 8, "evolvable": True, "d_model": 16, "bucket_size": 4}
    policy = HebbianPolicy(env.observation_space, env.action_space, hidden=(8,), encoder=spec)
    policy.set_params(policy.initial_params(np.random.default_rng(0)))
    obs, _ = env.reset(seed=0)
    action, _ = policy.predict(obs)  # was "(call reset(P) first)": the encoder held no members
    assert env.action_space.contains(int(action))


def test_lsh_encoder_errors_name_the_observation_space_and_a_foreign_observation() -> None:
    from hebb_agents.encoders import make_encoder

    # was "bad 'lsh' encoder options {}: ...": the options were fine, the space was not
    with pytest.raises(ValueError, match=r"the 'lsh' encoder reads Box observations, got Discrete\(4\)"):
        make_encoder({"type": "lsh"}, gym.spaces.Discrete(4))
    encoder = make_encoder(
        {"type": "lsh", "window": 4, "position": "learned", "n_hashes": 1}, gym.spaces.Box(-1, 1, (6,))
    )
    assert encoder.module.encoder.max_len == 4  # learned positions default to the window
    encoder.reset(2)
    # an observation of another environment was told to "call reset(P) first"
    with pytest.raises(ValueError, match=r"got \(2, 4\) \(an observation of another environment\?\)"):
        encoder.encode(np.zeros((2, 4)), None)
    with pytest.raises(ValueError, match=r"expected observations of 2 members \(call reset\(P\) first\)"):
        encoder.encode(np.zeros((3, 6)), None)
