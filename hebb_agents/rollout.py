"""Fitness of a population: ``P`` environment copies stepped in lockstep.

Each step makes one batched policy call for every member still running (plasticity
included) and one ``env.step`` per running member. Finished members are dropped from the
network's arrays once half of them are done, so early stopping saves compute as well as
simulation. Every random draw of member ``m`` in episode ``e`` of generation ``g`` comes from
``member_rng(seed, g, key, e, ...)`` with ``key = m`` (or ``m // 2``, its antithetic pair, with
``paired_seeds``): results do not depend on how a population is split over workers.

Per member-step the loop makes one call into the environment beneath gymnasium's bookkeeping
wrappers (see :func:`fast_step`) and touches plain Python lists, not numpy scalars.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.wrappers import OrderEnforcing, PassiveEnvChecker, TimeLimit

from hebb_agents.policy import EvolvablePolicy, make_policy, member_rng

EARLY_STOPS = ("none", "locomotion", "negative_reward")
# lockstep_size "auto": members per group whose evolved parameters (float32) fill at most this many
# bytes. Measured on HalfCheetah (~54K parameters, 215 KB a member): groups of 8-16 ran 1.15-1.18x
# faster per member-step than all 100-200 members at once, whose rule terms no cache holds.
LOCKSTEP_BYTES = 2 * 2**20
# Wrappers gym.make adds that only count, check or order calls; the rollout steps beneath them.
_BOOKKEEPING_WRAPPERS = (TimeLimit, OrderEnforcing, PassiveEnvChecker)


@dataclass
class RolloutSpec:
    """Everything a worker needs to build its environments and policy (picklable, JSON-able).

    :param env_id: Gymnasium id (``hebb/...`` ids are registered by importing ``hebb_envs``).
    :param env_kwargs: keyword arguments for ``gym.make``.
    :param policy: ``hebbian`` or ``static``.
    :param policy_config: keyword arguments of the policy class.
    :param episodes: episodes per evaluation; fitness is their mean.
    :param max_steps: cap on steps per episode (``None``: the environment's own limit).
    :param fitness: ``return`` (sum of rewards), ``distance`` (final minus initial
        ``info["x_position"]``), or the name of an ``info`` key summed over the episode.
    :param early_stop: ``none``; ``locomotion`` (the reference's rule: after step 200, stop once
        30 consecutive steps made negative forward progress); ``negative_reward`` (stop after 20
        consecutive negative rewards, the reference's CarRacing rule).
    :param paired_seeds: members ``2j`` and ``2j + 1`` (an antithetic pair ``mean +- sigma*eps``)
        share environment seeds and initial weights, so their fitness difference measures ``eps``
        and not the luck of the draw (common random numbers).
    :param lockstep_size: members a worker steps together: its share of the population runs as
        consecutive groups of this many, on as many environment copies. ``auto``: groups whose
        evolved parameters fill at most :data:`LOCKSTEP_BYTES` (whole shares for small networks
        and for policies with an encoder); ``all``: the whole share at once. Results do not depend
        on it, except with a torch encoder, whose batched float32 arithmetic may round differently
        at another batch size (as with another worker count).
    """

    env_id: str
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    policy: str = "hebbian"
    policy_config: dict[str, Any] = field(default_factory=dict)
    episodes: int = 1
    max_steps: int | None = None
    fitness: str = "return"
    early_stop: str = "none"
    paired_seeds: bool = True
    lockstep_size: int | str = "auto"

    def __post_init__(self) -> None:
        if self.early_stop not in EARLY_STOPS:
            raise ValueError(f"unknown early_stop {self.early_stop!r}; accepted: {', '.join(EARLY_STOPS)}")
        if self.episodes < 1:
            raise ValueError(f"episodes must be >= 1, got {self.episodes}")
        self.lockstep_size = parse_lockstep_size(self.lockstep_size)
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1 or None, got {self.max_steps}")


@dataclass
class EvalResult:
    """Outcome of evaluating ``P`` members: per-member fitness and episode statistics."""

    fitness: np.ndarray  # (P,) mean over episodes; NaN where the network diverged
    returns: np.ndarray  # (P,) mean episode return
    lengths: np.ndarray  # (P,) mean episode length
    env_steps: int  # environment steps taken in total

    @staticmethod
    def concatenate(parts: list[EvalResult]) -> EvalResult:
        return EvalResult(
            fitness=np.concatenate([p.fitness for p in parts]),
            returns=np.concatenate([p.returns for p in parts]),
            lengths=np.concatenate([p.lengths for p in parts]),
            env_steps=sum(p.env_steps for p in parts),
        )


def parse_lockstep_size(value: int | str) -> int | str:
    """``auto``, ``all`` or a positive integer (also given as text); anything else is an error."""
    if value in ("auto", "all"):
        return value
    try:
        size = int(value)
    except (TypeError, ValueError):
        size = 0
    if isinstance(value, bool) or size < 1 or str(size) != str(value).strip():
        raise ValueError(f"lockstep_size must be 'auto', 'all' or an integer >= 1, got {value!r}")
    return size


def is_number(value: Any) -> bool:
    """True for a real number (Python or NumPy scalar, not bool): what a fitness can sum."""
    real = isinstance(value, (int, float, np.integer, np.floating))
    return real and not isinstance(value, (bool, np.bool_))


def make_env(env_id: str, **kwargs: Any) -> gym.Env:
    """``gym.make`` with an error that lists the registered ids when ``env_id`` is unknown."""
    import hebb_envs  # noqa: F401  (registers the hebb/ ids)

    try:
        return gym.make(env_id, **kwargs)
    except gym.error.Error as err:
        if env_id not in gym.registry:
            close = sorted(
                {k for k in gym.registry if k.split("/")[-1].split("-")[0].lower() in env_id.lower()}
                | set(difflib.get_close_matches(env_id, list(gym.registry), n=5, cutoff=0.8))
            )
            hebb = sorted(k for k in gym.registry if k.startswith("hebb/"))
            raise ValueError(
                f"unknown environment id {env_id!r}; hebb ids: {', '.join(hebb) or 'none'}; "
                f"similar registered ids: {', '.join(close) or 'none'} (see gymnasium.registry for all)"
            ) from err
        raise
    except TypeError as err:  # an env constructor that does not take one of the kwargs
        raise ValueError(f"{env_id} does not accept the keyword arguments {kwargs}: {err}") from err
    except Exception as err:  # a constructor refusing a value (e.g. frame_skip=0 divides by zero)
        raise ValueError(f"{env_id} could not be built with {kwargs}: {type(err).__name__}: {err}") from err


def build_policy(spec: RolloutSpec, env: gym.Env) -> EvolvablePolicy:
    """The policy described by ``spec`` for ``env``'s spaces."""
    return make_policy(spec.policy, env.observation_space, env.action_space, **spec.policy_config)


def fast_step(env: gym.Env) -> tuple[Callable[[Any], tuple], int | None]:
    """The step function beneath gymnasium's bookkeeping wrappers, and the time limit they enforced.

    ``gym.make`` wraps every environment in ``TimeLimit``, ``OrderEnforcing`` and
    ``PassiveEnvChecker``; together they cost ~10 us per step, a tenth of a HalfCheetah physics
    step. The rollout steps the environment beneath them and applies the ``TimeLimit`` itself
    (``truncated`` once the episode reaches ``max_episode_steps``), so episodes, rewards and
    ``info`` are unchanged. Any other wrapper stays in the path. Resets still go through the full
    stack, which re-arms the wrappers' counters and checks.
    """
    limit = None
    inner = env
    while isinstance(inner, _BOOKKEEPING_WRAPPERS):
        if isinstance(inner, TimeLimit):
            limit = int(inner._max_episode_steps)
        inner = inner.env
    return inner.step, limit


class LockstepEvaluator:
    """Evaluates populations on environment copies it keeps between calls."""

    def __init__(self, spec: RolloutSpec) -> None:
        self.spec = spec
        self.envs: list[gym.Env] = []
        self._steps: list[Callable[[Any], tuple]] = []  # per env: step beneath the bookkeeping wrappers
        self._limits: list[int | None] = []  # per env: step limit (TimeLimit and spec.max_steps)
        self._ensure_envs(1)
        self.policy = build_policy(spec, self.envs[0])

    @property
    def num_params(self) -> int:
        return self.policy.num_params

    def _ensure_envs(self, n: int) -> None:
        while len(self.envs) < n:
            env = make_env(self.spec.env_id, **self.spec.env_kwargs)
            step, limit = fast_step(env)
            if self.spec.max_steps is not None:
                limit = self.spec.max_steps if limit is None else min(limit, self.spec.max_steps)
            self.envs.append(env)
            self._steps.append(step)
            self._limits.append(limit)

    def evaluate(self, params: np.ndarray, member_ids: np.ndarray, seed: int, generation: int) -> EvalResult:
        """Fitness of ``params`` ``(P, num_params)``; ``member_ids`` are the members' global indices."""
        params = np.asarray(params, dtype=np.float32)
        member_ids = np.asarray(member_ids)
        population = params.shape[0]
        fitness = np.zeros(population)
        returns = np.zeros(population)
        lengths = np.zeros(population)
        total_steps = 0
        group = self.group_size(population)
        for lo in range(0, population, group):
            members = slice(lo, lo + group)
            for episode in range(self.spec.episodes):
                f, r, n, steps = self._episode(
                    params[members], member_ids[members], seed, generation, episode
                )
                fitness[members] += f
                returns[members] += r
                lengths[members] += n
                total_steps += steps
        k = self.spec.episodes
        return EvalResult(fitness / k, returns / k, lengths / k, total_steps)

    def group_size(self, population: int) -> int:
        """Members stepped together when evaluating ``population`` of them (see ``lockstep_size``)."""
        size = self.spec.lockstep_size
        # an encoder's torch batches may round differently at another size: auto keeps one group
        if size == "all" or (size == "auto" and self.policy.encoder is not None):
            return max(1, population)
        if size == "auto":
            size = LOCKSTEP_BYTES // (4 * max(1, self.num_params))
        return max(1, min(population, int(size)))

    def _episode(
        self, params: np.ndarray, member_ids: np.ndarray, seed: int, generation: int, episode: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        spec = self.spec
        population = params.shape[0]
        self._ensure_envs(population)
        policy = self.policy
        policy.set_params(params)
        # An antithetic pair (2j, 2j + 1) draws from one stream key when paired_seeds is on.
        keys = [int(m) // 2 if spec.paired_seeds else int(m) for m in member_ids]
        weight_seeds = [
            int(member_rng(seed, generation, key, episode, 1).integers(2**63 - 1)) for key in keys
        ]
        policy.reset(weight_seeds)
        obs = []
        x_start = [0.0] * population
        x_last = [0.0] * population
        for p, key in enumerate(keys):
            env_seed = int(member_rng(seed, generation, key, episode, 0).integers(2**31 - 1))
            o, info = self.envs[p].reset(seed=env_seed)
            obs.append(o)
            if spec.fitness == "distance" and "x_position" not in info:
                raise ValueError(
                    f"fitness 'distance' needs info['x_position'], which {spec.env_id} does not report; "
                    "use fitness 'return' or an info key"
                )
            x_start[p] = x_last[p] = info.get("x_position", 0.0)
        # Per-member state lives in Python lists: the loop below touches it once per member-step,
        # where numpy scalar indexing would cost more than the arithmetic.
        obs_rows = np.stack(obs)  # (rows, obs_dim): observation of the member held by each policy row
        returns = [0.0] * population
        score = [0.0] * population  # summed info key, when fitness names one
        lengths = [0] * population
        bad_streak = [0] * population
        diverged = [False] * population
        running = [True] * population
        members = list(range(population))  # member held by each row of the policy's arrays
        steps = 0
        sum_key = spec.fitness not in ("return", "distance")
        track_x = spec.fitness == "distance"
        early_stop = spec.early_stop != "none"
        step_fns, limits = self._steps, self._limits
        active = population
        while active:
            actions = policy.act(obs_rows)  # (rows, act_dim)
            finite = np.isfinite(policy.last_output).all(axis=1).tolist()
            for row, p in enumerate(members):
                if not running[p]:
                    continue
                if not finite[row]:
                    diverged[p] = True
                    running[p] = False
                    active -= 1
                    continue
                o, r, terminated, truncated, info = step_fns[p](actions[row])
                steps += 1
                length = lengths[p] = lengths[p] + 1
                returns[p] += r
                obs_rows[row] = o
                if sum_key:
                    value = info.get(spec.fitness)
                    if not is_number(value):
                        walks = ["distance"] if "x_position" in info else []
                        numeric = sorted(key for key, item in info.items() if is_number(item))
                        raise ValueError(
                            f"fitness {spec.fitness!r} is not a numeric key of {spec.env_id}'s info; "
                            f"accepted: {', '.join(['return', *walks, *numeric])}"
                        )
                    score[p] += value
                if track_x:
                    x_last[p] = info.get("x_position", x_last[p])
                done = terminated or truncated or (limits[p] is not None and length >= limits[p])
                if not done and early_stop:
                    done = self._early_stop(p, r, info, length, bad_streak)
                if done:
                    running[p] = False
                    active -= 1
            # Drop finished members once half the rows are idle, so they cost nothing further.
            if active and active <= len(members) // 2 and policy.encoder is None:
                keep = np.array([running[p] for p in members])
                policy.select(np.flatnonzero(keep))
                obs_rows = obs_rows[keep]
                members = [p for p in members if running[p]]
        if spec.fitness == "return":
            fitness = np.array(returns, dtype=np.float64)
        elif spec.fitness == "distance":
            fitness = np.array(x_last, dtype=np.float64) - np.array(x_start, dtype=np.float64)
        else:
            fitness = np.array(score, dtype=np.float64)
        fitness[np.array(diverged, dtype=bool)] = np.nan
        return fitness, np.array(returns), np.array(lengths, dtype=np.int64), steps

    def _early_stop(self, p: int, reward: float, info: dict, t: int, bad_streak: list[int]) -> bool:
        if self.spec.early_stop == "locomotion":
            progress = info.get("x_velocity", info.get("reward_forward", reward))
            bad_streak[p] = bad_streak[p] + 1 if progress < 0 else 0
            return bool(t > 200 and bad_streak[p] >= 30)
        bad_streak[p] = bad_streak[p] + 1 if reward < 0 else 0
        return bool(bad_streak[p] >= 20)
