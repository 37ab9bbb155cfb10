"""The evaluation harness: per-morphology tables, seen/unseen grouping, fixed seeds, mid-episode damage."""

import csv
import importlib.util
import json
import os
import re
import subprocess
import sys
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


def test_no_recovery_is_read_from_a_window_past_the_episodes_end():
    # backwards after the damage, three fast steps, then the episode ends (NaN): every window inside
    # the episode stays below 0.8 of the speed before; counted as 0, the steps after the end would
    # let a window reaching past it pass (0.8 at k = 26), and the figure would not show that speed
    v = np.ones((1, 100))
    d = 40
    v[0, d : d + 27] = -1.0
    v[0, d + 27 : d + 30] = 3.0
    v[0, d + 30 :] = np.nan
    assert np.isnan(ev.adaptation_metrics(v, d, window=10, fraction=0.8)["recovery"][0])
    v[0, d + 30 :] = 3.0  # the episode goes on: a full window of it recovers
    assert ev.adaptation_metrics(v, d, window=10, fraction=0.8)["recovery"][0] == 22


def test_final_speed_is_each_episodes_own_last_window(recwarn):
    v = np.ones((2, 100))
    v[0, 60:] = 3.0
    v[1, 50:] = 2.0
    v[1, 70:] = np.nan  # ended after 70 steps: rollout pads the rest with NaN
    m = ev.adaptation_metrics(v, 40, window=10)
    np.testing.assert_allclose(m["final"], [3.0, 2.0])
    v[1, 40:] = np.nan  # ended when the damage came
    m = ev.adaptation_metrics(v, 40, window=10)
    assert np.isnan(m["after"][1]) and m["final"][1] == 1.0
    assert ev.mean_of_recorded(m["after"]) == m["after"][0]  # how evaluate_damage averages rows
    assert not [w for w in recwarn if "empty slice" in str(w.message)]


def test_predict_restarts_each_episode_with_a_seed_of_its_own():
    """SB3's evaluate_policy flags one env at a time: that episode alone restarts, on a new seed."""
    agent = tiny_agent("hebbian")
    obs = np.zeros((2, 17), np.float32)
    agent.predict(obs, episode_start=np.array([True, True]))  # seeds 0 and 1
    agent.predict(obs, episode_start=np.array([False, False]))
    running = agent.weights[0][0].copy()
    agent.predict(obs, episode_start=np.array([False, True]))  # row 1 restarts with seed 2
    fresh = tiny_agent("hebbian")
    fresh.start([2])
    fresh.act(obs[:1])
    np.testing.assert_array_equal(agent.weights[0][1], fresh.weights[0][0])
    fresh.start([0])
    fresh.act(obs[:1])
    fresh.act(obs[:1])
    fresh.act(obs[:1])
    np.testing.assert_array_equal(agent.weights[0][0], fresh.weights[0][0])  # row 0 ran on
    assert not np.array_equal(agent.weights[0][0], running)
    agent.reseed()
    agent.predict(obs, episode_start=np.array([False, False]))  # a fresh start: seeds 0 and 1 again
    fresh.start([0, 1])
    fresh.act(obs)
    np.testing.assert_array_equal(agent.weights[0], fresh.weights[0])
    one = tiny_agent("hebbian")  # one env: every episode still gets new initial weights
    starts = []
    for _ in range(2):
        one.predict(obs[:1], episode_start=np.array([True]))
        starts.append(one.weights[0][0].copy())
        one.predict(obs[:1], episode_start=np.array([False]))
    assert not np.array_equal(starts[0], starts[1])


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


# ---------------------------------------------------------------------- `hebb video` / `hebb compare` input
ANT = "hebb/AntDamage-v0"


def saved_policy(folder, env_id=CHEETAH, kind="hebbian"):
    """A tiny policy for ``env_id`` saved as ``folder/policy.npz``; returns the file."""
    env = make_env(env_id)
    policy = make_policy(kind, env.observation_space, env.action_space, hidden=(8,))
    env.close()
    policy.set_params(policy.initial_params(np.random.default_rng(0)))
    folder.mkdir(parents=True, exist_ok=True)
    policy.save(folder / "policy.npz", extra={"env_id": env_id})
    return folder / "policy.npz"


def test_video_for_other_spaces_fails_clearly_and_keeps_the_existing_file(tmp_path, capsys):
    from hebb_agents.cli import main

    policy = saved_policy(tmp_path / "cheetah")
    out = tmp_path / "existing.mp4"
    out.write_bytes(b"a good video")
    assert main(["video", str(policy), "--env", ANT, "--out", str(out), "--steps", "5"]) == 2
    err = capsys.readouterr().err
    assert "was trained for observations" in err and ANT in err and "(27,)" in err
    assert out.read_bytes() == b"a good video"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cheetah", "existing.mp4"]


def test_eval_and_video_share_one_space_check(tmp_path):
    agent = ev.load_agent(saved_policy(tmp_path / "cheetah"))
    ev.check_spaces(agent.spaces, CHEETAH)  # its own env passes
    with pytest.raises(
        ValueError, match=r"^the agent was trained for observations .*; hebb/AntDamage-v0 has"
    ):
        ev.check_spaces(agent.spaces, ANT)


class FailingAgent(ev.Agent):
    """Acts like ``inner`` for ``steps`` steps, then raises (a recording that breaks half-way)."""

    def __init__(self, inner, steps):
        self.inner, self.steps, self.name = inner, steps, "failing"

    def start(self, seeds):
        self.inner.start(seeds)
        self.left = self.steps

    def act(self, obs):
        self.left -= 1
        if self.left < 0:
            raise RuntimeError("broke mid-episode")
        return self.inner.act(obs)


def test_a_video_that_fails_half_way_leaves_the_existing_file_alone(tmp_path):
    pytest.importorskip("imageio_ffmpeg", reason="the video extra (imageio, imageio-ffmpeg) is not installed")
    out = tmp_path / "v.mp4"
    out.write_bytes(b"a good video")
    agent = FailingAgent(ev.load_agent(saved_policy(tmp_path / "cheetah")), steps=2)
    with pytest.raises(RuntimeError, match="broke"):
        ev.record_video(agent, CHEETAH, out, steps=5, size=(64, 48))
    assert out.read_bytes() == b"a good video"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cheetah", "v.mp4"]  # no partial file left
    result = ev.record_video(agent.inner, CHEETAH, out, steps=3, size=(64, 48))
    assert result["frames"] == 4 and out.read_bytes()[4:8] == b"ftyp"  # success replaces it
    assert result["size"] == (64, 48)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cheetah", "v.mp4"]


@pytest.mark.parametrize(
    ("size", "accepted"),
    [(("0", "0"), "positive"), (("-10", "50"), "positive"), (("100000", "100000"), "within 1..")],
)
def test_video_size_is_checked_and_names_the_option(tmp_path, capsys, size, accepted):
    from hebb_agents.cli import main

    policy = saved_policy(tmp_path / "cheetah")
    out = tmp_path / "v.mp4"
    args = ["video", str(policy), "--env", CHEETAH, "--steps", "2", "--size", *size, "--out", str(out)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: size (--size W H) must be") and accepted in err and "Traceback" not in err
    assert not out.exists()


def test_video_without_x_position_prints_no_distance(tmp_path, capsys):
    pytest.importorskip("imageio_ffmpeg", reason="the video extra (imageio, imageio-ffmpeg) is not installed")
    from hebb_agents.cli import main

    policy = saved_policy(tmp_path / "cartpole", "CartPole-v1")
    assert (
        main(["video", str(policy), "--env", "CartPole-v1", "--steps", "2", "--out", str(tmp_path / "c.mp4")])
        == 0
    )
    text = capsys.readouterr().out
    assert text.startswith("wrote ") and "distance" not in text and "nan" not in text


@pytest.mark.parametrize(
    ("flags", "msg"),
    [
        (["--damages", "front_shin_paralysed"], "needs both --damage-step and --damages"),
        (["--damage-step", "20"], "needs both --damage-step and --damages"),
        (["--seen", "intact", "--unseen", "intact"], "listed more than once across the groups: intact"),
        (["--seen", "--unseen"], "no morphologies to evaluate"),
    ],
)
def test_compare_refuses_settings_it_would_ignore_or_double_count(tmp_path, capsys, monkeypatch, flags, msg):
    from hebb_agents.cli import main

    policy = saved_policy(tmp_path / "cheetah")
    monkeypatch.setattr(ev, "rollout", lambda *a, **k: pytest.fail("evaluated before the check"))
    out = tmp_path / "cmp"
    assert main(["compare", f"hebbian={policy}", "--env", CHEETAH, *flags, "--out", str(out)]) == 2
    assert msg in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--damage-at", "5", "--damage-to", "front_thigh_weak"], "--damage-at must be below --steps (5)"),
        ([], "must end in .mp4"),
    ],
)
def test_video_refuses_a_damage_after_the_end_and_a_name_without_mp4(tmp_path, capsys, flags, message):
    from hebb_agents.cli import main

    policy = saved_policy(tmp_path / "cheetah")
    out = tmp_path / ("v.mp4" if flags else "v")
    assert main(["video", str(policy), "--env", CHEETAH, "--steps", "5", *flags, "--out", str(out)]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_compare_for_other_spaces_fails_clearly_and_makes_no_folder(tmp_path, capsys, monkeypatch):
    from hebb_agents.cli import main

    policy = saved_policy(tmp_path / "cheetah")
    monkeypatch.setattr(ev, "rollout", lambda *a, **k: pytest.fail("evaluated before the check"))
    out = tmp_path / "cmp"
    assert main(["compare", f"hebbian={policy}", "--env", ANT, "--episodes", "1", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "agent hebbian" in err and "was trained for observations" in err and ANT in err
    assert not out.exists()
    assert main(["compare", f"hebbian={tmp_path / 'missing'}", "--env", CHEETAH, "--out", str(out)]) == 2
    assert not out.exists()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--window", "0"], r"window \(--window\) must be >= 1"),
        (["--fraction", "2"], r"fraction \(--fraction\) must be in \(0, 1\]"),
        (["--fraction", "0"], r"fraction \(--fraction\) must be in \(0, 1\]"),
        (["--damage-step", "10", "--window", "20"], r"window \(--window\) must be in 1\.\.10"),
        (["--damage-step", "40", "--max-steps", "50"], r"window \(--window\) must be in 1\.\.10 .* 50 steps"),
        (["--damage-step", "60", "--max-steps", "50"], r"damage_step \(--damage-step\) must be in 1\.\.49"),
        # no --max-steps: the env's own 1000-step limit bounds the episode
        (["--damage-step", "1000"], r"damage_step \(--damage-step\) must be in 1\.\.999"),
        (["--damage-step", "1500", "--max-steps", "2000"], r"must be in 1\.\.999"),
    ],
)
def test_compare_checks_window_and_fraction_before_evaluating(tmp_path, capsys, monkeypatch, flags, message):
    from hebb_agents.cli import main

    policy = saved_policy(tmp_path / "cheetah")
    monkeypatch.setattr(ev, "rollout", lambda *a, **k: pytest.fail("evaluated before the check"))
    out = tmp_path / "cmp"
    args = ["compare", f"hebbian={policy}", "--env", CHEETAH, "--damages", "front_shin_paralysed", *flags]
    assert main([*args, "--out", str(out)]) == 2
    assert re.search(message, capsys.readouterr().err)
    assert not out.exists()


def test_no_opengl_context_is_named_with_the_setting_that_gives_one():
    # a machine without a display and without MUJOCO_GL: GLFW cannot make a context
    env = {k: v for k, v in os.environ.items() if k not in ("MUJOCO_GL", "DISPLAY", "WAYLAND_DISPLAY")}
    code = (
        "from hebb_agents.evaluation import max_frame_size\n"
        "try:\n    max_frame_size()\nexcept ValueError as err:\n    print('ERROR', err)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "ERROR MuJoCo could not make an OpenGL context" in done.stdout
    assert "set MUJOCO_GL=egl" in done.stdout


def test_damage_study_quick_run_never_writes_into_the_committed_study() -> None:
    spec = importlib.util.spec_from_file_location("damage_study", REPO / "scripts" / "damage_study.py")
    study = importlib.util.module_from_spec(spec)
    sys.modules["damage_study"] = study  # its dataclasses look their module up while it loads
    try:
        spec.loader.exec_module(study)
    finally:
        del sys.modules["damage_study"]
    out, runs = study.study_folders(None, None, quick=True, large=False)
    committed = COMMITTED.resolve()
    assert out.parent.is_dir() and out.parent == runs.parent and not out.resolve().is_relative_to(committed)
    assert "damage_study_quick_" in out.parent.name
    assert study.study_folders(None, None, quick=False, large=True) == (
        Path("docs/results/damage_study_large"),
        Path("runs/damage_study_large"),
    )
    assert study.study_folders(Path("a"), Path("b"), quick=True, large=False) == (Path("a"), Path("b"))
    with pytest.raises(SystemExit):  # a new temporary folder would hold no agents to evaluate
        study.main(["--quick", "--skip-train"])


def test_damage_study_re_evaluation_keeps_the_training_runs_record(tmp_path) -> None:
    """Was: a --skip-train run copied the top-level start and command of the study.json before it, so
    a second re-evaluation recorded the agents as trained by `... --skip-train`."""
    script = REPO / "scripts" / "damage_study.py"
    out, runs = tmp_path / "study", tmp_path / "runs"
    base = [sys.executable, str(script), "--quick", "--robots", "half_cheetah", "--jobs", "1"]
    base += ["--out", str(out), "--runs", str(runs)]
    for extra in ([], ["--skip-train"], ["--skip-train"]):
        done = subprocess.run([*base, *extra], capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        record = json.loads((out / "study.json").read_text())
        if not extra:
            trained_by = (record["started"], record["command"])
    assert "--skip-train" in record["command"]  # this evaluation's own command
    assert (record["trained"]["started"], record["trained"]["command"]) == trained_by
    assert "--skip-train" not in record["trained"]["command"]
