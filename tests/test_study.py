"""`hebb compare` / `hebb video` and the study's pooling of seeds into families."""

import argparse
import json
import subprocess
import sys

import numpy as np
import pytest

from hebb_agents import evaluation as ev
from hebb_agents import study
from hebb_agents.policy import make_policy
from hebb_agents.rollout import make_env

CHEETAH = "hebb/HalfCheetahDamage-v0"


def _save_policy(folder, kind, seed):
    env = make_env(CHEETAH)
    policy = make_policy(kind, env.observation_space, env.action_space, hidden=(8,))
    env.close()
    policy.set_params(policy.initial_params(np.random.default_rng(seed)) * 5)
    folder.mkdir(parents=True)
    policy.save(folder / "policy.npz", extra={"env_id": CHEETAH})
    return folder


def _parser():
    parser = argparse.ArgumentParser(prog="hebb")
    sub = parser.add_subparsers(dest="command", required=True)
    study.add_compare_command(sub)
    ev.add_video_command(sub)
    return parser


def test_parse_agent_specs():
    agents = study.parse_agent_specs(["hebbian/s0=runs/a", "runs/ppo_b"])
    assert {k: str(v) for k, v in agents.items()} == {"hebbian/s0": "runs/a", "ppo_b": "runs/ppo_b"}
    with pytest.raises(ValueError, match="given twice"):
        study.parse_agent_specs(["x=a", "x=b"])
    with pytest.raises(ValueError, match="NAME=PATH"):
        study.parse_agent_specs(["=a"])
    assert study.family_of("hebbian/s0") == "hebbian" and study.family_of("ppo") == "ppo"


def test_families_pool_seeds_with_the_std_across_seeds():
    rows = []
    for seed, shift in ((0, 0.0), (1, 2.0)):
        for morphology, group, d in (("intact", "seen", 4.0), ("a", "seen", 2.0), ("b", "unseen", 1.0)):
            rows.append(
                {
                    "agent": f"hebbian/s{seed}",
                    "group": group,
                    "morphology": morphology,
                    "return_mean": d + shift,
                    "return_std": 0.0,
                    "distance_mean": d + shift,
                    "distance_std": 0.5,
                }
            )
    summary = {(r["family"], r["group"]): r for r in study.summarise_families(rows)}
    seen = summary[("hebbian", "seen")]
    # seed means over seen morphologies: 3.0 and 5.0
    assert (
        seen["seeds"] == 2
        and seen["distance_mean"] == pytest.approx(4.0)
        and seen["distance_std"] == pytest.approx(1.0)
    )
    per_morphology = {r["morphology"]: r for r in study.family_rows(rows)}
    assert per_morphology["b"]["distance_mean"] == pytest.approx(2.0)
    assert per_morphology["b"]["distance_std"] == pytest.approx(1.0)


def test_compare_command_writes_tables_and_figures(tmp_path, capsys):
    h0 = _save_policy(tmp_path / "h0", "hebbian", 0)
    h1 = _save_policy(tmp_path / "h1", "hebbian", 1)
    s0 = _save_policy(tmp_path / "s0", "static", 2)
    out = tmp_path / "cmp"
    args = _parser().parse_args(
        ["compare", f"hebbian/s0={h0}", f"hebbian/s1={h1}", f"static/s0={s0}", "--env", CHEETAH,
         "--episodes", "2", "--max-steps", "40", "--seen", "intact", "--unseen", "front_shin_paralysed",
         "--damage-step", "20", "--damages", "front_shin_paralysed", "--out", str(out)]
    )  # fmt: skip
    assert args.func(args) == 0
    for name in ("morphologies", "groups", "groups_by_agent", "adaptation"):
        assert (out / f"{name}.csv").exists() and (out / f"{name}.md").exists()
    for name in (
        "bars_distance",
        "bars_return",
        "adaptation_front_shin_paralysed",
        "weight_norms_hebbian",
        "weight_heatmaps_hebbian",
    ):
        assert (out / f"{name}.png").stat().st_size > 2000, name
    assert not (out / "weight_norms_static.png").exists()  # static weights do not change
    meta = json.loads((out / "compare.json").read_text())
    assert meta["seeds"] == "1000..1001" and meta["groups"] == {
        "seen": ["intact"],
        "unseen": ["front_shin_paralysed"],
    }
    groups = (out / "groups.md").read_text()
    assert "| hebbian | seen | 2 |" in groups and "| static | unseen | 1 |" in groups
    assert "| hebbian |" in capsys.readouterr().out


def test_a_second_compare_into_the_folder_removes_the_first_ones_files_it_did_not_rewrite(tmp_path, capsys):
    h0 = _save_policy(tmp_path / "h0", "hebbian", 0)
    out = tmp_path / "cmp"
    common = ["compare", f"hebbian/s0={h0}", "--env", CHEETAH, "--episodes", "1", "--max-steps", "40",
              "--seen", "intact", "--unseen", "front_shin_paralysed", "--out", str(out)]  # fmt: skip
    with_damage = [*common, "--damage-step", "20", "--damages", "front_shin_paralysed"]
    parser = _parser()
    args = parser.parse_args(with_damage)
    assert args.func(args) == 0
    assert (out / "adaptation.csv").exists() and (out / "adaptation_front_shin_paralysed.png").exists()
    (out / "notes.txt").write_text("the user's own file")
    args = parser.parse_args(common)  # no damage test this time
    assert args.func(args) == 0
    assert "removed 3 file(s) of the earlier comparison" in capsys.readouterr().out
    for stale in ("adaptation.csv", "adaptation.md", "adaptation_front_shin_paralysed.png"):
        assert not (out / stale).exists(), stale
    meta = json.loads((out / "compare.json").read_text())
    assert all((out / name).exists() for name in meta["files"]) and "morphologies.csv" in meta["files"]
    assert (out / "notes.txt").read_text() == "the user's own file"  # never listed, never touched


def test_a_compare_that_fails_half_way_leaves_its_files_listed_for_the_next_one(tmp_path, monkeypatch):
    from hebb_agents import plots

    h0 = _save_policy(tmp_path / "h0", "hebbian", 0)
    out = tmp_path / "cmp"
    common = ["compare", f"hebbian/s0={h0}", "--env", CHEETAH, "--episodes", "1", "--max-steps", "40",
              "--seen", "intact", "--unseen", "front_shin_paralysed", "--out", str(out)]  # fmt: skip
    parser = _parser()

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(plots, "plot_adaptation", broken)
    args = parser.parse_args([*common, "--damage-step", "20", "--damages", "front_shin_paralysed"])
    with pytest.raises(RuntimeError, match="disk full"):
        args.func(args)
    assert (out / "adaptation.csv").exists()  # written before the failure
    listed = json.loads((out / "compare.json").read_text())
    assert listed["incomplete"] and "adaptation.csv" in listed["files"]
    monkeypatch.undo()
    (out / "a").write_text("not listed as a list")
    (out / "compare.json").write_text(json.dumps({**listed, "files": listed["files"] + ["../h0/policy.npz"]}))
    args = parser.parse_args(common)
    assert args.func(args) == 0
    assert not (out / "adaptation.csv").exists() and not (out / "adaptation.md").exists()
    assert (h0 / "policy.npz").exists()  # a name outside the folder is never taken
    (out / "compare.json").write_text(json.dumps({"files": "a"}))  # a string is not a list of names
    assert args.func(args) == 0
    assert (out / "a").exists()


def test_seeds_with_episodes_of_different_lengths_pool_into_one_padded_array():
    from hebb_agents.study import _stack_padded

    short, long = np.ones((2, 50)), np.full((3, 200), 2.0)  # an Ant seed whose episodes ended early
    pooled = _stack_padded([short, long])
    assert pooled.shape == (5, 200)
    assert np.isnan(pooled[:2, 50:]).all() and (pooled[:2, :50] == 1).all() and (pooled[2:] == 2).all()


@pytest.mark.parametrize("flag", ["--seen", "--damages"])
def test_compare_rejects_an_unknown_body_before_evaluating_anything(tmp_path, flag, monkeypatch):
    h0 = _save_policy(tmp_path / "h0", "hebbian", 0)
    out = tmp_path / "cmp"
    monkeypatch.setattr(study.ev, "rollout", lambda *a, **k: pytest.fail("evaluated before the check"))
    args = _parser().parse_args(["compare", f"hebbian/s0={h0}", "--env", CHEETAH, flag, "intact", "bogus",
                                 "--out", str(out)])  # fmt: skip
    with pytest.raises(ValueError, match="unknown half_cheetah damage 'bogus'; accepted: intact"):
        args.func(args)
    assert not out.exists()


def test_compare_refuses_a_damage_in_env_kwargs_that_its_rows_would_override(tmp_path, monkeypatch):
    h0 = _save_policy(tmp_path / "h0", "hebbian", 0)
    out = tmp_path / "cmp"
    monkeypatch.setattr(study.ev, "rollout", lambda *a, **k: pytest.fail("evaluated before the check"))
    args = _parser().parse_args(["compare", f"h={h0}", "--env", CHEETAH, "--env-kwargs",
                                 '{"damage": "front_thigh_paralysed"}', "--out", str(out)])  # fmt: skip
    # was ignored, and recorded in compare.json as if it had applied
    with pytest.raises(ValueError, match="env_kwargs sets damage='front_thigh_paralysed', but compare sets"):
        args.func(args)
    assert not out.exists()


def test_compare_into_a_file_says_so_and_leaves_the_file(tmp_path, monkeypatch):
    h0 = _save_policy(tmp_path / "h0", "hebbian", 0)
    target = tmp_path / "h0" / "policy.npz"
    before = target.read_bytes()
    monkeypatch.setattr(study.ev, "rollout", lambda *a, **k: pytest.fail("evaluated before the check"))
    args = _parser().parse_args(["compare", f"h={h0}", "--env", CHEETAH, "--out", str(target)])
    with pytest.raises(ValueError, match="is a file; name a folder"):
        args.func(args)
    assert target.read_bytes() == before


def test_a_body_named_for_one_group_leaves_the_other_groups_default(tmp_path, monkeypatch):
    seen_by_compare = {}

    def capture(agents, env_id, out_dir, groups=None, **kwargs):
        seen_by_compare.update(groups)
        raise SystemExit  # stop before evaluating

    monkeypatch.setattr(study, "compare", capture)
    unseen = study.ev.catalogue_groups(CHEETAH)["unseen"]
    args = _parser().parse_args(["compare", "h=x", "--env", CHEETAH, "--seen", "intact", unseen[0],
                                 "--out", str(tmp_path / "cmp")])  # fmt: skip
    with pytest.raises(SystemExit):
        args.func(args)
    assert seen_by_compare["seen"] == ["intact", unseen[0]]
    assert seen_by_compare["unseen"] == list(unseen[1:])  # the default, less the body moved to seen


def test_video_command_writes_an_mp4(tmp_path):
    pytest.importorskip("imageio_ffmpeg", reason="the video extra (imageio, imageio-ffmpeg) is not installed")
    h0 = _save_policy(tmp_path / "h0", "hebbian", 0)
    out = tmp_path / "v.mp4"
    args = _parser().parse_args(
        ["video", str(h0), "--env", CHEETAH, "--damage", "front_shin_paralysed", "--steps", "6",
         "--every", "2", "--size", "96", "64", "--out", str(out)]
    )  # fmt: skip
    assert args.func(args) == 0
    data = out.read_bytes()
    assert data[4:8] == b"ftyp"  # an MP4 container
    with pytest.raises(ValueError, match="--damage-at and --damage-to"):
        bad = _parser().parse_args(
            ["video", str(h0), "--env", CHEETAH, "--damage-at", "3", "--out", str(out)]
        )
        bad.func(bad)


def test_video_of_an_env_without_a_frame_size_option(tmp_path):
    """CartPole takes no width/height: the video is recorded at the env's own size."""
    pytest.importorskip("imageio_ffmpeg", reason="the video extra (imageio, imageio-ffmpeg) is not installed")
    env = make_env("CartPole-v1")
    policy = make_policy("hebbian", env.observation_space, env.action_space, hidden=(8,))
    env.close()
    policy.set_params(policy.initial_params(np.random.default_rng(0)))
    policy.save(tmp_path / "policy.npz", extra={"env_id": "CartPole-v1"})
    out = tmp_path / "cartpole.mp4"
    result = ev.record_video(ev.load_agent(tmp_path / "policy.npz"), "CartPole-v1", out, steps=5)
    assert result["frames"] >= 2 and out.read_bytes()[4:8] == b"ftyp"
    assert result["size"] == (600, 400)  # CartPole's own frame
    with pytest.warns(
        UserWarning, match=r"renders at its own frame size; size 320 x 240 \(--size\) is ignored"
    ):
        result = ev.record_video(
            ev.load_agent(tmp_path / "policy.npz"), "CartPole-v1", out, steps=2, size=(320, 240)
        )
    assert result["size"] == (600, 400)


def test_torch_after_a_video_does_not_crash_the_process():
    """Was: with Mesa's software OpenGL (MUJOCO_GL=egl without a GPU), building an SB3 model or any
    torch optimiser after a video loaded Triton after Mesa's LLVM, and the process died (SIGSEGV)."""
    code = (
        "from hebb_agents.evaluation import max_frame_size; max_frame_size(); import torch; "
        "torch.optim.Adam([torch.zeros(1, requires_grad=True)]); print('trained after rendering')"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "trained after rendering" in done.stdout
