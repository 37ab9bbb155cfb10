"""The hebb command: train, eval, resume after a kill, and clear errors for bad input."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hebb_agents.cli import main
from hebb_agents.rollout import resolve_fitness

TRAIN = [
    "train",
    "--env",
    "CartPole-v1",
    "--fitness",
    "return",
    "--hidden",
    "8",
    "--popsize",
    "8",
    "--max-steps",
    "50",
]


def test_train_then_eval(tmp_path, capsys):
    out = tmp_path / "run"
    assert main([*TRAIN, "--generations", "2", "--backend", "serial", "--out", str(out)]) == 0
    assert (out / "policy.npz").exists() and (out / "best.npz").exists()
    assert main(["eval", str(out), "--episodes", "3"]) == 0
    text = capsys.readouterr().out
    assert "return" in text and "±" in text and "CartPole-v1" in text


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ('{"env_id": "CartPole-v1", "max', "is not readable JSON"),
        ("", "is not readable JSON"),
        ("[1, 2]", "is not a JSON object"),
        ('{"max_steps": "fifty"}', "max_steps"),
        ('{"max_step": 50}', "unknown training options ['max_step']"),
    ],
)
def test_eval_names_a_damaged_config_json_beside_the_policy(tmp_path, capsys, text, says):
    out = tmp_path / "run"
    assert main([*TRAIN, "--generations", "1", "--backend", "serial", "--out", str(out)]) == 0
    (out / "config.json").write_text(text)
    capsys.readouterr()
    assert main(["eval", str(out), "--episodes", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {out / 'config.json'} (the run's settings)") and says in err
    assert len(err.strip().splitlines()) == 1
    # with the values it would have read given on the command line, config.json is not read at all
    assert main(["eval", str(out), "--episodes", "1", "--env-kwargs", "{}", "--max-steps", "10"]) == 0


def test_eval_reports_distance_on_locomotion(tmp_path, capsys):
    out = tmp_path / "cheetah"
    args = ["train", "--env", "HalfCheetah-v5", "--hidden", "8", "--popsize", "4", "--max-steps", "20"]
    assert main([*args, "--generations", "1", "--backend", "serial", "--out", str(out)]) == 0
    assert main(["eval", str(out / "best.npz"), "--episodes", "2", "--max-steps", "20"]) == 0
    assert "distance" in capsys.readouterr().out


def test_default_fitness_is_return_without_x_position_and_distance_with_it(tmp_path):
    """`hebb train --out DIR` alone must run (CartPole has no x_position); locomotion scores distance."""
    out = tmp_path / "defaults"
    args = ["train", "--hidden", "8", "--popsize", "4", "--max-steps", "20", "--generations", "1"]
    assert main([*args, "--backend", "serial", "--out", str(out)]) == 0
    assert json.loads((out / "config.json").read_text())["fitness"] == "return"
    assert resolve_fitness(None, "hebb/HalfCheetahDamage-v0", {}) == "distance"
    assert resolve_fitness(None, "Pendulum-v1", {}) == "return"
    assert resolve_fitness("x_velocity", "hebb/HalfCheetahDamage-v0", {}) == "x_velocity"


def test_odd_popsize_is_refused_with_the_next_even_one(tmp_path, capsys):
    assert main([*TRAIN, "--popsize", "7", "--out", str(tmp_path / "odd")]) == 2
    assert "--popsize must be even" in capsys.readouterr().err
    assert not (tmp_path / "odd").exists()


def test_eval_of_a_missing_path_says_it_does_not_exist(tmp_path, capsys):
    assert main(["eval", str(tmp_path / "nowhere")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "ppo").mkdir()
    (tmp_path / "ppo" / "baseline.json").write_text("{}")
    assert main(["eval", str(tmp_path / "ppo")]) == 2
    err = capsys.readouterr().err
    assert "SB3 baseline folder" in err and "hebb compare" in err


def test_unavailable_fitness_fails_before_training_and_lists_what_the_env_offers(tmp_path, capsys):
    args = ["train", "--hidden", "8", "--popsize", "4", "--generations", "1", "--backend", "serial"]
    assert main([*args, "--fitness", "distanc", "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert "fitness 'distanc' is not available on CartPole-v1; accepted: auto, return" in err
    assert "distance" not in err.split("accepted:")[1]  # CartPole reports no x_position
    assert not (tmp_path / "a").exists()  # nothing written
    cheetah = ["--env", "hebb/HalfCheetahDamage-v0", "--fitness", "damage", "--out", str(tmp_path / "b")]
    assert main([*args, *cheetah]) == 2  # info["damage"] is the body's name, not a number
    accepted = capsys.readouterr().err.split("accepted:")[1]
    assert "reward_forward" in accepted and "damage" not in accepted
    assert main([*args, "--fitness", "distance", "--out", str(tmp_path / "b")]) == 2
    assert "accepted: auto, return" in capsys.readouterr().err


def test_refuses_to_overwrite_a_run_without_resume(tmp_path, capsys):
    out = tmp_path / "run"
    assert main([*TRAIN, "--generations", "1", "--backend", "serial", "--out", str(out)]) == 0
    before = (out / "checkpoint.npz").read_bytes()
    assert main([*TRAIN, "--generations", "1", "--backend", "serial", "--out", str(out)]) == 2
    assert "--resume" in capsys.readouterr().err
    assert (out / "checkpoint.npz").read_bytes() == before  # nothing saved is lost


def test_unknown_env_rule_and_option_fail_with_accepted_values(tmp_path, capsys):
    assert main([*TRAIN, "--env", "Cheetah-v0", "--backend", "serial", "--out", str(tmp_path / "x")]) == 2
    assert "unknown environment id 'Cheetah-v0'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*TRAIN, "--rule", "Oja"])
    err = capsys.readouterr().err
    assert "invalid choice: 'Oja'" in err and "ABCD_lr" in err
    with pytest.raises(SystemExit):
        main([*TRAIN, "--env-kwargs", "{not json"])
    assert "not valid JSON" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*TRAIN, "--lockstep-size", "0"])
    assert "lockstep_size must be 'auto', 'all' or an integer >= 1, got '0'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*TRAIN, "--seed", "-1"])
    assert "argument --seed: expected an integer >= 0, got '-1'" in capsys.readouterr().err
    for command in (
        [*TRAIN, "--hidden", "0"],
        ["eval", "run", "--episodes", "0"],
        ["baseline", "--steps", "0"],
    ):
        with pytest.raises(SystemExit):
            main([*command, "--out", str(tmp_path / "never")] if command[0] != "eval" else command)
        assert f"argument {command[-2]}: expected an integer >= 1, got '0'" in capsys.readouterr().err
    assert not (tmp_path / "never").exists()
    assert main(["eval", str(tmp_path / "missing.npz")]) == 2


def test_killed_training_resumes_from_last_checkpoint(tmp_path):
    """SIGKILL a running `hebb train`, then `--resume` finishes the run with one row per generation."""
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "hebb_agents.cli", *TRAIN, "--backend", "process", "--workers", "2"]
    cmd += ["--generations", "400", "--checkpoint-every", "1", "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and not (out / "checkpoint.npz").exists():
        time.sleep(0.2)
    time.sleep(1.0)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert (out / "checkpoint.npz").exists()
    rows = list(csv.DictReader((out / "progress.csv").open()))
    done = len(rows)
    assert 0 < done < 400
    target = done + 3
    assert (
        main(["train", "--resume", "--out", str(out), "--generations", str(target), "--backend", "serial"])
        == 0
    )
    generations = [int(r["generation"]) for r in csv.DictReader((out / "progress.csv").open())]
    assert generations == list(range(1, target + 1))


def test_resume_keeps_saved_settings_unless_overridden(tmp_path, capsys):
    from hebb_agents.trainer import ESTrainer

    out = tmp_path / "run"
    assert main([*TRAIN, "--generations", "4", "--backend", "serial", "--out", str(out)]) == 0
    trainer = ESTrainer.resume(out)  # what `--resume` without flags rebuilds
    assert trainer.config.generations == 4 and trainer.config.backend == "serial"
    capsys.readouterr()
    assert main(["train", "--resume", "--out", str(out), "--popsize", "16", "--rule", "A"]) == 0
    captured = capsys.readouterr()
    assert "ignored: --rule, --popsize" in captured.err  # saved settings win, and the user is told
    # the run's own flags repeated change nothing: no warning (was "ignored: --hidden, --popsize")
    assert (
        main(
            [
                "train",
                "--resume",
                "--out",
                str(out),
                "--popsize",
                "8",
                "--hidden",
                "8",
                "--env",
                "CartPole-v1",
            ]
        )
        == 0
    )
    assert "ignored" not in capsys.readouterr().err
    assert "nothing to do" in captured.out and "generation 4 of 4" in captured.out
    assert len(list(csv.DictReader((out / "progress.csv").open()))) == 4
    capsys.readouterr()
    assert main(["train", "--resume", "--out", str(out), "--generations", "5", "--lockstep-size", "3"]) == 0
    captured = capsys.readouterr()
    assert "ignored" not in captured.err  # how members are grouped is not a saved setting
    # one generation ran: its fitness alone, not "x (generation 5) -> x"
    assert "generation 5: population mean fitness" in captured.out and "->" not in captured.out
    assert len(list(csv.DictReader((out / "progress.csv").open()))) == 5
    assert ESTrainer.resume(out).config.lockstep_size == 3


def test_eval_on_an_env_with_other_spaces_names_both(tmp_path, capsys):
    out = tmp_path / "run"
    assert main([*TRAIN, "--generations", "1", "--backend", "serial", "--out", str(out)]) == 0
    assert main(["eval", str(out), "--env", "Pendulum-v1"]) == 2
    assert "was trained for observations" in capsys.readouterr().err


def test_static_policy_warns_about_hebbian_flags_and_eval_names_a_trainer_checkpoint(tmp_path, capsys):
    out = tmp_path / "static"
    args = [*TRAIN, "--policy", "static", "--rule", "ABC", "--backend", "serial", "--out", str(out)]
    assert main(args) == 0
    assert "warning: --policy static has no plasticity; ignored: --rule" in capsys.readouterr().err
    assert main(["eval", str(out / "checkpoint.npz"), "--episodes", "1"]) == 2
    err = capsys.readouterr().err
    assert "is the trainer's checkpoint" in err and "policy.npz" in err


def test_an_address_without_the_ray_backend_is_named_as_ignored(tmp_path, capsys):
    out = tmp_path / "run"
    args = [
        *TRAIN,
        "--generations",
        "1",
        "--backend",
        "serial",
        "--address",
        "10.0.0.1:6379",
        "--out",
        str(out),
    ]
    assert main(args) == 0
    assert "warning: --address only applies to --backend ray; the serial backend ignores it" in (
        capsys.readouterr().err
    )


def test_workers_lost_beyond_retries_end_in_one_line_with_the_resume_command(tmp_path, capsys, monkeypatch):
    from hebb_agents.backends import SerialBackend, WorkersLost

    real = SerialBackend.evaluate_candidates
    calls = []

    def lost_in_generation_3(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise WorkersLost("workers [0] died 4 times in generation 3")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(SerialBackend, "evaluate_candidates", lost_in_generation_3)
    out = tmp_path / "run"
    # was a traceback with no --resume command
    assert main([*TRAIN, "--generations", "5", "--backend", "serial", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "error: workers [0] died 4 times in generation 3" in err
    assert f"checkpoint at generation 2; continue with: hebb train --resume --out {out}" in err


def test_a_second_run_into_a_folder_in_use_is_refused_before_it_touches_it(tmp_path, capsys, held_elsewhere):
    out = tmp_path / "run"
    assert main([*TRAIN, "--generations", "1", "--backend", "serial", "--out", str(out)]) == 0
    rows = (out / "progress.csv").read_text().splitlines()
    next_row = "2" + rows[-1][rows[-1].index(",") :]  # the first run went on past its checkpoint
    (out / "progress.csv").write_text("\n".join([*rows, next_row]) + "\n")
    before = {name: (out / name).read_bytes() for name in ("progress.csv", "checkpoint.npz", "config.json")}
    with held_elsewhere(out):  # another process training into the folder
        # was: a refused --resume had already truncated the log (and a racing one wrote into it)
        resume = ["train", "--resume", "--out", str(out), "--generations", "3", "--backend", "serial"]
        assert main(resume) == 2
        assert f"{out.resolve()} is in use by another run" in capsys.readouterr().err
        assert {name: (out / name).read_bytes() for name in before} == before
    assert main(["train", "--resume", "--out", str(out), "--generations", "2", "--backend", "serial"]) == 0


def test_resume_changes_checkpoint_every_and_tensorboard(tmp_path, capsys):
    from hebb_agents.trainer import ESTrainer

    out = tmp_path / "run"
    assert main([*TRAIN, "--generations", "1", "--backend", "serial", "--out", str(out)]) == 0
    capsys.readouterr()
    args = ["train", "--resume", "--out", str(out), "--generations", "2", "--checkpoint-every", "1"]
    assert main(args) == 0
    assert "ignored" not in capsys.readouterr().err  # was "ignored: --checkpoint-every"
    assert ESTrainer.resume(out).config.checkpoint_every == 1
    assert ESTrainer.resume(out).config.tensorboard is False


def test_eval_names_the_body_it_used_and_keeps_it_on_the_runs_own_env(tmp_path, capsys):
    out = tmp_path / "run"
    args = [
        "train", "--env", "hebb/HalfCheetahDamage-v0", "--env-kwargs", '{"damage": "front_thigh_paralysed"}',
        "--hidden", "4", "--popsize", "4", "--max-steps", "10", "--generations", "1", "--backend", "serial",
        "--out", str(out),
    ]  # fmt: skip
    assert main(args) == 0
    capsys.readouterr()
    for extra in ([], ["--env", "hebb/HalfCheetahDamage-v0"]):  # the second used the intact body
        assert main(["eval", str(out), "--episodes", "1", *extra]) == 0
        assert (
            'on hebb/HalfCheetahDamage-v0 {"damage": "front_thigh_paralysed"}, 1 episodes'
            in capsys.readouterr().out
        )


def test_a_trainer_checkpoint_loaded_as_a_policy_names_the_policy_files(tmp_path):
    from hebb_agents.policy import EvolvablePolicy

    out = tmp_path / "run"
    assert main([*TRAIN, "--generations", "1", "--backend", "serial", "--out", str(out)]) == 0
    # was "metadata lacks 'policy'; is this a hebb-agents policy checkpoint?"
    with pytest.raises(
        ValueError, match=r"is the trainer's checkpoint \(optimiser state\), not a policy; load .*policy.npz"
    ):
        EvolvablePolicy.load(out / "checkpoint.npz")


def test_cli_warnings_print_as_one_line_and_callers_still_record_them(tmp_path, capsys, recwarn):
    out = tmp_path / "run"
    assert main([*TRAIN, "--generations", "1", "--backend", "serial", "--out", str(out)]) == 0
    config = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({**config, "sigma": 0.5}))
    capsys.readouterr()
    assert main(["train", "--resume", "--out", str(out), "--generations", "1"]) == 0
    assert [w for w in recwarn if "differs from the checkpoint" in str(w.message)]  # was swallowed
    assert main(["train", "--resume", "--out", str(out), "--generations", "2", "--no-tensorboard"]) == 0
    (out / "config.json").write_text("{broken")
    # another env with its own length needs nothing from the run's config.json
    assert main(["eval", str(out), "--env", "CartPole-v0", "--max-steps", "5", "--episodes", "1"]) == 0


def test_config_file_sets_what_the_command_line_does_not(tmp_path, capsys):
    """Each setting: the command line if given, else the --config file, else the default; the file
    also reaches fields the command line has no flag for."""
    settings = {
        "env_id": "CartPole-v1",
        "popsize": 6,
        "sigma": 0.05,
        "lr_decay": 0.9,
        "generations": 2,
        "max_steps": 30,
        "backend": "serial",
        "policy_config": {"hidden": [4], "rule": "ABC"},
    }
    config_file = tmp_path / "settings.json"
    config_file.write_text(json.dumps(settings))
    out = tmp_path / "run"
    given = ["--popsize", "4", "--rule", "AD", "--out", str(out)]
    assert main(["train", "--config", str(config_file), *given]) == 0
    saved = json.loads((out / "config.json").read_text())
    assert saved["popsize"] == 4 and saved["policy_config"]["rule"] == "AD"  # the command line wins
    assert saved["sigma"] == 0.05 and saved["lr_decay"] == 0.9 and saved["max_steps"] == 30  # the file
    assert saved["policy_config"]["hidden"] == [4] and saved["generations"] == 2
    assert saved["lr"] == 0.2 and saved["fitness"] == "return"  # defaults where neither sets them
    rows = list(csv.DictReader((out / "progress.csv").open()))
    assert len(rows) == 2 and float(rows[1]["lr"]) == pytest.approx(0.2 * 0.9)  # the file's lr_decay
    assert float(rows[1]["sigma"]) == pytest.approx(0.05 * 0.999)

    # a run's own config.json starts the same run again; only what is given changes
    again = tmp_path / "again"
    assert main(["train", "--config", str(out / "config.json"), "--seed", "3", "--out", str(again)]) == 0
    repeated = json.loads((again / "config.json").read_text())
    assert repeated == {**saved, "seed": 3}


def test_toml_presets_in_configs_train(tmp_path):
    """Every settings file shipped in configs/ loads, and trains with small overrides."""
    presets = sorted((Path(__file__).parents[1] / "configs").glob("*.*"))
    assert {path.suffix for path in presets} == {".toml", ".json"}
    small = ["--popsize", "4", "--generations", "1", "--max-steps", "10", "--hidden", "4"]
    small += ["--backend", "serial"]
    for preset in presets:
        out = tmp_path / preset.stem
        assert main(["train", "--config", str(preset), *small, "--out", str(out)]) == 0, preset.name
        saved = json.loads((out / "config.json").read_text())
        assert saved["env_id"].startswith("hebb/") and saved["lr_decay"] == 0.995 and saved["max_steps"] == 10


@pytest.mark.parametrize(
    ("name", "text", "says"),
    [
        ("bad.json", '{"popsize": 8,', "not readable JSON"),
        ("bad.toml", "popsize = = 8", "not readable TOML"),
        ("list.json", "[8]", "expected an object of training settings, got list"),
        ("typo.json", '{"popsiz": 8}', "unknown training options ['popsiz']; accepted: "),
        ("flat.json", '{"rule": "AD"}', "(rule: policy settings, given in policy_config)"),
        ("sigma.json", '{"sigma": "0.1"}', "sigma must be a number, got '0.1'"),
        ("decay.toml", "lr_decay = 1.5", "lr_decay must be in (0, 1]"),
        ("odd.json", '{"popsize": 7}', "popsize must be an even integer >= 2 (the ES samples antithetic"),
        ("settings.yaml", "popsize: 8", "settings files are .json or .toml, got '.yaml'"),
        ("stop.json", '{"early_stop": "bogus"}', "unknown early_stop 'bogus'; accepted: none, locomotion"),
        ("workers.json", '{"workers": 0}', "workers must be >= 1 or None"),
        ("episodes.json", '{"episodes": 0}', "episodes must be >= 1"),
        ("fitness.json", '{"fitness": 3}', "fitness must be a name"),
        ("rule.json", '{"policy_config": {"rule": "bogus"}}', "(settings from "),
        ("key.json", '{"fitness": "bogus"}', "fitness 'bogus' is not available on CartPole-v1"),
    ],
)
def test_a_malformed_config_file_is_named_and_nothing_is_written(tmp_path, capsys, name, text, says):
    config_file = tmp_path / name
    config_file.write_text(text)
    out = tmp_path / "run"
    assert main(["train", "--config", str(config_file), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert str(config_file) in err and says in err and len(err.strip().splitlines()) == 1
    assert err.startswith(f"error: {config_file}: ") or err.endswith(
        f"(settings from {config_file} and the command line)\n"
    )
    assert not out.exists()


def test_config_with_resume_or_missing_is_refused_and_static_drops_plastic_settings(tmp_path, capsys):
    assert main(["train", "--config", str(tmp_path / "none.json"), "--out", str(tmp_path / "x")]) == 2
    assert "none.json: no such settings file" in capsys.readouterr().err
    out = tmp_path / "run"
    assert main([*TRAIN, "--generations", "1", "--backend", "serial", "--out", str(out)]) == 0
    before = (out / "checkpoint.npz").read_bytes()
    assert main(["train", "--resume", "--config", str(out / "config.json"), "--out", str(out)]) == 2
    assert "--config starts a new run; --resume continues one" in capsys.readouterr().err
    assert main(["train", "--config", str(out / "config.json"), "--out", str(out)]) == 2
    err = capsys.readouterr().err  # a taken folder is not the settings' fault: no "(settings from ...)"
    assert "already holds an ES run" in err and "settings from" not in err
    assert (out / "checkpoint.npz").read_bytes() == before
    static = tmp_path / "static"
    args = ["train", "--config", str(out / "config.json"), "--policy", "static", "--out", str(static)]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "policy_config: init, normalisation, rule, sharing" in err
    assert json.loads((static / "config.json").read_text())["policy_config"] == {"hidden": [8]}


def test_config_json_of_another_env_older_pairs_and_static_extras(tmp_path, capsys):
    """A run's config.json on another --env chooses the fitness again; env_kwargs saved as pairs (older
    runs) work; --policy static drops every Hebbian-only key of the file's policy_config."""
    out = tmp_path / "cartpole"
    assert main([*TRAIN, "--generations", "1", "--backend", "serial", "--out", str(out)]) == 0
    assert json.loads((out / "config.json").read_text())["fitness"] == "return"
    small = ["--max-steps", "10", "--generations", "1", "--popsize", "4"]
    cheetah = tmp_path / "cheetah"
    args = ["train", "--config", str(out / "config.json"), "--env", "hebb/HalfCheetahDamage-v0", *small]
    capsys.readouterr()
    assert main([*args, "--out", str(cheetah)]) == 0
    assert "note: fitness 'distance' for hebb/HalfCheetahDamage-v0" in capsys.readouterr().err
    preset = Path(__file__).parents[1] / "configs" / "paper_ant_damage.toml"
    ant = ["train", "--config", str(preset), "--env", "CartPole-v1", "--hidden", "4"]
    assert main([*ant, *small, "--backend", "serial", "--out", str(tmp_path / "ant")]) == 2
    err = capsys.readouterr().err  # the file's env-specific settings named, and where the error came from
    assert "its env_kwargs {'damage': 'paper_seen'}, early_stop 'locomotion' stay for CartPole-v1" in err
    assert err.rstrip().endswith(f"(settings from {preset} and the command line)")
    assert json.loads((cheetah / "config.json").read_text())["fitness"] == "distance"
    assert main([*args, "--fitness", "return", "--out", str(tmp_path / "kept")]) == 0
    assert json.loads((tmp_path / "kept" / "config.json").read_text())["fitness"] == "return"

    pairs = tmp_path / "pairs.json"
    pairs.write_text(json.dumps({"env_id": "hebb/HalfCheetahDamage-v0", "env_kwargs": [["damage", "seen"]]}))
    assert main(["train", "--config", str(pairs), *small, "--hidden", "4", "--out", str(tmp_path / "p")]) == 0
    saved = json.loads((tmp_path / "p" / "config.json").read_text())
    assert saved["env_kwargs"] == {"damage": "seen"} and saved["fitness"] == "distance"

    hebbian = json.loads((out / "config.json").read_text())
    hebbian["policy_config"]["output_activation"] = "tanh"
    extras = tmp_path / "extras.json"
    extras.write_text(json.dumps(hebbian))
    static = tmp_path / "static"
    assert main(["train", "--config", str(extras), "--policy", "static", *small, "--out", str(static)]) == 0
    assert "policy_config: init, normalisation, output_activation, rule, sharing" in capsys.readouterr().err
    assert json.loads((static / "config.json").read_text())["policy_config"] == {"hidden": [8]}


def test_resume_with_max_steps_0_repeats_the_saved_cap_without_a_warning(tmp_path, capsys):
    out = tmp_path / "run"
    base = [*TRAIN[:-2], "--max-steps", "0", "--backend", "serial", "--out", str(out)]
    assert main([*base, "--generations", "1"]) == 0
    capsys.readouterr()
    assert main(["train", "--resume", "--out", str(out), "--generations", "2", "--max-steps", "0"]) == 0
    assert "ignored" not in capsys.readouterr().err
    assert main(["train", "--resume", "--out", str(out), "--generations", "3", "--max-steps", "5"]) == 0
    assert "ignored: --max-steps" in capsys.readouterr().err


def test_max_steps_0_is_the_envs_own_cap_everywhere(tmp_path, capsys):
    """Was: 0 meant the env's own cap for hebb train only; a settings file (TOML has no null), hebb eval,
    baseline and compare refused it."""
    from hebb_agents.trainer import TrainConfig

    assert TrainConfig(max_steps=0).max_steps is None and TrainConfig(max_steps=0.0).max_steps is None
    settings = tmp_path / "settings.toml"
    settings.write_text('env_id = "CartPole-v1"\nmax_steps = 0\npopsize = 4\ngenerations = 1\n')
    out = tmp_path / "run"
    train = ["train", "--config", str(settings), "--hidden", "4", "--backend", "serial"]
    assert main([*train, "--out", str(out)]) == 0
    assert json.loads((out / "config.json").read_text())["max_steps"] is None
    capped = tmp_path / "capped"  # a run capped at 5 steps: eval keeps its cap, unless told 0
    assert main([*TRAIN[:-1], "5", "--generations", "1", "--backend", "serial", "--out", str(capped)]) == 0
    capsys.readouterr()
    assert main(["eval", str(capped), "--episodes", "3"]) == 0
    assert "length   5.0 ± 0.0" in capsys.readouterr().out
    assert main(["eval", str(capped), "--episodes", "3", "--max-steps", "0"]) == 0
    lengths = capsys.readouterr().out.split("length")[1].split()
    assert float(lengths[0]) > 5  # CartPole's own cap is 500: these episodes outlast 5 steps
