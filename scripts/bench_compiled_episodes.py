"""Compiled episodes against the lockstep rollout and raw physics, interleaved: issue 6's per-core goal.

One process, one population (``--members`` random first-generation members of the ES, 1,000-step
episodes), evaluated round after round three ways, each timed in CPU time:

- ``lockstep``: :class:`~hebb_agents.rollout.LockstepEvaluator` as ``hebb train`` runs it (one group,
  batched env steps, numba kernels);
- ``compiled``: the same with ``compiled_episodes=True`` (:mod:`hebb_agents.compiled_episodes`);
- ``replay``: raw ``mj_step`` x frame skip replaying the lockstep episodes' start states and controls
  (recorded once, through ``scripts/bench_es.py``'s recorder), the physics those episodes asked for.

The compiled episodes round their forward pass differently, so after some steps they follow other
trajectories than the replayed ones: same policies, same start states, other rounding. Ratios are
taken within each round (this machine's speed drifts by up to 2x over minutes) and their medians
printed: ``x replay`` is the per-core share of the physics limit that issue 6 asks to be >= 0.8.

    python scripts/bench_compiled_episodes.py --env cheetah --rounds 8
    python scripts/bench_compiled_episodes.py --env ant --rounds 5
"""

from __future__ import annotations

import argparse
import time

import gymnasium as gym
import numpy as np
from bench_es import _ControlRecorder, replay_physics, resolve_env

from hebb_agents.es import OpenES
from hebb_agents.rollout import LockstepEvaluator, RolloutSpec, make_env


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--env", default="cheetah", help="cheetah, ant or a hebb/ env id")
    parser.add_argument("--members", type=int, default=19, help="population evaluated each round")
    parser.add_argument("--episode-steps", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument(
        "--hidden", type=int, nargs="+", default=[128, 64], help="hidden layers (the paper's 128 64)"
    )
    args = parser.parse_args()
    env_id = resolve_env(args.env)
    recorded_id = f"bench/Recorded-{env_id.split('/')[-1]}"
    gym.register(recorded_id, entry_point=lambda **kw: _ControlRecorder(make_env(env_id, **kw)))
    spec = {"max_steps": args.episode_steps, "lockstep_size": "all", "policy_config": {"hidden": args.hidden}}
    lockstep = LockstepEvaluator(RolloutSpec(env_id=env_id, **spec))
    compiled = LockstepEvaluator(RolloutSpec(env_id=env_id, compiled_episodes=True, **spec))
    recorder = LockstepEvaluator(RolloutSpec(env_id=recorded_id, **spec))
    init = lockstep.policy.initial_params(np.random.default_rng(0))
    params = OpenES(lockstep.num_params, popsize=2 * (-(-args.members // 2)), seed=0, init=init).ask()
    params = params[: args.members]
    ids = np.arange(args.members)
    _ControlRecorder.episodes = []
    recorded = recorder.evaluate(params, ids, seed=0, generation=0)
    episodes = list(_ControlRecorder.episodes)
    frame_skip = recorder.envs[0].unwrapped.frame_skip
    compiled.evaluate(params[:1], ids[:1], seed=0, generation=0)  # compiles the episode kernel
    print(
        f"{env_id}: {args.members} members, episodes capped at {args.episode_steps} steps, "
        f"{args.rounds} rounds (CPU time; ratios within each round)"
    )
    names = ("compiled x replay", "lockstep x replay", "compiled x lockstep")
    ratios: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(args.rounds):
        rates = {}
        for name, evaluator in (("lockstep", lockstep), ("compiled", compiled)):
            start = time.process_time()
            result = evaluator.evaluate(params, ids, seed=0, generation=0)
            rates[name] = result.env_steps / (time.process_time() - start)
        steps, seconds, _ = replay_physics(episodes, frame_skip)
        rates["replay"] = steps / seconds
        ratios["compiled x replay"].append(rates["compiled"] / rates["replay"])
        ratios["lockstep x replay"].append(rates["lockstep"] / rates["replay"])
        ratios["compiled x lockstep"].append(rates["compiled"] / rates["lockstep"])
        print(
            f"round {round_}: steps per CPU-second lockstep {rates['lockstep']:7.0f}, compiled "
            f"{rates['compiled']:7.0f}, replay {rates['replay']:7.0f} (mean episode: lockstep "
            f"{recorded.lengths.mean():.0f}, compiled {result.lengths.mean():.0f} steps)",
            flush=True,
        )
    for name, values in ratios.items():
        print(f"{name:20s}: median {np.median(values):.2f}x (range {min(values):.2f}-{max(values):.2f})")


if __name__ == "__main__":
    main()
