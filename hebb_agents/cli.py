"""The ``hebb`` command: ``train``, ``eval``, ``baseline``, ``compare`` and ``video``."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hebb_agents.backends import BACKENDS, WorkersLost
from hebb_agents.checkpoint import check_new_run_folder
from hebb_agents.es import OPTIMIZERS
from hebb_agents.network import INIT_SCHEMES, NORMALISATIONS, SHARING
from hebb_agents.policy import POLICIES
from hebb_agents.rollout import EARLY_STOPS, is_number, make_env, parse_lockstep_size
from hebb_agents.rules import RULES

if TYPE_CHECKING:
    from hebb_agents.trainer import ESTrainer


def json_object(text: str) -> dict[str, Any]:
    """argparse type for a JSON object option (``--env-kwargs '{"damage": "seen"}'``)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"not valid JSON ({err}): {text!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object like '{{\"key\": 1}}', got {text!r}")
    return value


def _integer_at_least(text: str, low: int) -> int:
    try:
        value = int(text)
    except ValueError:
        value = low - 1
    if value < low:
        raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {text!r}")
    return value


def natural(text: str) -> int:
    """argparse type: an integer >= 0 (seeds, step counts where 0 means "the default")."""
    return _integer_at_least(text, 0)


def positive(text: str) -> int:
    """argparse type: an integer >= 1 (sizes and counts)."""
    return _integer_at_least(text, 1)


def lockstep_size(text: str) -> int | str:
    """argparse type for ``--lockstep-size``: ``auto``, ``all`` or a positive integer."""
    try:
        return parse_lockstep_size(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="evolve a Hebbian (or static) policy with OpenAI-ES")
    p.add_argument(
        "--env", default="CartPole-v1", help="Gymnasium id, e.g. HalfCheetah-v5, hebb/AntDamage-v0"
    )
    p.add_argument("--env-kwargs", type=json_object, default={}, help="JSON object passed to gym.make")
    p.add_argument("--policy", choices=tuple(POLICIES), default="hebbian")
    p.add_argument("--rule", choices=tuple(RULES), default="ABCD_lr")
    p.add_argument("--hidden", type=positive, nargs="+", default=[128, 64])
    p.add_argument("--init", choices=INIT_SCHEMES, default="uniform")
    p.add_argument("--normalisation", choices=NORMALISATIONS, default="max_abs")
    p.add_argument("--sharing", choices=SHARING, default="per_synapse")
    p.add_argument(
        "--encoder",
        type=json_object,
        default=None,
        help='front end as JSON (types lsh, conv), e.g. \'{"type": "lsh", "window": 64}\'',
    )
    p.add_argument("--popsize", type=positive, default=64)
    p.add_argument("--sigma", type=float, default=0.1)
    p.add_argument("--lr", type=float, default=0.2)
    p.add_argument("--optimizer", choices=OPTIMIZERS, default="sgd")
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--generations", type=positive, default=None, help="total generations (default 30)")
    p.add_argument("--episodes", type=positive, default=1, help="episodes per evaluation")
    p.add_argument("--max-steps", type=natural, default=0, help="cap on episode length (0: the env's own)")
    p.add_argument(
        "--fitness",
        default=None,
        help="return, distance, or an info key summed per episode "
        "(default: distance where the env reports info['x_position'], else return)",
    )
    p.add_argument("--early-stop", choices=EARLY_STOPS, default="none")
    p.add_argument("--backend", choices=BACKENDS, default=None, help="default: process")
    p.add_argument("--workers", type=positive, default=None, help="worker processes (default: all cores)")
    p.add_argument(
        "--lockstep-size",
        type=lockstep_size,
        default=None,
        help="members a worker steps together: auto (default; groups sized to the cache), all, or a "
        "number; same results either way (up to float rounding with a torch encoder)",
    )
    p.add_argument("--address", default=None, help="Ray cluster address (ray backend)")
    p.add_argument("--seed", type=natural, default=0)
    p.add_argument("--out", type=Path, default=Path("runs/hebb"), help="output folder")
    p.add_argument(
        "--checkpoint-every", type=positive, default=None, help="generations between checkpoints (default 10)"
    )
    p.add_argument(
        "--tensorboard", action=argparse.BooleanOptionalAction, default=None, help="log to tb/ (default off)"
    )
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.set_defaults(func=_train)


def resolve_fitness(fitness: str | None, env_id: str, env_kwargs: dict[str, Any]) -> str:
    """Check ``fitness`` against what ``env_id`` reports, before any worker starts.

    ``None`` picks ``distance`` for environments that report ``info["x_position"]`` (locomotion)
    and ``return`` otherwise; an ``info`` key must appear in the info of a step.
    """
    if fitness == "return":
        return fitness
    env = make_env(env_id, **env_kwargs)
    try:
        _, info = env.reset(seed=0)
        walks = "x_position" in info
        if fitness is None:
            return "distance" if walks else "return"
        if fitness == "distance" and walks:
            return fitness
        env.action_space.seed(0)
        step_info = env.step(env.action_space.sample())[4]
    finally:
        env.close()
    numeric = sorted(key for key, value in step_info.items() if is_number(value))
    if fitness != "distance" and fitness in numeric:
        return fitness
    accepted = ["return", *(["distance"] if walks else []), *numeric]
    raise ValueError(f"fitness {fitness!r} is not available on {env_id}; accepted: {', '.join(accepted)}")


def _warn_ignored(
    args: argparse.Namespace, names: Sequence[str], reason: str, kept: dict[str, Any] | None = None
) -> None:
    """Warn about the ``hebb train`` options among ``names`` given a non-default value (and, with
    ``kept``, the values that stay, another value than those)."""
    defaults = vars(build_parser().parse_args(["train"]))
    kept = kept or {}

    def as_saved(value: Any) -> str:  # a list and a tuple of the same values alike
        return json.dumps(value, sort_keys=True, default=str)

    ignored = [
        name
        for name in names
        if getattr(args, name) != defaults.get(name)
        and not (name in kept and as_saved(getattr(args, name)) == as_saved(kept[name]))
    ]
    if ignored:
        flags = ", ".join("--" + name.replace("_", "-") for name in ignored)
        print(f"warning: {reason}; ignored: {flags}", file=sys.stderr)


def _interrupt(signum: int, frame: Any) -> None:
    """SIGTERM handler: stop training like Ctrl-C does (the trainer saves its last generation)."""
    raise KeyboardInterrupt


def _train(args: argparse.Namespace) -> int:
    from hebb_agents.trainer import ESTrainer, TrainConfig

    if args.resume:
        # Only the flags given on this command line change the saved run's settings.
        given = {
            "generations": args.generations,
            "backend": args.backend,
            "workers": args.workers,
            "lockstep_size": args.lockstep_size,
            "ray_address": args.address,
            "checkpoint_every": args.checkpoint_every,
            "tensorboard": args.tensorboard,
        }
        overrides = {key: value for key, value in given.items() if value is not None}
        kept = {"resume", "out", "func", "command", *given, "address"} - {"ray_address"}
        trainer = ESTrainer.resume(args.out, progress=True, **overrides)
        saved = {**vars(trainer.config), **trainer.config.policy_config, "env": trainer.config.env_id}
        _warn_ignored(  # flags repeating the saved values change nothing: no warning for them
            args,
            [name for name in vars(args) if name not in kept],
            "--resume keeps the saved run's settings",
            kept=saved,
        )
        if trainer.generation >= trainer.config.generations:
            print(
                f"nothing to do: {args.out} is at generation {trainer.generation} of "
                f"{trainer.config.generations}; pass --generations N (N > {trainer.generation}) to continue"
            )
            return 0
        print(f"resuming {args.out} at generation {trainer.generation}")
    else:
        if args.popsize % 2:
            raise ValueError(
                f"--popsize must be even (the ES samples antithetic pairs), got {args.popsize}; "
                f"use {args.popsize + 1}"
            )
        check_new_run_folder(args.out, "es")
        policy_config: dict[str, Any] = {"hidden": args.hidden}
        if args.encoder is not None:
            policy_config["encoder"] = args.encoder
        plastic = ("rule", "init", "normalisation", "sharing")
        if args.policy == "hebbian":
            policy_config.update({name: getattr(args, name) for name in plastic})
        else:
            _warn_ignored(args, plastic, f"--policy {args.policy} has no plasticity")
        config = TrainConfig(
            env_id=args.env,
            env_kwargs=args.env_kwargs,
            policy=args.policy,
            policy_config=policy_config,
            generations=30 if args.generations is None else args.generations,
            popsize=args.popsize,
            sigma=args.sigma,
            lr=args.lr,
            optimizer=args.optimizer,
            weight_decay=args.weight_decay,
            episodes=args.episodes,
            max_steps=args.max_steps or None,
            fitness=resolve_fitness(args.fitness, args.env, args.env_kwargs),
            early_stop=args.early_stop,
            backend=args.backend or "process",
            workers=args.workers,
            lockstep_size=args.lockstep_size or "auto",
            ray_address=args.address,
            seed=args.seed,
            checkpoint_every=10 if args.checkpoint_every is None else args.checkpoint_every,
            tensorboard=bool(args.tensorboard),
        )
        trainer = ESTrainer(config, out_dir=args.out, progress=True)
        print(f"{config.policy} policy, {trainer.policy.num_params} parameters, env {config.env_id}")
    if args.address is not None and trainer.config.backend != "ray":
        print(
            f"warning: --address only applies to --backend ray; the {trainer.config.backend} backend "
            "ignores it (add --backend ray to use the cluster)",
            file=sys.stderr,
        )
    previous = signal.signal(signal.SIGTERM, _interrupt)  # a scheduler's stop is a Ctrl-C too
    try:
        stats = trainer.train()
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # stopping already: a second Ctrl-C changes nothing
        advice = _resume_advice(trainer, args.out)
        print(f"\ninterrupted after generation {trainer.generation}; {advice}", file=sys.stderr)
        return 130
    except WorkersLost as err:  # the generation is lost; the last finished one was saved
        print(f"\nerror: {err}; {_resume_advice(trainer, args.out)}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)
    if stats:
        first, last = stats[0], stats[-1]
        trend = f"{last.fitness_mean:.2f}"
        if len(stats) > 1:  # from the first generation this command ran
            trend = f"{first.fitness_mean:.2f} (generation {first.generation}) -> {trend}"
        print(
            f"generation {last.generation}: population mean fitness {trend}, best {last.best_so_far:.2f}, "
            f"{last.env_steps} env-steps, {last.wall_time:.0f} s"
        )
    saved = [name for name in ("policy.npz", "best.npz") if (args.out / name).exists()]
    print(f"run folder {args.out}: {', '.join(saved) or 'no policy saved yet'}")
    return 0


def _add_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="evaluate a saved policy")
    p.add_argument("checkpoint", type=Path, help="a policy file (policy.npz, best.npz) or a run folder")
    p.add_argument("--env", default=None, help="environment id (default: the one it was trained on)")
    p.add_argument(
        "--env-kwargs",
        type=json_object,
        default=None,
        help="JSON object passed to gym.make (default: the run's own on its env; '{}': the env's defaults)",
    )
    p.add_argument("--episodes", type=positive, default=10)
    p.add_argument("--max-steps", type=positive, default=None, help="default: the training run's")
    p.add_argument("--seed", type=natural, default=1000)
    p.set_defaults(func=_eval)


def _run_config(config_file: Path) -> dict[str, Any]:
    """A run's ``config.json``, checked as :class:`~hebb_agents.trainer.TrainConfig` checks its fields."""
    from hebb_agents.trainer import TrainConfig

    fallback = "fix it, or pass --env-kwargs and --max-steps, or evaluate the policy file from another folder"
    try:
        data = json.loads(config_file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(
            f"{config_file} (the run's settings) is not readable JSON ({err}); {fallback}"
        ) from None
    if not isinstance(data, dict):
        raise ValueError(f"{config_file} (the run's settings) is not a JSON object; {fallback}")
    try:
        TrainConfig.from_dict(data)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{config_file} (the run's settings): {err}; {fallback}") from None
    return data


def _eval(args: argparse.Namespace) -> int:
    from hebb_agents.checkpoint import load_checkpoint
    from hebb_agents.evaluation import check_spaces, run_episodes
    from hebb_agents.policy import policy_from_metadata

    if (args.checkpoint / "baseline.json").exists():
        print(
            f"error: {args.checkpoint} is an SB3 baseline folder; `hebb eval` takes ES runs and policy "
            f"files: evaluate it with `hebb compare name={args.checkpoint} --env ENV --out DIR`",
            file=sys.stderr,
        )
        return 2
    path = args.checkpoint / "policy.npz" if args.checkpoint.is_dir() else args.checkpoint
    if not path.exists():
        print(f"error: {path} does not exist (pass a run folder or a policy file)", file=sys.stderr)
        return 2
    arrays, meta = load_checkpoint(path)
    policy = policy_from_metadata(meta, arrays.get("params"), source=str(path))
    env_id = args.env or meta.get("env_id")
    if env_id is None:
        print(f"error: {path} does not name its environment; pass --env", file=sys.stderr)
        return 2
    # Without overrides, evaluate under the training run's settings (its config.json beside the file).
    config_file = path.parent / "config.json"
    # the run's body and settings on its own env (unless --env-kwargs), another env's defaults
    own_env = args.env is None or args.env == meta.get("env_id")
    needed = (args.env_kwargs is None and own_env) or args.max_steps is None
    run_config = _run_config(config_file) if needed and config_file.exists() else meta
    env_kwargs = args.env_kwargs
    if env_kwargs is None:
        env_kwargs = run_config.get("env_kwargs", {}) if own_env else {}
    max_steps = args.max_steps if args.max_steps is not None else run_config.get("max_steps")
    check_spaces((policy.observation_space, policy.action_space), env_id, env_kwargs, source=str(path))
    stats = run_episodes(policy, env_id, args.episodes, args.seed, env_kwargs, max_steps).summary()
    settings = f" {json.dumps(env_kwargs)}" if env_kwargs else ""
    print(
        f"{path} on {env_id}{settings}, {args.episodes} episodes "
        f"(seeds {args.seed}..{args.seed + args.episodes - 1})"
    )
    if not np.isfinite(stats["returns_mean"]):
        print("  warning: the network's outputs were not finite (diverging weights or NaN parameters)")
    print(f"  return   {stats['returns_mean']:.2f} ± {stats['returns_std']:.2f}")
    if stats["distances_mean"] == stats["distances_mean"]:  # not NaN: the env reports x_position
        print(f"  distance {stats['distances_mean']:.2f} ± {stats['distances_std']:.2f}")
    print(f"  length   {stats['lengths_mean']:.1f} ± {stats['lengths_std']:.1f}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``hebb`` argument parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="hebb", description="Evolved Hebbian plasticity agents.")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_train(sub)
    _add_eval(sub)
    from hebb_agents.baselines import add_baseline_command
    from hebb_agents.evaluation import add_video_command
    from hebb_agents.study import add_compare_command

    add_baseline_command(sub)
    add_compare_command(sub)
    add_video_command(sub)
    return parser


def _resume_advice(trainer: ESTrainer, out: Path) -> str:
    """What a stopped run left in ``out`` and how to go on."""
    saved = trainer.saved_generation
    if saved is None:
        return f"{out}: nothing saved yet; run the same command again to start over"
    return f"{out}: checkpoint at generation {saved}; continue with: hebb train --resume --out {out}"


def _format_warning(message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any) -> str:
    """Warnings as one line each, without the source line Python shows by default (only how they
    print: callers recording warnings still get them)."""
    return f"warning: {message}\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``hebb`` console script."""
    previous, warnings.formatwarning = warnings.formatwarning, _format_warning
    try:
        args = build_parser().parse_args(argv)
        return int(args.func(args))
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except ImportError as err:  # a MUJOCO_GL that MuJoCo cannot load (see hebb_envs): one line
        if "MUJOCO_GL" not in str(err):
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # before training started (imports, checks, worker start-up)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        print("\ninterrupted", file=sys.stderr)
        return 130
    finally:
        warnings.formatwarning = previous


if __name__ == "__main__":
    sys.exit(main())
