"""Lockstep rollouts and backends: determinism, split-independence, early stops, crashed workers."""

import os
import signal
import threading
import time

import gymnasium as gym
import numpy as np
import pytest

from hebb_agents.backends import ProcessBackend, SerialBackend, make_backend, split_population
from hebb_agents.rollout import LOCKSTEP_BYTES, LockstepEvaluator, RolloutSpec, make_env

SPEC = RolloutSpec(env_id="CartPole-v1", policy_config={"hidden": [8]}, max_steps=100)


def _params(evaluator, n, seed=0, scale=0.5):
    return np.random.default_rng(seed).normal(0, scale, (n, evaluator.num_params)).astype(np.float32)


def test_same_seed_same_fitness_and_other_seed_differs():
    ev = LockstepEvaluator(SPEC)
    params = _params(ev, 6)
    a = ev.evaluate(params, np.arange(6), seed=1, generation=0)
    b = ev.evaluate(params, np.arange(6), seed=1, generation=0)
    c = ev.evaluate(params, np.arange(6), seed=2, generation=0)
    np.testing.assert_array_equal(a.fitness, b.fitness)
    assert not np.array_equal(a.fitness, c.fitness)
    assert a.env_steps == int(a.lengths.sum())


def test_result_does_not_depend_on_how_the_population_is_split():
    ev = LockstepEvaluator(SPEC)
    params = _params(ev, 7)
    whole = ev.evaluate(params, np.arange(7), seed=3, generation=5)
    parts = [ev.evaluate(params[s], s, seed=3, generation=5) for s in split_population(7, 3)]
    np.testing.assert_array_equal(whole.fitness, np.concatenate([p.fitness for p in parts]))


def test_finished_members_are_dropped_without_changing_results():
    """Compaction (dropping finished rows) must not change anyone's trajectory."""
    spec = RolloutSpec(env_id="CartPole-v1", policy_config={"hidden": [8]}, max_steps=150)
    ev = LockstepEvaluator(spec)
    params = _params(ev, 8, seed=4, scale=1.0)
    together = ev.evaluate(params, np.arange(8), seed=0, generation=0)
    alone = [ev.evaluate(params[i : i + 1], np.array([i]), seed=0, generation=0).fitness[0] for i in range(8)]
    assert len(set(together.lengths.tolist())) > 2  # members really finished at different times
    np.testing.assert_array_equal(together.fitness, alone)


def test_lockstep_groups_change_neither_results_nor_need_more_envs_than_a_group():
    spec = RolloutSpec(env_id="Pendulum-v1", policy_config={"hidden": [4]}, max_steps=30, episodes=2)
    whole = LockstepEvaluator(spec)
    grouped = LockstepEvaluator(RolloutSpec(**{**vars(spec), "lockstep_size": 3}))
    params = _params(whole, 7, seed=5)
    a = whole.evaluate(params, np.arange(7), seed=2, generation=1)
    b = grouped.evaluate(params, np.arange(7), seed=2, generation=1)
    np.testing.assert_array_equal(a.fitness, b.fitness)
    np.testing.assert_array_equal(a.lengths, b.lengths)
    assert a.env_steps == b.env_steps == 7 * 2 * 30
    assert (len(whole.envs), len(grouped.envs)) == (7, 3)  # environments are reused group after group
    for bad in (0, -2, "some", 2.5, True):
        with pytest.raises(ValueError, match="lockstep_size must be 'auto', 'all' or an integer >= 1"):
            RolloutSpec(env_id="CartPole-v1", lockstep_size=bad)
    assert RolloutSpec(env_id="CartPole-v1", lockstep_size="4").lockstep_size == 4


def test_auto_lockstep_groups_fit_the_cache_budget():
    small = LockstepEvaluator(SPEC)  # CartPole, 8 hidden: a few hundred parameters
    assert small.group_size(200) == 200
    big = LockstepEvaluator(RolloutSpec(env_id="CartPole-v1", policy_config={"hidden": [256, 256]}))
    expected = LOCKSTEP_BYTES // (4 * big.num_params)
    assert 1 <= expected < 200 and big.group_size(200) == expected and big.group_size(3) == min(3, expected)
    assert LockstepEvaluator(RolloutSpec(**{**vars(SPEC), "lockstep_size": "all"})).group_size(200) == 200
    # a torch encoder's float32 batches may round differently at other sizes: auto keeps one group
    encoded = {"hidden": [512, 512], "encoder": {"type": "lsh", "window": 8}}
    with_encoder = LockstepEvaluator(RolloutSpec(env_id="Pendulum-v1", policy_config=encoded))
    assert with_encoder.num_params * 4 > LOCKSTEP_BYTES and with_encoder.group_size(200) == 200


def test_max_steps_and_episodes():
    spec = RolloutSpec(env_id="Pendulum-v1", policy_config={"hidden": [4]}, max_steps=17, episodes=2)
    ev = LockstepEvaluator(spec)
    result = ev.evaluate(_params(ev, 2), np.arange(2), 0, 0)
    np.testing.assert_array_equal(result.lengths, [17, 17])
    assert result.env_steps == 2 * 2 * 17


def test_negative_reward_early_stop():
    spec = RolloutSpec(env_id="Pendulum-v1", policy_config={"hidden": [4]}, early_stop="negative_reward")
    ev = LockstepEvaluator(spec)
    result = ev.evaluate(_params(ev, 2), np.arange(2), 0, 0)
    np.testing.assert_array_equal(result.lengths, [20, 20])  # Pendulum's rewards are always negative


def test_distance_and_info_key_fitness():
    base = dict(env_id="HalfCheetah-v5", policy_config={"hidden": [8]}, max_steps=30)
    dist = LockstepEvaluator(RolloutSpec(**base, fitness="distance"))
    fwd = LockstepEvaluator(RolloutSpec(**base, fitness="reward_forward"))
    params = _params(dist, 2)
    d = dist.evaluate(params, np.arange(2), 0, 0).fitness
    f = fwd.evaluate(params, np.arange(2), 0, 0).fitness
    # reward_forward = dx/dt summed = distance / dt, dt = 0.05 for HalfCheetah
    np.testing.assert_allclose(f * 0.05, d, rtol=1e-6, atol=1e-9)
    bad = LockstepEvaluator(RolloutSpec(**base, fitness="speed"))
    with pytest.raises(ValueError, match="accepted: return, distance, .*reward_forward"):
        bad.evaluate(params, np.arange(2), 0, 0)


def test_a_text_info_key_is_no_fitness():
    # the damaged cheetah reports its body's name in info["damage"]: not something to sum
    spec = RolloutSpec(env_id="hebb/HalfCheetahDamage-v0", policy_config={"hidden": [8]}, max_steps=5)
    evaluator = LockstepEvaluator(RolloutSpec(**{**spec.__dict__, "fitness": "damage"}))
    with pytest.raises(ValueError, match="'damage' is not a numeric key") as error:
        evaluator.evaluate(_params(evaluator, 2), np.arange(2), 0, 0)
    assert "reward_forward" in str(error.value) and "damage," not in str(error.value)


def test_divergent_members_get_nan_fitness():
    spec = RolloutSpec(
        env_id="CartPole-v1", policy_config={"hidden": [8], "normalisation": "none"}, max_steps=200
    )
    ev = LockstepEvaluator(spec)
    params = np.full((2, ev.num_params), 1e20, dtype=np.float32)
    params[1] = 0.0
    with np.errstate(all="ignore"):
        result = ev.evaluate(params, np.arange(2), 0, 0)
    assert np.isnan(result.fitness[0]) and np.isfinite(result.fitness[1])


def test_bad_spec_values_fail_clearly():
    with pytest.raises(ValueError, match="accepted: none, locomotion, negative_reward"):
        RolloutSpec(env_id="CartPole-v1", early_stop="sometimes")
    with pytest.raises(ValueError, match="unknown environment id 'CartPol-v9'"):
        LockstepEvaluator(RolloutSpec(env_id="CartPol-v9"))
    with pytest.raises(ValueError, match="accepted: serial, process, ray"):
        make_backend("threads", SPEC)
    with pytest.raises(ValueError, match="workers must be >= 1"):
        ProcessBackend(SPEC, workers=0)


def test_serial_and_process_backends_agree():
    ev = LockstepEvaluator(SPEC)
    params = _params(ev, 10, seed=9)
    serial = SerialBackend(SPEC).evaluate(params, seed=4, generation=2)
    with ProcessBackend(SPEC, workers=2) as backend:
        parallel = backend.evaluate(params, seed=4, generation=2)
        again = backend.evaluate(params, seed=4, generation=2)  # workers persist between calls
    np.testing.assert_array_equal(serial.fitness, parallel.fitness)
    np.testing.assert_array_equal(serial.fitness, again.fitness)
    assert serial.env_steps == parallel.env_steps


def test_worker_killed_mid_generation_is_restarted_and_its_slice_rerun():
    import slow_env  # noqa: F401  (registers SlowCartPole-v0 here too)

    spec = RolloutSpec(env_id="slow_env:SlowCartPole-v0", policy_config={"hidden": [8]}, max_steps=60)
    params = _params(LockstepEvaluator(spec), 8, seed=2, scale=0.05)
    expected = SerialBackend(spec).evaluate(params, seed=0, generation=0)
    with ProcessBackend(spec, workers=2) as backend:
        victim = backend.pids[0]
        killer = threading.Timer(0.15, lambda: os.kill(victim, signal.SIGKILL))
        killer.start()
        start = time.perf_counter()
        result = backend.evaluate(params, seed=0, generation=0)
        killer.join()
        assert backend.pids[0] != victim  # replaced
    assert time.perf_counter() - start > 0.15  # the kill really happened during the generation
    np.testing.assert_array_equal(result.fitness, expected.fitness)


def test_worker_value_errors_stay_value_errors_and_the_backend_stays_usable():
    spec = RolloutSpec(env_id="CartPole-v1", policy_config={"hidden": [8]}, max_steps=20, fitness="speed")
    good = RolloutSpec(env_id="CartPole-v1", policy_config={"hidden": [8]}, max_steps=20)
    params = _params(LockstepEvaluator(good), 4)
    with ProcessBackend(spec, workers=2) as backend:
        for _ in range(2):  # a second call must not read the first call's leftover replies
            with pytest.raises(ValueError, match="speed"):
                backend.evaluate(params, seed=0, generation=0)


def test_bad_env_kwargs_and_distance_without_x_position_fail_clearly():
    with pytest.raises(ValueError, match="does not accept the keyword arguments"):
        LockstepEvaluator(RolloutSpec(env_id="CartPole-v1", env_kwargs={"gravity_scale": 2}))
    with pytest.raises(ValueError, match=r"could not be built with \{'frame_skip': 0\}: ZeroDivisionError"):
        LockstepEvaluator(RolloutSpec(env_id="HalfCheetah-v5", env_kwargs={"frame_skip": 0}))
    ev = LockstepEvaluator(
        RolloutSpec(env_id="CartPole-v1", policy_config={"hidden": [8]}, fitness="distance")
    )
    with pytest.raises(ValueError, match="x_position"):
        ev.evaluate(_params(ev, 2), np.arange(2), 0, 0)


@pytest.mark.parametrize(
    ("env_id", "env_kwargs", "fitness"),
    [
        ("hebb/HalfCheetahDamage-v0", {"damage": "all"}, "distance"),
        ("hebb/AntDamage-v0", {"damage": "seen", "healthy_z_range": (0.2, 1.0)}, "reward_forward"),
    ],
)
def test_batched_env_steps_change_no_result(env_id, env_kwargs, fitness):
    """One EnvBatch call per step (the hebb locomotion envs) gives what stepping each env gives."""
    base = dict(
        env_id=env_id,
        env_kwargs=env_kwargs,
        policy_config={"hidden": [8]},
        max_steps=240,
        fitness=fitness,
        early_stop="locomotion",
        lockstep_size=3,
    )
    batched, each = (
        LockstepEvaluator(RolloutSpec(**base)),
        LockstepEvaluator(RolloutSpec(**base, batch_envs=False)),
    )
    params = _params(batched, 7, scale=1.0)
    a = batched.evaluate(params, np.arange(7), seed=2, generation=1)
    b = each.evaluate(params, np.arange(7), seed=2, generation=1)
    assert batched._batched() is not None and each._batched() is None
    for field in ("fitness", "returns", "lengths"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert a.env_steps == b.env_steps == int(a.lengths.sum())
    if env_id.startswith("hebb/Ant"):
        assert len(set(a.lengths.tolist())) > 1  # terminations dropped members mid-group


def test_envs_without_a_batch_are_stepped_one_by_one():
    evaluator = LockstepEvaluator(SPEC)
    evaluator.evaluate(_params(evaluator, 3), np.arange(3), 0, 0)
    assert evaluator._batched() is None


class _PatchyInfoEnv(gym.Env):
    """Reports x_position and x_velocity on some steps only, depending on its own state."""

    observation_space = gym.spaces.Box(-10, 10, (3,), np.float32)
    action_space = gym.spaces.Box(-1, 1, (2,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t, self.x = 0, 0.0
        self.state = self.np_random.normal(size=3).astype(np.float32)
        return self.state.copy(), {"x_position": 0.0}

    def step(self, action):
        self.t += 1
        noise = self.np_random.normal(0, 0.3, 3)
        self.state = np.tanh(self.state + 0.3 * np.append(action, action[0]) + noise).astype(np.float32)
        self.x += float(action[0]) * 0.01 + 0.001 * self.t
        info = {"reward_forward": 1.0}
        if self.state[0] > 0 or self.t < 3:
            info["x_position"] = self.x
        if self.state[1] > 0:
            info["x_velocity"] = -1.0  # "going backwards": early stop counts it
        return self.state.copy(), 1.0, False, False, info


@pytest.mark.parametrize("fitness", ["distance", "return"])
def test_members_read_their_own_info_whatever_their_group(fitness):
    """A key missing from one member's info must not hide another member's value."""
    if "test/PatchyInfo-v0" not in gym.registry:
        gym.register("test/PatchyInfo-v0", entry_point=_PatchyInfoEnv, max_episode_steps=300)
    base = dict(
        env_id="test/PatchyInfo-v0", policy_config={"hidden": [4]}, fitness=fitness, early_stop="locomotion"
    )
    alone = LockstepEvaluator(RolloutSpec(**base, lockstep_size=1))
    together = LockstepEvaluator(RolloutSpec(**base, lockstep_size="all"))
    params = _params(alone, 6, scale=1.0)
    a = alone.evaluate(params, np.arange(6), seed=1, generation=0)
    b = together.evaluate(params, np.arange(6), seed=1, generation=0)
    np.testing.assert_array_equal(a.fitness, b.fitness)
    np.testing.assert_array_equal(a.lengths, b.lengths)
    assert (a.lengths < 300).any() and (a.lengths == 300).any()  # some members stopped early, some not


def test_a_cap_that_ends_every_memory_episode_before_its_query_is_refused():
    from hebb_agents.evaluation import PolicyAgent, rollout
    from hebb_agents.policy import make_policy
    from hebb_agents.rollout import make_env

    spec = RolloutSpec(env_id="hebb/Memory-v0", env_kwargs={"delay": 64}, max_steps=20)
    with pytest.raises(
        ValueError,
        match=r"cap of 20 steps \(max_steps or the env.s max_episode_steps\) ends every hebb/Memory-v0 "
        r"episode before its last step \(66",
    ):
        LockstepEvaluator(spec)
    LockstepEvaluator(RolloutSpec(env_id="hebb/Memory-v0", env_kwargs={"delay": 64}, max_steps=66))

    env = make_env("hebb/Memory-v0", delay=1500)
    policy = make_policy("hebbian", env.observation_space, env.action_space, hidden=(4,))
    policy.set_params(policy.initial_params(np.random.default_rng(0)))
    with pytest.raises(ValueError, match="accepted: caps >= 66, or none"):
        rollout(PolicyAgent(policy), "hebb/Memory-v0", [0], {"delay": 64}, max_steps=65)
    # without a cap, an episode longer than 1,000 steps runs to its query (it used to stop at 1,000)
    trajectories = rollout(PolicyAgent(policy), "hebb/Memory-v0", [0], {"delay": 1500})
    assert trajectories.lengths.tolist() == [1502]


def test_an_unknown_env_keyword_lists_the_accepted_ones():
    with pytest.raises(ValueError, match=r"'damag'.*accepted: .*\bdamage\b.*reset_noise_scale") as error:
        make_env("hebb/HalfCheetahDamage-v0", damag="seen")
    accepted = str(error.value).split("accepted:")[1]
    assert "observation_space" not in accepted and "xml_file" not in accepted  # set by the env itself
    with pytest.raises(ValueError, match=r"accepted: continuous, correct_reward, cue_steps, delay"):
        make_env("hebb/Memory-v0", dealy=3)


class _StartsDying:
    """A multiprocessing context whose next ``deaths`` workers are killed as soon as they start
    (before they report ready): a replacement that dies while starting."""

    def __init__(self, ctx, deaths: int) -> None:
        self.ctx, self.deaths = ctx, deaths

    def Pipe(self):  # noqa: N802 (the context's own name)
        return self.ctx.Pipe()

    def Process(self, *args, **kwargs):  # noqa: N802
        process = self.ctx.Process(*args, **kwargs)
        if self.deaths > 0:
            self.deaths -= 1
            return _DiesAtStart(process)
        return process


class _DiesAtStart:
    """A worker process killed right after it starts; otherwise the process itself."""

    def __init__(self, process) -> None:
        self._process = process

    def start(self) -> None:
        self._process.start()
        self._process.kill()

    def __getattr__(self, name: str):
        return getattr(self._process, name)


def test_a_replacement_worker_that_dies_while_starting_is_started_again():
    from hebb_agents.backends import WorkersLost

    params = _params(LockstepEvaluator(SPEC), 4, seed=3)
    expected = SerialBackend(SPEC).evaluate(params, seed=0, generation=0)
    with ProcessBackend(SPEC, workers=1, max_retries=2) as backend:
        backend._ctx = _StartsDying(backend._ctx, deaths=2)
        os.kill(backend.pids[0], signal.SIGKILL)
        # was an EOFError traceback from the first replacement's start
        result = backend.evaluate(params, seed=0, generation=0)
        np.testing.assert_array_equal(result.fitness, expected.fitness)
        backend._ctx = _StartsDying(backend._ctx.ctx, deaths=3)  # more than max_retries in a row
        os.kill(backend.pids[0], signal.SIGKILL)
        with pytest.raises(WorkersLost, match="worker 0 died while starting"):
            backend.evaluate(params, seed=0, generation=0)


def test_stock_halfcheetah_is_built_without_mujocos_settotalmass_deprecation(capfd):
    """Was: Gymnasium's HalfCheetah-v5 XML made MuJoCo print the deprecation once per env built (six
    times a run, twice an eval); a CartPole build imports no MuJoCo for it."""
    import mujoco

    env = make_env("HalfCheetah-v5")
    env.reset(seed=0)
    env.close()
    assert "settotalmass" not in capfd.readouterr().err
    assert mujoco.get_mju_user_warning() is None  # the hook is restored
