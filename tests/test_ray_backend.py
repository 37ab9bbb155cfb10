"""Ray backend against a local Ray started here: same results as serial, lost actors re-run."""

import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from hebb_agents.backends import Candidates, SerialBackend, make_backend  # noqa: E402
from hebb_agents.es import OpenES  # noqa: E402
from hebb_agents.ray_backend import RayBackend  # noqa: E402
from hebb_agents.rollout import LockstepEvaluator, RolloutSpec  # noqa: E402

TESTS = str(Path(__file__).parent)
SPEC = RolloutSpec(env_id="CartPole-v1", policy_config={"hidden": [8]}, max_steps=100)


@pytest.fixture(scope="module")
def local_ray():
    # Actors import slow_env (a test helper) by module name, so they need this folder on their path.
    path = os.pathsep.join(p for p in (TESTS, os.environ.get("PYTHONPATH")) if p)
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        runtime_env={"env_vars": {"PYTHONPATH": path}},
        logging_level="WARNING",
    )
    yield
    ray.shutdown()


def test_ray_backend_matches_serial_for_params_and_for_seeds(local_ray):
    es = OpenES(LockstepEvaluator(SPEC).num_params, popsize=10, sigma=0.5, seed=3, init=0.3)
    params = es.ask()
    expected = SerialBackend(SPEC).evaluate(params, seed=4, generation=2)
    with make_backend("ray", SPEC, workers=2) as backend:
        assert isinstance(backend, RayBackend) and backend.num_workers == 2
        by_params = backend.evaluate(params, seed=4, generation=2)
        by_seed = backend.evaluate_candidates(Candidates.from_es(es), seed=4, generation=2)
    np.testing.assert_array_equal(by_params.fitness, expected.fitness)
    np.testing.assert_array_equal(by_seed.fitness, expected.fitness)
    assert by_seed.env_steps == expected.env_steps
    assert len(set(expected.fitness.tolist())) > 2  # members really differ


SLOW_SPEC = RolloutSpec(env_id="slow_env:SlowCartPole-v0", policy_config={"hidden": [8]}, max_steps=60)


def _slow_members(count: int, seed: int) -> np.ndarray:
    import slow_env  # noqa: F401  (registers SlowCartPole-v0 in this process too)

    return np.random.default_rng(seed).normal(0, 0.05, (count, LockstepEvaluator(SLOW_SPEC).num_params))


def _evaluate_while_killing(backend: RayBackend, victim, params: np.ndarray):
    """Evaluate generation 0 while ``victim`` is killed 0.3 s in: ``(result, seconds taken)``."""
    killer = threading.Timer(0.3, lambda: ray.kill(victim, no_restart=True))
    start = time.perf_counter()
    killer.start()
    result = backend.evaluate(params, seed=0, generation=0)
    killer.join()
    return result, time.perf_counter() - start


def test_actor_killed_mid_generation_has_its_slice_rerun(local_ray):
    spec, params = SLOW_SPEC, _slow_members(8, seed=2)
    expected = SerialBackend(spec).evaluate(params, seed=0, generation=0)
    with RayBackend(spec, workers=2) as backend:
        victim = backend.actors[0]
        victim_pid = ray.get(victim.pid.remote())
        result, elapsed = _evaluate_while_killing(backend, victim, params)
        assert backend.actors[0] is not victim  # replaced by a new actor
        assert ray.get(backend.actors[0].pid.remote()) != victim_pid
        again = backend.evaluate(params, seed=0, generation=0)  # the pool works after the loss
        deadline = time.perf_counter() + 20
        while ray.available_resources().get("CPU", 0) < 1 and time.perf_counter() < deadline:
            time.sleep(0.1)  # the lost actor's CPU comes back a moment after the loss
        restored = backend.evaluate(params, seed=0, generation=1)
        assert len({id(actor) for actor in backend.actors}) == 2  # two actors again, not one serving both
    assert elapsed > 0.3  # the kill really landed during the generation
    np.testing.assert_array_equal(result.fitness, expected.fitness)
    np.testing.assert_array_equal(again.fitness, expected.fitness)
    assert result.env_steps == expected.env_steps
    np.testing.assert_array_equal(restored.fitness, SerialBackend(spec).evaluate(params, 0, 1).fitness)


def test_the_only_actor_killed_mid_generation_is_replaced_once_its_cpu_frees(local_ray):
    params = _slow_members(4, seed=5)
    expected = SerialBackend(SLOW_SPEC).evaluate(params, seed=0, generation=0)
    with RayBackend(SLOW_SPEC, workers=1) as backend:
        victim = backend.actors[0]
        result, elapsed = _evaluate_while_killing(backend, victim, params)  # was "the only actor was lost"
        assert elapsed > 0.3  # the kill really landed during the generation
        assert backend.actors[0] is not victim
    np.testing.assert_array_equal(result.fitness, expected.fitness)


def test_more_workers_than_the_cluster_has_cpus_fail_after_the_placement_wait_not_never(local_ray):
    start = time.perf_counter()
    with pytest.raises(ValueError, match=r"3 Ray workers need 3 CPUs \(1 each\) but the cluster has 2 and"):
        RayBackend(SPEC, workers=3, placement_timeout_s=2)
    assert time.perf_counter() - start < 60
    # the default count follows the actors' own CPU need: one 2-CPU actor on a 2-CPU cluster
    with RayBackend(SPEC, actor_options={"num_cpus": 2}) as backend:
        assert backend.num_workers == 1


def test_a_lost_actor_that_other_slots_borrowed_is_no_survivor(local_ray):
    with RayBackend(SPEC, workers=2) as backend:
        first, second = backend.actors
        backend.actors[1] = first  # slot 1 lost its actor earlier; actor 0 stands in for it
        backend._borrowed.add(1)
        ray.kill(second, no_restart=True)
        ray.kill(first, no_restart=True)  # now the stand-in is lost too: nobody survives
        assert backend._replace(0, generation=0) == 0  # waited for a CPU: a new actor, not the dead one
        assert backend.actors[0] is not first
        assert ray.get(backend.actors[0].pid.remote()) > 0


def test_bad_spec_fails_at_construction_with_the_actors_error(local_ray):
    with pytest.raises(Exception, match="unknown environment id 'CartPol-v9'"):
        RayBackend(RolloutSpec(env_id="CartPol-v9"), workers=1)
    with pytest.raises(ValueError, match="workers must be >= 1"):
        RayBackend(SPEC, workers=0)


def test_unreachable_cluster_address_is_a_clear_error(monkeypatch):
    """`--address` naming no running cluster: one line that says how to start one, no traceback."""

    def refuse(*args, **kwargs):
        raise ConnectionError("Could not find any running Ray instance.")

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", refuse)
    with pytest.raises(ValueError, match=r"no Ray cluster reachable at address 'auto'.*ray start --head"):
        RayBackend(RolloutSpec(env_id="CartPole-v1"), address="auto")


def test_ray_init_keeps_the_callers_sigterm_handler():
    import signal
    import types

    from hebb_agents.ray_backend import init_keeping_sigterm

    def ray_like_exit(signum, frame):  # what ray.init installs
        raise SystemExit(signum)

    fake = types.SimpleNamespace(init=lambda **kwargs: signal.signal(signal.SIGTERM, ray_like_exit))
    previous = signal.getsignal(signal.SIGTERM)
    try:

        def ours(signum, frame):
            raise KeyboardInterrupt

        signal.signal(signal.SIGTERM, ours)
        init_keeping_sigterm(fake, address=None)
        assert signal.getsignal(signal.SIGTERM) is ours  # hebb train's stop-and-save survives
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        init_keeping_sigterm(fake, address=None)
        assert signal.getsignal(signal.SIGTERM) is ray_like_exit  # no handler of ours: Ray's stays
    finally:
        signal.signal(signal.SIGTERM, previous)
