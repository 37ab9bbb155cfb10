"""OpenES: convergence, antithetic pairs, noise regeneration, robustness, schedules, exact resume."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hebb_agents import es as es_module
from hebb_agents.es import (
    OpenES,
    candidate,
    centered_ranks,
    generation_seed,
    linear_schedule,
    noise_for,
    noise_row,
)


def sphere(x: np.ndarray) -> np.ndarray:
    """Distance^2 to 0.5 in every coordinate (minimum 0 at x = 0.5)."""
    return np.sum((x - 0.5) ** 2, axis=-1)


def rastrigin(x: np.ndarray) -> np.ndarray:
    """Rastrigin: global minimum 0 at x = 0, a local minimum near every integer point."""
    return 10.0 * x.shape[-1] + np.sum(x**2 - 10.0 * np.cos(2.0 * np.pi * x), axis=-1)


def run(es: OpenES, loss, generations: int) -> OpenES:
    for _ in range(generations):
        es.tell(-loss(es.ask()))
    return es


# ---------------------------------------------------------------- convergence
@pytest.mark.parametrize("seed", [0, 1])
def test_sgd_converges_on_sphere(seed):
    es = OpenES(
        20, popsize=100, sigma=0.1, lr=0.05, lr_decay=0.99, sigma_decay=1.0, weight_decay=0.0, seed=seed
    )
    start = sphere(es.mean)
    run(es, sphere, 300)
    assert start == pytest.approx(5.0)
    assert sphere(es.mean) < 1e-4
    np.testing.assert_allclose(es.mean, 0.5, atol=0.01)


@pytest.mark.parametrize("seed", [0, 1])
def test_sgd_finds_the_global_basin_of_rastrigin(seed):
    # A wide sigma smooths the local minima away; shrinking it then refines inside the global basin.
    es = OpenES(
        20, popsize=100, sigma=2.0, sigma_decay=0.99, sigma_min=0.01, lr=1.0, lr_decay=0.98, lr_min=1e-4,
        weight_decay=0.0, init=2.0, seed=seed,
    )  # fmt: skip
    start = rastrigin(es.mean)
    run(es, rastrigin, 400)
    assert start > 100.0  # started among the local minima
    assert rastrigin(es.mean) < 1.0
    assert np.abs(es.mean).max() < 0.1


def test_adam_converges_on_sphere_and_rastrigin():
    es = OpenES(
        20, popsize=100, sigma=0.5, lr=0.1, optimizer="adam", sigma_decay=0.99, weight_decay=0.0, seed=0
    )
    run(es, sphere, 300)
    assert sphere(es.mean) < 0.01

    es = OpenES(
        20, popsize=100, sigma=2.0, lr=0.1, optimizer="adam", sigma_decay=0.99, weight_decay=0.0, init=2.0
    )
    start = rastrigin(es.mean)
    run(es, rastrigin, 400)
    assert rastrigin(es.mean) < 0.05 * start


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_both_optimizers_improve_with_reference_settings(optimizer):
    es = OpenES(50, popsize=40, optimizer=optimizer, init=1.0, seed=3)  # reference sigma/lr/decays
    start = sphere(es.mean)
    run(es, sphere, 30)
    assert sphere(es.mean) < 0.7 * start


# ---------------------------------------------------------------- sampling
def test_antithetic_candidates_come_in_mirrored_pairs():
    es = OpenES(64, popsize=10, sigma=0.3, init=1.0, seed=4)
    mean = es.mean
    cands = es.ask()
    assert cands.shape == (10, 64) and cands.dtype == np.float32
    plus, minus = cands[0::2] - mean, cands[1::2] - mean
    np.testing.assert_allclose(plus, -minus, atol=1e-6)
    assert np.abs(plus).mean() == pytest.approx(0.3 * np.sqrt(2 / np.pi), rel=0.1)  # E|sigma*eps|
    # Different pairs use different noise.
    assert not np.allclose(plus[0], plus[1])


def test_without_antithetic_all_candidates_are_independent():
    es = OpenES(32, popsize=7, antithetic=False, seed=0)
    cands = es.ask()
    assert cands.shape == (7, 32)
    corr = np.corrcoef(cands)
    assert np.abs(corr[~np.eye(7, dtype=bool)]).max() < 0.7


def test_ask_is_stable_within_a_generation_and_changes_after_tell():
    es = OpenES(16, popsize=6, seed=1)
    first = es.ask()
    np.testing.assert_array_equal(first, es.ask())
    es.tell(np.arange(6.0))
    assert not np.array_equal(first - first.mean(0), es.ask() - es.ask().mean(0))


@pytest.mark.parametrize("antithetic", [True, False])
def test_worker_rebuilds_any_candidate_bit_for_bit(antithetic):
    es = OpenES(1000, popsize=8, sigma=0.07, antithetic=antithetic, init=0.5, seed=11)
    es.tell(np.linspace(0, 1, 8))  # move off generation 0
    cands = es.ask()
    mean, sigma, gen_seed = es.mean, es.sigma, es.generation_seed
    for i in range(8):
        rebuilt = candidate(mean, sigma, gen_seed, i, antithetic=antithetic)
        np.testing.assert_array_equal(rebuilt, cands[i])
        np.testing.assert_array_equal(es.candidate(i), cands[i])
    with pytest.raises(ValueError, match=r"candidate index must be in \[0, 8\)"):
        es.candidate(8)


def test_noise_is_the_generations_draw_read_only_and_kept_for_tell(monkeypatch):
    es = OpenES(300, popsize=6, sigma=0.05, seed=4)
    es.tell(np.linspace(0, 1, 6))  # generation 1
    eps = es.noise()
    np.testing.assert_array_equal(eps, noise_for(es.generation_seed, 3, 300))
    with pytest.raises(ValueError, match="read-only"):
        eps[0, 0] = 1.0
    expected = OpenES(300, popsize=6, sigma=0.05, seed=4)
    expected.tell(np.linspace(0, 1, 6))
    expected.tell(np.arange(6.0))

    def no_draw(*args, **kwargs):
        raise AssertionError("tell drew the noise again")

    monkeypatch.setattr("hebb_agents.es.noise_for", no_draw)
    es.tell(np.arange(6.0))  # uses the noise drawn above
    np.testing.assert_array_equal(es.mean, expected.mean)


def test_noise_drawn_while_the_generation_moves_on_is_not_taken_for_the_new_one(monkeypatch):
    # a draw in another thread (see trainer.noise_drawn_meanwhile) that a tell overtakes
    es = OpenES(50, popsize=4, seed=0)
    real = es_module.noise_for

    def overtaken(*args, **kwargs):
        drawn = real(*args, **kwargs)
        es._generation += 1  # a tell finished while this was drawn
        return drawn

    monkeypatch.setattr(es_module, "noise_for", overtaken)
    es.noise()
    monkeypatch.setattr(es_module, "noise_for", real)
    np.testing.assert_array_equal(es.noise(), noise_for(es.generation_seed, 2, 50))


def test_noise_rows_are_independent_streams_and_standard_normal():
    gen_seed = generation_seed(123, 5)
    block = noise_for(gen_seed, 4, 50_000)
    np.testing.assert_array_equal(block[2], noise_row(gen_seed, 2, 50_000))
    assert abs(block.mean()) < 0.01 and block.std() == pytest.approx(1.0, abs=0.01)
    assert not np.array_equal(block[0], block[1])
    assert generation_seed(123, 5) != generation_seed(123, 6) != generation_seed(124, 5)
    assert noise_row(gen_seed, 0, 10, np.float64).dtype == np.float64


def test_seed_reproducibility():
    a = run(OpenES(30, popsize=10, init=1.0, seed=7), sphere, 5)
    b = run(OpenES(30, popsize=10, init=1.0, seed=7), sphere, 5)
    c = run(OpenES(30, popsize=10, init=1.0, seed=8), sphere, 5)
    np.testing.assert_array_equal(a.mean, b.mean)
    np.testing.assert_array_equal(a.ask(), b.ask())
    assert not np.array_equal(a.mean, c.mean)
    # Without a seed the run draws fresh entropy, and keeps it so it can be reproduced.
    d, e = OpenES(30, popsize=10), OpenES(30, popsize=10)
    assert d.entropy != e.entropy
    np.testing.assert_array_equal(OpenES(30, popsize=10, seed=d.entropy).ask(), d.ask())


def test_init_options():
    assert np.array_equal(OpenES(5, popsize=2).mean, np.zeros(5, np.float32))
    given = np.arange(5, dtype=np.float64)
    es = OpenES(5, popsize=2, init=given, dtype="float64")
    np.testing.assert_array_equal(es.mean, given)
    es.mean[0] = 99.0  # the property is a copy: the search state is untouched
    assert es.mean[0] == 0.0
    drawn = OpenES(20_000, popsize=2, init=0.5, seed=0).mean
    assert drawn.std() == pytest.approx(0.5, rel=0.03)
    np.testing.assert_array_equal(drawn, OpenES(20_000, popsize=2, init=0.5, seed=0).mean)


# ---------------------------------------------------------------- fitness handling
def test_centered_ranks():
    np.testing.assert_allclose(centered_ranks(np.array([10.0, -3.0, 7.0])), [0.5, -0.5, 0.0])
    # Ties share a rank; NaN and +-inf rank below every finite value.
    ranks = centered_ranks(np.array([1.0, np.nan, 1.0, np.inf, 5.0, -np.inf]))
    assert ranks[0] == ranks[2] and ranks[4] == 0.5
    assert ranks[1] == ranks[3] == ranks[5] < ranks[0]
    assert ranks.sum() == pytest.approx(0.0)


@pytest.mark.parametrize("rank_shaping", [True, False])
def test_non_finite_fitness_counts_as_worst(rank_shaping):
    fitness = np.linspace(0.0, 1.0, 10)
    poisoned = fitness.copy()
    poisoned[[3, 6]] = [np.nan, np.inf]
    worst = fitness.copy()
    worst[[3, 6]] = fitness.min() if not rank_shaping else -1e30

    a = OpenES(40, popsize=10, rank_shaping=rank_shaping, weight_decay=0.0, init=1.0, seed=2)
    b = OpenES(40, popsize=10, rank_shaping=rank_shaping, weight_decay=0.0, init=1.0, seed=2)
    a.tell(poisoned)
    b.tell(worst)
    assert np.isfinite(a.mean).all()
    np.testing.assert_allclose(a.mean, b.mean, rtol=1e-6)


def test_fitness_without_information_leaves_the_mean_in_place():
    for fitness in (np.full(8, np.nan), np.full(8, 3.0), np.array([np.inf, -np.inf] * 4)):
        es = OpenES(12, popsize=8, weight_decay=0.0, init=1.0, seed=0)
        before = es.mean
        es.tell(fitness)
        np.testing.assert_array_equal(es.mean, before)
        assert es.generation == 1


def test_weight_decay_is_the_reference_fitness_penalty():
    penalised = OpenES(50, popsize=20, weight_decay=0.01, rank_shaping=False, init=1.0, seed=5)
    manual = OpenES(50, popsize=20, weight_decay=0.0, rank_shaping=False, init=1.0, seed=5)
    cands = manual.ask().astype(np.float64)
    fitness = np.random.default_rng(0).normal(size=20)
    penalised.tell(fitness)
    manual.tell(fitness - 0.01 * np.mean(cands**2, axis=1))
    np.testing.assert_allclose(penalised.mean, manual.mean, rtol=1e-5, atol=1e-6)
    # With no task signal, the penalty alone pulls the mean towards zero.
    es = OpenES(50, popsize=20, weight_decay=0.01, init=1.0, seed=5)
    norm = np.linalg.norm(es.mean)
    run(es, lambda x: np.zeros(len(x)), 20)
    assert np.linalg.norm(es.mean) < 0.9 * norm


def test_fitness_shape_is_checked():
    es = OpenES(4, popsize=6)
    with pytest.raises(ValueError, match=r"fitness must have shape \(6,\).*got \(5,\)"):
        es.tell(np.zeros(5))


# ---------------------------------------------------------------- schedules
def test_lr_and_sigma_decay_stop_at_their_floors():
    es = OpenES(4, popsize=4, lr=0.2, lr_decay=0.5, lr_min=0.03, sigma=0.1, sigma_decay=0.9, sigma_min=0.05)
    es.tell(np.arange(4.0))
    assert es.lr == pytest.approx(0.1) and es.sigma == pytest.approx(0.09)
    run(es, sphere, 20)
    assert es.lr == 0.03 and es.sigma == 0.05
    # Reference defaults: x0.995 and x0.999 per generation.
    ref = OpenES(4, popsize=4)
    ref.tell(np.arange(4.0))
    assert ref.lr == pytest.approx(0.2 * 0.995) and ref.sigma == pytest.approx(0.1 * 0.999)


def test_callable_schedules_follow_remaining_progress():
    es = OpenES(
        4, popsize=4, lr=linear_schedule(0.5, 0.1), sigma=lambda p: 0.2 * p + 0.01, total_generations=4
    )
    seen = []
    for _ in range(5):
        seen.append((es.lr, es.sigma))
        es.tell(np.arange(4.0))
    np.testing.assert_allclose([s[0] for s in seen], [0.5, 0.4, 0.3, 0.2, 0.1])
    np.testing.assert_allclose([s[1] for s in seen], [0.21, 0.16, 0.11, 0.06, 0.01])
    with pytest.raises(ValueError, match="total_generations"):
        OpenES(4, popsize=4, lr=linear_schedule(0.5, 0.1))
    bad = OpenES(4, popsize=4, sigma=linear_schedule(0.1, 0.0), total_generations=2)
    bad.tell(np.arange(4.0))
    with pytest.raises(ValueError, match="sigma schedule returned 0.0 at generation 2"):
        bad.tell(np.arange(4.0))


# ---------------------------------------------------------------- state
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("seed", [21, None])
def test_resume_continues_bit_identically(optimizer, seed):
    kwargs = dict(popsize=12, optimizer=optimizer, init=0.3, sigma_decay=0.9, lr_decay=0.9, seed=seed)

    def loss(x):
        return rastrigin(x) + np.where(x[:, 0] > 0.9, np.nan, 0.0)  # some NaN fitness, too

    straight = OpenES(33, **kwargs)
    run(straight, loss, 4)
    state = straight.state_dict()  # a snapshot: later generations must not change it
    saved_mean = state["mean"].copy()
    run(straight, loss, 4)  # 8 generations without a stop
    np.testing.assert_array_equal(state["mean"], saved_mean)

    # The scalars survive JSON (checkpoint metadata); the arrays travel as arrays.
    scalars = json.loads(json.dumps({k: v for k, v in state.items() if not isinstance(v, np.ndarray)}))
    arrays = {k: v.copy() for k, v in state.items() if isinstance(v, np.ndarray)}
    resumed = OpenES(33, **{**kwargs, "seed": 999, "init": None})  # different start: the state must win
    resumed.load_state_dict({**scalars, **arrays})
    assert resumed.generation == 4
    run(resumed, loss, 4)

    np.testing.assert_array_equal(resumed.mean, straight.mean)
    np.testing.assert_array_equal(resumed.ask(), straight.ask())
    assert (resumed.lr, resumed.sigma, resumed.generation) == (straight.lr, straight.sigma, 8)
    if optimizer == "adam":
        np.testing.assert_array_equal(resumed.state_dict()["adam_v"], straight.state_dict()["adam_v"])


def test_load_state_dict_refuses_a_different_configuration():
    state = OpenES(10, popsize=4).state_dict()
    with pytest.raises(ValueError, match="popsize=4 but this optimiser has popsize=6"):
        OpenES(10, popsize=6).load_state_dict(state)
    with pytest.raises(ValueError, match="optimizer='sgd' but this optimiser has optimizer='adam'"):
        OpenES(10, popsize=4, optimizer="adam").load_state_dict(
            {**state, "adam_m": 0, "adam_v": 0, "adam_t": 0}
        )
    with pytest.raises(ValueError, match=r"missing \['mean'\]"):
        OpenES(10, popsize=4).load_state_dict({k: v for k, v in state.items() if k != "mean"})
    with pytest.raises(ValueError, match=r"mean has shape \(9,\), expected \(10,\)"):
        OpenES(10, popsize=4).load_state_dict({**state, "num_params": 10, "mean": np.zeros(9)})


# ---------------------------------------------------------------- bad arguments
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_params": 0}, "num_params must be a positive integer, got 0"),
        ({"popsize": 7}, "antithetic sampling needs an even popsize .*got 7"),
        ({"popsize": 1, "antithetic": False}, "popsize must be an integer >= 2, got 1"),
        ({"optimizer": "rmsprop"}, "unknown optimizer 'rmsprop'; accepted: sgd, adam"),
        ({"sigma": -0.1}, "sigma must be a finite number > 0, got -0.1"),
        ({"lr": float("nan")}, "lr must be a finite number > 0"),
        ({"lr_decay": 1.5}, r"lr_decay must be in \(0, 1\]"),
        ({"sigma_min": -1.0}, "sigma_min must be a finite number >= 0"),
        ({"weight_decay": -0.01}, "weight_decay must be a finite number >= 0"),
        ({"dtype": "int32"}, "unsupported dtype 'int32'; accepted: float32, float64"),
        ({"dtype": "bogus"}, "unknown dtype 'bogus'"),
        ({"init": np.zeros(3)}, r"init array must have shape \(10,\), got \(3,\)"),
        ({"init": "random"}, "init must be None"),
        ({"seed": -3}, "seed must be a non-negative integer or None, got -3"),
        ({"adam_betas": (0.9, 1.0)}, "adam_betas must be two numbers in"),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    args = {"num_params": 10, **kwargs}
    with pytest.raises(ValueError, match=message):
        OpenES(**args)
