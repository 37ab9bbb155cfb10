"""ESTrainer: learning on a fast task, checkpoints, exact resume, logs, bad configs."""

import csv
import json
import logging
import threading

import numpy as np
import pytest

from hebb_agents import es as es_module
from hebb_agents import trainer as trainer_module
from hebb_agents.es import OpenES
from hebb_agents.policy import EvolvablePolicy
from hebb_agents.trainer import CSV_COLUMNS, ESTrainer, TrainConfig, noise_drawn_meanwhile

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


@pytest.mark.parametrize("damage", ["cut_off_row", "empty"])
def test_resume_survives_a_log_damaged_by_a_kill(tmp_path, damage):
    ESTrainer(TrainConfig(**TINY, generations=2), out_dir=tmp_path).train()
    log = tmp_path / "progress.csv"
    text = log.read_text()
    log.write_text(text[: text.rstrip().rindex(",")] if damage == "cut_off_row" else "")
    resumed = ESTrainer.resume(tmp_path, generations=3)
    resumed.train()
    rows = list(csv.reader(log.open()))
    assert tuple(rows[0]) == CSV_COLUMNS
    kept = [1] if damage == "cut_off_row" else []  # the damaged row is dropped, whole ones kept
    assert [int(row[0]) for row in rows[1:]] == [*kept, 3]


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
    # were accepted by TrainConfig and refused only when ESTrainer built the ES (popsize 7 with a
    # hint at antithetic=False, not a TrainConfig field)
    with pytest.raises(ValueError, match=r"popsize must be an even integer >= 2 .*got 7; use 8"):
        TrainConfig(**{**TINY, "popsize": 7})
    with pytest.raises(ValueError, match=r"popsize must be an even integer >= 2 .*got -4$"):
        TrainConfig(**{**TINY, "popsize": -4})
    with pytest.raises(ValueError, match="unknown policy 'plastic'; accepted: hebbian, static"):
        TrainConfig(**{**TINY, "policy": "plastic"})
    with pytest.raises(ValueError, match="unknown optimizer 'rmsprop'; accepted: sgd, adam"):
        TrainConfig(**{**TINY, "optimizer": "rmsprop"})
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        ESTrainer.resume(tmp_path / "nothing")
    ESTrainer(TrainConfig(**TINY, generations=1), out_dir=tmp_path / "run").train()
    with pytest.raises(ValueError, match="cannot change"):
        ESTrainer.resume(tmp_path / "run", sigma=0.5)
    for bad, match in [
        ({"generations": 1.5}, "generations must be an integer, got 1.5"),
        ({"env_kwargs": [1, 2]}, "env_kwargs must be a dict"),
        ({"popsize": "8"}, "popsize must be an integer"),
        ({"max_steps": 2.5}, "max_steps must be an integer or None"),
        ({"env_kwargs": None}, "env_kwargs must be a dict"),
        ({"tensorboard": "yes"}, "tensorboard must be true or false"),
    ]:
        with pytest.raises(ValueError, match=match):
            TrainConfig(**{**TINY, **bad})
    with pytest.raises(ValueError, match=r"unknown hebbian policy option\(s\) \['hiden'\]; accepted: bias"):
        ESTrainer(TrainConfig(**{**TINY, "policy_config": {"hiden": [8]}}))
    with pytest.raises(ValueError, match="hidden must be a sequence of positive layer sizes"):
        ESTrainer(TrainConfig(**{**TINY, "policy_config": {"hidden": 8}}))
    legacy = TrainConfig(**{**TINY, "env_kwargs": [["max_episode_steps", 20]]}, checkpoint_every=2.0)
    assert legacy.env_kwargs == {"max_episode_steps": 20} and legacy.checkpoint_every == 2  # as older runs
    assert TrainConfig(**TINY, tensorboard=np.bool_(False)).tensorboard is False
    (tmp_path / "afile").write_text("")
    with pytest.raises(ValueError, match="is a file"):
        ESTrainer(TrainConfig(**TINY), out_dir=tmp_path / "afile")


def test_a_fresh_run_does_not_extend_an_old_log(tmp_path):
    (tmp_path / "progress.csv").write_text("generation\n1\n2\n")
    ESTrainer(TrainConfig(**TINY, generations=2), out_dir=tmp_path).train()
    rows = list(csv.DictReader((tmp_path / "progress.csv").open()))
    assert [int(r["generation"]) for r in rows] == [1, 2]
    assert (tmp_path / "progress.previous.csv").read_text() == "generation\n1\n2\n"


@pytest.mark.parametrize("saved", ["policy.npz", "best.npz", "checkpoint.npz"])
def test_a_fresh_run_refuses_a_folder_of_saved_results_and_touches_nothing(tmp_path, saved):
    (tmp_path / saved).write_bytes(b"earlier result")
    (tmp_path / "progress.csv").write_text("generation\n1\n")
    (tmp_path / "config.json").write_text("{}")
    hint = "hebb train --resume" if saved == "checkpoint.npz" else "choose another folder"
    with pytest.raises(ValueError, match=f"already holds an ES run \\({saved}\\); .*{hint}"):
        ESTrainer(TrainConfig(**TINY, generations=1), out_dir=tmp_path)
    assert (tmp_path / saved).read_bytes() == b"earlier result"
    assert (tmp_path / "progress.csv").read_text() == "generation\n1\n"
    assert (tmp_path / "config.json").read_text() == "{}"
    # the lock file of the refused run's hold is all it added
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(
        [saved, "progress.csv", "config.json", ".lock"]
    )


def test_resume_is_not_refused_by_its_own_results(tmp_path):
    ESTrainer(TrainConfig(**TINY, generations=1), out_dir=tmp_path).train()
    trainer = ESTrainer.resume(tmp_path, generations=2)
    trainer.train()
    assert trainer.generation == 2 and trainer.out_dir == tmp_path


def test_resume_warns_that_an_edited_config_json_is_not_what_it_resumes(tmp_path, recwarn):
    import json

    ESTrainer(TrainConfig(**TINY, generations=1), out_dir=tmp_path).train()
    ESTrainer.resume(tmp_path, generations=2)
    assert not [w for w in recwarn if "config.json" in str(w.message)]
    edited = {**json.loads((tmp_path / "config.json").read_text()), "sigma": 0.5}
    (tmp_path / "config.json").write_text(json.dumps(edited))
    with pytest.warns(UserWarning, match=r"differs from the checkpoint in \['sigma'\]; resuming keeps"):
        trainer = ESTrainer.resume(tmp_path, generations=2)
    assert trainer.config.sigma != 0.5


def test_a_resume_interrupted_before_it_saved_leaves_config_json_as_the_checkpoint(tmp_path, recwarn):
    import json

    ESTrainer(TrainConfig(**TINY, generations=1), out_dir=tmp_path).train()
    saved = (tmp_path / "config.json").read_text()
    trainer = ESTrainer.resume(tmp_path, generations=5)

    def interrupted():
        raise KeyboardInterrupt

    trainer.step = interrupted
    with pytest.raises(KeyboardInterrupt):
        trainer.train()
    assert (tmp_path / "config.json").read_text() == saved  # written with checkpoints only
    ESTrainer.resume(tmp_path, generations=5)
    assert not [w for w in recwarn if "config.json" in str(w.message)]
    assert json.loads(saved)["generations"] == 1


def test_a_backend_failure_saves_the_last_finished_generation_for_resume(tmp_path):
    trainer = ESTrainer(TrainConfig(**TINY, generations=5, checkpoint_every=10), out_dir=tmp_path)
    trainer.train(generations=2)  # the end of a train() call saves: generation 2
    real = trainer.backend.evaluate_candidates
    calls = []

    def lost_beyond_retries(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # generation 4: after 3 finished, none saved since 2
            raise RuntimeError("workers [0] died 4 times in generation 4")
        return real(*args, **kwargs)

    trainer.backend.evaluate_candidates = lost_beyond_retries
    with pytest.raises(RuntimeError, match="died 4 times"):
        trainer.train()
    resumed = ESTrainer.resume(tmp_path)
    assert resumed.generation == 3  # not 2: the finished generation was saved before the error
    straight = ESTrainer(TrainConfig(**TINY, generations=3))
    straight.train()
    np.testing.assert_array_equal(resumed.es.mean, straight.es.mean)


def test_an_error_inside_tell_saves_nothing_half_updated(tmp_path):
    trainer = ESTrainer(TrainConfig(**TINY, generations=5, checkpoint_every=10), out_dir=tmp_path)
    trainer.train(generations=2)  # the end of a train() call saves: generation 2
    saved = (tmp_path / "checkpoint.npz").read_bytes()
    real_tell = trainer.es.tell
    calls = []

    def half_then_broken(fitness):
        real_tell(fitness)  # the optimiser moves ...
        calls.append(1)
        if len(calls) == 2:  # ... and in generation 4 the commit then fails
            raise RuntimeError("broken after the update")

    trainer.es.tell = half_then_broken
    with pytest.raises(RuntimeError, match="broken after the update"):
        trainer.train()  # generation 3 finishes unsaved (checkpoint_every=10), 4 breaks inside tell
    assert trainer.generation == 3
    assert (tmp_path / "checkpoint.npz").read_bytes() == saved  # not the half-updated state as 3


@pytest.fixture
def default_sigint():
    """Ctrl-C raises KeyboardInterrupt here, even where the test runner was started ignoring SIGINT."""
    import signal

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_ctrl_c_mid_update_lands_the_generation_saves_it_and_resume_is_exact(
    tmp_path, monkeypatch, default_sigint
):
    """A SIGINT raised inside the optimiser update waits for the generation to land whole."""
    import signal

    from hebb_agents.es import OpenES

    straight = ESTrainer(TrainConfig(**TINY, generations=5), out_dir=tmp_path / "straight")
    straight.train()
    config = TrainConfig(**TINY, generations=5, checkpoint_every=10)
    trainer = ESTrainer(config, out_dir=tmp_path / "run")
    tell = OpenES.tell

    def tell_then_ctrl_c(es: OpenES, fitness: np.ndarray) -> None:
        if trainer.generation == 2:
            signal.raise_signal(signal.SIGINT)  # arrives in the middle of generation 3's update
        tell(es, fitness)

    monkeypatch.setattr(OpenES, "tell", tell_then_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        trainer.train()
    monkeypatch.undo()
    assert trainer.generation == 3 and trainer.saved_generation == 3  # landed, then saved
    rows = list(csv.DictReader((tmp_path / "run" / "progress.csv").open()))
    assert [int(r["generation"]) for r in rows] == [1, 2, 3]
    resumed = ESTrainer.resume(tmp_path / "run")
    assert resumed.generation == 3
    resumed.train()
    np.testing.assert_array_equal(straight.es.mean, resumed.es.mean)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers restored


def test_hebb_train_stops_cleanly_on_sigterm_and_resumes(tmp_path):
    """SIGTERM to the whole process group: no traceback, the last generation saved, workers gone."""
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "run"
    command = [sys.executable, "-m", "hebb_agents.cli", "train", "--out", str(out), "--popsize", "8"]
    command += ["--generations", "500", "--max-steps", "100", "--workers", "2", "--checkpoint-every", "1000"]
    child = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.time() + 120
    while not (out / "progress.csv").exists() or len((out / "progress.csv").read_text().splitlines()) < 3:
        assert time.time() < deadline and child.poll() is None, child.stderr.read() if child.stderr else ""
        time.sleep(0.2)
    os.killpg(child.pid, signal.SIGTERM)
    _, err = child.communicate(timeout=60)
    assert child.returncode == 130, err
    assert "Traceback" not in err and "continue with: hebb train --resume" in err, err
    resumed = ESTrainer.resume(out)
    rows = list(csv.DictReader((out / "progress.csv").open()))
    assert resumed.generation >= 2 and int(rows[-1]["generation"]) == resumed.generation


def test_a_second_ctrl_c_while_saving_still_leaves_the_checkpoint(tmp_path, monkeypatch, default_sigint):
    import signal

    from hebb_agents.es import OpenES

    trainer = ESTrainer(TrainConfig(**TINY, generations=5, checkpoint_every=10), out_dir=tmp_path)
    tell, save = OpenES.tell, ESTrainer._save
    saves = []

    def tell_then_ctrl_c(es: OpenES, fitness: np.ndarray) -> None:
        if trainer.generation == 2:
            signal.raise_signal(signal.SIGINT)
        tell(es, fitness)

    def save_with_ctrl_c(self: ESTrainer, out_dir) -> None:
        signal.raise_signal(signal.SIGINT)  # impatient user: a second Ctrl-C during the save
        save(self, out_dir)
        saves.append(self.generation)

    monkeypatch.setattr(OpenES, "tell", tell_then_ctrl_c)
    monkeypatch.setattr(ESTrainer, "_save", save_with_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        trainer.train()
    assert saves == [3] and trainer.saved_generation == 3
    monkeypatch.undo()
    assert ESTrainer.resume(tmp_path).generation == 3


def test_a_backend_that_cannot_start_writes_no_run_folder(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="workers must be >= 1"):  # refused before any trainer
        TrainConfig(**{**TINY, "backend": "process", "workers": 0}, generations=2)

    def cannot_start(*args, **kwargs):
        raise ValueError("no worker could start")

    monkeypatch.setattr(trainer_module, "make_backend", cannot_start)
    config = TrainConfig(**{**TINY, "backend": "process", "workers": 1}, generations=2)
    with pytest.raises(ValueError, match="no worker could start"):
        ESTrainer(config, out_dir=tmp_path / "run").train()
    assert not (tmp_path / "run").exists()


def test_a_generations_noise_is_drawn_beside_its_evaluation_not_in_tell(monkeypatch):
    threads = []
    real = es_module.noise_for

    def recording(*args, **kwargs):
        threads.append(threading.current_thread().name)
        return real(*args, **kwargs)

    monkeypatch.setattr(es_module, "noise_for", recording)
    ESTrainer(TrainConfig(**TINY, generations=3)).train()
    assert threads == ["es-noise"] * 3  # one draw per generation, none left for tell

    es = OpenES(500, popsize=8, seed=3)
    with noise_drawn_meanwhile(es):
        pass  # the block is left only once the draw is done
    assert threads[-1] == "es-noise" and len(threads) == 4
    es.tell(np.arange(8.0))
    assert len(threads) == 4


def test_resume_keeps_an_unreadable_config_json_aside_and_says_so(tmp_path):
    ESTrainer(TrainConfig(**TINY, generations=1), out_dir=tmp_path).train()
    (tmp_path / "config.json").write_text('{"sigma": 0.5,')  # an edit gone wrong
    # was overwritten without a word at the next save
    with pytest.warns(
        UserWarning, match=r"is not a JSON object of settings .*moved to config.unreadable.json"
    ):
        trainer = ESTrainer.resume(tmp_path, generations=2)
    assert (tmp_path / "config.unreadable.json").read_text() == '{"sigma": 0.5,'
    trainer.train()
    assert json.loads((tmp_path / "config.json").read_text())["generations"] == 2


def test_a_trainer_holds_its_folder_until_closed_and_refuses_a_folder_that_moved_on(tmp_path):
    import subprocess
    import sys

    trainer = ESTrainer(TrainConfig(**TINY, generations=1), out_dir=tmp_path)
    trainer.train()
    code = "from hebb_agents.trainer import ESTrainer; ESTrainer.resume({!r}, generations=3).train()"
    other = subprocess.run([sys.executable, "-c", code.format(str(tmp_path))], capture_output=True, text=True)
    assert other.returncode != 0 and "is in use by another run" in other.stderr  # still held after train()
    trainer.close()
    assert subprocess.run([sys.executable, "-c", code.format(str(tmp_path))]).returncode == 0
    # was: this trainer took the folder again and rolled the run back from generation 3 to 2
    with pytest.raises(
        ValueError, match="moved on since this trainer let it go .*generation 3, this trainer's at 1"
    ):
        trainer.train(generations=1)
    assert ESTrainer.resume(tmp_path).generation == 3


def test_auto_fitness_is_chosen_when_the_trainer_is_built_and_saved_as_chosen(tmp_path):
    """TrainConfig's default fitness is auto, as hebb train's: distance where the env reports
    x_position, else return; the run saves (and a resume keeps) the choice."""
    assert TrainConfig(**TINY).fitness == "auto"
    assert TrainConfig(**{**TINY, "fitness": None}).fitness == "auto"
    mine = TrainConfig(**TINY)
    assert ESTrainer(mine).config.fitness == "return"
    assert mine.fitness == "auto"  # the caller's config is not changed: it may go to another env next
    cheetah = TrainConfig(**{**TINY, "env_id": "hebb/HalfCheetahDamage-v0", "max_steps": 5}, generations=1)
    trainer = ESTrainer(cheetah, out_dir=tmp_path / "run")
    trainer.train()
    trainer.close()
    assert json.loads((tmp_path / "run" / "config.json").read_text())["fitness"] == "distance"
    assert ESTrainer.resume(tmp_path / "run").config.fitness == "distance"
    with pytest.raises(ValueError, match="fitness 'bogus' is not available on CartPole-v1; accepted: auto"):
        ESTrainer(TrainConfig(**{**TINY, "fitness": "bogus"}))


def test_notices_during_training_print_on_their_own_line_not_inside_the_progress_bar(capsys):
    def notice(stats, trainer):
        logging.getLogger("hebb_agents.backends").warning("worker 0 died; restarting it")

    ESTrainer(TrainConfig(**TINY, generations=2), callbacks=[notice], progress=True).train()
    err = capsys.readouterr().err
    assert err.count("worker 0 died; restarting it") == 2
    for line in err.split("\n"):
        if "worker 0 died" in line:
            assert line.split("\r")[-1] == "worker 0 died; restarting it"  # nothing of the bar before it
