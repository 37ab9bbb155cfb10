"""How much a compiled group step would save: a measurement for issue 6's per-core goal.

The lockstep ES steps a group of damaged HalfCheetahs with ``EnvBatch.step``: a Python loop of
``mj_step`` calls (pybind), then numpy for the observation and reward. This script times, call by
call on the same envs (medians over ``--calls``, alternating):

- ``raw``: the physics alone as the benchmarks' baseline runs it (Python loop: ``ctrl``, ``mj_step``
  with the frame skip, ``mj_rnePostConstraint`` per env);
- ``compiled``: a numba function that does a whole group step with no Python between envs: it writes
  the controls, calls libmujoco's ``mj_step`` and ``mj_rnePostConstraint`` through their C pointers
  (ctypes) on each env's ``MjModel`` / ``MjData`` addresses, and computes the observation and
  HalfCheetah-v5's reward (the same operations as ``HalfCheetahDamageEnv.step``; checked equal below);
- ``batch``: ``HalfCheetahDamageEnv.batch(envs).step`` as the rollout uses it, its physics one compiled
  call (``hebb_envs.batch_physics``, numba);
- ``batch_python``: the same with its physics stepped from Python (``kernel="python"``).

``compiled`` is a prototype of a design (the whole env step compiled, with the policy step compiled
beside it), not the library's code path: it leaves out ``info``, the episode counters and the
divergence check. The library compiles the physics calls only and keeps the reward arithmetic in
numpy, where its bit-for-bit equality with Gymnasium's ``step`` rests on numpy's own rounding.

    python scripts/bench_compiled_env_step.py --members 9 --calls 3000
"""

from __future__ import annotations

import argparse
import ctypes
import glob
import os
import time

import mujoco
import numba
import numpy as np
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from hebb_agents.rollout import make_env


def _mujoco_function(name: str) -> ctypes._CFuncPtr:
    """A libmujoco function taking (const mjModel*, mjData*), with the pointers passed as integers."""
    library = ctypes.CDLL(glob.glob(os.path.join(os.path.dirname(mujoco.__file__), "libmujoco.so*"))[0])
    function = getattr(library, name)
    function.argtypes = [ctypes.c_uint64, ctypes.c_uint64]
    function.restype = None
    return function


MJ_STEP, MJ_RNE = _mujoco_function("mj_step"), _mujoco_function("mj_rnePostConstraint")


@intrinsic
def _as_pointer(typingctx, address):  # pragma: no cover - compiled
    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], cgutils.voidptr_t)

    return types.voidptr(address), codegen


@numba.njit
def group_step(
    models,
    datas,
    ctrls,
    qposs,
    qvels,
    actions,
    nq,
    nv,
    frame_skip,
    step_time,
    forward_weight,
    ctrl_weight,
    obs,
    reward,
):  # pragma: no cover - compiled
    """One step of every env: addresses of each env's MjModel, MjData and ctrl / qpos / qvel arrays."""
    n_act = actions.shape[1]
    for i in range(models.shape[0]):
        ctrl = numba.carray(_as_pointer(ctrls[i]), (n_act,), np.float64)
        qpos = numba.carray(_as_pointer(qposs[i]), (nq,), np.float64)
        qvel = numba.carray(_as_pointer(qvels[i]), (nv,), np.float64)
        squares = np.float32(0.0)  # np.square(action).sum() for 6 float32 values: in order, in float32
        for j in range(n_act):
            ctrl[j] = actions[i, j]
            squares += actions[i, j] * actions[i, j]
        x_before = qpos[0]
        for _ in range(frame_skip):
            MJ_STEP(models[i], datas[i])
        MJ_RNE(models[i], datas[i])
        for j in range(1, nq):
            obs[i, j - 1] = qpos[j]
        for j in range(nv):
            obs[i, nq - 1 + j] = qvel[j]
        x_velocity = (qpos[0] - x_before) / step_time
        # NumPy 2 keeps a Python float times a float32 in float32: the control cost is a float32
        reward[i] = forward_weight * x_velocity - np.float32(ctrl_weight) * squares


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--members", type=int, default=9, help="envs in the group")
    parser.add_argument("--calls", type=int, default=3000, help="group steps timed, a third per method")
    args = parser.parse_args()

    envs = [make_env("hebb/HalfCheetahDamage-v0").unwrapped for _ in range(args.members)]
    for seed, env in enumerate(envs):
        env.reset(seed=seed)
    first = envs[0]
    batch = type(first).batch(envs, kernel="numba")
    batch_python = type(first).batch(envs, kernel="python")
    addresses = [
        np.array([(env.model if field == "model" else env.data)._address for env in envs], np.uint64)
        for field in ("model", "data")
    ]
    arrays = [
        np.array([getattr(env.data, f).ctypes.data for env in envs], np.uint64)
        for f in ("ctrl", "qpos", "qvel")
    ]
    obs = np.zeros((args.members, first.observation_space.shape[0]))
    reward = np.zeros(args.members)
    step_time = first.model.opt.timestep * first.frame_skip
    nq, nv = first.model.nq, first.model.nv
    weights = (first._forward_reward_weight, first._ctrl_cost_weight)

    def compiled(actions: np.ndarray) -> None:
        group_step(*addresses, *arrays, actions, nq, nv, first.frame_skip, step_time, *weights, obs, reward)

    def raw(actions: np.ndarray) -> None:
        for env, action in zip(envs, actions):
            env.data.ctrl[:] = action
            mujoco.mj_step(env.model, env.data, nstep=env.frame_skip)
            mujoco.mj_rnePostConstraint(env.model, env.data)

    rng = np.random.default_rng(0)
    low, high = first.action_space.low, first.action_space.high
    draw = lambda: rng.uniform(low, high, (args.members, len(low))).astype(np.float32)  # noqa: E731

    # the compiled step's observation and reward equal env.step's from the same state
    state_kind = mujoco.mjtState.mjSTATE_INTEGRATION
    state = np.empty(mujoco.mj_stateSize(first.model, state_kind))
    mujoco.mj_getState(first.model, first.data, state, state_kind)
    actions = draw()
    compiled(actions)
    got_obs, got_reward = obs[0].copy(), reward[0]
    mujoco.mj_setState(first.model, first.data, state, state_kind)
    want_obs, want_reward = first.step(actions[0])[:2]
    print(
        f"compiled step equals env.step: observation {np.array_equal(got_obs, want_obs)}, "
        f"reward {got_reward == want_reward}"
    )

    methods = {"raw": raw, "compiled": compiled, "batch": batch.step, "batch_python": batch_python.step}
    times: dict[str, list[float]] = {name: [] for name in methods}
    names = list(methods)
    for call in range(args.calls):
        name = names[call % len(names)]
        actions = draw()
        start = time.perf_counter()
        methods[name](actions)
        times[name].append(time.perf_counter() - start)
    per = {name: 1e6 * np.median(values) / args.members for name, values in times.items()}
    print(
        f"{args.members} HalfCheetahs, {args.calls // len(names)} calls each; us per member-step (medians): "
        + ", ".join(f"{name} {value:.1f}" for name, value in per.items())
    )
    print(
        f"compiled / raw time: {per['compiled'] / per['raw']:.2f}x; "
        f"batch / raw: {per['batch'] / per['raw']:.2f}x; "
        f"batch with python physics / raw: {per['batch_python'] / per['raw']:.2f}x; "
        f"batch over compiled: {per['batch'] - per['compiled']:.1f} us per member-step"
    )


if __name__ == "__main__":
    main()
