"""ESTrainer: learning on a fast task, checkpoints, exact resume, logs, bad configs."""

import csv

import numpy as np
import pytest

from hebb_agents.policy import EvolvablePolicy
from hebb_agents.trainer import CSV_COLUMNS, ESTrainer, TrainConfig

TINY = dict(
    env_id="CartPole-v1",
    policy_config={"hidden": [8]},
    popsize=8,
    max_steps=60,
    backend="serial",
    seed=3,
)


def test_hebbian_agent_improves_on_cartpole():
    """From random weights every episode, evolved rules balance the pole far longer than at the start."""
    config = TrainConfig(
        env_id="CartPole-v1",
        policy_config={"hidden": [32, 16]},
        popsize=32,
        generations=12,
        max_steps=300,
        backend="serial",
        seed=0,
    )
    stats = ESTrainer(config).train()
    first = np.mean([s.fitness_mean for s in stats[:2]])
    last = np.mean([s.fitness_mean for s in stats[-2:]])
    assert last > 2 * first and last > 100, (first, last)


def test_resume_equals_straight_run(tmp_path):
    straight = ESTrainer(TrainConfig(**TINY, generations=4), out_dir=tmp_path / "a")
    straight.train()
    half = ESTrainer(TrainConfig(**TINY, generations=2), out_dir=tmp_path / "b")
    half.train()
    resumed = ESTrainer.resume(tmp_path / "b", generations=4)
    assert resumed.generation == 2
    resumed.train()
    np.testing.assert_array_equal(straight.es.mean, resumed.es.mean)
    assert straight.best_fitness == resumed.best_fitness
    rows_a = list(csv.DictReader((tmp_path / "a" / "progress.csv").open()))
    rows_b = list(csv.DictReader((tmp_path / "b" / "progress.csv").open()))
    assert [r["fitness_mean"] for r in rows_a] == [r["fitness_mean"] for r in rows_b]
    assert [int(r["generation"]) for r in rows_b] == [1, 2, 3, 4]


def test_kill_after_checkpoint_then_resume_drops_unsaved_generations(tmp_path):
    """Generations logged after the last checkpoint are re-run, not duplicated, after a resume."""
    trainer = ESTrainer(TrainConfig(**TINY, generations=5, checkpoint_every=2), out_dir=tmp_path)
    trainer.train(generations=3)  # checkpoint at 2; generation 3 logged but not checkpointed... then "killed"
    trainer.close()
    resumed = ESTrainer.resume(tmp_path, generations=5)
    assert resumed.generation == 3  # train() saves at its end
    resumed.train()
    rows = list(csv.DictReader((tmp_path / "progress.csv").open()))
    assert [int(r["generation"]) for r in rows] == [1, 2, 3, 4, 5]
    reference = ESTrainer(TrainConfig(**TINY, generations=5))
    reference.train()
    np.testing.assert_array_equal(reference.es.mean, resumed.es.mean)


def test_outputs_are_loadable_policies_and_csv_has_columns(tmp_path):
    trainer = ESTrainer(TrainConfig(**TINY, generations=2), out_dir=tmp_path)
    trainer.train()
    with (tmp_path / "progress.csv").open() as handle:
        header = next(csv.reader(handle))
    assert tuple(header) == CSV_COLUMNS
    centre = EvolvablePolicy.load(tmp_path / "policy.npz")
    best = EvolvablePolicy.load(tmp_path / "best.npz")
    np.testing.assert_allclose(centre.get_params()[0], trainer.es.mean)
    np.testing.assert_allclose(best.get_params()[0], trainer.best_params)


def test_process_backend_training_equals_serial():
    serial = ESTrainer(TrainConfig(**TINY, generations=2))
    serial.train()
    parallel = ESTrainer(TrainConfig(**{**TINY, "backend": "process", "workers": 2}, generations=2))
    parallel.train()
    np.testing.assert_array_equal(serial.es.mean, parallel.es.mean)


def test_static_policy_trains_with_the_same_trainer(tmp_path):
    config = TrainConfig(**{**TINY, "policy": "static"}, generations=2)
    trainer = ESTrainer(config, out_dir=tmp_path)
    trainer.train()
    assert EvolvablePolicy.load(tmp_path / "policy.npz").kind == "static"


def test_bad_configs_fail_clearly(tmp_path):
    with pytest.raises(ValueError, match="accepted: serial, process, ray"):
        TrainConfig(backend="gpu")
    with pytest.raises(ValueError, match="unknown training options"):
        TrainConfig.from_dict({"env_id": "CartPole-v1", "pop": 3})
    with pytest.raises(ValueError, match="lockstep_size must be 'auto', 'all' or an integer >= 1"):
        TrainConfig(lockstep_size="bogus")
    assert TrainConfig(lockstep_size="4").lockstep_size == 4
    with pytest.raises(ValueError, match="even popsize"):
        ESTrainer(TrainConfig(**{**TINY, "popsize": 7}))
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        ESTrainer.resume(tmp_path / "nothing")
    ESTrainer(TrainConfig(**TINY, generations=1), out_dir=tmp_path / "run").train()
    with pytest.raises(ValueError, match="cannot change"):
        ESTrainer.resume(tmp_path / "run", sigma=0.5)


def test_a_fresh_run_does_not_extend_an_old_log(tmp_path):
    (tmp_path / "progress.csv").write_text("generation\n1\n2\n")
    ESTrainer(TrainConfig(**TINY, generations=2), out_dir=tmp_path).train()
    rows = list(csv.DictReader((tmp_path / "progress.csv").open()))
    assert [int(r["generation"]) for r in rows] == [1, 2]
    assert (tmp_path / "progress.previous.csv").read_text() == "generation\n1\n2\n"
