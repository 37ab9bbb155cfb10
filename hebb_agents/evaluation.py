"""Evaluate agents: fixed-seed episodes, morphology sweeps (seen / unseen), mid-episode damage.

Every agent, evolved or gradient-trained, is seen through one small interface, :class:`Agent`:
``start(seeds)`` begins one episode per seed and ``act(obs)`` maps a batch of observations
``(E, obs_dim)`` to actions ``(E, act_dim)``. Episodes of one call run in lockstep (``E``
environment copies, one batched policy call per step), so a Hebbian agent's plastic update and an
SB3 network's forward pass are paid once per step rather than once per episode.

Seeds: episode ``e`` of a call with ``seed`` uses ``seed + e`` for the environment reset *and* for
the agent's own draws (a Hebbian agent's random initial weights). Every agent and every
morphology sees the same seeds, so differences between rows are not differences of luck.

Mid-episode damage: after ``damage_step`` steps the body is switched with the environment's
``set_damage`` (position and velocity carry over). The forward velocity ``info["x_velocity"]`` is
recorded every step; :func:`adaptation_metrics` compares the speed before and after and counts
the steps until the agent is back to a stated fraction of its pre-damage speed.
"""

from __future__ import annotations

import abc
import argparse
import csv
import math
import os
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from hebb_agents.policy import EvolvablePolicy, HebbianPolicy
from hebb_agents.rollout import check_episode_cap, make_env

GROUPS = ("seen", "unseen")


# ---------------------------------------------------------------------------------------------- agents
class Agent(abc.ABC):
    """What the harness needs from an agent: start episodes with seeds, act on a batch.

    ``predict`` has Stable-Baselines3's signature, so ``evaluate_policy(agent, vec_env)`` works too.
    """

    name: str = "agent"
    kind: str = "agent"
    _predict_episodes: int | None = None  # batch size of the episodes predict started
    _predict_seeds: int = 0  # next seed predict hands out

    @abc.abstractmethod
    def start(self, seeds: Sequence[int]) -> None:
        """Begin ``len(seeds)`` episodes; episode ``e`` draws the agent's own randomness from ``seeds[e]``."""

    @abc.abstractmethod
    def act(self, obs: np.ndarray) -> np.ndarray:
        """Actions ``(E, *action_shape)`` for observations ``(E, *obs_shape)`` of the running episodes."""

    def reseed(self, first: int = 0) -> None:
        """Make :meth:`predict`'s next episodes start afresh with seeds ``first``, ``first + 1``, ..."""
        self._predict_seeds = int(first)
        self._predict_episodes = None

    def restart(self, episodes: np.ndarray, seeds: Sequence[int]) -> None:
        """Begin a new episode in the ``episodes`` rows only (the others run on), one seed each.

        The default suits agents that keep nothing between steps; an agent with per-episode state
        must override it.
        """
        return None  # nothing carries over from one episode to the next

    def predict(
        self,
        observation: np.ndarray,
        state: Any = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = True,
    ) -> tuple[np.ndarray, Any]:
        """SB3-style call on a batch ``(E, ...)``: restarts the episodes that start.

        Every episode of a vectorised env restarts on its own ``episode_start`` flag (all of them on
        the first call, or when ``E`` changes), and each one gets a seed of its own: 0, 1, 2, ...
        in the order they start, so no two episodes share the agent's random draws. The count goes
        on across calls; :meth:`reseed` starts it again, so that an evaluation can be repeated.
        """
        observation = np.asarray(observation)
        count = observation.shape[0]
        if self._predict_episodes != count:
            starting = np.ones(count, dtype=bool)
        elif episode_start is None:
            starting = np.zeros(count, dtype=bool)
        else:
            starting = np.asarray(episode_start, dtype=bool).reshape(-1)
        if starting.any():
            first = self._predict_seeds
            self._predict_seeds += int(starting.sum())
            seeds = list(range(first, self._predict_seeds))
            if starting.all():
                self.start(seeds)
                self._predict_episodes = count
            else:
                self.restart(np.flatnonzero(starting), seeds)
        return self.act(observation), state

    @property
    def spaces(self) -> tuple[gym.Space, gym.Space] | None:
        """The (observation, action) spaces the agent was trained for; ``None`` if it does not say.

        By default those of an SB3-style ``model`` attribute (a baseline agent's network).
        """
        model = getattr(self, "model", None)
        if model is None:
            return None
        return model.observation_space, model.action_space


class PolicyAgent(Agent):
    """An evolved :class:`~hebb_agents.policy.HebbianPolicy` or :class:`StaticPolicy` (its first member)."""

    def __init__(self, policy: EvolvablePolicy, name: str | None = None) -> None:
        self.policy = policy
        self.params = policy.get_params()[:1]  # (1, num_params) the agent's one evolved vector
        self.kind = policy.kind
        self.name = name or policy.kind

    @classmethod
    def load(cls, path: str | Path, name: str | None = None) -> PolicyAgent:
        return cls(EvolvablePolicy.load(path), name=name)

    def start(self, seeds: Sequence[int]) -> None:
        self.policy.set_params(np.repeat(self.params, len(seeds), axis=0))
        self.policy.reset([int(s) for s in seeds])

    def restart(self, episodes: np.ndarray, seeds: Sequence[int]) -> None:
        """Fresh random weights (and encoder state) for the ``episodes`` rows only."""
        self.policy.reset([int(s) for s in seeds], members=np.asarray(episodes))

    def act(self, obs: np.ndarray) -> np.ndarray:
        return self.policy.act(np.asarray(obs))

    @property
    def spaces(self) -> tuple[gym.Space, gym.Space]:
        return self.policy.observation_space, self.policy.action_space

    @property
    def weights(self) -> list[np.ndarray]:
        """Current weights per layer ``(E, n_in, n_out)`` (plastic for a Hebbian agent)."""
        return [w.copy() for w in self.policy.network.weights]


def load_agent(path: str | Path, name: str | None = None) -> Agent:
    """Load a saved agent: an ES policy file (``.npz`` / ``.safetensors``), an ES run folder (its
    ``policy.npz``, the ES centre), or a baseline folder written by
    :func:`hebb_agents.baselines.train_baseline`.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no agent at {path}")
    if path.is_dir():
        if (path / "baseline.json").exists():
            from hebb_agents.baselines import BaselineAgent

            return BaselineAgent.load(path, name=name)
        if (path / "policy.npz").exists():
            return PolicyAgent.load(path / "policy.npz", name=name)
        raise ValueError(
            f"{path} holds neither baseline.json (an SB3 baseline) nor policy.npz (an ES run); "
            "accepted: an ES run folder, a baseline folder, or a policy .npz/.safetensors file"
        )
    if path.suffix in (".npz", ".safetensors"):
        return PolicyAgent.load(path, name=name)
    raise ValueError(
        f"cannot tell what agent {path} is; accepted: an ES run folder, a baseline folder, "
        "or a policy .npz/.safetensors file"
    )


def check_spaces(
    spaces: tuple[gym.Space, gym.Space] | None,
    env_id: str,
    env_kwargs: Mapping[str, Any] | None = None,
    source: str = "the agent",
) -> None:
    """Fail now, naming both, unless ``env_id`` has the (observation, action) ``spaces`` ``source`` was
    trained for (observations: same shape; actions: equal). ``None`` (spaces unknown) passes.

    Called before any episode or output file, so that an agent meant for another robot costs nothing.
    """
    if spaces is None:
        return
    obs_trained, act_trained = spaces
    probe = make_env(env_id, **dict(env_kwargs or {}))
    obs_space, act_space = probe.observation_space, probe.action_space
    probe.close()
    if obs_space.shape != obs_trained.shape or act_space != act_trained:
        raise ValueError(
            f"{source} was trained for observations {obs_trained} and actions {act_trained}; "
            f"{env_id} has {obs_space} and {act_space}"
        )


# ---------------------------------------------------------------------------------------------- rollouts
@dataclass
class Trajectories:
    """Episodes of one agent on one environment configuration, run in lockstep."""

    seeds: np.ndarray  # (E,)
    returns: np.ndarray  # (E,)
    distances: np.ndarray  # (E,) final minus initial x position (NaN if the env reports none)
    lengths: np.ndarray  # (E,)
    x_velocity: np.ndarray  # (E, T) forward velocity per step, NaN after an episode ended
    damage_step: int | None = None  # step after which the body was switched, if it was
    extra: dict[str, Any] = field(default_factory=dict)


def _with_damage(env: gym.Env, damage: Any, damage_step: int | None) -> gym.Env:
    """``env`` switching to body ``damage`` after ``damage_step`` steps (unchanged without a damage)."""
    if damage is None or damage_step is None:
        return env
    from hebb_envs.wrappers import MidEpisodeDamage

    # step damage_step + 1 (1-based) is the first to run on the damaged body
    return MidEpisodeDamage(env, damage, at_step=damage_step + 1)


def rollout(
    agent: Agent,
    env_id: str,
    seeds: Sequence[int],
    env_kwargs: Mapping[str, Any] | None = None,
    max_steps: int | None = None,
    damage_step: int | None = None,
    damage: Any = None,
    on_step: Callable[[int, Agent], None] | None = None,
) -> Trajectories:
    """Run one episode per seed in lockstep; optionally switch to body ``damage`` after ``damage_step`` steps.

    ``on_step(t, agent)`` is called once after the agent starts (``t = 0``) and after every step ``t``
    (used to record a Hebbian agent's weights).
    """
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("need at least one seed")
    if max_steps is not None and max_steps < 1:
        raise ValueError(f"max_steps must be >= 1 or None, got {max_steps}")
    if (damage_step is None) != (damage is None):
        raise ValueError(
            f"give both damage_step and damage for a mid-episode damage (got damage_step={damage_step!r}, "
            f"damage={damage!r})"
        )
    envs = [_with_damage(make_env(env_id, **dict(env_kwargs or {})), damage, damage_step) for _ in seeds]
    try:
        # a fixed-length task without a time limit (the memory task) runs to its own end
        limit = (
            max_steps or envs[0].spec.max_episode_steps or getattr(envs[0].unwrapped, "episode_length", 1000)
        )
        check_episode_cap(envs[0], limit, env_id)
        n = len(seeds)
        obs, x0 = [], np.full(n, np.nan)
        for e, (env, seed) in enumerate(zip(envs, seeds)):
            o, info = env.reset(seed=seed)
            obs.append(o)
            x0[e] = info.get("x_position", np.nan)
        obs_batch = np.stack(obs)  # (E, obs_dim)
        x_last = x0.copy()
        agent.start(seeds)
        if on_step is not None:
            on_step(0, agent)
        returns = np.zeros(n)
        lengths = np.zeros(n, dtype=np.int64)
        velocity = np.full((n, limit), np.nan)  # (E, T)
        running = np.ones(n, dtype=bool)
        t = 0
        while running.any() and t < limit:
            actions = agent.act(obs_batch)
            for e in np.flatnonzero(running):
                o, r, terminated, truncated, info = envs[e].step(actions[e])
                obs_batch[e] = o
                returns[e] += float(r)
                lengths[e] += 1
                x_last[e] = info.get("x_position", x_last[e])
                velocity[e, t] = info.get("x_velocity", np.nan)
                if terminated or truncated:
                    running[e] = False
            t += 1
            if on_step is not None:
                on_step(t, agent)
    finally:
        for env in envs:
            env.close()
    return Trajectories(
        seeds=np.array(seeds),
        returns=returns,
        distances=x_last - x0,
        lengths=lengths,
        x_velocity=velocity[:, :t],
        damage_step=damage_step,
    )


@dataclass
class EpisodeStats:
    """Per-episode results of one agent on one environment configuration."""

    returns: np.ndarray  # (episodes,)
    distances: np.ndarray  # (episodes,) final minus initial x position; NaN if the env has none
    lengths: np.ndarray  # (episodes,)

    def summary(self) -> dict[str, float]:
        """Mean and standard deviation of return, distance and length."""
        out = {}
        for name in ("returns", "distances", "lengths"):
            values = getattr(self, name)
            out[f"{name}_mean"] = float(np.mean(values))
            out[f"{name}_std"] = float(np.std(values))
        return out


def run_episodes(
    policy: EvolvablePolicy,
    env_id: str,
    episodes: int = 10,
    seed: int = 0,
    env_kwargs: dict[str, Any] | None = None,
    max_steps: int | None = None,
) -> EpisodeStats:
    """Run ``episodes`` episodes of a single agent (its first member); episode ``e`` uses seed ``seed + e``.

    The agent's weights are reset at every episode start, as during training.
    """
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    traj = rollout(PolicyAgent(policy), env_id, range(seed, seed + episodes), env_kwargs, max_steps)
    return EpisodeStats(traj.returns, traj.distances.astype(float), traj.lengths)


# ---------------------------------------------------------------------------------------------- sweeps
def _robot(env_id: str) -> str:
    """The robot (``ant`` / ``half_cheetah``) of a ``hebb/...Damage-v0`` id, or a clear error.

    Read from the registered env class: no environment is built.
    """
    from gymnasium.envs.registration import load_env_creator

    if env_id not in gym.registry:
        make_env(env_id)  # raises the unknown-id error that lists the registered ids
    entry_point = gym.spec(env_id).entry_point
    creator = load_env_creator(entry_point) if isinstance(entry_point, str) else entry_point
    robot = getattr(creator, "robot", None)
    if robot is None:
        raise ValueError(
            f"{env_id} has no morphology catalogue; use hebb/AntDamage-v0 or hebb/HalfCheetahDamage-v0"
        )
    return robot


def catalogue_groups(env_id: str) -> dict[str, tuple[str, ...]]:
    """The seen and unseen morphology names of ``env_id``'s robot (a ``hebb/...Damage-v0`` id)."""
    from hebb_envs.morphology import split_names

    robot = _robot(env_id)
    return {group: split_names(robot, group) for group in GROUPS}


def episode_limit(
    env_id: str, env_kwargs: Mapping[str, Any] | None = None, max_steps: int | None = None
) -> int | None:
    """Steps an evaluation episode can last at most: ``max_steps`` capped by the env's time limit
    (``max_episode_steps`` in ``env_kwargs``, else the registered one); ``None`` if neither is set."""
    registered = gym.spec(env_id).max_episode_steps if env_id in gym.registry else None
    own = dict(env_kwargs or {}).get("max_episode_steps", registered)
    limits = [n for n in (max_steps, own) if n is not None]
    return min(limits) if limits else None


def check_morphologies(env_id: str, names: Sequence[str]) -> None:
    """Fail now, naming the accepted values, if any of ``names`` is not a body of ``env_id``'s robot.

    Called before training or evaluating, so that a misspelled name costs nothing.
    """
    if not names:
        return
    from hebb_envs.morphology import resolve_damage

    robot = _robot(env_id)
    for name in names:
        resolve_damage(robot, name)


MORPHOLOGY_COLUMNS = (
    "agent",
    "group",
    "morphology",
    "episodes",
    "return_mean",
    "return_std",
    "distance_mean",
    "distance_std",
    "length_mean",
)
GROUP_COLUMNS = (
    "agent",
    "group",
    "morphologies",
    "return_mean",
    "return_std",
    "distance_mean",
    "distance_std",
)


def evaluate_morphologies(
    agents: Mapping[str, Agent],
    env_id: str,
    groups: Mapping[str, Sequence[str]],
    episodes: int = 10,
    seed: int = 1000,
    env_kwargs: Mapping[str, Any] | None = None,
    max_steps: int | None = None,
    log: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """Every agent on every morphology of ``groups`` (e.g. ``{"seen": [...], "unseen": [...]}``).

    Returns one row per (agent, morphology) with the columns of :data:`MORPHOLOGY_COLUMNS`;
    episode ``e`` of every row uses seed ``seed + e``.
    """
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    check_morphologies(env_id, [name for names in groups.values() for name in names])
    base = {k: v for k, v in dict(env_kwargs or {}).items() if k != "damage"}
    seeds = list(range(seed, seed + episodes))
    rows = []
    for agent_name, agent in agents.items():
        for group, names in groups.items():
            for morphology in names:
                traj = rollout(agent, env_id, seeds, {**base, "damage": morphology}, max_steps)
                rows.append(
                    {
                        "agent": agent_name,
                        "group": group,
                        "morphology": morphology,
                        "episodes": episodes,
                        "return_mean": float(np.mean(traj.returns)),
                        "return_std": float(np.std(traj.returns)),
                        "distance_mean": float(np.mean(traj.distances)),
                        "distance_std": float(np.std(traj.distances)),
                        "length_mean": float(np.mean(traj.lengths)),
                    }
                )
                if log is not None:
                    r = rows[-1]
                    log(f"{agent_name:>12} {group:>6} {morphology:<36} distance {r['distance_mean']:8.2f}")
    return rows


def summarise_groups(rows: Iterable[Mapping[str, Any]], by: str = "agent") -> list[dict[str, Any]]:
    """Per (``by``, group): the mean over morphologies of the per-morphology means, and their spread.

    ``*_std`` here is the standard deviation *across morphologies* of the per-morphology means.
    """
    buckets: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for row in rows:
        buckets.setdefault((row[by], row["group"]), []).append(row)
    out = []
    for (key, group), items in buckets.items():
        ret = np.array([r["return_mean"] for r in items])
        dist = np.array([r["distance_mean"] for r in items])
        out.append(
            {
                by: key,
                "group": group,
                "morphologies": len(items),
                "return_mean": float(ret.mean()),
                "return_std": float(ret.std()),
                "distance_mean": float(dist.mean()),
                "distance_std": float(dist.std()),
            }
        )
    return out


# ---------------------------------------------------------------------------------------------- damage
ADAPTATION_COLUMNS = (
    "agent",
    "damage",
    "damage_step",
    "episodes",
    "speed_before",
    "speed_after",
    "speed_final",
    "fraction",
    "recovered",
    "recovery_steps_mean",
    "recovery_steps_std",
)


def mean_of_recorded(values: np.ndarray, axis: int = -1) -> np.ndarray | float:
    """Mean over ``axis`` of the values that are not NaN (steps after an episode ended); NaN, without
    a warning, where there are none."""
    values = np.asarray(values, dtype=float)
    recorded = ~np.isnan(values)
    count = recorded.sum(axis=axis)
    total = np.where(recorded, values, 0.0).sum(axis=axis)
    with np.errstate(invalid="ignore"):
        return total / count


def moving_mean(values: np.ndarray, window: int) -> np.ndarray:
    """Means over ``window`` consecutive steps of each row of ``values`` ``(E, T)``.

    Returns ``(E, T - window + 1)``: column ``k`` averages steps ``k .. k + window - 1``; NaN where
    the window holds a NaN (a step after its episode ended: such a window measures no speed).
    """
    values = np.asarray(values, dtype=float)
    kernel = np.ones(window) / window
    means = np.stack([np.convolve(row, kernel, mode="valid") for row in np.nan_to_num(values, nan=0.0)])
    missing = np.stack([np.convolve(row, kernel, mode="valid") for row in np.isnan(values)])
    return np.where(missing > 0.5 / window, np.nan, means)


def check_adaptation_settings(
    window: int, fraction: float, damage_step: int | None = None, steps: int | None = None
) -> None:
    """Fail, naming the accepted range, unless the speeds of :func:`adaptation_metrics` can be measured.

    ``window`` (steps averaged for a speed) >= 1; ``fraction`` (of the pre-damage speed that counts
    as recovered) in (0, 1]; with a ``damage_step``, a full window before the damage and, within
    ``steps`` (the episode length, when known), one after it.
    """
    if window < 1:
        raise ValueError(
            f"window (--window) must be >= 1 step (the steps averaged for a speed), got {window}"
        )
    if not 0 < fraction <= 1:
        raise ValueError(
            "fraction (--fraction) must be in (0, 1] (recovered = back to this fraction of the "
            f"pre-damage speed), got {fraction}"
        )
    if damage_step is None:
        return
    episode = "" if steps is None else f" in episodes of {steps} steps"
    if damage_step < 1 or (steps is not None and damage_step >= steps):
        accepted = ">= 1" if steps is None else f"in 1..{steps - 1}{episode}"
        raise ValueError(f"damage_step (--damage-step) must be {accepted}, got {damage_step}")
    # a full window before the damage, and one after it inside the episode
    largest = damage_step if steps is None else min(damage_step, steps - damage_step)
    if window > largest:
        raise ValueError(
            f"window (--window) must be in 1..{largest} for damage_step (--damage-step) {damage_step}"
            f"{episode} (a window before the damage and one after it), got {window}"
        )


def adaptation_metrics(
    velocity: np.ndarray, damage_step: int, window: int = 20, fraction: float = 0.8
) -> dict[str, np.ndarray]:
    """Per-episode speeds around a damage applied after ``damage_step`` steps of ``velocity`` ``(E, T)``.

    - ``before``: mean forward velocity over the ``window`` steps before the damage;
    - ``after``: over the ``window`` steps right after it;
    - ``final``: over the last ``window`` steps of the episode (of each episode's own steps: the
      steps after an episode ended are NaN, as :func:`rollout` pads them);
    - ``recovery``: the first ``k >= 0`` such that the mean over steps ``[d + k, d + k + window)`` is at
      least ``fraction`` of ``before`` (``NaN`` if never, or if ``before <= 0``: no speed to recover);
      only windows inside the episode count.

    A window (20 steps = 1 s of HalfCheetah or Ant time) averages over the gait cycle, whose
    instantaneous velocity swings through zero.
    """
    velocity = np.asarray(velocity, dtype=float)
    if velocity.ndim != 2:
        raise ValueError(f"velocity must be (episodes, steps), got shape {velocity.shape}")
    check_adaptation_settings(window, fraction, damage_step, velocity.shape[1])
    before = mean_of_recorded(velocity[:, damage_step - window : damage_step])
    after = mean_of_recorded(velocity[:, damage_step : damage_step + window])
    recorded = ~np.isnan(velocity)
    # each episode's length: up to its last recorded step
    lengths = np.where(recorded.any(axis=1), velocity.shape[1] - np.argmax(recorded[:, ::-1], axis=1), 0)
    final = np.array([mean_of_recorded(row[max(0, n - window) : n]) for row, n in zip(velocity, lengths)])
    # moving[e, k] = mean of velocity[e, d + k : d + k + window]; a window reaching past the episode's
    # end is no speed (NaN, never a recovery), as the adaptation figure leaves it out
    moving = moving_mean(velocity[:, damage_step:], window)
    recovery = np.full(velocity.shape[0], np.nan)
    for e in range(velocity.shape[0]):
        if before[e] <= 0:
            continue
        hits = np.flatnonzero(moving[e] >= fraction * before[e])
        if hits.size:
            recovery[e] = hits[0]
    return {"before": before, "after": after, "final": final, "recovery": recovery}


def evaluate_damage(
    agents: Mapping[str, Agent],
    env_id: str,
    damages: Sequence[str],
    damage_step: int,
    episodes: int = 10,
    seed: int = 1000,
    env_kwargs: Mapping[str, Any] | None = None,
    max_steps: int | None = None,
    window: int = 20,
    fraction: float = 0.8,
) -> tuple[list[dict[str, Any]], dict[tuple[str, str], np.ndarray]]:
    """Each agent starts intact and loses a limb after ``damage_step`` steps, for each of ``damages``.

    Returns the rows of :data:`ADAPTATION_COLUMNS` and the velocity traces ``(E, T)`` per
    (agent, damage), for the adaptation plots.
    """
    base = {k: v for k, v in dict(env_kwargs or {}).items() if k != "damage"}
    seeds = list(range(seed, seed + episodes))
    rows, curves = [], {}
    for agent_name, agent in agents.items():
        for damage in damages:
            traj = rollout(
                agent,
                env_id,
                seeds,
                {**base, "damage": "intact"},
                max_steps,
                damage_step=damage_step,
                damage=damage,
            )
            m = adaptation_metrics(traj.x_velocity, damage_step, window, fraction)
            recovered = np.isfinite(m["recovery"])
            rows.append(
                {
                    "agent": agent_name,
                    "damage": damage,
                    "damage_step": damage_step,
                    "episodes": episodes,
                    # over the episodes that reached those steps (an Ant may fall before)
                    "speed_before": float(mean_of_recorded(m["before"])),
                    "speed_after": float(mean_of_recorded(m["after"])),
                    "speed_final": float(mean_of_recorded(m["final"])),
                    "fraction": fraction,
                    "recovered": f"{int(recovered.sum())}/{episodes}",
                    "recovery_steps_mean": float(np.mean(m["recovery"][recovered]))
                    if recovered.any()
                    else math.nan,
                    "recovery_steps_std": float(np.std(m["recovery"][recovered]))
                    if recovered.any()
                    else math.nan,
                }
            )
            curves[(agent_name, damage)] = traj.x_velocity
    return rows, curves


# ------------------------------------------------------------------------------------------ Hebbian traces
def trace_weights(
    agent: PolicyAgent,
    env_id: str,
    seed: int = 0,
    env_kwargs: Mapping[str, Any] | None = None,
    max_steps: int | None = None,
    snapshot_steps: Sequence[int] = (0, 10, 50, 200),
) -> tuple[np.ndarray, dict[int, list[np.ndarray]]]:
    """One episode of an evolved agent: each layer's Frobenius norm per step, and the weights at chosen steps.

    Returns ``norms`` ``(T + 1, n_layers)`` (row 0: the random initial weights) and
    ``{step: [layer weights (n_in, n_out)]}`` for the ``snapshot_steps`` reached.
    """
    if not isinstance(agent, PolicyAgent):
        raise ValueError(f"weights can be traced for evolved policies only, got {type(agent).__name__}")
    norms: list[np.ndarray] = []
    snapshots: dict[int, list[np.ndarray]] = {}
    wanted = {int(s) for s in snapshot_steps}

    def record(t: int, a: PolicyAgent) -> None:
        weights = a.weights
        norms.append(np.array([np.linalg.norm(w[0]) for w in weights]))
        if t in wanted:
            snapshots[t] = [w[0] for w in weights]

    rollout(agent, env_id, [seed], env_kwargs, max_steps, on_step=record)
    return np.stack(norms), snapshots


def is_hebbian(agent: Agent) -> bool:
    return isinstance(agent, PolicyAgent) and isinstance(agent.policy, HebbianPolicy)


# ---------------------------------------------------------------------------------------------- tables
def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.2f}"
    return str(value)


def write_csv(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], path: str | Path) -> Path:
    """Rows as CSV with exactly ``columns`` (full precision)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for row in rows:
            writer.writerow([row[c] for c in columns])
    return path


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """A GitHub Markdown table; ``x_mean`` / ``x_std`` column pairs become one ``x`` column, mean ± std."""
    shown: list[tuple[str, str, str | None]] = []  # (header, column, std column)
    for c in columns:
        if c.endswith("_std") and c[:-4] + "_mean" in columns:
            continue
        if c.endswith("_mean") and c[:-5] + "_std" in columns:
            shown.append((c[:-5], c, c[:-5] + "_std"))
        else:
            shown.append((c, c, None))
    lines = ["| " + " | ".join(h for h, _, _ in shown) + " |", "|" + "---|" * len(shown)]
    for row in rows:
        cells = []
        for _, c, s in shown:
            cells.append(_fmt(row[c]) + (f" ± {_fmt(row[s])}" if s is not None else ""))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------- video
VIDEO_SIZE = (480, 360)  # default frame size of hebb video (MuJoCo envs)


def max_frame_size() -> int:
    """The largest frame side MuJoCo's OpenGL backend can render offscreen (``GL_MAX_RENDERBUFFER_SIZE``).

    Gymnasium grows the model's offscreen framebuffer (``model.vis.global_.offwidth`` /
    ``offheight``) to the requested frame size, so the OpenGL driver's limit is the one that holds.
    """
    import mujoco
    from OpenGL import GL

    from hebb_envs.rendering import load_triton_before_opengl

    load_triton_before_opengl()
    backend = os.environ.get("MUJOCO_GL", "unset, so glfw")
    no_context = (
        f"MuJoCo could not make an OpenGL context to render offscreen (MUJOCO_GL={backend}); "
        "without a display set MUJOCO_GL=egl (or osmesa)"
    )
    try:
        context = mujoco.GLContext(1, 1)
        context.make_current()
    except Exception as err:  # each GL backend raises its own kind
        raise ValueError(f"{no_context}: {err}") from None
    try:
        largest = int(GL.glGetIntegerv(GL.GL_MAX_RENDERBUFFER_SIZE))
    except Exception as err:
        raise ValueError(f"{no_context}: {err}") from None
    finally:
        context.free()
    if largest < 1:  # GLFW without a display reports its error and leaves no context current
        raise ValueError(no_context)
    return largest


def record_video(
    agent: Agent,
    env_id: str,
    path: str | Path,
    env_kwargs: Mapping[str, Any] | None = None,
    steps: int = 300,
    seed: int = 0,
    damage_step: int | None = None,
    damage: Any = None,
    size: tuple[int, int] = VIDEO_SIZE,
    every: int = 1,
) -> dict[str, Any]:
    """Record one episode of ``agent`` to an MP4 (imageio + imageio-ffmpeg).

    Headless rendering needs ``MUJOCO_GL=egl`` (or ``osmesa``) in the environment before MuJoCo is
    imported (importing ``hebb_agents`` imports it); without an OpenGL context this raises a
    ``ValueError`` that says so. ``every`` keeps one frame in ``every`` (software rendering is ~0.3 s a
    frame); the video plays at the environment's real-time rate divided by ``every``.
    The video is written beside ``path`` and renamed over it once complete, so a failed recording
    leaves an existing file untouched.
    Returns the episode's return, distance (NaN if the env reports no ``x_position``), frame count and path.
    """
    import imageio.v2 as imageio

    if steps < 1 or every < 1:
        raise ValueError(f"steps and every must be >= 1, got steps={steps}, every={every}")
    width, height = (int(v) for v in size)
    if width < 1 or height < 1:
        raise ValueError(f"size (--size W H) must be positive pixel counts, got {width} x {height}")
    check_spaces(agent.spaces, env_id, env_kwargs, source=f"agent {agent.name!r}")
    from hebb_envs.rendering import load_triton_before_opengl  # not at import: CartPole needs no MuJoCo

    load_triton_before_opengl()
    kwargs = {**dict(env_kwargs or {}), "render_mode": "rgb_array"}
    try:  # MuJoCo envs take a frame size; others (CartPole, ...) render at their own size
        env = make_env(env_id, **kwargs, width=width, height=height)
        sized = True
    except ValueError:
        env = make_env(env_id, **kwargs)
        sized = False
        if (width, height) != VIDEO_SIZE:
            warnings.warn(
                f"{env_id} renders at its own frame size; size {width} x {height} (--size) is ignored: "
                "it applies to MuJoCo envs",
                stacklevel=2,
            )
    path = Path(path)
    partial = path.with_name(f".{path.stem}.{os.getpid()}.partial{path.suffix}")
    frames = 0
    try:
        if sized:
            largest = max_frame_size()
            if max(width, height) > largest:
                raise ValueError(
                    f"size (--size W H) must be within 1..{largest} pixels each (the largest frame "
                    f"this OpenGL renders offscreen), got {width} x {height}"
                )
        env = _with_damage(env, damage, damage_step)
        fps = float(env.metadata.get("render_fps", 20)) / every
        obs, info = env.reset(seed=int(seed))
        x0 = info.get("x_position", np.nan)
        x = x0
        agent.start([int(seed)])
        total = 0.0
        first = env.render()
        path.parent.mkdir(parents=True, exist_ok=True)
        with imageio.get_writer(partial, fps=fps, codec="libx264", macro_block_size=8) as writer:
            writer.append_data(first)
            frames += 1
            for t in range(steps):
                action = agent.act(np.asarray(obs)[None])[0]
                obs, reward, terminated, truncated, info = env.step(action)
                total += float(reward)
                x = info.get("x_position", x)
                if (t + 1) % every == 0:
                    writer.append_data(env.render())
                    frames += 1
                if terminated or truncated:
                    break
        if not partial.exists() or partial.stat().st_size == 0:
            raise ValueError(f"ffmpeg wrote no video for {path} (see its messages above)")
        partial.replace(path)
    finally:
        env.close()
        partial.unlink(missing_ok=True)
    height, width = np.shape(first)[:2]
    return {
        "path": str(path),
        "return": total,
        "distance": float(x - x0),
        "frames": frames,
        "size": (int(width), int(height)),
    }


def add_video_command(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``hebb video``: record a saved agent on a morphology to MP4."""
    from hebb_agents.cli import natural, positive

    p = subparsers.add_parser("video", help="record a saved agent on a morphology to MP4")
    p.add_argument("agent", type=Path, help="ES run folder, policy .npz, or baseline folder")
    p.add_argument("--env", required=True, help="e.g. hebb/HalfCheetahDamage-v0")
    p.add_argument("--damage", default=None, help="catalogue name of the body (default: intact)")
    p.add_argument(
        "--damage-at", type=positive, default=None, help="switch to --damage-to after this many steps"
    )
    p.add_argument("--damage-to", default=None, help="body to switch to mid-episode")
    p.add_argument("--steps", type=positive, default=300)
    p.add_argument("--seed", type=natural, default=0)
    p.add_argument("--every", type=positive, default=1, help="keep one frame in this many")
    p.add_argument(
        "--size",
        type=int,
        nargs=2,
        default=VIDEO_SIZE,
        metavar=("W", "H"),
        help="frame size in pixels (MuJoCo envs; others render at their own size)",
    )
    p.add_argument("--out", type=Path, required=True, help="output .mp4")
    p.set_defaults(func=_video_command)
    return p


def _video_command(args: argparse.Namespace) -> int:
    if (args.damage_at is None) != (args.damage_to is None):
        raise ValueError("give both --damage-at and --damage-to, or neither")
    if args.damage_at is not None and args.damage_at >= args.steps:
        raise ValueError(
            f"--damage-at must be below --steps ({args.steps}) for the damage to happen, got {args.damage_at}"
        )
    if args.out.suffix.lower() != ".mp4":
        raise ValueError(f"--out names the video file and must end in .mp4, got {args.out}")
    agent = load_agent(args.agent, name=str(args.agent))
    env_kwargs = {"damage": args.damage} if args.damage else {}
    result = record_video(
        agent,
        args.env,
        args.out,
        env_kwargs,
        steps=args.steps,
        seed=args.seed,
        damage_step=args.damage_at,
        damage=args.damage_to,
        size=tuple(args.size),
        every=args.every,
    )
    distance = f", distance {result['distance']:.2f}" if math.isfinite(result["distance"]) else ""
    width, height = result["size"]
    print(
        f"wrote {result['path']}: {result['frames']} frames of {width} x {height}, "
        f"return {result['return']:.2f}{distance}"
    )
    return 0
