"""Where a lockstep group's time goes, per member-step, with every part timed in the same run.

One lockstep group of Hebbian networks (random evolved vectors, as in a first ES generation) runs
``--steps`` steps on its environments, as the rollout runs them. The episode's controls are
recorded, then each repeat times, back to back:

- the whole loop with batched env steps (one ``EnvBatch`` call per step, the rollout's default
  where the env class offers it), policy (forward pass + plastic update) and env timed apart;
- the whole loop stepping each env in turn (``RolloutSpec(batch_envs=False)``);
- raw physics: the recorded controls through ``mj_step`` alone, env after env;
- the batched env step alone, on the recorded controls;
- the policy alone: the same number of ``act`` calls with no physics in between;
- compiled against Python physics in the whole loop: two identical groups (same envs, seeds and
  evolved vectors), one whose ``EnvBatch`` runs its physics as one compiled call (the default with
  numba), one stepping it from Python; the two advance step by step in turn (first one, then the
  other, alternating), every group-step timed, and the median of the per-step ratios reported
  (their observations are checked equal: the same episode, bit for bit);
- the batched env step's own cost: call by call, a group step of raw physics (``mj_step`` and the
  contact forces Gymnasium computes, env after env) then one ``EnvBatch.step``, alternating on the
  same envs with random controls, medians over ``--env-calls`` of each; the difference is the
  Python and numpy work around the physics (observation, reward, ``info``), its median spread far
  narrower than that of separate timing blocks.

A shared machine's speed drifts by up to 2x over minutes, so ratios are taken within a repeat
(seconds apart) and summarised by their median over ``--repeats``.

    python scripts/profile_lockstep.py --env hebb/HalfCheetahDamage-v0 --members 9
    python scripts/profile_lockstep.py --env hebb/AntDamage-v0 --members 8 --steps 200
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import mujoco
import numpy as np

from hebb_agents.policy import make_policy
from hebb_agents.rollout import make_env
from hebb_envs.batch_physics import resolve_env_kernel


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--env", default="hebb/HalfCheetahDamage-v0")
    parser.add_argument("--members", type=int, default=9, help="lockstep group size")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--env-calls", type=int, default=2000, help="calls of each for the env-step cost")
    parser.add_argument(
        "--ab-episodes", type=int, default=5, help="episodes of the compiled / Python physics comparison"
    )
    args = parser.parse_args()

    envs = [make_env(args.env).unwrapped for _ in range(args.members)]
    if not callable(getattr(type(envs[0]), "batch", None)):
        parser.error(f"{args.env} offers no batched step (EnvBatch); this profile compares it with env.step")
    batch = type(envs[0]).batch(envs)
    policy = make_policy("hebbian", envs[0].observation_space, envs[0].action_space)
    rng = np.random.default_rng(0)
    policy.set_params(np.stack([policy.initial_params(rng) for _ in range(args.members)]))

    def each_env(actions: np.ndarray) -> np.ndarray:
        return np.stack([env.step(action)[0] for env, action in zip(envs, actions)])

    def batched(actions: np.ndarray) -> np.ndarray:
        return batch.step(actions)[0]

    def reset() -> np.ndarray:
        policy.reset(list(range(args.members)))
        return np.stack([env.reset(seed=i)[0] for i, env in enumerate(envs)])

    def whole_loop(env_step: Callable, record: list | None = None) -> tuple[float, float]:
        obs, in_policy, in_env = reset(), 0.0, 0.0
        for _ in range(args.steps):
            start = time.perf_counter()
            actions = policy.act(obs)
            acted = time.perf_counter()
            obs = env_step(actions)
            in_policy += acted - start
            in_env += time.perf_counter() - acted
            if record is not None:
                record.append(actions)
        return in_policy, in_env

    def raw_physics(controls: list) -> float:
        reset()
        start = time.perf_counter()
        for actions in controls:
            for env, action in zip(envs, actions):
                env.data.ctrl[:] = action
                mujoco.mj_step(env.model, env.data, nstep=env.frame_skip)
        return time.perf_counter() - start

    def env_alone(controls: list) -> float:
        reset()
        start = time.perf_counter()
        for actions in controls:
            batched(actions)
        return time.perf_counter() - start

    def policy_alone(observations: np.ndarray) -> float:
        reset()
        start = time.perf_counter()
        for _ in range(args.steps):
            policy.act(observations)
        return time.perf_counter() - start

    controls: list = []
    whole_loop(batched, controls)  # warm-up (compilation), and the controls to replay
    observations = reset()
    per = 1e6 / (args.steps * args.members)
    print(f"{args.env}, {args.members} members x {args.steps} steps; us per member-step")
    ratios: dict[str, list[float]] = {"batched": [], "each env": [], "batched vs each env": []}
    for repeat in range(args.repeats):
        in_policy, in_env = whole_loop(batched)
        each = sum(whole_loop(each_env))
        raw, env_only, policy_only = raw_physics(controls), env_alone(controls), policy_alone(observations)
        total = in_policy + in_env
        ratios["batched"].append(raw / total)
        ratios["each env"].append(raw / each)
        ratios["batched vs each env"].append(each / total)
        print(
            f"repeat {repeat}: batched loop {total * per:.1f} (policy {in_policy * per:.1f}, "
            f"env {in_env * per:.1f}), each-env loop {each * per:.1f} | raw mj_step {raw * per:.1f}, "
            f"batched env alone {env_only * per:.1f}, policy alone {policy_only * per:.1f}",
            flush=True,
        )
    low, mid, high = (np.percentile(ratios["batched"], q) for q in (0, 50, 100))
    print(f"raw physics / batched loop: median {mid:.2f}x (range {low:.2f}-{high:.2f})")
    low, mid, high = (np.percentile(ratios["each env"], q) for q in (0, 50, 100))
    print(f"raw physics / each-env loop: median {mid:.2f}x (range {low:.2f}-{high:.2f})")
    low, mid, high = (np.percentile(ratios["batched vs each env"], q) for q in (0, 50, 100))
    print(f"batched loop speed-up over each-env loop: median {mid:.2f}x (range {low:.2f}-{high:.2f})")

    compiled_against_python_physics(args)

    reset()
    rng = np.random.default_rng(1)
    low_action, high_action = envs[0].action_space.low, envs[0].action_space.high
    raw_calls, batch_calls = [], []
    for _ in range(args.env_calls):
        actions = rng.uniform(low_action, high_action, (args.members, len(low_action))).astype(np.float32)
        start = time.perf_counter()
        for env, action in zip(envs, actions):
            env.data.ctrl[:] = action
            mujoco.mj_step(env.model, env.data, nstep=env.frame_skip)
            mujoco.mj_rnePostConstraint(env.model, env.data)
        middle = time.perf_counter()
        batched(actions)
        raw_calls.append(middle - start)
        batch_calls.append(time.perf_counter() - middle)
    raw_step, batch_step = (1e6 * np.median(calls) / args.members for calls in (raw_calls, batch_calls))
    print(
        f"env step, call by call: raw physics {raw_step:.1f}, EnvBatch.step {batch_step:.1f}, "
        f"its own work {batch_step - raw_step:.1f} us per member-step"
    )


def compiled_against_python_physics(args: argparse.Namespace) -> None:
    """The whole loop on two identical groups, physics compiled or from Python, stepped in turn."""
    try:
        resolve_env_kernel("numba")
    except ValueError as unavailable:
        print(f"no compiled-physics comparison: {unavailable}")
        return
    groups = {}
    for kernel in ("numba", "python"):
        envs = [make_env(args.env).unwrapped for _ in range(args.members)]
        policy = make_policy("hebbian", envs[0].observation_space, envs[0].action_space)
        groups[kernel] = (envs, type(envs[0]).batch(envs, kernel=kernel), policy)
    rng = np.random.default_rng(2)
    params = np.stack([groups["numba"][2].initial_params(rng) for _ in range(args.members)])
    times: dict[str, list[float]] = {kernel: [] for kernel in groups}
    for episode in range(args.ab_episodes + 1):  # the first is a warm-up (the kernel's compilation)
        obs = {}
        for kernel, (envs, _, policy) in groups.items():
            policy.set_params(params)
            policy.reset(list(range(episode * args.members, (episode + 1) * args.members)))
            obs[kernel] = np.stack([env.reset(seed=1000 * episode + i)[0] for i, env in enumerate(envs)])
        for step in range(args.steps):
            for kernel in ("numba", "python") if step % 2 == 0 else ("python", "numba"):
                _, batch, policy = groups[kernel]
                start = time.perf_counter()
                obs[kernel] = batch.step(policy.act(obs[kernel]))[0]
                if episode:
                    times[kernel].append(time.perf_counter() - start)
        if not np.array_equal(obs["numba"], obs["python"]):
            raise AssertionError("compiled and Python physics gave different episodes")
    compiled, python = (np.array(times[kernel]) for kernel in ("numba", "python"))
    low, mid, high = np.percentile(python / compiled, [25, 50, 75])
    per = [1e6 * np.median(t) / args.members for t in (compiled, python)]
    print(
        f"whole loop, compiled vs Python physics, {len(compiled)} group-steps each, stepped in turn: "
        f"{per[0]:.1f} against {per[1]:.1f} us per member-step (medians); per-step speed-up "
        f"median {mid:.2f}x (quartiles {low:.2f}-{high:.2f})"
    )


if __name__ == "__main__":
    main()
