"""SB3 baselines: rl-zoo3 hyperparameters, the `baseline` command (train + evaluate), the agent wrapper."""

import argparse
import csv
import json

import numpy as np
import pytest

from hebb_agents import baselines
from hebb_agents.evaluation import load_agent, rollout
from hebb_agents.trainer import ESTrainer, TrainConfig

CHEETAH = "hebb/HalfCheetahDamage-v0"


def _parser():
    parser = argparse.ArgumentParser(prog="hebb")
    baselines.add_baseline_command(parser.add_subparsers(dest="command", required=True))
    return parser


def test_zoo_entries_match_the_published_ones():
    entry, params, norm_reward = baselines.zoo_hyperparams("ppo", CHEETAH)
    assert "HalfCheetah-v4" in entry and norm_reward
    assert params["n_steps"] == 512 and params["learning_rate"] == pytest.approx(2.0633e-05)
    assert params["policy_kwargs"]["net_arch"] == {"pi": [256, 256], "vf": [256, 256]}
    entry, params, _ = baselines.zoo_hyperparams("ppo", "hebb/AntDamage-v0")
    assert "Ant-v4" in entry and params == {}
    entry, params, norm_reward = baselines.zoo_hyperparams("sac", "Ant-v5")
    assert params == {"learning_starts": 10000} and not norm_reward
    # a returned dict is a copy: editing it must not change the table
    params["learning_starts"] = 1
    assert baselines.zoo_hyperparams("sac", "Ant-v5")[1]["learning_starts"] == 10000


def test_bad_algo_and_env_are_rejected_with_the_accepted_values():
    with pytest.raises(ValueError, match="accepted: ppo, sac"):
        baselines.zoo_hyperparams("td3", CHEETAH)
    with pytest.raises(ValueError, match="accepted: HalfCheetah or Ant"):
        baselines.zoo_hyperparams("ppo", "Hopper-v5")
    with pytest.raises(ValueError, match="activation_fn"):
        baselines._sb3_kwargs({"policy_kwargs": {"activation_fn": "swish"}})


def test_baseline_command_trains_ppo_and_evaluates_on_two_morphologies(tmp_path, capsys):
    out = tmp_path / "ppo"
    args = _parser().parse_args(
        [
            "baseline", "--algo", "ppo", "--env", CHEETAH, "--env-kwargs", '{"damage": "seen"}',
            "--steps", "2048", "--seed", "3", "--max-episode-steps", "128", "--out", str(out),
            "--hyperparams", '{"n_epochs": 2}',
            "--eval-morphologies", "intact", "front_shin_paralysed", "--eval-episodes", "2",
        ]
    )  # fmt: skip
    assert args.func(args) == 0
    for name in ("model.zip", "vecnormalize.pkl", "baseline.json", "monitor.csv", "eval.csv", "eval.md"):
        assert (out / name).exists(), name
    info = json.loads((out / "baseline.json").read_text())
    assert info["steps_done"] >= 2048 and info["seed"] == 3
    assert info["hyperparams"]["n_epochs"] == 2 and info["hyperparams"]["n_steps"] == 512
    with (out / "eval.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["morphology"] for r in rows] == ["intact", "front_shin_paralysed"]
    assert all(int(r["episodes"]) == 2 and float(r["length_mean"]) == 128 for r in rows)
    # a second run into the same folder is refused rather than overwriting the model
    with pytest.raises(ValueError, match="already holds an SB3 baseline"):
        args.func(args)
    # and an ES run refuses it too: one folder, one agent
    with pytest.raises(ValueError, match=r"already holds an SB3 baseline \(model.zip"):
        ESTrainer(TrainConfig(env_id="CartPole-v1", popsize=2, generations=1), out_dir=out)

    # the harness loads it like any other agent: deterministic, observations scaled by the saved statistics
    agent = load_agent(out, name="ppo")
    assert isinstance(agent, baselines.BaselineAgent)
    assert agent.normaliser.obs_rms.count > 2048
    a = rollout(agent, CHEETAH, [0, 1], max_steps=20)
    b = rollout(agent, CHEETAH, [0, 1], max_steps=20)
    np.testing.assert_array_equal(a.returns, b.returns)
    obs = np.random.default_rng(0).normal(size=(3, 17)).astype(np.float32)
    expected, _ = agent.model.predict(agent.normaliser.normalize_obs(obs), deterministic=True)
    np.testing.assert_array_equal(agent.act(obs), expected)
    assert not np.array_equal(agent.act(obs), agent.model.predict(obs, deterministic=True)[0])


def test_time_limit_stops_training_early(tmp_path):
    baselines.train_baseline(
        "ppo",
        CHEETAH,
        {},
        100_000,
        0,
        tmp_path,
        max_episode_steps=64,
        hyperparams={"n_steps": 64, "batch_size": 64, "n_epochs": 1},
        time_limit=0.0,
    )
    info = json.loads((tmp_path / "baseline.json").read_text())
    assert info["steps_done"] < 100_000 and info["time_limit"] == 0.0


def test_unknown_hyperparameter_is_rejected_before_anything_is_written(tmp_path):
    out = tmp_path / "ppo"
    with pytest.raises(ValueError, match=r"unknown ppo hyperparameters \['n_step'\]; accepted: .*n_steps"):
        baselines.train_baseline(
            "ppo", "hebb/HalfCheetahDamage-v0", {}, 10, 0, out, hyperparams={"n_step": 64}
        )
    assert not out.exists()
    with pytest.raises(ValueError, match=r"bad ppo hyperparameter values .*'n_steps': 'abc'"):
        baselines.train_baseline(
            "ppo", "hebb/HalfCheetahDamage-v0", {}, 10, 0, out, hyperparams={"n_steps": "abc"}
        )
    assert not out.exists()  # no monitor.csv either


def test_baseline_command_rejects_an_unknown_eval_body_before_training(tmp_path, monkeypatch):
    monkeypatch.setattr(baselines, "train_baseline", lambda *a, **k: pytest.fail("trained before the check"))
    args = _parser().parse_args(
        ["baseline", "--algo", "ppo", "--env", CHEETAH, "--steps", "64", "--out", str(tmp_path / "ppo"),
         "--eval-morphologies", "intact", "bogus"]
    )  # fmt: skip
    with pytest.raises(ValueError, match="unknown half_cheetah damage 'bogus'"):
        args.func(args)


def test_a_baseline_into_a_folder_another_run_holds_is_refused_before_it_writes(tmp_path, held_elsewhere):
    """Was: `hebb baseline` took no hold, so it wrote monitor.csv and its model into the folder of an
    ES run (or another baseline) still running there."""
    out = tmp_path / "busy"
    small = {"n_steps": 64, "batch_size": 64, "n_epochs": 1}
    with held_elsewhere(out):
        with pytest.raises(ValueError, match="is in use by another run"):
            baselines.train_baseline("ppo", CHEETAH, {}, 64, 0, out, max_episode_steps=16, hyperparams=small)
        assert sorted(path.name for path in out.iterdir()) == [".lock"]  # no monitor.csv, no model
    baselines.train_baseline("ppo", CHEETAH, {}, 64, 0, out, max_episode_steps=16, hyperparams=small)
    assert (out / "model.zip").exists()
    with held_elsewhere(out):  # let go at the end: another process takes it
        pass


def test_baseline_takes_max_steps_as_the_other_commands_do():
    for flag in ("--max-steps", "--max-episode-steps"):
        command = ["baseline", "--algo", "ppo", "--env", CHEETAH, "--steps", "8", "--out", "x"]
        args = _parser().parse_args([*command, flag, "7"])
        assert args.max_episode_steps == 7
