"""The adaptation study in one command: Hebbian ES vs static ES vs PPO (and SAC) on damaged bodies.

    python scripts/damage_study.py                      # train everything, then evaluate
    python scripts/damage_study.py --skip-train         # re-evaluate the committed agents only
    python scripts/damage_study.py --quick              # a one-minute smoke run, into a new temporary folder
    python scripts/damage_study.py --large --robots half_cheetah  # HalfCheetah ES at population 64, 300 steps
    python scripts/damage_study.py ... --generations 100  # resume unfinished runs up to 100 generations

Every agent trains on the intact body plus the robot's *seen* damages (``damage="seen"``: one body
drawn per episode) and is tested on every morphology of the catalogue, seen and unseen, and on
damage applied mid-episode. The budget is sized for about an hour on a shared 2-core CPU; every
choice is in :class:`Budget` below with its reason, and the results folder's README states what
a paper-scale run would need.

Each budget has its own folders, so a smoke or large run never overwrites (or resumes) the default
study's: ``--out`` defaults to ``docs/results/damage_study`` (``_large`` with ``--large``) and ``--runs``
to ``runs/damage_study`` (``_large``); ``--quick`` writes both into a new temporary folder unless given.

Layout: training runs go to ``--runs`` (not committed); the small artefacts needed to re-evaluate
(ES policy vectors, SB3 models and their normalisation statistics, learning logs) are copied to
``<out>/agents/``; ``<out>/<robot>/`` holds tables and figures from :func:`hebb_agents.study.compare`,
``<out>/study.json`` the configuration, measured throughputs and wall times.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("MUJOCO_GL", "egl")
# One thread per process: jobs run side by side on few cores, and BLAS / torch thread pools in every
# job would fight over them (measured: PPO 8x slower with torch's default threads under load).
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")


@dataclass
class RobotBudget:
    """What one robot's part of the study trains, and how much."""

    env_id: str
    train_damage: str = "seen"
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    episode_steps: int = 200
    popsize: int = 32
    generations: int = 60
    fitness: str = "distance"
    es_seeds: tuple[int, ...] = (0, 1, 2)
    ppo_steps: int = 15_000
    ppo_seeds: tuple[int, ...] = (0, 1, 2)
    sac_steps: int = 0
    sac_seeds: tuple[int, ...] = (0,)
    damage_step: int = 100
    damages: tuple[str, ...] = ()


@dataclass
class Budget:
    """The study's sizes. Reasons (measured on this machine, 2 cores shared with other work):

    - Episodes of 200 steps (paper: 1000): the Hebbian network settles within tens of steps, and
      HalfCheetah gaits are established by step ~100; 5x shorter episodes buy 5x more generations.
    - Population 32 (paper: 200) and 60 generations (paper: hundreds) on HalfCheetah: one
      generation of 32 x 200 steps took ~2.4 s (Hebbian) / ~2.0 s (static) on one idle core and
      ~4x that with the machine shared (load average ~7 on 2 cores while this ran), so one run is
      3-10 min; x3 seeds x2 methods. Static and Hebbian get the same generations, so the same
      environment steps (384K per run).
    - Ant: ~1,100 Hebbian steps/s per idle core (2.5x slower than HalfCheetah, ~250/s shared), so
      one seed per method and 30 generations (192K steps).
    - PPO: 15,000 steps per run (~2.5-10 min at the 25-100 steps/s measured with the zoo's
      HalfCheetah entry, 20 epochs of minibatch 64 per 512 steps): a wall time similar to an ES
      run but ~25x fewer environment steps, i.e. a budget matched in time, not in samples.
    - SAC: not run by default. The zoo entry starts learning after 10,000 random steps, and SAC
      manages ~30-40 updates/s here, so a run in this budget would be mostly warm-up; pass
      ``--sac-steps`` to add one seed on HalfCheetah.
    - Each training job has a wall-time cap (a safety net, not the plan) so a busy machine shortens
      runs instead of overrunning; the steps actually used are in each run's log and study.json.
    """

    half_cheetah: RobotBudget = field(
        default_factory=lambda: RobotBudget(
            env_id="hebb/HalfCheetahDamage-v0",
            damages=("back_thigh_paralysed", "front_shin_paralysed", "front_thigh_weak"),
        )
    )
    ant: RobotBudget = field(
        default_factory=lambda: RobotBudget(
            env_id="hebb/AntDamage-v0",
            generations=30,
            es_seeds=(0,),
            ppo_seeds=(0,),
            damages=("front_left_short", "front_right_short", "back_right_paralysed"),
        )
    )
    es_time_cap_s: float = 900.0
    baseline_time_cap_s: float = 600.0
    eval_episodes: int = 10
    eval_seed: int = 1000

    @classmethod
    def large(cls) -> Budget:
        """HalfCheetah ES only, at the scale of the small run in REFERENCE.md that learned (population
        64, 300-step episodes), for 60 generations: 1.15M steps per run, 10-30 min (Hebbian) per run
        on one shared core depending on the load, x3 seeds x2 methods. PPO is left to the default
        budget (60 steps/s here)."""
        b = cls()
        b.half_cheetah = RobotBudget(
            env_id="hebb/HalfCheetahDamage-v0",
            episode_steps=300,
            popsize=64,
            generations=60,
            ppo_steps=0,
            damage_step=150,
            damages=b.half_cheetah.damages,
        )
        b.es_time_cap_s = 1800.0
        return b

    @classmethod
    def quick(cls) -> Budget:
        """A smoke-test budget: every stage runs, nothing learns."""
        b = cls()
        for robot in (b.half_cheetah, b.ant):
            robot.episode_steps, robot.popsize, robot.generations = 40, 4, 2
            robot.es_seeds, robot.ppo_seeds = (0,), (0,)
            robot.ppo_steps, robot.sac_steps = 512, 0
            robot.damage_step = 20
            robot.damages = robot.damages[:1]
        b.ant.ppo_steps = 2048  # SB3's PPO default rollout is 2048 steps
        b.es_time_cap_s = b.baseline_time_cap_s = 120.0
        b.eval_episodes = 2
        return b


# Ant: why this fitness and termination. Ant-v5's own reward pays +1 per step for staying healthy and
# ends the episode when the torso leaves z in [0.2, 1.0]; with saturated actions, which random and
# early plastic networks produce, the body hops above 1.0 within ~33 steps (REFERENCE.md), so episodes
# end before anything is learned, and an agent that stands still earns ~1 per step, a local optimum.
# The damaged Ant env's default healthy range (0.2, 3.0) keeps hopping bodies alive (it ends only on a
# torso below the floor or non-finite state), and ES fitness is forward distance only (no survival
# term): a flipped or stalled ant simply stops gaining distance, so no bonus is needed to avoid
# termination, and standing still is worth 0. PPO keeps the env's reward (its +1 per step is then
# constant, so it does not change PPO's optimum) on the same wide healthy range.
ANT_NOTE = (
    "ES fitness = forward distance (no survival bonus); healthy_z_range (0.2, 3.0) so hopping does not end "
    "episodes (Ant-v5's (0.2, 1.0) ended saturated-action episodes after ~33 steps and its +1/step "
    "healthy reward makes standing still a local optimum)."
)


# ---------------------------------------------------------------------------------------------- jobs
def _es_job(
    robot: str, rb: RobotBudget, policy: str, seed: int, run: Path, time_cap: float
) -> dict[str, Any]:
    from hebb_agents.trainer import ESTrainer, TrainConfig

    if (run / "policy.npz").exists() and (run / "done.json").exists():
        return json.loads((run / "done.json").read_text())
    start = time.perf_counter()

    def cap(stats: Any, trainer: Any) -> bool:
        return time.perf_counter() - start < time_cap

    if (run / "checkpoint.npz").exists():
        # An interrupted run continues exactly from its last checkpoint (the trainer's resume is exact).
        trainer = ESTrainer.resume(run, callbacks=[cap], generations=rb.generations, backend="serial")
    else:
        if run.exists():
            shutil.rmtree(run)
        policy_config: dict[str, Any] = {"hidden": [128, 64]}
        if policy == "hebbian":
            policy_config.update(
                rule="ABCD_lr", init="uniform", normalisation="max_abs", sharing="per_synapse"
            )
        config = TrainConfig(
            env_id=rb.env_id,
            env_kwargs={**rb.env_kwargs, "damage": rb.train_damage},
            policy=policy,
            policy_config=policy_config,
            generations=rb.generations,
            popsize=rb.popsize,
            max_steps=rb.episode_steps,
            fitness=rb.fitness,
            backend="serial",
            seed=seed,
            checkpoint_every=10,
        )
        trainer = ESTrainer(config, out_dir=run, callbacks=[cap])
    trainer.train()
    with (run / "progress.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    result = {
        "robot": robot,
        "agent": policy,
        "seed": seed,
        "generations": trainer.generation,
        "generations_planned": rb.generations,
        "env_steps": int(trainer.env_steps),
        "wall_time_s": round(float(rows[-1]["wall_time"]), 1),
        "steps_per_s": round(trainer.env_steps / max(float(rows[-1]["wall_time"]), 1e-9), 1),
        "final_fitness_mean": float(rows[-1]["fitness_mean"]),
        "best_fitness": float(trainer.best_fitness),
        "num_params": int(trainer.policy.num_params),
    }
    (run / "done.json").write_text(json.dumps(result, indent=2))
    return result


def _baseline_job(
    robot: str, rb: RobotBudget, algo: str, steps: int, seed: int, run: Path, time_cap: float
) -> dict:
    from hebb_agents.baselines import train_baseline

    if (run / "baseline.json").exists():
        info = json.loads((run / "baseline.json").read_text())
    else:
        if run.exists():
            shutil.rmtree(run)
        train_baseline(
            algo,
            rb.env_id,
            {**rb.env_kwargs, "damage": rb.train_damage},
            steps,
            seed,
            run,
            max_episode_steps=rb.episode_steps,
            time_limit=time_cap,
        )
        info = json.loads((run / "baseline.json").read_text())
    return {
        "robot": robot,
        "agent": algo,
        "seed": seed,
        "env_steps": info["steps_done"],
        "steps_planned": info["steps"],
        "wall_time_s": round(info["wall_time"], 1),
        "steps_per_s": round(info["steps_done"] / max(info["wall_time"], 1e-9), 1),
        "zoo_entry": info["zoo_entry"],
    }


def _run_job(job: tuple) -> dict[str, Any]:
    kind, args = job
    return _es_job(*args) if kind == "es" else _baseline_job(*args)


AGENT_FILES = (
    "policy.npz",
    "config.json",
    "progress.csv",
    "done.json",
    "model.zip",
    "vecnormalize.pkl",
    "baseline.json",
    "monitor.csv",
)


def _export(run: Path, dest: Path) -> None:
    """Copy what re-evaluation and the learning curves need (not ES optimiser checkpoints)."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in AGENT_FILES:
        if (run / name).exists():
            shutil.copy2(run / name, dest / name)


def _evaluate_robot(robot: str, rb: RobotBudget, agents: dict[str, str], out: Path, budget: Budget) -> dict:
    from hebb_agents.study import compare

    start = time.perf_counter()
    compare(
        agents,
        rb.env_id,
        out / robot,
        env_kwargs=rb.env_kwargs,
        episodes=budget.eval_episodes,
        seed=budget.eval_seed,
        max_steps=rb.episode_steps,
        damage_step=rb.damage_step,
        damages=rb.damages,
        log=None,
    )
    return {"robot": robot, "wall_time_s": round(time.perf_counter() - start, 1)}


def compare_command(rb: RobotBudget, agents: dict[str, str], out: Path, budget: Budget) -> str:
    """The ``hebb compare`` line that reruns one robot's evaluation from the saved agents."""
    parts = ["hebb compare", *(f"{name}={path}" for name, path in agents.items())]
    parts += [f"--env {rb.env_id}", f"--episodes {budget.eval_episodes}", f"--seed {budget.eval_seed}"]
    parts += [f"--max-steps {rb.episode_steps}", f"--damage-step {rb.damage_step}"]
    parts += [f"--damages {' '.join(rb.damages)}", f"--out {out}"]
    if rb.env_kwargs:
        parts.insert(-1, f"--env-kwargs '{json.dumps(rb.env_kwargs)}'")
    return " ".join(parts)


def _agent_dirs(robot: str, rb: RobotBudget) -> list[tuple[str, str, int]]:
    """(name, algo/policy, seed) of every agent of one robot; names are family/seed."""
    out = [(f"{p}/s{s}", p, s) for p in ("hebbian", "static") for s in rb.es_seeds]
    out += [(f"ppo/s{s}", "ppo", s) for s in rb.ppo_seeds if rb.ppo_steps > 0]
    out += [(f"sac/s{s}", "sac", s) for s in rb.sac_seeds if rb.sac_steps > 0]
    return out


def paper_scale(study: dict[str, Any]) -> list[str]:
    """What a paper-scale run would need, from the throughputs this run measured."""
    lines = []
    for robot in ("half_cheetah", "ant"):
        rates = [j["steps_per_s"] for j in study["jobs"] if j["robot"] == robot and j["agent"] == "hebbian"]
        if not rates:
            continue
        rate = sum(rates) / len(rates)
        steps = 200 * 1000 * 300  # population 200, 1000-step episodes, 300 generations
        core_hours = steps / rate / 3600
        lines.append(
            f"{robot}: population 200 x 1000-step episodes x 300 generations = {steps / 1e6:.0f}M steps per "
            f"run; at the {rate:,.0f} Hebbian steps/s per core measured here that is {core_hours:,.0f} "
            f"core-hours per seed ({core_hours / 64:,.1f} h on 64 cores)"
        )
    return lines


def study_folders(out: Path | None, runs: Path | None, quick: bool, large: bool) -> tuple[Path, Path]:
    """Results and training folders: the given ones, else the budget's own (a new temporary folder
    for ``--quick``, so a smoke run never overwrites the committed study or resumes its runs)."""
    if quick:
        if out is None or runs is None:
            scratch = Path(tempfile.mkdtemp(prefix="damage_study_quick_"))
            out = scratch / "results" if out is None else out
            runs = scratch / "runs" if runs is None else runs
        return out, runs
    suffix = "_large" if large else ""
    return (
        out if out is not None else Path(f"docs/results/damage_study{suffix}"),
        runs if runs is not None else Path(f"runs/damage_study{suffix}"),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="results folder (default: docs/results/damage_study, _large with --large, a new temporary "
        "folder with --quick)",
    )
    parser.add_argument(
        "--runs",
        type=Path,
        default=None,
        help="training folders (default: runs/damage_study, _large with "
        "--large, inside --out's temporary folder with --quick)",
    )
    parser.add_argument("--jobs", type=int, default=2, help="training jobs at once (one core each)")
    parser.add_argument("--quick", action="store_true", help="tiny smoke-test budget")
    parser.add_argument("--large", action="store_true", help="HalfCheetah ES at population 64, 300 steps")
    parser.add_argument(
        "--skip-train", action="store_true", help="evaluate the agents already under OUT/agents"
    )
    parser.add_argument(
        "--robots", nargs="+", choices=("half_cheetah", "ant"), default=["half_cheetah", "ant"]
    )
    parser.add_argument("--sac-steps", type=int, default=None, help="add one SAC seed on HalfCheetah")
    parser.add_argument(
        "--generations",
        type=int,
        default=None,
        help="ES generations for every robot; an unfinished run in --runs (checkpoint.npz without "
        "done.json) is resumed up to this many",
    )
    parser.add_argument("--es-time-cap", type=float, default=None, help="wall-time cap per ES job (s)")
    args = parser.parse_args(argv)

    if args.quick and args.large:
        parser.error("choose one of --quick and --large")
    budget = Budget.quick() if args.quick else Budget.large() if args.large else Budget()
    if args.sac_steps is not None:
        budget.half_cheetah.sac_steps = args.sac_steps
    if args.generations is not None:
        budget.half_cheetah.generations = budget.ant.generations = args.generations
    if args.es_time_cap is not None:
        budget.es_time_cap_s = args.es_time_cap
    robots = {name: getattr(budget, name) for name in args.robots}
    if args.quick and args.skip_train and args.out is None:
        parser.error("--quick --skip-train needs --out: the folder of the quick run whose agents to evaluate")
    out, args.runs = study_folders(args.out, args.runs, quick=args.quick, large=args.large)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    study: dict[str, Any] = {
        "command": " ".join([sys.executable.split("/")[-1], *sys.argv]),
        "budget": dataclasses.asdict(budget),
        "ant_fitness_and_termination": ANT_NOTE,
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
        },
        "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "jobs": [],
    }
    if not args.skip_train:
        jobs = []
        for robot, rb in robots.items():
            for name, algo, seed in _agent_dirs(robot, rb):
                run = args.runs / robot / name.replace("/", "_")
                if algo in ("hebbian", "static"):
                    jobs.append(("es", (robot, rb, algo, seed, run, budget.es_time_cap_s)))
                else:
                    steps = rb.ppo_steps if algo == "ppo" else rb.sac_steps
                    jobs.append(("baseline", (robot, rb, algo, steps, seed, run, budget.baseline_time_cap_s)))
        # Slowest first (Ant, then baselines), so the pool does not end on one long job.
        jobs.sort(key=lambda j: (j[1][0] != "ant", j[0] != "baseline"))
        print(f"{len(jobs)} training jobs, {args.jobs} at a time", flush=True)
        with ProcessPoolExecutor(max_workers=args.jobs) as pool:
            futures = {pool.submit(_run_job, job): job for job in jobs}
            for future in as_completed(futures):
                result = future.result()
                study["jobs"].append(result)
                print(f"[{time.perf_counter() - t0:7.0f} s] done {json.dumps(result)}", flush=True)
        for robot, rb in robots.items():
            for name, _, _ in _agent_dirs(robot, rb):
                _export(
                    args.runs / robot / name.replace("/", "_"),
                    out / "agents" / robot / name.replace("/", "_"),
                )
        study["train_wall_time_s"] = round(time.perf_counter() - t0, 1)
    else:
        previous = out / "study.json"
        if previous.exists():
            # Keep the training record of the run that produced the agents; only the evaluation is new.
            before = json.loads(previous.read_text())
            for key in ("jobs", "train_wall_time_s"):
                if key in before:
                    study[key] = before[key]
            # the budget the agents were trained with (training caps and generations); the top-level
            # budget is this evaluation's
            # (a study.json written by an earlier --skip-train run already holds it under "trained")
            trained = before.get("trained", {})
            study["trained"] = {
                key: trained.get(key, before.get(key)) for key in ("started", "command", "budget")
            }

    t1 = time.perf_counter()
    eval_jobs = []
    for robot, rb in robots.items():
        agents = {}
        for name, _, _ in _agent_dirs(robot, rb):
            folder = out / "agents" / robot / name.replace("/", "_")
            if folder.exists():
                agents[name] = str(folder)
        if not agents:
            missing = out / "agents" / robot
            parser.error(f"no trained agents in {missing} to evaluate (run without --skip-train)")
        eval_jobs.append((robot, rb, agents))
        study.setdefault("compare_commands", {})[robot] = compare_command(rb, agents, out / robot, budget)
    with ProcessPoolExecutor(max_workers=min(args.jobs, len(eval_jobs))) as pool:
        futures = [
            pool.submit(_evaluate_robot, robot, rb, agents, out, budget) for robot, rb, agents in eval_jobs
        ]
        study["evaluation"] = [f.result() for f in futures]
    study["eval_wall_time_s"] = round(time.perf_counter() - t1, 1)
    study["total_wall_time_s"] = round(time.perf_counter() - t0, 1)
    study["finished"] = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    study["paper_scale"] = (
        ["not estimated from a --quick run: start-up time dominates its few steps"]
        if args.quick
        else paper_scale(study)
    )
    (out / "study.json").write_text(json.dumps(study, indent=2, default=str))
    for robot in robots:
        print(f"\n== {robot} ==")
        print((out / robot / "groups.md").read_text())
        if (out / robot / "adaptation.md").exists():
            print((out / robot / "adaptation.md").read_text())
    print("\nWhat a paper-scale run would need:")
    for line in study["paper_scale"]:
        print(" ", line)
    print(f"\ntotal wall time {study['total_wall_time_s']:.0f} s; results in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
