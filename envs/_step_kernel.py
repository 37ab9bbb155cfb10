"""One damaged-locomotion env step as a compiled function (imported only where numba is installed).

Not cached on disk: numba's cache would not notice a change in the intrinsics it takes from
:mod:`hebb_envs._physics_kernel`; its callers compile it with themselves, once per process.

:func:`locomotion_step` is ``HalfCheetahDamageEnv.step`` / ``AntDamageEnv.step`` for a compiled caller
(a whole episode in one call, see :mod:`hebb_agents.compiled_episodes`): the same libmujoco calls as
:mod:`hebb_envs._physics_kernel`, then the observation, reward and termination with the same
operations on the same operands as the envs' numpy, sums included (numpy's pairwise order), so every
value equals the env's own ``step`` bit for bit (tested). What it reads of an env is described by a
:class:`hebb_envs.locomotion.StepProgram`.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import types
from numba.extending import intrinsic

from hebb_envs._physics_kernel import _call_get_state, _call_with_model_and_data, _float64_array

# StepProgram.addresses columns
MODEL, DATA, CTRL, QPOS, QVEL, MAIN_XPOS, CFRC_EXT, WARNINGS = range(8)
# StepProgram.sizes columns
ROBOT, NQ, NV, NU, NBODY, FRAME_SKIP, EXCLUDE_POSITIONS, CONTACT_OBS, TERMINATE, GRACE = range(10)
FLOAT32_CTRL_COST = 10  # 1 where numpy multiplies a Python float and a float32 in float32 (NumPy 2)
BAD0 = 11  # then the indices of MuJoCo's three bad-state warnings
# StepProgram.settings columns
STEP_TIME, FORWARD_WEIGHT, CTRL_WEIGHT, HEALTHY_REWARD, CONTACT_WEIGHT = range(5)
MIN_Z, MAX_Z, FORCE_LOW, FORCE_HIGH = range(5, 9)
CHEETAH, ANT = 0, 1
# StepProgram.functions columns: libmujoco's mj_step, mj_rnePostConstraint, mj_getState; then the
# mj_getState signature that reads the clock alone
MJ_STEP, MJ_RNE, MJ_GET_STATE, TIME_ONLY = range(4)


@intrinsic
def _int32_at(typingctx, address):  # pragma: no cover - compiled
    """The int32 stored at ``address``."""

    def codegen(context, builder, signature, args):
        pointer = builder.inttoptr(args[0], context.get_value_type(types.CPointer(types.int32)))
        return builder.load(pointer)

    return types.int32(address), codegen


@numba.njit
def pairwise_sum(values):  # pragma: no cover - compiled
    """``values.sum()`` in numpy's order (pairwise: eight running sums per block of at most 128)."""
    n = values.shape[0]
    if n < 8:
        total = values.dtype.type(0)
        for k in range(n):
            total += values[k]
        return total
    if n <= 128:
        r0, r1, r2, r3 = values[0], values[1], values[2], values[3]
        r4, r5, r6, r7 = values[4], values[5], values[6], values[7]
        k = 8
        while k < n - n % 8:
            r0 += values[k]
            r1 += values[k + 1]
            r2 += values[k + 2]
            r3 += values[k + 3]
            r4 += values[k + 4]
            r5 += values[k + 5]
            r6 += values[k + 6]
            r7 += values[k + 7]
            k += 8
        total = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
        while k < n:
            total += values[k]
            k += 1
        return total
    half = n // 2
    half -= half % 8
    return pairwise_sum(values[:half]) + pairwise_sum(values[half:])


@numba.njit
def _clock(functions, model, data, scratch):  # pragma: no cover - compiled
    _call_get_state(functions[MJ_GET_STATE], model, data, scratch.ctypes.data, functions[TIME_ONLY])
    return scratch[0]


@numba.njit
def locomotion_step(functions, addresses, sizes, settings, action, obs, elapsed, scratch):  # pragma: no cover
    """Step one env with ``action`` (float32, its action space's dtype); writes the observation into
    ``obs`` and returns ``(reward, x_velocity, x_position, terminated)``.

    ``elapsed``: the episode's steps before this one (the grace period); ``scratch``: two float64s.
    """
    model, data = addresses[MODEL], addresses[DATA]
    robot = sizes[ROBOT]
    nq, nv, nu = sizes[NQ], sizes[NV], sizes[NU]
    step_time = settings[STEP_TIME]
    qpos = _float64_array(addresses[QPOS], nq)
    qvel = _float64_array(addresses[QVEL], nv)
    start = _clock(functions, model, data, scratch)
    x_before = qpos[0]
    if robot == ANT:
        x_before = _float64_array(addresses[MAIN_XPOS], 1)[0]  # the main body's x
    ctrl = _float64_array(addresses[CTRL], nu)
    for j in range(nu):
        ctrl[j] = action[j]
    for _ in range(sizes[FRAME_SKIP]):
        _call_with_model_and_data(functions[MJ_STEP], model, data)
    _call_with_model_and_data(functions[MJ_RNE], model, data)
    end = _clock(functions, model, data, scratch)
    # _physics_diverged: the clock fell short, or (first step after a reset) a bad-state warning
    diverged = end < start + 0.5 * step_time
    if not diverged and start < 0.5 * step_time:
        for k in range(3):
            # the counters of MjData.warning: one int32 every 8 bytes (mjWarningStat's lastinfo, number)
            if _int32_at(addresses[WARNINGS] + 8 * sizes[BAD0 + k]) != 0:
                diverged = True
    ctrl_squares = pairwise_sum(action * action)  # float32, as np.square(action).sum()
    if sizes[FLOAT32_CTRL_COST]:  # the weight is a Python float, the sum a float32: as numpy promotes
        ctrl_cost = np.float64(np.float32(settings[CTRL_WEIGHT]) * ctrl_squares)
    else:
        ctrl_cost = settings[CTRL_WEIGHT] * np.float64(ctrl_squares)
    skip = 1 if sizes[EXCLUDE_POSITIONS] else 0
    if robot == CHEETAH:
        x_velocity = (qpos[0] - x_before) / step_time
        reward = settings[FORWARD_WEIGHT] * x_velocity - ctrl_cost
        column = 0
        for k in range(skip, nq):
            obs[column] = qpos[k]
            column += 1
        for k in range(nv):
            obs[column + k] = qvel[k]
        return reward, x_velocity, qpos[0], diverged
    skip = 2 if sizes[EXCLUDE_POSITIONS] else 0
    x_velocity = (_float64_array(addresses[MAIN_XPOS], 1)[0] - x_before) / step_time
    healthy = True
    for k in range(nq):
        healthy = healthy and np.isfinite(qpos[k])
    for k in range(nv):
        healthy = healthy and np.isfinite(qvel[k])
    healthy = healthy and settings[MIN_Z] <= qpos[2] and qpos[2] <= settings[MAX_Z]
    forces = _float64_array(addresses[CFRC_EXT], 6 * sizes[NBODY]).copy()
    low, high = settings[FORCE_LOW], settings[FORCE_HIGH]
    for k in range(forces.shape[0]):
        if forces[k] < low:  # np.clip (a NaN stays NaN)
            forces[k] = low
        elif forces[k] > high:
            forces[k] = high
    contact_cost = settings[CONTACT_WEIGHT] * pairwise_sum(forces * forces)
    healthy_reward = settings[HEALTHY_REWARD] if healthy else 0.0
    reward = (x_velocity * settings[FORWARD_WEIGHT] + healthy_reward) - (ctrl_cost + contact_cost)
    column = 0
    for k in range(skip, nq):
        obs[column] = qpos[k]
        column += 1
    for k in range(nv):
        obs[column] = qvel[k]
        column += 1
    if sizes[CONTACT_OBS]:
        for k in range(6, forces.shape[0]):  # every body but the world
            obs[column] = forces[k]
            column += 1
    terminated = not healthy and sizes[TERMINATE] != 0 and elapsed + 1 > sizes[GRACE]
    return reward, x_velocity, qpos[0], terminated or diverged
