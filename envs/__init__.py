"""hebb_envs: Gymnasium environments for testing adaptation (morphology damage, long memory).

Importing this package registers every environment id under the ``hebb/`` namespace, so
``gym.make("hebb_envs:hebb/<Id>")`` works with no prior import. This package never imports
``hebb_agents``.

=============================  ===================  ===========================================
id                             max_episode_steps    what
=============================  ===================  ===========================================
``hebb/AntDamage-v0``          1000                 Ant-v5 with a damaged body (``damage=``)
``hebb/HalfCheetahDamage-v0``  1000                 HalfCheetah-v5 with a damaged body
``hebb/Memory-v0``             none (ends itself)   recall a cue after a delay, Discrete(K)
``hebb/MemoryContinuous-v0``   none (ends itself)   same, Box(-1, 1, (K,)) answered by argmax
=============================  ===================  ===========================================

Keyword arguments pass through ``gym.make``:

- damage envs: ``damage`` (catalogue name, ``DamageSpec``, tuple of specs, split name such as
  ``"seen"``/``"unseen"``/``"all"``, or a list to draw from per episode; see
  :mod:`hebb_envs.locomotion`), any argument of Gymnasium's env; the Ant adds ``use_contact_forces``
  (default False: 27-dim observation), ``healthy_z_range`` (default (0.2, 3.0)),
  ``terminate_when_unhealthy`` (True) and ``termination_grace_steps`` (0);
- memory tasks: ``n_symbols`` (K, 4), ``delay`` (64, at most 2**20), ``cue_steps`` (1), ``distractor``
  ("symbols"), ``correct_reward`` (1.0), ``wrong_reward`` (0.0); see :mod:`hebb_envs.memory`.
  ``hebb/MemoryContinuous-v0`` refuses ``continuous=False``.

Damage in the middle of an episode: :class:`hebb_envs.wrappers.MidEpisodeDamage`. Stepping many damage
envs at once (as an ES does): ``AntDamageEnv.batch(envs)`` / ``HalfCheetahDamageEnv.batch(envs)``, an
:class:`EnvBatch` (Gymnasium's vector form, bit-identical to each env's own ``step``); with numba
installed (and the bindings' libmujoco found) its physics runs as one compiled call per batch step
(:mod:`hebb_envs.batch_physics`; ``HEBB_ENV_KERNEL=python`` steps it from Python instead, with the
same results).

Registration is idempotent: importing the package again (or reloading it) never registers an id twice.
"""

from __future__ import annotations

import os
from typing import Any

import gymnasium as gym

try:  # MuJoCo loads its OpenGL backend on import, as MUJOCO_GL says
    import mujoco  # noqa: F401
except Exception as err:
    if "MUJOCO_GL" not in os.environ or getattr(err, "name", None) == "mujoco":  # not installed
        raise
    raise ImportError(
        f"MuJoCo failed to import with MUJOCO_GL={os.environ['MUJOCO_GL']!r} ({type(err).__name__}: "
        f"{err}); use egl or osmesa where that library is installed, glfw with a display, or unset it"
    ) from err

from hebb_envs.locomotion import AntDamageEnv, EnvBatch, HalfCheetahDamageEnv
from hebb_envs.memory import MemoryContinuousTask, MemoryTask
from hebb_envs.morphology import CATALOGUE, SPLITS, DamageSpec, build_model
from hebb_envs.wrappers import MidEpisodeDamage, ObservationHistory

# id -> (entry point, max_episode_steps, default kwargs)
ENV_IDS: dict[str, tuple[str, int | None, dict[str, Any]]] = {
    "hebb/AntDamage-v0": ("hebb_envs.locomotion:AntDamageEnv", 1000, {}),
    "hebb/HalfCheetahDamage-v0": ("hebb_envs.locomotion:HalfCheetahDamageEnv", 1000, {}),
    # The memory task terminates after cue_steps + delay + 1 steps whatever the delay, so a time limit
    # would only risk truncating long delays.
    # The continuous id refuses continuous=False (gym.make would merge it over the id's own setting).
    "hebb/Memory-v0": ("hebb_envs.memory:MemoryTask", None, {}),
    "hebb/MemoryContinuous-v0": ("hebb_envs.memory:MemoryContinuousTask", None, {}),
}


def register_envs() -> list[str]:
    """Register every ``hebb/`` id that is not registered yet; returns the ids newly registered."""
    added = []
    for env_id, (entry_point, max_steps, kwargs) in ENV_IDS.items():
        if env_id in gym.registry:
            continue
        gym.register(id=env_id, entry_point=entry_point, max_episode_steps=max_steps, kwargs=dict(kwargs))
        added.append(env_id)
    return added


register_envs()

__all__ = [
    "CATALOGUE",
    "ENV_IDS",
    "SPLITS",
    "AntDamageEnv",
    "DamageSpec",
    "EnvBatch",
    "HalfCheetahDamageEnv",
    "MemoryContinuousTask",
    "MemoryTask",
    "MidEpisodeDamage",
    "ObservationHistory",
    "build_model",
    "register_envs",
]
