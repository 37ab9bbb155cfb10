"""Benchmark the damaged environments against stock Gymnasium and raw MuJoCo, in one run.

For every catalogue morphology of the Ant and the HalfCheetah:

- env-steps/s of ``AntDamageEnv`` / ``HalfCheetahDamageEnv`` (unwrapped) with that body, against the
  stock ``Ant-v5`` / ``HalfCheetah-v5`` (unwrapped, same observation settings, no termination);
- raw ``mujoco.mj_step(model, data, nstep=frame_skip)`` steps/s on the same damaged model, from the
  env's reset state with the same actions (so it retraces the env's trajectory), against the same on
  the stock model (a different body can cost more to simulate: more contacts, for example);
- reset time: stock env; damaged env drawing a body per episode (``damage="all"``) with its own table
  of bodies warm, looking each body up in the process-wide compiled-model cache, and with no cache at
  all (every reset compiles the damaged model from the MjSpec).

How it measures, so the numbers mean something on a shared machine: each comparison steps the two
envs (or the two raw models) in alternating blocks of ``block`` steps along one long trajectory, timing
each block with this thread's CPU clock; load from other processes then falls on both sides alike, and
the time spent waiting for a core is not counted at all. A stock-vs-stock pair ("stock (control)") shows
the noise floor of a ratio.

Columns: env/stock = damaged env rate / stock env rate; physics = raw rate on the damaged model / raw rate
on the stock model along the same actions (a limb dragging on the floor means more contacts to solve);
overhead = (env/stock) / physics, what the env adds beyond its body's physics, relative to stock.
A damaged env passes ("ok") when env/stock >= 0.95, or ("ok (physics)") when the shortfall comes from
the body's own physics and the env's overhead ratio is still >= 0.95. Last, the damage layer's own cost
per step, timed on a stub (no physics), as a share of a stock step.

    python scripts/bench_envs.py                       # both robots, all catalogue bodies
    python scripts/bench_envs.py --robots ant --steps 1000

Exit status 1 if any damaged env falls below the threshold.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import gymnasium as gym
import mujoco
import numpy as np

from hebb_agents.rollout import make_env
from hebb_envs.locomotion import AntDamageEnv, HalfCheetahDamageEnv, _DamageMixin
from hebb_envs.morphology import CATALOGUE, clear_model_cache


@dataclass
class Config:
    robots: tuple[str, ...] = ("ant", "half_cheetah")
    steps: int = 3000  # steps per side of each comparison
    block: int = 50  # steps per timed block; the two sides alternate block by block
    resets: int = 300  # resets per reset timing
    threshold: float = 0.95  # damaged env rate / stock env rate must reach this


ROBOTS = {
    # robot: (stock id, stock kwargs, damage env class, damage env kwargs); same observation, no
    # termination, so a timed trajectory never resets
    "ant": (
        "Ant-v5",
        {"include_cfrc_ext_in_observation": False, "terminate_when_unhealthy": False},
        AntDamageEnv,
        {"terminate_when_unhealthy": False},
    ),
    "half_cheetah": ("HalfCheetah-v5", {}, HalfCheetahDamageEnv, {}),
}

# CPU time of this thread, not wall time: wall time would count the moments this process waits for a
# core, which has nothing to do with the code being measured.
clock = time.thread_time


def env_stepper(env: gym.Env) -> Callable[[np.ndarray], None]:
    env.reset(seed=0)
    return env.step


def raw_stepper(env: gym.Env, frame_skip: int) -> Callable[[np.ndarray], None]:
    """The physics of one env step and nothing else, on the env's model from the env's reset state, so it
    retraces the env's own trajectory: the floor under the env's cost."""
    env.reset(seed=0)
    model = env.unwrapped.model
    data = mujoco.MjData(model)
    spec = mujoco.mjtState.mjSTATE_INTEGRATION
    state = np.empty(mujoco.mj_stateSize(model, spec))
    mujoco.mj_getState(model, env.unwrapped.data, state, spec)
    mujoco.mj_setState(model, data, state, spec)
    mujoco.mj_forward(model, data)

    def step(action: np.ndarray) -> None:
        data.ctrl[:] = action
        mujoco.mj_step(model, data, nstep=frame_skip)

    return step


def paired_rates(
    step_a: Callable[[np.ndarray], None],
    step_b: Callable[[np.ndarray], None],
    actions: np.ndarray,
    block: int,
) -> tuple[float, float]:
    """Steps per CPU second of two steppers run over ``actions`` (n, act_dim) in alternating blocks."""
    spent = [0.0, 0.0]
    for i, start in enumerate(range(0, len(actions), block)):
        chunk = actions[start : start + block]
        # alternate which side goes first, so neither always runs on a cache the other just warmed
        for side in (0, 1) if i % 2 == 0 else (1, 0):
            step = step_a if side == 0 else step_b
            t0 = clock()
            for a in chunk:
                step(a)
            spent[side] += clock() - t0
    return len(actions) / spent[0], len(actions) / spent[1]


def layer_cost(n: int = 200_000) -> float:
    """CPU seconds the damage layer's own bookkeeping adds to one step (grace period, ``info`` keys).

    Measured on a stub (a step that does nothing, with and without ``_finish_step`` after it), so
    neither physics nor memory placement blurs a cost of about a microsecond.
    """

    class Base:
        render_mode = None

        def step(self, action):
            return action, 0.0, False, False, {"x_position": 1.0}

    class Layered(_DamageMixin, Base):
        def step(self, action):
            obs, reward, terminated, _, info = Base.step(self, action)
            return self._finish_step(obs, reward, terminated, info)

    bare, layered = Base(), Layered()
    layered._elapsed, layered._grace_steps, layered._damage_name, layered._x_start = 0, 0, "intact", 0.0
    layered._diverged = False  # what _simulate notes (the stub steps no physics)
    best = [np.inf, np.inf]
    for _ in range(5):  # best of 5: the least disturbed pass
        for i, env in enumerate((bare, layered)):
            t0 = clock()
            for _ in range(n):
                env.step(None)
            best[i] = min(best[i], (clock() - t0) / n)
    return best[1] - best[0]


def reset_time(env, n: int, clear_body_cache: bool, clear_models: bool) -> float:
    """Mean CPU seconds per reset of an env drawing its body per episode."""
    total = 0.0
    for _ in range(n):
        if clear_body_cache:
            env._bodies = {(): env._bodies[()]}  # forget the env's own references to damaged models
        if clear_models:
            clear_model_cache()
        t0 = clock()
        env.reset()
        total += clock() - t0
    return total / n


def bench_robot(robot: str, cfg: Config) -> bool:
    stock_id, stock_kwargs, env_cls, env_kwargs = ROBOTS[robot]
    make_stock = lambda: make_env(stock_id, **stock_kwargs).unwrapped  # noqa: E731 (quiet MuJoCo build)
    stock = make_stock()
    frame_skip = stock.frame_skip
    actions = np.random.default_rng(0).uniform(-1, 1, (cfg.steps, stock.action_space.shape[0]))

    print(f"\n{robot}: {cfg.steps} steps per side, blocks of {cfg.block}, steps per CPU second")
    cols = ("env", "stock env", "env/stock", "raw", "stock raw", "physics", "overhead", "")
    print(f"{'morphology':38s}" + "".join(f"{c:>10s}" for c in cols))
    ok = True
    for name in ["stock (control)", *CATALOGUE[robot]]:
        env = make_stock() if name == "stock (control)" else env_cls(damage=name, **env_kwargs)
        env_rate, stock_rate = paired_rates(env_stepper(env), env_stepper(stock), actions, cfg.block)
        raw, stock_raw = paired_rates(
            raw_stepper(env, frame_skip), raw_stepper(stock, frame_skip), actions, cfg.block
        )
        ratio, physics = env_rate / stock_rate, raw / stock_raw
        overhead = ratio / physics  # (env / raw) relative to (stock env / stock raw)
        if name == "stock (control)":
            verdict = ""
        elif ratio >= cfg.threshold:
            verdict = "ok"
        elif overhead >= cfg.threshold:
            verdict = "ok (physics)"  # the body itself costs more to simulate; the env adds no more
        else:
            verdict = "SLOW"
            ok = False
        line = f"{name:38s}{env_rate:10,.0f}{stock_rate:10,.0f}{ratio:10.3f}{raw:10,.0f}{stock_raw:10,.0f}"
        print(line + f"{physics:10.3f}{overhead:10.3f}  {verdict}")

    pool = env_cls(damage="all", **env_kwargs)
    pool.reset(seed=0)
    for name in CATALOGUE[robot]:  # warm: the env has made its private copy of every body once
        pool.reset(options={"damage": name})
    stock_reset = reset_time(stock, cfg.resets, False, False)
    rows = (
        (f"stock {stock_id}", stock_reset),
        ("damage='all', env's own bodies warm", reset_time(pool, cfg.resets, False, False)),
        ("damage='all', looked up in the model cache", reset_time(pool, cfg.resets, True, False)),
        (
            "damage='all', no cache (compile each reset, stock too)",
            reset_time(pool, max(cfg.resets // 5, 10), True, True),
        ),
    )
    for label, seconds in rows:
        print(f"reset, {label:46s} {seconds * 1e6:8.0f} us  ({seconds / stock_reset:6.2f}x stock)")
    stock_step = 1.0 / paired_rates(env_stepper(stock), env_stepper(make_stock()), actions, cfg.block)[0]
    cost = layer_cost()
    print(f"damage layer per step: {cost * 1e6:.2f} us = {cost / stock_step:.1%} of a stock {stock_id} step")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--robots", nargs="+", default=list(Config.robots), choices=list(ROBOTS))
    parser.add_argument("--steps", type=int, default=Config.steps)
    parser.add_argument("--block", type=int, default=Config.block)
    parser.add_argument("--resets", type=int, default=Config.resets)
    args = parser.parse_args()
    cfg = Config(tuple(args.robots), args.steps, args.block, args.resets)
    print(f"mujoco {mujoco.__version__}, gymnasium {gym.__version__}, numpy {np.__version__}")
    print(f"cores: {os.cpu_count()}, load average at start (1, 5, 15 min): {os.getloadavg()}")
    ok = all([bench_robot(robot, cfg) for robot in cfg.robots])
    print(f"\nload average at end (1, 5, 15 min): {os.getloadavg()}")
    verdict = "yes" if ok else "NO"
    print(f"every damaged env within {1 - cfg.threshold:.0%} of the stock env (see 'ok'): {verdict}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
