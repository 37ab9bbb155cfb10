"""Fitness of a population: ``P`` environment copies stepped in lockstep.

Each step makes one batched policy call for every member still running (plasticity
included) and steps the running members' environments. Finished members are dropped from the
network's arrays once half of them are done, so early stopping saves compute as well as
simulation. Every random draw of member ``m`` in episode ``e`` of generation ``g`` comes from
``member_rng(seed, g, key, e, ...)`` with ``key = m`` (or ``m // 2``, its antithetic pair, with
``paired_seeds``): results do not depend on how a population is split over workers.

Environments are stepped beneath gymnasium's bookkeeping wrappers (see :func:`fast_step`). Where
the environment class can step a batch of its envs itself (``cls.batch(envs)``, as the ``hebb/``
locomotion envs do, see :class:`hebb_envs.locomotion.EnvBatch`), one call steps every running
member, with the same results; otherwise each member's env is stepped in turn. Per-member
bookkeeping (returns, lengths, early stopping) is array arithmetic over the running members.
With ``compiled_episodes`` (opt-in; other rounding, see :mod:`hebb_agents.compiled_episodes`) each
member's whole episode runs as one compiled call instead, one member after another.
"""

from __future__ import annotations

import contextlib
import difflib
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.wrappers import OrderEnforcing, PassiveEnvChecker, TimeLimit

from hebb_agents import compiled_episodes
from hebb_agents.policy import EvolvablePolicy, make_policy, member_rng

EARLY_STOPS = ("none", "locomotion", "negative_reward")
# early_stop "locomotion": after this many steps, stop once this many consecutive steps went backwards
LOCOMOTION_STOP = (200, 30)
# lockstep_size "auto": members per group whose evolved parameters (float32) fill at most this many
# bytes. Measured on HalfCheetah (~54K parameters, 215 KB a member): groups of 8-16 ran 1.15-1.18x
# faster per member-step than all 100-200 members at once, whose rule terms no cache holds. Since the
# env's physics became one compiled call per group step, the per-call Python weighs more against the
# cache: groups of 18 ran 1.135x faster than 9 (median of 16 interleaved rounds, 15 faster, 1 equal), 27,
# 36 and 72 no faster than 18, and Ant's 16 1.10x faster than 8. 4 MiB: 19 HalfCheetahs, 17 Ants.
LOCKSTEP_BYTES = 4 * 2**20
_MISSING = object()  # an info key a member's step did not report
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
        ``info["x_position"]``), or the name of an ``info`` key summed over the episode. Sums are
        taken in float64 (an env's float32 rewards too).
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
    :param batch_envs: step a group's environments with one call when their class offers
        ``batch`` (the ``hebb/`` locomotion envs); results are identical either way, so ``False``
        only serves to measure what it saves.
    :param compiled_episodes: run each member's whole episode as one compiled call (see
        :mod:`hebb_agents.compiled_episodes`: the ``hebb/`` Ant and HalfCheetah with a plain Hebbian
        policy; numba). Faster, but its forward pass rounds differently, so fitness values differ
        from the default path's; off by default.
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
    batch_envs: bool = True
    compiled_episodes: bool = False

    def __post_init__(self) -> None:
        if self.early_stop not in EARLY_STOPS:
            raise ValueError(f"unknown early_stop {self.early_stop!r}; accepted: {', '.join(EARLY_STOPS)}")
        if self.episodes < 1:
            raise ValueError(f"episodes must be >= 1, got {self.episodes}")
        self.lockstep_size = parse_lockstep_size(self.lockstep_size)
        if self.compiled_episodes not in (True, False):  # bool, numpy bool, 0 or 1
            raise ValueError(f"compiled_episodes must be true or false, got {self.compiled_episodes!r}")
        self.compiled_episodes = bool(self.compiled_episodes)
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
    if env_id not in gym.registry:  # Gymnasium's own ids need no MuJoCo import (nor a working MUJOCO_GL)
        import hebb_envs  # noqa: F401  (registers the hebb/ ids)

    quiet = contextlib.nullcontext()
    if "mujoco" in str(getattr(gym.registry.get(env_id), "entry_point", "")):  # HalfCheetah-v5's XML
        from hebb_envs.locomotion import without_settotalmass_warning

        quiet = without_settotalmass_warning()
    try:
        with quiet:
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
        accepted = _env_keywords(env_id)
        hint = f"; accepted: {', '.join(sorted(accepted))}" if accepted else ""
        raise ValueError(f"{env_id} does not accept the keyword arguments {kwargs}: {err}{hint}") from err
    except Exception as err:  # a constructor refusing a value (e.g. frame_skip=0 divides by zero)
        raise ValueError(f"{env_id} could not be built with {kwargs}: {type(err).__name__}: {err}") from err


FITNESS_AUTO = "auto"  # distance where the env reports info["x_position"], else return


def resolve_fitness(fitness: str | None, env_id: str, env_kwargs: dict[str, Any]) -> str:
    """Check ``fitness`` against what ``env_id`` reports, before any worker starts.

    ``auto`` (or ``None``) picks ``distance`` for environments that report ``info["x_position"]``
    (locomotion) and ``return`` otherwise; an ``info`` key must appear in the info of a step.
    """
    if fitness == "return":
        return fitness
    if not isinstance(fitness, str) and fitness is not None:
        raise ValueError(f"fitness must be a name (auto, return, distance or an info key), got {fitness!r}")
    env = make_env(env_id, **env_kwargs)
    try:
        _, info = env.reset(seed=0)
        walks = "x_position" in info
        if fitness in (None, FITNESS_AUTO):
            return "distance" if walks else "return"
        if fitness == "distance" and walks:
            return fitness
        env.action_space.seed(0)
        step_info = env.step(env.action_space.sample())[4]
    finally:
        env.close()
    numeric = sorted(key for key, value in step_info.items() if is_number(value))
    if fitness != "distance" and fitness in numeric:
        return fitness
    accepted = [FITNESS_AUTO, "return", *(["distance"] if walks else []), *numeric]
    raise ValueError(f"fitness {fitness!r} is not available on {env_id}; accepted: {', '.join(accepted)}")


def _env_keywords(env_id: str) -> set[str]:
    """Keyword arguments ``gym.make(env_id, ...)`` takes: ``gym.make``'s own and the env class's,
    following ``**kwargs`` up its base classes (the damaged envs pass theirs on to Gymnasium's)."""
    try:
        creator = gym.spec(env_id).entry_point
        cls = gym.envs.registration.load_env_creator(creator) if isinstance(creator, str) else creator
    except Exception:  # an id without a loadable class: no list rather than a second error
        return set()
    names = {"max_episode_steps", "render_mode", "disable_env_checker"}
    for klass in getattr(cls, "__mro__", (cls,)):
        init = klass.__dict__.get("__init__") if isinstance(klass, type) else klass
        if init is None:
            continue
        parameters = inspect.signature(init).parameters.values()
        names |= {p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
        if not any(p.kind is p.VAR_KEYWORD for p in parameters):
            break
    # MujocoEnv's model_path and observation_space are set by the robot classes themselves, and the
    # damaged envs set some of Gymnasium's arguments too (their fixed_kwargs)
    return names - {"self", "model_path", "observation_space", *getattr(cls, "fixed_kwargs", ())}


def build_policy(spec: RolloutSpec, env: gym.Env) -> EvolvablePolicy:
    """The policy described by ``spec`` for ``env``'s spaces."""
    return make_policy(spec.policy, env.observation_space, env.action_space, **spec.policy_config)


def check_episode_cap(env: gym.Env, limit: int | None, env_id: str) -> None:
    """Refuse a step cap that ends every episode of a fixed-length task (the memory task's
    ``episode_length``) before its end, where the only reward is paid: it would score 0 every time."""
    length = getattr(env.unwrapped, "episode_length", None)
    if limit is not None and isinstance(length, int) and limit < length:
        raise ValueError(
            f"a cap of {limit} steps (max_steps or the env's max_episode_steps) ends every {env_id} "
            f"episode before its last step ({length}: the query, where the only reward is paid), so "
            f"every episode would score 0; accepted: caps >= {length}, or none"
        )


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
        self._batch: Any = None  # the env class's batch of self.envs, when every env can be batched
        self._ensure_envs(1)
        check_episode_cap(self.envs[0], self._limits[0], spec.env_id)
        self.policy = build_policy(spec, self.envs[0])
        if spec.compiled_episodes:
            reasons = compiled_episodes.unsupported(
                self.policy, self.envs[0], spec.fitness, spec.early_stop, self._steps[0]
            )
            if reasons:
                raise ValueError(
                    f"compiled_episodes cannot run {spec.policy} policies on {spec.env_id} here: "
                    f"{'; '.join(reasons)} (see hebb_agents.compiled_episodes)"
                )

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
            self._batch = None

    def _batched(self) -> Any:
        """The env class's batch of every env (see the module docstring), or None."""
        if self._batch is None and self.spec.batch_envs:
            inner = [env.unwrapped for env in self.envs]
            cls = type(inner[0])
            batchable = callable(getattr(cls, "batch", None)) and all(
                step == env.step and type(env) is cls for step, env in zip(self._steps, inner)
            )
            self._batch = cls.batch(inner) if batchable else False
        return self._batch or None

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
        run = self._compiled_episodes if self.spec.compiled_episodes else self._episode
        for lo in range(0, population, group):
            members = slice(lo, lo + group)
            for episode in range(self.spec.episodes):
                f, r, n, steps = run(params[members], member_ids[members], seed, generation, episode)
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

    def _start(
        self, params: np.ndarray, member_ids: np.ndarray, seed: int, generation: int, episode: int
    ) -> list[int]:
        """Load ``params`` into the policy and draw each member's initial weights; returns the
        members' stream keys (an antithetic pair (2j, 2j + 1) shares one when paired_seeds is on)."""
        keys = [int(m) // 2 if self.spec.paired_seeds else int(m) for m in member_ids]
        weight_seeds = [
            int(member_rng(seed, generation, key, episode, 1).integers(2**63 - 1)) for key in keys
        ]
        self.policy.set_params(params)
        self.policy.reset(weight_seeds)
        return keys

    def _reset(self, env: gym.Env, key: int, seed: int, generation: int, episode: int) -> tuple:
        """Reset ``env`` for the member of stream ``key``; returns its observation and start x."""
        env_seed = int(member_rng(seed, generation, key, episode, 0).integers(2**31 - 1))
        obs, info = env.reset(seed=env_seed)
        if self.spec.fitness == "distance" and "x_position" not in info:
            raise ValueError(
                f"fitness 'distance' needs info['x_position'], which {self.spec.env_id} does not report; "
                "use fitness 'return' or an info key"
            )
        return obs, info.get("x_position", 0.0)

    def _compiled_episodes(
        self, params: np.ndarray, member_ids: np.ndarray, seed: int, generation: int, episode: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        """:meth:`_episode` as compiled episodes (see :mod:`hebb_agents.compiled_episodes`): one env,
        one member after another."""
        population = params.shape[0]
        keys = self._start(params, member_ids, seed, generation, episode)
        returns, lengths, fitness = np.zeros(population), np.zeros(population, np.int64), np.zeros(population)
        env = self.envs[0]
        stop = LOCOMOTION_STOP if self.spec.early_stop == "locomotion" else None
        for p, key in enumerate(keys):
            obs, x_start = self._reset(env, key, seed, generation, episode)
            total, x_last, steps, diverged = compiled_episodes.run_episode(
                self.policy, p, env, obs, self._limits[0], stop
            )
            returns[p], lengths[p] = total, steps
            distance = x_last - x_start
            fitness[p] = np.nan if diverged else (total if self.spec.fitness == "return" else distance)
        return fitness, returns, lengths, int(lengths.sum())

    def _episode(
        self, params: np.ndarray, member_ids: np.ndarray, seed: int, generation: int, episode: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        spec = self.spec
        population = params.shape[0]
        self._ensure_envs(population)
        policy = self.policy
        keys = self._start(params, member_ids, seed, generation, episode)
        obs = []
        x_start = [0.0] * population
        for p, key in enumerate(keys):
            o, x_start[p] = self._reset(self.envs[p], key, seed, generation, episode)
            obs.append(o)
        # Per-member state: arrays indexed by member; the policy's rows hold the members in row_member.
        obs_rows = np.stack(obs)  # (rows, obs_dim): observation of the member held by each policy row
        returns = np.zeros(population)
        score = np.zeros(population)  # summed info key, when fitness names one
        x_last = np.array(x_start, dtype=np.float64)
        lengths = np.zeros(population, dtype=np.int64)
        bad_streak = np.zeros(population, dtype=np.int64)
        diverged = np.zeros(population, dtype=bool)
        limits = np.array([np.iinfo(np.int64).max if n is None else n for n in self._limits[:population]])
        row_member = np.arange(population)  # member held by each row of the policy's arrays
        row_running = np.ones(population, dtype=bool)
        steps = 0
        batch = self._batched()
        active = population
        while active:
            actions = policy.act(obs_rows)  # (rows, act_dim)
            finite = np.isfinite(policy.last_output).all(axis=1)
            diverged[row_member[row_running & ~finite]] = True
            row_running &= finite
            rows = np.flatnonzero(row_running)
            if rows.size == 0:
                break
            members = row_member[rows]
            if batch is not None:
                o, reward, terminated, truncated, info = batch.step(actions[rows], members)
            else:
                o, reward, terminated, truncated, info = self._step_each(members, actions[rows])
            reward = np.asarray(reward, dtype=np.float64)
            steps += rows.size
            lengths[members] += 1
            returns[members] += reward
            obs_rows[rows] = o
            if spec.fitness not in ("return", "distance"):
                score[members] += self._info_column(info, spec.fitness, rows.size, required=True)[0]
            if spec.fitness == "distance":
                x, reported = self._info_column(info, "x_position", rows.size)
                x_last[members] = np.where(reported, x, x_last[members])  # a member keeps its last one
            done = np.asarray(terminated, dtype=bool) | truncated | (lengths[members] >= limits[members])
            if spec.early_stop != "none":
                done |= self._early_stop(members, reward, info, lengths[members], bad_streak)
            row_running[rows[done]] = False
            active = int(row_running.sum())
            # Drop finished members once half the rows are idle, so they cost nothing further.
            if active and active <= len(row_member) // 2 and policy.encoder is None:
                policy.select(np.flatnonzero(row_running))
                obs_rows = obs_rows[row_running]
                row_member = row_member[row_running]
                row_running = row_running[row_running]
        if spec.fitness == "return":
            fitness = returns.copy()
        elif spec.fitness == "distance":
            fitness = x_last - np.array(x_start, dtype=np.float64)
        else:
            fitness = score
        fitness[diverged] = np.nan
        return fitness, returns, lengths, steps

    def _step_each(self, members: np.ndarray, actions: np.ndarray) -> tuple:
        """Step each member's env in turn; returns the batch form (``info``: one list per key, with
        :data:`_MISSING` where a member's info lacks the key)."""
        obs, rewards, terminated, truncated, infos = [], [], [], [], []
        for p, action in zip(members.tolist(), actions):
            o, r, term, trunc, info = self._steps[p](action)
            obs.append(o)
            rewards.append(r)
            terminated.append(term)
            truncated.append(trunc)
            infos.append(info)
        keys = dict.fromkeys(key for item in infos for key in item)  # every key, in first-seen order
        info = {key: [item.get(key, _MISSING) for item in infos] for key in keys}
        return np.stack(obs), rewards, np.array(terminated, dtype=bool), np.array(truncated, dtype=bool), info

    def _info_column(
        self, info: dict[str, Any], key: str, count: int, required: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """``info[key]`` of the ``count`` stepped members as float64, and which reported a number there.

        With ``required``, a member without a number there is an error that lists the usable keys.
        """
        values = info.get(key, [_MISSING] * count)
        if isinstance(values, np.ndarray) and values.dtype.kind in "iuf":
            column, reported = values.astype(np.float64, copy=False), np.ones(len(values), dtype=bool)
        else:
            reported = np.array([is_number(value) for value in values], dtype=bool)
            column = np.array(
                [value if ok else np.nan for value, ok in zip(values, reported)], dtype=np.float64
            )
        if required and not reported.all():
            walks = ["distance"] if "x_position" in info else []
            numeric = sorted(k for k in info if k != key and self._info_column(info, k, count)[1].any())
            raise ValueError(
                f"fitness {key!r} is not a numeric key of {self.spec.env_id}'s info; "
                f"accepted: {', '.join(['return', *walks, *numeric])}"
            )
        return column, reported

    def _early_stop(
        self,
        members: np.ndarray,
        reward: np.ndarray,
        info: dict[str, Any],
        lengths: np.ndarray,
        streak: np.ndarray,
    ) -> np.ndarray:
        """Which stepped members stop early; updates their ``streak`` of bad steps."""
        if self.spec.early_stop == "locomotion":
            # forward progress per member: its x_velocity, else its reward_forward, else its reward
            progress, has_velocity = self._info_column(info, "x_velocity", len(members))
            if not has_velocity.all():  # (the locomotion envs report it: no second column per step)
                forward, has_forward = self._info_column(info, "reward_forward", len(members))
                progress = np.where(has_velocity, progress, np.where(has_forward, forward, reward))
            bad = progress < 0
            streak[members] = np.where(bad, streak[members] + 1, 0)
            after, streak_length = LOCOMOTION_STOP
            return (lengths > after) & (streak[members] >= streak_length)
        streak[members] = np.where(reward < 0, streak[members] + 1, 0)
        return streak[members] >= 20
