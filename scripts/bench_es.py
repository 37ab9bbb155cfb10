"""Environment steps per second of full ES generations, against the physics engine's own rate.

Issue 6's benchmark. For each environment (``hebb/HalfCheetahDamage-v0``, ``hebb/AntDamage-v0``;
stock ``HalfCheetah-v5`` / ``Ant-v5`` if the hebb ids are not registered) and every measurement
in this run:

- raw physics: ``mujoco.mj_step(model, data, nstep=frame_skip)`` on the same model, one core,
  a random control every step;
- raw physics on the ES run's own episodes: the start states and controls of the first
  ``--replay-members`` members of generation 0, recorded and replayed through ``mj_step`` alone
  (a step's cost depends on the state: contacts, solver iterations), the fairest "physics limit";
  replayed again right after every ES run, which is compared with that adjacent figure (a shared
  machine's speed drifts by up to 2x over minutes);
- gymnasium: one environment's ``env.step`` with random actions (the env's own Python per step);
- ES: full generations (candidates from seeds -> lockstep rollouts on persistent workers ->
  ``OpenES.tell``) with 1 and 2 worker processes, per kernel, lockstep group size and env batching
  (``--env-batching on,off``: one batched env call per step, or each env in turn) and, with
  ``--compiled-episodes off,on``, also with each member's whole episode as one compiled call
  (:mod:`hebb_agents.compiled_episodes`; it rounds the forward pass differently); env-steps/s,
  the ES bookkeeping's share of the generation (candidates and ``tell`` in the driver, whose
  noise is drawn while the workers run, as ``hebb train`` does, plus the workers' rebuild of
  their candidates from the seeds, timed again for the largest slice), and the
  speed-up from 1 to 2 workers;
- paired scaling (``--paired-rounds``): the worker speed-up again, measured so that the machine's
  drift cannot fake or hide it: one backend per worker count, all alive, the same generation
  evaluated on each in turn and back (1, 2, 2, 1) every round, and the two-process physics
  ceiling timed right after; per-round ratios and their median;
- reference-style loop, written here only as a baseline: one individual at a time, a new
  environment per evaluation, a torch forward pass and a per-synapse update loop (compiled with
  numba when it is installed, as the 2020 reference code did; plain Python otherwise). It is
  timed on ``--ref-steps`` steps and a few environment creations and *extrapolated* to the ES
  run's episode lengths;
- memory: resident set size (driver + workers) after each of ``--memory-generations`` small
  generations.

Rates are given twice: per wall-clock second, and per CPU-second (process CPU time of the driver
and its workers, from ``/proc``). On a machine shared with other jobs the wall-clock figures
swing with the load; the CPU-time figures measure the code, so the ratios "x raw per core" are
taken from CPU time (raw physics is timed in CPU time too).

    python scripts/bench_es.py                                   # popsize 200, 1000-step episodes
    python scripts/bench_es.py --popsize 40 --episode-steps 200 --generations 2   # shortened
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import multiprocessing
import os
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import mujoco
import numpy as np
import torch

from hebb_agents.backends import Candidates, ProcessBackend, split_population
from hebb_agents.es import OpenES
from hebb_agents.rollout import LockstepEvaluator, RolloutSpec, make_env, parse_lockstep_size
from hebb_agents.trainer import noise_drawn_meanwhile

ENVS = {"cheetah": ("hebb/HalfCheetahDamage-v0", "HalfCheetah-v5"), "ant": ("hebb/AntDamage-v0", "Ant-v5")}


def resolve_env(name: str) -> str:
    """``cheetah`` / ``ant``: the hebb id if registered, else the stock one; other registered ids as is."""
    import hebb_envs  # noqa: F401  (registers the hebb/ ids)

    if name in ENVS:
        hebb_id, stock_id = ENVS[name]
        return hebb_id if hebb_id in gym.registry else stock_id
    if name in gym.registry:
        # every figure is a ratio to the raw mj_step rate of the env's own model
        env = gym.make(name)
        mujoco_env = hasattr(env.unwrapped, "model") and hasattr(env.unwrapped, "frame_skip")
        env.close()
        if mujoco_env:
            return name
        raise SystemExit(
            f"--envs: {name!r} is not a MuJoCo env (no model and frame_skip to time mj_step on); "
            f"accepted: {', '.join(ENVS)} or a registered MuJoCo env id"
        )
    raise SystemExit(f"--envs: unknown {name!r}; accepted: {', '.join(ENVS)} or a registered MuJoCo env id")


def cpu_seconds(pids: list[int]) -> float:
    """CPU time (user + system) consumed so far by the given processes (Linux /proc)."""
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime in clock ticks
    return total / os.sysconf("SC_CLK_TCK")


def raw_physics_rate(env_id: str, steps: int) -> float:
    """Physics steps per CPU-second: ``mj_step(nstep=frame_skip)`` on the env's model, no env around it.

    A new uniform random control every step (a control held fixed lets the robot settle into a
    pose that is about half as costly to simulate).
    """
    env = make_env(env_id)
    env.reset(seed=0)
    model, data, skip = env.unwrapped.model, env.unwrapped.data, env.unwrapped.frame_skip
    low, high = model.actuator_ctrlrange.T
    controls = np.random.default_rng(0).uniform(low, high, (steps, model.nu))
    best = float("inf")
    for _ in range(3):
        mujoco.mj_resetData(model, data)
        start = time.process_time()
        for ctrl in controls:
            data.ctrl[:] = ctrl
            mujoco.mj_step(model, data, nstep=skip)
        best = min(best, time.process_time() - start)
    env.close()
    return steps / best


def _physics_for(env_id: str, seconds: float, barrier: Any) -> int:
    """``mj_step`` calls made in ``seconds`` of wall time, started at ``barrier``.

    Every process replays the same 200-step random-control episode from the same start, again
    and again, so that all of them do the same physics: a random episode per process can cost
    twice as much as another (a cheetah on its back makes fewer contacts).
    """
    env = make_env(env_id)
    model, data, skip = env.unwrapped.model, env.unwrapped.data, env.unwrapped.frame_skip
    low, high = model.actuator_ctrlrange.T
    controls = np.random.default_rng(0).uniform(low, high, (200, model.nu))
    steps = 0
    barrier.wait()
    stop = time.perf_counter() + seconds
    while time.perf_counter() < stop:
        env.reset(seed=0)
        for ctrl in controls:
            data.ctrl[:] = ctrl
            mujoco.mj_step(model, data, nstep=skip)
        steps += len(controls)
    env.close()
    return steps


def physics_scaling(
    env_id: str, processes: int, seconds: float = 3.0, repeats: int = 2, base: int = 1
) -> float:
    """Wall-clock physics rate of ``processes`` concurrent ``mj_step`` loops over that of ``base``.

    The machine's own ceiling for a worker speed-up: shared caches, memory bandwidth and other
    tenants limit it before any ES code runs. Best of ``repeats`` alternating measurements each.
    """
    context = multiprocessing.get_context("spawn")
    best = {base: 0.0, processes: 0.0}
    for _ in range(repeats):
        for count in best:
            with context.Manager() as manager, context.Pool(count) as pool:
                barrier = manager.Barrier(count)
                steps = pool.starmap(_physics_for, [(env_id, seconds, barrier)] * count)
            best[count] = max(best[count], sum(steps) / seconds)
    return best[processes] / best[base]


class _ControlRecorder(gym.Wrapper):
    """Keeps what the physics saw: the state after each reset, then every control applied."""

    episodes: list[tuple[mujoco.MjModel, dict[str, np.ndarray], list[np.ndarray]]] = []

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        out = self.env.reset(**kwargs)
        data = self.env.unwrapped.data
        state = {name: getattr(data, name).copy() for name in ("qpos", "qvel", "act", "qacc_warmstart")}
        self._controls: list[np.ndarray] = []  # this env's episode; envs step in lockstep
        self.episodes.append((self.env.unwrapped.model, state, self._controls))
        return out

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        out = self.env.step(action)
        self._controls.append(self.env.unwrapped.data.ctrl.copy())
        return out


def replay_physics(
    episodes: list[tuple[mujoco.MjModel, dict[str, np.ndarray], list[np.ndarray]]], frame_skip: int
) -> tuple[int, float, list[np.ndarray]]:
    """Replay recorded episodes through ``mj_step`` alone: (steps, CPU seconds, final ``qpos`` each)."""
    steps, seconds, finals = 0, 0.0, []
    for model, state, controls in episodes:
        data = mujoco.MjData(model)
        for name, value in state.items():
            getattr(data, name)[:] = value
        mujoco.mj_forward(model, data)
        start = time.process_time()
        for ctrl in controls:
            data.ctrl[:] = ctrl
            mujoco.mj_step(model, data, nstep=frame_skip)
        seconds += time.process_time() - start
        steps += len(controls)
        finals.append(data.qpos.copy())
    return steps, seconds, finals


def record_trajectories(env_id: str, members: int, args: argparse.Namespace) -> tuple[list, int]:
    """Start states and controls of ``members`` members of a first ES generation, and the frame skip.

    A physics step's cost depends on the state (contacts, solver iterations), so the random
    controls of :func:`raw_physics_rate` need not cost what an ES population's controls cost;
    :func:`replay_rate` replays these episodes through ``mj_step`` alone.
    """
    recorded_id = f"bench/Recorded-{env_id.split('/')[-1]}"
    if recorded_id not in gym.registry:
        gym.register(recorded_id, entry_point=lambda **kw: _ControlRecorder(make_env(env_id, **kw)))
    evaluator = LockstepEvaluator(RolloutSpec(env_id=recorded_id, max_steps=args.episode_steps))
    init = evaluator.policy.initial_params(np.random.default_rng(0))
    es = OpenES(evaluator.num_params, popsize=args.popsize, seed=0, init=init)
    _ControlRecorder.episodes = []
    evaluator.evaluate(es.ask()[:members], np.arange(members), seed=0, generation=0)
    return list(_ControlRecorder.episodes), evaluator.envs[0].unwrapped.frame_skip


def replay_rate(trajectories: tuple[list, int]) -> float:
    """Physics steps per CPU-second of raw ``mj_step`` replaying recorded ES episodes."""
    steps, seconds, _ = replay_physics(*trajectories)
    return steps / seconds


def gym_step_rate(env_id: str, steps: int) -> float:
    """env-steps per CPU-second of one gymnasium environment with random actions (resets included)."""
    env = make_env(env_id)
    env.reset(seed=0)
    env.action_space.seed(0)
    actions = [env.action_space.sample() for _ in range(steps)]
    start = time.process_time()
    for action in actions:
        _, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            env.reset()
    rate = steps / (time.process_time() - start)
    env.close()
    return rate


def rss_mb(pids: list[int]) -> float:
    """Resident memory of the given processes, MiB (Linux /proc)."""
    total = 0
    for pid in pids:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total / 1024


def es_run(
    env_id: str,
    workers: int,
    kernel: str,
    args: argparse.Namespace,
    policy: str = "hebbian",
    lockstep_size: int | str = "auto",
    batch_envs: bool = True,
    compiled_episodes: bool = False,
) -> dict:
    """Run warm-up + timed ES generations; env-steps/s, ES share, mean episode length."""
    os.environ["HEBB_KERNEL"] = kernel  # spawned workers read it when they build their network
    spec = RolloutSpec(
        env_id=env_id,
        max_steps=args.episode_steps,
        policy=policy,
        lockstep_size=lockstep_size,
        batch_envs=batch_envs,
        compiled_episodes=compiled_episodes,
    )
    probe = LockstepEvaluator(spec)
    init = probe.policy.initial_params(np.random.default_rng(0))
    es = OpenES(probe.num_params, popsize=args.popsize, seed=0, init=init)
    steps = lengths = 0.0
    eval_time = es_time = cpu_time = 0.0
    with ProcessBackend(spec, workers=workers) as backend:
        pids = [os.getpid(), *backend.pids]
        for generation in range(args.generations + 1):  # generation 0 warms up (env creation, compile)
            cpu_start = cpu_seconds(pids)
            start = time.perf_counter()
            candidates = Candidates.from_es(es)
            asked = time.perf_counter()
            shared = backend._noise_path(candidates.noise_seed)  # drawn ahead during the last generation?
            shared = shared if shared is not None and shared.exists() else None
            # as the trainer does: tell's noise, and the next generation's for the workers, drawn
            # while the workers run
            with noise_drawn_meanwhile(es, backend):
                result = backend.evaluate_candidates(candidates, seed=0, generation=generation)
            evaluated = time.perf_counter()
            noise = es.noise()  # this generation's rows, kept for timing the workers' rebuild below
            es.tell(result.fitness)
            told = time.perf_counter()
            if generation == 0:
                continue
            cpu_time += cpu_seconds(pids) - cpu_start
            steps += result.env_steps
            lengths += float(result.lengths.mean())
            # The workers rebuild their candidates from the seeds (ES noise regenerated): ES work,
            # though it runs inside the evaluation. Timed again here, for the largest slice (the
            # one the generation waits for), and moved from evaluation to ES time.
            largest = max(split_population(args.popsize, workers), key=len)
            if shared is not None:  # the workers read the rows the driver drew: so does this timing
                np.save(shared, noise)
                candidates = dataclasses.replace(candidates, noise_file=str(shared))
            rebuilt = time.perf_counter()
            candidates.rows(largest)
            rebuild = time.perf_counter() - rebuilt
            if shared is not None:
                shared.unlink()
            eval_time += evaluated - asked - rebuild
            es_time += (asked - start) + (told - evaluated) + rebuild
    # compiled episodes run member after member: no lockstep group
    group = "-" if compiled_episodes else f"{lockstep_size}={probe.group_size(-(-args.popsize // workers))}"
    return {
        "rate": steps / (eval_time + es_time),
        "cpu_rate": steps / cpu_time,
        "es_share": es_time / (eval_time + es_time),
        "mean_length": lengths / args.generations,
        "num_params": probe.num_params,
        "group": group,
    }


def _listed(values: np.ndarray) -> str:
    return ", ".join(f"{value:.2f}" for value in values)


def paired_scaling(
    env_id: str,
    workers: list[int],
    kernel: str,
    rounds: int,
    args: argparse.Namespace,
    compiled: bool = False,
) -> tuple[dict[int, list[float]], dict[int, list[float]]]:
    """Worker speed-ups measured in turns on identical work, with the machine's ceiling beside them.

    One :class:`ProcessBackend` per worker count, all alive at once (an idle one's workers block on
    their pipes). Each round evaluates the same candidates (generation 0 of one ES, same seed: the
    same episodes, step for step) on every backend in turn, there and back (1, 2, 2, 1), then
    times the physics ceiling of :func:`physics_scaling` for the same counts. A 1 -> 2 worker
    ratio from two runs minutes apart carries the machine's drift (up to 2x here); ratios within a
    round are seconds apart.
    Returns, per worker count (the first left out), the ES and the physics ratios of every round.
    ``compiled``: the rollouts run as compiled episodes.
    """
    os.environ["HEBB_KERNEL"] = kernel
    spec = RolloutSpec(env_id=env_id, max_steps=args.episode_steps, compiled_episodes=compiled)
    probe = LockstepEvaluator(spec)
    init = probe.policy.initial_params(np.random.default_rng(0))
    candidates = Candidates.from_es(OpenES(probe.num_params, popsize=args.popsize, seed=0, init=init))
    es_ratios: dict[int, list[float]] = {count: [] for count in workers[1:]}
    physics_ratios: dict[int, list[float]] = {count: [] for count in workers[1:]}
    backends: list[ProcessBackend] = []
    try:
        for count in workers:
            backends.append(ProcessBackend(spec, workers=count))
        for backend in backends:  # warm-up: environments built, kernels compiled
            backend.evaluate_candidates(candidates, seed=0, generation=0)
        for _ in range(rounds):
            # in the order 1, 2, ..., 2, 1: a drift of the machine's speed that is linear over the
            # round costs every worker count alike
            seconds = [0.0] * len(backends)
            for index in [*range(len(backends)), *reversed(range(len(backends)))]:
                start = time.perf_counter()
                backends[index].evaluate_candidates(candidates, seed=0, generation=0)
                seconds[index] += time.perf_counter() - start
            for index, count in enumerate(workers[1:], start=1):
                es_ratios[count].append(seconds[0] / seconds[index])
                physics_ratios[count].append(
                    physics_scaling(env_id, count, seconds=1.5, repeats=2, base=workers[0])
                )
    finally:
        for backend in backends:
            backend.close()
    return es_ratios, physics_ratios


def memory_run(env_id: str, args: argparse.Namespace, compiled: bool = False) -> list[float]:
    """RSS (driver + workers, MiB) after each of many small generations (``compiled``: as compiled
    episodes)."""
    spec = RolloutSpec(env_id=env_id, max_steps=args.memory_steps, compiled_episodes=compiled)
    probe = LockstepEvaluator(spec)
    es = OpenES(probe.num_params, popsize=args.memory_popsize, seed=0)
    trace = []
    with ProcessBackend(spec, workers=2) as backend:
        for generation in range(args.memory_generations):
            result = backend.evaluate_candidates(Candidates.from_es(es), seed=0, generation=generation)
            es.tell(result.fitness)
            trace.append(rss_mb([os.getpid(), *backend.pids]))
    return trace


def _reference_update(w: np.ndarray, coeffs: np.ndarray, pre: np.ndarray, post: np.ndarray) -> None:
    """The reference's ABCD_lr update, one synapse at a time (coeffs columns A, B, C, eta, D)."""
    n_in, n_out = w.shape
    for i in range(n_in):
        for j in range(n_out):
            a, b, c, eta, d = coeffs[i * n_out + j]
            w[i, j] += eta * (a * pre[i] * post[j] + b * pre[i] + c * post[j] + d)


def reference_style_costs(env_id: str, ref_steps: int, creations: int) -> tuple[float, float, str]:
    """(seconds per step, seconds per new environment + reset) of the reference-style loop."""
    update = _reference_update
    how = "plain Python"
    if importlib.util.find_spec("numba"):
        import numba

        update = numba.njit(_reference_update)  # the reference compiled its per-synapse loops so
        how = "numba-compiled"
    start = time.process_time()
    for index in range(creations):
        env = make_env(env_id)
        env.reset(seed=index)
        env.close()
    per_env = (time.process_time() - start) / creations

    env = make_env(env_id)
    obs, _ = env.reset(seed=0)
    sizes = [int(np.prod(env.observation_space.shape)), 128, 64, int(np.prod(env.action_space.shape))]
    rng = np.random.default_rng(0)
    weights = [
        rng.uniform(-0.1, 0.1, (n_in, n_out)).astype(np.float32) for n_in, n_out in zip(sizes, sizes[1:])
    ]
    coeffs = [rng.normal(0, 0.1, (w.size, 5)).astype(np.float32) for w in weights]
    torch.set_num_threads(1)

    def one_step(obs: np.ndarray) -> np.ndarray:
        acts = [np.asarray(obs, np.float32)]
        with torch.no_grad():
            x = torch.from_numpy(acts[0])
            for w in weights:  # torch forward on the current (numpy-held) weights
                x = torch.tanh(x @ torch.from_numpy(w))
                acts.append(x.numpy().copy())
        for layer, w in enumerate(weights):
            update(w, coeffs[layer], acts[layer], acts[layer + 1])
        return acts[-1]

    one_step(obs)  # compile / warm up
    start = time.process_time()
    for _ in range(ref_steps):
        obs, _, terminated, truncated, _ = env.step(one_step(obs))
        if terminated or truncated:
            obs, _ = env.reset()
    per_step = (time.process_time() - start) / ref_steps
    env.close()
    return per_step, per_env, how


def _on_off(parser: argparse.ArgumentParser, option: str, text: str) -> list[bool]:
    """A comma list of ``on``/``off`` as booleans; a parser error names anything else."""
    values = text.split(",")
    for value in values:
        if value not in ("on", "off"):
            parser.error(f"{option} takes a comma list of on, off; got {value!r}")
    return [value == "on" for value in values]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--envs", default="cheetah,ant", help="comma list of: cheetah, ant, or MuJoCo env ids"
    )
    parser.add_argument("--popsize", type=int, default=200)
    parser.add_argument("--episode-steps", type=int, default=1000)
    parser.add_argument("--generations", type=int, default=2, help="timed generations (after one warm-up)")
    parser.add_argument("--workers", default="1,2", help="comma list of worker counts")
    parser.add_argument("--kernels", default="numpy,numba", help="comma list of: numpy, numba")
    parser.add_argument("--static", action="store_true", help="also time static-weight policies (numpy)")
    parser.add_argument(
        "--lockstep-sizes",
        default="auto,all",
        help="comma list of members a worker steps together (RolloutSpec.lockstep_size): auto, all "
        "or a number",
    )
    parser.add_argument(
        "--env-batching",
        default="on",
        help="comma list of on, off (RolloutSpec.batch_envs): step a group's envs with one batched call "
        "where the env class offers it, or each env in turn; 'on,off' measures what batching saves",
    )
    parser.add_argument(
        "--compiled-episodes",
        default="off",
        help="comma list of off, on (RolloutSpec.compiled_episodes): run each member's whole episode as "
        "one compiled call (Hebbian policies on the hebb/ Ant and HalfCheetah; numba kernel rows only); "
        "the paired scaling and the memory run take the last value",
    )
    parser.add_argument(
        "--replay-members", type=int, default=16, help="members whose episodes are replayed on raw mj_step"
    )
    parser.add_argument("--ref-steps", type=int, default=300, help="steps timed for the reference-style loop")
    parser.add_argument(
        "--paired-rounds",
        type=int,
        default=3,
        help="rounds of the paired worker-scaling measurement (same generation on every worker count "
        "in turn, physics ceiling beside it); 0 skips it",
    )
    parser.add_argument("--memory-generations", type=int, default=100)
    parser.add_argument("--memory-popsize", type=int, default=20)
    parser.add_argument("--memory-steps", type=int, default=50)
    args = parser.parse_args()
    kernels = [k for k in args.kernels.split(",") if k != "numba" or importlib.util.find_spec("numba")]
    workers = [int(w) for w in args.workers.split(",")]
    groups = [parse_lockstep_size(g) for g in args.lockstep_sizes.split(",")]
    batchings = _on_off(parser, "--env-batching", args.env_batching)
    compilings = _on_off(parser, "--compiled-episodes", args.compiled_episodes)
    print(
        f"popsize {args.popsize}, episodes capped at {args.episode_steps} steps, {args.generations} timed "
        f"generations after one warm-up; {os.cpu_count()} CPUs visible\n"
    )
    for name in args.envs.split(","):
        env_id = resolve_env(name)
        physics = raw_physics_rate(env_id, 2000)
        gym_rate = gym_step_rate(env_id, 2000)
        print(f"== {env_id}   (rates per CPU-second unless marked wall)")
        print(f"raw mj_step x frame_skip, 1 core : {physics:7.0f} steps/s  1.00x")
        print(f"gymnasium env.step, random acts : {gym_rate:7.0f} steps/s  {gym_rate / physics:.2f}x raw")
        trajectories = record_trajectories(env_id, args.replay_members, args) if args.replay_members else None
        replayed = replay_rate(trajectories) if trajectories else None
        if replayed:
            print(
                f"raw mj_step on ES trajectories  : {replayed:7.0f} steps/s  {replayed / physics:.2f}x raw "
                f"(first {args.replay_members} members of generation 0 replayed)"
            )
        for count in workers[1:]:
            ceiling = physics_scaling(env_id, count, base=workers[0])
            print(
                f"raw mj_step, {count} processes at once: {ceiling:.2f}x the wall rate of {workers[0]} "
                f"(this machine's ceiling for a {workers[0]} -> {count} worker speed-up)",
                flush=True,
            )
        runs: dict[tuple[str, int], dict] = {}
        rows = [
            (kernel, "hebbian", g, b, c)
            for kernel in kernels
            for c in compilings
            for g in (groups if not c else ["auto"])  # compiled episodes run one member at a time
            for b in (batchings if not c else [True])
            if not c or kernel == "numba"
        ]
        rows += [("numpy", "static", "auto", b, False) for b in batchings] if args.static else []
        for kernel, policy, group, batched, compiled in rows:
            label = f"{policy}/{kernel}/lockstep {group}/{batched}/{compiled}"
            envs = "compiled" if compiled else "batched" if batched else "per-env"
            for count in workers:
                run = es_run(env_id, count, kernel, args, policy, group, batched, compiled)
                runs[(label, count)] = run
                speedup = ""
                first = runs.get((label, workers[0]))
                if count != workers[0] and first is not None:
                    speedup = f"; wall {run['rate'] / first['rate']:.2f}x vs {workers[0]} worker(s)"
                # The machine's speed drifts (other tenants): the replay is timed again right after each
                # run, and that adjacent figure is the one this run is compared with.
                versus_replay = ""
                if trajectories:
                    adjacent = replay_rate(trajectories)
                    versus_replay = (
                        f", {run['cpu_rate'] / adjacent:.2f}x replayed (replay then {adjacent:.0f}/s)"
                    )
                print(
                    f"ES {policy:<7} {kernel:<5} lockstep {run['group']:<8} {envs:<8} {count:>2} worker(s): "
                    f"{run['cpu_rate']:7.0f} steps/s  "
                    f"{run['cpu_rate'] / physics:.2f}x raw{versus_replay} per core "
                    f"(wall {run['rate']:.0f} steps/s{speedup}; "
                    f"ES bookkeeping {run['es_share']:.2%}, mean episode {run['mean_length']:.0f} steps)",
                    flush=True,
                )
        any_run = next(iter(runs.values()))
        per_step, per_env, how = reference_style_costs(env_id, args.ref_steps, 5)
        mean_len = any_run["mean_length"]
        ref_rate = mean_len / (mean_len * per_step + per_env)
        print(
            f"reference-style loop            : {ref_rate:7.0f} steps/s  {ref_rate / physics:.2f}x raw  "
            f"({how} per-synapse update, torch forward, a new env per evaluation: "
            f"{per_step * 1e6:.0f} us/step and {per_env * 1e3:.1f} ms/new env timed on "
            f"{args.ref_steps} steps and 5 creations, "
            f"extrapolated to {mean_len:.0f}-step episodes)"
        )
        best = max(run["cpu_rate"] for (label, count), run in runs.items() if count == workers[0])
        print(f"best {workers[0]}-worker ES vs reference-style loop: {best / ref_rate:.1f}x", flush=True)
        if args.paired_rounds and len(workers) > 1:
            kernel = "numba" if "numba" in kernels else kernels[0]
            compiled = compilings[-1] and kernel == "numba"
            es_ratios, physics_ratios = paired_scaling(
                env_id, workers, kernel, args.paired_rounds, args, compiled
            )
            how = "compiled episodes" if compiled else "lockstep auto, batched"
            print(
                f"paired scaling ({kernel}, {how}; {args.paired_rounds} rounds, each the same generation "
                "on every worker count in turn and back, then the physics ceiling):"
            )
            for count in workers[1:]:
                ours, ceiling = np.array(es_ratios[count]), np.array(physics_ratios[count])
                share = ours / ceiling
                print(
                    f"  {workers[0]} -> {count} workers: ES wall {_listed(ours)} "
                    f"(median {np.median(ours):.2f}x); raw mj_step {_listed(ceiling)} "
                    f"(median {np.median(ceiling):.2f}x); ES / ceiling per round {_listed(share)} "
                    f"(median {np.median(share):.2f})",
                    flush=True,
                )
        print()

    if args.memory_generations:
        env_id = resolve_env(args.envs.split(",")[0])
        compiled = compilings[-1] and importlib.util.find_spec("numba") is not None
        trace = memory_run(env_id, args, compiled)
        last = len(trace) - 1
        marks = sorted({0, *range(9, last, 10), last})
        how = ", compiled episodes" if compiled else ""
        print(
            f"memory, {env_id}, {args.memory_generations} generations of popsize {args.memory_popsize} x "
            f"{args.memory_steps} steps, 2 workers{how}, RSS driver + workers:"
        )
        print("  " + ", ".join(f"gen {g + 1}: {trace[g]:.1f} MiB" for g in marks))
        first = 9 if last > 9 else 0  # from generation 10 (start-up done), or from 1 in short runs
        print(f"  growth from generation {first + 1} to the last: {trace[-1] - trace[first]:+.1f} MiB")


if __name__ == "__main__":
    main()
