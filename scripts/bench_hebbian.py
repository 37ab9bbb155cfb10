"""Cost of the Hebbian network step and of the ES bookkeeping, against one Ant-v5 physics step.

Issue 2's benchmark. Everything is measured in this run and printed as a ratio to the time of
one raw ``mujoco.mj_step(model, data, nstep=5)`` on Ant-v5 (its frame skip), measured here too:

- microseconds per network-step (batched forward + plastic update) of the reference's Ant network
  28 -> 128 -> 64 -> 8 and of 105 -> 128 -> 64 -> 8 (Ant-v5's observation), rule ABCD_lr, with
  ``max_abs`` and ``none`` normalisation, at P = 1 and P = 200 (per member), for each kernel;
- OpenES ask + tell for 61,440 and 110,720 coefficients at popsize 200, as a share of the
  simulation time of one generation (popsize x episode steps x one physics step).

Goals (issue 2): forward + update <= 0.1x of a physics step at P = 1; ES bookkeeping < 1 % of a
generation's simulation time. Times are process CPU time (on a machine shared with other jobs,
wall time swings with their load), the minimum over repeats.

    python scripts/bench_hebbian.py                  # full table
    python scripts/bench_hebbian.py --repeats 3 --quick
"""

from __future__ import annotations

import argparse
import importlib.util
import time
from collections.abc import Callable

import gymnasium as gym
import mujoco
import numpy as np

from hebb_agents.es import OpenES
from hebb_agents.network import HebbianNetwork


def best_time(fn: Callable[[], object], calls: int, repeats: int) -> float:
    """CPU seconds per call: the minimum over ``repeats`` runs of ``calls`` calls (after one warm-up)."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        for _ in range(calls):
            fn()
        best = min(best, (time.process_time() - start) / calls)
    return best


def physics_step_time(repeats: int) -> float:
    """Seconds of one raw ``mj_step(model, data, nstep=5)`` on Ant-v5 (no Python env around it)."""
    env = gym.make("Ant-v5")
    env.reset(seed=0)
    model, data = env.unwrapped.model, env.unwrapped.data
    rng = np.random.default_rng(0)
    data.ctrl[:] = rng.uniform(-1, 1, model.nu)
    frame_skip = env.unwrapped.frame_skip

    def step() -> None:
        mujoco.mj_step(model, data, nstep=frame_skip)

    seconds = best_time(step, 500, repeats)
    env.close()
    return seconds


def network_step_time(
    sizes: tuple[int, ...], population: int, normalisation: str, kernel: str, repeats: int
) -> float:
    """Seconds per network-step (forward + plastic update) of the whole population."""
    net = HebbianNetwork(sizes, rule="ABCD_lr", normalisation=normalisation, kernel=kernel)
    rng = np.random.default_rng(0)
    net.set_params(rng.normal(0.0, 0.1, (population, net.num_params)).astype(np.float32))
    net.reset([np.random.default_rng(i) for i in range(population)])
    x = rng.normal(size=(population, sizes[0])).astype(np.float32)  # (P, n_input)
    calls = 400 if population == 1 else 8
    with np.errstate(all="ignore"):  # 'none' normalisation may overflow: its cost is what we time
        return best_time(lambda: net.step(x), calls, repeats)


def es_time(num_params: int, popsize: int, repeats: int) -> float:
    """Seconds of one OpenES generation's bookkeeping: ask() then tell() (noise rebuilt from seeds)."""
    es = OpenES(num_params, popsize=popsize, seed=0)
    fitness = np.random.default_rng(0).normal(size=popsize)

    def generation() -> None:
        es.ask()
        es.tell(fitness)

    return best_time(generation, 1, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=7, help="runs per measurement; the minimum is kept")
    parser.add_argument("--episode-steps", type=int, default=1000, help="steps per episode for the ES share")
    parser.add_argument("--popsize", type=int, default=200)
    parser.add_argument("--quick", action="store_true", help="P = 1 and P = 200 for max_abs only")
    args = parser.parse_args()

    kernels = ["numpy"] + (["numba"] if importlib.util.find_spec("numba") else [])
    physics = physics_step_time(args.repeats)
    print(f"Ant-v5 raw mj_step(nstep=5): {physics * 1e6:.1f} us  (the unit of every ratio below)\n")

    print("network-step, rule ABCD_lr: forward + plastic update, per member")
    print(f"{'layers':<18}{'norm':<9}{'P':>5}  " + "".join(f"{k + ' us':>12}{'x phys':>9}" for k in kernels))
    norms = ["max_abs"] if args.quick else ["max_abs", "none"]
    for sizes in [(28, 128, 64, 8), (105, 128, 64, 8)]:
        for normalisation in norms:
            for population in (1, 200):
                cells = []
                for kernel in kernels:
                    per_member = (
                        network_step_time(sizes, population, normalisation, kernel, args.repeats) / population
                    )
                    cells.append(f"{per_member * 1e6:>12.1f}{per_member / physics:>9.3f}")
                name = "-".join(map(str, sizes))
                print(f"{name:<18}{normalisation:<9}{population:>5}  " + "".join(cells), flush=True)
    print("goal: <= 0.100x of a physics step at P = 1")

    physics_end = physics_step_time(args.repeats)
    print(f"Ant-v5 raw mj_step(nstep=5) again: {physics_end * 1e6:.1f} us (the ratios above use the first)\n")
    physics = min(physics, physics_end)
    generation_sim = args.popsize * args.episode_steps * physics
    print(
        f"ES ask + tell at popsize {args.popsize} (one generation's simulation: {args.popsize} x "
        f"{args.episode_steps} physics steps = {generation_sim:.1f} s)"
    )
    print(f"{'coefficients':>14}{'seconds':>10}{'share of sim':>14}")
    for num_params in (61_440, 110_720):
        seconds = es_time(num_params, args.popsize, max(2, args.repeats // 2))
        print(f"{num_params:>14,}{seconds:>10.3f}{seconds / generation_sim:>13.3%}", flush=True)
    print("goal: < 1% of a generation's simulation time")


if __name__ == "__main__":
    main()
