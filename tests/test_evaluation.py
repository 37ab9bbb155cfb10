"""The evaluation harness: per-morphology tables, seen/unseen grouping, fixed seeds, mid-episode damage."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from hebb_agents import evaluation as ev
from hebb_agents.policy import make_policy
from hebb_agents.rollout import make_env

CHEETAH = "hebb/HalfCheetahDamage-v0"
REPO = Path(__file__).resolve().parents[1]
COMMITTED = REPO / "docs" / "results" / "damage_study"


def tiny_agent(kind="hebbian", seed=0, name=None):
    env = make_env(CHEETAH)
    policy = make_policy(kind, env.observation_space, env.action_space, hidden=(8,))
    env.close()
    policy.set_params(policy.initial_params(np.random.default_rng(seed)) * 5)
    return ev.PolicyAgent(policy, name=name or kind)


def test_table_columns_and_seen_unseen_grouping():
    agents = {"hebbian": tiny_agent("hebbian"), "static": tiny_agent("static")}
    groups = {"seen": ["intact", "back_thigh_paralysed"], "unseen": ["front_shin_paralysed"]}
    rows = ev.evaluate_morphologies(agents, CHEETAH, groups, episodes=2, seed=5, max_steps=15)
    assert len(rows) == 2 * 3
    for row in rows:
        assert tuple(row) == ev.MORPHOLOGY_COLUMNS
        assert row["episodes"] == 2 and row["length_mean"] == 15
        assert row["group"] == ("unseen" if row["morphology"] == "front_shin_paralysed" else "seen")
    summary = ev.summarise_groups(rows)
    assert {(r["agent"], r["group"]) for r in summary} == {(a, g) for a in agents for g in ("seen", "unseen")}
    seen = [r for r in rows if r["agent"] == "static" and r["group"] == "seen"]
    s = next(r for r in summary if r["agent"] == "static" and r["group"] == "seen")
    assert s["morphologies"] == 2
    assert s["distance_mean"] == pytest.approx(np.mean([r["distance_mean"] for r in seen]))


def test_catalogue_groups_are_the_robot_splits():
    from hebb_envs.morphology import SPLITS

    groups = ev.catalogue_groups(CHEETAH)
    assert groups == {"seen": SPLITS["half_cheetah"]["seen"], "unseen": SPLITS["half_cheetah"]["unseen"]}
    with pytest.raises(ValueError, match="no morphology catalogue"):
        ev.catalogue_groups("Pendulum-v1")


def test_seeds_fix_results_and_episode_e_uses_seed_plus_e():
    agent = tiny_agent("hebbian")
    a = ev.rollout(agent, CHEETAH, [10, 11, 12], max_steps=20)
    b = ev.rollout(agent, CHEETAH, [10, 11, 12], max_steps=20)
    np.testing.assert_array_equal(a.returns, b.returns)
    # one episode alone equals the same seed inside a lockstep batch: no cross-talk between rows
    alone = ev.rollout(agent, CHEETAH, [11], max_steps=20)
    assert alone.returns[0] == a.returns[1]
    np.testing.assert_array_equal(alone.x_velocity[0], a.x_velocity[1])
    other = ev.rollout(agent, CHEETAH, [13], max_steps=20)
    assert other.returns[0] != a.returns[1]
    rows = ev.evaluate_morphologies(
        {"h": agent}, CHEETAH, {"seen": ["intact"]}, episodes=3, seed=10, max_steps=20
    )
    assert rows[0]["return_mean"] == pytest.approx(a.returns.mean())


def test_hebbian_weight_draws_follow_the_episode_seed():
    agent = tiny_agent("hebbian")
    agent.start([1, 2, 1])
    w = agent.weights[0]  # (E, n_in, n_out)
    np.testing.assert_array_equal(w[0], w[2])
    assert not np.array_equal(w[0], w[1])


def test_run_episodes_still_works_and_matches_rollout():
    agent = tiny_agent("static")
    stats = ev.run_episodes(agent.policy, CHEETAH, episodes=2, seed=3, max_steps=10)
    traj = ev.rollout(tiny_agent("static"), CHEETAH, [3, 4], max_steps=10)
    np.testing.assert_allclose(stats.returns, traj.returns)
    assert set(stats.summary()) >= {"returns_mean", "distances_std", "lengths_mean"}
    with pytest.raises(ValueError, match="episodes must be >= 1"):
        ev.run_episodes(agent.policy, CHEETAH, episodes=0)


def test_mid_episode_damage_changes_the_body_at_the_stated_step():
    agent = tiny_agent("static", seed=1)
    intact = ev.rollout(agent, CHEETAH, [7], {"damage": "intact"}, max_steps=30)
    damaged = ev.rollout(
        agent,
        CHEETAH,
        [7],
        {"damage": "intact"},
        max_steps=30,
        damage_step=12,
        damage="front_thigh_paralysed",
    )
    # identical up to the damage step (the physics before it is untouched), different after
    np.testing.assert_array_equal(intact.x_velocity[0, :12], damaged.x_velocity[0, :12])
    assert not np.allclose(intact.x_velocity[0, 13:], damaged.x_velocity[0, 13:])
    with pytest.raises(ValueError, match="give both damage_step and damage"):
        ev.rollout(agent, CHEETAH, [7], max_steps=5, damage_step=2)


def test_adaptation_metrics_on_a_known_trace():
    window, d = 10, 40
    v = np.ones((3, 100))
    v[0, d : d + 20] = 0.2  # slowed for 20 steps, then back to full speed
    v[1, d:] = 0.2  # never recovers
    v[2, :d] = -1.0  # was going backwards: nothing to recover
    m = ev.adaptation_metrics(v, d, window=window, fraction=0.8)
    np.testing.assert_allclose(m["before"], [1.0, 1.0, -1.0])
    np.testing.assert_allclose(m["after"][:2], [0.2, 0.2])
    # a window starting at d + k holds max(0, 20 - k) slow steps; mean >= 0.8 needs <= 2 of them
    assert m["recovery"][0] == 18
    assert np.isnan(m["recovery"][1]) and np.isnan(m["recovery"][2])
    with pytest.raises(ValueError, match="window"):
        ev.adaptation_metrics(v, 5, window=10)


def test_evaluate_damage_rows_and_curves():
    agents = {"static": tiny_agent("static")}
    rows, curves = ev.evaluate_damage(agents, CHEETAH, ["front_shin_paralysed"], 20, episodes=2, max_steps=50)
    assert tuple(rows[0]) == ev.ADAPTATION_COLUMNS
    assert rows[0]["recovered"].endswith("/2")
    assert curves[("static", "front_shin_paralysed")].shape == (2, 50)


def test_trace_weights_records_every_step_and_snapshots():
    agent = tiny_agent("hebbian")
    norms, snaps = ev.trace_weights(agent, CHEETAH, seed=0, max_steps=12, snapshot_steps=(0, 5, 12, 99))
    assert norms.shape == (13, 2)
    assert sorted(snaps) == [0, 5, 12]
    assert snaps[0][0].shape == (17, 8) and snaps[0][1].shape == (8, 6)
    # plasticity moves the weights away from the random start (norm recorded at step 0 vs later)
    assert not np.allclose(norms[0], norms[-1])
    with pytest.raises(ValueError, match="evolved policies only"):
        ev.trace_weights(object(), CHEETAH)


def test_tables_markdown_and_csv(tmp_path):
    rows = [
        {"agent": "a", "x_mean": 1.0, "x_std": 0.5, "n": 3},
        {"agent": "b", "x_mean": float("nan"), "x_std": 0.0, "n": 1},
    ]
    md = ev.markdown_table(rows, ("agent", "x_mean", "x_std", "n"))
    assert md.splitlines()[0] == "| agent | x | n |"
    assert "| a | 1.00 ± 0.50 | 3 |" in md and "n/a ± 0.00" in md
    path = ev.write_csv(rows, ("agent", "x_mean", "x_std", "n"), tmp_path / "t.csv")
    with path.open() as handle:
        assert next(csv.reader(handle)) == ["agent", "x_mean", "x_std", "n"]


def test_load_agent_errors_name_what_is_accepted(tmp_path):
    with pytest.raises(FileNotFoundError):
        ev.load_agent(tmp_path / "missing")
    with pytest.raises(ValueError, match="accepted"):
        ev.load_agent(tmp_path)
    (tmp_path / "x.txt").write_text("")
    with pytest.raises(ValueError, match="accepted"):
        ev.load_agent(tmp_path / "x.txt")


def test_saved_agent_round_trips_through_load_agent(tmp_path):
    agent = tiny_agent("hebbian")
    agent.policy.set_params(agent.params)
    agent.policy.save(tmp_path / "policy.npz")
    loaded = ev.load_agent(tmp_path)
    a = ev.rollout(agent, CHEETAH, [0, 1], max_steps=10)
    b = ev.rollout(loaded, CHEETAH, [0, 1], max_steps=10)
    np.testing.assert_array_equal(a.returns, b.returns)


def test_committed_checkpoint_loads_and_reproduces_its_table_row():
    """A committed Hebbian agent re-evaluates to exactly the numbers in the committed table."""
    meta = json.loads((COMMITTED / "half_cheetah" / "compare.json").read_text())
    name = "hebbian/s0"
    agent = ev.load_agent(REPO / meta["agents"][name], name=name)
    assert ev.is_hebbian(agent)
    with (COMMITTED / "half_cheetah" / "morphologies.csv").open() as handle:
        row = next(r for r in csv.DictReader(handle) if r["agent"] == name and r["morphology"] == "intact")
    first_seed = int(meta["seeds"].split("..")[0])
    traj = ev.rollout(
        agent,
        meta["env_id"],
        range(first_seed, first_seed + meta["episodes"]),
        {**meta["env_kwargs"], "damage": "intact"},
        meta["max_steps"],
    )
    assert float(row["distance_mean"]) == pytest.approx(traj.distances.mean(), rel=1e-9, abs=1e-9)
    assert float(row["return_mean"]) == pytest.approx(traj.returns.mean(), rel=1e-9, abs=1e-9)
