"""Whole episodes in one compiled call: the opt-in fast path of a rollout (``compiled_episodes``).

The lockstep rollout (:mod:`hebb_agents.rollout`) runs Python and numpy between physics calls: on
HalfCheetah about as much time again as the physics, most of it per group step and the rest the
plastic update streaming every member's rule terms through the cache. Here one numba call runs a
member's whole episode: forward pass, plastic update, env step (:mod:`hebb_envs._step_kernel`),
return and early stopping, one member after another, so a member's weights and rule terms stay in
cache for its whole episode.

What changes: the forward pass. A sequential sum and a correctly rounded ``tanh`` (computed in
float64, see :func:`hebb_agents._episode_kernel.tanh`) differ from BLAS's ``matmul`` and numpy's
float32 ``tanh`` in the last bit for some inputs, so episodes follow another rounding
of the same policy, and fitness values differ from the lockstep path's (chaotically, over long
episodes). Everything else is the lockstep path's arithmetic: the plastic update is the same kernel,
each env step equals the env's own ``step`` bit for bit, and the same seeds give the same initial
weights, bodies and start states. Results do not depend on group sizes or worker counts.

Supported: the ``hebb/`` damaged Ant and HalfCheetah envs (no wrappers beyond ``gym.make``'s own),
Hebbian policies without encoder, ``tanh`` layers, ``max_abs`` or no normalisation, float32
``Box`` actions, fitness ``return`` or ``distance``, early stop ``none`` or ``locomotion``; numba
installed (``pip install "hebb-agents[fast]"``). :func:`unsupported` says what else stands in the way.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import numpy as np

from hebb_agents.policy import EvolvablePolicy, HebbianPolicy

FITNESSES = ("return", "distance")
EARLY_STOPS = ("none", "locomotion")


def unsupported(policy: EvolvablePolicy, env: Any, fitness: str, early_stop: str, step: Any) -> list[str]:
    """What keeps ``policy`` on ``env`` (``gym.make``'s env; ``step``: the step beneath its bookkeeping
    wrappers) from running as compiled episodes: empty when nothing does."""
    # imported here, not with the module: the package imports it, and needs no MuJoCo for Gymnasium's
    # own envs (nor a MUJOCO_GL that MuJoCo can load)
    from hebb_envs.batch_physics import mujoco_functions
    from hebb_envs.locomotion import AntDamageEnv, HalfCheetahDamageEnv

    reasons = []
    if importlib.util.find_spec("numba") is None:
        reasons.append("numba is not installed (pip install 'hebb-agents[fast]')")
    else:
        try:  # libmujoco found, numba able to compile: found out here, not inside a worker
            mujoco_functions()
            import hebb_agents._episode_kernel  # noqa: F401
        except Exception as error:
            reasons.append(f"{type(error).__name__}: {error}")
    inner = env.unwrapped
    if type(inner) not in (AntDamageEnv, HalfCheetahDamageEnv):  # subclasses may step otherwise
        accepted = "the hebb/ AntDamage and HalfCheetahDamage envs"
        reasons.append(f"env {type(inner).__name__} (accepted: {accepted})")
    elif step != inner.step:
        reasons.append("the env has wrappers beyond gym.make's own")
    elif inner.render_mode == "human":
        reasons.append("render_mode 'human'")
    if not isinstance(policy, HebbianPolicy):
        reasons.append(f"policy {policy.kind!r} (accepted: hebbian)")
        return reasons
    net = policy.network
    if policy.encoder is not None:
        reasons.append("a policy encoder")
    if (net.activation, net.output_activation) != ("tanh", "tanh"):
        reasons.append(f"activations {net.activation}/{net.output_activation} (accepted: tanh/tanh)")
    if net.normalisation not in ("max_abs", "none"):
        reasons.append(f"normalisation {net.normalisation!r} (accepted: max_abs, none)")
    if net.dtype != np.float32:
        reasons.append(f"network dtype {net.dtype} (accepted: float32)")
    space = policy.action_space
    if getattr(space, "dtype", None) != np.float32 or getattr(space, "shape", None) is None:
        reasons.append(f"action space {space} (accepted: float32 Box)")
    if fitness not in FITNESSES:
        reasons.append(f"fitness {fitness!r} (accepted: {', '.join(FITNESSES)})")
    if early_stop not in EARLY_STOPS:
        reasons.append(f"early_stop {early_stop!r} (accepted: {', '.join(EARLY_STOPS)})")
    return reasons


def run_episode(
    policy: HebbianPolicy,
    member: int,
    env: Any,
    obs: np.ndarray,
    limit: int | None,
    early_stop: tuple[int, int] | None,
) -> tuple[float, float, int, bool]:
    """Run ``member``'s episode (its row of ``policy``, reset for this episode) on ``env``, which was
    just reset to ``obs``; ``early_stop``: ``(after, streak)`` stops it once, past ``after`` steps,
    ``streak`` consecutive steps went backwards (the rollout's ``locomotion`` rule), or None. Returns
    the return, the last ``info["x_position"]``, the steps taken and whether the network's output
    stopped being finite (the member diverged)."""
    from hebb_agents._episode_kernel import run_episode as kernel

    program = env.unwrapped.step_program()
    if np.shape(obs) != (program.obs_dim,):  # the kernel writes observations of this length
        raise ValueError(f"expected an observation of shape ({program.obs_dim},), got {np.shape(obs)}")
    net = policy.network
    arguments = net.kernel_arguments(member)
    acts = np.zeros((1, sum(net.layer_sizes)), np.float32)
    centre, half, low, high = policy.action_mapping
    totals = np.array([0.0, float(env.unwrapped.data.qpos[0])])
    steps, diverged = kernel(
        *arguments,
        acts,
        np.array(obs, dtype=np.float64),
        centre,
        half,
        low.astype(np.float32),
        high.astype(np.float32),
        program.functions,
        program.addresses,
        program.sizes,
        program.settings,
        np.iinfo(np.int64).max if limit is None else int(limit),
        *(early_stop or (np.iinfo(np.int64).max, 0)),  # never past the largest step count
        totals,
    )
    env.unwrapped.record_steps(steps)
    return float(totals[0]), float(totals[1]), int(steps), bool(diverged)
