"""Compiled episodes (hebb_agents.compiled_episodes): the env step against the env's own, the episode
against the lockstep rollout, and the settings it refuses."""

from __future__ import annotations

import numpy as np
import pytest

from hebb_agents.rollout import LockstepEvaluator, RolloutSpec
from hebb_agents.trainer import ESTrainer, TrainConfig
from hebb_envs.locomotion import AntDamageEnv, HalfCheetahDamageEnv

pytest.importorskip("numba", reason="compiled episodes need numba (the fast extra)")

CHEETAH = "hebb/HalfCheetahDamage-v0"


def _compiled_steps(env, actions, elapsed):
    """Step ``env`` with each action through the compiled step; yields obs, reward, x_velocity,
    x_position, terminated."""
    from hebb_envs._step_kernel import locomotion_step

    scratch = np.empty(2)
    for t, action in enumerate(actions):
        program = env.step_program()
        obs = np.empty(program.obs_dim)
        functions, addresses, sizes, settings, _ = program
        reward, x_velocity, x_position, terminated = locomotion_step(
            functions, addresses, sizes, settings, action, obs, elapsed + t, scratch
        )
        yield obs, reward, x_velocity, x_position, terminated


@pytest.mark.parametrize(
    ("cls", "kwargs"),
    [
        (HalfCheetahDamageEnv, {"damage": "back_thigh_paralysed"}),
        (AntDamageEnv, {}),
        (AntDamageEnv, {"use_contact_forces": True, "damage": "front_left_short"}),
        # the torso starts above 0.5: unhealthy at once, forgiven for 3 steps
        (AntDamageEnv, {"healthy_z_range": (0.2, 0.5), "termination_grace_steps": 3}),
        (AntDamageEnv, {"healthy_z_range": (0.2, 0.5), "terminate_when_unhealthy": False}),
    ],
)
def test_the_compiled_step_equals_the_envs_own_step_bit_for_bit(cls, kwargs):
    ours, theirs = cls(**kwargs), cls(**kwargs)
    ours.reset(seed=4)
    theirs.reset(seed=4)
    actions = np.random.default_rng(0).uniform(-1, 1, (60, *ours.action_space.shape)).astype(np.float32)
    terminations = []
    for action, (obs, reward, x_velocity, x_position, terminated) in zip(
        actions, _compiled_steps(ours, actions, 0)
    ):
        want_obs, want_reward, want_terminated, _, info = theirs.step(action)
        np.testing.assert_array_equal(obs, want_obs)
        assert reward == want_reward and type(reward) is float
        assert (x_velocity, x_position) == (info["x_velocity"], info["x_position"])
        assert terminated == want_terminated
        terminations.append(terminated)
    np.testing.assert_array_equal(ours.data.qpos, theirs.data.qpos)
    if kwargs.get("termination_grace_steps"):
        assert terminations[:4] == [False, False, False, True]


@pytest.mark.parametrize("cls", [AntDamageEnv, HalfCheetahDamageEnv])
def test_a_compiled_step_whose_physics_diverged_terminates(cls, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # MuJoCo writes its warning to MUJOCO_LOG.TXT in the working folder
    env = cls()
    env.reset(seed=0)
    zero = np.zeros((1, *env.action_space.shape), np.float32)
    assert next(_compiled_steps(env, zero, 0))[4] is False
    env.data.qvel[:] = 1e12
    assert next(_compiled_steps(env, zero, 1))[4] is True
    env.reset(seed=1)  # the first step of an episode: found by the warning counters, not the clock
    env.data.qvel[:] = 1e12
    assert next(_compiled_steps(env, zero, 0))[4] is True


def test_the_compiled_tanh_is_correctly_rounded_float32_tanh():
    from hebb_agents._episode_kernel import tanh

    rng = np.random.default_rng(0)
    x = np.concatenate(
        [
            rng.uniform(-3, 3, 400_000),
            rng.standard_normal(400_000) * 0.01,
            rng.uniform(-20, 20, 200_000),
            rng.standard_normal(100_000) * 1e-6,
            [0.0, 9.0, 9.1, 10.0, 1e-30, 0.0099999, 0.01, 0.010001, np.inf, 1e30],
        ]
    ).astype(np.float32)
    x = np.concatenate([x, -x])
    want = np.tanh(x.astype(np.float64)).astype(np.float32)
    got = np.array([tanh(value) for value in x[:2000]] + [tanh(value) for value in x[-2000:]])
    np.testing.assert_array_equal(got, np.concatenate([want[:2000], want[-2000:]]))
    compiled = _vector_tanh(x)
    np.testing.assert_array_equal(compiled, want)
    np.testing.assert_array_equal(np.signbit(_vector_tanh(np.float32([0.0, -0.0]))), [False, True])
    assert np.isnan(_vector_tanh(np.float32([np.nan, -np.nan]))).all()


def _vector_tanh(x):
    import numba

    from hebb_agents._episode_kernel import tanh

    @numba.njit(error_model="numpy")
    def apply(values, out):
        for k in range(values.shape[0]):
            out[k] = tanh(values[k])

    out = np.empty_like(x)
    apply(x, out)
    return out


def _evaluators(**spec):
    spec = {"env_id": CHEETAH, "policy_config": {"hidden": [16, 8]}, **spec}
    compiled = LockstepEvaluator(RolloutSpec(**spec, compiled_episodes=True))
    return LockstepEvaluator(RolloutSpec(**spec)), compiled


def _params(evaluator, population, scale=0.3):
    draws = np.random.default_rng(1).standard_normal((population, evaluator.num_params))
    return (draws * scale).astype(np.float32)


@pytest.mark.parametrize(
    ("fitness", "settings"),
    [
        ("return", {}),
        ("distance", {}),
        ("distance", {"policy_config": {"hidden": [8], "bias": True}}),
        ("distance", {"policy_config": {"hidden": [8], "sharing": "per_post", "rule": "A"}}),
        ("return", {"policy_config": {"hidden": [8], "init": "coevolved", "rule": "ABC"}, "episodes": 2}),
        ("return", {"policy_config": {"hidden": [8], "normalisation": "none"}, "paired_seeds": False}),
        (
            "distance",
            {"env_id": "hebb/AntDamage-v0", "env_kwargs": {"use_contact_forces": True, "damage": "all"}},
        ),
    ],
)
def test_short_compiled_episodes_agree_with_the_lockstep_rollout(fitness, settings):
    """Same seeds, bodies, start states and initial weights; only the forward pass rounds otherwise,
    so short episodes agree to float32 precision (long ones drift apart, as chaotic dynamics do)."""
    settings = {"env_kwargs": {"damage": "all"}, **settings}
    lockstep, compiled = _evaluators(max_steps=6, fitness=fitness, **settings)
    params = _params(lockstep, 6)
    want = lockstep.evaluate(params, np.arange(6), seed=3, generation=2)
    got = compiled.evaluate(params, np.arange(6), seed=3, generation=2)
    np.testing.assert_allclose(got.fitness, want.fitness, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got.returns, want.returns, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(got.lengths, want.lengths)
    assert got.env_steps == want.env_steps == 36 * settings.get("episodes", 1)
    assert np.ptp(got.fitness) > 1e-4  # the members differ: a real comparison


def test_compiled_episodes_stop_early_by_the_locomotion_rule():
    """After step 200, a streak of 30 or more steps without forward progress ends an episode (the
    streak counts from the start, so the first stop can come at step 201)."""
    _, compiled = _evaluators(max_steps=400, early_stop="locomotion", fitness="return")
    lengths = compiled.evaluate(_params(compiled, 8), np.arange(8), seed=0, generation=0).lengths
    stopped = lengths[lengths < 400]
    assert stopped.size and (stopped >= 201).all(), lengths
    _, never = _evaluators(max_steps=400, early_stop="none", fitness="return")
    np.testing.assert_array_equal(never.evaluate(_params(never, 8), np.arange(8), 0, 0).lengths, 400)


def test_compiled_episodes_do_not_depend_on_how_the_population_is_split():
    _, compiled = _evaluators(max_steps=40, early_stop="locomotion")
    params = _params(compiled, 6)
    whole = compiled.evaluate(params, np.arange(6), seed=0, generation=1)
    first = compiled.evaluate(params[:2], np.arange(2), seed=0, generation=1)
    rest = compiled.evaluate(params[2:], np.arange(2, 6), seed=0, generation=1)
    np.testing.assert_array_equal(whole.fitness, np.concatenate([first.fitness, rest.fitness]))
    np.testing.assert_array_equal(whole.lengths, 40)


def test_compiled_ant_episodes_end_when_the_ant_is_unhealthy():
    spec = {"env_id": "hebb/AntDamage-v0", "policy_config": {"hidden": [8]}, "max_steps": 50}
    unhealthy = {"healthy_z_range": (0.2, 0.5), "termination_grace_steps": 4}
    lockstep = LockstepEvaluator(RolloutSpec(**spec, env_kwargs=unhealthy))
    compiled = LockstepEvaluator(RolloutSpec(**spec, env_kwargs=unhealthy, compiled_episodes=True))
    params = _params(lockstep, 3)
    got = compiled.evaluate(params, np.arange(3), seed=0, generation=0)
    want = lockstep.evaluate(params, np.arange(3), seed=0, generation=0)
    np.testing.assert_array_equal(got.lengths, 5)  # forgiven for 4 steps, ended at the 5th
    np.testing.assert_allclose(got.fitness, want.fitness, rtol=1e-4, atol=1e-5)


def test_a_member_whose_network_output_is_not_finite_gets_nan_fitness():
    lockstep, compiled = _evaluators(max_steps=20, policy_config={"hidden": [8], "normalisation": "none"})
    params = _params(compiled, 2)
    params[0] = np.nan
    with np.errstate(all="ignore"):
        got = compiled.evaluate(params, np.arange(2), seed=0, generation=0)
        want = lockstep.evaluate(params, np.arange(2), seed=0, generation=0)
    assert np.isnan(got.fitness[0]) and np.isfinite(got.fitness[1])
    np.testing.assert_array_equal(got.lengths, want.lengths)
    assert got.lengths[0] == 1  # the initial weights act once; the NaN rule terms then reach the output


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ({"env_id": "CartPole-v1"}, "env CartPoleEnv (accepted: the hebb/ AntDamage and HalfCheetahDamage"),
        ({"policy": "static"}, "policy 'static' (accepted: hebbian)"),
        ({"policy_config": {"normalisation": "standardise"}}, "normalisation 'standardise'"),
        ({"fitness": "reward_ctrl"}, "fitness 'reward_ctrl' (accepted: return, distance)"),
        ({"early_stop": "negative_reward"}, "early_stop 'negative_reward' (accepted: none, locomotion)"),
        ({"env_kwargs": {"render_mode": "human"}}, "render_mode 'human'"),
        ({"compiled_episodes": "yes"}, "compiled_episodes must be true or false, got 'yes'"),
    ],
)
def test_settings_compiled_episodes_cannot_run_are_refused_by_name(spec, says):
    settings = {"env_id": CHEETAH, "compiled_episodes": True, **spec}
    with pytest.raises(ValueError, match=says.replace("(", r"\(").replace(")", r"\)")):
        LockstepEvaluator(RolloutSpec(**settings))


class _CustomCheetah(HalfCheetahDamageEnv):
    """A subclass may step otherwise: the compiled step would not be its step."""


def test_wrapped_and_subclassed_envs_are_refused(monkeypatch):
    import gymnasium as gym

    wrapped = gym.wrappers.RecordEpisodeStatistics
    gym.register("test/WrappedCheetah-v0", lambda **kw: wrapped(HalfCheetahDamageEnv(**kw)))
    gym.register("test/CustomCheetah-v0", lambda **kw: _CustomCheetah(**kw))
    try:
        with pytest.raises(ValueError, match="wrappers beyond gym.make's own"):
            LockstepEvaluator(RolloutSpec("test/WrappedCheetah-v0", compiled_episodes=True))
        with pytest.raises(ValueError, match="env _CustomCheetah"):
            LockstepEvaluator(RolloutSpec("test/CustomCheetah-v0", compiled_episodes=True))
    finally:
        del gym.registry["test/WrappedCheetah-v0"], gym.registry["test/CustomCheetah-v0"]
    from hebb_envs import batch_physics

    monkeypatch.setattr(batch_physics, "_compiled_unavailable", lambda: "no libmujoco found here")
    with pytest.raises(ValueError, match="compiled env steps are unavailable: no libmujoco found here"):
        LockstepEvaluator(RolloutSpec(CHEETAH, compiled_episodes=True))


def test_a_training_run_with_compiled_episodes_saves_and_resumes_the_setting(tmp_path):
    config = TrainConfig(
        env_id=CHEETAH,
        policy_config={"hidden": [8]},
        generations=2,
        popsize=4,
        max_steps=10,
        backend="serial",
        compiled_episodes=True,
        checkpoint_every=1,
    )
    ESTrainer(config, out_dir=tmp_path / "run").train()
    resumed = ESTrainer.resume(tmp_path / "run", generations=3)
    assert resumed.config.compiled_episodes is True
    stats = resumed.train()
    assert stats[-1].generation == 3 and np.isfinite(stats[-1].fitness_mean)
    with pytest.raises(ValueError, match="cannot change \\['compiled_episodes'\\] when resuming"):
        ESTrainer.resume(tmp_path / "run", compiled_episodes=False)
