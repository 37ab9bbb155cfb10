"""HebbianPolicy / StaticPolicy: actions, SB3 predict, coefficients layout, save/load."""

import gymnasium as gym
import numpy as np
import pytest
from stable_baselines3.common.evaluation import evaluate_policy

from hebb_agents.policy import EvolvablePolicy, HebbianPolicy, StaticPolicy, make_policy

BOX = gym.spaces.Box(-1.0, 1.0, (4,), np.float32)


def _policy(action_space, **kwargs):
    policy = HebbianPolicy(BOX, action_space, hidden=(8,), **kwargs)
    policy.set_params(policy.initial_params(np.random.default_rng(0)))
    policy.reset(0)
    return policy


def test_box_actions_are_tanh_outputs_mapped_to_bounds():
    space = gym.spaces.Box(np.array([-2.0, 0.0]), np.array([2.0, 10.0]), dtype=np.float32)
    policy = _policy(space)
    action = policy.act(np.ones(4, dtype=np.float32))
    out = policy.last_output[0]
    np.testing.assert_allclose(action, [2.0 * out[0], 5.0 + 5.0 * out[1]], rtol=1e-6)
    assert space.contains(action)


def test_saturated_outputs_never_leave_the_box():
    rng = np.random.default_rng(0)
    low = rng.uniform(-3, 0, 50).astype(np.float32)
    space = gym.spaces.Box(low, low + rng.uniform(0.1, 3, 50).astype(np.float32), dtype=np.float32)
    policy = HebbianPolicy(BOX, space, hidden=(8,))
    for out in (np.ones((1, 50), np.float32), -np.ones((1, 50), np.float32)):
        assert space.contains(policy.to_actions(out)[0])  # exactly +-1 rounds past some bounds unclipped


def test_discrete_actions_are_argmax_of_outputs():
    policy = _policy(gym.spaces.Discrete(3))
    action = policy.act(np.ones(4, dtype=np.float32))
    assert action == int(np.argmax(policy.last_output[0]))


def test_act_applies_plasticity_and_reset_redraws():
    policy = _policy(gym.spaces.Discrete(2))
    w0 = policy.network.weights[0].copy()
    policy.act(np.ones(4, dtype=np.float32))
    assert not np.allclose(w0, policy.network.weights[0])
    policy.reset(0)
    np.testing.assert_array_equal(w0, policy.network.weights[0])
    policy.reset(1)
    assert not np.allclose(w0, policy.network.weights[0])


def test_coefficients_round_trip_in_documented_layout():
    policy = _policy(gym.spaces.Discrete(2), rule="ABCD_lr")
    n = policy.network.num_coefficients
    assert n == (4 * 8 + 8 * 2) * 5
    values = np.arange(n, dtype=np.float32)
    policy.coefficients = values
    np.testing.assert_array_equal(policy.coefficients, values)
    layers = policy.coefficients_by_layer()
    assert [layer.shape for layer in layers] == [(4 * 8, 5), (8 * 2, 5)]  # (n_rows, k), no population axis
    # layer 0, synapse (i=1, j=2), column eta (index 3) sits at (1*8 + 2)*5 + 3
    assert layers[0][1 * 8 + 2, 3] == (1 * 8 + 2) * 5 + 3
    per_synapse = policy.coefficients_per_synapse()
    assert [layer.shape for layer in per_synapse] == [(4, 8, 5), (8, 2, 5)]
    assert per_synapse[0][1, 2, 3] == (1 * 8 + 2) * 5 + 3
    assert per_synapse[1][5, 1, 4] == 4 * 8 * 5 + (5 * 2 + 1) * 5 + 4
    with pytest.raises(ValueError, match=f"takes {n} coefficients"):
        policy.coefficients = np.zeros(n + 1)


def test_predict_works_with_sb3_evaluate_policy():
    env = gym.make("CartPole-v1")
    policy = HebbianPolicy(env.observation_space, env.action_space, hidden=(16,))
    policy.set_params(policy.initial_params(np.random.default_rng(0)))
    policy.reset(0)
    mean, std = evaluate_policy(policy, env, n_eval_episodes=3)
    assert mean >= 8  # CartPole pays 1 per step and lasts at least 8 steps
    assert np.isfinite(std)


def test_predict_resets_only_members_whose_episode_starts():
    policy = _policy(gym.spaces.Discrete(2))
    obs = np.ones((2, 4), dtype=np.float32)
    policy.predict(obs, episode_start=np.array([True, True]))
    policy.predict(obs, episode_start=np.array([False, False]))
    after_two = [w.copy() for w in policy.network.weights]
    policy.predict(obs, episode_start=np.array([True, False]))
    # member 1 kept learning from its state; member 0 restarted from fresh weights then learned one step
    assert not np.allclose(after_two[0][0], policy.network.weights[0][0])
    assert policy.population == 2


def test_static_policy_has_fixed_weights():
    env_space = gym.spaces.Discrete(2)
    policy = StaticPolicy(BOX, env_space, hidden=(8,))
    assert policy.num_params == 4 * 8 + 8 * 2
    policy.set_params(policy.initial_params(np.random.default_rng(0)))
    policy.reset(0)
    w = policy.network.weights[0].copy()
    for _ in range(5):
        policy.act(np.ones(4, dtype=np.float32))
    np.testing.assert_array_equal(w, policy.network.weights[0])


@pytest.mark.parametrize("suffix", [".npz", ".safetensors"])
def test_save_load_round_trip(tmp_path, suffix):
    policy = _policy(gym.spaces.Box(-1, 1, (2,), np.float32), rule="ABC", init="normal")
    path = policy.save(tmp_path / f"agent{suffix}")
    loaded = EvolvablePolicy.load(path)
    assert isinstance(loaded, HebbianPolicy)
    assert loaded.config() == policy.config()
    np.testing.assert_array_equal(loaded.get_params(), policy.get_params()[:1])
    obs = np.linspace(-1, 1, 4).astype(np.float32)
    policy.reset(3)
    loaded.reset(3)
    np.testing.assert_array_equal(policy.act(obs), loaded.act(obs))


def test_load_rejects_mismatched_vector(tmp_path):
    from hebb_agents.checkpoint import load_checkpoint, save_checkpoint

    policy = _policy(gym.spaces.Discrete(2))
    path = policy.save(tmp_path / "agent.npz")
    arrays, meta = load_checkpoint(path)
    meta["config"]["hidden"] = [9]
    save_checkpoint(tmp_path / "bad.npz", arrays, meta)
    with pytest.raises(ValueError, match="needs"):
        EvolvablePolicy.load(tmp_path / "bad.npz")


def test_bad_inputs_fail_clearly():
    with pytest.raises(ValueError, match="accepted: hebbian, static"):
        make_policy("plastic", BOX, gym.spaces.Discrete(2))
    with pytest.raises(ValueError, match="accepted: A, AD"):
        HebbianPolicy(BOX, gym.spaces.Discrete(2), rule="Oja")
    with pytest.raises(ValueError, match="accepted: Box, Discrete"):
        HebbianPolicy(BOX, gym.spaces.MultiBinary(3))
    with pytest.raises(ValueError, match="Hebbian options"):
        make_policy("static", BOX, gym.spaces.Discrete(2), rule="ABCD")
    policy = HebbianPolicy(BOX, gym.spaces.Discrete(2), hidden=(8,))
    with pytest.raises(ValueError, match="vectors of length"):
        policy.set_params(np.zeros(3))


@pytest.mark.parametrize("hidden", ["big", 64, (3.7,), (8, 0), (True,), None])
def test_hidden_sizes_that_are_not_positive_integers_are_refused(hidden):
    with pytest.raises(
        ValueError, match=r"hidden must be a sequence of positive layer sizes, e\.g\. \(128, 64\)"
    ):
        make_policy("hebbian", BOX, gym.spaces.Discrete(2), hidden=hidden)
    assert HebbianPolicy(BOX, gym.spaces.Discrete(2), hidden=[8.0, 4]).hidden == (8, 4)
    assert HebbianPolicy(BOX, gym.spaces.Discrete(2), hidden=np.array([8, 4])).hidden == (8, 4)


@pytest.mark.parametrize("kind", ["hebbian", "static"])
def test_bias_must_be_a_boolean(kind):
    with pytest.raises(ValueError, match=r"bias must be a boolean \(true or false\), got .no."):
        make_policy(kind, BOX, gym.spaces.Discrete(2), hidden=(8,), bias="no")


def test_an_observation_of_another_env_is_named_as_such():
    policy = _policy(gym.spaces.Discrete(2))
    with pytest.raises(
        ValueError, match=r"takes observations of shape \(4,\) \(4 values\).*got an array of shape \(17,\)"
    ):
        policy.predict(np.zeros(17, np.float32))


def test_an_encoder_that_does_not_fit_is_named():
    import torch.nn as nn

    from hebb_agents.encoders.base import TorchPolicyEncoder
    from hebb_agents.encoders.history import LSHPolicyEncoder

    wide = TorchPolicyEncoder(nn.Linear(4, 6), feature_dim=8)
    policy = HebbianPolicy(BOX, gym.spaces.Discrete(2), hidden=(8,), encoder=wide)
    policy.set_params(policy.initial_params(np.random.default_rng(0)))
    policy.reset(0)
    with pytest.raises(
        ValueError,
        match=r"TorchPolicyEncoder\) returned features of shape \(1, 6\), but declares feature_dim=8",
    ):
        policy.predict(np.zeros(4, np.float32))
    other = LSHPolicyEncoder(gym.spaces.Box(-1, 1, (3,), np.float32), window=8)
    with pytest.raises(
        ValueError, match=r"built for observations of shape \(3,\); this policy's observation space"
    ):
        HebbianPolicy(BOX, gym.spaces.Discrete(2), hidden=(8,), encoder=other)


def test_loading_through_a_subclass_refuses_the_other_kind(tmp_path):
    path = StaticPolicy(BOX, gym.spaces.Discrete(2), hidden=(8,))
    path.set_params(path.initial_params(np.random.default_rng(0)))
    saved = path.save(tmp_path / "static.npz")
    with pytest.raises(ValueError, match="holds a static policy \\(StaticPolicy\\), not a HebbianPolicy"):
        HebbianPolicy.load(saved)
    assert isinstance(StaticPolicy.load(saved), StaticPolicy)
    assert isinstance(EvolvablePolicy.load(saved), StaticPolicy)


def test_predict_switches_between_vectorised_and_single_envs():
    from stable_baselines3.common.env_util import make_vec_env

    env = gym.make("CartPole-v1")
    policy = HebbianPolicy(env.observation_space, env.action_space, hidden=(8,))
    policy.set_params(policy.initial_params(np.random.default_rng(0)))
    evaluate_policy(policy, make_vec_env("CartPole-v1", n_envs=3), n_eval_episodes=3)
    assert policy.population == 3
    action, _ = policy.predict(env.reset(seed=0)[0])
    assert env.action_space.contains(int(action)) and policy.population == 1


def test_custom_sharing_maps_refuse_to_save(tmp_path):
    maps = [np.zeros((4, 8), dtype=np.intp), np.zeros((8, 2), dtype=np.intp)]
    policy = HebbianPolicy(BOX, gym.spaces.Discrete(2), hidden=(8,), sharing=maps)
    policy.set_params(policy.initial_params(np.random.default_rng(0)))
    with pytest.raises(ValueError, match="custom sharing"):
        policy.save(tmp_path / "p.npz")


@pytest.mark.parametrize("kind", ["hebbian", "static"])
def test_fresh_policy_without_parameters_fails_clearly(tmp_path, kind):
    from hebb_agents.policy import ParamsNotLoadedError

    policy = make_policy(kind, BOX, gym.spaces.Discrete(2), hidden=(8,))
    obs = np.ones(4, dtype=np.float32)
    calls = {
        "save": lambda: policy.save(tmp_path / "p.npz"),
        "get the parameters of": policy.get_params,
        "predict with": lambda: policy.predict(obs),
        "act with": lambda: policy.act(obs),
        "reset": lambda: policy.reset(0),
        "select members of": lambda: policy.select(np.array([0])),
    }
    if kind == "hebbian":
        calls["read the coefficients of"] = policy.coefficients_by_layer
    for action, call in calls.items():
        with pytest.raises(ValueError, match=f"cannot {action} a .*set_params.*initial_params.*load"):
            call()
    assert issubclass(ParamsNotLoadedError, RuntimeError)  # what reset raised before
    assert not (tmp_path / "p.npz").exists()
    # loading parameters is all it takes
    policy.set_params(policy.initial_params(np.random.default_rng(0)))
    action, _ = policy.predict(obs)
    assert policy.action_space.contains(int(action))
    assert policy.get_params().shape == (1, policy.num_params)
    assert EvolvablePolicy.load(policy.save(tmp_path / "p.npz")).num_params == policy.num_params


def test_values_that_earlier_versions_saved_still_build():
    """Whole floats and 0/1 flags (JSON written by other tools, checkpoints of earlier versions)."""
    static = make_policy("static", BOX, gym.spaces.Discrete(2), hidden=[4.0], bias=0)
    assert static.hidden == (4,) and static.network.bias is False
    spec = {"type": "lsh", "window": 8.0, "d_model": 16.0, "bucket_size": 4, "evolvable": 1}
    policy = make_policy("hebbian", BOX, gym.spaces.Discrete(2), hidden=(4,), encoder=spec)
    assert policy.encoder.window == 8 and policy.num_encoder_params > 0


def test_discrete_actions_can_feed_the_update_linear_outputs(tmp_path):
    policy = _policy(gym.spaces.Discrete(2), output_activation="linear")
    obs = np.linspace(-1, 1, 4).astype(np.float32)
    weights = [w[0].copy() for w in policy.network.weights]
    action = policy.act(obs)
    hidden = np.tanh(obs @ weights[0])
    linear = hidden @ weights[1]
    np.testing.assert_allclose(policy.last_output[0], linear, rtol=1e-5)  # not tanh(linear)
    assert action == np.argmax(linear)
    loaded = EvolvablePolicy.load(policy.save(tmp_path / "linear.npz"))
    assert loaded.network.output_activation == "linear"
    assert "output_activation" not in _policy(gym.spaces.Discrete(2)).config()  # default: as before
    with pytest.raises(ValueError, match="output_activation='linear' needs Discrete actions"):
        HebbianPolicy(BOX, gym.spaces.Box(-1, 1, (2,), np.float32), output_activation="linear")


def test_predict_right_after_set_params_starts_from_drawn_initial_weights():
    policy = HebbianPolicy(BOX, gym.spaces.Discrete(2), hidden=(8,))
    policy.set_params(policy.initial_params(np.random.default_rng(0)))
    assert not policy.network.weights[0].any()  # loaded, no episode started: no weights drawn yet
    policy.predict(np.linspace(-1, 1, 4).astype(np.float32))
    assert np.abs(policy.last_output).max() > 0  # it acted with drawn weights (all-zero ones output 0)
