"""Gradient-based baselines: Stable-Baselines3 PPO and SAC on the same environments and bodies.

The agents people would actually pick against evolved plasticity, trained on the same damage sets
(e.g. ``hebb/HalfCheetahDamage-v0`` with ``damage="seen"``: one morphology drawn per episode) and
evaluated by the same harness (:mod:`hebb_agents.evaluation`) through :class:`BaselineAgent`.

Hyperparameters come from rl-baselines3-zoo (``hyperparams/ppo.yml`` and ``sac.yml``); the tuned
entries exist for the v4 MuJoCo ids only, and ours are v5-based, so the matching v4 entry is used:

- PPO, HalfCheetah: the tuned ``HalfCheetah-v4`` entry (``normalize: true``, ``n_steps 512``,
  ``batch_size 64``, ``gamma 0.98``, ``learning_rate 2.0633e-05``, ``ent_coef 0.000401762``,
  ``clip_range 0.1``, ``n_epochs 20``, ``gae_lambda 0.92``, ``max_grad_norm 0.8``,
  ``vf_coef 0.58096``, ``log_std_init -2``, ``ortho_init False``, ReLU, pi/vf ``[256, 256]``).
- PPO, Ant: the ``Ant-v4`` entry (``normalize: true`` on SB3's PPO defaults; the zoo's tuned Ant
  values are commented out there, so none are used here).
- SAC, HalfCheetah and Ant: the MuJoCo defaults entry (``HalfCheetah-v3/v4: &mujoco-defaults``,
  shared by ``Ant``): SB3's SAC defaults with ``learning_starts 10000``.

Observation normalisation (SB3's ``VecNormalize``) is always on and saved with the model, so an
evaluation sees observations scaled exactly as in training; reward normalisation follows the zoo
(on for PPO, whose entries say ``normalize: true``; off for SAC). Budgets here are far below the
zoo's 1M steps (see the study's README), so the step count is an argument.

A trained baseline is a folder: ``model.zip`` (SB3's archive), ``vecnormalize.pkl`` (the
observation statistics), ``baseline.json`` (algorithm, environment, seed, steps, hyperparameters,
wall time) and ``monitor.csv`` (SB3's per-episode training log). ``model.zip`` and
``vecnormalize.pkl`` are SB3's own formats and use pickle: acceptable for baselines we train
ourselves, but never load such files from a source you do not trust (unpickling runs code).
"""

from __future__ import annotations

import argparse
import copy
import inspect
import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hebb_agents.checkpoint import check_new_run_folder, hold_run_folder
from hebb_agents.cli import json_object, natural, positive
from hebb_agents.evaluation import Agent
from hebb_agents.rollout import make_env

ALGOS = ("ppo", "sac")
ROBOTS = ("half_cheetah", "ant")

_PPO_HALF_CHEETAH_V4 = {
    "n_steps": 512,
    "batch_size": 64,
    "gamma": 0.98,
    "learning_rate": 2.0633e-05,
    "ent_coef": 0.000401762,
    "clip_range": 0.1,
    "n_epochs": 20,
    "gae_lambda": 0.92,
    "max_grad_norm": 0.8,
    "vf_coef": 0.58096,
    "policy_kwargs": {
        "log_std_init": -2,
        "ortho_init": False,
        "activation_fn": "relu",
        "net_arch": {"pi": [256, 256], "vf": [256, 256]},
    },
}

# (algo, robot) -> (zoo entry name, hyperparameters, normalise rewards)
ZOO: dict[tuple[str, str], tuple[str, dict[str, Any], bool]] = {
    ("ppo", "half_cheetah"): ("ppo.yml HalfCheetah-v4 (tuned)", _PPO_HALF_CHEETAH_V4, True),
    ("ppo", "ant"): ("ppo.yml Ant-v4 (normalize: true, SB3 defaults)", {}, True),
    ("sac", "half_cheetah"): ("sac.yml HalfCheetah mujoco-defaults", {"learning_starts": 10000}, False),
    ("sac", "ant"): ("sac.yml Ant mujoco-defaults", {"learning_starts": 10000}, False),
}

_ACTIVATIONS = ("relu", "tanh", "elu", "gelu")


def robot_of(env_id: str) -> str:
    """``half_cheetah`` or ``ant`` for an environment id naming one of them."""
    key = env_id.lower().replace("_", "")
    if "halfcheetah" in key:
        return "half_cheetah"
    if "ant" in key.split("/")[-1]:
        return "ant"
    raise ValueError(
        f"no rl-zoo3 entry is chosen for {env_id!r}; accepted: HalfCheetah or Ant ids "
        "(e.g. hebb/HalfCheetahDamage-v0, hebb/AntDamage-v0, HalfCheetah-v5, Ant-v5)"
    )


def zoo_hyperparams(algo: str, env_id: str) -> tuple[str, dict[str, Any], bool]:
    """The rl-zoo3 entry for ``algo`` on ``env_id``: ``(entry name, hyperparameters, normalise rewards)``."""
    if algo not in ALGOS:
        raise ValueError(f"unknown algorithm {algo!r}; accepted: {', '.join(ALGOS)}")
    entry, params, norm_reward = ZOO[(algo, robot_of(env_id))]
    return entry, copy.deepcopy(params), norm_reward


def _sb3_kwargs(params: Mapping[str, Any]) -> dict[str, Any]:
    """Turn JSON hyperparameters into SB3 constructor arguments (activation names -> torch classes)."""
    import torch

    kwargs = copy.deepcopy(dict(params))
    policy_kwargs = kwargs.get("policy_kwargs")
    if policy_kwargs and "activation_fn" in policy_kwargs:
        name = policy_kwargs["activation_fn"]
        classes = {"relu": torch.nn.ReLU, "tanh": torch.nn.Tanh, "elu": torch.nn.ELU, "gelu": torch.nn.GELU}
        if name not in classes:
            raise ValueError(f"unknown activation_fn {name!r}; accepted: {', '.join(_ACTIVATIONS)}")
        policy_kwargs["activation_fn"] = classes[name]
    return kwargs


def _algo_class(algo: str) -> type:
    from stable_baselines3 import PPO, SAC

    if algo not in ALGOS:
        raise ValueError(f"unknown algorithm {algo!r}; accepted: {', '.join(ALGOS)}")
    return {"ppo": PPO, "sac": SAC}[algo]


def train_baseline(
    algo: str,
    env_id: str,
    env_kwargs: Mapping[str, Any] | None,
    steps: int,
    seed: int,
    out_dir: str | Path,
    max_episode_steps: int | None = None,
    hyperparams: Mapping[str, Any] | None = None,
    progress: bool = False,
    threads: int | None = 1,
    time_limit: float | None = None,
) -> Path:
    """Train ``algo`` (``ppo`` / ``sac``) for ``steps`` environment steps and save it in ``out_dir``.

    :param env_id: Gymnasium id, e.g. ``hebb/HalfCheetahDamage-v0``.
    :param env_kwargs: passed to ``gym.make`` (e.g. ``{"damage": "seen"}`` for the training bodies).
    :param steps: environment steps of training.
    :param seed: seeds SB3 (network init, exploration) and the environment.
    :param max_episode_steps: episode cap (``None``: the environment's own limit, 1000 for ours).
    :param hyperparams: overrides on top of the rl-zoo3 entry (JSON values; ``activation_fn`` by name).
    :param threads: torch threads (``None``: torch's default). One by default: these networks are
        small, and on a shared 2-core machine more threads fight each other (measured here: 2,048 PPO
        steps took 174 s with torch's default threads under load, against ~20 s with one).
    :param time_limit: stop training after this many seconds of wall time (the steps reached are
        recorded as ``steps_done``), so a study on a busy machine still finishes.
    :returns: ``out_dir``.
    """
    import torch
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.monitor import Monitor
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    entry, params, norm_reward = zoo_hyperparams(algo, env_id)
    params.update(copy.deepcopy(dict(hyperparams or {})))
    algo_class = _algo_class(algo)
    # checked before anything is built or written: SB3 would only fail inside its constructor
    taken = {"self", "policy", "env", "kwargs", "seed", "device", "verbose"}  # set here, not by hyperparams
    names = inspect.signature(algo_class.__init__).parameters
    accepted = {name for name in names if name not in taken and not name.startswith("_")}
    unknown = sorted(set(params) - accepted)
    if unknown:
        raise ValueError(f"unknown {algo} hyperparameters {unknown}; accepted: {', '.join(sorted(accepted))}")
    out = Path(out_dir)
    check_new_run_folder(out, "baseline")
    env_kwargs = dict(env_kwargs or {})
    limit = {"max_episode_steps": max_episode_steps} if max_episode_steps else {}

    def build(log: bool = True) -> Any:
        return Monitor(
            make_env(env_id, **env_kwargs, **limit), filename=str(out / "monitor.csv") if log else None
        )

    # values are checked by building the model once on an env that logs nothing, so that a bad
    # value fails with its name before the output folder (and a previous run's monitor.csv) is touched
    try:
        algo_class("MlpPolicy", DummyVecEnv([lambda: build(log=False)]), device="cpu", **_sb3_kwargs(params))
    except (TypeError, AssertionError) as err:
        raise ValueError(f"bad {algo} hyperparameter values {params}: {err}") from err
    # held from here to the end: another run into the folder meanwhile is refused (hebb train too)
    release = hold_run_folder(out)
    try:
        check_new_run_folder(out, "baseline")  # again: another run may have saved before the hold
        venv = DummyVecEnv([build])
        venv.seed(seed)
        gamma = float(params.get("gamma", 0.99))
        venv = VecNormalize(venv, norm_obs=True, norm_reward=norm_reward, gamma=gamma)
        if threads is not None:
            torch.set_num_threads(int(threads))
        model = algo_class("MlpPolicy", venv, seed=seed, device="cpu", verbose=0, **_sb3_kwargs(params))
        start = time.perf_counter()

        class _Deadline(BaseCallback):
            def _on_step(self) -> bool:
                return time_limit is None or time.perf_counter() - start < time_limit

        model.learn(total_timesteps=int(steps), progress_bar=progress, callback=_Deadline())
        wall = time.perf_counter() - start
        model.save(out / "model.zip")
        venv.save(str(out / "vecnormalize.pkl"))
        venv.close()
        info = {
            "algo": algo,
            "env_id": env_id,
            "env_kwargs": env_kwargs,
            "max_episode_steps": max_episode_steps,
            "steps": int(steps),
            "steps_done": int(model.num_timesteps),
            "time_limit": time_limit,
            "seed": int(seed),
            "zoo_entry": entry,
            "hyperparams": params,
            "normalize": {"obs": True, "reward": norm_reward},
            "wall_time": wall,
        }
        (out / "baseline.json").write_text(json.dumps(info, indent=2))
    finally:
        release()
    return out


class BaselineAgent(Agent):
    """A trained SB3 model plus its observation statistics, acting deterministically.

    Load only folders you produced yourself: ``model.zip`` and ``vecnormalize.pkl`` are unpickled.
    """

    def __init__(self, model: Any, normaliser: Any, info: Mapping[str, Any], name: str | None = None) -> None:
        self.model = model
        self.normaliser = normaliser  # VecNormalize with training=False: only its obs statistics are used
        self.info = dict(info)
        self.kind = str(info.get("algo", "sb3"))
        self.name = name or self.kind

    @classmethod
    def load(cls, path: str | Path, name: str | None = None) -> BaselineAgent:
        """Rebuild from a folder written by :func:`train_baseline`."""
        from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

        path = Path(path)
        meta_file = path / "baseline.json"
        if not meta_file.exists():
            raise FileNotFoundError(f"{meta_file} does not exist; is {path} a folder from `hebb baseline`?")
        info = json.loads(meta_file.read_text())
        model = _algo_class(info["algo"]).load(path / "model.zip", device="cpu")
        env_id, env_kwargs = info["env_id"], dict(info.get("env_kwargs", {}))
        normaliser = VecNormalize.load(
            str(path / "vecnormalize.pkl"), DummyVecEnv([lambda: make_env(env_id, **env_kwargs)])
        )
        normaliser.training = False
        normaliser.norm_reward = False
        return cls(model, normaliser, info, name=name)

    def start(self, seeds: Sequence[int]) -> None:
        """Nothing to restart: actions are deterministic and the network is fixed."""

    def act(self, obs: np.ndarray) -> np.ndarray:
        obs = np.asarray(obs, dtype=np.float32)
        actions, _ = self.model.predict(self.normaliser.normalize_obs(obs), deterministic=True)
        return np.asarray(actions)


# ---------------------------------------------------------------------------------------------- CLI
def add_baseline_command(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``hebb baseline``: train an SB3 PPO/SAC baseline, optionally evaluate it per morphology."""
    p = subparsers.add_parser("baseline", help="train a Stable-Baselines3 PPO or SAC baseline")
    p.add_argument("--algo", choices=ALGOS, required=True)
    p.add_argument("--env", required=True, help="e.g. hebb/HalfCheetahDamage-v0, hebb/AntDamage-v0")
    p.add_argument(
        "--env-kwargs", type=json_object, default={}, help='JSON for gym.make, e.g. \'{"damage": "seen"}\''
    )
    p.add_argument("--steps", type=positive, required=True, help="environment steps of training")
    p.add_argument("--seed", type=natural, default=0)
    p.add_argument(
        "--max-steps",
        "--max-episode-steps",
        dest="max_episode_steps",
        type=natural,
        default=None,
        help="episode cap during training and evaluation (default, or 0: the env's own)",
    )
    p.add_argument("--hyperparams", type=json_object, default={}, help="JSON overrides of the rl-zoo3 entry")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument(
        "--eval-morphologies", nargs="*", default=[], help="catalogue names to evaluate on afterwards"
    )
    p.add_argument("--eval-episodes", type=positive, default=10)
    p.add_argument("--eval-seed", type=natural, default=1000)
    p.set_defaults(func=_baseline_command)
    return p


def _baseline_command(args: argparse.Namespace) -> int:
    from hebb_agents.evaluation import (
        MORPHOLOGY_COLUMNS,
        check_morphologies,
        evaluate_morphologies,
        markdown_table,
        write_csv,
    )

    check_new_run_folder(args.out, "baseline")
    entry, _, _ = zoo_hyperparams(args.algo, args.env)
    check_morphologies(args.env, args.eval_morphologies)  # before, not after, training
    print(
        f"{args.algo.upper()} on {args.env} {args.env_kwargs}, {args.steps} steps, seed {args.seed}; "
        f"zoo entry {entry}"
    )
    train_baseline(
        args.algo,
        args.env,
        args.env_kwargs,
        args.steps,
        args.seed,
        args.out,
        max_episode_steps=args.max_episode_steps or None,
        hyperparams=args.hyperparams,
    )
    info = json.loads((args.out / "baseline.json").read_text())
    print(
        f"trained in {info['wall_time']:.0f} s; saved {args.out / 'model.zip'} and "
        f"{args.out / 'vecnormalize.pkl'}"
    )
    if args.eval_morphologies:
        agent = BaselineAgent.load(args.out, name=args.algo)
        rows = evaluate_morphologies(
            {args.algo: agent},
            args.env,
            {"eval": args.eval_morphologies},
            episodes=args.eval_episodes,
            seed=args.eval_seed,
            env_kwargs=args.env_kwargs,
            max_steps=args.max_episode_steps or None,
        )
        write_csv(rows, MORPHOLOGY_COLUMNS, args.out / "eval.csv")
        table = markdown_table(rows, MORPHOLOGY_COLUMNS)
        (args.out / "eval.md").write_text(table)
        print(table)
    return 0
