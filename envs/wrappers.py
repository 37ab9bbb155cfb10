"""Damage in the middle of an episode: the body changes while the robot keeps moving.

:class:`MidEpisodeDamage` wraps a damaged-locomotion env (``hebb/AntDamage-v0``,
``hebb/HalfCheetahDamage-v0``). Each episode starts on the env's own body (``damage=`` of the env,
usually intact); at step ``t`` the body is swapped for the damaged one. The full integration state
(time, qpos, qvel, act, ctrl, warm start) is copied unchanged into the damaged model's data, so the
trajectory is continuous and only the dynamics change from that step on. This is what "adapts online"
means: a plastic controller must notice and cope without a reset.

The observation-history wrapper lives in :mod:`hebb_envs.history` and is re-exported here, so every
wrapper of the package can be imported from one place.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from hebb_envs._checks import check_int
from hebb_envs.history import ObservationHistory
from hebb_envs.morphology import Morphology, draw_from_pool, resolve_pool

__all__ = ["MidEpisodeDamage", "ObservationHistory"]


class MidEpisodeDamage(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Apply a damage at a fixed or sampled step of every episode.

    ==========  ======================  =========  =======================================================
    parameter   type                    default    meaning
    ==========  ======================  =========  =======================================================
    env         gym.Env                            an env whose ``unwrapped`` is a damage env (has
                                                   ``set_damage``), e.g. ``gym.make("hebb/AntDamage-v0")``
    damage      name, spec(s), split,              the body switched to; a split name or a list draws one
                or list                            per episode from the env's seeded generator
    at_step     int or (int, int)       200        the step (1-based) whose physics first runs on the
                                                   damaged body; a pair draws it uniformly from
                                                   [low, high] (inclusive) per episode
    ==========  ======================  =========  =======================================================

    ``info`` gains ``damage_step`` (this episode's switch step) on reset and every step, and
    ``damage_applied`` (True only on the step where the body changed). Steps ``1 .. at_step - 1`` run on
    the original body; if the episode ends first, no damage happens.

    The constructor arguments are recorded in ``env.spec``, so ``gym.make(env.spec)`` rebuilds the
    wrapped env and Gymnasium's ``check_env`` accepts it.
    """

    def __init__(self, env: gym.Env, damage: Any, at_step: int | tuple[int, int] = 200) -> None:
        gym.utils.RecordConstructorArgs.__init__(self, damage=damage, at_step=at_step)
        gym.Wrapper.__init__(self, env)
        base = env.unwrapped
        if not hasattr(base, "set_damage") or not hasattr(base, "robot"):
            raise ValueError(
                f"MidEpisodeDamage needs a damage env (hebb/AntDamage-v0, hebb/HalfCheetahDamage-v0), "
                f"got {type(base).__name__}"
            )
        self._pool: list[tuple[str, Morphology]] = resolve_pool(base.robot, damage)
        bounds = list(at_step) if isinstance(at_step, (tuple, list)) else [at_step, at_step]
        try:  # check_int refuses bools, None and fractional floats (int() would truncate 2.5 to 2)
            low, high = (check_int("at_step", b, 1) for b in bounds) if len(bounds) == 2 else (0, 0)
        except ValueError:
            low, high = 0, 0
        if not 1 <= low <= high:
            raise ValueError(
                f"at_step must be an integer >= 1 or a (low, high) pair of integers with 1 <= low <= high, "
                f"got {at_step!r}"
            )
        self._step_range = (low, high)
        self._t = 0
        self._damage_step = self._step_range[0]
        self._damage: tuple[str, Morphology] = self._pool[0]

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        """Reset the env (restoring its own body), then draw this episode's damage step and body."""
        obs, info = self.env.reset(seed=seed, options=options)
        rng: np.random.Generator = self.env.unwrapped.np_random
        low, high = self._step_range
        self._damage_step = int(rng.integers(low, high + 1)) if high > low else low
        self._damage = draw_from_pool(self._pool, rng)
        self._t = 0
        info["damage_step"] = self._damage_step
        info["damage_applied"] = False
        return obs, info

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        """One step; on step ``damage_step`` the body is swapped before the physics runs."""
        self._t += 1
        applied = self._t == self._damage_step
        if applied:
            name, specs = self._damage
            self.env.unwrapped.set_damage(specs, name=name)
        obs, reward, terminated, truncated, info = self.env.step(action)
        info["damage_step"] = self._damage_step
        info["damage_applied"] = applied
        return obs, reward, terminated, truncated, info
