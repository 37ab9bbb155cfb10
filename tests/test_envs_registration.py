"""Registration of the hebb/ ids and the acceptance checks (Gymnasium's and SB3's) on every one."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import warnings

import gymnasium as gym
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import hebb_envs

EXPECTED = {
    "hebb/AntDamage-v0": 1000,
    "hebb/HalfCheetahDamage-v0": 1000,
    "hebb/Memory-v0": None,
    "hebb/MemoryContinuous-v0": None,
}


def test_every_id_is_registered_with_version_and_limit():
    assert set(hebb_envs.ENV_IDS) == set(EXPECTED)
    for env_id, limit in EXPECTED.items():
        spec = gym.spec(env_id)
        assert spec.namespace == "hebb" and spec.version == 0
        assert spec.max_episode_steps == limit


def test_make_with_module_prefix_needs_no_prior_import():
    script = (
        "import sys, gymnasium as gym\n"
        "assert 'hebb_envs' not in sys.modules\n"
        "env = gym.make('hebb_envs:hebb/AntDamage-v0', damage='front_left_short')\n"
        "obs, info = env.reset(seed=0)\n"
        "print(info['damage'], obs.shape, type(env.unwrapped).__name__)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["front_left_short", "(27,)", "AntDamageEnv"]


def test_envs_never_import_hebb_agents():
    script = "import sys, hebb_envs, hebb_envs.wrappers; print('hebb_agents' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "False"


def test_no_double_registration():
    before = len(gym.registry)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # gymnasium warns when an id is overridden
        assert hebb_envs.register_envs() == []
        importlib.reload(hebb_envs)
    assert len(gym.registry) == before


CHECK_CASES = [(env_id, {}) for env_id in EXPECTED] + [
    ("hebb/AntDamage-v0", {"damage": "all"}),
    ("hebb/AntDamage-v0", {"damage": "front_right_short", "use_contact_forces": True}),
    ("hebb/HalfCheetahDamage-v0", {"damage": "unseen"}),
    ("hebb/Memory-v0", {"n_symbols": 7, "delay": 600, "distractor": "uniform"}),
    ("hebb/MemoryContinuous-v0", {"n_symbols": 3, "delay": 5, "cue_steps": 4}),
]


# MuJoCo observations are unbounded in Gymnasium's own envs too; the checker's note on that is expected.
@pytest.mark.filterwarnings("ignore:.*Box observation space .*infinity")
@pytest.mark.parametrize(("env_id", "kwargs"), CHECK_CASES)
def test_gymnasium_and_sb3_checkers_pass(env_id, kwargs):
    gym_check_env(gym.make(env_id, **kwargs).unwrapped, skip_render_check=True)
    sb3_check_env(gym.make(env_id, **kwargs), warn=True)


def test_a_mujoco_gl_that_mujoco_cannot_load_is_named_with_the_values_that_work():
    env = {**os.environ, "MUJOCO_GL": "bogus"}
    done = subprocess.run(
        [sys.executable, "-c", "import hebb_envs"], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: MuJoCo failed to import with MUJOCO_GL='bogus'"), last
    assert "use egl or osmesa where that library is installed, glfw with a display, or unset it" in last


@pytest.mark.parametrize("value", [True, False, None, -1, 2.5])
def test_termination_grace_steps_refuses_bools_and_non_integers(value):
    with pytest.raises(ValueError, match=f"termination_grace_steps must be an integer >= 0, got {value}"):
        gym.make("hebb/AntDamage-v0", termination_grace_steps=value)
    assert gym.make("hebb/AntDamage-v0", termination_grace_steps=5.0).unwrapped._grace_steps == 5


def test_memory_ids_fix_their_action_variant_in_the_registry():
    assert gym.spec("hebb/Memory-v0").entry_point == "hebb_envs.memory:MemoryTask"
    assert gym.spec("hebb/MemoryContinuous-v0").entry_point == "hebb_envs.memory:MemoryContinuousTask"
    with pytest.raises(ValueError, match="use gym.make\\('hebb/Memory-v0'\\)"):
        gym.make("hebb_envs:hebb/MemoryContinuous-v0", continuous=False)


def test_the_hebb_command_reports_a_bad_mujoco_gl_in_one_line(tmp_path):
    env = {**os.environ, "MUJOCO_GL": "bogus"}
    command = [sys.executable, "-m", "hebb_agents.cli", "train", "--env", "hebb/HalfCheetahDamage-v0",
               "--generations", "1", "--popsize", "2", "--max-steps", "5", "--backend", "serial",
               "--out", str(tmp_path / "run")]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [done.stderr.strip()] and done.stderr.startswith(
        "error: MuJoCo failed to import with MUJOCO_GL='bogus'"
    )
    # Gymnasium's own envs need no MuJoCo: the package imports and builds them
    script = "from hebb_agents.rollout import make_env; print(make_env('CartPole-v1').action_space)"
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0 and done.stdout.strip() == "Discrete(2)", done.stderr
